"""`modelmon receiver`: the on-call inbox Alertmanager's webhook posts to.

POST /webhook      Alertmanager webhook payload v4 -> 200 once stored, 400 on a bad payload,
                   401 without the shared secret (when one is set), 500 if it could not be stored
                   (Alertmanager then retries, so nothing accepted is lost)
GET  /             the inbox as a readable page (firing first), 200 alerts a page, true totals
GET  /api/alerts   JSON, one page: ?limit=1..1000 (default 100), ?before=<cursor> (the previous page's
                   `next`), filters ?status=firing|resolved&model=NAME; answers alerts, next, total and
                   counts by status; /api/alerts/<fingerprint> adds history
GET  /healthz      200 while the database answers
"""
from __future__ import annotations

import hmac
import logging
import re
import time
from datetime import datetime, timezone
from urllib.parse import urlencode

from flask import Flask, Response, jsonify, render_template_string, request

from modelmon.receiver.payload import STATUSES, PayloadError, parse_notification
from modelmon.receiver.store import AlertStore, CursorError, Page

MAX_BODY_BYTES = 4 << 20
API_LIMIT = 100     # alerts per /api/alerts page unless ?limit= says otherwise
MAX_LIMIT = 1000
PAGE_LIMIT = 200    # alerts per inbox page
_DIGITS = re.compile(r"[0-9]{1,7}")
log = logging.getLogger("modelmon.receiver")

# Jinja autoescapes everything rendered by render_template_string: labels are untrusted text.
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="30">
<title>modelmon alerts ({{ page.counts.firing }} firing)</title>
<style>
 body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
 table { border-collapse: collapse; width: 100%; }
 th, td { text-align: left; padding: .4em .6em; vertical-align: top; }
 tr { border-bottom: 1px solid #ddd; } th { background: #f4f4f4; }
 .firing .status { color: #b00; font-weight: bold; } .resolved { color: #777; }
 .critical { color: #b00; } .warning { color: #a60; } .desc { color: #444; } small { color: #777; }
</style></head><body>
<h1>modelmon alerts</h1>
<p>{{ page.counts.firing }} firing, {{ page.counts.resolved }} resolved · JSON: <a href="api/alerts">/api/alerts</a>
 · refreshes every 30s</p>
{% if alerts %}
<p>showing {{ page.start + 1 }}–{{ page.start + alerts|length }} of {{ page.total }}
{%- if page.next %} · <a href="{{ next_href }}">next page</a>{% endif %}
{%- if page.start %} · <a href="{{ first_href }}">first page</a>{% endif %}</p>
<table>
<tr><th>Status</th><th>Severity</th><th>Alert</th><th>Model</th><th>What happened</th><th>Since</th>
    <th>Last notified</th><th>Links</th></tr>
{% for a in alerts %}
<tr class="{{ a.status }}">
 <td class="status">{{ a.status }}</td>
 <td class="{{ a.severity }}">{{ a.severity }}</td>
 <td>{{ a.alertname }}<br><small>{{ a.team }}</small></td>
 <td>{{ a.model }}{% if a.version %}<br><small>{{ a.version }}</small>{% endif %}</td>
 <td><b>{{ a.summary }}</b><div class="desc">{{ a.description }}</div></td>
 <td>{{ a.starts_at }}{% if a.status == "resolved" %}<br><small>resolved {{ a.ends_at }}</small>{% endif %}</td>
 <td>{{ a.last_received }}<br><small>{{ a.notifications }} notification(s)</small></td>
 <td>{% for title, url in a.links %}<a href="{{ url }}">{{ title }}</a><br>{% endfor %}</td>
</tr>
{% endfor %}
</table>
{% elif page.total %}<p>No more alerts after this point ({{ page.total }} in all)
 · <a href="{{ first_href }}">first page</a></p>
{% else %}<p>No alert received yet.</p>{% endif %}
</body></html>
"""


_BAD_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>modelmon alerts: bad request</title></head><body>
<h1>Bad request</h1><p>{{ message }}</p><p><a href="./">Back to the first page</a></p></body></html>
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


def _page(store: AlertStore, default_limit: int) -> Page:
    """The page the query string asks for; _BadRequest with a message for the client."""
    status = request.args.get("status")
    if status is not None and status not in STATUSES:
        raise _BadRequest(f"status: expected one of {', '.join(STATUSES)}, got {status!r}")
    limit = _limit(default_limit)
    try:
        return store.page(status=status, model=request.args.get("model"), before=request.args.get("before"),
                          limit=limit)
    except CursorError:
        raise _BadRequest("before: malformed cursor (pass back the `next` value of the previous page, "
                          "or leave `before` out for the first page)") from None


def _authorized(header: str, token: str) -> bool:
    """`Authorization: Bearer <token>`, the scheme case-insensitive (RFC 7235), the token compared in constant time."""
    parts = header.split(None, 1)
    if len(parts) != 2 or parts[0].lower() != "bearer":
        return False
    # WSGI hands header values over as latin-1 text: back to the bytes the client sent.
    return hmac.compare_digest(parts[1].strip().encode("latin-1", "replace"), token.encode())


def _safe_url(url: str) -> str | None:
    """Only http(s) links: an annotation must not smuggle javascript: into the page."""
    return url if url.startswith(("http://", "https://")) else None


def _row(a: dict) -> dict:
    annotations, labels = a["annotations"], a["labels"]
    links = [(title, _safe_url(annotations.get(key, "") or a.get(key, "")))
             for title, key in (("runbook", "runbook_url"), ("dashboard", "dashboard_url"),
                                ("source", "generator_url"))]
    return {
        **a,
        "team": labels.get("team", ""),
        "version": labels.get("version", ""),
        "summary": annotations.get("summary", ""),
        "description": annotations.get("description", ""),
        "last_received": datetime.fromtimestamp(a["last_received_at"], timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ"),
        "links": [(title, url) for title, url in links if url],
    }


def create_app(store: AlertStore, token: str | None = None) -> Flask:
    app = Flask("modelmon.receiver")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    def _error(status: int, message: str) -> tuple[Response, int]:
        return jsonify(error=message), status

    @app.post("/webhook")
    def webhook():
        if token is not None:
            if not _authorized(request.headers.get("Authorization", ""), token):
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
        try:
            page = _page(store, API_LIMIT)
        except _BadRequest as e:
            return _error(400, str(e))
        return jsonify(alerts=page.alerts, next=page.next, total=page.total, counts=page.counts)

    @app.get("/api/alerts/<fingerprint>")
    def api_alert(fingerprint: str):
        alert = store.alert(fingerprint)
        if alert is None:
            return _error(404, f"no alert with fingerprint {fingerprint!r}")
        return jsonify(alert)

    @app.get("/")
    def inbox():
        try:
            page = _page(store, PAGE_LIMIT)
        except _BadRequest as e:
            return render_template_string(_BAD_PAGE, message=str(e)), 400
        # Links keep the filters and page size of this page; only the cursor changes.
        kept = {k: request.args[k] for k in ("status", "model", "limit") if k in request.args}
        return render_template_string(
            _PAGE, page=page, alerts=[_row(a) for a in page.alerts],
            next_href="?" + urlencode({**kept, "before": page.next or ""}),
            first_href="?" + urlencode(kept) if kept else "./")

    @app.get("/healthz")
    def healthz():
        try:
            store.check()
        except Exception as e:  # noqa: BLE001 - report any database failure as unhealthy
            return _error(503, f"database unavailable: {e}")
        return Response("ok\n", mimetype="text/plain")

    @app.errorhandler(413)
    def too_large(_e):
        return _error(413, f"body larger than {MAX_BODY_BYTES} bytes")

    return app
