"""The Redis Stream source against a real redis-server: URL, records, pending, faults, metrics."""
from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modelmon.exporter.collector import ExporterCollector
from modelmon.exporter.pipeline import Exporter
from modelmon.exporter.stream import OPERATIONS, StreamSource, parse_url, redact
from tests.exporter_helpers import binary_records, make_config
from tests.processes import wait_until
from tests.redis_server import RedisServer, redis_server  # noqa: F401 - the fixture
from tests.conftest import which_or_skip

# ---------------------------------------------------------------------- the URL


def test_url_defaults_and_every_parameter():
    u = parse_url("redis://cache?stream=preds&group=mm")
    assert (u.host, u.port, u.db, u.stream, u.group) == ("cache", 6379, 0, "preds", "mm")
    assert u.consumer == socket.gethostname()  # stable across restarts on one host
    assert (u.claim_idle, u.batch, u.block, u.password, u.ssl) == (60.0, 500, 1.0, None, False)
    u = parse_url("rediss://bob:p%40ss@10.0.0.5:6380/3?stream=s%2F1&group=g&consumer=exp-1&claim_idle=90s"
                  "&batch=50&block=250ms")
    assert (u.host, u.port, u.db, u.stream, u.consumer) == ("10.0.0.5", 6380, 3, "s/1", "exp-1")
    assert (u.claim_idle, u.batch, u.block, u.ssl, u.username, u.password) == (90.0, 50, 0.25, True, "bob", "p@ss")


def test_url_password_never_shown():
    u = parse_url("redis://:hunter2@h:1/0?stream=s&group=g")
    assert u.password == "hunter2"
    assert "hunter2" not in repr(u) and "hunter2" not in u.safe()
    assert u.safe() == "redis://:***@h:1/0?stream=s&group=g"
    assert redact("redis://:hunter2@h/0?stream=s") == "redis://:***@h/0?stream=s"
    assert redact("redis://u:hunter2@h") == "redis://u:***@h"


def test_url_password_from_file_or_environment():
    assert parse_url("redis://h?stream=s&group=g", "from-file").password == "from-file"
    assert parse_url("redis://h?stream=s&group=g", None, "from-env").password == "from-env"
    assert parse_url("redis://:url@h?stream=s&group=g", None, "from-env").password == "url"  # explicit wins
    with pytest.raises(ValueError, match="given twice"):
        parse_url("redis://:url@h?stream=s&group=g", "from-file")


@pytest.mark.parametrize("url, phrase", [
    ("http://h?stream=s&group=g", "expected redis://"),
    ("h:6379?stream=s&group=g", "expected redis://"),
    ("redis://h?group=g", "stream= is required"),
    ("redis://h?stream=s", "group= is required"),
    ("redis://h?stream=&group=g", "stream= is required"),
    ("redis://h?stream=s&group=g&grup=x", "unknown parameter 'grup'"),
    ("redis://h?stream=s&group=g&stream=t", "given twice"),
    ("redis://h/x?stream=s&group=g", "database number"),
    ("redis://h:99999?stream=s&group=g", "port"),
    ("redis://h:abc?stream=s&group=g", "port"),
    ("redis://h?stream=s&group=g&batch=0", "batch"),
    ("redis://h?stream=s&group=g&batch=ten", "batch"),
    ("redis://h?stream=s&group=g&batch=1000000", "batch"),
    ("redis://h?stream=s&group=g&block=0s", "block"),
    ("redis://h?stream=s&group=g&block=2m", "block"),
    ("redis://h?stream=s&group=g&claim_idle=soon", "claim_idle"),
])
def test_url_errors(url, phrase):
    with pytest.raises(ValueError, match=phrase):
        parse_url(url)


def test_serve_password_from_file_or_environment(tmp_path, monkeypatch):
    import argparse

    from modelmon.exporter.cli import stream_url

    (tmp_path / "pw").write_text("from-file\n")
    monkeypatch.setenv("MODELMON_REDIS_PASSWORD", "from-env")
    args = argparse.Namespace(stream="redis://h?stream=s&group=g", stream_password_file=None)
    assert stream_url(args).password == "from-env"
    args.stream_password_file = tmp_path / "pw"
    assert stream_url(args).password == "from-file"
    monkeypatch.delenv("MODELMON_REDIS_PASSWORD")
    args.stream_password_file = None
    assert stream_url(args).password is None


@pytest.mark.parametrize("argv, phrase", [
    (["--stream", "redis://:hunter2@h:1/0?group=g"], "stream= is required"),
    (["--stream", "redis://:hunter2@h:1/0?stream=s&group=g&batch=-1"], "batch"),
    (["--stream", "redis://:hunter2@h:1/0?stream=s&group=g", "--stream-password-file", "PW"], "given twice"),
    (["--stream-password-file", "PW"], "without --stream"),
])
def test_serve_refuses_a_bad_stream_url_in_one_line(tmp_path, argv, phrase):
    (tmp_path / "pw").write_text("s3cret\n")
    cfg = tmp_path / "m.yaml"
    cfg.write_text("models:\n  - {name: m, task: binary, features: {numeric: [x]}, reference: {first: 50}}\n")
    argv = [str(tmp_path / "pw") if a == "PW" else a for a in argv]
    r = subprocess.run([sys.executable, "-m", "modelmon", "serve", "--config", str(cfg), *argv],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modelmon serve: "), r.stderr
    assert phrase in lines[0]
    assert "hunter2" not in r.stderr and "s3cret" not in r.stderr


# ---------------------------------------------------------------------- against a live Redis


def scrape(exporter) -> dict[tuple[str, tuple], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExporterCollector(exporter))
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(samples, name, **labels) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


@pytest.fixture
def exporter(tmp_path):
    return Exporter(make_config(tmp_path))


@pytest.fixture
def sources():
    started: list[StreamSource] = []
    yield started
    for s in started:
        s.stop()


def run_source(sources, exporter, url, **kw) -> StreamSource:
    s = StreamSource(exporter, parse_url(url), **kw)
    s.start()
    sources.append(s)
    return s


def add(client, stream, records, raw=()) -> list[bytes]:
    """XADD each record as a producer does (field `record`), then each of `raw` (fields as given)."""
    pipe = client.pipeline()
    for r in records:
        pipe.xadd(stream, {"record": orjson.dumps(r)})
    for fields in raw:
        pipe.xadd(stream, fields)
    return pipe.execute()


def group_pending(client, stream="preds", group="mm") -> int:
    return client.xpending(stream, group)["pending"]


def test_records_applied_then_acked_and_bad_entries_counted(redis_server, exporter, sources):
    r = redis_server.client()
    good, _ = binary_records(300, seed=1, inline_share=1.0)
    pretty = orjson.dumps(good[0], option=orjson.OPT_INDENT_2)  # valid JSON over several lines: compacted
    add(r, "preds", good[1:], raw=[{"record": pretty}, {"other": b"x"}, {"record": b"not json"}, {"record": b""},
                                   {"record": b"[1, 2]"}, {"record": b"{broken\n"}])
    src = run_source(sources, exporter, redis_server.url(batch=64))
    wait_until(lambda: src.acked == 305)
    m = scrape(exporter)
    assert value(m, "modelmon_records_ingested_total", source="stream") == 300
    assert value(m, "modelmon_records_rejected_total", reason="missing_field") == 1
    assert value(m, "modelmon_records_rejected_total", reason="invalid_json") == 3  # "not json", "", "{broken\n"
    assert value(m, "modelmon_records_rejected_total", reason="not_object") == 1
    assert value(m, "modelmon_stream_entries_total", stream="preds", group="mm") == 305
    assert value(m, "modelmon_stream_acked_total", stream="preds", group="mm") == 305
    assert group_pending(r) == 0
    assert exporter.readiness()[0]


def test_oversized_record_rejected_like_an_oversized_log_line(redis_server, exporter, sources):
    r = redis_server.client()
    good, _ = binary_records(3, seed=11, inline_share=1.0)
    add(r, "preds", good, raw=[{"record": b'{"model": "bin", "pad": "' + b"x" * (16 << 20) + b'"}'}])
    src = run_source(sources, exporter, redis_server.url())
    wait_until(lambda: src.acked == 4)
    m = scrape(exporter)
    assert value(m, "modelmon_records_rejected_total", reason="oversized_line") == 1
    assert value(m, "modelmon_records_ingested_total", source="stream") == 3


def test_checkpoint_hook_runs_only_with_nothing_applied_and_unacked(redis_server, exporter, sources):
    r = redis_server.client()
    seen = []

    def after_commit():  # the checkpoint's moment: every entry applied so far must be acknowledged
        seen.append((sum(exporter.ingested.values()), group_pending(r)))

    add(r, "preds", binary_records(500, seed=2, inline_share=1.0)[0])
    src = run_source(sources, exporter, redis_server.url(batch=50), after_commit=after_commit)
    wait_until(lambda: src.acked == 500)
    wait_until(lambda: seen and seen[-1][0] == 500)
    assert all(pending == 0 for _, pending in seen), seen


def test_own_pending_reclaimed_on_start(redis_server, exporter, sources):
    """Entries read by this consumer before a crash (never acked) are applied on start."""
    r = redis_server.client()
    r.xgroup_create("preds", "mm", id="0", mkstream=True)
    add(r, "preds", binary_records(100, seed=3, inline_share=1.0)[0])
    r.xreadgroup("mm", "c1", {"preds": ">"}, count=40)  # "c1" crashed with these 40 in hand
    src = run_source(sources, exporter, redis_server.url(consumer="c1", batch=25))
    wait_until(lambda: src.acked == 100)
    m = scrape(exporter)
    assert value(m, "modelmon_stream_claimed_total", owner="self") == 40
    assert value(m, "modelmon_stream_claimed_total", owner="other") == 0
    assert value(m, "modelmon_records_ingested_total", source="stream") == 100
    assert group_pending(r) == 0


def test_deleted_pending_entries_are_counted_and_cleared(redis_server, exporter, sources):
    """Entries deleted (XDEL, trimming) while pending: no record left to apply, so missing_field,
    both in this consumer's own pending list and in a dead member's (XAUTOCLAIM)."""
    r = redis_server.client()
    r.xgroup_create("preds", "mm", id="0", mkstream=True)
    ids = add(r, "preds", binary_records(60, seed=4, inline_share=1.0)[0])
    r.xreadgroup("mm", "c1", {"preds": ">"}, count=20)     # ours, from before a restart
    r.xreadgroup("mm", "dead", {"preds": ">"}, count=20)   # a member that died
    r.xdel("preds", *ids[:5], *ids[20:27])                 # 5 of ours, 7 of the dead member's
    src = run_source(sources, exporter, redis_server.url(consumer="c1", claim_idle="50ms", batch=100))
    wait_until(lambda: group_pending(r) == 0 and src.entries == 60 and src.lag == 0)
    m = scrape(exporter)
    assert value(m, "modelmon_records_ingested_total", source="stream") == 48
    assert value(m, "modelmon_records_rejected_total", reason="missing_field") == 12
    assert value(m, "modelmon_stream_claimed_total", owner="self") == 20
    assert value(m, "modelmon_stream_claimed_total", owner="other") == 20
    assert value(m, "modelmon_stream_entries_total") == 60
    assert value(m, "modelmon_stream_acked_total") == 60 - 7  # Redis dropped the dead member's deleted ones itself


def test_idle_member_pending_taken_over_only_after_claim_idle(redis_server, exporter, sources):
    r = redis_server.client()
    r.xgroup_create("preds", "mm", id="0", mkstream=True)
    add(r, "preds", binary_records(50, seed=5, inline_share=1.0)[0])
    r.xreadgroup("mm", "busy", {"preds": ">"}, count=30)  # another live member holds 30
    src = run_source(sources, exporter, redis_server.url(consumer="c1", claim_idle="1h"))
    wait_until(lambda: src.acked == 20 and src.pending is not None and src.lag == 0)
    assert src.claimed["other"] == 0 and group_pending(r) == 30  # not idle long enough: left alone


def test_redis_going_away_and_coming_back(redis_server, exporter, sources, caplog):
    caplog.set_level(logging.INFO)
    r = redis_server.client()
    add(r, "preds", binary_records(100, seed=6, inline_share=1.0)[0])
    src = run_source(sources, exporter, redis_server.url(batch=30), info_interval=0.1)
    wait_until(lambda: src.acked == 100)
    assert exporter.readiness()[0]

    redis_server.stop()  # SIGKILL: gone, with its data (no persistence)
    wait_until(lambda: not src.up and sum(src.errors.values()) >= 2)
    ready, body = exporter.readiness()
    assert not ready
    assert body["reason"].startswith(f"stream redis://127.0.0.1:{redis_server.port}/0?stream=preds&group=mm: Redis ")
    m = scrape(exporter)
    assert value(m, "modelmon_stream_up") == 0
    assert value(m, "modelmon_stream_errors_total", operation="read") + \
        value(m, "modelmon_stream_errors_total", operation="connect") >= 2
    assert not [k for k, _ in m if k in ("modelmon_stream_lag_entries", "modelmon_stream_pending_entries")]

    redis_server.start()  # back, empty: the group is created again and new entries flow
    r = redis_server.client()
    wait_until(lambda: src.up)
    add(r, "preds", binary_records(50, seed=7, inline_share=1.0)[0])
    wait_until(lambda: src.acked == 150)
    assert exporter.readiness()[0]
    assert value(scrape(exporter), "modelmon_stream_up") == 1
    assert value(scrape(exporter), "modelmon_records_ingested_total", source="stream") == 150
    assert src._thread.is_alive()


def test_redis_killed_and_restarted_with_its_data_exactly_once(tmp_path, exporter, sources):
    """Redis itself kill -9'd mid-stream and restarted from its append-only file: a read reply lost
    with the connection is found in this consumer's pending list, an ack lost is made again; every
    entry is applied exactly once."""
    server = RedisServer(which_or_skip("redis-server"), tmp_path / "redis", persistent=True)
    server.start()
    try:
        add(server.client(), "preds", binary_records(20_000, seed=15, inline_share=1.0)[0])
        src = run_source(sources, exporter, server.url(batch=100))
        wait_until(lambda: src.acked >= 3000, interval=0.001)
        server.stop()  # SIGKILL
        wait_until(lambda: not src.up)
        server.start()
        r = server.client()
        wait_until(lambda: group_pending(r) == 0 and src.lag == 0 and src.entries >= 20_000, timeout=60)
        time.sleep(0.3)
        assert src.entries == 20_000  # an entry re-read from the pending list had not been applied
        assert value(scrape(exporter), "modelmon_records_ingested_total", source="stream") == 20_000
        assert src.errors["read"] + src.errors["connect"] + src.errors["ack"] >= 1
    finally:
        server.stop()


def test_password_works_and_is_never_logged(tmp_path, exporter, sources, caplog):
    caplog.set_level(logging.DEBUG)
    server = RedisServer(which_or_skip("redis-server"), tmp_path / "redis", password="hunter2-pw")
    server.start()
    try:
        add(server.client(), "preds", binary_records(20, seed=8, inline_share=1.0)[0])
        good = run_source(sources, exporter, server.url())
        wait_until(lambda: good.acked == 20)
        wrong = Exporter(make_config(tmp_path))
        bad = run_source(sources, wrong, server.url().replace("hunter2-pw", "wrong-pw"))
        wait_until(lambda: bad.errors["connect"] >= 1)
        reason = wrong.readiness()[1]["reason"]
        assert "wrong-pw" not in reason and ":***@" in reason
        for s in (good, bad):
            s.stop()
        text = caplog.text + reason
        assert "hunter2-pw" not in text and "wrong-pw" not in text
        assert ":***@" in caplog.text
    finally:
        server.stop()


def test_metric_families_and_labels(redis_server, exporter, sources):
    r = redis_server.client()
    add(r, "preds", binary_records(40, seed=9, inline_share=1.0)[0])
    r.xgroup_create("preds", "mm", id="0")
    src = StreamSource(exporter, parse_url(redis_server.url(batch=10)), info_interval=0.05)
    sources.append(src)
    src._connect()
    src._refresh_info()  # nothing delivered yet: the whole stream is lag
    m = scrape(exporter)
    assert m[("modelmon_stream_lag_entries", (("group", "mm"), ("stream", "preds")))] == 40
    assert m[("modelmon_stream_pending_entries", (("group", "mm"), ("stream", "preds")))] == 0
    r.xreadgroup("mm", "other", {"preds": ">"}, count=15)  # delivered to another member, not acked
    src._refresh_info()
    m = scrape(exporter)
    assert m[("modelmon_stream_lag_entries", (("group", "mm"), ("stream", "preds")))] == 25
    assert m[("modelmon_stream_pending_entries", (("group", "mm"), ("stream", "preds")))] == 15
    src.start()
    wait_until(lambda: src.acked == 25 and src.lag == 0)
    m = scrape(exporter)
    key = (("group", "mm"), ("stream", "preds"))
    assert m[("modelmon_stream_entries_total", key)] == 25
    assert m[("modelmon_stream_acked_total", key)] == 25
    assert m[("modelmon_stream_up", key)] == 1
    assert {dict(ls)["owner"] for n, ls in m if n == "modelmon_stream_claimed_total"} == {"self", "other"}
    assert {dict(ls)["operation"] for n, ls in m if n == "modelmon_stream_errors_total"} == set(OPERATIONS)
    stream_names = {n for n, _ in m if n.startswith("modelmon_stream_")}
    assert stream_names == {"modelmon_stream_entries_total", "modelmon_stream_acked_total",
                            "modelmon_stream_claimed_total", "modelmon_stream_lag_entries",
                            "modelmon_stream_pending_entries", "modelmon_stream_errors_total", "modelmon_stream_up"}
    assert all(set(dict(ls)) >= {"stream", "group"} for n, ls in m if n.startswith("modelmon_stream_"))


def test_lag_counted_when_redis_cannot_say(redis_server, exporter, sources):
    """XDEL after the group's position makes XINFO's lag null: counted from the entries instead."""
    r = redis_server.client()
    ids = add(r, "preds", binary_records(30, seed=10, inline_share=1.0)[0])
    r.xgroup_create("preds", "mm", id="0")
    r.xreadgroup("mm", "x", {"preds": ">"}, count=10)
    r.xdel("preds", ids[20])
    src = StreamSource(exporter, parse_url(redis_server.url()))
    sources.append(src)
    src._connect()
    src._refresh_info()
    assert src.lag == 19


def test_lag_never_above_the_stream_length_after_trimming(redis_server, exporter, sources, caplog):
    """MAXLEN trimming past entries the group had not read: Redis keeps counting them as lag; they
    are lost, which is logged, and the gauge shows at most what the stream holds."""
    r = redis_server.client()
    r.xgroup_create("preds", "mm", id="0", mkstream=True)
    add(r, "preds", binary_records(100, seed=12, inline_share=1.0)[0])
    r.xreadgroup("mm", "x", {"preds": ">"}, count=10)
    pipe = r.pipeline()
    for rec in binary_records(50, seed=13, inline_share=1.0)[0]:
        pipe.xadd("preds", {"record": orjson.dumps(rec)}, maxlen=60, approximate=False)
    pipe.execute()
    src = StreamSource(exporter, parse_url(redis_server.url()))
    sources.append(src)
    src._connect()
    src._refresh_info()
    assert group_pending(r) == 10 and r.xlen("preds") == 60
    assert src.lag == 60  # Redis says 140
    assert "trimmed before the group read them" in caplog.text


def test_stop_while_an_ack_cannot_be_made_leaves_the_batch_pending(redis_server, exporter, sources):
    """Redis refusing the ack (connection lost) at shutdown: the batch stays pending, to be
    delivered again, and the caller hears of it so the checkpoint is not written."""
    import redis as redis_lib

    from modelmon.exporter.cli import final_writes

    r = redis_server.client()
    src = run_source(sources, exporter, redis_server.url(batch=100))
    wait_until(lambda: src.up)

    def refused(*_args, **_kw):
        raise redis_lib.ConnectionError("connection lost")

    src._client.xack = refused
    add(r, "preds", binary_records(30, seed=14, inline_share=1.0)[0])
    wait_until(lambda: src.errors["ack"] >= 2)
    assert src.unacked == 30 and not exporter.readiness()[0]
    failures = final_writes(exporter, None, None, src)
    assert src.unacked == 30 and group_pending(r) == 30
    assert len(failures) == 1 and "30 stream entries applied but not acknowledged" in failures[0]


def test_checkpoint_of_log_and_stream_skipped_while_a_batch_is_unacked():
    import threading

    from modelmon.exporter.cli import _gated

    saved = []
    gate = threading.Lock()
    save = _gated(gate, lambda: saved.append(1))
    with gate:  # a stream batch applied, not acknowledged yet
        save()
    assert saved == []
    save()
    assert saved == [1] and not gate.locked()


def test_readiness_names_the_stream_problem(exporter):
    exporter.stream_problem = "stream redis://h:1/0?stream=s&group=g: Redis connect failed: refused"
    ready, body = exporter.readiness()
    assert not ready and body["reason"].startswith("stream redis://h:1/0")
