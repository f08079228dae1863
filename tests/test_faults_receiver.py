"""Issue 8 against a real `modelmon receiver` process (started by the CLI, as users do):
the inbox and /api/alerts page through any number of alerts with the true totals (point 9), and the
bearer scheme is case-insensitive (point 12)."""
from __future__ import annotations

import copy
import re

import pytest
import requests

from modelmon.receiver.cli import TOKEN_ENV
from tests.processes import Receiver
from tests.test_receiver import notification

MAX_ALERTS = 200  # Alertmanager's webhook_config max_alerts: at most this many alerts a notification


def notifications(count: int, per: int = MAX_ALERTS, prefix: str = "fp"):
    """`count` distinct firing alerts as Alertmanager would send them: groups of at most `per`."""
    fingerprints = [f"{prefix}{i:05d}" for i in range(count)]
    for start in range(0, count, per):
        payload = notification()
        template = payload["alerts"][0]
        payload["alerts"] = []
        for i, fp in enumerate(fingerprints[start:start + per], start):
            alert = copy.deepcopy(template)
            alert["fingerprint"] = fp
            alert["labels"].update(alertname=f"Alert{i}", severity=("critical", "warning")[i % 2])
            payload["alerts"].append(alert)
        payload["truncatedAlerts"] = 0
        yield payload


@pytest.fixture
def receiver(tmp_path):
    r = Receiver(tmp_path)
    yield r
    r.stop()


def test_960_firing_alerts_all_come_back_once_and_the_page_counts_them(receiver):
    receiver.start()
    sent = 0
    for payload in notifications(960):
        r = requests.post(receiver.url("/webhook"), json=payload, timeout=10)
        assert r.status_code == 200, r.text
        sent += r.json()["stored"]
    assert sent == 960

    seen, params, pages = [], {"limit": 250}, 0
    while True:
        body = requests.get(receiver.url("/api/alerts"), params=params, timeout=10).json()
        pages += 1
        assert body["total"] == 960 and body["counts"] == {"firing": 960, "resolved": 0}
        seen += [a["fingerprint"] for a in body["alerts"]]
        if body["next"] is None:
            break
        params["before"] = body["next"]
    assert pages == 4
    assert len(seen) == 960 and set(seen) == {f"fp{i:05d}" for i in range(960)}
    # Critical first, then warning; within a severity the most recent notification first.
    severities = [int(fp[2:]) % 2 for fp in seen]
    assert severities == sorted(severities)

    page = requests.get(receiver.url("/"), timeout=10)
    assert page.status_code == 200
    assert "<title>modelmon alerts (960 firing)</title>" in page.text
    assert "960 firing, 0 resolved" in page.text and "showing 1–200 of 960" in page.text
    assert page.text.count('<tr class="incident firing"') == 200  # one incident an alert: distinct names
    link = re.search(r'<a href="\?(before=[^"]+)">next page</a>', page.text).group(1)
    second = requests.get(receiver.url("/?" + link.replace("&amp;", "&")), timeout=10).text
    assert "showing 201–400 of 960" in second

    assert requests.get(receiver.url("/api/alerts?limit=5000"), timeout=10).status_code == 400
    assert requests.get(receiver.url("/api/alerts?before=nonsense"), timeout=10).status_code == 400


def test_bearer_scheme_is_case_insensitive(receiver):
    receiver.start(env={TOKEN_ENV: "t0ken"})
    url = receiver.url("/webhook")
    for scheme in ("bearer", "BEARER", "Bearer"):
        r = requests.post(url, json=notification(), headers={"Authorization": f"{scheme} t0ken"}, timeout=10)
        assert r.status_code == 200, (scheme, r.text)
    for header in ("bearer wrong", "Basic t0ken", "t0ken"):
        assert requests.post(url, json=notification(), headers={"Authorization": header},
                             timeout=10).status_code == 401, header
    assert requests.post(url, json=notification(), timeout=10).status_code == 401
