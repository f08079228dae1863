"""`modelmon stack up --ingest file|http|stream`: the demo traffic through each way in.

The plan of each mode is checked without a process; then each mode runs for real (modelmon's own
processes, and redis-server for the stream, without Prometheus) until records of its source reach
the exporter's /metrics, and one SIGINT stops it all.
"""
from __future__ import annotations

import io
import re
import signal
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from conftest import ROOT, free_port, which_or_skip
from modelmon.stack.errors import StackError
from modelmon.stack.plan import REDIS_MISSING, Binaries, Health, Layout, StackOptions, plan_stack
from modelmon.stack.ports import choose_ports
from modelmon.stack.supervisor import Supervisor
from modelmon.stack.topology import DEFAULT_PORTS, EXPORTER_CHECKPOINT, HEARTBEAT, INGEST_MODES, REDIS_DATA
from modelmon.stack.workdir import prepare_data
from tests.processes import stack_up

PY = sys.executable
PORTS = {"redis": 16379, "exporter": 19188, "receiver": 19095, "prometheus": 19090, "alertmanager": 19093,
         "grafana": 13000}


def binaries(redis: str | None = "/usr/bin/redis-server") -> Binaries:
    return Binaries(modelmon=(PY, "-m", "modelmon"), prometheus="/usr/bin/prometheus",
                    alertmanager="/usr/bin/prometheus-alertmanager", grafana=None, grafana_home=None, redis=redis)


def plan(tmp_path: Path, ingest: str, **kw):
    options = StackOptions(config=tmp_path / "modelmon.yaml", ports=PORTS, ingest=ingest, grafana=False)
    return plan_stack(options, Layout(tmp_path / "w"), binaries(**kw))


def opt(argv, name: str) -> str:
    values = [a.split("=", 1)[1] for a in argv if a.startswith(name + "=")]
    assert len(values) == 1, (name, argv)
    return values[0]


# --------------------------------------------------------------------------- the plan of each way in


def test_the_file_way_in_is_the_default_and_unchanged(tmp_path):
    by = {s.name: s for s in plan(tmp_path, "file").services}
    assert list(by) == ["receiver", "exporter", "traffic", "alertmanager", "prometheus"]
    layout = Layout(tmp_path / "w")
    assert opt(by["exporter"].argv, "--log") == opt(by["traffic"].argv, "--out") == str(layout.predictions_log)
    assert by["traffic"].health == Health(file=layout.predictions_log, max_age=30)


def test_http_posts_through_the_client_and_its_heartbeat_is_the_health_check(tmp_path):
    by = {s.name: s for s in plan(tmp_path, "http").services}
    assert list(by) == ["receiver", "exporter", "traffic", "alertmanager", "prometheus"]
    layout = Layout(tmp_path / "w")
    exporter, traffic = by["exporter"].argv, by["traffic"].argv
    assert not [a for a in exporter if a.startswith(("--log", "--stream"))]
    assert opt(exporter, "--checkpoint") == str(layout.at(REDIS_DATA).parent / EXPORTER_CHECKPOINT)
    assert opt(traffic, "--post") == "http://127.0.0.1:19188/ingest"
    heartbeat = Path(opt(traffic, "--heartbeat"))
    assert heartbeat == layout.data / HEARTBEAT and by["traffic"].health == Health(file=heartbeat, max_age=30)


def test_stream_starts_redis_before_the_exporter_and_both_ends_name_one_stream(tmp_path):
    services = plan(tmp_path, "stream").services
    by = {s.name: s for s in services}
    assert list(by) == ["receiver", "redis", "exporter", "traffic", "alertmanager", "prometheus"]
    layout = Layout(tmp_path / "w")
    redis = by["redis"]
    assert redis.argv[0] == "/usr/bin/redis-server"
    assert redis.argv[1:] == ("--port", "16379", "--bind", "127.0.0.1", "--dir", str(layout.at(REDIS_DATA)),
                              "--appendonly", "yes", "--save", "")
    assert redis.health == Health(redis="redis://127.0.0.1:16379/0")
    consumer, producer = urlsplit(opt(by["exporter"].argv, "--stream")), urlsplit(opt(by["traffic"].argv, "--stream"))
    assert consumer.netloc == producer.netloc == "127.0.0.1:16379"
    assert parse_qs(consumer.query) == {"stream": ["predictions"], "group": ["modelmon"], "consumer": ["exporter"]}
    assert parse_qs(producer.query) == {"stream": ["predictions"]}
    assert int(opt(by["traffic"].argv, "--stream-maxlen")) > 0
    assert by["traffic"].health.file == layout.data / HEARTBEAT
    # Every service has its own log; Redis' data sits in the work dir.
    assert len({s.log for s in services}) == len(services)
    assert layout.at(REDIS_DATA).is_relative_to(layout.root)


def test_stream_without_redis_server_is_one_clear_line(tmp_path):
    with pytest.raises(StackError) as e:
        plan(tmp_path, "stream", redis=None)
    assert str(e.value) == REDIS_MISSING and "\n" not in REDIS_MISSING
    assert "redis-server" in REDIS_MISSING and "--ingest file" in REDIS_MISSING
    # The other ways in need no Redis.
    assert [s.name for s in plan(tmp_path, "http", redis=None).services][:3] == ["receiver", "exporter", "traffic"]


def test_stack_up_says_so_and_starts_nothing(tmp_path, capsys, monkeypatch):
    import shutil

    from modelmon.cli import main

    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "redis-server" else real(name))
    rc = main(["stack", "up", "--config", str(ROOT / "modelmon.yaml"), "--workdir", str(tmp_path / "w"),
               "--ingest", "stream", "--no-prometheus", *[f"--port={n}={free_port()}" for n in DEFAULT_PORTS]])
    err = capsys.readouterr().err
    assert rc == 1 and err == f"modelmon stack: {REDIS_MISSING}\n"
    assert not (tmp_path / "w" / "logs").exists()  # nothing started


def test_a_busy_redis_port_is_news_only_when_redis_runs():
    busy = {6379}
    ports, notes = choose_ports({}, is_free=lambda p: p not in busy, pick=lambda: 41000,
                                running=set(DEFAULT_PORTS) - {"redis"})
    assert notes == [] and ports["redis"] == 6379
    ports, notes = choose_ports({}, is_free=lambda p: p not in busy, pick=lambda: 41000)
    assert ports["redis"] == 41000 and notes == ["port 6379 (redis) is in use; redis listens on 41000 instead"]


def test_a_new_timeline_drops_the_stream_the_checkpoint_and_a_stale_heartbeat(tmp_path):
    layout = Layout(tmp_path)
    prepare_data(layout)
    (layout.at(REDIS_DATA) / "appendonly.aof").write_text("old stream")
    (layout.data / EXPORTER_CHECKPOINT).write_text("old windows")
    (layout.data / HEARTBEAT).write_text("1\n")
    prepare_data(layout)
    assert layout.at(REDIS_DATA).is_dir() and not any(layout.at(REDIS_DATA).iterdir())
    assert not (layout.data / EXPORTER_CHECKPOINT).exists() and not (layout.data / HEARTBEAT).exists()


def test_the_make_demo_argument_reaches_stack_up():
    from modelmon.cli import build_parser

    assert build_parser().parse_args(["stack", "up"]).ingest == "file"
    for mode in INGEST_MODES:
        assert build_parser().parse_args(["stack", "up", "--ingest", mode]).ingest == mode
    makefile = (ROOT / "Makefile").read_text()
    assert "stack up --config modelmon.yaml $(ARGS)" in makefile  # make demo ARGS="--ingest stream"


def test_a_redis_health_check_wants_an_answer_to_ping(tmp_path):
    from modelmon.stack.plan import Service
    from modelmon.stack.supervisor import is_healthy

    assert not is_healthy(Health(redis=f"redis://127.0.0.1:{free_port()}/0"))
    port = free_port()
    redis = Service("redis", (which_or_skip("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--dir", str(tmp_path)), Health(redis=f"redis://127.0.0.1:{port}/0"), tmp_path / "redis.log")
    sup = Supervisor([redis], out=io.StringIO(), health_timeout=20, poll_interval=0.05)
    seen = []

    def on_ready():
        seen.append(is_healthy(redis.health))
        sup._signal = signal.SIGTERM  # stop right after start-up

    assert sup.run(on_ready=on_ready) == 0 and seen == [True]
    assert not is_healthy(redis.health)  # stopped


def test_traffic_stops_before_the_exporter_so_its_queue_is_delivered(tmp_path):
    """One child at a time, newest first: the older one still runs while the newer one stops."""
    from modelmon.stack.plan import Service

    marker, tag = tmp_path / "older-alive-at-stop", f"older-{tmp_path.name}"
    older = Service("older", (PY, "-c", f"import time; open({str(tmp_path / 'a')!r}, 'w').write('x'); time.sleep(60)",
                              tag), Health(file=tmp_path / "a"), tmp_path / "older.log")
    code = (f"import signal, subprocess, sys, time\n"
            f"def bye(*_):\n"
            f"    alive = subprocess.run(['pgrep', '-f', {tag!r}], capture_output=True).returncode == 0\n"
            f"    open({str(marker)!r}, 'w').write(str(alive)); sys.exit(0)\n"
            f"signal.signal(signal.SIGTERM, bye)\n"
            f"open({str(tmp_path / 'b')!r}, 'w').write('x')\n"
            f"while True: time.sleep(0.1)\n")
    newer = Service("newer", (PY, "-c", code), Health(file=tmp_path / "b"), tmp_path / "newer.log")
    sup = Supervisor([older, newer], out=io.StringIO(), health_timeout=20, poll_interval=0.05)
    assert sup.run(on_ready=lambda: setattr(sup, "_signal", signal.SIGTERM)) == 0
    assert marker.read_text() == "True"


# --------------------------------------------------------------------------- each way in, for real


def ingested(port: int, source: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    m = re.search(rf'^modelmon_records_ingested_total\{{source="{source}"\}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def metric(port: int, name: str) -> float | None:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    m = re.search(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


@pytest.mark.e2e
@pytest.mark.parametrize("mode", INGEST_MODES)
def test_each_way_in_carries_the_demo_traffic_to_the_exporter(tmp_path, mode):
    if mode == "stream":
        which_or_skip("redis-server")
    ports = {name: free_port() for name in DEFAULT_PORTS}
    argv = [PY, "-m", "modelmon", "stack", "up", "--config", str(ROOT / "modelmon.yaml"), "--ingest", mode,
            "--workdir", str(tmp_path / "stack"), "--no-prometheus", "--health-timeout", "60", "--rate", "100",
            *[f"--port={name}={port}" for name, port in ports.items()]]
    with stack_up(argv, tmp_path, timeout=120) as (proc, log, deadline):  # up: the traffic's health check passed
        port = ports["exporter"]
        while ingested(port, mode) < 200:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"{mode}: {ingested(port, mode)} records after 120 s"
            time.sleep(0.5)
        assert all(ingested(port, other) == 0 for other in INGEST_MODES if other != mode)
        if mode == "stream":
            assert metric(port, "modelmon_stream_up") == 1
            assert metric(port, "modelmon_stream_acked_total") > 0
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, log.read_text()
    text = log.read_text()
    assert "SIGINT received, stopping" in text
    assert "stopped traffic, exporter" in text
    if mode != "file":  # the traffic stopped first and delivered everything it held
        traffic_log = (tmp_path / "stack" / "logs" / "traffic.log").read_text()
        assert re.search(r"stopped after \d+ records: \d+ delivered to .*, 0 not delivered", traffic_log), traffic_log


STREAM_PANELS = ("Records ingested by source", "Stream lag and pending", "Stream entries acknowledged by member",
                 "Stream source up")


@pytest.mark.e2e
def test_the_ways_in_stream_panels_have_data_on_the_stream_stack(tmp_path):
    """The self-monitoring dashboard's stream panels, run against the Prometheus of `stack up --ingest
    stream` (the shared e2e stack reads a file, where they are rightly empty): each returns data."""
    import json
    import urllib.parse

    from modelmon.config import load_config
    from modelmon.contract import SELF_UID
    from modelmon.dashboards.generate import dashboards
    from modelmon.dashboards.queries import iter_panel_queries, substitute_variables, variable_values

    for binary in ("redis-server", "prometheus", "prometheus-alertmanager"):
        which_or_skip(binary)
    ports = {name: free_port() for name in DEFAULT_PORTS}
    argv = [PY, "-m", "modelmon", "stack", "up", "--config", str(ROOT / "modelmon.yaml"), "--ingest", "stream",
            "--workdir", str(tmp_path / "stack"), "--no-grafana", "--health-timeout", "60",
            *[f"--port={name}={port}" for name, port in ports.items()]]
    dash = next(d for d in dashboards(load_config(ROOT / "modelmon.yaml")) if d["uid"] == SELF_UID)
    values = {**variable_values(dash), "__rate_interval": "1m", "__interval": "15s", "__range": "5m"}
    queries: dict[str, list[str]] = {}
    for title, expr in iter_panel_queries(dash):
        if title in STREAM_PANELS:
            queries.setdefault(title, []).append(substitute_variables(expr, values))
    assert set(queries) == set(STREAM_PANELS)

    def answers(expr: str) -> list:
        url = f"http://127.0.0.1:{ports['prometheus']}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        data = json.load(urllib.request.urlopen(url, timeout=5))
        assert data["status"] == "success", (expr, data)
        return data["data"]["result"]

    with stack_up(argv, tmp_path, timeout=150) as (proc, log, deadline):
        missing = set(STREAM_PANELS)
        while missing:  # a panel has data when one of its queries does (claims and errors may rightly be none)
            missing = {title for title in missing if not any(answers(q) for q in queries[title])}
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline or not missing, f"no data for {sorted(missing)}"
            time.sleep(2)
        by_source = {r["metric"]["source"]: float(r["value"][1]) for r in answers(queries["Records ingested by source"][0])}
        assert by_source["stream"] > 0 and by_source.get("file", 0) == 0
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, log.read_text()
