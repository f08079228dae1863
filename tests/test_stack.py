"""The native stack (`modelmon stack up`): its plan, its rendered configs, its process supervision.

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
    APT_HINT, DEMO_SCHEDULE, QUICK_SCHEDULE, Binaries, Health, Layout, Service, StackOptions, find_binaries, plan_stack,
)
from modelmon.stack.ports import choose_ports
from modelmon.stack.supervisor import Supervisor
from modelmon.stack.topology import DEFAULT_PORTS, HOME_DASHBOARD, NativeTarget
from modelmon.stack.workdir import prepare_data, require, stack_sources, write_configs
from tests.processes import stack_up

PY = sys.executable
REMAPPED = {"exporter": 19188, "receiver": 19095, "prometheus": 19090, "alertmanager": 19093, "grafana": 13000}


def all_binaries(grafana: tuple[str, ...] | None = ("/usr/sbin/grafana", "server")) -> Binaries:
    return Binaries(modelmon=(PY, "-m", "modelmon"), prometheus="/usr/bin/prometheus",
                    alertmanager="/usr/bin/prometheus-alertmanager", grafana=grafana,
                    grafana_home=Path("/usr/share/grafana") if grafana else None)


def options(tmp_path: Path, **kw) -> StackOptions:
    return StackOptions(config=tmp_path / "modelmon.yaml", ports=REMAPPED, **kw)


def native(layout: Layout, ports=REMAPPED, config: Path = ROOT / "modelmon.yaml") -> NativeTarget:
    return NativeTarget(ports=ports, layout=layout, config=config)


def opt(argv, name: str) -> str:
    """The value of --name in argv, written --name=value (as the topology writes options)."""
    values = [a.split("=", 1)[1] for a in argv if a.startswith(name + "=")]
    assert len(values) == 1, (name, argv)
    return values[0]


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
    assert opt(exporter, "--config") == str(tmp_path / "modelmon.yaml")
    assert opt(exporter, "--log") == str(layout.predictions_log)
    assert "--from-start" not in exporter  # restarts resume from the offset file, never replay
    assert opt(exporter, "--port") == "19188" and opt(exporter, "--host") == "127.0.0.1"
    assert by["exporter"].health.url == "http://127.0.0.1:19188/healthz"

    traffic = by["traffic"].argv
    assert traffic[3] == "simulate" and "--loop" in traffic
    assert opt(traffic, "--out") == str(layout.predictions_log)
    assert by["traffic"].health == Health(file=layout.predictions_log, max_age=30)

    receiver = by["receiver"].argv
    assert receiver[3] == "receiver" and opt(receiver, "--port") == "19095"
    assert opt(receiver, "--db") == str(layout.alerts_db)
    assert by["receiver"].health.url == "http://127.0.0.1:19095/healthz"
    assert not [a for a in receiver if a.startswith("--grafana-url")]  # Grafana runs: the alerts' links

    prom = by["prometheus"].argv
    assert prom[0] == "/usr/bin/prometheus"
    assert f"--config.file={layout.prometheus_config}" in prom
    assert "--web.listen-address=127.0.0.1:19090" in prom
    assert "--web.external-url=http://127.0.0.1:19090" in prom
    assert by["prometheus"].health.url == "http://127.0.0.1:19090/-/ready"

    am = by["alertmanager"].argv
    assert f"--config.file={layout.alertmanager_config}" in am
    assert "--web.listen-address=127.0.0.1:19093" in am
    assert "--cluster.listen-address=" in am  # no gossip port for a single instance

    gf = by["grafana"]
    assert gf.argv == ("/usr/sbin/grafana", "server", "--homepath=/usr/share/grafana")
    assert gf.env["GF_PATHS_DATA"] == str(layout.data_of("grafana"))
    assert gf.env["GF_SERVER_ROOT_URL"] == "http://127.0.0.1:13000"
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


@pytest.mark.parametrize("grafana_option, installed", [(False, True), (True, False)])
def test_without_grafana_the_inbox_says_so_instead_of_linking(tmp_path, grafana_option, installed):
    binaries = all_binaries(grafana=("/usr/sbin/grafana", "server") if installed else None)
    plan = plan_stack(options(tmp_path, grafana=grafana_option), Layout(tmp_path), binaries)
    receiver = next(s for s in plan.services if s.name == "receiver")
    assert "grafana" not in {s.name for s in plan.services}
    assert opt(receiver.argv, "--grafana-url") == "none"


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

    from modelmon.stack.cli import add_arguments, demo_schedule

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert demo_schedule(parser.parse_args(["up", *argv])) == expected


def test_quick_rules_are_the_production_alerts_on_one_minute_clocks(tmp_path, demo_config_path, promtool):
    from modelmon.stack.cli import quick_rules

    config = load_config(demo_config_path)
    layout = Layout(tmp_path)
    normal = stack_sources(config, ROOT, native(layout))
    quick = stack_sources(config, ROOT, native(layout), rules=quick_rules())
    rule_files = sorted(k for k in quick if k.startswith("prometheus/rules/"))
    assert rule_files == sorted(k for k in normal if k.startswith("prometheus/rules/"))

    def alerts(files):
        return [r for k in rule_files for g in yaml.safe_load(files[k])["groups"] for r in g["rules"] if "alert" in r]

    assert [(a["alert"], a["labels"]) for a in alerts(quick)] == [(a["alert"], a["labels"]) for a in alerts(normal)]
    for a in alerts(quick):
        assert a["for"] == ("10m" if a["alert"] == "ModelmonLabelsNotArriving" else "1m"), a["alert"]
    write_configs(quick, layout)
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


# --------------------------------------------------------------------------- configs rendered for the native target


def rendered(tmp_path: Path, config_path: Path = ROOT / "modelmon.yaml", ports=REMAPPED) -> tuple[Layout, dict]:
    layout = Layout(tmp_path / "w")
    files = stack_sources(load_config(config_path), config_path.parent, native(layout, ports, config_path))
    write_configs(files, layout)
    return layout, files


@pytest.mark.parametrize("url, expected", [
    ("http://receiver:9095/webhook", "http://127.0.0.1:19095/webhook"),
    ("http://127.0.0.1:9095/webhook", "http://127.0.0.1:19095/webhook"),
    ("http://localhost:3000/d/x?var-model=a#p", "http://127.0.0.1:13000/d/x?var-model=a#p"),
    ("http://prometheus:9090", "http://127.0.0.1:19090"),
    ("https://github.com/modelmon/modelmon/blob/main/alerting/RUNBOOK.md", None),  # not ours
    ("http://prometheus:9999/x", None),        # a service name with a port that is not its own
    ("http://exporter:9093/", None),           # our name, another service's port
    ("http://my-exporter:9188/", None),        # another host that merely ends like ours
    ("http://node.exporter:9188/", None),
    ("http://10.0.0.1:9090/", None),
    ("http://localhost/", None),               # no port: not a service of the topology
])
def test_config_urls_naming_a_service_are_rendered_for_its_native_port(tmp_path, url, expected):
    assert native(Layout(tmp_path)).resolve_url(url) == (expected or url)


def test_the_native_configs_address_loopback_ports_and_work_dir_paths(tmp_path, promtool, amtool):
    """The files `modelmon stack up` runs on for the demo config: rendered for 127.0.0.1, the
    chosen ports and the work directory, valid for promtool and amtool, no compose name left."""
    layout, files = rendered(tmp_path)
    require(files, "prometheus/prometheus.yml", "alerting/alertmanager.yml")

    prom = yaml.safe_load(layout.prometheus_config.read_text())
    targets = {c["job_name"]: c["static_configs"][0]["targets"] for c in prom["scrape_configs"]}
    assert targets == {"modelmon": ["127.0.0.1:19188"], "prometheus": ["127.0.0.1:19090"],
                       "alertmanager": ["127.0.0.1:19093"]}
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:19093"]
    out = subprocess.run([promtool, "check", "config", str(layout.prometheus_config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert not re.search(r"\b0 rules found", out.stdout + out.stderr), out.stdout  # the rule globs resolve

    am = yaml.safe_load(layout.alertmanager_config.read_text())
    hooks = [w["url"] for r in am["receivers"] for w in r.get("webhook_configs", [])]
    assert hooks == ["http://127.0.0.1:19095/webhook"]
    out = subprocess.run([amtool, "check-config", str(layout.alertmanager_config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr

    datasource = yaml.safe_load((layout.grafana_provisioning / "datasources" / "modelmon.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://127.0.0.1:19090"
    provider = yaml.safe_load((layout.grafana_provisioning / "dashboards" / "modelmon.yml").read_text())
    assert Path(provider["providers"][0]["options"]["path"]) == layout.grafana_dashboards
    assert (layout.grafana_dashboards / HOME_DASHBOARD).is_file()

    rules = [yaml.safe_load(p.read_text()) for p in (layout.etc / "prometheus" / "rules").glob("*.yml")]
    links = {a["annotations"]["dashboard_url"].split("/d/")[0] for doc in rules for g in doc["groups"]
             for a in g["rules"] if "dashboard_url" in a.get("annotations", {})}
    assert links == {"http://127.0.0.1:13000"}  # alert links open the native Grafana

    for path in layout.etc.rglob("*"):
        if path.is_file() and path.suffix in (".yml", ".json"):
            text = path.read_text()
            for host, port in DEFAULT_PORTS.items():
                for name in (host, "localhost"):
                    assert f"{name}:{port}" not in text, f"{path} still addresses {name}:{port}"
            outside = text.replace(str(layout.root), "<workdir>")  # no container path left
            assert not re.search(r"(?<![>\w])/etc/(prometheus|grafana|alertmanager)", outside), path


def test_rendering_for_compose_gives_the_committed_files(demo_config_path):
    """One topology: the generated files `modelmon generate` commits are the topology rendered
    for compose, and the native stack renders the same producers with its own hosts and paths."""
    from modelmon.generate import artefacts
    from modelmon.stack.topology import ComposeTarget, for_target, render_configs, target_files

    config = load_config(demo_config_path)
    committed = artefacts(config)
    compose = ComposeTarget()
    assert for_target(config, compose) == config  # modelmon.yaml is written for compose
    files = target_files(config, compose)
    assert set(files) == {"prometheus/prometheus.yml", "alerting/alertmanager.yml",
                          "grafana/provisioning/datasources/modelmon.yml",
                          "grafana/provisioning/dashboards/modelmon.yml"}
    assert {k: committed[k] for k in files} == files
    assert render_configs(config, compose) == committed


def test_the_stack_renders_instead_of_rewriting():
    """No regular expression rewrites generated text anywhere in the native stack."""
    for path in (ROOT / "modelmon" / "stack").glob("*.py"):
        assert not re.search(r"\bre\.(sub|subn|compile)\(", path.read_text()), path


def test_each_compose_bind_mount_is_where_the_native_stack_writes_that_file(tmp_path):
    """Every config file docker-compose.yml mounts into a service lands, in the native work dir,
    at the path the native rendering of the same service reads."""
    from modelmon.stack.topology import ALERTMANAGER_SECRETS, BIND, COMPOSE_CONFIG, ComposeTarget, services

    layout, files = rendered(tmp_path)
    compose_nodes = {n.name: n for n in services(ComposeTarget())}
    native_nodes = {n.name: n for n in services(native(layout))}
    checked = 0
    for name, node in compose_nodes.items():
        for mount in node.mounts:
            if mount.kind != BIND or mount.container == COMPOSE_CONFIG:
                continue  # modelmon.yaml is read in place by the native exporter
            native_path = layout.at(mount)
            assert native_path == layout.etc / mount.source
            if mount != ALERTMANAGER_SECRETS:  # written when the config has *_env secrets (tested below)
                assert native_path.exists(), f"{name}: {mount.source} is mounted but not written natively"
            # The compose args name the container path exactly where the native args name the native path.
            compose_args = " ".join(node.args) + " " + " ".join(node.env.values())
            native_args = " ".join(native_nodes[name].args) + " " + " ".join(native_nodes[name].env.values())
            assert compose_args.count(mount.container) == native_args.count(str(native_path)), (name, mount)
            checked += 1
    assert checked >= 5


def test_configs_are_rebuilt_so_stale_rule_files_disappear(tmp_path):
    layout = Layout(tmp_path)
    write_configs({"prometheus/rules/old.yml": "groups: []\n"}, layout)
    write_configs({"prometheus/rules/new.yml": "groups: []\n"}, layout)
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
    import modelmon.stack.workdir

    (tmp_path / "prometheus" / "rules").mkdir(parents=True)
    (tmp_path / "prometheus" / "prometheus.yml").write_text("handwritten")
    (tmp_path / "prometheus" / "rules" / "old-model.yml").write_text("orphan of an earlier config")
    (tmp_path / "prometheus" / "rules" / "credit.yml").write_text("stale")
    monkeypatch.setattr(modelmon.stack.workdir, "render_configs", lambda config, target, rules=None: {
        "prometheus/rules/credit.yml": "fresh", "docker-compose.yml": "not a stack file"})
    assert stack_sources(object(), tmp_path, native(Layout(tmp_path))) == {
        "prometheus/prometheus.yml": "handwritten", "prometheus/rules/credit.yml": "fresh"}


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


def test_the_rendered_alertmanager_config_is_private(tmp_path):
    layout = Layout(tmp_path)
    (layout.etc / "alerting").mkdir(parents=True)
    layout.alertmanager_config.write_text("left by an earlier run")
    layout.alertmanager_config.chmod(0o644)
    files = stack_sources(load_config(ROOT / "modelmon.yaml"), ROOT, native(layout))
    write_configs(files, layout)
    assert stat_mode(layout.alertmanager_config) == 0o600
    assert "127.0.0.1:19095" in layout.alertmanager_config.read_text()
    assert stat_mode(layout.prometheus_config) == 0o644 & ~current_umask()


def stat_mode(path: Path) -> int:
    import stat

    return stat.S_IMODE(path.stat().st_mode)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


ENV = {"MODELMON_TEST_HOOK_URL": f"http://127.0.0.1:9/{HOOK_SECRET}", "MODELMON_TEST_HOOK_TOKEN": "tok-123"}


@pytest.mark.parametrize("version", [(0, 27, 0), (0, 25, 0), None])
def test_env_secrets_land_in_private_files_and_old_alertmanagers_get_the_url_inline(tmp_path, version):
    from modelmon.stack.workdir import secrets_dir, write_alertmanager_secrets

    config = load_config(url_env_config(tmp_path))
    layout = Layout(tmp_path / "w")
    write_configs(stack_sources(config, tmp_path, native(layout, config=tmp_path / "modelmon.yaml")), layout)
    notes = write_alertmanager_secrets(config, layout, version, ENV)

    secrets = secrets_dir(layout)
    assert secrets == layout.etc / "secrets"  # where compose mounts ./secrets, in the work dir
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
    target = native(layout, {**REMAPPED, "alertmanager": port}, tmp_path / "modelmon.yaml")
    write_configs(stack_sources(config, tmp_path, target), layout)
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


def test_logs_are_kept_across_runs_with_a_start_line_per_run(tmp_path):
    """A restart appends to the service's log after a start line; a failure shows only this
    run's lines."""
    runs = []
    for n in (1, 2):
        svc = script_service("dier", tmp_path, f"""
            import sys
            print("output of run {n}", flush=True); sys.exit(3)
        """)
        out = io.StringIO()
        assert Supervisor([svc], out=out, health_timeout=20, poll_interval=0.05).run() == 1
        runs.append(out.getvalue())
    text = svc.log.read_text()
    assert text.count("modelmon stack: starting dier:") == 2
    assert text.index("output of run 1") < text.index("output of run 2")
    assert re.match(r"==== \d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4} modelmon stack: starting dier: ", text)
    assert "output of run 2" in runs[1] and "output of run 1" not in runs[1]  # the tail of this run only


def test_a_log_past_the_limit_is_rotated_at_the_next_start(tmp_path):
    from modelmon.stack.supervisor import open_log

    path = tmp_path / "exporter.log"
    path.write_text("old line\n" * 200)
    old = path.read_text()
    log, start = open_log(path, "exporter", ("modelmon", "serve"), rotate_bytes=1000)
    log.write(b"new output\n")
    log.close()
    assert (tmp_path / "exporter.log.1").read_text() == old
    new = path.read_text()
    assert new.startswith("==== ") and new.endswith("modelmon serve\nnew output\n")
    assert start == len(new) - len("new output\n")
    # Below the limit: appended, nothing rotated.
    log, _ = open_log(path, "exporter", ("modelmon", "serve"), rotate_bytes=1000)
    log.close()
    assert path.read_text().startswith(new) and (tmp_path / "exporter.log.1").read_text() == old


def test_a_file_health_check_wants_a_recent_non_empty_file(tmp_path):
    from modelmon.stack.supervisor import is_healthy

    f = tmp_path / "predictions.jsonl"
    health = Health(file=f, max_age=30)
    assert not is_healthy(health)
    f.write_text("")
    assert not is_healthy(health)
    f.write_text("{}\n")
    assert is_healthy(health)
    os.utime(f, (time.time() - 60, time.time() - 60))
    assert not is_healthy(health) and is_healthy(Health(file=f))


def pages_server(paths: set[str]):
    """A stand-in web UI answering 200 on `paths` and 404 elsewhere."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path in paths else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("paths, expected", [({"/alerts"}, "/alerts"), ({"/classic/alerts"}, "/classic/alerts"),
                                             (set(), None)])
def test_the_banner_links_the_prometheus_alerts_page_that_answers(paths, expected, tmp_path):
    from modelmon.stack.banner import banner_lines

    server = pages_server(paths)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        plan = plan_stack(options(tmp_path, grafana=False), Layout(tmp_path), all_binaries(grafana=None))
        plan = type(plan)(services=tuple(s if s.name != "prometheus" else Service(
            s.name, s.argv, s.health, s.log, url=base) for s in plan.services), missing=())
        lines = banner_lines(plan, Layout(tmp_path), options(tmp_path))
    finally:
        server.shutdown()
    line = next(line for line in lines if line.strip().startswith("Prometheus"))
    if expected:
        assert line.endswith(f"(alerts: {base}{expected})")
    else:
        assert "alerts:" not in line
    assert any("Alertmanager" in line and line.endswith("19093/#/alerts)") for line in lines)
    assert any("kept across runs" in line for line in lines)


def test_the_installed_prometheus_alerts_page_is_found(tmp_path, prometheus_bin):
    """Debian's Prometheus serves only the classic UI (/alerts is a 404 there); upstream builds
    serve /alerts. The banner's link answers either way."""
    from modelmon.stack.banner import PROMETHEUS_ALERTS_PAGES, first_page

    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text("global: {scrape_interval: 15s}\n")
    proc = subprocess.Popen([prometheus_bin, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if urllib.request.urlopen(f"{base}/-/ready", timeout=1).status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "Prometheus did not become ready"
            time.sleep(0.2)
        page = first_page(base, PROMETHEUS_ALERTS_PAGES)
        assert page in {base + p for p in PROMETHEUS_ALERTS_PAGES}
        assert urllib.request.urlopen(page, timeout=5).status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)


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
    Prometheus scraping the exporter through the config rendered for it, then one SIGINT stops it all."""
    which_or_skip("prometheus")
    which_or_skip("prometheus-alertmanager")
    ports = {name: free_port() for name in DEFAULT_PORTS}
    argv = [PY, "-m", "modelmon", "stack", "up", "--config", str(ROOT / "modelmon.yaml"),
            "--workdir", str(tmp_path / "stack"), "--no-grafana", "--health-timeout", "60",
            *[f"--port={name}={port}" for name, port in ports.items()]]
    with stack_up(argv, tmp_path, timeout=150) as (proc, log, deadline):
        banner = log.read_text()
        assert f"http://127.0.0.1:{ports['prometheus']}" in banner
        alerts_page = re.search(r"\(alerts: (http://127\.0\.0\.1:\d+/[^)]*alerts)\)", banner).group(1)
        assert urllib.request.urlopen(alerts_page, timeout=5).status == 200  # Debian: /classic/alerts

        metrics = urllib.request.urlopen(f"http://127.0.0.1:{ports['exporter']}/metrics", timeout=5).read()
        assert b"modelmon_" in metrics
        assert urllib.request.urlopen(f"http://127.0.0.1:{ports['receiver']}/api/alerts", timeout=5).status == 200

        # Prometheus scrapes the exporter on its remapped port: the rendering worked end to end.
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
    assert "SIGINT received, stopping" in log.read_text()
    for name, port in ports.items():
        if name != "grafana":
            with pytest.raises(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)


def test_quick_tour_alerts_read_a_short_recording_window_and_keep_the_others():
    from modelmon.stack.cli import quick_config
    from modelmon.stack.plan import QUICK_ALERT_WINDOW

    config = load_config(ROOT / "modelmon.yaml")
    quick = quick_config(config)
    assert quick.recording.alert_window == QUICK_ALERT_WINDOW
    assert set(quick.recording.windows) == {*config.recording.windows, QUICK_ALERT_WINDOW}
    assert quick.models == config.models and config.recording.alert_window != QUICK_ALERT_WINDOW
