"""alertmanager.yml: routes by team and severity, inhibitions, receivers with secrets kept out,
checked with the real amtool (check-config, config routes test)."""
from __future__ import annotations

import stat
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from conftest import ROOT, free_port
from modelmon.alerting.alertmanager import (
    NULL_RECEIVER, alertmanager_config, env_secret_files, write_env_secrets,
)
from modelmon.alerting.render import dump_yaml
from modelmon.config import ConfigError, load_config, parse_config

COMMITTED = ROOT / "alerting" / "alertmanager.yml"
SECRET_VALUES = {"PAGERDUTY_KEY": "pd-secret-123", "SLACK_URL": "https://hooks.slack.example/secret-456",
                 "SMTP_PASSWORD": "smtp-secret-789", "INBOX_TOKEN": "inbox-secret-000"}


def routed_config():
    """Two teams with their own pager and chat, a mail receiver, secrets from files and env."""
    return parse_config({
        "models": [
            {"name": "credit", "task": "binary", "features": {"numeric": ["x"]}, "reference": {"first": 100},
             "team": "risk"},
            {"name": "eta", "task": "regression", "features": {"numeric": ["x"]}, "reference": {"first": 100},
             "team": "logistics"},
        ],
        "alerting": {
            "default_receiver": "inbox",
            "receivers": [
                {"name": "inbox", "webhook": {"url": "http://receiver:9095/webhook", "send_resolved": True,
                                              "bearer_token_env": "INBOX_TOKEN"}},
                {"name": "risk-pager", "pagerduty": {"routing_key_env": "PAGERDUTY_KEY"}},
                {"name": "risk-chat", "slack": {"channel": "#risk-alerts", "api_url_env": "SLACK_URL"}},
                {"name": "logistics-pager", "pagerduty": {"routing_key_file": "/run/secrets/logistics_pd"}},
                {"name": "logistics-mail", "email": {
                    "to": "logistics@example.com", "from": "modelmon@example.com", "smarthost": "smtp.example.com:587",
                    "auth_username": "modelmon", "auth_password_env": "SMTP_PASSWORD"}},
                {"name": "hook-with-file", "webhook": {"url": "http://hooks.example/x",
                                                       "bearer_token_file": "/run/secrets/hook_token"}},
            ],
            "teams": {
                "risk": {"critical": ["risk-pager", "inbox"], "warning": ["risk-chat"]},
                "logistics": {"critical": ["logistics-pager"], "warning": ["logistics-mail", "inbox"]},
            },
            "group_wait": "10s",
        },
    })


def amtool_run(amtool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([amtool, *args], capture_output=True, text=True, timeout=60)


def check_config(amtool: str, path: Path) -> None:
    proc = amtool_run(amtool, "check-config", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def routes_to(amtool: str, path: Path, receivers: list[str], **labels: str) -> None:
    """Assert with `amtool config routes test --verify.receivers` where an alert goes."""
    proc = amtool_run(amtool, "config", "routes", "test", f"--config.file={path}",
                      f"--verify.receivers={','.join(receivers)}", *(f"{k}={v}" for k, v in labels.items()))
    assert proc.returncode == 0, f"{labels} -> expected {receivers}, got {proc.stdout.strip()!r} {proc.stderr}"


@pytest.fixture
def routed_file(tmp_path) -> Path:
    path = tmp_path / "alertmanager.yml"
    path.write_text(dump_yaml(alertmanager_config(routed_config())))
    return path


def test_committed_config_passes_amtool(amtool):
    check_config(amtool, COMMITTED)


def test_every_receiver_kind_passes_amtool(amtool, routed_file):
    check_config(amtool, routed_file)


@pytest.mark.parametrize("team", ["risk", "growth", "logistics"])
def test_demo_routes(amtool, team):
    """The demo sends critical and warning of every team to the inbox, info nowhere."""
    demo = load_config(ROOT / "modelmon.yaml")
    assert team in demo.alerting.teams
    for severity in ("critical", "warning"):
        routes_to(amtool, COMMITTED, ["modelmon-inbox"], alertname="ModelmonAccuracyLow", severity=severity,
                  team=team, model="m")
    routes_to(amtool, COMMITTED, [NULL_RECEIVER], alertname="ModelmonMultipleVersionsServing", severity="info",
              team=team, model="m")


def test_team_routes(amtool, routed_file):
    routes_to(amtool, routed_file, ["risk-pager", "inbox"], alertname="ModelmonErrorBudgetBurn", severity="critical",
              team="risk", model="credit")
    routes_to(amtool, routed_file, ["risk-chat"], alertname="ModelmonAccuracyLow", severity="warning", team="risk",
              model="credit")
    routes_to(amtool, routed_file, [NULL_RECEIVER], alertname="ModelmonMultipleVersionsServing", severity="info",
              team="risk", model="credit")
    routes_to(amtool, routed_file, ["logistics-pager"], alertname="ModelmonMaeHigh", severity="critical",
              team="logistics", model="eta")
    routes_to(amtool, routed_file, ["logistics-mail", "inbox"], alertname="ModelmonMaeHigh", severity="warning",
              team="logistics", model="eta")
    routes_to(amtool, routed_file, [NULL_RECEIVER], severity="info", team="logistics", model="eta")
    # Alerts about modelmon itself carry no team: the default receiver.
    routes_to(amtool, routed_file, ["inbox"], alertname="ModelmonExporterDown", severity="critical")
    # A team nobody configured still reaches someone.
    routes_to(amtool, routed_file, ["inbox"], alertname="ModelmonAccuracyLow", severity="critical", team="unknown")


def test_secrets_stay_out_of_the_generated_file():
    text = dump_yaml(alertmanager_config(routed_config()))
    for value in SECRET_VALUES.values():
        assert value not in text
    doc = yaml.safe_load(text)
    by_name = {r["name"]: r for r in doc["receivers"]}
    secrets = "/etc/alertmanager/secrets"
    assert by_name["risk-pager"]["pagerduty_configs"][0]["routing_key_file"] == f"{secrets}/PAGERDUTY_KEY"
    assert by_name["logistics-pager"]["pagerduty_configs"][0]["routing_key_file"] == "/run/secrets/logistics_pd"
    assert by_name["risk-chat"]["slack_configs"][0]["api_url_file"] == f"{secrets}/SLACK_URL"
    assert by_name["logistics-mail"]["email_configs"][0]["auth_password_file"] == f"{secrets}/SMTP_PASSWORD"
    assert by_name["inbox"]["webhook_configs"][0]["http_config"] == {
        "authorization": {"type": "Bearer", "credentials_file": f"{secrets}/INBOX_TOKEN"}}
    assert by_name["hook-with-file"]["webhook_configs"][0]["http_config"]["authorization"]["credentials_file"] == \
        "/run/secrets/hook_token"
    assert not any(key.endswith("_env") for r in doc["receivers"] for cfgs in r.values() if isinstance(cfgs, list)
                   for c in cfgs for key in c)


def test_env_secrets_are_written_to_private_files(tmp_path):
    config = routed_config()
    assert env_secret_files(config, str(tmp_path)) == {k: str(tmp_path / k) for k in sorted(SECRET_VALUES)}
    written = write_env_secrets(config, tmp_path, SECRET_VALUES)
    assert sorted(p.name for p in written) == sorted(SECRET_VALUES)
    for path in written:
        assert path.read_text() == SECRET_VALUES[path.name]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_missing_env_secret_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="SLACK_URL is not set"):
        write_env_secrets(routed_config(), tmp_path, {k: v for k, v in SECRET_VALUES.items() if k != "SLACK_URL"})


def test_inhibitions():
    rules = alertmanager_config(routed_config())["inhibit_rules"]
    assert {"source_matchers": ['severity="critical"'], "target_matchers": ['severity=~"warning|info"'],
            "equal": ["model", "family"]} in rules
    exporter = [r for r in rules if "ModelmonExporterDown" in r["source_matchers"][0]]
    assert exporter and exporter[0]["target_matchers"] == ['family=~"traffic|labels"']


def test_inhibitions_in_a_running_alertmanager(alertmanager_bin, routed_file, tmp_path):
    """Post alerts to a real Alertmanager and read back which ones it inhibits."""
    port = free_port()
    proc = subprocess.Popen(
        [alertmanager_bin, f"--config.file={routed_file}", f"--storage.path={tmp_path / 'am-data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(f"{base}/-/ready", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "Alertmanager did not become ready"
            time.sleep(0.1)

        def alert(name: str, severity: str, family: str, **labels: str) -> dict:
            return {"labels": {"alertname": name, "severity": severity, "family": family, **labels},
                    "annotations": {"summary": name}}

        posted = [
            alert("ModelmonAccuracyLow", "critical", "quality", model="credit", team="risk"),
            alert("ModelmonAccuracyLow", "warning", "quality", model="credit", team="risk"),
            alert("ModelmonF1Low", "warning", "quality", model="credit", team="risk"),
            alert("ModelmonMultipleVersionsServing", "info", "versions", model="credit", team="risk"),
            alert("ModelmonMaeHigh", "warning", "quality", model="eta", team="logistics"),
            alert("ModelmonFeaturePsiHigh", "warning", "drift", model="credit", team="risk"),
            alert("ModelmonExporterDown", "critical", "exporter", job="modelmon"),
            alert("ModelmonNoPredictions", "critical", "traffic", model="eta", team="logistics"),
            alert("ModelmonLabelsNotArriving", "warning", "labels", model="credit", team="risk"),
        ]
        assert requests.post(f"{base}/api/v2/alerts", json=posted, timeout=5).status_code == 200
        got = requests.get(f"{base}/api/v2/alerts", timeout=5).json()
        inhibited = {(a["labels"]["alertname"], a["labels"]["severity"], a["labels"].get("model"))
                     for a in got if a["status"]["inhibitedBy"]}
        assert len(got) == len(posted)
        assert inhibited == {
            ("ModelmonAccuracyLow", "warning", "credit"),  # critical of the same model and family
            ("ModelmonF1Low", "warning", "credit"),
            ("ModelmonNoPredictions", "critical", "eta"),  # caused by the dead exporter
            ("ModelmonLabelsNotArriving", "warning", "credit"),
        }
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_grouping_and_timing_come_from_the_config():
    route = alertmanager_config(routed_config())["route"]
    assert route["receiver"] == "inbox"
    assert route["group_by"] == ["alertname", "model"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == ("10s", "5m", "4h")
    assert route["routes"][0] == {"receiver": NULL_RECEIVER, "matchers": ['severity="info"']}


def test_reserved_and_incomplete_receivers_are_rejected():
    base = {"models": [{"name": "m", "task": "binary", "features": {"numeric": ["x"]}, "reference": {"first": 100}}]}
    with pytest.raises(ConfigError, match="reserved"):
        alertmanager_config(parse_config({**base, "alerting": {"receivers": [
            {"name": "null", "webhook": {"url": "http://x/y"}}]}}))
    with pytest.raises(ConfigError, match=r"receivers\[0\]\.email\.smarthost: required"):  # caught at load
        parse_config({**base, "alerting": {"receivers": [
            {"name": "mail", "email": {"to": "a@example.com", "from": "b@example.com"}}]}})
    with pytest.raises(ConfigError, match=r"alerting\.teams\.risk\.critical: expected at least one receiver"):
        parse_config({**base, "alerting": {"teams": {"risk": {"critical": []}}}})
