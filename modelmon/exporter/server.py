"""The exporter's HTTP face: /metrics, /healthz, /ready and POST /ingest (flask).

POST /ingest takes NDJSON (one record a line) or a JSON array, optionally `Content-Encoding: gzip`.
Limits hold on the bytes actually read, whatever the framing (Content-Length or chunked):

- the body as sent over `ingest_max_bytes` -> 413, nothing applied;
- gzip decompressed past `ingest_max_decompressed_bytes` -> 413, nothing applied (zip bombs);
  a corrupt or truncated gzip stream -> 400; any coding but gzip and identity -> 415.

NDJSON is parsed and applied in batches of lines cut from ~1 MiB slabs of the body, so the
memory of a request stays proportional to its body, not to its number of records. The response
lists the first MAX_REPORTED_ERRORS rejects (indexes count the non-empty lines, or the array's
items, from 0); `rejected` is exact and `modelmon_records_rejected_total` counts every one.

A request with an `Idempotency-Key` header (modelmon.client sends one per batch) is applied once:
a retry with the same key gets the first answer again and applies nothing (exporter/idempotency.py).

A request with a `ce-id` header is a CloudEvent in binary mode from KServe's inference logger: after
the same token and body checks it goes to exporter/kserve.py (202 waiting or joined, 400 refused).
"""
from __future__ import annotations

import os
import re
import zlib
from typing import Iterator

import orjson
from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from werkzeug.exceptions import RequestEntityTooLarge

from modelmon.exporter import idempotency
from modelmon.exporter.collector import ExporterCollector
from modelmon.exporter.kserve import KServeReceiver
from modelmon.exporter.pipeline import Exporter
from modelmon.exporter.records import iter_lines
from modelmon.serving import bearer_matches

DEFAULT_INGEST_MAX_BYTES = 10 << 20
DECOMPRESSED_FACTOR = 4  # default decompressed limit = this x the body limit
MAX_REPORTED_ERRORS = 100  # per response; the counts stay exact
BATCH_LINES = 5000  # records parsed and applied at a time (the exporter lock is released in between)
SLAB_BYTES = 1 << 20  # the body is split into lines this much at a time
_READ_BYTES = 1 << 20
_NON_SPACE = re.compile(rb"\S")
_GZIP = ("gzip", "x-gzip")


class _Refused(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def read_body(stream, limit: int) -> bytes:
    """The whole body, counting the bytes actually read; over `limit` -> 413."""
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = stream.read(min(_READ_BYTES, limit + 1 - size))
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise _Refused(413, f"body larger than {limit} bytes")
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def content_codings(header: str | None) -> list[str]:
    """The codings applied to the body, identity left out; 415 for any but gzip."""
    codings = [c.strip().lower() for c in (header or "").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if codings and (len(codings) > 1 or codings[0] not in _GZIP):
        raise _Refused(415, f"unsupported Content-Encoding {header!r}: send gzip or identity",
                       {"Accept-Encoding": "gzip, identity"})
    return codings


def gunzip(data: bytes, limit: int) -> bytearray:
    """Decompress gzip (several members allowed) incrementally; more than `limit` bytes out -> 413."""
    out = bytearray()
    rest = data
    while True:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pending = rest
        try:
            while not d.eof:
                chunk = d.decompress(pending, min(_READ_BYTES, limit + 1 - len(out)))
                pending = d.unconsumed_tail
                if not chunk and not pending:
                    break  # input exhausted before the end of the stream
                out += chunk
                if len(out) > limit:
                    raise _Refused(413, f"body larger than {limit} bytes once decompressed")
        except zlib.error as e:
            raise _Refused(400, f"corrupt gzip body: {e}") from None
        if not d.eof:
            raise _Refused(400, "corrupt gzip body: truncated stream")
        rest = d.unused_data
        if not rest.strip(b"\0"):  # trailing zero padding, as gzip(1) tolerates
            return out


def iter_batches(body: bytes | bytearray, batch_lines: int = BATCH_LINES,
                 slab_bytes: int = SLAB_BYTES) -> Iterator[list[bytes]]:
    """Non-empty lines of an NDJSON body, `batch_lines` at a time, cut slab by slab at newlines."""
    view = memoryview(body)
    size = len(body)
    start = 0
    batch: list[bytes] = []
    while start < size:
        end = start + slab_bytes
        if end >= size:
            end = size
        else:
            nl = body.rfind(b"\n", start, end)
            if nl < 0:  # one line longer than a slab
                nl = body.find(b"\n", end)
            end = size if nl < 0 else nl + 1
        for line in iter_lines(bytes(view[start:end])):
            batch.append(line)
            if len(batch) >= batch_lines:
                yield batch
                batch = []
        start = end
    if batch:
        yield batch


class _Tally:
    """Counts over the batches of one request, with the first errors listed by body position."""

    def __init__(self) -> None:
        self.received = self.accepted = self.rejected = 0
        self.errors: list[dict] = []

    def add(self, result, offset: int, size: int) -> None:
        self.received += size
        self.accepted += result.accepted
        self.rejected += result.rejected
        for r in result.errors:
            if len(self.errors) >= MAX_REPORTED_ERRORS:
                break
            self.errors.append({"index": offset + r.index, "reason": r.reason, "message": r.message})

    def result(self) -> tuple[dict, int]:
        payload = {"received": self.received, "accepted": self.accepted, "rejected": self.rejected,
                   "errors": self.errors, "errors_truncated": self.rejected > len(self.errors)}
        if not self.rejected:
            return payload, 200
        return payload, (207 if self.accepted else 400)


def apply_records(exporter: Exporter, body: bytes | bytearray) -> tuple[dict, int]:
    """Apply an NDJSON or JSON-array body of records: (the JSON answer, HTTP status)."""
    first = _NON_SPACE.search(body)
    if first is None:
        return {"error": "empty body: send NDJSON (one record a line) or a JSON array"}, 400
    tally = _Tally()
    if body[first.start()] == ord("["):
        try:
            objs = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            return {"error": f"body starts like a JSON array but is not valid JSON: {e}"}, 400
        del body
        for offset in range(0, len(objs), BATCH_LINES):
            batch = objs[offset:offset + BATCH_LINES]
            tally.add(exporter.ingest_objects(batch, "http"), offset, len(batch))
    else:
        for batch in iter_batches(body):
            tally.add(exporter.ingest_lines(batch, "http", blank_free=True), tally.received, len(batch))
    return tally.result()


def _json(payload: dict, status: int, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(payload), status=status, mimetype="application/json", headers=headers)


def create_app(exporter: Exporter, ingest_token: str | None = None,
               ingest_max_bytes: int = DEFAULT_INGEST_MAX_BYTES,
               ingest_max_decompressed_bytes: int | None = None) -> Flask:
    max_decompressed = ingest_max_decompressed_bytes or DECOMPRESSED_FACTOR * ingest_max_bytes
    app = Flask("modelmon.exporter")
    app.config["MAX_CONTENT_LENGTH"] = ingest_max_bytes  # early 413 on a Content-Length over the limit
    # Retried batches (the client's Idempotency-Key) answered once; counted on the exporter.
    seen_batches = idempotency.SeenBatches(lambda outcome: exporter.count_duplicate_batch(outcome))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExporterCollector(exporter))
    if isinstance(exporter, Exporter):  # bound InferenceServices show their counters at 0 from the start
        KServeReceiver.for_exporter(exporter)

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
        if ingest_token is not None and not bearer_matches(request.headers.get("Authorization", ""), ingest_token):
            return jsonify(error="missing or wrong bearer token"), 401, {"WWW-Authenticate": "Bearer"}
        try:
            gzipped = bool(content_codings(request.headers.get("Content-Encoding")))
            body: bytes | bytearray = read_body(request.stream, ingest_max_bytes)
            if gzipped:
                body = gunzip(body, max_decompressed)
        except _Refused as e:
            return jsonify(error=e.message), e.status, e.headers
        if "ce-id" in request.headers:  # a CloudEvent in binary mode: KServe's inference logger
            status, payload = KServeReceiver.for_exporter(exporter).handle(request.headers, body)
            return jsonify(payload), status
        key = request.headers.get(idempotency.HEADER)
        if key is None:
            return _json(*apply_records(exporter, body))
        if not key or len(key) > idempotency.MAX_KEY_LENGTH or not key.isprintable():
            return _json({"error": f"{idempotency.HEADER} must be 1 to {idempotency.MAX_KEY_LENGTH} printable "
                                   "characters"}, 400)
        seen = seen_batches.begin(key)
        if seen is False:
            return _json({"error": f"a request with this {idempotency.HEADER} is still being applied: retry"}, 409,
                         {"Retry-After": "1"})
        if seen is not True:  # answered before: the same answer, nothing applied again
            return Response(seen.body, status=seen.status, mimetype="application/json",
                            headers={"Idempotent-Replayed": "true"})
        try:
            payload, status = apply_records(exporter, body)
        except BaseException:
            seen_batches.abandon(key)
            raise
        answer = idempotency.Answer(status, orjson.dumps(payload))
        seen_batches.finish(key, answer)
        return Response(answer.body, status=status, mimetype="application/json")

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_e):
        return jsonify(error=f"body larger than {ingest_max_bytes} bytes"), 413

    return app


def ingest_token_from(arg: str | None) -> str | None:
    """--ingest-token wins; else MODELMON_INGEST_TOKEN; empty means no auth."""
    token = arg if arg is not None else os.environ.get("MODELMON_INGEST_TOKEN")
    return token or None
