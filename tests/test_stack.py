"""The native stack (`modelmon stack up`): its plan, its rewritten configs, its process supervision.

Supervision is tested with small stand-in processes (http.server, tiny scripts); the real
stack is smoke-tested at the end with the real modelmon processes and, when installed, the
real Prometheus and Alertmanager.
"""
from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, free_port, which_or_skip
from modelmon.config import load_config
from modelmon.stack.errors import StackError
from modelmon.stack.plan import (
    APT_HINT, DEFAULT_PORTS, DEMO_SCHEDULE, HOME_DASHBOARD, QUICK_SCHEDULE, Binaries, Health, Layout, Service, StackOptions, find_binaries, plan_stack,
)
from modelmon.stack.ports import choose_ports
from modelmon.stack.supervisor import Supervisor
from modelmon.stack.workdir import (
    container_paths, prepare_data, require, rewrite_endpoints, rewrite_paths, stack_sources, write_configs,
)

PY = sys.executable
REMAPPED = {"exporter": 19188, "receiver": 19095, "prometheus": 19090, "alertmanager": 19093, "grafana": 13000}


def all_binaries(grafana: tuple[str, ...] | None = ("/usr/sbin/grafana", "server")) -> Binaries:
    return Binaries(modelmon=(PY, "-m", "modelmon"), prometheus="/usr/bin/prometheus",
                    alertmanager="/usr/bin/prometheus-alertmanager", grafana=grafana,
                    grafana_home=Path("/usr/share/grafana") if grafana else None)


def options(tmp_path: Path, **kw) -> StackOptions:
    return StackOptions(config=tmp_path / "modelmon.yaml", ports=REMAPPED, **kw)


# --------------------------------------------------------------------------- the plan


def test_plan_starts_the_compose_topology_in_dependency_order(tmp_path):
    layout = Layout(tmp_path / "w")
    plan = plan_stack(options(tmp_path), layout, all_binaries())
    assert [s.name for s in plan.services] == ["receiver", "exporter", "traffic", "alertmanager",
                                               "prometheus", "grafana"]
    assert plan.missing == ()
    by = {s.name: s for s in plan.services}

    exporter = by["exporter"].argv
    assert exporter[:4] == (PY, "-m", "modelmon", "serve")
    assert exporter[exporter.index("--config") + 1] == str(tmp_path / "modelmon.yaml")
    assert exporter[exporter.index("--log") + 1] == str(layout.predictions_log)
    assert "--from-start" not in exporter  # restarts resume from the offset file, never replay
    assert exporter[exporter.index("--port") + 1] == "19188"
    assert by["exporter"].health.url == "http://127.0.0.1:19188/healthz"

    traffic = by["traffic"].argv
    assert traffic[3] == "simulate" and "--loop" in traffic
    assert traffic[traffic.index("--out") + 1] == str(layout.predictions_log)
    assert by["traffic"].health == Health(file=layout.predictions_log)

    receiver = by["receiver"].argv
    assert receiver[3] == "receiver" and receiver[receiver.index("--port") + 1] == "19095"
    assert receiver[receiver.index("--db") + 1] == str(layout.alerts_db)

    prom = by["prometheus"].argv
    assert prom[0] == "/usr/bin/prometheus"
    assert f"--config.file={layout.prometheus_config}" in prom
    assert "--web.listen-address=127.0.0.1:19090" in prom
    assert by["prometheus"].health.url == "http://127.0.0.1:19090/-/ready"

    am = by["alertmanager"].argv
    assert f"--config.file={layout.alertmanager_config}" in am
    assert "--web.listen-address=127.0.0.1:19093" in am
    assert "--cluster.listen-address=" in am  # no gossip port for a single instance

    gf = by["grafana"]
    assert gf.argv == ("/usr/sbin/grafana", "server", "--homepath=/usr/share/grafana")
    assert gf.env["GF_SERVER_HTTP_PORT"] == "13000" and gf.env["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"
    assert gf.env["GF_PATHS_PROVISIONING"] == str(layout.grafana_provisioning)
    assert gf.env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == str(layout.grafana_dashboards / HOME_DASHBOARD)
    assert gf.env["GF_AUTH_ANONYMOUS_ENABLED"] == "true" and gf.env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"

    # Every process gets its own log file in the work directory.
    logs = [s.log for s in plan.services]
    assert len(set(logs)) == len(logs) and all(log.parent == layout.logs for log in logs)


def test_plan_without_prometheus_and_alertmanager_names_them_and_runs_the_rest(tmp_path):
    binaries = Binaries(modelmon=(PY, "-m", "modelmon"), prometheus=None, alertmanager=None,
                        grafana=None, grafana_home=None)
    plan = plan_stack(options(tmp_path), Layout(tmp_path), binaries)
    assert [s.name for s in plan.services] == ["receiver", "exporter", "traffic"]
    text = "\n".join(plan.missing)
    assert "Prometheus is not installed (no `prometheus` on PATH)" in text
    assert "`prometheus-alertmanager`" in text
    assert text.count(APT_HINT) == 2 and APT_HINT == "sudo apt-get install prometheus prometheus-alertmanager"
    assert "Grafana is not installed" in text and "docker compose up" in text


def test_plan_skips_what_options_turn_off_without_complaining(tmp_path):
    plan = plan_stack(options(tmp_path, prometheus=False, grafana=False), Layout(tmp_path), all_binaries())
    assert [s.name for s in plan.services] == ["receiver", "exporter", "traffic"]
    assert plan.missing == ()


def test_the_demo_schedule_is_one_the_simulator_plays_with_an_incident_within_minutes():
    from modelmon.simulate.scenarios import parse_schedule

    phases = parse_schedule(DEMO_SCHEDULE)
    start = 0.0
    for name, seconds in phases:
        if name != "stable":
            break
        start += seconds
    assert name == "error_burst" and start <= 180 and seconds >= 240  # pages within ~5 minutes
    assert {"covariate_drift", "concept_drift", "latency_regression"} <= {n for n, _ in phases}
    assert phases[-1][0] == "stable"  # alerts resolve before the loop starts over


def test_the_quick_schedule_tells_the_whole_story_in_about_twenty_minutes():
    from modelmon.simulate.scenarios import parse_schedule

    phases = parse_schedule(QUICK_SCHEDULE)
    assert phases[0][0] == "stable" and phases[1][0] == "error_burst" and phases[0][1] <= 60
    assert {"covariate_drift", "concept_drift", "latency_regression"} <= {n for n, _ in phases}
    # Each incident outlasts a window turnover (~2 min at the demo rate) plus the 1-minute `for`.
    assert all(seconds >= 180 for name, seconds in phases if name != "stable")
    assert phases[-1][0] == "stable" and phases[-1][1] >= 180  # alerts resolve before the loop restarts
    assert sum(seconds for _, seconds in phases) <= 25 * 60  # one loop of the quick tour


@pytest.mark.parametrize("argv, expected", [
    ([], DEMO_SCHEDULE), (["--quick"], QUICK_SCHEDULE),
    (["--quick", "--schedule", "stable:60"], "stable:60"), (["--schedule", "stable:60"], "stable:60")])
def test_quick_picks_its_schedule_unless_one_is_given(argv, expected):
    import argparse

    from modelmon.stack import add_arguments, demo_schedule

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert demo_schedule(parser.parse_args(["up", *argv])) == expected


def test_quick_rules_are_the_production_alerts_on_one_minute_clocks(tmp_path, demo_config_path, promtool):
    from modelmon.stack import quick_rules

    config = load_config(demo_config_path)
    normal, quick = stack_sources(config, ROOT), stack_sources(config, ROOT, rules=quick_rules())
    rule_files = sorted(k for k in quick if k.startswith("prometheus/rules/"))
    assert rule_files == sorted(k for k in normal if k.startswith("prometheus/rules/"))

    def alerts(files):
        return [r for k in rule_files for g in yaml.safe_load(files[k])["groups"] for r in g["rules"] if "alert" in r]

    assert [(a["alert"], a["labels"]) for a in alerts(quick)] == [(a["alert"], a["labels"]) for a in alerts(normal)]
    for a in alerts(quick):
        assert a["for"] == ("10m" if a["alert"] == "ModelmonLabelsNotArriving" else "1m"), a["alert"]
    layout = Layout(tmp_path)
    write_configs(quick, layout, REMAPPED)
    out = subprocess.run([promtool, "check", "rules", "--lint-fatal", *sorted(
        str(p) for p in (layout.etc / "prometheus" / "rules").glob("*.yml"))], capture_output=True, text=True,
        timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_find_binaries_prefers_the_current_names_and_falls_back():
    found = {"grafana": "/opt/grafana/bin/grafana", "grafana-server": "/opt/grafana/bin/grafana-server",
             "prometheus-alertmanager": "/usr/bin/prometheus-alertmanager", "alertmanager": "/x/alertmanager"}
    b = find_binaries(found.get, ("mm",))
    assert b.grafana == ("/opt/grafana/bin/grafana", "server")
    assert b.alertmanager == "/usr/bin/prometheus-alertmanager" and b.prometheus is None

    legacy = {"grafana-server": "/opt/grafana/bin/grafana-server", "alertmanager": "/x/alertmanager"}
    b = find_binaries(legacy.get, ("mm",))
    assert b.grafana == ("/opt/grafana/bin/grafana-server",)
    assert b.alertmanager == "/x/alertmanager"
    if not Path("/usr/share/grafana").is_dir():
        assert b.grafana_home == Path("/opt/grafana")  # a release tarball: static files next to bin/

    assert find_binaries({}.get, ("mm",)).grafana is None


# --------------------------------------------------------------------------- ports


def test_default_ports_when_free_and_a_free_one_with_a_note_when_busy():
    ports, notes = choose_ports({}, is_free=lambda p: True)
    assert ports == DEFAULT_PORTS and notes == []

    picks = iter([41000, 41001])
    ports, notes = choose_ports({}, is_free=lambda p: p != 9090, pick=lambda: next(picks))
    assert ports["prometheus"] == 41000 and ports["exporter"] == 9188
    assert notes == ["port 9090 (prometheus) is in use; prometheus listens on 41000 instead"]


def test_explicit_ports_must_be_free_known_and_take_precedence():
    with pytest.raises(StackError, match="port 9999 asked for grafana is already in use"):
        choose_ports({"grafana": 9999}, is_free=lambda p: p != 9999)
    with pytest.raises(StackError, match="unknown service.*graphana"):
        choose_ports({"graphana": 3001}, is_free=lambda p: True)
    # Asking for another service's default port moves that service, never a clash.
    ports, notes = choose_ports({"grafana": 9090}, is_free=lambda p: True, pick=lambda: 42000)
    assert ports["grafana"] == 9090 and ports["prometheus"] == 42000
    assert len(set(ports.values())) == len(ports)


def test_cli_parses_ports_and_rejects_malformed_ones(capsys):
    from modelmon.cli import build_parser

    args = build_parser().parse_args(["stack", "up", "--port", "grafana=3001", "--port=exporter=9999"])
    assert dict(args.port) == {"grafana": 3001, "exporter": 9999}
    assert args.config == "modelmon.yaml" and args.workdir == ".modelmon/stack"
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["stack", "up", "--port", "grafana:3001"])
    assert exc.value.code == 2 and "expected SERVICE=PORT" in capsys.readouterr().err


def test_cli_reports_a_taken_port_before_starting_anything(tmp_path, demo_config_path, capsys):
    import socket

    from modelmon.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc = main(["stack", "up", "--config", str(demo_config_path), "--workdir", str(tmp_path / "w"),
                   "--port", f"exporter={port}"])
    assert rc == 1
    assert f"modelmon stack: port {port} asked for exporter is already in use" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()  # nothing written, nothing started


# --------------------------------------------------------------------------- config rewriting

COMPOSE_PROMETHEUS_YML = textwrap.dedent("""\
    global: {scrape_interval: 5s, evaluation_interval: 5s}
    rule_files: [/etc/prometheus/rules/*.yml]
    alerting:
      alertmanagers:
        - static_configs: [{targets: ['alertmanager:9093']}]
    scrape_configs:
      - job_name: modelmon
        static_configs: [{targets: ['exporter:9188']}]
      - job_name: prometheus
        static_configs: [{targets: ['prometheus:9090']}]
      - job_name: alertmanager
        static_configs: [{targets: ['alertmanager:9093']}]
    """)
RULES_YML = textwrap.dedent("""\
    groups:
      - name: stand-in
        rules:
          - alert: StandInDown
            expr: up{job="modelmon"} == 0
            for: 1m
            labels: {severity: critical}
            annotations: {summary: down, dashboard: "http://localhost:3000/d/overview"}
    """)
ALERTMANAGER_YML = textwrap.dedent("""\
    route: {receiver: modelmon-inbox}
    receivers:
      - name: modelmon-inbox
        webhook_configs: [{url: 'http://receiver:9095/webhook', send_resolved: true}]
    """)


def test_endpoints_point_at_loopback_and_the_chosen_ports():
    text = ("targets: ['exporter:9188', 'alertmanager:9093', 'prometheus:9090']\n"
            "url: http://receiver:9095/webhook\nurl2: http://127.0.0.1:9095/webhook\n"
            "ds: http://prometheus:9090\nlink: http://localhost:3000/d/x\njob_name: prometheus\n")
    out = rewrite_endpoints(text, REMAPPED)
    assert out == ("targets: ['127.0.0.1:19188', '127.0.0.1:19093', '127.0.0.1:19090']\n"
                   "url: http://127.0.0.1:19095/webhook\nurl2: http://127.0.0.1:19095/webhook\n"
                   "ds: http://127.0.0.1:19090\nlink: http://127.0.0.1:13000/d/x\njob_name: prometheus\n")


@pytest.mark.parametrize("untouched", [
    "prometheus:9999",          # a service name with a port that is not its own
    "exporter:91880",           # a longer port
    "my-exporter:9188",         # another host that merely ends like ours
    "node.exporter:9188",
    "10.0.0.127.0.0.1:9090",
    "exporter:9093",            # our name, another service's port
])
def test_endpoints_that_are_not_ours_are_left_alone(untouched):
    assert rewrite_endpoints(untouched, REMAPPED) == untouched


def test_container_paths_point_into_the_work_directory(tmp_path):
    layout = Layout(tmp_path)
    assert rewrite_paths("rule_files: [/etc/prometheus/rules/*.yml]", layout) == \
        f"rule_files: [{tmp_path}/etc/prometheus/rules/*.yml]"
    assert rewrite_paths("path: /etc/grafana/dashboards/modelmon", layout) == f"path: {layout.grafana_dashboards}"
    for other in ("/etc/prometheus-old/x", "/srv/etc/prometheus/x", "/etc/grafana/dashboards/modelmon2"):
        assert rewrite_paths(other, layout) == other


def test_container_paths_are_exactly_the_compose_bind_mounts(tmp_path):
    """Each file docker-compose.yml mounts lands, in the native work dir, where the rewritten
    container paths point: the two topologies read the same files."""
    layout = Layout(tmp_path)
    mapping = container_paths(layout)
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    binds = [spec.split(":")[:2] for svc in compose["services"].values() for spec in svc.get("volumes", [])
             if spec.startswith("./")]
    assert len(binds) == 5
    for source, target in binds:
        prefix = next((k for k in mapping if target == k or target.startswith(k + "/")), None)
        assert prefix is not None, f"compose mounts {target}, which the native stack does not map"
        native = mapping[prefix] / target[len(prefix):].lstrip("/") if target != prefix else mapping[prefix]
        assert native == layout.etc / source[2:], (source, target)


def test_written_configs_pass_promtool_and_amtool(tmp_path, promtool, amtool):
    layout = Layout(tmp_path / "w")
    files = {"prometheus/prometheus.yml": COMPOSE_PROMETHEUS_YML, "prometheus/rules/standin.yml": RULES_YML,
             "alerting/alertmanager.yml": ALERTMANAGER_YML}
    write_configs(files, layout, REMAPPED)

    prom = yaml.safe_load(layout.prometheus_config.read_text())
    assert prom["rule_files"] == [f"{layout.etc}/prometheus/rules/*.yml"]
    targets = {c["job_name"]: c["static_configs"][0]["targets"] for c in prom["scrape_configs"]}
    assert targets == {"modelmon": ["127.0.0.1:19188"], "prometheus": ["127.0.0.1:19090"],
                       "alertmanager": ["127.0.0.1:19093"]}
    out = subprocess.run([promtool, "check", "config", str(layout.prometheus_config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 rules found" in out.stdout + out.stderr  # the rule glob resolves inside the work dir

    am = yaml.safe_load(layout.alertmanager_config.read_text())
    assert am["receivers"][0]["webhook_configs"][0]["url"] == "http://127.0.0.1:19095/webhook"
    out = subprocess.run([amtool, "check-config", str(layout.alertmanager_config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_configs_are_rebuilt_so_stale_rule_files_disappear(tmp_path):
    layout = Layout(tmp_path)
    write_configs({"prometheus/rules/old.yml": RULES_YML}, layout, REMAPPED)
    write_configs({"prometheus/rules/new.yml": RULES_YML}, layout, REMAPPED)
    assert sorted(p.name for p in (layout.etc / "prometheus" / "rules").iterdir()) == ["new.yml"]


def test_a_new_demo_timeline_drops_the_exporter_state_of_the_old_log(tmp_path):
    layout = Layout(tmp_path)
    prepare_data(layout)
    log = layout.predictions_log
    log.write_text('{"old": 1}\n')
    kept = [layout.data / "alerts.db", layout.data / "prometheus" / "wal"]
    gone = [log.with_name(log.name + s) for s in (".1", ".modelmon-offset", ".modelmon-checkpoint")]
    for p in kept + gone:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    refs = log.with_name(log.name + ".modelmon-references")
    refs.mkdir()
    (refs / "credit.jsonl").write_text("{}")
    prepare_data(layout)
    assert log.read_bytes() == b""
    assert all(p.exists() for p in kept)  # history and the inbox stay
    assert not any(p.exists() for p in gone + [refs])


def test_missing_generated_files_are_named_with_the_fix():
    with pytest.raises(StackError, match=r"missing alerting/alertmanager.yml: run `modelmon generate"):
        require({"prometheus/prometheus.yml": ""}, "prometheus/prometheus.yml", "alerting/alertmanager.yml")


def test_generated_files_replace_the_committed_ones_and_orphans_are_dropped(tmp_path, monkeypatch):
    import modelmon.generate

    (tmp_path / "prometheus" / "rules").mkdir(parents=True)
    (tmp_path / "prometheus" / "prometheus.yml").write_text("handwritten")
    (tmp_path / "prometheus" / "rules" / "old-model.yml").write_text("orphan of an earlier config")
    (tmp_path / "prometheus" / "rules" / "credit.yml").write_text("stale")
    monkeypatch.setattr(modelmon.generate, "artefacts", lambda config, rules=None: {
        "prometheus/rules/credit.yml": "fresh", "README.generated.md": "not a stack file"})
    assert stack_sources(object(), tmp_path) == {"prometheus/prometheus.yml": "handwritten",
                                                 "prometheus/rules/credit.yml": "fresh"}


def test_the_demo_configs_survive_the_rewrite(tmp_path, demo_config_path, promtool, amtool):
    """The files `modelmon stack up` runs on for the demo config, rewritten for 127.0.0.1, stay
    valid and keep no compose hostname."""
    files = stack_sources(load_config(demo_config_path), ROOT)
    require(files, "prometheus/prometheus.yml", "alerting/alertmanager.yml")
    layout = Layout(tmp_path)
    write_configs(files, layout, REMAPPED)
    for path in layout.etc.rglob("*"):
        if path.is_file():
            text = path.read_text()
            for host, port in DEFAULT_PORTS.items():
                assert f"{host}:{port}" not in text, f"{path} still addresses {host}:{port}"
    out = subprocess.run([promtool, "check", "config", str(layout.prometheus_config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert not re.search(r"\b0 rules found", out.stdout + out.stderr), out.stdout  # the rule globs resolve
    out = subprocess.run([amtool, "check-config", str(layout.alertmanager_config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    scraped = {t for c in yaml.safe_load(layout.prometheus_config.read_text())["scrape_configs"]
               for sc in c.get("static_configs", []) for t in sc["targets"]}
    assert "127.0.0.1:19188" in scraped  # the exporter, on its remapped port
    provider = yaml.safe_load(next((layout.grafana_provisioning / "dashboards").glob("*.yml")).read_text())
    assert Path(provider["providers"][0]["options"]["path"]) == layout.grafana_dashboards
    assert (layout.grafana_dashboards / HOME_DASHBOARD).is_file()


# --------------------------------------------------------------------------- secrets of the stack

HOOK_SECRET = "hook-secret-path-4242"


def url_env_config(tmp_path: Path, hook_url: str = "http://127.0.0.1:9/unused") -> Path:
    """A modelmon.yaml whose only receiver takes its URL (and a bearer token) from the environment."""
    path = tmp_path / "modelmon.yaml"
    path.write_text(textwrap.dedent("""\
        models:
          - {name: m, task: binary, features: {numeric: [x]}, reference: {first: 100}}
        alerting:
          group_wait: 1s
          receivers:
            - name: hook
              webhook: {url_env: MODELMON_TEST_HOOK_URL, bearer_token_env: MODELMON_TEST_HOOK_TOKEN,
                        send_resolved: true}
        """))
    return path


def fake_binary(tmp_path: Path, output: str) -> str:
    script = tmp_path / "fake-alertmanager"
    script.write_text(f"#!/bin/sh\necho '{output}' >&2\n")
    script.chmod(0o755)
    return str(script)


@pytest.mark.parametrize("output, version", [
    ("alertmanager, version 0.25.0 (branch: debian/sid, revision: 0.25.0-1+b4)", (0, 25, 0)),
    ("alertmanager, version 0.27.0 (branch: HEAD, revision: 0aa3c2aad14cff039931923ab16b26b7481783b5)", (0, 27, 0)),
    ("something else entirely", None),
])
def test_the_alertmanager_version_is_read_from_the_binary(tmp_path, output, version):
    from modelmon.stack.workdir import alertmanager_version

    assert alertmanager_version(fake_binary(tmp_path, output)) == version
    assert alertmanager_version(str(tmp_path / "missing")) is None


def test_the_rewritten_alertmanager_config_is_private(tmp_path):
    layout = Layout(tmp_path)
    (layout.etc / "alerting").mkdir(parents=True)
    layout.alertmanager_config.write_text("left by an earlier run")
    layout.alertmanager_config.chmod(0o644)
    write_configs({"alerting/alertmanager.yml": ALERTMANAGER_YML, "prometheus/prometheus.yml": COMPOSE_PROMETHEUS_YML},
                  layout, REMAPPED)
    assert stat_mode(layout.alertmanager_config) == 0o600
    assert "127.0.0.1:19095" in layout.alertmanager_config.read_text()


def stat_mode(path: Path) -> int:
    import stat

    return stat.S_IMODE(path.stat().st_mode)


ENV = {"MODELMON_TEST_HOOK_URL": f"http://127.0.0.1:9/{HOOK_SECRET}", "MODELMON_TEST_HOOK_TOKEN": "tok-123"}


@pytest.mark.parametrize("version", [(0, 27, 0), (0, 25, 0), None])
def test_env_secrets_land_in_private_files_and_old_alertmanagers_get_the_url_inline(tmp_path, version):
    from modelmon.stack.workdir import secrets_dir, write_alertmanager_secrets

    config = load_config(url_env_config(tmp_path))
    layout = Layout(tmp_path / "w")
    write_configs(stack_sources(config, tmp_path), layout, REMAPPED)
    notes = write_alertmanager_secrets(config, layout, version, ENV)

    secrets = secrets_dir(layout)
    assert secrets == layout.etc / "alerting" / "secrets"
    assert {p.name: p.read_text() for p in secrets.iterdir()} == {
        "MODELMON_TEST_HOOK_URL": ENV["MODELMON_TEST_HOOK_URL"], "MODELMON_TEST_HOOK_TOKEN": "tok-123"}
    assert all(stat_mode(p) == 0o600 for p in secrets.iterdir())
    assert stat_mode(layout.alertmanager_config) == 0o600
    hook = yaml.safe_load(layout.alertmanager_config.read_text())["receivers"][1]["webhook_configs"][0]
    assert hook["http_config"]["authorization"]["credentials_file"] == str(secrets / "MODELMON_TEST_HOOK_TOKEN")
    if version == (0, 27, 0):
        assert hook["url_file"] == str(secrets / "MODELMON_TEST_HOOK_URL") and "url" not in hook
        assert notes == []
    else:
        assert hook["url"] == ENV["MODELMON_TEST_HOOK_URL"] and "url_file" not in hook
        found = "0.25.0" if version else "of unknown version"
        assert notes == [f"Alertmanager {found} cannot read a webhook URL from a file (url_file needs 0.26.0 or "
                         f"later): the URL of hook is copied into {layout.alertmanager_config} (mode 0600), and "
                         "Alertmanager shows it on its status page (/api/v2/status, on 127.0.0.1)"]


def test_stack_up_with_an_unset_url_env_names_it_and_starts_nothing(tmp_path, capsys, monkeypatch,
                                                                     alertmanager_bin):
    from modelmon.cli import main

    monkeypatch.delenv("MODELMON_TEST_HOOK_URL", raising=False)
    monkeypatch.setenv("MODELMON_TEST_HOOK_TOKEN", "tok")
    rc = main(["stack", "up", "--config", str(url_env_config(tmp_path)), "--workdir", str(tmp_path / "w"),
               "--no-grafana", *[f"--port={name}={free_port()}" for name in DEFAULT_PORTS]])
    assert rc == 2
    err = capsys.readouterr().err
    assert "alerting.receivers[0].webhook.url_env: environment variable MODELMON_TEST_HOOK_URL is not set" in err
    assert not Layout(tmp_path / "w").logs.exists()  # no service was started


def test_a_url_env_webhook_reaches_its_endpoint_through_the_real_alertmanager(tmp_path, alertmanager_bin):
    """url_env end to end, as `modelmon stack up` prepares it for the installed Alertmanager
    (url_file from 0.26 on, the URL inlined before): an alert posted to Alertmanager arrives at
    the secret URL with the bearer token."""
    import http.server
    import threading

    from modelmon.stack.workdir import alertmanager_version, write_alertmanager_secrets

    received: list[tuple[str, str, dict]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append((self.path, self.headers.get("Authorization", ""), json.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {"MODELMON_TEST_HOOK_URL": f"http://127.0.0.1:{server.server_address[1]}/{HOOK_SECRET}",
           "MODELMON_TEST_HOOK_TOKEN": "tok-123"}
    config = load_config(url_env_config(tmp_path))
    layout = Layout(tmp_path / "w")
    port = free_port()
    write_configs(stack_sources(config, tmp_path), layout, {**REMAPPED, "alertmanager": port})
    write_alertmanager_secrets(config, layout, alertmanager_version(alertmanager_bin), env)
    proc = subprocess.Popen([alertmanager_bin, f"--config.file={layout.alertmanager_config}",
                             f"--storage.path={tmp_path / 'am-data'}", f"--web.listen-address=127.0.0.1:{port}",
                             "--cluster.listen-address="], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                if urllib.request.urlopen(f"{base}/-/ready", timeout=1).status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "Alertmanager did not become ready"
            time.sleep(0.1)
        alert = [{"labels": {"alertname": "ModelmonAccuracyLow", "severity": "critical", "model": "m"},
                  "annotations": {"summary": "accuracy low"}}]
        request = urllib.request.Request(f"{base}/api/v2/alerts", data=json.dumps(alert).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        assert urllib.request.urlopen(request, timeout=5).status == 200
        deadline = time.monotonic() + 30
        while not received:
            assert time.monotonic() < deadline, "the webhook never reached its url_env endpoint"
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        server.shutdown()
    path, authorization, payload = received[0]
    assert path == f"/{HOOK_SECRET}" and authorization == "Bearer tok-123"
    assert payload["alerts"][0]["labels"]["alertname"] == "ModelmonAccuracyLow"


# --------------------------------------------------------------------------- supervision (stand-ins)


def http_service(name: str, tmp_path: Path, port: int | None = None) -> Service:
    port = port or free_port()
    return Service(name=name, argv=(PY, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                    "--directory", str(tmp_path)),
                   health=Health(url=f"http://127.0.0.1:{port}/"), log=tmp_path / "logs" / f"{name}.log")


def script_service(name: str, tmp_path: Path, code: str, health: Health | None = None) -> Service:
    return Service(name=name, argv=(PY, "-c", textwrap.dedent(code)), health=health or Health(),
                   log=tmp_path / "logs" / f"{name}.log")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_child_that_dies_stops_the_stack_with_its_log(tmp_path):
    out = io.StringIO()
    web = http_service("web", tmp_path)
    dier = script_service("dier", tmp_path, """
        import sys, time
        print("loading model..."); print("boom: reference file unreadable", flush=True)
        time.sleep(0.5); sys.exit(3)
    """)
    sup = Supervisor([web, dier], out=out, health_timeout=20, poll_interval=0.05)
    ready = []
    pids: list[int] = []
    rc = sup.run(on_ready=lambda: (ready.append(True), pids.extend(p.pid for _, p in sup.running)))
    text = out.getvalue()
    assert rc == 1 and ready == [True]
    assert "dier exited unexpectedly (exit code 3)" in text
    assert "boom: reference file unreadable" in text  # the end of its log, shown to the user
    assert f"log: {dier.log}" in text
    assert "stopped web" in text
    assert all(gone(pid) for pid in pids) and sup.running == []


def test_services_start_in_order_each_after_the_previous_is_healthy(tmp_path):
    first = http_service("first", tmp_path)
    # Exits non-zero unless "first" already answers when it starts.
    second = script_service("second", tmp_path, f"""
        import sys, time, urllib.request
        urllib.request.urlopen({first.health.url!r}, timeout=2)
        open({str(tmp_path / 'second.ok')!r}, 'w').write('x')
        time.sleep(60)
    """, health=Health(file=tmp_path / "second.ok"))
    third = script_service("third", tmp_path, "import sys; sys.exit(5)", health=Health(file=tmp_path / "never"))
    out = io.StringIO()
    rc = Supervisor([first, second, third], out=out, health_timeout=20, poll_interval=0.05).run()
    text = out.getvalue()
    assert rc == 1 and "third exited during startup (exit code 5)" in text
    assert text.index("starting first") < text.index("starting second") < text.index("starting third")
    assert "stopped second, first" in text  # newest first


def test_a_service_that_never_gets_healthy_times_out(tmp_path):
    sleeper = script_service("sleeper", tmp_path, "import time; print('waiting', flush=True); time.sleep(60)",
                             health=Health(url=f"http://127.0.0.1:{free_port()}/-/ready"))
    out = io.StringIO()
    t0 = time.monotonic()
    rc = Supervisor([sleeper], out=out, health_timeout=1, poll_interval=0.05).run()
    assert rc == 1 and time.monotonic() - t0 < 10
    assert "sleeper not healthy after 1s (waited for http://127.0.0.1:" in out.getvalue()
    assert "waiting" in out.getvalue()


def test_a_missing_program_is_a_clear_error(tmp_path):
    svc = Service(name="ghost", argv=(str(tmp_path / "no-such-binary"),), health=Health(),
                  log=tmp_path / "ghost.log")
    out = io.StringIO()
    assert Supervisor([svc], out=out).run() == 1
    assert f"cannot start ghost ({tmp_path / 'no-such-binary'}): No such file or directory" in out.getvalue()


RUNNER = """
import json, sys
from pathlib import Path
from modelmon.stack.plan import Health, Service
from modelmon.stack.supervisor import Supervisor

tmp, port = Path(sys.argv[1]), sys.argv[2]
py = sys.executable
services = [
    Service("web", (py, "-m", "http.server", port, "--bind", "127.0.0.1", "--directory", str(tmp)),
            Health(url=f"http://127.0.0.1:{port}/"), tmp / "web.log"),
    # Writes its health file, then ignores SIGTERM: the runner must kill it after stop_timeout.
    Service("stubborn", (py, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                         f"open({str(tmp / 'stubborn.ok')!r}, 'w').write('x'); time.sleep(120)"),
            Health(file=tmp / "stubborn.ok"), tmp / "stubborn.log"),
    Service("writer", (py, "-c", f"import time\\nwhile True:\\n open({str(tmp / 'w.txt')!r}, 'a').write('x')\\n time.sleep(0.1)"),
            Health(file=tmp / "w.txt"), tmp / "writer.log"),
]
sup = Supervisor(services, stop_timeout=2, poll_interval=0.05, health_timeout=20)
sys.exit(sup.run(on_ready=lambda: print("READY " + json.dumps([p.pid for _, p in sup.running]), flush=True)))
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_one_signal_stops_every_child(tmp_path, sig):
    """SIGINT goes to the runner's whole process group, as a terminal's Ctrl-C does; SIGTERM to
    the runner alone, as `kill` does. Either way: one clean, ordered stop and exit 0."""
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    port = free_port()
    proc = subprocess.Popen([PY, str(script), str(tmp_path), str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        line = ""
        deadline = time.monotonic() + 30
        while not line.startswith("READY") and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "runner exited before READY"
        assert line.startswith("READY"), "stack did not come up"
        pids = json.loads(line.split(" ", 1)[1])
        assert len(pids) == 3 and not any(gone(p) for p in pids)

        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        rc = proc.wait(timeout=20)
        rest = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0, rest
    assert f"{sig.name} received, stopping" in rest
    assert "stubborn did not stop within 2s; killing it" in rest
    assert "stopped writer, stubborn, web" in rest
    assert all(gone(p) for p in pids)
    with pytest.raises(OSError):  # the port is free again
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)


# --------------------------------------------------------------------------- the real stack


@pytest.mark.e2e
def test_modelmon_stack_up_runs_and_stops_cleanly(tmp_path):
    """The real `modelmon stack up`: modelmon's processes, Prometheus and Alertmanager on free ports,
    Prometheus scraping the exporter through the rewritten config, then one SIGINT stops it all."""
    which_or_skip("prometheus")
    which_or_skip("prometheus-alertmanager")
    ports = {name: free_port() for name in DEFAULT_PORTS}
    argv = [PY, "-m", "modelmon", "stack", "up", "--config", str(ROOT / "modelmon.yaml"),
            "--workdir", str(tmp_path / "stack"), "--no-grafana", "--health-timeout", "60",
            *[f"--port={name}={port}" for name, port in ports.items()]]
    log = tmp_path / "stack.out"
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 150
        while "modelmon stack is up" not in log.read_text():
            assert proc.poll() is None, f"stack up exited with {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"stack not up in time:\n{log.read_text()}"
            time.sleep(0.5)
        banner = log.read_text()
        assert f"http://127.0.0.1:{ports['prometheus']}" in banner

        metrics = urllib.request.urlopen(f"http://127.0.0.1:{ports['exporter']}/metrics", timeout=5).read()
        assert b"modelmon_" in metrics
        assert urllib.request.urlopen(f"http://127.0.0.1:{ports['receiver']}/api/alerts", timeout=5).status == 200

        # Prometheus scrapes the exporter on its remapped port: the rewrite worked end to end.
        query = f"http://127.0.0.1:{ports['prometheus']}/api/v1/query?query=up%7Bjob%3D%22modelmon%22%7D"
        deadline = time.monotonic() + 60
        while True:
            result = json.load(urllib.request.urlopen(query, timeout=5))["data"]["result"]
            if result and result[0]["value"][1] == "1":
                break
            assert time.monotonic() < deadline, f"exporter never scraped: {result}"
            time.sleep(1)

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=40) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "SIGINT received, stopping" in log.read_text()
    for name, port in ports.items():
        if name != "grafana":
            with pytest.raises(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
