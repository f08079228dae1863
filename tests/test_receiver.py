"""`modelmon receiver`: payload validation, dedup and history in SQLite, the inbox page and API,
shared-secret auth; through Flask's test client and once through a real HTTP server."""
from __future__ import annotations

import copy
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import requests

from conftest import ROOT, free_port
from modelmon.receiver.payload import parse_notification
from modelmon.receiver.app import create_app
from modelmon.receiver.cli import TOKEN_ENV, token_from
from modelmon.receiver.store import AlertStore, StoreError

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
              "from modelmon.receiver import cli\n"
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


# ---------------------------------------------------------------- paging, totals, auth scheme, store path

SEVERITY_RANK = {"critical": 0, "warning": 1}


def batch(fingerprints, status: str = "firing", severity=lambda i: ("critical", "warning", "info")[i % 3],
          model=lambda i: ("credit", "eta")[i % 2]) -> dict:
    """One Alertmanager notification carrying many alerts (as with max_alerts), one per fingerprint."""
    payload = notification(status)
    template = payload["alerts"][0]
    payload["alerts"] = []
    for i, fp in enumerate(fingerprints):
        alert = copy.deepcopy(template)
        alert["fingerprint"] = fp
        alert["labels"].update(alertname=f"A{fp}", severity=severity(i), model=model(i))
        payload["alerts"].append(alert)
    return payload


def fill(store, firing: int = 960, resolved: int = 40, per_notification: int = 100) -> None:
    """`firing` + `resolved` alerts over several notifications with distinct receive times (and ties within one)."""
    fps = [f"fp{i:04d}" for i in range(firing + resolved)]
    for n, start in enumerate(range(0, len(fps), per_notification)):
        chunk = fps[start:start + per_notification]
        for status in ("firing", "resolved"):
            part = [fp for fp in chunk if (int(fp[2:]) < firing) == (status == "firing")]
            if part:
                store.record(parse_notification(json.dumps(batch(part, status)).encode()), 1000.0 + n)


def inbox_order(store) -> list[str]:
    """The documented order, computed here from the rows themselves."""
    rows = [store.alert(fp) for fp in store_fingerprints(store)]
    return [r["fingerprint"] for r in sorted(rows, key=lambda r: (
        r["status"] != "firing", SEVERITY_RANK.get(r["severity"], 2), -r["last_received_at"], r["fingerprint"]))]


def store_fingerprints(store) -> list[str]:
    with store._connect() as db:
        return [r[0] for r in db.execute("SELECT fingerprint FROM alerts")]


def pages(client, path: str = "/api/alerts", **params) -> list[dict]:
    """Every page from the first to the one whose `next` is null."""
    out = []
    while True:
        r = client.get(path, query_string=params)
        assert r.status_code == 200, r.get_data(as_text=True)
        out.append(r.get_json())
        if out[-1]["next"] is None:
            return out
        params["before"] = out[-1]["next"]


def test_paging_returns_every_alert_once_in_order_with_true_totals(client, store):
    fill(store)
    got = pages(client, limit=150)
    assert [len(p["alerts"]) for p in got] == [150] * 6 + [100]
    fingerprints = [a["fingerprint"] for p in got for a in p["alerts"]]
    assert fingerprints == inbox_order(store) and len(set(fingerprints)) == 1000
    assert all(p["total"] == 1000 and p["counts"] == {"firing": 960, "resolved": 40} for p in got)
    statuses = [a["status"] for p in got for a in p["alerts"]]
    assert statuses == ["firing"] * 960 + ["resolved"] * 40


def test_default_and_maximum_page_size(client, store):
    fill(store, firing=1100, resolved=0)
    first = client.get("/api/alerts").get_json()
    assert len(first["alerts"]) == 100 and first["next"] and first["total"] == 1100
    assert len(client.get("/api/alerts?limit=1000").get_json()["alerts"]) == 1000


def test_filters_page_with_their_own_totals(client, store):
    fill(store)
    resolved = pages(client, status="resolved", limit=7)
    assert [a["fingerprint"] for p in resolved for a in p["alerts"]] == [f for f in inbox_order(store)
                                                                        if int(f[2:]) >= 960]
    assert resolved[0]["total"] == 40 and resolved[0]["counts"] == {"firing": 0, "resolved": 40}
    eta = pages(client, model="eta", status="firing", limit=64)
    got = [a["fingerprint"] for p in eta for a in p["alerts"]]
    assert got == [f for f in inbox_order(store) if int(f[2:]) % 2 == 1 and int(f[2:]) < 960]
    assert eta[0]["counts"] == {"firing": 480, "resolved": 0}
    assert client.get("/api/alerts?model=eta").get_json()["counts"] == {"firing": 480, "resolved": 20}
    # A cursor taken in the firing part, reused with status=resolved: that part starts from its top.
    cursor = client.get("/api/alerts?limit=5").get_json()["next"]
    assert len(client.get(f"/api/alerts?status=resolved&limit=1000&before={cursor}").get_json()["alerts"]) == 40
    # A cursor from a filtered page works unfiltered: the rest of the firing alerts, then the resolved.
    firing_cursor = pages(client, status="firing", limit=500)[0]["next"]
    tail = client.get("/api/alerts", query_string={"before": firing_cursor, "limit": 1000}).get_json()
    assert len(tail["alerts"]) == 460 + 40 and tail["alerts"][-1]["status"] == "resolved"
    # A cursor in the resolved part, reused with status=firing: nothing is after it.
    resolved_cursor = client.get("/api/alerts", query_string={"status": "resolved", "limit": 3}).get_json()["next"]
    assert client.get("/api/alerts", query_string={"status": "firing", "before": resolved_cursor}).get_json()[
        "alerts"] == []


def test_alerts_arriving_between_pages_neither_repeat_nor_hide_the_others(client, store):
    fill(store, firing=250, resolved=50)
    before = set(store_fingerprints(store))
    seen, params, n = [], {"limit": 40}, 0
    while True:
        page = client.get("/api/alerts", query_string=params).get_json()
        seen += [a["fingerprint"] for a in page["alerts"]]
        if page["next"] is None:
            break
        params["before"] = page["next"]
        # New alerts of every kind land before and after the cursor: critical firing (the top),
        # info firing, resolved (the bottom).
        new = [f"new{n}-{k}" for k in range(6)]
        n += 1
        store.record(parse_notification(json.dumps(batch(new[:3])).encode()), 5000.0 + n)
        store.record(parse_notification(json.dumps(batch(new[3:], "resolved")).encode()), 5000.0 + n)
    assert len(seen) == len(set(seen)), "an alert came back twice"
    assert before <= set(seen), f"missed {sorted(before - set(seen))[:5]}"
    assert page["total"] == 300 + 6 * n and page["counts"]["resolved"] == 50 + 3 * n


@pytest.mark.parametrize("query, message", [
    ("limit=0", "limit: expected an integer from 1 to 1000, got '0'"),
    ("limit=1001", "limit: expected an integer from 1 to 1000, got '1001'"),
    ("limit=-5", "limit: expected an integer"),
    ("limit=ten", "limit: expected an integer"),
    ("limit=1.5", "limit: expected an integer"),
    ("limit=", "limit: expected an integer"),
    ("before=garbage!", "before: malformed cursor"),
    ("before=", "before: malformed cursor"),
    ("before=WzEsMiwzXQ", "before: malformed cursor"),  # base64 of [1,2,3]
    ("before=WzAsNywxLjAsIngiXQ", "before: malformed cursor"),  # [0,7,1.0,"x"]: no such severity rank
    ("before=WzAsMCwiMSIsIngiXQ", "before: malformed cursor"),  # [0,0,"1","x"]
    ("before=%FF%FE", "before: malformed cursor"),
])
def test_bad_limit_or_cursor_is_a_400_with_a_message(client, store, query, message):
    fill(store, firing=3, resolved=0)
    r = client.get(f"/api/alerts?{query}")
    assert r.status_code == 400 and message in r.get_json()["error"]
    page = client.get(f"/?{query}")
    assert page.status_code == 400 and message.split(", got")[0] in page.get_data(as_text=True)


def test_the_bad_request_page_escapes_the_value(client):
    page = client.get("/?limit=<script>x</script>").get_data(as_text=True)
    assert "<script>x" not in page and "&lt;script&gt;" in page


def test_inbox_page_shows_true_counts_and_pages_with_the_cursor(client, store):
    fill(store)
    html = client.get("/").get_data(as_text=True)
    assert "<title>modelmon alerts (960 firing)</title>" in html
    assert "960 firing, 40 resolved" in html and "showing 1–200 of 1000" in html
    shown = []
    path = "/"
    for expected in ("1–200", "201–400", "401–600", "601–800", "801–1000"):
        html = client.get(path).get_data(as_text=True)
        assert f"showing {expected} of 1000" in html and "960 firing, 40 resolved" in html
        assert html.count('<tr class="') == 200
        shown += re.findall(r"<td>A(fp\d{4})<br>", html)
        links = re.findall(r'<a href="\?(before=[^"]+)">next page</a>', html)
        if expected == "801–1000":
            assert links == []
        else:
            path = "/?" + links[0].replace("&amp;", "&")
    assert shown == inbox_order(store)
    assert "<script" not in html


def test_inbox_page_links_keep_filters(client, store):
    fill(store)
    html = client.get("/?status=resolved&limit=15").get_data(as_text=True)
    assert "showing 1–15 of 40" in html and "0 firing, 40 resolved" in html
    link = re.search(r'<a href="\?([^"]+)">next page</a>', html).group(1).replace("&amp;", "&")
    assert link.startswith("status=resolved&limit=15&before=")
    assert "showing 16–30 of 40" in client.get(f"/?{link}").get_data(as_text=True)


def test_bearer_scheme_is_case_insensitive(store):
    client = create_app(store, token="s3cret").test_client()
    for header in ("bearer s3cret", "BEARER s3cret", "Bearer s3cret", "bEaReR  s3cret "):
        assert post(client, notification(), Authorization=header).status_code == 200, header
    for header in ("bearer wrong", "bearer", "bearers3cret", "Basic s3cret", "s3cret", "bearer s3cret2", ""):
        r = post(client, notification(), Authorization=header)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer"), header


def test_store_refuses_a_directory_or_a_missing_folder_and_creates_nothing(tmp_path):
    with pytest.raises(StoreError, match=f"alert database {tmp_path}: is a directory"):
        AlertStore(tmp_path)
    missing = tmp_path / "typo" / "sub" / "alerts.db"
    with pytest.raises(StoreError, match=r"its directory .*typo/sub does not exist"):
        AlertStore(missing)
    assert not (tmp_path / "typo").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is not a directory"):
        AlertStore(tmp_path / "file" / "alerts.db")
    (tmp_path / "junk.db").write_bytes(b"not a database, just some bytes" * 100)
    with pytest.raises(StoreError, match="junk.db: cannot be opened as SQLite"):
        AlertStore(tmp_path / "junk.db")
    assert isinstance(StoreError("x"), ValueError)


OLD_SCHEMA = """
CREATE TABLE alerts (fingerprint TEXT PRIMARY KEY, alertname TEXT NOT NULL, status TEXT NOT NULL,
    severity TEXT NOT NULL, model TEXT NOT NULL, labels TEXT NOT NULL, annotations TEXT NOT NULL,
    starts_at TEXT NOT NULL, ends_at TEXT NOT NULL, generator_url TEXT NOT NULL, receiver TEXT NOT NULL,
    first_received_at REAL NOT NULL, last_received_at REAL NOT NULL, notifications INTEGER NOT NULL);
INSERT INTO alerts VALUES ('old1', 'OldAlert', 'firing', 'warning', 'credit', '{"alertname": "OldAlert"}', '{}',
    '2026-01-01T00:00:00Z', '', '', 'modelmon-inbox', 1.0, 1.0, 1);
INSERT INTO alerts VALUES ('old2', 'OldAlert', 'resolved', 'critical', 'credit', '{"alertname": "OldAlert"}', '{}',
    '2026-01-01T00:00:00Z', '', '', 'modelmon-inbox', 1.0, 2.0, 1);
"""


def test_a_database_of_the_previous_version_is_upgraded_in_place(tmp_path):
    db = tmp_path / "alerts.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(OLD_SCHEMA)
    store = AlertStore(db)
    client = create_app(store).test_client()
    assert post(client, notification()).status_code == 200
    got = client.get("/api/alerts?limit=2").get_json()
    assert [a["fingerprint"] for a in got["alerts"]] == ["aa11", "old1"] and got["counts"] == {"firing": 2,
                                                                                              "resolved": 1}
    assert [a["fingerprint"] for a in client.get(f"/api/alerts?before={got['next']}").get_json()["alerts"]] == ["old2"]
    assert set(AlertStore(db).alert("old1")) >= {"labels", "annotations", "events"}  # and opens again


def test_the_paging_query_seeks_an_index(store):
    """The keyset query is an index range, not a scan and no sort (the reason for the generated key columns)."""
    fill(store, firing=50, resolved=10)
    for status, model in ((None, None), ("firing", None), ("resolved", None), (None, "eta"), ("firing", "eta")):
        first, cursor = store.page(status=status, model=model, limit=5), store.page(limit=5).next
        for before in (None, first.next, cursor):
            plan = store.page_plan(status=status, model=model, before=before)
            assert plan.startswith("SEARCH alerts USING INDEX alerts_") or (
                plan.startswith("SCAN alerts USING INDEX alerts_in_order") and (status, model, before) == (
                    None, None, None)), (status, model, plan)
            assert "TEMP B-TREE" not in plan, plan
