"""POST /ingest, /metrics, /ready through the flask app."""
from __future__ import annotations

import gzip
import io

import orjson
import pytest

from modelmon.exporter.pipeline import Exporter
from modelmon.exporter.server import create_app, gunzip, iter_batches
from tests.exporter_helpers import T0, binary_records, make_config


@pytest.fixture
def client_and_exporter():
    ex = Exporter(make_config())
    app = create_app(ex, ingest_token="s3cret", ingest_max_bytes=64 * 1024)
    return app.test_client(), ex


AUTH = {"Authorization": "Bearer s3cret"}


def ndjson(records) -> bytes:
    return b"\n".join(orjson.dumps(r) for r in records) + b"\n"


def test_ingest_ndjson_all_valid(client_and_exporter):
    client, ex = client_and_exporter
    preds, _ = binary_records(20, inline_share=1.0)
    r = client.post("/ingest", data=ndjson(preds), headers=AUTH, content_type="application/x-ndjson")
    assert r.status_code == 200
    assert r.get_json() == {"received": 20, "accepted": 20, "rejected": 0, "errors": [], "errors_truncated": False}
    assert ex.ingested["http"] == 20


def test_ingest_json_array_partial_is_207_and_keeps_valid_ones(client_and_exporter):
    client, ex = client_and_exporter
    preds, _ = binary_records(5, inline_share=1.0)
    body = orjson.dumps([preds[0], {"model": "nope", "ts": T0, "prediction": 1}, preds[1], 42])
    r = client.post("/ingest", data=body, headers=AUTH, content_type="application/json")
    assert r.status_code == 207
    data = r.get_json()
    assert data["accepted"] == 2 and data["rejected"] == 2
    assert [(e["index"], e["reason"]) for e in data["errors"]] == [(1, "unknown_model"), (3, "not_object")]
    assert sum(s.predictions_total[("v1", "ok")] for s in ex.states.values()) == 2


def test_ingest_all_invalid_is_400(client_and_exporter):
    client, _ = client_and_exporter
    r = client.post("/ingest", data=b"{oops\n[]\n", headers=AUTH)
    assert r.status_code == 400
    assert [e["reason"] for e in r.get_json()["errors"]] == ["invalid_json", "not_object"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}])
def test_ingest_requires_the_token(client_and_exporter, headers):
    client, ex = client_and_exporter
    r = client.post("/ingest", data=b'{"model":"bin"}', headers=headers)
    assert r.status_code == 401
    assert ex.ingested["http"] == 0


def test_ingest_too_large_is_413(client_and_exporter):
    client, _ = client_and_exporter
    r = client.post("/ingest", data=b" " * (65 * 1024), headers=AUTH)
    assert r.status_code == 413


def test_ingest_empty_body_is_400(client_and_exporter):
    client, _ = client_and_exporter
    assert client.post("/ingest", data=b"\n\n", headers=AUTH).status_code == 400


def test_metrics_health_and_ready(client_and_exporter):
    client, ex = client_and_exporter
    assert client.get("/healthz").status_code == 200
    r = client.get("/ready")
    assert r.status_code == 200  # {first: N} references are collected from traffic: ready at once
    assert r.get_json()["references"]["bin"] == "collecting"
    r = client.get("/metrics")
    assert r.status_code == 200 and r.content_type.startswith("text/plain")
    assert b"modelmon_build_info" in r.data


def test_ready_is_503_when_a_reference_file_is_missing(tmp_path):
    ex = Exporter(make_config(tmp_path, reference=str(tmp_path / "missing.csv")))
    ex.load_references()
    client = create_app(ex).test_client()
    r = client.get("/ready")
    assert r.status_code == 503
    assert "missing.csv" in r.get_json()["errors"]["bin"]


# ---------------------------------------------------------------- issue 8: limits on bytes read, gzip, error cap


def test_bearer_scheme_is_case_insensitive(client_and_exporter):
    client, ex = client_and_exporter
    for scheme in ("bearer", "BEARER", "Bearer", "bEaReR"):
        r = client.post("/ingest", data=ndjson(binary_records(1, inline_share=1.0)[0]),
                        headers={"Authorization": f"{scheme}  s3cret"})
        assert r.status_code == 200, scheme
    for header in ("Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "Bearers3cret", "bearer"):
        assert client.post("/ingest", data=b"{}", headers={"Authorization": header}).status_code == 401, header
    assert ex.ingested["http"] == 4


def test_body_limit_holds_on_bytes_read_without_content_length(client_and_exporter):
    """A chunked body reaches the app with no Content-Length (wsgi.input_terminated): counted as read."""
    client, ex = client_and_exporter
    preds, _ = binary_records(400, inline_share=1.0)
    body = ndjson(preds)
    assert len(body) > 64 * 1024
    r = client.post("/ingest", input_stream=io.BytesIO(body), headers=AUTH,
                    environ_overrides={"wsgi.input_terminated": True})
    assert r.status_code == 413
    assert ex.ingested["http"] == 0
    small = ndjson(preds[:50])
    r = client.post("/ingest", input_stream=io.BytesIO(small), headers=AUTH,
                    environ_overrides={"wsgi.input_terminated": True})
    assert r.status_code == 200 and ex.ingested["http"] == 50


def test_gzip_bodies(client_and_exporter):
    client, ex = client_and_exporter
    preds, _ = binary_records(30, inline_share=1.0)
    body = gzip.compress(ndjson(preds[:20])) + gzip.compress(ndjson(preds[20:]))  # two members
    r = client.post("/ingest", data=body, headers={**AUTH, "Content-Encoding": "GZIP"})
    assert r.status_code == 200 and r.get_json()["accepted"] == 30
    bomb = gzip.compress(ndjson(preds) + b"\n" * (300 * 1024))  # 4 x 64 KiB decompressed at most
    assert client.post("/ingest", data=bomb, headers={**AUTH, "Content-Encoding": "gzip"}).status_code == 413
    assert client.post("/ingest", data=body[:-5], headers={**AUTH, "Content-Encoding": "gzip"}).status_code == 400
    assert client.post("/ingest", data=b"plain", headers={**AUTH, "Content-Encoding": "gzip"}).status_code == 400
    r = client.post("/ingest", data=body, headers={**AUTH, "Content-Encoding": "br"})
    assert r.status_code == 415 and r.headers["Accept-Encoding"] == "gzip, identity"
    assert ex.ingested["http"] == 30 and sum(ex.rejected.values()) == 0


def test_decompressed_limit_is_configurable():
    ex = Exporter(make_config())
    client = create_app(ex, ingest_max_bytes=1000, ingest_max_decompressed_bytes=5000).test_client()
    assert client.post("/ingest", data=gzip.compress(b"\n" * 5000), headers={"Content-Encoding": "gzip"}
                       ).status_code == 400  # blank: empty body
    assert client.post("/ingest", data=gzip.compress(b"\n" * 5001), headers={"Content-Encoding": "gzip"}
                       ).status_code == 413


def test_errors_are_capped_and_counts_exact_across_batches(client_and_exporter, monkeypatch):
    import modelmon.exporter.server as server

    monkeypatch.setattr(server, "BATCH_LINES", 7)
    client, ex = client_and_exporter
    preds, _ = binary_records(30, inline_share=1.0)
    lines = [b"x"] * 150 + [orjson.dumps(p) for p in preds]
    r = client.post("/ingest", data=b"\n".join(lines), headers=AUTH)
    data = r.get_json()
    assert r.status_code == 207
    assert (data["received"], data["accepted"], data["rejected"]) == (180, 30, 150)
    assert [e["index"] for e in data["errors"]] == list(range(100)) and data["errors_truncated"]
    assert ex.rejected["invalid_json"] == 150 and ex.ingested["http"] == 30


def test_json_array_in_batches(client_and_exporter, monkeypatch):
    import modelmon.exporter.server as server

    monkeypatch.setattr(server, "BATCH_LINES", 4)
    client, _ = client_and_exporter
    preds, _ = binary_records(10, inline_share=1.0)
    r = client.post("/ingest", data=orjson.dumps([*preds[:5], 1, *preds[5:], "x"]), headers=AUTH)
    data = r.get_json()
    assert (data["accepted"], data["rejected"]) == (10, 2)
    assert [(e["index"], e["reason"]) for e in data["errors"]] == [(5, "not_object"), (11, "not_object")]


@pytest.mark.parametrize("slab", [1, 3, 8, 64, 1 << 20])
def test_iter_batches_cuts_slabs_at_newlines(slab):
    body = b"a\r\n\nbbbbbbbbbbbb\n  \ncc\ndd"  # blank lines skipped, CRLF, a line longer than a slab, no final newline
    batches = list(iter_batches(bytearray(body), batch_lines=2, slab_bytes=slab))
    assert [line for b in batches for line in b] == [b"a", b"bbbbbbbbbbbb", b"cc", b"dd"]
    assert all(1 <= len(b) <= 2 for b in batches)
    assert all(type(line) is bytes for b in batches for line in b)


def test_gunzip_limits_and_members():
    data = b"0123456789" * 1000
    assert gunzip(gzip.compress(data) + gzip.compress(b"!") + b"\0" * 8, 10_001) == data + b"!"
    with pytest.raises(Exception, match="decompressed"):
        gunzip(gzip.compress(data), 9_999)
