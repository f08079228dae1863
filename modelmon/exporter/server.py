"""The exporter's HTTP face: /metrics, /healthz, /ready and POST /ingest (flask)."""
from __future__ import annotations

import hmac
import os

import orjson
from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from werkzeug.exceptions import RequestEntityTooLarge

from modelmon.exporter.collector import ExporterCollector
from modelmon.exporter.pipeline import Exporter
from modelmon.exporter.records import iter_lines

DEFAULT_INGEST_MAX_BYTES = 10 << 20
MAX_REPORTED_ERRORS = 100  # per response; the counts stay exact


def create_app(exporter: Exporter, ingest_token: str | None = None,
               ingest_max_bytes: int = DEFAULT_INGEST_MAX_BYTES) -> Flask:
    app = Flask("modelmon.exporter")
    app.config["MAX_CONTENT_LENGTH"] = ingest_max_bytes
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExporterCollector(exporter))

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), mimetype=None, content_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    @app.get("/ready")
    def ready():
        ok, detail = exporter.readiness()
        return jsonify(detail), (200 if ok else 503)

    @app.get("/")
    def index():
        return Response("modelmon exporter: /metrics /healthz /ready POST /ingest\n", mimetype="text/plain")

    @app.post("/ingest")
    def ingest():
        if ingest_token is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {ingest_token}".encode()):
                return jsonify(error="missing or wrong bearer token"), 401, {"WWW-Authenticate": "Bearer"}
        try:
            body = request.get_data(cache=False)
        except RequestEntityTooLarge:
            return jsonify(error=f"body larger than {ingest_max_bytes} bytes"), 413
        if not body.strip():
            return jsonify(error="empty body: send NDJSON (one record a line) or a JSON array"), 400
        if body.lstrip()[:1] == b"[":
            try:
                objs = orjson.loads(body)
            except orjson.JSONDecodeError as e:
                return jsonify(error=f"body starts like a JSON array but is not valid JSON: {e}"), 400
            result = exporter.ingest_objects(objs, "http")
            total = len(objs)
        else:
            lines = list(iter_lines(body))
            result = exporter.ingest_lines(lines, "http")
            total = len(lines)
        errors = [{"index": r.index, "reason": r.reason, "message": r.message}
                  for r in result.rejects[:MAX_REPORTED_ERRORS]]
        payload = {"received": total, "accepted": result.accepted, "rejected": len(result.rejects),
                   "errors": errors, "errors_truncated": len(result.rejects) > MAX_REPORTED_ERRORS}
        if not result.rejects:
            return jsonify(payload), 200
        return jsonify(payload), (207 if result.accepted else 400)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_e):
        return jsonify(error=f"body larger than {ingest_max_bytes} bytes"), 413

    return app


def ingest_token_from(arg: str | None) -> str | None:
    """--ingest-token wins; else MODELMON_INGEST_TOKEN; empty means no auth."""
    token = arg if arg is not None else os.environ.get("MODELMON_INGEST_TOKEN")
    return token or None
