"""Where the simulator's records go besides a file: a Redis Stream (`--stream`) or an exporter's
`POST /ingest` through the Python client (`--post`).

Each sink is a binary file object (write/flush/close) fed the very bytes `--out` would write, so
batch and live mode need no second code path and every way in carries the same records: a stream
entry's field ``record`` holds one line exactly as the file would (without its newline); the
client gets each line's fields as `log()`/`label()` keywords.

Nothing is dropped silently. In batch mode a record that cannot be delivered ends the run with an
error; in live mode (the demo's traffic, which must outlive a Redis restart or an exporter
restart) it is counted, warned about at most every ``WARN_EVERY`` seconds, and reported at the end.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

WARN_EVERY = 10.0  # seconds between two warnings about undelivered records (live mode)
HEARTBEAT_EVERY = 1.0  # seconds between two touches of the heartbeat file
# Query parameters of a --stream URL that belong to the consumer (`modelmon serve --stream`): the
# simulator accepts the consumer's URL as it is and ignores them.
CONSUMER_PARAMS = frozenset({"group", "consumer", "claim_idle", "batch", "block"})


class DeliveryError(RuntimeError):
    """Batch mode: records could not be delivered (the message says how many and why)."""


@dataclass(frozen=True)
class StreamTarget:
    """A parsed ``redis://[:PASSWORD@]HOST:PORT/DB?stream=NAME`` (``rediss://`` for TLS)."""

    connection_url: str  # the URL without modelmon's parameters: what redis-py connects to
    stream: str


def parse_stream_url(url: str) -> StreamTarget:
    """The Redis connection and the stream name of a --stream URL; ValueError names what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError(f"--stream: expected redis://HOST:PORT/DB?stream=NAME, got {url!r}")
    params = parse_qsl(parts.query, keep_blank_values=True)
    stream = [v for k, v in params if k == "stream"]
    if len(stream) != 1 or not stream[0]:
        raise ValueError(f"--stream: the URL needs exactly one stream=NAME, got {url!r}")
    unknown = sorted({k for k, _ in params} - CONSUMER_PARAMS - {"stream"})
    if unknown:
        raise ValueError(f"--stream: unknown parameter(s) {', '.join(unknown)} in {url!r} "
                         f"(known: stream, and the consumer's {', '.join(sorted(CONSUMER_PARAMS))})")
    path = parts.path or "/0"
    if path.strip("/") and not path.strip("/").isdigit():
        raise ValueError(f"--stream: the URL's path is the database number (/0), got {path!r}")
    rest = urlencode([(k, v) for k, v in params if k != "stream" and k not in CONSUMER_PARAMS])
    return StreamTarget(urlunsplit((parts.scheme, parts.netloc, path, rest, "")), stream[0])


def _lines(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    return [line for line in lines if line]


class _Counting:
    """Delivery bookkeeping shared by the sinks: delivered, undelivered, rate-limited warnings, and
    the heartbeat file (touched, at most once a second, while records get delivered: the stack's
    health check for traffic that writes no file of its own)."""

    def __init__(self, what: str, strict: bool, err: TextIO, clock: Callable[[], float],
                 heartbeat: str | Path | None = None):
        self.what = what
        self.strict = strict
        self.err = err
        self.clock = clock
        self.delivered = 0
        self.undelivered = 0
        self._warned_at: float | None = None
        self.heartbeat = Path(heartbeat) if heartbeat is not None else None
        self._beat_at: float | None = None

    def beat(self) -> None:
        """Records were delivered: touch the heartbeat file (non-empty, so an empty file means never)."""
        if self.heartbeat is None:
            return
        now = self.clock()
        if self._beat_at is None or now - self._beat_at >= HEARTBEAT_EVERY:
            self._beat_at = now
            self.heartbeat.write_text(f"{self.delivered}\n")

    def lost(self, n: int, why: str) -> None:
        self.undelivered += n
        if self.strict:
            raise DeliveryError(f"{n} record(s) not delivered to {self.what}: {why}")
        now = self.clock()
        if self._warned_at is None or now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            print(f"modelmon simulate: {self.undelivered} record(s) not delivered to {self.what} so far "
                  f"(last: {why}); going on", file=self.err, flush=True)

    def summary(self) -> str:
        return f"{self.delivered} delivered to {self.what}, {self.undelivered} not delivered"


class StreamSink(_Counting):
    """XADD each line to a Redis Stream as the field ``record``, capped at about ``maxlen``
    entries when given (``MAXLEN ~``: Redis trims whole nodes, so the length stays near the cap
    at almost no cost; entries past it are gone, read or not)."""

    def __init__(self, url: str, *, maxlen: int | None = None, strict: bool = True, client=None,
                 err: TextIO = sys.stderr, clock: Callable[[], float] = time.monotonic,
                 heartbeat: str | Path | None = None):
        import redis

        self.target = parse_stream_url(url)
        super().__init__(f"stream {self.target.stream!r}", strict, err, clock, heartbeat)
        if maxlen is not None and maxlen < 1:
            raise ValueError(f"--stream-maxlen must be at least 1, got {maxlen}")
        self.maxlen = maxlen
        self._errors = (redis.RedisError, OSError)
        self.client = client or redis.Redis.from_url(self.target.connection_url, socket_timeout=10,
                                                     socket_connect_timeout=5)

    def write(self, data: bytes) -> int:
        lines = _lines(data)
        if not lines:
            return len(data)
        try:
            pipe = self.client.pipeline(transaction=False)
            for line in lines:
                pipe.xadd(self.target.stream, {"record": line}, maxlen=self.maxlen, approximate=True)
            pipe.execute()
        except self._errors as e:
            self.lost(len(lines), f"{type(e).__name__}: {e}")
        else:
            self.delivered += len(lines)
            self.beat()
        return len(data)

    def flush(self) -> None:  # every write is sent at once
        pass

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "StreamSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PostSink(_Counting):
    """Each line through ``modelmon.client.PredictionLogger`` to an exporter's POST /ingest: a
    prediction record as ``log(**fields)``, a label record as ``label(**fields)``.

    The logger queues and never blocks; batch mode produces far faster than any exporter reads,
    so it waits for the queue to drain (``flush``) after each written chunk instead of letting
    the queue overflow."""

    def __init__(self, url: str, *, token_file: str | None = None, strict: bool = True, logger=None,
                 err: TextIO = sys.stderr, clock: Callable[[], float] = time.monotonic,
                 close_timeout: float = 30.0, heartbeat: str | Path | None = None):
        super().__init__(url, strict, err, clock, heartbeat)
        if logger is None:
            from modelmon.client import PredictionLogger

            logger = PredictionLogger(url=url, token_file=token_file)
        self.logger = logger
        self.close_timeout = close_timeout
        self._reported = {"dropped": 0, "failed": 0, "invalid": 0}

    def write(self, data: bytes) -> int:
        for line in _lines(data):
            record = orjson.loads(line)
            try:  # the logger's own verdicts (queued, dropped, invalid) are read from its stats below
                if "features" in record:
                    self.logger.log(**record)
                else:
                    self.logger.label(**record)
            except (TypeError, ValueError) as e:  # a field the client does not take: a simulator bug, say so
                self.lost(1, f"refused by the client: {e}")
                continue
        if self.strict:
            self.logger.flush()
        self._account()
        return len(data)

    def _account(self) -> None:
        """What the logger did since the last look: records it dropped, found invalid or failed to
        deliver count as undelivered; records the exporter took move the heartbeat."""
        stats = self.logger.stats()
        if stats.get("sent", 0) > self.delivered:  # beats on what the exporter took, not on what was queued
            self.delivered = stats.get("sent", 0)
            self.beat()
        for key in self._reported:
            new = stats.get(key, 0) - self._reported[key]
            if new > 0:
                self._reported[key] = stats.get(key, 0)
                self.lost(new, f"{key} by the client (see its log)")

    def flush(self) -> None:  # live mode flushes after every line: the logger batches on its own
        pass

    def close(self) -> None:
        try:
            self.logger.close(timeout=self.close_timeout)
        finally:
            stats = self.logger.stats()
            self.delivered = stats.get("sent", 0)
        self._account()

    def __enter__(self) -> "PostSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
