"""`modelmon receiver`: the on-call inbox Alertmanager's webhook posts to.

POST /webhook        Alertmanager webhook payload v4 -> 200 once stored, 400 on a bad payload,
                     401 without the shared secret (when one is set), 500 if it could not be stored
                     (Alertmanager then retries, so nothing accepted is lost)
GET  /               the inbox as a readable page: one row per incident (incidents.py), firing first,
                     with window, version, age, duration, severity history, silence and dashboard
                     links; filters ?team= ?model= ?severity= ?status=firing|resolved (empty = any, a
                     plain GET form), paged by ?before= and ?limit= (200 incidents a page)
GET  /api/alerts     JSON, one page of alerts: ?limit=1..1000 (default 100), ?before=<cursor> (the
                     previous page's `next`), filters ?status= ?model= ?team= ?severity=; answers alerts,
                     next, total and counts by status; /api/alerts/<fingerprint> adds history
GET  /api/incidents  the same for incidents (each with its alerts, severity_history, windows and
                     links); /api/incidents/<id> one incident
GET  /runbook        the runbook (--runbook) as HTML, an id on every heading (`/runbook#<alertname>`)
GET  /healthz        200 while the database answers
"""
from __future__ import annotations

import logging
import re
import time
from typing import Callable
from urllib.parse import urlencode

from flask import Flask, Response, jsonify, render_template_string, request
from markupsafe import Markup

from modelmon.receiver.incidents import SEVERITY_ORDER, key_labels, severity_rank
from modelmon.receiver.links import AFTER_S, BEFORE_S, amtool_silence, dashboard_url, safe_url, silence_url
from modelmon.receiver.payload import STATUSES, PayloadError, parse_notification, rfc3339, utc_datetime
from modelmon.receiver.runbook import Runbook
from modelmon.receiver.store import FILTERS, AlertStore, CursorError, Page
from modelmon.serving import bearer_matches

MAX_BODY_BYTES = 4 << 20
API_LIMIT = 100     # alerts per /api/alerts page unless ?limit= says otherwise
MAX_LIMIT = 1000
PAGE_LIMIT = 200    # incidents per inbox page
_DIGITS = re.compile(r"[0-9]{1,7}")
log = logging.getLogger("modelmon.receiver")

_STYLE = """
 body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em; color: #222; }
 a { color: #0b57d0; } small, .muted { color: #666; }
 table { border-collapse: collapse; width: 100%; }
 th, td { text-align: left; padding: .45em .6em; vertical-align: top; }
 tr { border-bottom: 1px solid #ddd; } th { background: #f4f4f4; position: sticky; top: 0; }
 tr.resolved { color: #666; } tr.firing td.status { color: #b00; font-weight: bold; }
 .sev { display: inline-block; padding: 0 .45em; border-radius: 3px; font-weight: 600; }
 .sev.critical { background: #fde2e1; color: #a00; } .sev.warning { background: #fff0d1; color: #8a5300; }
 .sev.info { background: #e3efff; color: #124a9c; }
 .history { margin-top: .2em; white-space: nowrap; } .desc { color: #444; }
 .window { font-family: ui-monospace, monospace; background: #f1f1f1; padding: 0 .3em; border-radius: 3px; }
 .window.critical { outline: 1px solid #d88; } .window.warning { outline: 1px solid #dba75a; }
 td.fired, td.status { white-space: nowrap; }
 form.filters { margin: .8em 0; display: flex; gap: 1em; align-items: end; flex-wrap: wrap; }
 form.filters label { display: flex; flex-direction: column; font-size: 12px; color: #555; }
 details ul { margin: .3em 0; padding-left: 1.2em; } time { white-space: nowrap; }
 details.amtool code { display: block; width: 22em; font-size: 11px; white-space: pre-wrap; word-break: break-all; }
"""

# Jinja autoescapes everything rendered by render_template_string: labels are untrusted text.
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="30">
<title>modelmon alerts ({{ page.counts.firing }} firing)</title>
<style>""" + _STYLE + """</style></head><body>
<h1>modelmon alerts</h1>
<p class="summary">{{ page.counts.firing }} firing, {{ page.counts.resolved }} resolved incident(s)
 · JSON: <a href="api/incidents">/api/incidents</a>, <a href="api/alerts">/api/alerts</a>
 · <a href="runbook">runbook</a> · refreshes every 30 s</p>
<form class="filters" method="get" action="./">
{% for f in filters %}<label>{{ f.title }}
 <select name="{{ f.name }}"><option value="">any</option>
 {% for v in f.options %}<option value="{{ v }}"{% if v == f.value %} selected{% endif %}>{{ v or "(none)" }}</option>{% endfor %}
 </select></label>
{% endfor %}{% if limit %}<input type="hidden" name="limit" value="{{ limit }}">{% endif %}
<button type="submit">Filter</button>{% if filtered %} <a href="./">clear filters</a>{% endif %}
</form>
{% if rows %}
<p class="showing">showing {{ page.start + 1 }}–{{ page.start + rows|length }} of {{ page.total }}
{%- if page.next %} · <a href="{{ next_href }}">next page</a>{% endif %}
{%- if page.start %} · <a href="{{ first_href }}">first page</a>{% endif %}</p>
<table>
<thead><tr><th>State</th><th>Severity</th><th>Alert</th><th>Model</th><th>Window</th><th>What happened</th>
 <th>Fired</th><th>Duration</th><th>Links</th></tr></thead>
<tbody>
{% for i in rows %}
<tr class="incident {{ i.status }}" id="incident-{{ i.id }}" data-incident="{{ i.id }}">
 <td class="status">{{ i.status }}</td>
 <td><span class="sev {{ i.severity }}">{{ i.severity or "none" }}</span>
  {%- if i.severity_history|length > 1 %}<div class="history" title="highest severity firing, over time">{{ i.severity_history|join(" → ") }}</div>{% endif %}</td>
 <td class="alertname">{{ i.alertname }}<br><small>{% if i.team %}team {{ i.team }}{% endif %}</small></td>
 <td class="model">{{ i.model }}<br><small class="version">{% if i.version %}version {{ i.version }}{% elif i.model %}all versions{% endif %}</small></td>
 <td class="windows">{% for w, sev in i.window_chips %}<span class="window {{ sev }}" title="{{ sev }} alert over {{ w }}">{{ w }}</span> {% else %}<span class="muted">–</span>{% endfor %}</td>
 <td><b>{{ i.summary }}</b><div class="desc">{{ i.description }}</div>
  <details{% if 1 < i.members|length <= 4 %} open{% endif %}><summary>{{ i.members|length }} alert(s)</summary><ul class="members">
  {% for m in i.members %}<li class="member {{ m.status }}"><span class="sev {{ m.severity }}">{{ m.severity or "none" }}</span>
   {% if m.window %}window <span class="window">{{ m.window }}</span> · {% endif %}{{ m.status }}
   · fired {{ m.fired }} · {{ m.duration }}
   · <a href="api/alerts/{{ m.fingerprint|urlencode }}">history</a>
   {%- if m.silence %} · <a class="silence" href="{{ m.silence }}">silence this alert</a>{% endif %}</li>
  {% endfor %}</ul></details></td>
 <td class="fired">fired {{ i.fired }}</td>
 <td class="duration">{{ i.duration }}<br><small>last notified {{ i.notified }}</small></td>
 <td class="links">{% if i.runbook %}<a class="runbook" href="{{ i.runbook }}">runbook</a><br>{% endif %}
  {%- if i.dashboard %}<a class="dashboard" href="{{ i.dashboard }}" title="{{ i.dashboard_range }}">dashboard</a>
  {%- elif i.no_grafana %}<span class="muted no-grafana">no Grafana configured</span>{% endif %}<br>
  {%- if i.silence %}<a class="silence" href="{{ i.silence }}" title="silence every alert of this incident">silence</a>
  <details class="amtool"><summary>amtool</summary><code>{{ i.amtool }}</code></details>{% endif %}
  {%- if i.source %}<a class="source" href="{{ i.source }}">source</a>{% endif %}</td>
</tr>
{% endfor %}
</tbody></table>
{% elif page.total %}<p>No more incidents after this point ({{ page.total }} in all)
 · <a href="{{ first_href }}">first page</a></p>
{% elif filtered %}<p>No incident matches these filters.</p>
{% else %}<p>No alert received yet.</p>{% endif %}
</body></html>
"""

_BAD_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>modelmon alerts: bad request</title></head><body>
<h1>Bad request</h1><p>{{ message }}</p><p><a href="./">Back to the first page</a></p></body></html>
"""

_RUNBOOK_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>modelmon runbook</title>
<style>
 body { font: 15px/1.55 system-ui, sans-serif; margin: 1.5em auto; max-width: 60em; padding: 0 1em; color: #222; }
 code { font: 13px ui-monospace, monospace; background: #f3f3f3; padding: .1em .3em; border-radius: 3px; }
 pre { background: #f6f6f6; padding: .8em; overflow-x: auto; } pre code { background: none; padding: 0; }
 table { border-collapse: collapse; } th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; }
 h1, h2, h3 { scroll-margin-top: .5em; } :target { background: #fff5c2; }
 nav { font-size: 13px; color: #666; }
</style></head><body>
<nav><a href="./">← inbox</a> · {{ filename }}</nav>
{{ body }}
</body></html>
"""

_MISSING_RUNBOOK = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>modelmon runbook: not available</title></head><body>
<h1>No runbook here</h1><p>{{ message }}</p><p><a href="./">Back to the inbox</a></p></body></html>
"""


class _BadRequest(ValueError):
    pass


def _limit(default: int) -> int:
    raw = request.args.get("limit")
    if raw is None:
        return default
    if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise _BadRequest(f"limit: expected an integer from 1 to {MAX_LIMIT}, got {raw!r}")
    return int(raw)


def _query(*, empty_is_any: bool) -> dict[str, str | None]:
    """status and the equality filters of the query string; the HTML form sends "" for "any"."""
    out = {name: request.args.get(name) for name in ("status", *FILTERS)}
    if empty_is_any:
        out = {k: (v or None) for k, v in out.items()}
    if out["status"] is not None and out["status"] not in STATUSES:
        raise _BadRequest(f"status: expected one of {', '.join(STATUSES)}, got {out['status']!r}")
    return out


def _page(fetch: Callable[..., Page], default_limit: int, *, empty_is_any: bool = False) -> Page:
    """The page the query string asks for; _BadRequest with a message for the client."""
    query = _query(empty_is_any=empty_is_any)
    limit = _limit(default_limit)
    try:
        return fetch(**query, before=request.args.get("before"), limit=limit)
    except CursorError:
        raise _BadRequest("before: malformed cursor (pass back the `next` value of the previous page, "
                          "or leave `before` out for the first page)") from None


# ---------------------------------------------------------------- time, as an on-call engineer reads it

def span(seconds: float) -> str:
    """A duration, coarse enough to read at a glance: 45 s, 12 min, 3 h 20 min, 14 h, 3 d."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    m = s // 60
    if m < 60:
        return f"{m} min"
    h, m = divmod(m, 60)
    if h < 10:
        return f"{h} h {m} min" if m else f"{h} h"
    return f"{h} h" if h < 48 else f"{h // 24} d"


def utc(seconds: float) -> str:
    return utc_datetime(seconds).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(seconds: float, now: float) -> Markup:
    """`<time title="absolute UTC">12 min ago</time>` (escaped; the only HTML built outside the template)."""
    iso = rfc3339(seconds)
    age = now - seconds
    text = "in the future" if age < -60 else "just now" if age < 10 else f"{span(age)} ago"
    return Markup('<time datetime="{}" title="{}">{}</time>').format(iso, utc(seconds), text)


def _duration(started: float, ended: float | None, now: float) -> Markup:
    if ended is None:
        return Markup("firing for {}").format(span(now - started))
    return Markup("lasted {}<br><small>resolved {}</small>").format(span(ended - started), _ago(ended, now))


# ---------------------------------------------------------------- rows of the inbox

def _lead(members: list[dict]) -> dict:
    """The alert an incident is shown by: firing before resolved, then most severe, then latest."""
    return min(members, key=lambda m: (m["status"] != "firing", severity_rank(m["severity"]), -m["started"]))


def incident_view(i: dict, now: float, grafana_url: str | None) -> dict:
    """What the inbox and /api/incidents show of an incident: texts, times and links."""
    members = i["alerts"]
    lead = _lead(members) if members else {"annotations": {}, "labels": {}, "generator_url": "", "external_url": ""}
    annotations = lead["annotations"]
    firing = i["status"] == "firing"
    ended = None if firing else i["ended"]
    dash = dashboard_url(annotations.get("dashboard_url"), i["started"], ended, grafana_url)
    view = {
        **i,
        "summary": annotations.get("summary", ""),
        "description": annotations.get("description", ""),
        "runbook": safe_url(annotations.get("runbook_url")),
        "source": safe_url(lead["generator_url"]),
        "dashboard": dash,
        "dashboard_range": (f"{utc(i['started'] - BEFORE_S)} to "
                            + ("now" if ended is None else utc(ended + AFTER_S))),
        "no_grafana": dash is None,
        # One silence for the incident: its key labels match every severity and window of it.
        "silence": silence_url(lead["external_url"], i["labels"]) if firing else None,
        "amtool": amtool_silence(lead["external_url"], i["labels"]) if firing else None,
        "fired": _ago(i["started"], now),
        "duration": _duration(i["started"], ended, now),
        "notified": _ago(i["last_received_at"], now),
        "members": [],
        # Each window once, with the severity of its alert: a 1h critical is the fast page, a 1d warning the slow one.
        "window_chips": list({m["window"]: m["severity"] for m in members if m["window"]}.items()),
    }
    for m in members:
        view["members"].append({
            **m,
            "fired": _ago(m["started"], now),
            "duration": _duration(m["started"], m["ended"], now),
            "silence": (silence_url(m["external_url"], _silence_labels(m["labels"]))
                        if m["status"] == "firing" else None),
        })
    return view


def _silence_labels(labels: dict[str, str]) -> dict[str, str]:
    """Every label of one alert, alertname first (what Alertmanager's own Silence button fills in)."""
    return {**key_labels(labels), **{k: v for k, v in sorted(labels.items()) if k not in key_labels(labels)}}


def _api_incident(view: dict) -> dict:
    keep = ("id", "labels", "alertname", "model", "team", "version", "status", "severity", "severity_history",
            "windows", "starts_at", "ends_at", "last_received_at", "summary", "description")
    out = {k: view[k] for k in keep}
    out["links"] = {"silence": view["silence"], "amtool_silence": view["amtool"], "dashboard": view["dashboard"],
                    "runbook": view["runbook"], "source": view["source"]}
    out["alerts"] = [{k: m[k] for k in ("fingerprint", "status", "severity", "window", "starts_at", "ends_at",
                                        "labels", "annotations")} | {"silence": m["silence"]}
                     for m in view["members"]]
    return out


def create_app(store: AlertStore, token: str | None = None, *, grafana_url: str | None = None,
               runbook: Runbook | None = None, clock: Callable[[], float] = time.time) -> Flask:
    """The receiver's app. `grafana_url`: None keeps dashboard_url annotations as they are, "none"
    says "no Grafana configured" instead of links, a URL rebases them; `runbook` serves /runbook."""
    app = Flask("modelmon.receiver")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    runbook = runbook or Runbook(None)

    def _error(status: int, message: str) -> tuple[Response, int]:
        return jsonify(error=message), status

    @app.post("/webhook")
    def webhook():
        if token is not None:
            if not bearer_matches(request.headers.get("Authorization", ""), token):
                response, status = _error(401, "missing or wrong bearer token")
                response.headers["WWW-Authenticate"] = 'Bearer realm="modelmon receiver"'
                return response, status
        try:
            notification = parse_notification(request.get_data())
        except PayloadError as e:
            return _error(400, str(e))
        try:
            events = store.record(notification, time.time())
        except Exception:  # noqa: BLE001 - any storage failure must make Alertmanager retry
            log.exception("could not store a notification from %s", notification.receiver)
            return _error(500, "could not store the notification; retry")
        log.info("%s: %d alert(s), %d new event(s)", notification.status, len(notification.alerts), events)
        return jsonify(stored=len(notification.alerts), events=events)

    @app.get("/api/alerts")
    def api_alerts():
        page = _page(store.page, API_LIMIT)
        return jsonify(alerts=page.alerts, next=page.next, total=page.total, counts=page.counts)

    @app.get("/api/alerts/<fingerprint>")
    def api_alert(fingerprint: str):
        alert = store.alert(fingerprint)
        if alert is None:
            return _error(404, f"no alert with fingerprint {fingerprint!r}")
        return jsonify(alert)

    @app.get("/api/incidents")
    def api_incidents():
        page = _page(store.incidents_page, API_LIMIT)
        now = clock()
        return jsonify(incidents=[_api_incident(incident_view(i, now, grafana_url)) for i in page.alerts],
                       next=page.next, total=page.total, counts=page.counts)

    @app.get("/api/incidents/<int:incident_id>")
    def api_incident(incident_id: int):
        incident = store.incident(incident_id)
        if incident is None:
            return _error(404, f"no incident {incident_id}")
        return jsonify(_api_incident(incident_view(incident, clock(), grafana_url)))

    @app.get("/")
    def inbox():
        page = _page(store.incidents_page, PAGE_LIMIT, empty_is_any=True)
        query = _query(empty_is_any=True)
        now = clock()
        # Links keep the filters and page size of this page; only the cursor changes.
        kept = {k: v for k, v in query.items() if v is not None}
        if "limit" in request.args:
            kept["limit"] = request.args["limit"]
        options = {c: store.distinct(c) for c in FILTERS}
        options["severity"] = list(set(options["severity"]) | set(SEVERITY_ORDER[:2]))
        filters = [{"name": name, "title": title, "value": query[name],
                    "options": sorted(set(values) | ({query[name]} if query[name] else set()),
                                      key=lambda v: (severity_rank(v), v) if name == "severity" else ("", v))}
                   for name, title, values in (("team", "Team", options["team"]), ("model", "Model", options["model"]),
                                               ("severity", "Severity", options["severity"]),
                                               ("status", "State", list(STATUSES)))]
        return render_template_string(
            _PAGE, page=page, rows=[incident_view(i, now, grafana_url) for i in page.alerts], filters=filters,
            filtered=any(query.values()), limit=request.args.get("limit"),
            next_href="?" + urlencode({**kept, "before": page.next or ""}),
            first_href="?" + urlencode(kept) if kept else "./")

    @app.get("/runbook")
    def runbook_page():
        try:
            body = runbook.html()
        except LookupError:
            return render_template_string(
                _MISSING_RUNBOOK, message="This receiver was started without a runbook: pass --runbook PATH "
                                          "(the repository's alerting/RUNBOOK.md)."), 404
        except OSError as e:
            log.warning("cannot read the runbook %s: %s", runbook.path, e)
            return render_template_string(
                _MISSING_RUNBOOK, message=f"The runbook file cannot be read ({e.strerror or e})."), 503
        return render_template_string(_RUNBOOK_PAGE, body=Markup(body), filename=runbook.path.name)

    @app.get("/healthz")
    def healthz():
        try:
            store.check()
        except Exception as e:  # noqa: BLE001 - report any database failure as unhealthy
            return _error(503, f"database unavailable: {e}")
        return Response("ok\n", mimetype="text/plain")

    @app.errorhandler(_BadRequest)
    def bad_request(e: _BadRequest):
        """A bad query string: the page answers with a page, the API with JSON."""
        if request.path == "/":
            return render_template_string(_BAD_PAGE, message=str(e)), 400
        return _error(400, str(e))

    @app.errorhandler(413)
    def too_large(_e):
        return _error(413, f"body larger than {MAX_BODY_BYTES} bytes")

    return app

