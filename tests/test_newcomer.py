"""What a newcomer trips over first: make flags, CLI error paths, compose config and secrets.

Each test runs the real entry point (make, the modelmon CLI, python -m) as a user would, and
checks for one clear line instead of a traceback.
"""
from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

PY = sys.executable


def run(argv: list[str], env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={**os.environ, **(env or {})})


# --------------------------------------------------------------------------- make demo ARGS=...


@pytest.mark.parametrize("target, extra", [("demo", []), ("demo-quick", ["--quick"])])
def test_make_demo_passes_args_through_to_stack_up(target, extra):
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    args = "--port prometheus=19090 --port grafana=13000 --no-grafana"
    out = run([make, "-n", target, f"ARGS={args}"])
    assert out.returncode == 0, out.stderr
    command = next(line for line in out.stdout.splitlines() if " stack up " in line)
    argv = shlex.split(command)
    assert argv[argv.index("up") + 1:] == ["--config", "modelmon.yaml", *extra, *shlex.split(args)]

    # ... and stack up accepts them.
    from modelmon.cli import build_parser

    parsed = build_parser().parse_args(argv[argv.index("stack"):])
    assert dict(parsed.port) == {"prometheus": 19090, "grafana": 13000} and parsed.no_grafana
    # The Makefile says how.
    assert 'make demo ARGS="--port' in (ROOT / "Makefile").read_text()


def test_make_demo_without_args_is_unchanged():
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    out = run([make, "-n", "demo"])
    command = next(line for line in out.stdout.splitlines() if " stack up " in line)
    assert command.split(" stack up ", 1)[1].strip() == "--config modelmon.yaml"


# --------------------------------------------------------------------------- CLI error paths


@pytest.mark.parametrize("argv, message", [
    (["dashboards", "push", "--url", "127.0.0.1:19999"],
     "modelmon dashboards push: --url 127.0.0.1:19999 has no scheme; use http://127.0.0.1:19999 (or https://)"),
    (["dashboards", "push", "--url", "127.0.0.1:19999", "--dry-run"],
     "modelmon dashboards push: --url 127.0.0.1:19999 has no scheme; use http://127.0.0.1:19999 (or https://)"),
])
def test_cli_errors_are_one_line_without_traceback(argv, message):
    out = run([PY, "-m", "modelmon", *argv, "--config", str(ROOT / "modelmon.yaml")], env={"GRAFANA_TOKEN": "t"})
    assert out.returncode == 2
    assert out.stderr == message + "\n" and "Traceback" not in out.stdout + out.stderr


def test_dry_run_works_without_any_grafana():
    from conftest import free_port

    out = run([PY, "-m", "modelmon", "dashboards", "push", "--config", str(ROOT / "modelmon.yaml"),
               "--url", f"http://127.0.0.1:{free_port()}", "--dry-run"], env={"GRAFANA_TOKEN": ""})
    assert out.returncode == 0, out.stderr
    assert "nothing compared, nothing written" in out.stdout and "Traceback" not in out.stderr
    help_text = run([PY, "-m", "modelmon", "dashboards", "push", "--help"]).stdout
    assert "without comparing" in " ".join(help_text.split())  # --help says what a dry run does offline


# --------------------------------------------------------------------------- compose: config and secrets mounted


def test_compose_mounts_follow_the_config(tmp_path):
    """The exporter's mounts come from modelmon.yaml: the config itself and the folders (or
    files) of its reference data, so an edit of either takes effect on restart."""
    from modelmon.config import load_config
    from modelmon.stack.topology import compose_document

    (tmp_path / "data" / "refs").mkdir(parents=True)
    for name in ("data/refs/a.csv", "b.csv"):
        (tmp_path / name).write_text("x\n1\n2\n")
    config = tmp_path / "prod.yaml"
    config.write_text(textwrap.dedent("""\
        models:
          - {name: a, task: binary, features: {numeric: [x]}, reference: data/refs/a.csv}
          - {name: b, task: binary, features: {numeric: [x]}, reference: b.csv}
          - {name: c, task: binary, features: {numeric: [x]}, reference: {first: 100}}
        """))
    exporter = compose_document(load_config(config))["services"]["exporter"]
    assert exporter["volumes"] == ["predictions:/data", "./prod.yaml:/etc/modelmon/modelmon.yaml:ro",
                                   "./data/refs:/etc/modelmon/data/refs:ro", "./b.csv:/etc/modelmon/b.csv:ro"]
    assert "--config=/etc/modelmon/modelmon.yaml" in exporter["command"]


def test_compose_secrets_writes_env_secrets_for_alertmanager(tmp_path):
    config = tmp_path / "modelmon.yaml"
    config.write_text(textwrap.dedent("""\
        models:
          - {name: m, task: binary, features: {numeric: [x]}, reference: {first: 100}}
        alerting:
          receivers:
            - name: pager
              pagerduty: {routing_key_env: MM_TEST_PD_KEY}
        """))
    argv = [PY, "-m", "modelmon.stack.compose_secrets", "--config", str(config), "--dir", str(tmp_path / "secrets")]
    unset = run(argv, env={"MM_TEST_PD_KEY": ""})
    assert unset.returncode == 2 and "Traceback" not in unset.stderr
    # As every modelmon command reports config problems: each one on a line, with its key path.
    assert unset.stderr.startswith("compose secrets: invalid config:")
    assert "alerting.receivers[0].pagerduty.routing_key_env: environment variable MM_TEST_PD_KEY is not set" in unset.stderr

    done = run(argv, env={"MM_TEST_PD_KEY": "pd-secret"})
    assert done.returncode == 0, done.stderr
    secret = tmp_path / "secrets" / "MM_TEST_PD_KEY"
    assert secret.read_text() == "pd-secret" and stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert "chown -R 65534" in done.stdout  # the Alertmanager image's user must read it
    assert "pd-secret" not in done.stdout + done.stderr

    # The generated Alertmanager config reads it where compose mounts that folder.
    from modelmon.alerting.alertmanager import alertmanager_config
    from modelmon.config import load_config

    am = alertmanager_config(load_config(config))
    key_file = am["receivers"][1]["pagerduty_configs"][0]["routing_key_file"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = dict(v.split(":")[1::-1] for v in compose["services"]["alertmanager"]["volumes"] if v.startswith("./"))
    assert mounts[str(Path(key_file).parent)] == "./secrets"
