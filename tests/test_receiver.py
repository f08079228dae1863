"""`modelmon receiver`: payload validation, dedup and history in SQLite, the inbox page and API,
shared-secret auth; through Flask's test client and once through a real HTTP server."""
from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from conftest import ROOT, free_port
from modelmon.alerting.receiver import create_app
from modelmon.alerting.receiver_cli import TOKEN_ENV, token_from
from modelmon.alerting.store import AlertStore

STARTS = "2026-11-23T10:00:00.123456789Z"


def notification(status: str = "firing", *, starts_at: str = STARTS, fingerprint: str = "aa11",
                 alertname: str = "ModelmonAccuracyLow", **labels: str) -> dict:
    """An Alertmanager webhook payload (version 4) with one alert."""
    alert_labels = {"alertname": alertname, "severity": "critical", "team": "risk", "model": "credit",
                    "version": "v3", "family": "quality", **labels}
    return {
        "version": "4", "groupKey": '{}/{team="risk"}:{alertname="ModelmonAccuracyLow", model="credit"}',
        "truncatedAlerts": 0, "status": status, "receiver": "modelmon-inbox",
        "groupLabels": {"alertname": alertname, "model": "credit"}, "commonLabels": alert_labels,
        "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
        "alerts": [{
            "status": status, "labels": alert_labels,
            "annotations": {"summary": "Model quality (Accuracy) is below its threshold",
                            "description": "Accuracy of model credit version v3 is 0.7",
                            "runbook_url": "https://example.com/RUNBOOK.md#modelmonaccuracylow",
                            "dashboard_url": "http://localhost:3000/d/modelmon-model?var-model=credit"},
            "startsAt": starts_at,
            "endsAt": "2026-11-23T10:30:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=x", "fingerprint": fingerprint,
        }],
    }


@pytest.fixture
def store(tmp_path) -> AlertStore:
    return AlertStore(tmp_path / "alerts.db")


@pytest.fixture
def client(store):
    return create_app(store).test_client()


def post(client, payload, **headers):
    body = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    return client.post("/webhook", data=body, content_type="application/json", headers=headers)


def test_firing_then_resolved_keeps_one_row_and_its_history(client, store):
    assert post(client, notification()).status_code == 200
    assert post(client, notification()).status_code == 200  # repeat_interval: same news again
    assert post(client, notification("resolved")).status_code == 200
    rows = client.get("/api/alerts").get_json()["alerts"]
    assert len(rows) == 1
    row = rows[0]
    assert (row["fingerprint"], row["status"], row["notifications"]) == ("aa11", "resolved", 3)
    assert row["labels"]["model"] == "credit" and row["annotations"]["description"].endswith("0.7")
    history = client.get("/api/alerts/aa11").get_json()["events"]
    assert [e["status"] for e in history] == ["firing", "resolved"]


def test_a_new_episode_after_resolution_is_a_new_firing_event(client):
    post(client, notification())
    post(client, notification("resolved"))
    post(client, notification(starts_at="2026-11-23T11:00:00Z"))
    history = client.get("/api/alerts/aa11").get_json()["events"]
    assert [(e["status"], e["starts_at"]) for e in history] == [
        ("firing", STARTS), ("resolved", STARTS), ("firing", "2026-11-23T11:00:00Z")]


def test_a_late_retry_of_a_resolved_episode_does_not_reopen_it(client):
    post(client, notification())
    post(client, notification("resolved"))
    post(client, notification())  # Alertmanager retried the old firing notification
    row = client.get("/api/alerts/aa11").get_json()
    assert row["status"] == "resolved" and [e["status"] for e in row["events"]] == ["firing", "resolved"]


def test_filters(client):
    post(client, notification(fingerprint="f1"))
    post(client, notification(fingerprint="r1", alertname="ModelmonMaeHigh", model="eta"))
    post(client, notification("resolved", fingerprint="r1", alertname="ModelmonMaeHigh", model="eta"))
    firing = client.get("/api/alerts?status=firing").get_json()["alerts"]
    assert [a["fingerprint"] for a in firing] == ["f1"]
    assert [a["fingerprint"] for a in client.get("/api/alerts?status=resolved").get_json()["alerts"]] == ["r1"]
    assert [a["fingerprint"] for a in client.get("/api/alerts?model=eta").get_json()["alerts"]] == ["r1"]
    assert client.get("/api/alerts?status=pending").status_code == 400
    assert client.get("/api/alerts/nope").status_code == 404


def _broken(mutate) -> dict:
    payload = copy.deepcopy(notification())
    mutate(payload)
    return payload


@pytest.mark.parametrize("body, message", [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[1, 2]", "expected a JSON object"),
    (_broken(lambda p: p.update(version="3")), 'version: expected "4"'),
    (_broken(lambda p: p.pop("version")), 'version: expected "4"'),
    (_broken(lambda p: p.update(alerts=[])), "alerts: expected a non-empty list"),
    (_broken(lambda p: p.update(status="pending")), "status: expected one of firing, resolved"),
    (_broken(lambda p: p["alerts"][0].update(labels={})), "alerts[0].labels: required"),
    (_broken(lambda p: p["alerts"][0]["labels"].update(model=3)), "alerts[0].labels.model: expected a string"),
    (_broken(lambda p: p["alerts"][0].update(startsAt="yesterday")), "alerts[0].startsAt: expected an RFC 3339"),
    (_broken(lambda p: p["alerts"].append("x")), "alerts[1]: expected an object"),
    (_broken(lambda p: p.update(receiver=None)), "receiver: expected a string"),
])
def test_bad_payloads_are_rejected_with_a_message(client, body, message):
    response = post(client, body)
    assert response.status_code == 400
    assert message in response.get_json()["error"]
    assert client.get("/api/alerts").get_json()["alerts"] == []


def test_a_payload_of_several_alerts_is_stored_all_or_nothing(client):
    payload = notification()
    second = copy.deepcopy(payload["alerts"][0])
    second["fingerprint"], second["labels"]["alertname"] = "bb22", "ModelmonF1Low"
    payload["alerts"].append(second)
    assert post(client, payload).get_json() == {"stored": 2, "events": 2}
    payload["alerts"][1]["status"] = "bogus"
    assert post(client, payload).status_code == 400
    assert len(client.get("/api/alerts").get_json()["alerts"]) == 2


def test_fingerprint_is_derived_when_missing(client):
    payload = notification()
    del payload["alerts"][0]["fingerprint"]
    post(client, payload)
    post(client, payload)
    rows = client.get("/api/alerts").get_json()["alerts"]
    assert len(rows) == 1 and len(rows[0]["fingerprint"]) == 16


def test_storage_failure_answers_500_so_alertmanager_retries(store, tmp_path):
    client = create_app(store).test_client()
    store.path = tmp_path / "missing-dir" / "sub" / "x.db"  # cannot be opened: its folder does not exist
    assert post(client, notification()).status_code == 500


def test_accepted_alerts_survive_a_restart(tmp_path):
    db = tmp_path / "alerts.db"
    assert post(create_app(AlertStore(db)).test_client(), notification()).status_code == 200
    again = create_app(AlertStore(db)).test_client()
    assert [a["fingerprint"] for a in again.get("/api/alerts").get_json()["alerts"]] == ["aa11"]


def test_token_is_required_when_set(store):
    client = create_app(store, token="s3cret").test_client()
    assert post(client, notification()).status_code == 401
    assert post(client, notification(), Authorization="Bearer wrong").status_code == 401
    assert post(client, notification(), Authorization="Bearer s3cret").status_code == 200
    assert client.get("/healthz").status_code == 200


def test_too_large_bodies_are_refused(client):
    assert post(client, b"x" * (5 << 20)).status_code == 413


def test_inbox_page_escapes_everything(client):
    payload = notification(model="<script>alert(1)</script>")
    payload["alerts"][0]["annotations"]["runbook_url"] = "javascript:alert(2)"
    post(client, payload)
    page = client.get("/").get_data(as_text=True)
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "javascript:" not in page
    assert "Model quality (Accuracy) is below its threshold" in page
    assert 'href="http://localhost:3000/d/modelmon-model?var-model=credit"' in page
    assert "1 firing" in page


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_data(as_text=True) == "ok\n"


def test_token_sources(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    assert token_from(None, secret, {TOKEN_ENV: "from-env"}) == "from-file"
    assert token_from("from-flag", None, {TOKEN_ENV: "from-env"}) == "from-flag"
    assert token_from(None, None, {TOKEN_ENV: "from-env"}) == "from-env"
    assert token_from(None, None, {}) is None
    with pytest.raises(SystemExit, match="cannot read"):
        token_from(None, tmp_path / "absent", {})


def test_through_a_real_http_server(tmp_path):
    """The CLI entry point serving on a free port: POST as Alertmanager does, read back, stop on SIGTERM."""
    port = free_port()
    script = ("import argparse, sys\n"
              "from modelmon.alerting import receiver_cli as cli\n"
              "p = argparse.ArgumentParser(); cli.add_arguments(p)\n"
              "sys.exit(cli.run(p.parse_args(sys.argv[1:])))\n")
    env = {**os.environ, TOKEN_ENV: "t0ken"}
    proc = subprocess.Popen([sys.executable, "-c", script, "--port", str(port), "--db", str(tmp_path / "a.db")],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "receiver did not come up"
            time.sleep(0.05)
        assert requests.post(f"{base}/webhook", json=notification(), timeout=5).status_code == 401
        ok = requests.post(f"{base}/webhook", json=notification(), timeout=5,
                           headers={"Authorization": "Bearer t0ken"})
        assert ok.status_code == 200, ok.text
        alerts = requests.get(f"{base}/api/alerts", params={"status": "firing"}, timeout=5).json()["alerts"]
        assert [a["alertname"] for a in alerts] == ["ModelmonAccuracyLow"]
        assert "ModelmonAccuracyLow" in requests.get(base + "/", timeout=5).text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
