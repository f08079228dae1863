"""PredictionLogger against a real `python -m modelmon serve` process on 127.0.0.1: exact delivery over
HTTP and through a followed (and rotating) file, the bearer token, gzip, and an exporter that is down.
Counts come from the exporter's /metrics; waits poll with deadlines; no assertion is about time."""
from __future__ import annotations

import signal

import orjson
import pytest

from modelmon.client import PredictionLogger
from tests.exporter_helpers import binary_records
from tests.processes import Serve


@pytest.fixture
def serve(tmp_path):
    s = Serve(tmp_path, None)
    yield s
    s.stop(signal.SIGKILL)


def ingested(serve: Serve, source: str) -> float:
    return serve.value("modelmon_records_ingested_total", source=source)


def wait_ingested(serve: Serve, source: str, n: int) -> None:
    serve.wait_until(lambda: ingested(serve, source) >= n)
    assert ingested(serve, source) == n


def log_all(logger: PredictionLogger, preds: list[dict]) -> None:
    for rec in preds:
        rec = dict(rec)
        del rec["status"]  # the default
        assert logger.log(**rec)


def test_http_delivers_exactly_n_records_and_late_labels_gzipped_with_the_token(serve, tmp_path):
    token = tmp_path / "ingest.token"
    token.write_text("t0ken\n")
    serve.start("--ingest-token-file", str(token))
    preds, late = binary_records(3000, seed=70, inline_share=0.6)
    with PredictionLogger(url=serve.url("/ingest"), token_file=token, batch_size=400) as logger:
        log_all(logger, preds)
        for rec in late:
            assert logger.label(model="bin", id=rec["id"], label=rec["label"], ts=rec["ts"])
        assert logger.flush(60)
        stats = logger.stats()
    n = len(preds) + len(late)
    assert stats["queued"] == stats["sent"] == n and stats["failed"] == stats["dropped"] == stats["invalid"] == 0
    wait_ingested(serve, "http", n)
    assert serve.predictions() == len(preds)
    assert serve.value("modelmon_labels_total") == len(preds)  # inline and late: every prediction labelled
    assert serve.value("modelmon_records_rejected_total") == 0
    # gzip on the wire, and the exporter decoded it: well under half the NDJSON's size was sent
    # (the source records, with their RFC 3339 time stamps, are about the size the client writes).
    raw = sum(len(orjson.dumps(r)) + 1 for r in preds + late)
    assert stats["bytes"] < raw / 2


def test_the_token_is_enforced(serve, caplog):
    serve.start("--ingest-token", "right")
    preds, _ = binary_records(50, seed=71, inline_share=1.0)
    for token in ("wrong", None):
        with PredictionLogger(url=serve.url("/ingest"), token=token, retries=3, backoff=0.01) as logger:
            log_all(logger, preds)
            assert logger.flush(30)
            stats = logger.stats()
        assert stats["failed"] == 50 and stats["sent"] == 0 and stats["retries"] == 0  # a 401 is not retried
    assert "HTTP 401: missing or wrong bearer token" in caplog.text
    with PredictionLogger(url=serve.url("/ingest"), token="right") as logger:
        log_all(logger, preds)
        assert logger.flush(30) and logger.stats()["sent"] == 50
    wait_ingested(serve, "http", 50)


def test_records_the_exporter_refuses_are_counted_failed_on_both_sides(serve):
    serve.start()
    preds, _ = binary_records(20, seed=72, inline_share=1.0)
    with PredictionLogger(url=serve.url("/ingest")) as logger:
        log_all(logger, preds)
        for i in range(5):  # valid for the client; the exporter has no such model
            assert logger.log(model="nope", prediction=1, features={}, id=f"x{i}")
        assert logger.flush(30)
        stats = logger.stats()
    assert stats["sent"] == 20 and stats["failed"] == 5
    wait_ingested(serve, "http", 20)
    assert serve.value("modelmon_records_rejected_total", reason="unknown_model") == 5


def test_a_file_the_exporter_follows_gets_exactly_n_records(serve, tmp_path):
    serve.log = tmp_path / "preds.jsonl"
    preds, _ = binary_records(4000, seed=73, inline_share=1.0)
    with PredictionLogger(path=serve.log, batch_size=500) as logger:  # creates the file
        serve.start("--from-start")
        log_all(logger, preds)
        assert logger.flush(60)
        assert logger.stats()["sent"] == 4000
    wait_ingested(serve, "file", 4000)
    assert serve.predictions() == 4000


def test_rotation_is_followed_by_the_exporter_without_loss(serve, tmp_path):
    """Each chunk is smaller than rotate_bytes, so at most one rotation happens between two of the
    exporter's polls (the follower's stated condition for losing nothing); waiting for the exporter
    to catch up after each chunk makes that hold whatever the machine's speed."""
    serve.log = tmp_path / "preds.jsonl"
    preds, _ = binary_records(2400, seed=74, inline_share=1.0)
    chunk = 200  # ~60 KB of NDJSON
    with PredictionLogger(path=serve.log, rotate_bytes=100_000, batch_size=50) as logger:
        serve.start("--from-start")
        for start in range(0, len(preds), chunk):
            log_all(logger, preds[start:start + chunk])
            assert logger.flush(30)
            wait_ingested(serve, "file", start + chunk)
        rotations = logger.transport.rotations
    assert rotations >= 5
    assert ingested(serve, "file") == 2400 and serve.predictions() == 2400
    assert serve.value("modelmon_records_rejected_total") == 0


def test_with_the_exporter_down_log_returns_drops_are_counted_and_nothing_raises(serve):
    serve.start()
    url = serve.url("/ingest")
    serve.stop(signal.SIGKILL)  # the exporter is gone: connections are refused
    queue_size, batch_size, k = 200, 20, 123
    logger = PredictionLogger(url=url, queue_size=queue_size, batch_size=batch_size, retries=10, backoff=3600,
                              flush_interval=3600)
    preds, _ = binary_records(batch_size + queue_size + k, seed=75, inline_share=1.0)
    log_all(logger, preds[:batch_size])  # a full batch wakes the worker; it fails to connect, then backs off
    serve.wait_until(lambda: logger.queue_length() == 0)
    # The worker now waits out an hour of backoff: exactly queue_size more fit, k are dropped.
    results = []
    for rec in preds[batch_size:]:
        rec = dict(rec)
        del rec["status"]
        results.append(logger.log(**rec))
    assert results.count(True) == queue_size and results.count(False) == k
    assert logger.stats()["dropped"] == k
    assert logger.close(timeout=0) is False  # cuts the backoff short: everything queued fails, counted
    stats = logger.stats()
    assert stats == {**stats, "queued": batch_size + queue_size, "dropped": k, "sent": 0,
                     "failed": batch_size + queue_size, "pending": 0}


def test_records_logged_while_the_exporter_is_down_are_delivered_when_it_comes_back(serve):
    url = serve.url("/ingest")  # not started yet
    preds, _ = binary_records(300, seed=76, inline_share=1.0)
    with PredictionLogger(url=url, retries=20, backoff=0.05, batch_size=100) as logger:
        log_all(logger, preds[:100])
        serve.wait_until(lambda: logger.queue_length() == 0)  # the first batch is being retried
        log_all(logger, preds[100:])
        serve.start()
        assert logger.flush(120)
        stats = logger.stats()
    assert stats["sent"] == 300 and stats["failed"] == 0 and stats["retries"] >= 1
    wait_ingested(serve, "http", 300)


def test_an_exporter_restart_between_batches_loses_nothing(serve):
    """The kept-alive connection dies with the exporter: the next batch reconnects (and retries
    while the exporter is still starting) — none failed, none duplicated."""
    serve.start()
    preds, _ = binary_records(400, seed=77, inline_share=1.0)
    with PredictionLogger(url=serve.url("/ingest"), retries=20, backoff=0.05, batch_size=100) as logger:
        log_all(logger, preds[:200])
        assert logger.flush(30)
        wait_ingested(serve, "http", 200)
        serve.stop()  # SIGTERM; counters restart at zero with the new process
        serve.start(wait=False)
        log_all(logger, preds[200:])
        assert logger.flush(120)
        stats = logger.stats()
    assert stats["sent"] == 400 and stats["failed"] == 0
    wait_ingested(serve, "http", 200)
