"""Config and secret faults through the real CLI, as a user runs it: exit status, the one error
line, and nothing written or started.

Cases of issue 8, point 12: duplicate YAML keys (last used to win silently), credentials inline
in a webhook URL (copied verbatim into alerting/alertmanager.yml), and `dashboards push --url`
credentials next to a token (they silently replaced the token).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import free_port

MODEL = """\
models:
  - name: credit
    task: binary
    features:
      numeric: [income, age]
    reference: {first: 100}
    team: risk
  - task: regression
    name: eta
    features:
      numeric: [distance]
    reference: {first: 100}
    name: eta_v2
"""
SECRET = "hunter2-S3cret"


def modelmon(tmp: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m modelmon ARGS` in `tmp`, as a user types it."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GRAFANA_")}
    return subprocess.run([sys.executable, "-m", "modelmon", *args], cwd=tmp, capture_output=True, text=True,
                          timeout=120, env={**clean, **(env or {})})


def config(tmp: Path, text: str) -> Path:
    path = tmp / "modelmon.yaml"
    path.write_text(text)
    return path


def problem_lines(stderr: str) -> list[str]:
    """The problems of a config error: `modelmon: invalid config:` then one indented line each."""
    lines = stderr.splitlines()
    assert lines and lines[0] == "modelmon: invalid config:", stderr
    assert "Traceback" not in stderr
    return [line.strip() for line in lines[1:]]


def test_generate_refuses_a_duplicate_key_with_file_and_line(tmp_path):
    config(tmp_path, MODEL)
    proc = modelmon(tmp_path, "generate", "--config", "modelmon.yaml", "--out", "out")
    assert proc.returncode == 2
    assert problem_lines(proc.stderr) == ["modelmon.yaml:13: duplicate key 'name' (first at line 9)"]
    assert proc.stdout == "" and not (tmp_path / "out").exists()  # nothing generated from a guess


def test_serve_refuses_a_duplicate_top_level_key_before_listening(tmp_path):
    config(tmp_path, MODEL.replace("    name: eta_v2\n", "") + "exporter: {label_ttl: 1d}\nexporter: {label_ttl: 2d}\n")
    port = free_port()
    proc = modelmon(tmp_path, "serve", "--config", "modelmon.yaml", "--port", str(port))
    assert proc.returncode == 2
    assert problem_lines(proc.stderr) == ["modelmon.yaml:14: duplicate key 'exporter' (first at line 13)"]


def test_generate_refuses_credentials_inline_in_a_webhook_url(tmp_path):
    config(tmp_path, MODEL.replace("    name: eta_v2\n", "") + f"""\
alerting:
  receivers:
    - name: hook
      webhook: {{url: "https://alerts:{SECRET}@hooks.example/modelmon", send_resolved: true}}
""")
    proc = modelmon(tmp_path, "generate", "--config", "modelmon.yaml", "--out", "out")
    assert proc.returncode == 2
    assert problem_lines(proc.stderr) == [
        "alerting.receivers[0].webhook.url: credentials inline in a URL are refused; use url_file or url_env"]
    assert SECRET not in proc.stderr + proc.stdout
    assert not (tmp_path / "out").exists()


def test_generate_keeps_a_url_env_webhook_out_of_the_committed_file(tmp_path):
    config(tmp_path, MODEL.replace("    name: eta_v2\n", "") + """\
alerting:
  receivers:
    - name: hook
      webhook: {url_env: HOOK_URL, send_resolved: true}
""")
    proc = modelmon(tmp_path, "generate", "--config", "modelmon.yaml", "--out", "out",
                    env={"HOOK_URL": f"https://hooks.example/{SECRET}"})
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "out" / "alerting" / "alertmanager.yml").read_text()
    assert SECRET not in text
    hook = yaml.safe_load(text)["receivers"][1]["webhook_configs"][0]
    assert hook == {"url_file": "/etc/alertmanager/secrets/HOOK_URL", "send_resolved": True}


def test_push_with_credentials_in_the_url_and_a_token_exits_2_without_echoing_them(tmp_path):
    config(tmp_path, MODEL.replace("    name: eta_v2\n", ""))
    url = f"http://admin:{SECRET}@127.0.0.1:{free_port()}"
    proc = modelmon(tmp_path, "dashboards", "push", "--config", "modelmon.yaml", "--url", url,
                    env={"GRAFANA_TOKEN": "glsa_token_" + SECRET})
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"modelmon dashboards push: --url {url.replace(f'admin:{SECRET}', '***')} carries credentials "
        "(user:password@) and GRAFANA_TOKEN is set too; use one: drop user:password@ from --url, or the other "
        "credentials"]
    assert SECRET not in proc.stderr and "admin" not in proc.stderr
