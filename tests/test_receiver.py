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
    assert 'href="http://localhost:3000/d/modelmon-model?var-model=credit&amp;from=' in page
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


def incident_order(store) -> list[str]:
    """The alertnames of the incidents in the documented order, computed here from the rows (one alert each)."""
    with store._connect() as db:
        rows = db.execute("SELECT id, alertname, status, severity, last_received_at FROM incidents").fetchall()
    return [r["alertname"][1:] for r in sorted(rows, key=lambda r: (
        r["status"] != "firing", SEVERITY_RANK.get(r["severity"], 2), -r["last_received_at"], r["id"]))]


def test_inbox_page_shows_true_counts_and_pages_with_the_cursor(client, store):
    """1000 alerts of distinct names: 1000 incidents of one alert, paged 200 a page in order."""
    fill(store)
    html = client.get("/").get_data(as_text=True)
    assert "<title>modelmon alerts (960 firing)</title>" in html
    assert "960 firing, 40 resolved" in html and "showing 1–200 of 1000" in html
    shown = []
    path = "/"
    for expected in ("1–200", "201–400", "401–600", "601–800", "801–1000"):
        html = client.get(path).get_data(as_text=True)
        assert f"showing {expected} of 1000" in html and "960 firing, 40 resolved" in html
        assert html.count('<tr class="incident ') == 200
        shown += re.findall(r'<td class="alertname">A(fp\d{4})<br>', html)
        links = re.findall(r'<a href="\?(before=[^"]+)">next page</a>', html)
        if expected == "801–1000":
            assert links == []
        else:
            path = "/?" + links[0].replace("&amp;", "&")
    assert shown == incident_order(store) and sorted(shown) == sorted(inbox_order(store))
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


# ---------------------------------------------------------------- incidents, filters and links (issue 9)

from modelmon.receiver.app import span  # noqa: E402
from modelmon.receiver.cli import add_arguments  # noqa: E402
from modelmon.receiver.incidents import incident_key, severity_history  # noqa: E402
from modelmon.receiver.links import dashboard_url, silence_url  # noqa: E402
from modelmon.receiver.payload import epoch  # noqa: E402
from modelmon.receiver.runbook import Runbook, render, slug  # noqa: E402

NOW = epoch("2026-11-23T10:42:00Z")
BURN = "ModelmonErrorBudgetBurn"


def burn(status: str, fingerprint: str, severity: str, window: str, starts_at: str, ends_at: str = "",
         model: str = "credit", team: str = "risk", external_url: str = "http://127.0.0.1:9093",
         alertname: str = BURN, **labels: str) -> dict:
    """A notification of one burn-rate alert, as Alertmanager sends it."""
    payload = notification(status, starts_at=starts_at, fingerprint=fingerprint, alertname=alertname,
                           severity=severity, window=window, model=model, team=team, family="availability",
                           **labels)
    alert = payload["alerts"][0]
    del alert["labels"]["version"]  # burn rates are summed over versions
    if ends_at:
        alert["endsAt"] = ends_at
    alert["annotations"]["dashboard_url"] = f"http://localhost:3000/d/modelmon-service?var-model={model}"
    alert["annotations"]["runbook_url"] = "https://example.com/RUNBOOK.md#modelmonerrorbudgetburn"
    payload["externalURL"] = external_url
    return payload


@pytest.fixture
def clocked(store):
    return create_app(store, clock=lambda: NOW).test_client()


def incidents(client, **params) -> list[dict]:
    r = client.get("/api/incidents", query_string=params)
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()["incidents"]


def test_warning_then_critical_of_one_alert_is_one_incident(clocked):
    post(clocked, burn("firing", "w1d", "warning", "1d", "2026-11-23T10:20:00Z"))
    post(clocked, burn("firing", "c1h", "critical", "1h", "2026-11-23T10:30:00Z"))
    post(clocked, burn("firing", "other", "warning", "1d", "2026-11-23T10:25:00Z", model="eta", team="eta"))
    got = incidents(clocked)
    assert len(got) == 2 and len(clocked.get("/api/alerts").get_json()["alerts"]) == 3
    credit = next(i for i in got if i["model"] == "credit")
    assert credit["severity"] == "critical" and credit["severity_history"] == ["warning", "critical"]
    assert credit["labels"] == {"alertname": BURN, "family": "availability", "model": "credit", "team": "risk"}
    assert [(a["fingerprint"], a["window"]) for a in credit["alerts"]] == [("w1d", "1d"), ("c1h", "1h")]
    assert credit["windows"] == ["1d", "1h"] and credit["starts_at"] == "2026-11-23T10:20:00Z"
    html = clocked.get("/").get_data(as_text=True)
    assert html.count('<tr class="incident ') == 2 and "warning → critical" in html
    # The per-fingerprint history stays where it was.
    assert [e["status"] for e in clocked.get("/api/alerts/c1h").get_json()["events"]] == ["firing"]


def test_incident_severity_history_follows_the_highest_firing_severity(clocked):
    post(clocked, burn("firing", "w", "warning", "1d", "2026-11-23T10:00:00Z"))
    post(clocked, burn("firing", "c", "critical", "1h", "2026-11-23T10:05:00Z"))
    post(clocked, burn("resolved", "c", "critical", "1h", "2026-11-23T10:05:00Z", "2026-11-23T10:20:00Z"))
    [i] = incidents(clocked)
    assert i["status"] == "firing" and i["severity_history"] == ["warning", "critical", "warning"]
    post(clocked, burn("resolved", "w", "warning", "1d", "2026-11-23T10:00:00Z", "2026-11-23T10:30:00Z"))
    [i] = incidents(clocked)
    assert (i["status"], i["severity"], i["ends_at"]) == ("resolved", "critical", "2026-11-23T10:30:00Z")
    assert severity_history([(0, None, "warning"), (5, None, "critical")]) == ["warning", "critical"]
    assert severity_history([(0, 10, "info")]) == ["info"]


def test_alerts_that_do_not_overlap_in_time_are_separate_incidents(clocked):
    post(clocked, burn("resolved", "w", "warning", "1d", "2026-11-23T08:00:00Z", "2026-11-23T08:30:00Z"))
    post(clocked, burn("firing", "c", "critical", "1h", "2026-11-23T10:00:00Z"))
    got = incidents(clocked)
    assert [(i["status"], i["severity_history"]) for i in got] == [("firing", ["critical"]),
                                                                   ("resolved", ["warning"])]
    # Touching counts as overlapping; an episode overlapping two incidents merges them.
    post(clocked, burn("resolved", "w6", "warning", "6h", "2026-11-23T08:30:00Z", "2026-11-23T10:00:00Z"))
    [merged] = incidents(clocked)
    assert [a["fingerprint"] for a in merged["alerts"]] == ["w", "w6", "c"]
    assert merged["severity_history"] == ["warning", "critical"] and merged["status"] == "firing"


def test_the_grouping_key_keeps_every_identifying_label(clocked):
    """version, instance, feature...: different values are different incidents; severity and window are not."""
    base = {"alertname": BURN, "model": "credit", "team": "risk", "version": "v3"}
    assert incident_key({**base, "severity": "warning", "window": "1d"}) == incident_key(
        {**base, "severity": "critical", "window": "1h", "long_window": "1h", "short_window": "5m"})
    for other in ({"version": "v4"}, {"instance": "exporter-2:9188"}, {"alertname": "ModelmonLatencyBurn"}):
        assert incident_key({**base, **other}) != incident_key(base)
    post(clocked, notification(fingerprint="v3", starts_at="2026-11-23T10:00:00Z"))
    post(clocked, notification(fingerprint="v4", starts_at="2026-11-23T10:00:00Z", version="v4"))
    assert sorted(i["version"] for i in incidents(clocked)) == ["v3", "v4"]


def test_a_new_episode_of_an_alert_closes_its_previous_one(clocked):
    """Alertmanager knows one episode per fingerprint: a new startsAt means the old one is over."""
    post(clocked, burn("firing", "c", "critical", "1h", "2026-11-23T08:00:00Z"))
    post(clocked, burn("firing", "c", "critical", "1h", "2026-11-23T10:00:00Z"))
    [i] = incidents(clocked)  # the new episode starts where the old one ended: one incident
    assert [(a["starts_at"], a["status"]) for a in i["alerts"]] == [
        ("2026-11-23T08:00:00Z", "resolved"), ("2026-11-23T10:00:00Z", "firing")]
    post(clocked, burn("resolved", "c", "critical", "1h", "2026-11-23T10:00:00Z", "2026-11-23T10:10:00Z"))
    assert incidents(clocked)[0]["status"] == "resolved"
    # A late notification of the old episode does not take the alert back.
    post(clocked, burn("firing", "c", "critical", "1h", "2026-11-23T08:00:00Z"))
    row = clocked.get("/api/alerts/c").get_json()
    assert (row["status"], row["starts_at"]) == ("resolved", "2026-11-23T10:00:00Z")
    assert incidents(clocked)[0]["status"] == "resolved"


def test_ages_and_durations_are_relative_with_the_utc_time_in_a_title(clocked):
    post(clocked, burn("firing", "c", "critical", "1h", "2026-11-23T10:30:00Z"))
    post(clocked, burn("resolved", "m", "warning", "1d", "2026-11-23T07:00:00Z", "2026-11-23T07:07:00Z",
                       model="eta", team="eta"))
    html = clocked.get("/").get_data(as_text=True)
    assert ('fired <time datetime="2026-11-23T10:30:00Z" title="2026-11-23 10:30:00 UTC">12 min ago</time>'
            in html)
    assert "firing for 12 min" in html
    assert "lasted 7 min" in html and 'title="2026-11-23 07:07:00 UTC">3 h 35 min ago</time>' in html
    assert [span(s) for s in (5, 59, 60, 3599, 3600, 3 * 3600 + 1200, 14 * 3600, 49 * 3600)] == [
        "5 s", "59 s", "1 min", "59 min", "1 h", "3 h 20 min", "14 h", "2 d"]


def test_window_and_version_are_shown(clocked):
    post(clocked, burn("firing", "c", "critical", "1h", "2026-11-23T10:30:00Z"))
    post(clocked, notification(fingerprint="acc", starts_at="2026-11-23T10:00:00Z"))
    html = clocked.get("/").get_data(as_text=True)
    assert 'window <span class="window">1h</span>' in html and '<span class="window">1h</span>' in html
    assert '<small class="version">version v3</small>' in html
    assert '<small class="version">all versions</small>' in html  # the burn rate sums over versions


def test_filters_by_team_model_severity_and_state(clocked):
    post(clocked, burn("firing", "c", "critical", "1h", "2026-11-23T10:30:00Z"))
    post(clocked, burn("firing", "w", "warning", "1d", "2026-11-23T10:00:00Z", model="eta", team="eta"))
    post(clocked, burn("resolved", "r", "critical", "1h", "2026-11-23T09:00:00Z", "2026-11-23T09:10:00Z",
                       model="segment", team="growth"))
    def models(**q) -> list[str]:
        return [i["model"] for i in incidents(clocked, **q)]
    assert models() == ["credit", "eta", "segment"]
    assert models(team="eta") == ["eta"] and models(model="segment") == ["segment"]
    assert models(severity="critical") == ["credit", "segment"]
    assert models(status="resolved") == ["segment"] and models(status="firing", severity="critical") == ["credit"]
    assert models(team="nobody") == []
    # /api/alerts takes the new filters too (and still answers as before without them).
    def alerts(**q) -> list[str]:
        return [a["fingerprint"] for a in clocked.get("/api/alerts", query_string=q).get_json()["alerts"]]
    assert alerts(team="growth") == ["r"] and alerts(severity="warning") == ["w"] and len(alerts()) == 3
    # The page: a GET form, "" meaning any; the filter keeps its choice selected.
    html = clocked.get("/?team=&model=&severity=critical&status=").get_data(as_text=True)
    assert html.count('<tr class="incident ') == 2
    assert '<form class="filters" method="get" action="./">' in html
    assert '<option value="critical" selected>critical</option>' in html
    assert '<option value="growth">growth</option>' in html and "clear filters" in html
    html = clocked.get("/?team=eta&status=firing").get_data(as_text=True)
    assert html.count('<tr class="incident ') == 1 and ">eta<br>" in html
    assert "No incident matches these filters." in clocked.get("/?model=nope").get_data(as_text=True)
    assert clocked.get("/?status=pending").status_code == 400


def test_filters_combine_with_keyset_paging(clocked, store):
    for i in range(25):
        team = ("risk", "eta")[i % 2]
        post(clocked, burn("firing", f"f{i:02d}", ("critical", "warning")[i % 3 == 0], "1h",
                           "2026-11-23T10:00:00Z", alertname=f"A{i:02d}", team=team))
    seen, path = [], "/?team=risk&severity=critical&limit=4"
    while path:
        html = clocked.get(path).get_data(as_text=True)
        seen += re.findall(r'<td class="alertname">A(\d\d)<br>', html)
        link = re.search(r'<a href="\?([^"]+)">next page</a>', html)
        path = "/?" + link.group(1).replace("&amp;", "&") if link else None
        if link:
            assert link.group(1).startswith("team=risk&amp;severity=critical&amp;limit=4&amp;before=")
    want = [f"{i:02d}" for i in range(25) if i % 2 == 0 and i % 3 != 0]
    assert sorted(seen) == want and len(seen) == len(set(seen))
    api = pages(clocked, "/api/incidents", team="risk", severity="critical", limit=3)
    assert sorted(i["alertname"][1:] for p in api for i in p["incidents"]) == want
    assert api[0]["total"] == len(want)
    plan = store.page_plan(team="risk", incidents=True)
    assert plan.startswith("SEARCH incidents USING INDEX incidents_by_team_in_order") and "TEMP B-TREE" not in plan


def test_silence_links_open_alertmanager_with_the_incident_matchers(clocked):
    post(clocked, burn("firing", "c", "critical", "1h", "2026-11-23T10:30:00Z",
                       external_url="http://am.example:9093/alertmanager/"))
    [i] = incidents(clocked)
    assert i["links"]["silence"] == (
        "http://am.example:9093/alertmanager/#/silences/new?filter=%7Balertname%3D%22ModelmonErrorBudgetBurn%22"
        "%2Cfamily%3D%22availability%22%2Cmodel%3D%22credit%22%2Cteam%3D%22risk%22%7D")
    # Each firing alert has its own, with every label (as Alertmanager's own Silence button).
    assert "severity%3D%22critical%22%2Cwindow%3D%221h%22%7D" in i["alerts"][0]["silence"]
    html = clocked.get("/").get_data(as_text=True)
    assert html.count('class="silence"') == 2
    assert silence_url("http://am:9093", {"alertname": "X", "feature": 'a"b\\c'}) == (
        "http://am:9093/#/silences/new?filter=" + requests.utils.quote('{alertname="X",feature="a\\"b\\\\c"}', safe=""))
    assert silence_url("javascript:alert(1)", {"alertname": "X"}) is None and silence_url("", {"a": "b"}) is None
    # The same silence for amtool (the Debian Alertmanager has no web UI), quoted for a POSIX shell.
    command = i["links"]["amtool_silence"]
    assert command.startswith("amtool --alertmanager.url='http://am.example:9093/alertmanager' silence add "
                              "'alertname=\"ModelmonErrorBudgetBurn\"' 'family=\"availability\"' ")
    assert "--duration=2h --comment=" in command and "<code>amtool --alertmanager.url=" in html
    # Resolved incidents have nothing to silence.
    post(clocked, burn("resolved", "c", "critical", "1h", "2026-11-23T10:30:00Z", "2026-11-23T10:40:00Z"))
    assert incidents(clocked)[0]["links"]["silence"] is None
    assert 'class="silence"' not in clocked.get("/").get_data(as_text=True)


def test_the_amtool_command_reaches_amtool_as_the_intended_words():
    from modelmon.receiver.links import amtool_silence
    command = amtool_silence("http://am:9093", {"alertname": "X", "model": "it's", "feature": 'a"b $(x)'})
    words = subprocess.run(["sh", "-c", command.replace("amtool", "printf '%s\\n'", 1)], capture_output=True,
                           text=True, check=True).stdout.splitlines()
    assert words == ["--alertmanager.url=http://am:9093", "silence", "add", 'alertname="X"', "model=\"it's\"",
                     'feature="a\\"b $(x)"', "--duration=2h", "--comment=INCIDENT: what you are doing (you)"]


def test_the_external_url_is_stored_from_the_notification(client):
    post(client, burn("firing", "c", "critical", "1h", "2026-11-23T10:30:00Z", external_url="http://am:9093"))
    assert client.get("/api/alerts/c").get_json()["external_url"] == "http://am:9093"


def test_dashboard_links_open_the_alert_time_range(clocked):
    post(clocked, burn("firing", "c", "critical", "1h", "2026-11-23T10:30:00Z"))
    start = int(epoch("2026-11-23T10:30:00Z")) * 1000
    [i] = incidents(clocked)
    assert i["links"]["dashboard"] == (f"http://localhost:3000/d/modelmon-service?var-model=credit"
                                       f"&from={start - 30 * 60_000}&to=now")
    post(clocked, burn("resolved", "c", "critical", "1h", "2026-11-23T10:30:00Z", "2026-11-23T10:37:00Z"))
    end = int(epoch("2026-11-23T10:37:00Z")) * 1000
    assert incidents(clocked)[0]["links"]["dashboard"].endswith(f"&from={start - 1_800_000}&to={end + 600_000}")
    html = clocked.get("/").get_data(as_text=True)
    assert (f'var-model=credit&amp;from={start - 1_800_000}&amp;to={end + 600_000}" '
            f'title="2026-11-23 10:00:00 UTC') in html
    # A from/to already in the annotation is replaced; --grafana-url rebases onto another Grafana.
    assert dashboard_url("https://g/d/x?from=1&to=2&var-model=a", 100.0, None, None) == \
        "https://g/d/x?var-model=a&from=-1700000&to=now"
    assert dashboard_url("http://localhost:3000/d/modelmon-model?var-model=a", 2000.0, 2000.0,
                         "https://grafana.example/sub") == \
        "https://grafana.example/sub/d/modelmon-model?var-model=a&from=200000&to=2600000"
    assert dashboard_url("javascript:alert(1)", 0.0, None, None) is None


def test_without_grafana_the_inbox_says_so_instead_of_a_dead_link(store):
    client = create_app(store, grafana_url="none", clock=lambda: NOW).test_client()
    post(client, burn("firing", "c", "critical", "1h", "2026-11-23T10:30:00Z"))
    html = client.get("/").get_data(as_text=True)
    assert "no Grafana configured" in html
    assert 'class="dashboard"' not in html and 'href="http://localhost:3000' not in html
    assert client.get("/api/incidents").get_json()["incidents"][0]["links"]["dashboard"] is None
    # No dashboard_url annotation: the same words.
    payload = burn("firing", "x", "warning", "1d", "2026-11-23T10:00:00Z", model="eta")
    del payload["alerts"][0]["annotations"]["dashboard_url"]
    plain = create_app(AlertStore(store.path.with_name("other.db")), clock=lambda: NOW).test_client()
    post(plain, payload)
    assert "no Grafana configured" in plain.get("/").get_data(as_text=True)


def test_a_database_of_the_previous_version_gets_its_incidents(tmp_path):
    db = tmp_path / "alerts.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(OLD_SCHEMA)
    client = create_app(AlertStore(db)).test_client()
    got = client.get("/api/incidents").get_json()
    assert got["counts"] == {"firing": 1, "resolved": 0}  # old1 and old2 overlap: one incident, still firing
    assert sorted(a["fingerprint"] for a in got["incidents"][0]["alerts"]) == ["old1", "old2"]
    assert AlertStore(db).incidents_page().total == 1  # and opens again without doing it twice


# ---------------------------------------------------------------- the runbook

def rule_anchors() -> set[str]:
    anchors = set()
    for rules in (ROOT / "prometheus" / "rules").glob("*.yml"):
        anchors |= set(re.findall(r"(?:RUNBOOK\.md|/runbook)#([A-Za-z0-9_-]+)", rules.read_text()))
    return anchors


def test_runbook_is_served_with_an_anchor_for_every_runbook_url(store):
    client = create_app(store, runbook=Runbook(ROOT / "alerting" / "RUNBOOK.md")).test_client()
    r = client.get("/runbook")
    assert r.status_code == 200 and r.mimetype == "text/html"
    ids = set(re.findall(r'<h[1-6] id="([^"]+)"', r.get_data(as_text=True)))
    anchors = rule_anchors()
    assert anchors and anchors <= ids, sorted(anchors - ids)
    assert "modelmonerrorbudgetburn" in ids


def test_runbook_rendering_escapes_and_follows_github_slugs():
    html = render("# Quality alerts\n\n## When you are paged: ack, silence!\n\n### `ModelmonX` (v2)\n\n"
                  "## Quality alerts\n\n<script>alert(1)</script>\n\n[x](javascript:alert(2)) [ok](#quality-alerts)\n\n"
                  "| a | b |\n|---|---|\n| `q` | <b>2</b> |\n\n```\nsum(rate(x[5m])) > 0 && <y>\n```\n")
    assert '<h1 id="quality-alerts">' in html and '<h2 id="quality-alerts-1">' in html
    assert '<h2 id="when-you-are-paged-ack-silence">' in html and '<h3 id="modelmonx-v2">' in html
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;2&lt;/b&gt;" in html
    assert 'href="javascript' not in html and '<a href="#quality-alerts">ok</a>' in html
    assert "<table>" in html and "<td><code>q</code></td>" in html and "&amp;&amp; &lt;y&gt;" in html
    assert slug("ModelmonAccuracyLow") == "modelmonaccuracylow" and slug("Runbook — drift") == "runbook--drift"


def test_runbook_missing_or_unreadable(store, tmp_path):
    client = create_app(store).test_client()
    r = client.get("/runbook")
    assert r.status_code == 404 and "--runbook PATH" in r.get_data(as_text=True)
    book = tmp_path / "RUNBOOK.md"
    book.write_text("# One\n")
    client = create_app(store, runbook=Runbook(book)).test_client()
    assert '<h1 id="one">One</h1>' in client.get("/runbook").get_data(as_text=True)
    book.write_text("# Two, edited\n")
    assert '<h1 id="two-edited">' in client.get("/runbook").get_data(as_text=True)  # edits show up live
    book.unlink()
    assert client.get("/runbook").status_code == 503


@pytest.mark.parametrize("argv, message", [
    (["--grafana-url", "grafana:3000"], "expected an http(s) URL or 'none'"),
    (["--grafana-url", "http://"], "expected an http(s) URL or 'none'"),
])
def test_bad_grafana_url_is_a_usage_error(argv, message, capsys):
    import argparse
    p = argparse.ArgumentParser()
    add_arguments(p)
    with pytest.raises(SystemExit) as e:
        p.parse_args(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert p.parse_args(["--grafana-url", "none"]).grafana_url == "none"
    assert p.parse_args(["--grafana-url", "https://g.example/"]).grafana_url == "https://g.example"


def test_an_unreadable_runbook_flag_is_one_line_and_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "modelmon", "receiver", "--db", str(tmp_path / "a.db"),
                        "--port", str(free_port()), "--runbook", str(tmp_path / "nope.md")],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"modelmon receiver: cannot read --runbook {tmp_path / 'nope.md'}: No such file or directory"]


@pytest.mark.parametrize("starts_at", ["2026-02-29T10:00:00Z", "2026-11-23T25:00:00Z", "0000-01-01T00:00:00Z"])
def test_impossible_dates_are_a_400_not_a_retry_loop(client, starts_at):
    response = post(client, notification(starts_at=starts_at))
    assert response.status_code == 400
    assert "alerts[0].startsAt: not a valid date and time" in response.get_json()["error"]


def test_extreme_but_valid_times_still_render(clocked):
    post(clocked, burn("resolved", "old", "warning", "1d", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"))
    post(clocked, burn("firing", "new", "critical", "1h", "9999-12-31T23:59:59Z", model="eta"))
    assert clocked.get("/").status_code == 200 and clocked.get("/api/incidents").status_code == 200
    assert "in the future" in clocked.get("/").get_data(as_text=True)
