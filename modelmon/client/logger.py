"""PredictionLogger: log predictions from inside a model service without slowing or breaking a request.

`log()` and `label()` check the record, append it to a bounded in-memory queue and return; a
background thread takes batches off the queue, serialises them (orjson) and hands them to the
transport (HTTP or file). The request path never waits on the network or the disk and never
raises: a full queue drops the record, a broken one is refused, and both are counted.

Accounting, in records (`stats()`): every call ends in exactly one of `queued`, `dropped`
(queue full or logger closed) and `invalid` (refused at the call site); every queued record
ends in exactly one of `sent` and `failed`, or is still `pending`:

    calls == queued + dropped + invalid        queued == sent + failed + pending
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections import deque
from typing import Any

import orjson

from modelmon.client import records
from modelmon.client.transport import Delivery, FileTransport, HttpTransport
from modelmon.client.warn import Throttled

log = logging.getLogger("modelmon.client")

_OUTCOMES = ("queued", "sent", "dropped", "failed", "invalid")
_live: "weakref.WeakSet[PredictionLogger]" = weakref.WeakSet()  # for the fork hook


class PredictionLogger:
    """Non-blocking prediction logger. Exactly one of `url`, `path` or `transport`.

    url: the exporter's POST /ingest (NDJSON batches, gzip unless gzip=False, bearer token from
        `token`, else `token_file`, else env MODELMON_INGEST_TOKEN; `retries` with exponential
        `backoff`; `timeout` per request).
    path: a JSONL file the exporter follows (`modelmon serve --log PATH`), rotated by rename to
        PATH.1 past `rotate_bytes` (an int or "100M").
    transport: any object with `send(lines) -> Delivery` and `close()` (see transport.py).
    queue_size: records held in memory at most; past it, log() drops and counts.
    batch_size / flush_interval: a batch leaves when this many records wait, or this many seconds passed.
    registry: a prometheus_client CollectorRegistry (e.g. prometheus_client.REGISTRY) to expose
        `modelmon_client_records_total{outcome}` and `modelmon_client_queue_size` in; None: no metrics.
    strict: raise InvalidRecord (ValueError/TypeError) from log()/label() instead of counting and
        logging it: for the service's tests, never in production.
    """

    def __init__(self, url: str | None = None, path: str | os.PathLike | None = None, *,
                 token: str | None = None, token_file: str | os.PathLike | None = None,
                 queue_size: int = 10_000, batch_size: int = 500, flush_interval: float = 1.0,
                 retries: int = 3, backoff: float = 0.5, timeout: float = 5.0,
                 rotate_bytes: int | str | None = None, gzip: bool = True, registry: Any = None,
                 transport: Any = None, strict: bool = False, close_timeout: float = 5.0):
        if sum(x is not None for x in (url, path, transport)) != 1:
            raise ValueError("give exactly one of url= (POST /ingest), path= (a JSONL file) or transport=")
        if queue_size < 1 or batch_size < 1 or flush_interval <= 0:
            raise ValueError("queue_size and batch_size must be >= 1 and flush_interval > 0")
        if rotate_bytes is not None and path is None:
            raise ValueError("rotate_bytes is for a file (path=)")
        if isinstance(rotate_bytes, str):
            from modelmon.client.rotating import parse_size
            rotate_bytes = parse_size(rotate_bytes)
        self._abort = threading.Event()  # set when close() gives up: retries and backoffs stop
        if url is not None:
            transport = HttpTransport(url, token=token, token_file=token_file, gzip=gzip, retries=retries,
                                      backoff=backoff, timeout=timeout, abort=self._abort)
        elif path is not None:
            transport = FileTransport(path, rotate_bytes)
        self.transport = transport
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.close_timeout = close_timeout
        self.strict = strict
        self._signal_at = min(batch_size, queue_size)
        self._warn = Throttled(log)
        self._reset_state()
        self._closed = False
        self._metrics = None
        if registry is not None:
            from modelmon.client.metrics import attach
            self._metrics = attach(registry, self)
        self._start()
        atexit.register(self._at_exit)
        _live.add(self)

    def _reset_state(self) -> None:
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)  # notified when sent + failed grows
        self._wake = threading.Event()
        self._queue: deque = deque()
        self._counts = dict.fromkeys(_OUTCOMES, 0)
        self._retries = self._bytes = self._batches = 0
        self._stopping = False

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="modelmon-client", daemon=True)
        self._thread.start()

    # -- the request path -----------------------------------------------------------------------

    def log(self, *, model: str, features: dict | None = None, prediction: Any = None, score: float | None = None,
            scores: dict | None = None, id: str | int | None = None, version: str | None = None,
            latency_ms: float | None = None, status: str = "ok", shadow: bool = False, ts: Any = None,
            label: Any = None) -> bool:
        """Queue one prediction record. True: queued; False: dropped or invalid (counted, logged)."""
        try:
            rec = records.prediction(model, features, prediction, score, scores, id, version, latency_ms,
                                     status, shadow, ts, label)
        except Exception as e:  # InvalidRecord, or whatever an exotic value raised while checked
            return self._invalid(e, model)
        return self._put(rec)

    def label(self, *, model: str, id: str | int, label: Any, ts: Any = None) -> bool:
        """Queue a late label for the prediction logged earlier with the same model and id."""
        try:
            rec = records.late_label(model, id, label, ts)
        except Exception as e:
            return self._invalid(e, model)
        return self._put(rec)

    def _put(self, rec: dict) -> bool:
        with self._lock:
            if len(self._queue) >= self.queue_size or self._closed:
                self._counts["dropped"] += 1
                dropped, closed = self._counts["dropped"], self._closed
            else:
                self._queue.append(rec)
                self._counts["queued"] += 1
                if len(self._queue) == self._signal_at:
                    self._wake.set()
                return True
        if closed:
            self._warn("closed", "modelmon client: record dropped: the logger is closed (%d dropped in all)", dropped)
        else:
            self._warn("full", "modelmon client: queue full (%d records): record dropped (%d dropped in all); "
                               "the exporter is slow or unreachable", self.queue_size, dropped)
        return False

    def _invalid(self, e: Exception, model: Any) -> bool:
        if self.strict:
            raise e
        with self._lock:
            self._counts["invalid"] += 1
            n = self._counts["invalid"]
        name = model[:100] if type(model) is str else f"<{type(model).__name__}>"
        self._warn(("invalid", name), "modelmon client: invalid record for model %r not logged (%d invalid in all): "
                   "%s", name, n, e if isinstance(e, records.InvalidRecord) else f"{type(e).__name__}: {e}")
        return False

    # -- the worker -------------------------------------------------------------------------------

    def _take(self) -> list[dict]:
        with self._lock:
            q = self._queue
            n = min(len(q), self.batch_size)
            return [q.popleft() for _ in range(n)]

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            while batch := self._take():
                try:
                    self._deliver(batch)
                except Exception:  # the worker must outlive any surprise; the books still balance
                    log.exception("modelmon client: a batch of %d records failed", len(batch))
                    with self._lock:
                        self._counts["failed"] += len(batch)
                        self._done.notify_all()
            if self._stopping:
                with self._lock:
                    if not self._queue:
                        return

    def _deliver(self, batch: list[dict]) -> None:
        lines, bad = [], 0
        dumps = orjson.dumps
        for rec in batch:
            try:
                lines.append(dumps(rec))
            except TypeError as e:  # not expected after validation; counted, never fatal
                bad += 1
                self._warn("serialise", "modelmon client: record not serialisable: %s", e)
        result = Delivery()
        if lines:
            if self._abort.is_set():
                result.failed = len(lines)
            else:
                try:
                    result = self.transport.send(lines)
                except Exception:  # a custom transport's bug must not kill the thread
                    log.exception("modelmon client: transport failed on a batch of %d records", len(lines))
                    result = Delivery(failed=len(lines))
                if result.sent + result.failed != len(lines) or result.failed < 0:  # balanced books, whatever it said
                    result.sent = min(max(result.sent, 0), len(lines))
                    result.failed = len(lines) - result.sent
        with self._lock:
            c = self._counts
            c["sent"] += result.sent
            c["failed"] += result.failed + bad
            self._retries += result.retries
            self._bytes += result.bytes
            self._batches += 1 if result.sent else 0
            self._done.notify_all()

    # -- flush, close, stats ------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record queued before the call is sent or failed. False on timeout."""
        with self._lock:
            target = self._counts["queued"]
            if self._counts["sent"] + self._counts["failed"] >= target:
                return True
        if not self._thread.is_alive():  # closed and given up: what is left will never move
            return False
        self._wake.set()
        with self._done:
            return self._done.wait_for(lambda: self._counts["sent"] + self._counts["failed"] >= target, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Deliver what is queued (waiting at most `timeout`, default close_timeout), then stop.

        On timeout, retries stop and what is still queued is counted as failed. Later log() calls
        drop. True when nothing was left undelivered by the timeout. Called at interpreter exit."""
        timeout = self.close_timeout if timeout is None else timeout
        with self._lock:
            if self._closed:
                return self._pending() == 0
            self._closed = True
            self._stopping = True
        atexit.unregister(self._at_exit)
        self._wake.set()
        self._thread.join(timeout)
        clean = not self._thread.is_alive()
        if not clean:
            self._abort.set()  # the worker fails the rest quickly (a request in flight ends by its timeout)
            self._wake.set()
            self._thread.join(getattr(self.transport, "timeout", 5.0) + 1.0)
        if not self._thread.is_alive():
            self.transport.close()
        if self._metrics is not None:
            self._metrics.retire(self)
        return clean and self._pending() == 0

    def _at_exit(self) -> None:
        try:
            self.close()
        except Exception:  # at exit, a message is all that can help
            log.exception("modelmon client: close at exit failed")

    def _pending(self) -> int:
        c = self._counts
        return c["queued"] - c["sent"] - c["failed"]

    def stats(self) -> dict[str, int]:
        """Counts in records since the logger started (see the module doc for how they add up),
        plus `pending` (queued, not yet sent or failed), `batches` delivered, `retries`, `bytes`."""
        with self._lock:
            out = dict(self._counts)
            out["pending"] = self._pending()
            out["retries"], out["bytes"], out["batches"] = self._retries, self._bytes, self._batches
        return out

    def queue_length(self) -> int:
        return len(self._queue)

    def __enter__(self) -> "PredictionLogger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- fork ---------------------------------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        """A forked worker (gunicorn --preload) gets a fresh, empty logger of its own: the parent's
        queue and counts stay the parent's, and the connection is not shared."""
        self._reset_state()
        self._abort = threading.Event()
        transport = self.transport
        if isinstance(transport, HttpTransport):
            transport._conn = None  # the parent's socket: never used (nor closed) by the child
            transport.abort = self._abort
        if self._closed:
            return
        self._start()


def _reinit_after_fork() -> None:
    for logger in list(_live):
        logger._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)
