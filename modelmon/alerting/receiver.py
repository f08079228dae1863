"""`modelmon receiver`: the on-call inbox Alertmanager's webhook posts to.

POST /webhook      Alertmanager webhook payload v4 -> 200 once stored, 400 on a bad payload,
                   401 without the shared secret (when one is set), 500 if it could not be stored
                   (Alertmanager then retries, so nothing accepted is lost)
GET  /             the inbox as a readable page (firing first)
GET  /api/alerts   JSON, filters ?status=firing|resolved&model=NAME; /api/alerts/<fingerprint> adds history
GET  /healthz      200 while the database answers
"""
from __future__ import annotations

import hmac
import logging
import time
from datetime import datetime, timezone

from flask import Flask, Response, jsonify, render_template_string, request

from modelmon.alerting.payload import STATUSES, PayloadError, parse_notification
from modelmon.alerting.store import AlertStore

MAX_BODY_BYTES = 4 << 20
log = logging.getLogger("modelmon.receiver")

# Jinja autoescapes everything rendered by render_template_string: labels are untrusted text.
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="30">
<title>modelmon alerts ({{ firing }} firing)</title>
<style>
 body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
 table { border-collapse: collapse; width: 100%; }
 th, td { text-align: left; padding: .4em .6em; vertical-align: top; }
 tr { border-bottom: 1px solid #ddd; } th { background: #f4f4f4; }
 .firing .status { color: #b00; font-weight: bold; } .resolved { color: #777; }
 .critical { color: #b00; } .warning { color: #a60; } .desc { color: #444; } small { color: #777; }
</style></head><body>
<h1>modelmon alerts</h1>
<p>{{ firing }} firing, {{ resolved }} resolved · JSON: <a href="api/alerts">/api/alerts</a> · refreshes every 30s</p>
{% if alerts %}
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
{% else %}<p>No alert received yet.</p>{% endif %}
</body></html>
"""


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
            auth = request.headers.get("Authorization", "")
            if not hmac.compare_digest(auth.encode(), f"Bearer {token}".encode()):
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
        status = request.args.get("status")
        if status is not None and status not in STATUSES:
            return _error(400, f"status: expected one of {', '.join(STATUSES)}, got {status!r}")
        return jsonify(alerts=store.alerts(status=status, model=request.args.get("model")))

    @app.get("/api/alerts/<fingerprint>")
    def api_alert(fingerprint: str):
        alert = store.alert(fingerprint)
        if alert is None:
            return _error(404, f"no alert with fingerprint {fingerprint!r}")
        return jsonify(alert)

    @app.get("/")
    def inbox():
        alerts = [_row(a) for a in store.alerts()]
        firing = sum(a["status"] == "firing" for a in alerts)
        return render_template_string(_PAGE, alerts=alerts, firing=firing, resolved=len(alerts) - firing)

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
