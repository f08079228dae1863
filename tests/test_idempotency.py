"""POST /ingest's Idempotency-Key: a retried batch is answered again, never applied twice; the
client sends one key per batch and keeps it across retries."""
from __future__ import annotations

import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, make_server

import orjson
import pytest

from modelmon.client import PredictionLogger
from modelmon.exporter import idempotency
from modelmon.exporter.idempotency import Answer, SeenBatches
from modelmon.exporter.pipeline import Exporter
from modelmon.exporter.server import create_app
from tests.exporter_helpers import binary_records, make_config
from tests.test_client import Stub, ok, send_n


def ndjson(records) -> bytes:
    return b"\n".join(orjson.dumps(r) for r in records) + b"\n"


# ---------------------------------------------------------------------------- the seen-set


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_key_is_new_then_in_flight_then_answered_and_each_repeat_is_counted():
    counted = []
    seen = SeenBatches(counted.append, clock=Clock())
    assert seen.begin("k") is True
    assert seen.begin("k") is False  # the first request still runs
    seen.finish("k", Answer(207, b'{"accepted": 1}'))
    assert seen.begin("k") == Answer(207, b'{"accepted": 1}')
    assert counted == ["in_flight", "replayed"]


def test_an_abandoned_key_may_be_applied_again():
    seen = SeenBatches(lambda _: None)
    assert seen.begin("k") is True
    seen.abandon("k")
    assert seen.begin("k") is True


def test_keys_are_forgotten_after_the_ttl_and_past_the_count_and_byte_bounds():
    clock = Clock()
    seen = SeenBatches(lambda _: None, ttl=60, max_entries=3, max_bytes=10, clock=clock)
    for key in "abc":
        assert seen.begin(key) is True
        seen.finish(key, Answer(200, b"xx"))
    assert seen.begin("d") is True  # a fourth key: the oldest goes
    assert seen.begin("a") is True and len(seen) == 3
    seen.finish("d", Answer(200, b"x" * 9))  # bytes over 10: the oldest answers go
    assert seen.bytes <= 10
    clock.now += 61
    assert seen.begin("d") is True and len(seen) == 1  # everything older than the TTL gone


# ---------------------------------------------------------------------------- POST /ingest


@pytest.fixture
def app_and_exporter():
    ex = Exporter(make_config())
    return create_app(ex), ex


def test_the_same_key_twice_applies_once_and_answers_the_same(app_and_exporter):
    app, ex = app_and_exporter
    client = app.test_client()
    preds, _ = binary_records(20, inline_share=1.0)
    body = ndjson(preds)
    first = client.post("/ingest", data=body, headers={"Idempotency-Key": "batch-1"})
    again = client.post("/ingest", data=body, headers={"Idempotency-Key": "batch-1"})
    assert first.status_code == again.status_code == 200
    assert again.get_json() == first.get_json() and first.get_json()["accepted"] == 20
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert ex.ingested["http"] == 20 and ex.duplicate_batches["replayed"] == 1
    other = client.post("/ingest", data=body, headers={"Idempotency-Key": "batch-2"})
    assert other.status_code == 200 and ex.ingested["http"] == 40  # another key is another batch
    client.post("/ingest", data=body)
    client.post("/ingest", data=body)
    assert ex.ingested["http"] == 80  # without a key every request is applied, as before


def test_a_rejecting_answer_is_replayed_too_and_a_bad_key_is_refused(app_and_exporter):
    app, ex = app_and_exporter
    client = app.test_client()
    body = b'{"model": "nope", "ts": 0, "prediction": 1}\n'
    first = client.post("/ingest", data=body, headers={"Idempotency-Key": "k"})
    again = client.post("/ingest", data=body, headers={"Idempotency-Key": "k"})
    assert first.status_code == again.status_code == 400 and again.get_json() == first.get_json()
    assert sum(ex.rejected.values()) == 1
    for key in ("x" * (idempotency.MAX_KEY_LENGTH + 1), "a\x01b"):
        r = client.post("/ingest", data=body, headers={"Idempotency-Key": key})
        assert r.status_code == 400 and "Idempotency-Key" in r.get_json()["error"]


def test_a_key_still_being_applied_gets_409_with_retry_after(app_and_exporter, monkeypatch):
    app, ex = app_and_exporter
    preds, _ = binary_records(5, inline_share=1.0)
    entered, release = threading.Event(), threading.Event()
    ingest_lines = ex.ingest_lines

    def slow(*args, **kwargs):
        entered.set()
        release.wait(10)
        return ingest_lines(*args, **kwargs)

    monkeypatch.setattr(ex, "ingest_lines", slow)
    results = []
    first = threading.Thread(target=lambda: results.append(
        app.test_client().post("/ingest", data=ndjson(preds), headers={"Idempotency-Key": "k"})))
    first.start()
    assert entered.wait(10)
    second = app.test_client().post("/ingest", data=ndjson(preds), headers={"Idempotency-Key": "k"})
    release.set()
    first.join(10)
    assert second.status_code == 409 and second.headers["Retry-After"] == "1"
    assert results[0].status_code == 200 and ex.ingested["http"] == 5
    assert ex.duplicate_batches["in_flight"] == 1


def test_the_counts_are_on_metrics(app_and_exporter):
    app, _ = app_and_exporter
    client = app.test_client()
    body = ndjson(binary_records(3, inline_share=1.0)[0])
    for _ in range(3):
        client.post("/ingest", data=body, headers={"Idempotency-Key": "k"})
    text = client.get("/metrics").get_data(as_text=True)
    assert 'modelmon_ingest_duplicate_batches_total{outcome="replayed"} 2.0' in text
    assert 'modelmon_ingest_duplicate_batches_total{outcome="in_flight"} 0.0' in text


# ---------------------------------------------------------------------------- the client's side


def test_the_client_keeps_one_key_per_batch_across_retries_and_retries_a_409():
    stub = Stub([(409, {"Retry-After": "0"}, {"error": "still being applied"}), (200, {}, ok)])
    try:
        with PredictionLogger(url=stub.url, batch_size=4, flush_interval=3600, backoff=0.001) as logger:
            send_n(logger, 4)
            logger.flush(10)
            send_n(logger, 4)
        assert logger.stats()["sent"] == 8 and logger.stats()["retries"] == 1
        keys = [r["headers"]["Idempotency-Key"] for r in stub.requests]
        assert len(keys) == 3 and keys[0] == keys[1] != keys[2] and len(keys[0]) == 32
    finally:
        stub.close()


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def test_a_timed_out_batch_that_was_applied_is_not_applied_again_on_retry():
    """End to end: the exporter applies the batch but its answer comes after the client's timeout;
    the client retries with the same key and gets the stored answer: every record counted once."""
    ex = Exporter(make_config())
    app = create_app(ex)
    delayed = []

    def late_first_answer(environ, start_response):  # the exporter's app, its first answer late
        body = app(environ, start_response)
        if environ["PATH_INFO"] == "/ingest" and not delayed:
            delayed.append(environ.get("HTTP_IDEMPOTENCY_KEY"))
            time.sleep(1.5)  # past the client's 0.5 s timeout, after the batch was applied
        return body

    server = make_server("127.0.0.1", 0, late_first_answer, handler_class=_Quiet)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        preds, _ = binary_records(50, inline_share=1.0)
        url = f"http://127.0.0.1:{server.server_address[1]}/ingest"
        with PredictionLogger(url=url, batch_size=50, flush_interval=3600, timeout=0.5, backoff=0.01,
                              retries=5) as logger:
            for p in preds:
                rec = {k: v for k, v in p.items() if k in ("model", "id", "version", "features", "prediction",
                                                           "score", "latency_ms", "label")}
                assert logger.log(**rec, ts=p["ts"])
            assert logger.flush(30)
        stats = logger.stats()
        assert stats["sent"] == 50 and stats["failed"] == 0 and stats["retries"] >= 1
        assert ex.ingested["http"] == 50  # applied once, though sent at least twice
        assert ex.duplicate_batches["replayed"] >= 1 and delayed[0]
    finally:
        server.shutdown()
        server.server_close()
