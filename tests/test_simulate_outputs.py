"""The simulator's ways out besides a file: a Redis Stream (`--stream`) and an exporter's POST
/ingest through the Python client (`--post`). Same seed, same records through every path; nothing
undelivered goes unsaid."""
from __future__ import annotations

import argparse
import datetime
import gzip
import http.server
import io
import json
import subprocess
import sys
import threading

import orjson
import pytest
import redis

from conftest import ROOT, free_port, which_or_skip
from modelmon.simulate import Simulator, cli
from modelmon.simulate.live import run_live
from modelmon.simulate.scenarios import Timeline, parse_schedule
from modelmon.simulate.sinks import DeliveryError, PostSink, StreamSink, parse_stream_url

START = "2026-11-23T10:00:00Z"
PY = sys.executable


@pytest.fixture
def redis_url(tmp_path):
    """A real redis-server on 127.0.0.1 (no persistence): the base URL redis://127.0.0.1:PORT/0."""
    binary = which_or_skip("redis-server")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    try:
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert proc.poll() is None, "redis-server exited"
                threading.Event().wait(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.kill()
        proc.wait()


def simulate(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "modelmon", "simulate", *argv], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def entries(url: str, stream: str) -> list[bytes]:
    client = redis.Redis.from_url(url)
    try:
        return [fields[b"record"] for _, fields in client.xrange(stream)]
    finally:
        client.close()


# --------------------------------------------------------------------------- Redis Stream


def test_the_stream_gets_the_files_lines_byte_for_byte(tmp_path, redis_url):
    log = tmp_path / "out.jsonl"
    common = ["--records", "3000", "--seed", "5", "--start", START, "--inline-labels"]
    assert simulate(*common, "--out", str(log)).returncode == 0
    done = simulate(*common, "--stream", f"{redis_url}?stream=preds&group=modelmon")
    assert done.returncode == 0, done.stderr
    lines = log.read_bytes().splitlines()
    assert len(lines) >= 3000
    assert entries(redis_url, "preds") == lines
    assert f"{len(lines)} delivered to stream 'preds', 0 not delivered" in done.stderr


def test_live_mode_streams_what_it_would_write(redis_url):
    """The same live run (fake clock, same seed) into a file object and into the stream."""
    def run(out) -> int:
        clock = [1_800_000_000.0]

        def sleep(seconds: float) -> None:
            clock[0] += max(seconds, 0.001)

        sim = Simulator(seed=11, label_delay="fixed:1s")
        timeline = Timeline.from_schedule(parse_schedule("stable:3,error_burst:3"), 20, loop=False)
        return run_live(sim, timeline, out, 20, clock=lambda: clock[0], sleep=sleep)

    file = io.BytesIO()
    n = run(file)
    with StreamSink(f"{redis_url}?stream=live", strict=False) as sink:
        assert run(sink) == n
    assert sink.delivered == n and sink.undelivered == 0
    assert entries(redis_url, "live") == file.getvalue().splitlines()
    assert any(b'"label"' in e for e in entries(redis_url, "live"))  # label records too


def test_the_stream_is_capped_near_maxlen(redis_url):
    with StreamSink(f"{redis_url}?stream=capped", maxlen=200) as sink:
        Simulator(seed=1).write(sink, 5000, start=START)
    length = redis.Redis.from_url(redis_url).xlen("capped")
    # MAXLEN ~ trims whole radix-tree nodes (100 entries each by default): near the cap, never far past it.
    assert 200 <= length < 200 + 2 * 100
    assert sink.delivered > 5000


class DownClient:
    """A Redis client whose every call fails, as while Redis restarts."""

    def __init__(self):
        self.calls = 0

    def pipeline(self, transaction=False):
        return self

    def xadd(self, *args, **kwargs):
        pass

    def execute(self):
        self.calls += 1
        raise redis.ConnectionError("Connection refused")

    def close(self):
        pass


def test_live_mode_counts_what_redis_did_not_take_and_warns_at_most_every_ten_seconds():
    now = [0.0]
    err = io.StringIO()
    sink = StreamSink("redis://127.0.0.1:1/0?stream=s", strict=False, client=DownClient(), err=err,
                      clock=lambda: now[0])
    for i in range(30):
        sink.write(b'{"a":1}\n{"a":2}\n')
        now[0] += 1  # one write a second for 30 s
    assert sink.undelivered == 60 and sink.delivered == 0
    warnings = err.getvalue().splitlines()
    assert len(warnings) == 3  # at 0 s, 10 s and 20 s
    assert warnings[-1].startswith("modelmon simulate: 42 record(s) not delivered to stream 's' so far")
    assert "ConnectionError: Connection refused" in warnings[0]


def test_batch_mode_stops_at_the_first_undelivered_batch():
    sink = StreamSink("redis://127.0.0.1:1/0?stream=s", client=DownClient())
    with pytest.raises(DeliveryError, match=r"^2 record\(s\) not delivered to stream 's': ConnectionError"):
        sink.write(b'{"a":1}\n{"a":2}\n')


def test_an_unreachable_redis_is_one_line_and_exit_1():
    done = simulate("--records", "5", "--stream", f"redis://127.0.0.1:{free_port()}/0?stream=s")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modelmon simulate: ") and "not delivered to stream 's'" in lines[0]


@pytest.mark.parametrize("url, problem", [
    ("http://127.0.0.1:6379/0?stream=s", "expected redis://HOST:PORT/DB?stream=NAME"),
    ("redis://127.0.0.1:6379/0", "needs exactly one stream=NAME"),
    ("redis://127.0.0.1:6379/0?stream=a&stream=b", "needs exactly one stream=NAME"),
    ("redis://127.0.0.1:6379/0?stream=s&maxlen=5", "unknown parameter(s) maxlen"),
    ("redis://127.0.0.1:6379/x?stream=s", "the URL's path is the database number"),
])
def test_bad_stream_urls_are_refused_before_anything_runs(url, problem):
    with pytest.raises(ValueError, match=r"^--stream: "):
        parse_stream_url(url)
    done = simulate("--records", "5", "--stream", url)
    assert done.returncode == 2 and problem in done.stderr


def test_the_consumers_url_works_as_it_is():
    target = parse_stream_url("redis://:pw@redis:6380/2?stream=predictions&group=modelmon&consumer=a&claim_idle=60s")
    assert target.stream == "predictions"
    assert target.connection_url == "redis://:pw@redis:6380/2"


# --------------------------------------------------------------------------- POST /ingest via the client


class RecordingLogger:
    """Stands in for PredictionLogger: keeps the keyword calls."""

    def __init__(self, refuse_after: int | None = None):
        self.calls: list[tuple[str, dict]] = []
        self.refuse_after = refuse_after
        self.dropped = 0
        self.closed = False

    def log(self, **kwargs) -> bool:
        return self._take("log", kwargs)

    def label(self, **kwargs) -> bool:
        return self._take("label", kwargs)

    def _take(self, kind: str, kwargs: dict) -> bool:
        if self.refuse_after is not None and len(self.calls) >= self.refuse_after:
            self.dropped += 1
            return False
        self.calls.append((kind, kwargs))
        return True

    def flush(self, timeout=None) -> bool:
        return True

    def stats(self) -> dict:
        return {"queued": 0, "sent": len(self.calls), "dropped": self.dropped, "failed": 0}

    def close(self, timeout=None) -> None:
        self.closed = True


def test_each_line_becomes_the_clients_log_or_label_call_with_the_same_fields():
    sim = Simulator(seed=4, label_delay="fixed:0s")
    records = sim.records(500, "error_burst", start=START)
    logger = RecordingLogger()
    with PostSink("http://x/ingest", logger=logger) as sink:
        sink.write(b"".join(orjson.dumps(r) + b"\n" for r in records))
    assert [kwargs for _, kwargs in logger.calls] == records
    assert {kind for kind, kwargs in logger.calls if "features" in kwargs} == {"log"}
    assert {kind for kind, kwargs in logger.calls if "features" not in kwargs} == {"label"}
    assert any(r.get("status") == "error" and "prediction" not in r for r in records)  # errors have no prediction
    assert logger.closed and sink.delivered == len(records) and sink.undelivered == 0


def test_records_the_client_drops_are_counted_and_batch_mode_fails_on_them():
    lines = b'{"model":"m","id":"1","label":1}\n' * 5
    live = PostSink("http://x/ingest", logger=RecordingLogger(refuse_after=3), strict=False, err=io.StringIO())
    live.write(lines)
    assert live.undelivered == 2
    with pytest.raises(DeliveryError, match=r"^1 record\(s\) not delivered to http://x/ingest: dropped by the client"):
        PostSink("http://x/ingest", logger=RecordingLogger(refuse_after=4)).write(lines)


class IngestRecorder(http.server.ThreadingHTTPServer):
    """A stand-in exporter: keeps every record POSTed to /ingest (gzip or not), answers 200."""

    def __init__(self):
        self.records: list[dict] = []
        self.headers_seen: list[dict] = []
        lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                with lock:
                    server.headers_seen.append(dict(self.headers))
                    server.records.extend(json.loads(line) for line in body.splitlines() if line.strip())
                reply = json.dumps({"accepted": len(body.splitlines()), "rejected": 0}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_post_sends_the_same_records_as_the_file_through_the_real_client(tmp_path):
    pytest.importorskip("modelmon.client", reason="the Python client (issue 14, part A) is not in yet")
    server = IngestRecorder()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/ingest"
        token = tmp_path / "token"
        token.write_text("s3cret\n")
        log = tmp_path / "out.jsonl"
        common = ["--records", "1500", "--seed", "9", "--start", START]
        assert simulate(*common, "--out", str(log)).returncode == 0
        done = simulate(*common, "--post", url, "--ingest-token-file", str(token))
        assert done.returncode == 0, done.stderr
    finally:
        server.shutdown()
    expected = [json.loads(line) for line in log.read_text().splitlines()]
    # The client sends `ts` as epoch seconds (it takes RFC 3339 too): the same instant, the same record.
    for rec in expected:
        rec["ts"] = datetime.datetime.fromisoformat(rec["ts"]).timestamp()
    assert server.records == expected
    assert all(h.get("Authorization") == "Bearer s3cret" for h in server.headers_seen)
    assert f"{len(expected)} delivered to {url}, 0 not delivered" in done.stderr


# --------------------------------------------------------------------------- options


def _check(*argv: str) -> str | None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli._check(parser.parse_args(list(argv)))


@pytest.mark.parametrize("argv, problem", [
    (["--out", "a", "--stream", "redis://h/0?stream=s"], "give one of --out, --post and --stream, not --out and --stream"),
    (["--post", "http://h/ingest", "--stream", "redis://h/0?stream=s"], "not --post and --stream"),
    (["--out", "a", "--ingest-token-file", "t"], "--ingest-token-file is for --post"),
    (["--out", "a", "--stream-maxlen", "5"], "--stream-maxlen is for --stream"),
    (["--stream", "redis://h/0?stream=s", "--stream-maxlen", "0"], "--stream-maxlen must be at least 1"),
    (["--stream", "redis://h/0?stream=s", "--rotate-bytes", "1M"], "--rotate-bytes is for live mode writing to a file"),
])
def test_output_options_that_do_not_go_together(argv, problem):
    assert problem in (_check(*argv) or "")


def test_stream_and_post_alone_are_something_to_do():
    assert _check("--stream", "redis://h/0?stream=s") is None
    assert _check("--post", "http://h/ingest", "--records", "3") is None


# --------------------------------------------------------------------------- the heartbeat (the stack's health check)


class UpClient(DownClient):
    def execute(self):
        self.calls += 1
        return []


def test_the_heartbeat_beats_while_records_are_delivered_and_stops_when_they_are_not(tmp_path):
    beat = tmp_path / "traffic.heartbeat"
    now = [0.0]
    up = StreamSink("redis://h/0?stream=s", strict=False, client=UpClient(), heartbeat=beat, clock=lambda: now[0])
    up.write(b'{"a":1}\n')
    assert beat.read_text() == "1\n"
    now[0] += 0.5
    up.write(b'{"a":1}\n')
    assert beat.read_text() == "1\n"  # at most once a second
    now[0] += 1
    up.write(b'{"a":1}\n')
    assert beat.read_text() == "3\n"
    down_beat = tmp_path / "down.heartbeat"
    down = StreamSink("redis://h/0?stream=s", strict=False, client=DownClient(), heartbeat=down_beat,
                      clock=lambda: now[0], err=io.StringIO())
    down.write(b'{"a":1}\n')
    assert not down_beat.exists()


def test_the_post_heartbeat_follows_what_the_exporter_took(tmp_path):
    beat = tmp_path / "traffic.heartbeat"
    logger = RecordingLogger(refuse_after=0)  # nothing is taken
    sink = PostSink("http://x/ingest", logger=logger, strict=False, heartbeat=beat, err=io.StringIO())
    sink.write(b'{"model":"m","id":"1","label":1}\n')
    assert not beat.exists()
    taking = PostSink("http://x/ingest", logger=RecordingLogger(), strict=False, heartbeat=beat)
    taking.write(b'{"model":"m","id":"1","label":1}\n')
    assert beat.read_text() == "1\n"


def test_heartbeat_is_for_the_sinks_only():
    assert "--heartbeat is for --post and --stream" in _check("--out", "a", "--heartbeat", "h")
    assert _check("--stream", "redis://h/0?stream=s", "--heartbeat", "h") is None
