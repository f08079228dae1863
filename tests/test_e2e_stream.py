"""`modelmon serve --stream` as real processes on a real redis-server: exactly-once accounting
across kill -9 and restart, two replicas sharing one group, a dead member's entries taken over.

The accounting is exact, from Redis itself: after a kill -9, the entries up to the group's
last-delivered id (delivered once each) minus its pending count (delivered, not acknowledged) is
what the killed process acknowledged; the process that carries on must apply exactly the rest.
"""
from __future__ import annotations

import signal
import time

import requests

import orjson
import pytest

from tests.exporter_helpers import binary_records
from tests.processes import Serve, append
from tests.conftest import which_or_skip
from tests.redis_server import RedisServer, redis_server  # noqa: F401 - the fixture

TOTAL = 10_000


@pytest.fixture(scope="module")
def records() -> list[bytes]:
    preds, _ = binary_records(TOTAL, seed=140, inline_share=1.0)
    return [orjson.dumps(r) for r in preds]


@pytest.fixture
def serves(tmp_path):
    made: list[Serve] = []

    def make(name: str) -> Serve:
        d = tmp_path / name
        d.mkdir()
        s = Serve(d, None)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop(signal.SIGKILL)


def xadd(client, records, pipelined=True) -> None:
    if not pipelined:  # one call each: every XADD wakes the consumer that has been blocked longest
        for r in records:
            client.xadd("preds", {"record": r})
        return
    pipe = client.pipeline()
    for r in records:
        pipe.xadd("preds", {"record": r})
    pipe.execute()


def group(client) -> dict:
    """XINFO GROUPS of the group `mm` (before a process created it: nothing delivered, nothing pending)."""
    found = [g for g in client.xinfo_groups("preds") if g["name"] == b"mm"]
    return found[0] if found else {"last-delivered-id": b"0-0", "pending": 0}


def delivered(client) -> int:
    """Entries delivered to the group so far: those up to its last-delivered id (none is deleted here)."""
    last = group(client)["last-delivered-id"]
    return 0 if last == b"0-0" else len(client.xrange("preds", "-", last))


def applied(serve: Serve) -> float:
    return serve.value("modelmon_stream_entries_total", stream="preds", group="mm")


def ingested(serve: Serve) -> float:
    return serve.value("modelmon_records_ingested_total", source="stream")


def kill_and_count(serve: Serve, client) -> tuple[int, int]:
    """kill -9 `serve`; (entries it acknowledged, entries left pending), read from Redis."""
    serve.stop(signal.SIGKILL)
    pending = group(client)["pending"]
    return delivered(client) - pending, pending


def drained(client) -> bool:
    """Every entry delivered to the group and acknowledged."""
    g = group(client)
    return g["pending"] == 0 and g["last-delivered-id"] == client.xinfo_stream("preds")["last-generated-id"]


def test_exactly_once_across_kill_9_and_restart(redis_server, serves, records, tmp_path):
    r = redis_server.client()
    url = redis_server.url(consumer="exp-1", batch=50)
    checkpoint = str(tmp_path / "stream.checkpoint")
    xadd(r, records[:TOTAL // 2])  # the rest only after the kill: run 1 cannot have finished
    run1 = serves("run1")
    run1.start("--stream", url, "--checkpoint", checkpoint, "--checkpoint-interval", "0.2")
    run1.wait_until(lambda: delivered(r) >= 1000, interval=0.01)
    acked1, pending = kill_and_count(run1, r)
    assert 0 < acked1 <= TOTAL // 2

    xadd(r, records[TOTAL // 2:])
    run2 = serves("run2")
    run2.start("--stream", url, "--checkpoint", checkpoint, "--checkpoint-interval", "0.2")
    run2.wait_until(lambda: drained(r) and applied(run2) >= TOTAL - acked1)
    time.sleep(0.5)  # anything applied twice would show by now
    assert acked1 + ingested(run2) == TOTAL
    assert applied(run2) == TOTAL - acked1
    assert run2.value("modelmon_stream_claimed_total", owner="self") == pending  # run 1's batch in hand
    assert run2.value("modelmon_stream_acked_total") == TOTAL - acked1
    assert group(r)["pending"] == 0

    # A graceful stop acknowledges everything applied and exits 0.
    assert run2.stop(signal.SIGTERM) == 0, run2.stderr()[-2000:]
    assert group(r)["pending"] == 0


def test_two_replicas_share_one_group(redis_server, serves, records):
    r = redis_server.client()
    r.xgroup_create("preds", "mm", id="$", mkstream=True)
    a, b = serves("a"), serves("b")
    a.start("--stream", redis_server.url(consumer="a", batch=50))
    b.start("--stream", redis_server.url(consumer="b", batch=50))
    for s in (a, b):
        s.wait_until(lambda s=s: s.value("modelmon_stream_up") == 1)
    r.xgroup_setid("preds", "mm", "$")
    xadd(r, records, pipelined=False)
    a.wait_until(lambda: drained(r) and ingested(a) + ingested(b) >= TOTAL)
    time.sleep(0.5)
    na, nb = ingested(a), ingested(b)
    assert na + nb == TOTAL
    assert na > 0 and nb > 0
    # Lag and pending are the group's: every replica reports the same value (max by, never sum).
    for s in (a, b):
        s.wait_until(lambda s=s: s.value("modelmon_stream_lag_entries") == 0
                     and s.value("modelmon_stream_pending_entries") == 0)


def test_dead_members_pending_taken_over_by_the_survivor(redis_server, serves, records):
    r = redis_server.client()
    xadd(r, records)
    r.xgroup_create("preds", "mm", id="0")
    r.xreadgroup("mm", "ghost", {"preds": ">"}, count=200)  # a member that died with 200 in hand
    first = serves("first")
    first.start("--stream", redis_server.url(consumer="first", batch=50, claim_idle="1h"))
    first.wait_until(lambda: delivered(r) >= 2000, interval=0.01)
    acked_first, pending = kill_and_count(first, r)  # pending: the ghost's 200 and first's batch in hand
    assert pending >= 200

    survivor = serves("survivor")
    survivor.start("--stream", redis_server.url(consumer="survivor", batch=50, claim_idle="1s"))
    survivor.wait_until(lambda: drained(r) and applied(survivor) >= TOTAL - acked_first)
    time.sleep(0.5)
    assert survivor.value("modelmon_stream_claimed_total", owner="other") == pending
    assert ingested(survivor) == TOTAL - acked_first
    assert group(r)["pending"] == 0


def test_log_and_stream_together(redis_server, serves, records, tmp_path):
    """Both ways in at once, with a checkpoint (taken by the file source, never with a stream batch unacked)."""
    r = redis_server.client()
    serve = serves("both")
    log = serve.tmp / "predictions.jsonl"
    append(log, [orjson.loads(x) for x in records[:300]])
    xadd(r, records[300:1000])
    serve.start("--log", str(log), "--from-start", "--stream", redis_server.url(consumer="both"),
                "--checkpoint", str(tmp_path / "both.checkpoint"), "--checkpoint-interval", "0.1")
    serve.wait_until(lambda: serve.value("modelmon_records_ingested_total", source="file") == 300
                     and ingested(serve) == 700 and drained(r))
    assert serve.stop(signal.SIGTERM) == 0, serve.stderr()[-2000:]
    assert (tmp_path / "both.checkpoint").exists()


def test_redis_absent_at_start_then_up(serves, records, tmp_path):
    """No Redis yet: the exporter runs, says why it is not ready, counts the failures; then consumes."""
    server = RedisServer(which_or_skip("redis-server"), tmp_path / "redis")  # its port, nothing listening yet
    serve = serves("early")
    serve.start("--stream", server.url(consumer="early"))
    try:
        r = requests.get(serve.url("/ready"), timeout=5)
        assert r.status_code == 503
        assert r.json()["reason"].startswith(f"stream redis://127.0.0.1:{server.port}/0?stream=preds&group=mm: ")
        serve.wait_until(lambda: serve.value("modelmon_stream_errors_total", operation="connect") >= 2)
        assert serve.value("modelmon_stream_up") == 0
        server.start()
        xadd(server.client(), records[:500])
        serve.wait_until(lambda: ingested(serve) == 500)
        assert requests.get(serve.url("/ready"), timeout=5).status_code == 200
        assert serve.value("modelmon_stream_up") == 1
    finally:
        server.stop()


def test_password_file_against_a_protected_redis(serves, records, tmp_path):
    server = RedisServer(which_or_skip("redis-server"), tmp_path / "redis", password="pw-e2e-secret")
    server.start()
    try:
        (tmp_path / "redis.pw").write_text("pw-e2e-secret\n")
        xadd(server.client(), records[:200])
        serve = serves("protected")
        url = server.url(consumer="p").replace(":pw-e2e-secret@", "")
        serve.start("--stream", url, "--stream-password-file", str(tmp_path / "redis.pw"))
        serve.wait_until(lambda: ingested(serve) == 200)
        assert serve.stop(signal.SIGTERM) == 0
        assert "pw-e2e-secret" not in serve.stderr()
    finally:
        server.stop()
