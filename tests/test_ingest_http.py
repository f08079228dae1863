"""POST /ingest, /metrics, /ready through the flask app."""
from __future__ import annotations

import orjson
import pytest

from modelmon.exporter.pipeline import Exporter
from modelmon.exporter.server import create_app
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
