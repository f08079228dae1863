"""The inbox as a browser sees it (issue 9): a real headless Chromium against a real `modelmon receiver`
process loaded with Alertmanager notifications. Chromium renders each page and hands back its DOM
(`--dump-dom`), which the tests read as text and links the way an on-call engineer reads the page:
window and version, relative ages, one row per incident with its severity history, filters through
the GET form, the silence link, the dashboard time range, "no Grafana configured", runbook anchors.

Chromium is the Debian package `chromium` (.ci/run installs it): missing, the tests skip on a
laptop and fail in CI (MODELMON_REQUIRE_BINARIES=1). MODELMON_INBOX_SCREENSHOT=<file.png> keeps
the screenshot the last test takes.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import pytest
import requests

from tests.conftest import REQUIRE_BINARIES, ROOT, which_or_skip
from tests.processes import Receiver

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")
ALERTMANAGER = "http://127.0.0.1:9093"
BURN = "ModelmonErrorBudgetBurn"


def chromium_or_skip() -> str:
    if shutil.which("chromium") is None and not REQUIRE_BINARIES:
        pytest.skip("chromium not found on PATH (install it: apt-get install -y chromium)")
    return which_or_skip("chromium")  # fails in CI, as for every real binary


class Browser:
    """Headless Chromium, one process a page, a profile of its own in the test's directory."""

    def __init__(self, binary: str, tmp: Path):
        self.binary, self.profile = binary, tmp / "chromium-profile"

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        r = subprocess.run([self.binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", *args],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        return r

    def dom(self, url: str) -> "Node":
        return parse(self._run("--dump-dom", url).stdout)

    def screenshot(self, url: str, path: Path) -> Path:
        self._run(f"--screenshot={path}", "--window-size=1400,900", "--hide-scrollbars", url)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        return path


# ---------------------------------------------------------------- a minimal DOM to read the dump

class Node:
    def __init__(self, tag: str, attrs: dict[str, str]):
        self.tag, self.attrs, self.children = tag, attrs, []

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def iter(self):
        yield self
        for c in self.children:
            if isinstance(c, Node):
                yield from c.iter()

    def all(self, tag: str, cls: str | None = None) -> list["Node"]:
        return [n for n in self.iter() if n.tag == tag and (cls is None or cls in n.classes)]

    def one(self, tag: str, cls: str | None = None) -> "Node":
        found = self.all(tag, cls)
        assert len(found) == 1, (tag, cls, len(found))
        return found[0]

    def text(self) -> str:
        parts = [c if isinstance(c, str) else c.text() for c in self.children]
        return " ".join(" ".join(parts).split())


class _Parser(HTMLParser):
    VOID = {"br", "meta", "input", "img", "hr", "link", "wbr", "col", "source"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse(html: str) -> Node:
    p = _Parser()
    p.feed(html)
    return p.root


# ---------------------------------------------------------------- notifications relative to now

def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def notice(status: str, fingerprint: str, labels: dict, started: float, ended: float | None = None,
           runbook: str = "", dashboard: str | None = "http://localhost:3000/d/modelmon-service") -> dict:
    annotations = {"summary": f"{labels['alertname']} summary", "description": f"what happened to {labels['model']}",
                   "runbook_url": runbook}
    if dashboard:
        annotations["dashboard_url"] = f"{dashboard}?var-model={labels['model']}"
    return {
        "version": "4", "status": status, "receiver": "modelmon-inbox", "groupKey": "{}:{}", "truncatedAlerts": 0,
        "externalURL": ALERTMANAGER, "groupLabels": {}, "commonLabels": labels, "commonAnnotations": {},
        "alerts": [{"status": status, "labels": labels, "annotations": annotations, "fingerprint": fingerprint,
                    "startsAt": iso(started), "endsAt": iso(ended) if ended else "0001-01-01T00:00:00Z",
                    "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=up"}],
    }


def burn_labels(severity: str, window: str, model: str = "credit", team: str = "risk") -> dict:
    return {"alertname": BURN, "severity": severity, "window": window, "model": model, "team": team,
            "family": "availability"}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """A receiver with: credit's error-budget burn, warning (1d) then critical (1h), firing; eta's MAE
    warning of version v7 that lasted 7 min an hour ago; segment's accuracy critical of version v2."""
    tmp = tmp_path_factory.mktemp("inbox")
    receiver = Receiver(tmp)
    receiver.start()
    now = time.time()
    runbook = receiver.url("/runbook#modelmonerrorbudgetburn")
    sent = [
        notice("firing", "burn-1d", burn_labels("warning", "1d"), now - 20 * 60, runbook=runbook),
        notice("firing", "burn-1h", burn_labels("critical", "1h"), now - 12 * 60, runbook=runbook),
        notice("resolved", "mae", {"alertname": "ModelmonMaeHigh", "severity": "warning", "model": "eta",
                                   "version": "v7", "team": "logistics", "family": "quality"},
               now - 67 * 60, now - 60 * 60, dashboard="http://localhost:3000/d/modelmon-model"),
        notice("firing", "acc", {"alertname": "ModelmonAccuracyLow", "severity": "critical", "model": "segment",
                                 "version": "v2", "team": "growth", "family": "quality"},
               now - 3 * 3600 - 5 * 60, dashboard=None),
    ]
    for payload in sent:
        r = requests.post(receiver.url("/webhook"), json=payload, timeout=10)
        assert r.status_code == 200, r.text
    try:
        yield receiver, now
    finally:
        receiver.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    return Browser(chromium_or_skip(), tmp_path_factory.mktemp("chromium"))


def rows(dom: Node) -> dict[str, Node]:
    """The inbox's incident rows by model."""
    out = {}
    for tr in dom.all("tr", "incident"):
        out[tr.one("td", "model").text().split()[0]] = tr
    return out


def test_one_row_per_incident_with_window_version_and_history(loaded, browser):
    receiver, _ = loaded
    dom = browser.dom(receiver.url("/"))
    assert dom.one("title").text() == "modelmon alerts (2 firing)"
    by_model = rows(dom)
    assert sorted(by_model) == ["credit", "eta", "segment"]  # 4 alerts, 3 incidents
    credit = by_model["credit"]
    assert "warning → critical" in credit.all("td")[1].text()
    assert credit.one("td", "windows").text() == "1d 1h"
    assert [(w.text(), w.attrs["title"]) for w in credit.one("td", "windows").all("span", "window")] == [
        ("1d", "warning alert over 1d"), ("1h", "critical alert over 1h")]
    members = credit.all("li", "member")
    assert [m.text().split(" · ")[0] for m in members] == ["warning window 1d", "critical window 1h"]
    assert credit.one("td", "model").text() == "credit all versions"
    assert by_model["eta"].one("td", "model").text() == "eta version v7"
    assert by_model["segment"].one("td", "model").text() == "segment version v2"
    # Firing first, critical before warning, then the most recently notified.
    assert [tr.one("td", "model").text().split()[0] for tr in dom.all("tr", "incident")] == ["segment", "credit", "eta"]
    assert [tr.one("td", "status").text() for tr in dom.all("tr", "incident")] == ["firing", "firing", "resolved"]


def test_relative_ages_and_durations_with_utc_in_the_title(loaded, browser):
    receiver, now = loaded
    by_model = rows(browser.dom(receiver.url("/")))
    fired = by_model["credit"].one("td", "fired")
    assert fired.text() in ("fired 20 min ago", "fired 21 min ago")
    assert fired.one("time").attrs["title"] == time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now - 20 * 60))
    assert by_model["credit"].one("td", "duration").text().startswith(("firing for 20 min", "firing for 21 min"))
    eta = by_model["eta"].one("td", "duration")
    assert eta.text().startswith("lasted 7 min resolved 1 h ago")
    resolved_at = eta.all("time")[0]
    assert resolved_at.attrs["title"] == time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now - 60 * 60))
    assert by_model["segment"].one("td", "fired").text() == "fired 3 h 5 min ago"
    assert by_model["segment"].one("td", "duration").text().startswith("firing for 3 h 5 min")


def test_filters_through_the_get_form(loaded, browser):
    receiver, _ = loaded
    dom = browser.dom(receiver.url("/"))
    form = dom.one("form", "filters")
    assert form.attrs["method"] == "get"
    selects = {s.attrs["name"]: [o.attrs["value"] for o in s.all("option")] for s in form.all("select")}
    assert selects == {"team": ["", "growth", "logistics", "risk"], "model": ["", "credit", "eta", "segment"],
                       "severity": ["", "critical", "warning"], "status": ["", "firing", "resolved"]}

    def submit(**chosen) -> Node:  # what the browser sends for the form: every field, "" for "any"
        return browser.dom(receiver.url("/?" + urlencode({name: chosen.get(name, "") for name in selects})))

    assert sorted(rows(submit(team="risk"))) == ["credit"]
    assert sorted(rows(submit(severity="critical"))) == ["credit", "segment"]
    assert sorted(rows(submit(status="resolved"))) == ["eta"]
    filtered = submit(model="segment", status="firing")
    assert sorted(rows(filtered)) == ["segment"]
    chosen = {s.attrs["name"]: [o.attrs["value"] for o in s.all("option") if "selected" in o.attrs]
              for s in filtered.one("form", "filters").all("select")}
    assert chosen == {"team": [], "model": ["segment"], "severity": [], "status": ["firing"]}
    assert "No incident matches these filters." in submit(team="growth", status="resolved").text()
    # Filters and paging together: the next-page link keeps the filters.
    page = browser.dom(receiver.url("/?" + urlencode({"severity": "critical", "limit": "1"})))
    assert len(rows(page)) == 1
    [link] = [a for a in page.all("a") if a.text() == "next page"]
    query = parse_qs(urlsplit(link.attrs["href"]).query)
    assert query["severity"] == ["critical"] and query["limit"] == ["1"] and query["before"]
    second = browser.dom(receiver.url("/" + link.attrs["href"]))
    assert list(rows(page)) + list(rows(second)) == ["segment", "credit"]


def test_silence_link_into_alertmanager(loaded, browser):
    receiver, _ = loaded
    by_model = rows(browser.dom(receiver.url("/")))
    links = by_model["credit"].one("td", "links")
    href = links.one("a", "silence").attrs["href"]
    base, _, fragment = href.partition("#")
    assert base == ALERTMANAGER + "/" and fragment.startswith("/silences/new?filter=")
    assert unquote(fragment.split("filter=", 1)[1]) == (
        '{alertname="ModelmonErrorBudgetBurn",family="availability",model="credit",team="risk"}')
    # The same silence for amtool: the Debian Alertmanager package serves no web UI.
    command = links.one("details", "amtool").one("code").text()
    assert command.startswith(f"amtool --alertmanager.url='{ALERTMANAGER}' silence add 'alertname=\"{BURN}\"'")
    # Each firing alert of the incident has its own; the resolved incident has none.
    member_links = [a.attrs["href"] for a in by_model["credit"].all("li") for a in a.all("a", "silence")]
    assert len(member_links) == 2 and 'window="1h"' in unquote(member_links[1])
    assert by_model["eta"].all("a", "silence") == [] and by_model["eta"].all("details", "amtool") == []


def test_dashboard_links_open_the_alert_time_range(loaded, browser):
    receiver, now = loaded
    by_model = rows(browser.dom(receiver.url("/")))
    firing = urlsplit(by_model["credit"].one("a", "dashboard").attrs["href"])
    q = parse_qs(firing.query)
    assert (firing.netloc, firing.path) == ("localhost:3000", "/d/modelmon-service")
    assert q["var-model"] == ["credit"] and q["to"] == ["now"]
    assert abs(int(q["from"][0]) - (now - 20 * 60 - 30 * 60) * 1000) < 2000
    resolved = parse_qs(urlsplit(by_model["eta"].one("a", "dashboard").attrs["href"]).query)
    assert abs(int(resolved["from"][0]) - (now - 67 * 60 - 30 * 60) * 1000) < 2000
    assert abs(int(resolved["to"][0]) - (now - 60 * 60 + 10 * 60) * 1000) < 2000
    # segment's alert has no dashboard_url: no dead link.
    assert by_model["segment"].all("a", "dashboard") == []
    assert by_model["segment"].one("span", "no-grafana").text() == "no Grafana configured"


def test_without_grafana_the_page_says_so(tmp_path, browser):
    receiver = Receiver(tmp_path)
    receiver.start("--grafana-url", "none")
    try:
        now = time.time()
        assert requests.post(receiver.url("/webhook"), timeout=10,
                             json=notice("firing", "c", burn_labels("critical", "1h"), now - 60)).status_code == 200
        dom = browser.dom(receiver.url("/"))
        [row] = dom.all("tr", "incident")
        assert row.all("a", "dashboard") == []
        assert row.one("td", "links").one("span", "no-grafana").text() == "no Grafana configured"
        assert ":3000" not in " ".join(a.attrs.get("href", "") for a in dom.all("a"))
    finally:
        receiver.stop()


def test_runbook_anchors_from_the_inbox(loaded, browser):
    receiver, _ = loaded
    by_model = rows(browser.dom(receiver.url("/")))
    href = by_model["credit"].one("a", "runbook").attrs["href"]
    assert href == receiver.url("/runbook#modelmonerrorbudgetburn")
    page = browser.dom(href)
    ids = {n.attrs["id"] for n in page.iter() if "id" in n.attrs}
    assert "modelmonerrorbudgetburn" in ids
    heading = next(n for n in page.iter() if n.attrs.get("id") == "modelmonerrorbudgetburn")
    assert heading.tag in ("h2", "h3") and heading.text() == BURN
    # Every runbook_url anchor of the generated rules has its heading here.
    anchors = set()
    for rules in (ROOT / "prometheus" / "rules").glob("*.yml"):
        anchors |= set(re.findall(r"(?:RUNBOOK\.md|/runbook)#([A-Za-z0-9_-]+)", rules.read_text()))
    assert anchors and anchors <= ids, sorted(anchors - ids)
    assert not page.all("script")


def test_screenshot_is_readable(loaded, browser, tmp_path):
    """One screenshot of the loaded inbox (kept with MODELMON_INBOX_SCREENSHOT=<file.png>)."""
    receiver, _ = loaded
    shot = browser.screenshot(receiver.url("/"), tmp_path / "inbox.png")
    assert shot.stat().st_size > 20_000  # a rendered table, not a blank page
    keep = os.environ.get("MODELMON_INBOX_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)
