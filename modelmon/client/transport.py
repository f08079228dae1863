"""Where the client's batches go: POST /ingest (HttpTransport) or a local JSONL file (FileTransport).

A transport has one method that matters, `send(lines) -> Delivery`: it gets the serialised
records of one batch (bytes, no newline) and says how many were delivered and how many failed —
every line is one or the other, and `send` never raises. Only the logger's worker thread calls
it. `close()` releases the connection or file. Any object with these two methods can be passed
to `PredictionLogger(transport=...)`.
"""
from __future__ import annotations

import http.client
import logging
import os
import ssl
import threading
import urllib.parse
import zlib
from dataclasses import dataclass
from pathlib import Path

import orjson

from modelmon.client.rotating import RotatingLog
from modelmon.client.warn import Throttled

log = logging.getLogger("modelmon.client")

# 409: the exporter is still applying the first attempt of this batch (same Idempotency-Key).
RETRY_STATUSES = frozenset({409, 429, 500, 502, 503, 504})
MAX_BACKOFF = 30.0  # seconds: the longest single wait, whatever Retry-After or the doubling say
GZIP_LEVEL = 1  # NDJSON of one model compresses ~5x already at level 1, at a fraction of level 6's CPU


@dataclass
class Delivery:
    sent: int = 0
    failed: int = 0
    retries: int = 0  # attempts repeated after a retryable failure
    bytes: int = 0  # bytes written to the wire or the file (compressed when gzipped)

    def add(self, other: "Delivery") -> None:
        self.sent += other.sent
        self.failed += other.failed
        self.retries += other.retries
        self.bytes += other.bytes


def ndjson(lines: list[bytes]) -> bytes:
    return b"\n".join(lines) + b"\n"


def gzip_bytes(data: bytes) -> bytes:
    """One gzip member (zlib.compress has no wbits before Python 3.11)."""
    c = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def read_token_file(path: str | os.PathLike) -> str:
    token = Path(path).read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"token file {path} is empty")
    return token


class HttpTransport:
    """NDJSON batches to the exporter's POST /ingest over one keep-alive connection.

    - 200: all sent. 207 / 400 with the exporter's counts: `accepted` sent, the rest failed
      (their reasons logged). 413: the batch is split in two and each half sent (a single record
      too large fails).
    - Connection errors, timeouts, 429 and 5xx: retried `retries` times, waiting `backoff`,
      2 x `backoff`, ... (Retry-After honoured, at most MAX_BACKOFF). Then the batch fails.
      Every batch carries a random `Idempotency-Key`, the same on each of its retries: a retry of a
      request the exporter applied but whose answer was lost (a timeout) gets the first answer
      back and applies nothing (exactly once, while the same exporter process answers the retry).
    - 401 with a token file: the file is read again (a rotated secret) and the batch retried
      once if the token changed. Any other 4xx: failed at once, the exporter's reason logged.
    `abort` (an Event) cuts a backoff short: the batch fails at once (the logger's close timeout).
    """

    def __init__(self, url: str, token: str | None = None, token_file: str | os.PathLike | None = None,
                 gzip: bool = True, retries: int = 3, backoff: float = 0.5, timeout: float = 5.0,
                 abort: threading.Event | None = None, ssl_context: ssl.SSLContext | None = None):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be http(s)://HOST[:PORT]/PATH, got {url!r}")
        if retries < 0 or backoff < 0 or timeout <= 0:
            raise ValueError("retries and backoff must be >= 0 and timeout > 0")
        self.url = url
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._ssl = ssl_context
        self.token_file = token_file
        if token is None and token_file is not None:
            token = read_token_file(token_file)
        if token is None:
            token = os.environ.get("MODELMON_INGEST_TOKEN") or None
        self.token = token
        self.gzip = gzip
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.abort = abort or threading.Event()
        self._conn: http.client.HTTPConnection | None = None
        self._conn_used = False  # whether the open connection already carried a request
        self._warn = Throttled(log)

    # -- one request ------------------------------------------------------------------------

    def _headers(self, body_len: int, key: str) -> dict:
        h = {"Content-Type": "application/x-ndjson", "Content-Length": str(body_len), "Idempotency-Key": key}
        if self.gzip:
            h["Content-Encoding"] = "gzip"
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        return h

    def _connect(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout,
                                                         context=self._ssl or ssl.create_default_context())
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
            self._conn_used = False
        return self._conn

    def _post(self, body: bytes, key: str) -> tuple[int, dict, bytes]:
        """One POST; transport errors raise (OSError, HTTPException)."""
        conn = self._connect()
        reused = self._conn_used
        try:
            conn.request("POST", self._path, body, self._headers(len(body), key))
            self._conn_used = True
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            self.close()
            if not reused or not isinstance(e, (ConnectionError, http.client.BadStatusLine)):
                raise
            # The server may have closed an idle keep-alive connection just as we sent: one more try
            # on a fresh connection before this counts as a failure.
            conn = self._connect()
            conn.request("POST", self._path, body, self._headers(len(body), key))
            self._conn_used = True
            resp = conn.getresponse()
            data = resp.read()
        if resp.will_close:
            self.close()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data

    # -- a batch ------------------------------------------------------------------------------

    def send(self, lines: list[bytes]) -> Delivery:
        raw = ndjson(lines)
        body = gzip_bytes(raw) if self.gzip else raw
        n = len(lines)
        key = os.urandom(16).hex()  # one per batch, kept across its retries (a split half gets its own)
        out = Delivery()
        attempt = 0
        token_reread = False
        while True:
            delay = None
            try:
                status, headers, data = self._post(body, key)
            except (OSError, http.client.HTTPException) as e:
                status, headers, data = None, {}, b""
                problem = f"{type(e).__name__}: {e}"
            else:
                out.bytes += len(body)
                problem = f"HTTP {status}: {_reason(data)}"
                if status == 200:
                    accepted = _counts(data, n)[0]
                    out.sent += accepted
                    out.failed += n - accepted
                    return out
                if status in (207, 400) and _counts(data, None)[0] is not None:
                    accepted, _ = _counts(data, n)
                    out.sent += accepted
                    out.failed += n - accepted
                    self._warn(("rejects", status), "modelmon client: the exporter refused %d of %d records: %s",
                               n - accepted, n, _errors(data))
                    return out
                if status == 413 and n > 1:
                    half = n // 2
                    out.add(self.send(lines[:half]))
                    out.add(self.send(lines[half:]))
                    return out
                if status == 401 and self.token_file is not None and not token_reread:
                    token_reread = True
                    try:
                        fresh = read_token_file(self.token_file)
                    except (OSError, ValueError) as e:
                        fresh = self.token
                        self._warn("token", "modelmon client: cannot read the token file again: %s", e)
                    if fresh != self.token:
                        self.token = fresh
                        continue
                if status not in RETRY_STATUSES:
                    out.failed += n
                    self._warn(("status", status), "modelmon client: %s refused a batch of %d records (not retried): %s",
                               self.url, n, problem)
                    return out
                delay = _retry_after(headers.get("retry-after"))
            if attempt >= self.retries or self.abort.is_set():
                out.failed += n
                self._warn("gave_up", "modelmon client: %d records failed after %d attempts to %s: %s",
                           n, attempt + 1, self.url, problem)
                return out
            wait = min(MAX_BACKOFF, max(self.backoff * (2 ** attempt), delay or 0.0))
            attempt += 1
            out.retries += 1
            if self.abort.wait(wait):  # closing: give up now rather than after the backoff
                out.failed += n
                self._warn("aborted", "modelmon client: %d records failed: the logger was closed while "
                                      "retrying (%s)", n, problem)
                return out

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
            self._conn = None


def _counts(data: bytes, default: int | None) -> tuple[int | None, int | None]:
    """(accepted, rejected) from the exporter's JSON answer, or (default, 0)."""
    try:
        doc = orjson.loads(data)
        accepted, rejected = doc["accepted"], doc["rejected"]
        if type(accepted) is int and type(rejected) is int:
            return accepted, rejected
    except (orjson.JSONDecodeError, KeyError, TypeError):
        pass
    return default, 0


def _reason(data: bytes) -> str:
    try:
        doc = orjson.loads(data)
        if isinstance(doc, dict) and "error" in doc:
            return str(doc["error"])[:300]
    except orjson.JSONDecodeError:
        pass
    return data[:300].decode("utf-8", "replace")


def _errors(data: bytes) -> str:
    """The first few per-record reasons of a 207/400 answer."""
    try:
        errors = orjson.loads(data).get("errors") or []
        return "; ".join(f"#{e.get('index')} {e.get('reason')}: {e.get('message')}" for e in errors[:3])
    except (orjson.JSONDecodeError, AttributeError):
        return _reason(data)


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: the doubling backoff is good enough


class FileTransport:
    """Appends each batch to a JSONL file with one write, optionally rotating by rename past `rotate_bytes`.

    A failed write (disk full, file removed from a read-only mount) fails its batch and is logged;
    the file is reopened for the next one. As a failed write may have left part of a line, the next
    write starts with a newline: the exporter then refuses one broken line (counted), not two.
    """

    def __init__(self, path: str | os.PathLike, rotate_bytes: int | None = None):
        self.path = Path(path)
        self.rotate_bytes = rotate_bytes
        self._fh = None
        self._torn = False
        self._warn = Throttled(log)
        self._open()  # at construction: a mistyped directory is the caller's error, raised there

    def _open(self):
        if self.rotate_bytes is not None:
            self._fh = RotatingLog(self.path, self.rotate_bytes)
        else:
            self._fh = open(self.path, "ab", buffering=0)
        return self._fh

    @property
    def rotations(self) -> int:
        return getattr(self._fh, "rotations", 0)

    def send(self, lines: list[bytes]) -> Delivery:
        data = ndjson(lines)
        if self._torn:
            data = b"\n" + data
        try:
            fh = self._fh or self._open()
            if isinstance(fh, RotatingLog):
                fh.write(data)
            else:
                view = memoryview(data)
                while view:
                    view = view[fh.write(view):]
        except OSError as e:
            self._torn = True
            self.close()
            self._warn("write", "modelmon client: %d records failed: cannot write %s: %s", len(lines), self.path, e)
            return Delivery(failed=len(lines))
        self._torn = False
        return Delivery(sent=len(lines), bytes=len(data))

    def close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass
            self._fh = None
