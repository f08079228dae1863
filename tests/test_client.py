"""modelmon.client.PredictionLogger: validation, the queue's bound, the transports' answers to every
status, stats and metrics. Fast and in-process (a stub HTTP server on 127.0.0.1); tests against a
real `modelmon serve` are in test_client_e2e.py. No assertion on time: bounds are counts."""
from __future__ import annotations

import datetime as dt
import gzip
import json
import math
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import orjson
import pytest

from modelmon.client import Delivery, FileTransport, InvalidRecord, InvalidType, PredictionLogger
from modelmon.client import records
from tests.conftest import ROOT, free_port
from tests.exporter_helpers import make_config
from tests.processes import wait_until


def lines_of(path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------- records


def test_a_prediction_record_holds_plain_json_values_and_no_caller_object():
    features = {"x1": np.float32(1.5), "x2": float("nan"), "n": np.int64(3), "c": np.str_("de"), "b": np.bool_(True)}
    rec = records.prediction("credit", features, np.int64(1), np.float64(0.8), None, "r-1", 3, 12, "ok", False,
                             dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.timezone.utc), None)
    assert rec == {"ts": 1795428000.0, "model": "credit", "prediction": 1, "status": "ok", "id": "r-1",
                   "version": "3", "score": 0.8, "latency_ms": 12,
                   "features": {"x1": 1.5, "x2": None, "n": 3, "c": "de", "b": True}}
    assert all(type(v) in (float, int, str, bool, type(None)) for v in rec["features"].values())
    assert rec["features"] is not features
    plain = {"a": 1.0, "b": "x"}
    assert records.prediction("m", plain, 1, None, None, None, None, None, "ok", False, 5, None)["features"] is not plain


@pytest.mark.parametrize("ts, expected", [
    (1_790_000_000, 1_790_000_000), (1_790_000_000.5, 1_790_000_000.5),
    ("2026-11-23T10:00:00Z", 1795428000.0), ("2026-11-23T11:00:00+01:00", 1795428000.0),
    ("2026-11-23T10:00:00", 1795428000.0),  # no offset: UTC, as the exporter reads it
    (dt.datetime(2026, 11, 23, 10, 0), 1795428000.0),
])
def test_timestamps_become_epoch_seconds(ts, expected):
    assert records.late_label("m", "i", 1, ts)["ts"] == expected


def test_no_timestamp_means_now_and_multiclass_scores_are_keyed_like_the_exporter():
    before = time.time()
    rec = records.prediction("m", None, "b", None, {"a": 0.2, 1: 0.3, 2.0: 0.5}, None, None, None,
                             "ok", True, None, "a")
    assert before <= rec["ts"] <= time.time()
    assert rec["scores"] == {"a": 0.2, "1": 0.3, "2": 0.5}
    assert records._scores({True: 0.4, False: 0.6}) == {"1": 0.4, "0": 0.6}
    assert rec["features"] == {} and rec["shadow"] is True and rec["label"] == "a"
    err = records.prediction("m", {}, None, None, None, None, None, None, "error", False, 1, None)
    assert "prediction" not in err and err["status"] == "error"


BAD = [
    (dict(model=""), ValueError, "'model' must not be empty"),
    (dict(model=3), TypeError, "'model' must be a string"),
    (dict(status="fine"), ValueError, "'status'"),
    (dict(prediction=None), ValueError, "needs a prediction"),
    (dict(prediction=[1]), TypeError, "'prediction' must be a class"),
    (dict(prediction=math.inf), ValueError, "'prediction' must be finite"),
    (dict(score=1.5), ValueError, "'score' must be a probability"),
    (dict(score=True), TypeError, "'score' must be a number"),
    (dict(score="0.5"), TypeError, "'score' must be a number"),
    (dict(scores={"a": 2}), ValueError, "'scores'"),
    (dict(scores=[0.5]), TypeError, "'scores'"),
    (dict(latency_ms=-1), ValueError, "'latency_ms' must not be negative"),
    (dict(latency_ms=math.nan), ValueError, "'latency_ms' must be finite"),
    (dict(features={"x1": math.inf}), ValueError, "feature 'x1' must be finite"),
    (dict(features={"x1": [1, 2]}), TypeError, "feature 'x1'"),
    (dict(features={1: 2}), TypeError, "keys must be strings"),
    (dict(features="x=1"), TypeError, "'features' must be a dict"),
    (dict(id=True), TypeError, "'id'"),
    (dict(id="x" * 1025), ValueError, "at most 1024"),
    (dict(version=["v1"]), TypeError, "'version'"),
    (dict(shadow="yes"), TypeError, "'shadow'"),
    (dict(ts="yesterday"), ValueError, "'ts' must be RFC 3339"),
    (dict(ts=math.nan), ValueError, "'ts' must be finite"),
    (dict(ts=[1]), TypeError, "'ts'"),
    (dict(label={"a": 1}), TypeError, "'label'"),
    (dict(prediction=np.array([1])), TypeError, "'prediction' must be a class"),  # model.predict(X), not [0]
    (dict(prediction=np.array([1, 0])), TypeError, "'prediction' must be a class"),
]
GOOD = dict(model="bin", features={"x1": 0.5, "x2": 1.0, "c": "de"}, prediction=1, score=0.7, id="r", version="v1",
            latency_ms=3.0, ts=1_790_000_000.0)


@pytest.mark.parametrize("change, exc, message", BAD)
def test_a_broken_record_is_refused_naming_its_field(change, exc, message):
    with PredictionLogger(transport=Sink(), strict=True) as logger:
        with pytest.raises(exc, match=message.replace("(", r"\(")) as e:
            logger.log(**{**GOOD, **change})
        assert isinstance(e.value, InvalidRecord) and isinstance(e.value, InvalidType) == (exc is TypeError)
        assert logger.stats()["invalid"] == 0  # strict: the caller's test sees the error, nothing counted


def test_by_default_a_broken_record_is_counted_and_logged_never_raised(caplog):
    sink = Sink()
    with PredictionLogger(transport=sink) as logger:
        for change, _, _ in BAD:
            assert logger.log(**{**GOOD, **change}) is False
        assert logger.label(model="bin", id=None, label=1) is False
        assert logger.label(model="bin", id="r", label=None) is False
        assert logger.log(**GOOD) is True
        assert logger.flush(10)
        stats = logger.stats()
    assert stats["invalid"] == len(BAD) + 2 and stats["queued"] == stats["sent"] == 1
    assert "invalid record for model 'bin' not logged" in caplog.text
    # one warning per model per interval, not one per record
    assert caplog.text.count("invalid record for model 'bin'") == 1
    assert len(sink.lines) == 1


def test_nothing_a_caller_passes_escapes_log_as_an_exception(caplog):
    class Weird:
        def __str__(self):
            raise RuntimeError("no str")

        def __le__(self, other):
            raise RuntimeError("no order")

        __ge__ = __lt__ = __gt__ = __le__

    with PredictionLogger(transport=Sink()) as logger:
        for kwargs in (dict(model=Weird(), prediction=1), dict(model="m", prediction=1, score=Weird()),
                       dict(model="m", prediction=Weird()), dict(model="m", prediction=1, features={"x": Weird()}),
                       dict(model="m", prediction=1, ts=Weird()), dict(model="m", prediction=1, id=Weird())):
            assert logger.log(**kwargs) is False
        assert logger.label(model="m", id=Weird(), label=Weird()) is False
        assert logger.stats()["invalid"] == 7
    assert "invalid record for model '<Weird>'" in caplog.text
    # numpy string keys are strings
    rec = records.prediction("m", {np.str_("k"): 1.0}, 1, None, None, None, None, None, "ok", False, 1, None)
    assert rec["features"] == {"k": 1.0} and type(next(iter(rec["features"]))) is str


def test_what_the_client_accepts_the_exporter_accepts_and_what_it_refuses_the_exporter_refuses():
    """The exporter's parser is the truth: records the client lets through parse without a reject,
    and every refusal above that the exporter can see (JSON-expressible) is also an exporter reject."""
    from modelmon.exporter.records import RecordParser

    parser = RecordParser(make_config(), clock=lambda: 1_790_000_100.0)
    good = [records.prediction(**{**dict(scores=None, shadow=False, status="ok", label=None), **GOOD, **c})
            for c in (dict(), dict(features={"x1": np.float64(1), "x2": math.nan}), dict(status="error",
                      prediction=None), dict(shadow=True, label=0, version=None, id=None, latency_ms=None))]
    good.append(records.late_label("bin", "r", 1, 1_790_000_050.0))
    good.append(records.prediction("multi", {"x1": 1.0, "c": "a"}, "b", None, {"a": 0.1, "b": 0.9}, None, None,
                                   None, "ok", False, 1_790_000_000, None))
    good.append(records.prediction("reg", {"x1": 1.0, "x2": 2}, 3.25, None, None, None, None, None, "ok", False,
                                   1_790_000_000, 2.5))
    batch = parser.parse_lines([orjson.dumps(r) for r in good])
    assert not batch.rejects.counts and batch.accepted == len(good)

    refused = 0
    for change, _, _ in BAD:
        raw = {**GOOD, **change}
        if "scores" in change:  # scores are a multiclass model's
            raw.update(model="multi", prediction="a", score=None, features={"x1": 0.5, "c": "a"})
        if any(isinstance(v, float) and not math.isfinite(v) for v in _flat(raw)):
            continue  # not expressible in JSON: orjson would write null
        try:
            line = orjson.dumps({**{k: v for k, v in raw.items() if v is not None}, "status": raw.get("status", "ok")})
        except TypeError:
            continue
        batch = parser.parse_lines([line])
        refused += 1
        assert batch.accepted == 0, f"the exporter accepts {change} which the client refuses"
    assert refused >= 15


def _flat(d):
    for v in d.values():
        if isinstance(v, dict):
            yield from v.values()
        else:
            yield v


# ---------------------------------------------------------------------------------------- the queue


class Sink:
    """A transport that keeps what it is sent."""

    def __init__(self):
        self.lines: list[bytes] = []
        self.batches = 0
        self.closed = False

    def send(self, lines):
        self.lines.extend(lines)
        self.batches += 1
        return Delivery(sent=len(lines), bytes=sum(map(len, lines)))

    def close(self):
        self.closed = True


class Blocking(Sink):
    """A transport whose send() blocks until released: an exporter that never answers."""

    def __init__(self):
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def send(self, lines):
        self.entered.set()
        self.release.wait()
        return super().send(lines)


def test_with_a_transport_that_never_returns_log_returns_and_drops_exactly_the_overflow(caplog):
    transport = Blocking()
    logger = PredictionLogger(transport=transport, queue_size=100, batch_size=10, flush_interval=3600)
    try:
        for i in range(10):  # the 10th fills a batch and wakes the worker, which then blocks in send()
            assert logger.log(model="m", prediction=i, ts=1)
        assert transport.entered.wait(10)
        k = 37
        results = [logger.log(model="m", prediction=i, ts=1) for i in range(100 + k)]
        assert results.count(True) == 100 and results.count(False) == k
        # one warning for the burst, not k
        assert caplog.text.count("queue full (100 records): record dropped (1 dropped in all)") == 1
        assert caplog.text.count("queue full") == 1
        stats = logger.stats()
        assert stats["dropped"] == k and stats["queued"] == 110 and stats["pending"] == 110
        assert logger.queue_length() == 100
        transport.release.set()
        assert logger.flush(10)
        assert logger.stats() == {**stats, "sent": 110, "pending": 0, "batches": 11,
                                  "bytes": sum(map(len, transport.lines))}
    finally:
        transport.release.set()
        logger.close()


def test_flush_delivers_everything_queued_before_it_and_close_stops_for_good(caplog):
    sink = Sink()
    logger = PredictionLogger(transport=sink, batch_size=1000, flush_interval=3600)
    for i in range(250):
        logger.log(model="m", prediction=i, ts=1)
    assert logger.flush(10) and len(sink.lines) == 250 and sink.batches == 1
    assert [orjson.loads(x)["prediction"] for x in sink.lines] == list(range(250))
    assert logger.flush(0)  # nothing new: true at once
    logger.log(model="m", prediction=1, ts=1)
    assert logger.close() and sink.closed and len(sink.lines) == 251
    assert logger.log(model="m", prediction=2, ts=1) is False and logger.label(model="m", id="a", label=1) is False
    assert logger.stats()["dropped"] == 2 and "the logger is closed" in caplog.text
    assert logger.close()  # twice is fine


def test_a_transport_that_raises_or_miscounts_fails_its_batch_and_the_worker_lives_on(caplog):
    class Flaky(Sink):
        calls = 0

        def send(self, lines):
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("boom")
            if self.calls == 2:
                return Delivery(sent=1)  # says nothing of the others
            return super().send(lines)

    with PredictionLogger(transport=Flaky(), batch_size=5, flush_interval=3600) as logger:
        for _ in range(3):
            for i in range(5):
                logger.log(model="m", prediction=i, ts=1)
            assert logger.flush(10)
        stats = logger.stats()
    assert stats["failed"] == 5 + 4 and stats["sent"] == 1 + 5 and stats["pending"] == 0
    assert "transport failed on a batch of 5 records" in caplog.text


def test_close_gives_up_after_its_timeout_and_counts_the_rest_as_failed():
    """An exporter that is down, with a backoff far longer than the close timeout: close() ends the
    backoff, and every queued record is failed (none left pending, none lost from the books)."""
    port = free_port()  # nothing listens there
    logger = PredictionLogger(url=f"http://127.0.0.1:{port}/ingest", retries=5, backoff=3600, batch_size=10,
                              flush_interval=3600)
    for i in range(10):
        logger.log(model="m", prediction=i, ts=1)
    # The worker took the batch: it cannot take another before the send returns, i.e. before the
    # hour of backoff after the refused connection is over (or cut short by close).
    wait_until(lambda: logger.queue_length() == 0, timeout=10.0, interval=0.005)
    for i in range(25):
        logger.log(model="m", prediction=i, ts=1)
    assert logger.close(timeout=0.05) is False
    stats = logger.stats()
    assert stats["queued"] == 35 and stats["failed"] == 35 and stats["sent"] == 0 and stats["pending"] == 0
    assert stats["retries"] == 1


# ---------------------------------------------------------------------------------------- HTTP


class Stub:
    """A scripted /ingest: answers each request with the next (status, headers, body) of `script`
    (the last one repeats) and keeps what it received."""

    def __init__(self, script):
        self.script = list(script)
        self.requests: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                stub.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status, headers, payload = stub.script.pop(0) if len(stub.script) > 1 else stub.script[0]
                if callable(payload):
                    payload = payload(stub.records(-1))
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ingest?x=1"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def records(self, i: int) -> list[dict]:
        req = self.requests[i]
        body = req["body"]
        if req["headers"].get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return [orjson.loads(x) for x in body.splitlines() if x]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub(request):
    s = Stub(request.param if hasattr(request, "param") else [(200, {}, lambda recs: {"accepted": len(recs),
                                                                                   "rejected": 0})])
    yield s
    s.close()


def ok(recs):
    return {"received": len(recs), "accepted": len(recs), "rejected": 0, "errors": []}


def send_n(logger: PredictionLogger, n: int, model: str = "m") -> None:
    for i in range(n):
        assert logger.log(model=model, prediction=i % 2, id=f"r{i}", ts=1_790_000_000 + i)
    assert logger.flush(30)


def test_http_sends_gzipped_ndjson_with_the_bearer_token_on_one_connection(stub):
    with PredictionLogger(url=stub.url, token="s3cret", batch_size=40, flush_interval=3600) as logger:
        send_n(logger, 100)
        stats = logger.stats()
    assert stats["sent"] == 100 and stats["batches"] == 3 and len(stub.requests) == 3
    req = stub.requests[0]
    assert req["path"] == "/ingest?x=1"
    assert req["headers"]["Content-Encoding"] == "gzip" and req["headers"]["Authorization"] == "Bearer s3cret"
    assert req["headers"]["Content-Type"] == "application/x-ndjson"
    assert [r["id"] for i in range(3) for r in stub.records(i)] == [f"r{i}" for i in range(100)]
    assert stats["bytes"] == sum(len(r["body"]) for r in stub.requests)
    assert len({r["headers"].get("Host") for r in stub.requests}) == 1


def test_token_from_env_or_file_and_no_gzip_when_asked(stub, tmp_path, monkeypatch):
    monkeypatch.setenv("MODELMON_INGEST_TOKEN", "from-env")
    with PredictionLogger(url=stub.url, gzip=False) as logger:
        send_n(logger, 3)
    assert stub.requests[-1]["headers"]["Authorization"] == "Bearer from-env"
    assert "Content-Encoding" not in stub.requests[-1]["headers"]
    assert [r["id"] for r in stub.records(-1)] == ["r0", "r1", "r2"]
    (tmp_path / "token").write_text("from-file\n")
    with PredictionLogger(url=stub.url, token_file=tmp_path / "token") as logger:
        send_n(logger, 1)
    assert stub.requests[-1]["headers"]["Authorization"] == "Bearer from-file"
    with PredictionLogger(url=stub.url, token="arg", token_file=tmp_path / "token") as logger:
        send_n(logger, 1)
    assert stub.requests[-1]["headers"]["Authorization"] == "Bearer arg"
    monkeypatch.delenv("MODELMON_INGEST_TOKEN")
    with PredictionLogger(url=stub.url) as logger:
        send_n(logger, 1)
    assert "Authorization" not in stub.requests[-1]["headers"]


REJECTS = {"received": 10, "accepted": 7, "rejected": 3, "errors": [
    {"index": 2, "reason": "unknown_model", "message": "model 'm' is not in the config"}]}


@pytest.mark.parametrize("stub", [[(207, {}, REJECTS)]], indirect=True)
def test_per_record_rejects_of_a_207_count_as_failed(stub, caplog):
    with PredictionLogger(url=stub.url, batch_size=10, flush_interval=3600) as logger:
        send_n(logger, 10)
        stats = logger.stats()
    assert stats["sent"] == 7 and stats["failed"] == 3 and stats["retries"] == 0
    assert "the exporter refused 3 of 10 records: #2 unknown_model: model 'm' is not in the config" in caplog.text


@pytest.mark.parametrize("stub", [[(400, {}, {**REJECTS, "accepted": 0, "rejected": 10})]], indirect=True)
def test_a_400_with_counts_fails_every_record_without_retrying(stub):
    with PredictionLogger(url=stub.url, batch_size=10, flush_interval=3600) as logger:
        send_n(logger, 10)
        assert logger.stats()["failed"] == 10 and len(stub.requests) == 1


@pytest.mark.parametrize("stub", [[(401, {}, {"error": "missing or wrong bearer token"})]], indirect=True)
def test_a_wrong_token_fails_at_once_with_the_exporters_reason(stub, caplog):
    with PredictionLogger(url=stub.url, token="bad", retries=3, backoff=0.001) as logger:
        send_n(logger, 5)
        stats = logger.stats()
    assert stats["failed"] == 5 and stats["sent"] == 0 and len(stub.requests) == 1
    assert "HTTP 401: missing or wrong bearer token" in caplog.text


@pytest.mark.parametrize("stub", [[(401, {}, {"error": "wrong token"}), (200, {}, ok)]], indirect=True)
def test_a_401_rereads_a_rotated_token_file_once(stub, tmp_path):
    token = tmp_path / "token"
    token.write_text("old")
    with PredictionLogger(url=stub.url, token_file=token) as logger:
        token.write_text("new")  # the secret was rotated after the logger read it
        send_n(logger, 4)
        assert logger.stats()["sent"] == 4
    assert [r["headers"]["Authorization"] for r in stub.requests] == ["Bearer old", "Bearer new"]


@pytest.mark.parametrize("stub", [[(503, {}, b"busy"), (429, {"Retry-After": "0"}, {"error": "slow down"}),
                                   (200, {}, ok)]], indirect=True)
def test_5xx_and_429_are_retried_with_backoff_until_delivered(stub):
    with PredictionLogger(url=stub.url, retries=3, backoff=0.001) as logger:
        send_n(logger, 6)
        stats = logger.stats()
    assert stats["sent"] == 6 and stats["failed"] == 0 and stats["retries"] == 2 and len(stub.requests) == 3
    assert stub.records(0) == stub.records(2)


@pytest.mark.parametrize("stub", [[(500, {}, b"oops")]], indirect=True)
def test_retries_exhausted_fail_the_batch(stub, caplog):
    with PredictionLogger(url=stub.url, retries=2, backoff=0.001) as logger:
        send_n(logger, 4)
        stats = logger.stats()
    assert stats["failed"] == 4 and stats["retries"] == 2 and len(stub.requests) == 3
    assert "4 records failed after 3 attempts" in caplog.text and "HTTP 500: oops" in caplog.text


def test_a_413_splits_the_batch_until_it_fits():
    stub = Stub([(200, {}, ok)])
    original = stub.server.RequestHandlerClass.do_POST

    def do_post(handler):
        n = int(handler.headers["Content-Length"])
        body = handler.rfile.read(n)
        recs = [x for x in gzip.decompress(body).splitlines() if x]
        stub.requests.append({"n": len(recs)})
        status, payload = (413, {"error": "body too large"}) if len(recs) > 3 else (200, ok(recs))
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    stub.server.RequestHandlerClass.do_POST = do_post
    try:
        with PredictionLogger(url=stub.url, batch_size=10, flush_interval=3600) as logger:
            send_n(logger, 10)
            assert logger.stats()["sent"] == 10 and logger.stats()["failed"] == 0
        assert [r["n"] for r in stub.requests] == [10, 5, 2, 3, 5, 2, 3]
    finally:
        stub.server.RequestHandlerClass.do_POST = original
        stub.close()


def test_an_unreachable_exporter_fails_batches_after_the_retries_and_log_never_raises():
    port = free_port()
    with PredictionLogger(url=f"http://127.0.0.1:{port}/ingest", retries=2, backoff=0.001, batch_size=5,
                          queue_size=20) as logger:
        results = [logger.log(model="m", prediction=1, ts=1) for _ in range(200)]
        assert logger.flush(30)
        stats = logger.stats()
    assert stats["queued"] == results.count(True) and stats["dropped"] == results.count(False)
    assert stats["queued"] + stats["dropped"] == 200 and stats["queued"] >= 20
    assert stats["failed"] == stats["queued"] and stats["sent"] == 0
    assert stats["retries"] == 2 * (stats["queued"] // 5 + (stats["queued"] % 5 > 0)) or stats["retries"] > 0


def test_an_exporter_that_accepts_connections_and_never_answers_fails_batches_by_the_timeout():
    import socket

    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)  # the kernel completes connections; nobody ever reads or answers
    try:
        url = f"http://127.0.0.1:{hung.getsockname()[1]}/ingest"
        with PredictionLogger(url=url, timeout=0.1, retries=1, backoff=0.001, batch_size=10, queue_size=30) as logger:
            results = [logger.log(model="m", prediction=1, ts=1) for _ in range(100)]
            assert logger.flush(60)
            stats = logger.stats()
        assert stats["queued"] == results.count(True) >= 30 and stats["dropped"] == results.count(False)
        assert stats["failed"] == stats["queued"] and stats["sent"] == 0 and stats["retries"] >= 1
    finally:
        hung.close()


def test_bad_arguments_are_refused_at_construction(tmp_path):
    with pytest.raises(ValueError, match="exactly one of"):
        PredictionLogger()
    with pytest.raises(ValueError, match="exactly one of"):
        PredictionLogger(url="http://x/ingest", path=tmp_path / "p")
    with pytest.raises(ValueError, match="http"):
        PredictionLogger(url="ftp://x/ingest")
    with pytest.raises(ValueError, match="rotate_bytes is for a file"):
        PredictionLogger(url="http://x/ingest", rotate_bytes=100)
    with pytest.raises(ValueError, match="empty"):
        (tmp_path / "t").write_text("  \n")
        PredictionLogger(url="http://x/ingest", token_file=tmp_path / "t")
    with pytest.raises(FileNotFoundError):
        PredictionLogger(path=tmp_path / "missing-dir" / "p.jsonl")


# ---------------------------------------------------------------------------------------- file


def test_file_logger_appends_lines_and_rotates_by_rename(tmp_path):
    path = tmp_path / "preds.jsonl"
    with PredictionLogger(path=path, rotate_bytes="1K", batch_size=5, flush_interval=3600) as logger:
        for i in range(5):
            send_n(logger, 5)
        assert logger.transport.rotations >= 2
    assert path.stat().st_size <= 1024 and (tmp_path / "preds.jsonl.1").stat().st_size <= 1024
    assert all(r["model"] == "m" for r in lines_of(path))


def test_a_failed_write_fails_its_batch_and_the_next_write_starts_on_a_fresh_line(tmp_path, caplog):
    path = tmp_path / "preds.jsonl"
    transport = FileTransport(path)

    class HalfThenFail:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            self.fh.write(bytes(data[:5]))
            raise OSError(28, "No space left on device")

        def close(self):
            self.fh.close()

    transport._fh = HalfThenFail(transport._fh)
    assert transport.send([b'{"a":1}', b'{"a":2}']) == Delivery(failed=2)
    assert transport.send([b'{"a":3}']) == Delivery(sent=1, bytes=9)
    assert path.read_bytes() == b'{"a":\n{"a":3}\n'  # the torn part stays one (refused) line
    assert "cannot write" in caplog.text and "No space left" in caplog.text


def test_the_simulator_uses_the_clients_rotating_log():
    from modelmon.client.rotating import RotatingLog
    from modelmon.simulate import rotating

    assert rotating.RotatingLog is RotatingLog


# ---------------------------------------------------------------------------------------- metrics


def test_metrics_in_the_callers_registry_sum_loggers_and_keep_closed_ones():
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    a = PredictionLogger(transport=Sink(), registry=registry)
    b = PredictionLogger(transport=Blocking(), registry=registry, queue_size=3, batch_size=1)
    try:
        send_n(a, 4)
        a.log(model="", prediction=1)  # invalid
        b.log(model="m", prediction=1, ts=1)
        assert b.transport.entered.wait(10)
        for _ in range(5):
            b.log(model="m", prediction=1, ts=1)  # 3 queued, 2 dropped

        def value(outcome):
            return registry.get_sample_value("modelmon_client_records_total", {"outcome": outcome})

        assert (value("queued"), value("sent"), value("invalid"), value("dropped")) == (8, 4, 1, 2)
        assert registry.get_sample_value("modelmon_client_queue_size") == 3
        assert a.close()
        assert (value("queued"), value("sent"), value("invalid")) == (8, 4, 1)  # a's counts stay
        b.transport.release.set()
        assert b.flush(10)
        assert value("sent") == 8 and registry.get_sample_value("modelmon_client_queue_size") == 0
    finally:
        b.transport.release.set()
        a.close()
        b.close()


# ---------------------------------------------------------------------------------------- process


def run_python(code: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_importing_the_client_loads_nothing_heavy(tmp_path):
    out = run_python("""
        import json, sys
        import modelmon.client
        print(json.dumps(sorted(sys.modules)))
    """, tmp_path)
    assert out.returncode == 0, out.stderr
    loaded = {m.split(".")[0] for m in json.loads(out.stdout)} | set(json.loads(out.stdout))
    for heavy in ("numpy", "flask", "werkzeug", "scipy", "sklearn", "requests", "prometheus_client", "yaml",
                  "pyarrow", "modelmon.exporter", "modelmon.config", "modelmon.contract"):
        assert heavy not in loaded, f"import modelmon.client loads {heavy}"


def test_records_queued_at_interpreter_exit_are_written(tmp_path):
    out = run_python("""
        from modelmon.client import PredictionLogger
        logger = PredictionLogger(path="preds.jsonl", flush_interval=3600, batch_size=10_000)
        for i in range(500):
            logger.log(model="m", prediction=i, ts=1)
    """, tmp_path)
    assert out.returncode == 0, out.stderr
    assert [r["prediction"] for r in lines_of(tmp_path / "preds.jsonl")] == list(range(500))


def test_a_forked_child_gets_a_working_logger_of_its_own(tmp_path):
    out = run_python("""
        import os, json
        from modelmon.client import PredictionLogger
        logger = PredictionLogger(path="preds.jsonl", flush_interval=3600, batch_size=10_000)
        logger.log(model="parent", prediction=0, ts=1)
        pid = os.fork()
        if pid == 0:
            for i in range(20):
                logger.log(model="child", prediction=i, ts=1)
            ok = logger.close()
            print(json.dumps(logger.stats()), flush=True)
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert status == 0
        logger.close()
        print(json.dumps(logger.stats()))
    """, tmp_path)
    assert out.returncode == 0, out.stderr
    child, parent = (json.loads(x) for x in out.stdout.splitlines())
    assert child["queued"] == child["sent"] == 20 and parent["queued"] == parent["sent"] == 1
    recs = lines_of(tmp_path / "preds.jsonl")
    assert sorted(r["model"] for r in recs) == ["child"] * 20 + ["parent"]


# ---------------------------------------------------------------------------------------- README example


def test_the_flask_example_logs_one_record_per_prediction_with_its_latency_and_errors():
    """The README's Flask example (same code), on Flask's test client."""
    sink = Sink()
    logger = PredictionLogger(transport=sink)

    # -- README: Flask --------------------------------------------------------------------------
    import time
    import uuid

    from flask import Flask, g, jsonify, request

    app = Flask(__name__)

    @app.before_request
    def _modelmon_start():
        g.modelmon_t0 = time.perf_counter()
        g.modelmon = None  # the view fills it: dict(model=..., features=..., prediction=..., ...)

    @app.after_request
    def _modelmon_log(response):
        rec = g.get("modelmon")
        if rec is not None:  # a 5xx is an error record (its prediction, if any, is kept)
            logger.log(**rec, status="error" if response.status_code >= 500 else "ok",
                       latency_ms=(time.perf_counter() - g.modelmon_t0) * 1000)
        return response

    @app.post("/predict")
    def predict():
        features = request.get_json()
        request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
        g.modelmon = dict(model="credit", version="v3", id=request_id, features=features)
        score = 1 / (1 + math.exp(-features["income"] / 1000))  # your model here
        if features.get("age", 0) < 0:
            raise ValueError("bad age")
        g.modelmon.update(prediction=int(score >= 0.5), score=score)
        if features.get("age") == 999:
            raise RuntimeError("failed after predicting")
        return jsonify(id=request_id, score=score)
    # -- end of the README example --------------------------------------------------------------

    client = app.test_client()
    r = client.post("/predict", json={"income": 5120.5, "age": 41, "country": "DE"}, headers={"X-Request-Id": "r1"})
    assert r.status_code == 200
    app.testing = False  # let the error become a 500, as in production
    assert client.post("/predict", json={"income": 10.0, "age": -1}).status_code == 500
    assert client.post("/predict", json={"income": 10.0, "age": 999}).status_code == 500
    assert logger.close()
    first, second, third = (orjson.loads(x) for x in sink.lines)
    assert third["status"] == "error" and third["prediction"] == 1
    assert first["id"] == "r1" and first["status"] == "ok" and first["prediction"] == 1 and first["latency_ms"] > 0
    assert first["features"] == {"income": 5120.5, "age": 41, "country": "DE"} and first["version"] == "v3"
    assert second["status"] == "error" and "prediction" not in second and len(second["id"]) == 32


def test_the_asgi_middleware_of_the_fastapi_example_logs_one_record_per_prediction():
    """The README's FastAPI example is a plain ASGI middleware (same code), so it is tested here on a
    bare ASGI app, without FastAPI; in FastAPI `request.state` is this `scope["state"]` dict."""
    import asyncio

    sink = Sink()
    logger = PredictionLogger(transport=sink)

    # -- README: FastAPI (ASGI middleware) ------------------------------------------------------
    import time

    class ModelmonMiddleware:
        """One prediction record per request whose endpoint set `request.state.modelmon`."""

        def __init__(self, app, logger):
            self.app, self.logger = app, logger

        async def __call__(self, scope, receive, send):
            if scope["type"] != "http":
                return await self.app(scope, receive, send)
            t0 = time.perf_counter()
            state = scope.setdefault("state", {})  # = request.state in FastAPI/Starlette
            status = 500

            async def send_and_see(message):
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await self.app(scope, receive, send_and_see)
            finally:  # also when the endpoint raised: an error record
                rec = state.get("modelmon")
                if rec is not None:  # a 5xx is an error record (its prediction, if any, is kept)
                    self.logger.log(**rec, status="error" if status >= 500 else "ok",
                                    latency_ms=(time.perf_counter() - t0) * 1000)
    # -- end of the README example --------------------------------------------------------------

    async def endpoint(scope, receive, send):  # what FastAPI's routing does, reduced to ASGI
        body = orjson.loads((await receive())["body"])
        scope["state"]["modelmon"] = dict(model="credit", id=body["id"], features=body["features"])
        if body["features"]["age"] < 0:
            raise ValueError("bad age")
        scope["state"]["modelmon"]["prediction"] = 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    app = ModelmonMiddleware(endpoint, logger)

    async def call(payload):
        sent = []

        async def receive():
            return {"type": "http.request", "body": orjson.dumps(payload), "more_body": False}

        async def send(message):
            sent.append(message)

        try:
            await app({"type": "http", "method": "POST", "path": "/predict", "headers": []}, receive, send)
        except ValueError:
            return 500
        return sent[0]["status"]

    assert asyncio.run(call({"id": "a", "features": {"age": 41}})) == 200
    assert asyncio.run(call({"id": "b", "features": {"age": -1}})) == 500
    assert logger.close()
    ok_rec, err_rec = (orjson.loads(x) for x in sink.lines)
    assert ok_rec["id"] == "a" and ok_rec["status"] == "ok" and ok_rec["prediction"] == 1 and ok_rec["latency_ms"] > 0
    assert err_rec["id"] == "b" and err_rec["status"] == "error" and "prediction" not in err_rec
