"""alertmanager.yml: routes by team and severity, inhibitions, receivers with secrets kept out,
checked with the real amtool (check-config, config routes test)."""
from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from conftest import ROOT, free_port
from modelmon.alerting.alertmanager import (
    NULL_RECEIVER, AlertmanagerOptions, alertmanager_config, env_secret_files, write_env_secrets,
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
    assert rules[0] == {"source_matchers": ['severity="critical"'], "target_matchers": ['severity="warning"'],
                        "equal": ["alertname", "model", "version", "feature"]}
    exporter = [r for r in rules if "ModelmonExporterDown" in r["source_matchers"][0]]
    assert exporter and exporter[0]["target_matchers"] == ['family=~"traffic|labels"']
    assert len(rules) == 2  # no rule that can never match (nothing has both a warning and an info form)


@contextlib.contextmanager
def running_alertmanager(binary: str, config_file: Path, tmp_path: Path):
    """A real Alertmanager on 127.0.0.1 with `config_file`; yields its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"--config.file={config_file}", f"--storage.path={tmp_path / 'am-data'}",
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
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _alert(name: str, severity: str, family: str, **labels: str) -> dict:
    return {"labels": {"alertname": name, "severity": severity, "family": family, **labels},
            "annotations": {"summary": name}}


def test_inhibitions_in_a_running_alertmanager(alertmanager_bin, routed_file, tmp_path):
    """Post alerts to a real Alertmanager and read back which ones it inhibits."""
    with running_alertmanager(alertmanager_bin, routed_file, tmp_path) as base:
        posted = [
            _alert("ModelmonAccuracyLow", "critical", "quality", model="credit", version="v3", team="risk"),
            _alert("ModelmonAccuracyLow", "warning", "quality", model="credit", version="v3", team="risk"),
            _alert("ModelmonAccuracyLow", "warning", "quality", model="credit", version="v4", team="risk"),
            _alert("ModelmonF1Low", "warning", "quality", model="credit", version="v3", team="risk"),
            _alert("ModelmonMultipleVersionsServing", "info", "versions", model="credit", team="risk"),
            _alert("ModelmonMaeHigh", "warning", "quality", model="eta", team="logistics"),
            _alert("ModelmonFeaturePsiHigh", "critical", "drift", model="credit", feature="income", team="risk"),
            _alert("ModelmonFeaturePsiHigh", "warning", "drift", model="credit", feature="age", team="risk"),
            _alert("ModelmonExporterDown", "critical", "exporter", job="modelmon", instance="shard1:9188"),
            _alert("ModelmonNoPredictions", "critical", "traffic", model="eta", team="logistics", job="modelmon",
                   instance="shard1:9188"),
            _alert("ModelmonNoPredictions", "critical", "traffic", model="credit", team="risk", job="modelmon",
                   instance="shard2:9188"),  # another shard: not explained by shard1's death
            _alert("ModelmonLabelsNotArriving", "warning", "labels", model="credit", team="risk"),
        ]
        assert requests.post(f"{base}/api/v2/alerts", json=posted, timeout=5).status_code == 200
        got = requests.get(f"{base}/api/v2/alerts", timeout=5).json()
        inhibited = {(a["labels"]["alertname"], a["labels"]["severity"], a["labels"].get("version"),
                      a["labels"].get("instance")) for a in got if a["status"]["inhibitedBy"]}
        assert len(got) == len(posted)
        assert inhibited == {
            ("ModelmonAccuracyLow", "warning", "v3", None),  # superseded by the critical of the same alert and version
            ("ModelmonNoPredictions", "critical", None, "shard1:9188"),  # caused by that dead exporter
        }  # not: F1Low (another metric), AccuracyLow v4 (another version), PSI of another feature, shard2


def test_warning_then_critical_of_one_incident_is_one_group(alertmanager_bin, tmp_path):
    """The committed demo config sends pages and tickets to the same inbox: the warning and the
    critical of one alert of one model version land in one group (one notification thread)."""
    with running_alertmanager(alertmanager_bin, COMMITTED, tmp_path) as base:
        labels = dict(model="credit", version="v3", team="risk")
        posted = [_alert("ModelmonErrorBudgetBurn", "warning", "availability", window="1d", **labels)]
        assert requests.post(f"{base}/api/v2/alerts", json=posted, timeout=5).status_code == 200
        posted = [_alert("ModelmonErrorBudgetBurn", "critical", "availability", window="1h", **labels),
                  _alert("ModelmonErrorBudgetBurn", "critical", "availability", window="1h", model="credit",
                         version="v4", team="risk")]
        assert requests.post(f"{base}/api/v2/alerts", json=posted, timeout=5).status_code == 200
        groups = [g for g in requests.get(f"{base}/api/v2/alerts/groups", timeout=5).json()
                  if any(a["labels"]["alertname"] == "ModelmonErrorBudgetBurn" for a in g["alerts"])]
        by_version = {g["labels"].get("version"): sorted(a["labels"]["severity"] for a in g["alerts"])
                      for g in groups}
        assert by_version == {"v3": ["critical", "warning"], "v4": ["critical"]}, groups


def test_grouping_and_timing_come_from_the_config():
    route = alertmanager_config(routed_config())["route"]
    assert route["receiver"] == "inbox"
    assert route["group_by"] == ["alertname", "model", "version"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == ("10s", "1m", "4h")
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


# --------------------------------------------------------------------------- webhook URLs as secrets

HOOK_URL = "https://hooks.example/services/T000/B000/webhook-secret-111"


def url_secret_config():
    base = {"models": [{"name": "m", "task": "binary", "features": {"numeric": ["x"]}, "reference": {"first": 100}}]}
    return parse_config({**base, "alerting": {"default_receiver": "from-env", "receivers": [
        {"name": "from-env", "webhook": {"url_env": "HOOK_URL", "send_resolved": True,
                                         "bearer_token_env": "INBOX_TOKEN"}},
        {"name": "from-file", "webhook": {"url_file": "/run/secrets/hook_url", "max_alerts": 5}},
        {"name": "plain", "webhook": {"url": "http://receiver:9095/webhook"}},
    ]}})


def test_webhook_url_file_and_env_render_as_url_file():
    doc = alertmanager_config(url_secret_config())
    hooks = {r["name"]: r["webhook_configs"][0] for r in doc["receivers"] if "webhook_configs" in r}
    assert hooks["from-env"] == {"url_file": "/etc/alertmanager/secrets/HOOK_URL", "send_resolved": True,
                                 "http_config": {"authorization": {
                                     "type": "Bearer", "credentials_file": "/etc/alertmanager/secrets/INBOX_TOKEN"}}}
    assert hooks["from-file"] == {"url_file": "/run/secrets/hook_url", "max_alerts": 5}
    assert hooks["plain"] == {"url": "http://receiver:9095/webhook"}
    assert env_secret_files(url_secret_config()) == {"HOOK_URL": "/etc/alertmanager/secrets/HOOK_URL",
                                                     "INBOX_TOKEN": "/etc/alertmanager/secrets/INBOX_TOKEN"}


def test_url_env_is_written_like_every_env_secret(tmp_path):
    written = write_env_secrets(url_secret_config(), tmp_path / "secrets",
                                {"HOOK_URL": HOOK_URL, "INBOX_TOKEN": "t"})
    assert [p.name for p in written] == ["HOOK_URL", "INBOX_TOKEN"]
    assert (tmp_path / "secrets" / "HOOK_URL").read_text() == HOOK_URL
    assert stat.S_IMODE((tmp_path / "secrets").stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in written)


def test_an_unset_url_env_names_its_key_path(tmp_path):
    with pytest.raises(ConfigError) as e:
        write_env_secrets(url_secret_config(), tmp_path, {"INBOX_TOKEN": "t"})
    assert e.value.errors == ["alerting.receivers[0].webhook.url_env: environment variable HOOK_URL is not set "
                              "(the receiver reads its secret from it)"]
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def amtool_version(amtool: str) -> tuple[int, int, int]:
    from modelmon.stack.workdir import alertmanager_version

    version = alertmanager_version(amtool)
    assert version is not None, "amtool --version printed no version"
    return version


def test_url_file_config_passes_amtool_or_is_inlined_for_an_old_alertmanager(amtool, tmp_path):
    """Alertmanager reads webhook url_file since 0.26. With an older amtool (Debian's 0.25) the
    generated file is refused for exactly that field, and the inlined copy `modelmon stack up`
    runs such an Alertmanager on passes."""
    from modelmon.alerting.alertmanager import URL_FILE_SINCE, inline_url_files, write_secret_file

    (tmp_path / "secrets").mkdir()
    doc = alertmanager_config(url_secret_config(), AlertmanagerOptions(secrets_dir=str(tmp_path / "secrets")))
    doc["receivers"][2]["webhook_configs"][0]["url_file"] = str(tmp_path / "hook_url")  # instead of /run/secrets
    write_env_secrets(url_secret_config(), tmp_path / "secrets", {"HOOK_URL": HOOK_URL, "INBOX_TOKEN": "t"})
    write_secret_file(tmp_path / "hook_url", HOOK_URL + "\n")
    generated = tmp_path / "alertmanager.yml"
    generated.write_text(dump_yaml(doc))

    proc = amtool_run(amtool, "check-config", str(generated))
    if amtool_version(amtool) >= URL_FILE_SINCE:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    else:
        assert proc.returncode != 0 and "field url_file not found" in proc.stdout + proc.stderr

    assert sorted(inline_url_files(doc)) == ["from-env", "from-file"]
    inlined = write_secret_file(tmp_path / "inlined.yml", dump_yaml(doc))
    check_config(amtool, inlined)
    receivers = yaml.safe_load(inlined.read_text())["receivers"]
    hooks = [r["webhook_configs"][0] for r in receivers if "webhook_configs" in r]
    assert [h["url"] for h in hooks] == [HOOK_URL, HOOK_URL, "http://receiver:9095/webhook"]
    assert list(hooks[0]) == ["url", "send_resolved", "http_config"]  # url where url_file was


def test_inlining_an_unreadable_or_empty_url_file_is_a_clear_error(tmp_path):
    from modelmon.alerting.alertmanager import inline_url_files

    doc = {"receivers": [{"name": "hook", "webhook_configs": [{"url_file": str(tmp_path / "missing")}]}]}
    with pytest.raises(ConfigError, match=r"receiver 'hook': webhook url_file .*missing: cannot read: No such file"):
        inline_url_files(doc)
    (tmp_path / "missing").write_text("\n")
    with pytest.raises(ConfigError, match="the file is empty"):
        inline_url_files(doc)


# --------------------------------------------------------------------------- secret files are 0600


def test_secret_files_are_created_0600_whatever_the_umask(tmp_path):
    from modelmon.alerting.alertmanager import write_secret_file

    old = os.umask(0)
    try:
        path = write_secret_file(tmp_path / "token", "s3cret")
    finally:
        os.umask(old)
    assert path.read_text() == "s3cret" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["token"]  # no temporary file left behind


def test_an_existing_world_readable_secret_file_is_tightened(tmp_path):
    config = routed_config()
    stale = tmp_path / "SLACK_URL"
    stale.write_text("old value")
    stale.chmod(0o644)
    write_env_secrets(config, tmp_path, SECRET_VALUES)
    assert stale.read_text() == SECRET_VALUES["SLACK_URL"]
    assert stat.S_IMODE(stale.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(SECRET_VALUES)


def test_a_failed_secret_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    from modelmon.alerting import alertmanager

    target = tmp_path / "token"
    target.write_text("old")

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(alertmanager.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left"):
        alertmanager.write_secret_file(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["token"]
