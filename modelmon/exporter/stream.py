"""The Redis Stream source: a member of a consumer group that feeds the exporter.

One record per stream entry, as JSON text in the field ``record``. The loop, on one thread:

1. ``XGROUP CREATE <stream> <group> 0 MKSTREAM`` (an existing group is used as it is; a new one
   reads the stream from its first entry);
2. its own pending entries first (``XREADGROUP ... 0``): what it read before a crash or a lost
   reply and did not acknowledge (counted as claimed, ``owner="self"``); again after every Redis error;
3. then new entries (``XREADGROUP ... >``, up to `batch`, blocking up to `block`);
4. every batch: applied through ``Exporter.ingest_lines(lines, "stream")``, *then* acknowledged
   (``XACK``), then the checkpoint hook (`after_commit`): an acknowledged entry is never applied
   again; an applied one whose ack was lost (kill -9 between the two) is delivered again;
5. every ``claim_idle / 2`` (0.5 s … 30 s): ``XAUTOCLAIM`` of entries idle longer than `claim_idle`
   in other members' pending lists (a member that died), applied and acked like a read
   (``owner="other"``); a member alive but stalled longer than `claim_idle` with a batch in hand
   would apply it too: `claim_idle` must exceed the longest apply plus ack outage;
6. every `info_interval`: the group's lag (``XINFO GROUPS``) and pending count (``XPENDING``) for
   the gauges, so a scrape never waits on Redis.

Nothing is lost silently: an entry without ``record`` (or trimmed/deleted while pending) is a
``missing_field`` reject; a record that is not one JSON text on one line is an ``invalid_json``
reject (a pretty-printed valid one is compacted and applied); one longer than the log's line
limit (16 MiB) an ``oversized_line`` reject; all are acknowledged so they are not delivered
forever. Redis unreachable: ``modelmon_stream_up 0``, the failed call counted by operation,
/ready 503 with the reason, retried with capped backoff; the thread never dies.

The checkpoint (`after_commit`) is only ever taken between batches, after the ack, on this
thread: it never holds an entry Redis would deliver again. After a kill -9 the restored windows
lack the entries acknowledged since the last checkpoint (at most one interval's, as for the log)
and count none twice; the batch applied but not acknowledged (at most one) is applied again by
the restarted process: that batch alone is at-least-once.
"""
from __future__ import annotations

import logging
import random
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from modelmon.config import parse_duration
from modelmon.exporter.pipeline import Exporter
from modelmon.exporter.tailer import DEFAULT_MAX_LINE_BYTES

log = logging.getLogger("modelmon.stream")

DEFAULT_PORT = 6379
DEFAULT_CLAIM_IDLE = 60.0
DEFAULT_BATCH = 500
DEFAULT_BLOCK = 1.0
MAX_BATCH = 100_000
MAX_BLOCK = 60.0  # a stop waits for the read in flight: keep it short
INFO_INTERVAL = 2.0  # seconds between lag/pending refreshes
BACKOFF_MIN, BACKOFF_MAX = 0.1, 5.0
LAG_COUNT_CAP = 1000  # lag counted by XRANGE when Redis cannot say (tombstones); above: XLEN, an upper bound
OPERATIONS = ("connect", "read", "ack", "claim", "info")
PARAMETERS = ("stream", "group", "consumer", "claim_idle", "batch", "block")
PASSWORD_ENV = "MODELMON_REDIS_PASSWORD"
FORM = "redis://[:PASSWORD@]HOST[:PORT][/DB]?stream=NAME&group=GROUP[&consumer=NAME][&claim_idle=60s][&batch=500]" \
       "[&block=1s]"


@dataclass(frozen=True)
class StreamURL:
    host: str
    port: int
    db: int
    stream: str
    group: str
    consumer: str
    claim_idle: float
    batch: int
    block: float
    ssl: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def safe(self) -> str:
        """The URL without its password: what logs and /ready show."""
        auth = ""
        if self.username or self.password:
            auth = f"{self.username or ''}{':***' if self.password else ''}@"
        scheme = "rediss" if self.ssl else "redis"
        return f"{scheme}://{auth}{self.host}:{self.port}/{self.db}?stream={self.stream}&group={self.group}"


def redact(text: str) -> str:
    """`text` with the password of a ``scheme://user:password@`` part replaced by ***."""
    return re.sub(r"(//[^/@?#]*?:)[^/@?#]*@", r"\1***@", text)


def parse_url(text: str, password: str | None = None, default_password: str | None = None) -> StreamURL:
    """Parse ``--stream``. `password` (from a file): when the URL has none (both: an error);
    `default_password` (the environment's): when neither has one.

    ValueError with one line naming what is wrong (never the password) otherwise."""
    parts = urlsplit(text)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"expected {FORM}")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ValueError("the port is not a number from 1 to 65535") from None
    path = parts.path.strip("/")
    if not path:
        db = 0
    elif path.isdigit():
        db = int(path)
    else:
        raise ValueError(f"the path must be a database number (/0, /1, ...), got /{path}")
    if parts.fragment:
        raise ValueError("a #fragment has no meaning here")
    query: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if key not in PARAMETERS:
            raise ValueError(f"unknown parameter {key!r} (known: {', '.join(PARAMETERS)})")
        if key in query:
            raise ValueError(f"parameter {key!r} given twice")
        query[key] = value
    for required in ("stream", "group"):
        if not query.get(required):
            raise ValueError(f"the parameter {required}= is required ({FORM})")
    url_password = unquote(parts.password) if parts.password else None
    if url_password and password:
        raise ValueError("the password is given twice (in the URL and in a file or the environment): give it once")
    return StreamURL(
        host=parts.hostname or "localhost", port=port, db=db, stream=query["stream"], group=query["group"],
        consumer=query.get("consumer") or socket.gethostname(),
        claim_idle=_duration(query, "claim_idle", DEFAULT_CLAIM_IDLE, 0.001, None),
        batch=_count(query, "batch", DEFAULT_BATCH),
        block=_duration(query, "block", DEFAULT_BLOCK, 0.001, MAX_BLOCK),
        ssl=parts.scheme == "rediss", username=unquote(parts.username) if parts.username else None,
        password=url_password or password or default_password or None)


def _duration(query: dict, key: str, default: float, low: float, high: float | None) -> float:
    if key not in query:
        return default
    try:
        value = parse_duration(query[key])
    except ValueError as e:
        raise ValueError(f"{key}: {e}") from None
    if value < low or (high is not None and value > high):
        bound = f"from {low * 1000:g}ms to {high:g}s" if high is not None else f"at least {low * 1000:g}ms"
        raise ValueError(f"{key}: must be {bound}, got {query[key]!r}")
    return value


def _count(query: dict, key: str, default: int) -> int:
    if key not in query:
        return default
    text = query[key]
    if not text.isdigit() or not 1 <= int(text) <= MAX_BATCH:
        raise ValueError(f"{key}: expected a whole number from 1 to {MAX_BATCH}, got {text!r}")
    return int(text)


class RedisDown(Exception):
    """A Redis call failed; `operation` is the errors_total label."""

    def __init__(self, operation: str, error: BaseException):
        super().__init__(f"{operation}: {error}")
        self.operation = operation
        self.error = error


class _Abandoned(Exception):
    """Stopping while an ack cannot be made: the loop ends with `unacked` entries applied."""


class StreamSource:
    """Consumes `url`'s stream as a member of its group; `start()`, `stop()` like FileSource."""

    def __init__(self, exporter: Exporter, url: StreamURL, after_commit: Callable[[], None] | None = None,
                 info_interval: float = INFO_INTERVAL):
        self.exporter = exporter
        self.url = url
        self.after_commit = after_commit  # e.g. the checkpoint: called only with nothing applied and unacked
        self.info_interval = info_interval
        self.claim_every = min(max(url.claim_idle / 2, 0.5), 30.0)
        self.labels = [url.stream, url.group]
        # Held from a batch's apply to its ack: a checkpoint taken by another thread (the file
        # source's, when both run) skips its turn rather than save a batch Redis would deliver again.
        self.gate = threading.Lock()
        self.unacked = 0  # entries applied and not acknowledged when the loop ended (stop during a Redis outage)
        # Counters and gauges, changed and read under the exporter lock (read by `fill` at a scrape).
        self.entries = 0
        self.acked = 0
        self.claimed = {"self": 0, "other": 0}
        self.errors = dict.fromkeys(OPERATIONS, 0)
        self.up = False
        self.lag: int | None = None
        self.pending: int | None = None
        self._client = redis.Redis(
            host=url.host, port=url.port, db=url.db, username=url.username, password=url.password, ssl=url.ssl,
            socket_connect_timeout=5, socket_timeout=url.block + 10, retry=Retry(NoBackoff(), 0),
            health_check_interval=0)
        self._problem: str | None = None
        self._recover_own = True  # read our own pending list before anything new
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        self._next_info = 0.0
        self._failures = 0
        self._stop = threading.Event()
        self._stopped: bool | None = None
        self._thread = threading.Thread(target=self._run, name="modelmon-stream-source", daemon=True)
        self._set_problem(f"stream {url.safe()}: connecting to Redis")
        exporter.extra_collectors.append(self.fill)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> bool:
        """Finish the batch in hand (apply, ack), then stop; never raises. False when the loop did
        not end in time. `unacked` says how many applied entries could not be acknowledged."""
        if self._stopped is not None:
            return self._stopped
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=self.url.block + 20)
        self._stopped = not self._thread.is_alive()
        if not self._stopped:
            log.warning("stream reader did not stop in time; its batch in hand is delivered again on restart")
        try:
            self._client.close()
        except Exception:  # noqa: BLE001 - closing a dead connection
            pass
        return self._stopped

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
                self._failures = 0
            except _Abandoned:
                return
            except RedisDown as e:
                self._down(e)
            except Exception as e:  # noqa: BLE001 - never die: a bug or an unforeseen reply is retried too
                self._down(RedisDown("read", e), unexpected=True)

    def step(self) -> int:
        """One round: connect and create the group if needed, one batch (own pending, claimed or
        new), the periodic claim sweep and gauges. Returns the entries applied."""
        if not self.up:
            self._connect()
        now = time.monotonic()
        if self._recover_own:
            n = self._read("0")
            if n == 0:
                self._recover_own = False
            self._after_idle_or_ack()
            return n
        n = 0
        if now >= self._next_claim:
            n = self._claim()
        if now >= self._next_info:
            self._refresh_info()
        if n == 0 and not self._stop.is_set():
            n = self._read(">")
        self._after_idle_or_ack()
        return n

    def _connect(self) -> None:
        try:
            self._client.ping()
        except redis.RedisError as e:
            raise RedisDown("connect", e) from None
        self._ensure_group()
        with self.exporter.lock:
            self.up = True
        self._recover_own = True  # a reply lost with the connection left entries in our pending list
        self._set_problem(None)

    def _ensure_group(self) -> None:
        try:
            self._client.xgroup_create(self.url.stream, self.url.group, id="0", mkstream=True)
            log.info("stream %s: consumer group %r created (it reads the stream from its first entry)",
                     self.url.safe(), self.url.group)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise RedisDown("connect", e) from None
        except redis.RedisError as e:
            raise RedisDown("connect", e) from None

    def _read(self, start: str) -> int:
        """XREADGROUP from `start` ("0": our own pending list; ">": new entries), apply, ack."""
        try:
            reply = self._client.xreadgroup(self.url.group, self.url.consumer, {self.url.stream: start},
                                            count=self.url.batch,
                                            block=None if start == "0" else max(1, int(self.url.block * 1000)))
        except redis.ResponseError as e:
            if "NOGROUP" in str(e):  # the stream or the group was deleted (or Redis restarted empty)
                self._ensure_group()
            raise RedisDown("read", e) from None
        except redis.RedisError as e:
            raise RedisDown("read", e) from None
        entries = reply[0][1] if reply else []
        if entries and start == "0":
            with self.exporter.lock:
                self.claimed["self"] += len(entries)
            log.info("stream %s: %d entries of this consumer (%s) were pending: applying them again",
                     self.url.safe(), len(entries), self.url.consumer)
        self._apply_and_ack(entries, [])
        return len(entries)

    def _claim(self) -> int:
        """One XAUTOCLAIM step of the sweep over the group's pending entries idle > claim_idle."""
        try:
            reply = self._client.xautoclaim(self.url.stream, self.url.group, self.url.consumer,
                                            min_idle_time=int(self.url.claim_idle * 1000),
                                            start_id=self._claim_cursor, count=self.url.batch)
        except redis.RedisError as e:
            raise RedisDown("claim", e) from None
        cursor, entries = reply[0], reply[1]
        deleted = list(reply[2]) if len(reply) > 2 else []  # Redis >= 7 drops these from the pending list itself
        self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        if self._claim_cursor == "0-0":  # the sweep is done: the next one after claim_every
            self._next_claim = time.monotonic() + self.claim_every
        if entries or deleted:
            with self.exporter.lock:
                self.claimed["other"] += len(entries) + len(deleted)
            log.warning("stream %s: took over %d entries idle for more than %gs in other consumers' pending lists "
                        "(a member stopped or died)%s", self.url.safe(), len(entries) + len(deleted),
                        self.url.claim_idle, f"; {len(deleted)} of them were deleted from the stream meanwhile "
                        "(counted as missing_field rejects)" if deleted else "")
        self._apply_and_ack(entries, deleted)
        return len(entries) + len(deleted)

    # ------------------------------------------------------------------ apply, then ack

    def _apply_and_ack(self, entries: list, deleted: list) -> None:
        """Apply the records of `entries` (and count `deleted` ids as missing), then XACK them all."""
        if not entries and not deleted:
            return
        ids = [entry_id for entry_id, _ in entries]
        with self.gate:
            self.unacked = len(ids)
            self._apply(entries, len(deleted))
            with self.exporter.lock:
                self.entries += len(entries) + len(deleted)
            if ids:
                self._ack(ids)
            self.unacked = 0

    def _apply(self, entries: list, deleted: int) -> None:
        lines: list[bytes] = []
        missing, invalid, oversized = deleted, 0, 0
        for _, fields in entries:
            value = fields.get(b"record") if fields else None
            if value is None:  # no such field, or the entry was deleted while pending
                missing += 1
            elif len(value) > DEFAULT_MAX_LINE_BYTES:  # the file source's limit for one line
                oversized += 1
            elif b"\n" in value or b"\r" in value:  # one record per line for the parser: compact it
                try:
                    lines.append(orjson.dumps(orjson.loads(value)))
                except orjson.JSONDecodeError:
                    invalid += 1
            else:
                lines.append(value)
        if missing or invalid or oversized:
            with self.exporter.lock:
                for reason, n in (("missing_field", missing), ("invalid_json", invalid), ("oversized_line", oversized)):
                    if n:
                        self.exporter.rejected[reason] += n
            self.exporter.warn_limited("stream:rejects", logging.WARNING,
                                       "stream %s: %d entries without a `record` field (or deleted while pending), "
                                       "%d not JSON text, %d over %d bytes: skipped (counted in "
                                       "modelmon_records_rejected_total) and acknowledged", self.url.safe(),
                                       missing, invalid, oversized, DEFAULT_MAX_LINE_BYTES)
        if not lines:
            return
        try:
            self.exporter.ingest_lines(lines, "stream")  # empty or blank values are invalid_json rejects there
        except Exception:  # noqa: BLE001 - an exporter bug must not deliver the batch forever: counted, acked
            with self.exporter.lock:
                self.exporter.rejected["internal_error"] += len(lines)
            self.exporter.warn_limited("stream:apply", logging.ERROR, "stream %s: applying a batch of %d records "
                                       "failed; counted as internal_error rejects", self.url.safe(), len(lines),
                                       exc_info=True)

    def _ack(self, ids: list) -> None:
        """XACK until it succeeds; a stop during an outage leaves the batch pending (delivered again)."""
        delay = BACKOFF_MIN
        while True:
            try:
                n = self._client.xack(self.url.stream, self.url.group, *ids)
                with self.exporter.lock:
                    self.acked += n
                if self._problem is not None or not self.up:
                    self._recovered()
                return
            except redis.ResponseError as e:  # NOGROUP (Redis restarted empty, group deleted), WRONGTYPE:
                self._count_error(RedisDown("ack", e))  # no pending list holds them, nothing is delivered again
                log.error("stream %s: %d applied entries could not be acknowledged and are not pending any more "
                          "(%s)", self.url.safe(), len(ids), _describe(e))
                return
            except redis.RedisError as e:
                self._count_error(RedisDown("ack", e))
                if self._stop.is_set():
                    log.error("stream %s: stopping with %d applied entries not acknowledged (%s): they are "
                              "delivered again after a restart", self.url.safe(), len(ids), e)
                    raise _Abandoned() from None
                self._stop.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    def _after_idle_or_ack(self) -> None:
        """Nothing applied is unacked here: the checkpoint may follow (idle rounds too, like the file source)."""
        if self.after_commit is not None and not self.gate.locked():
            self.after_commit()

    # ------------------------------------------------------------------ gauges

    def _refresh_info(self) -> None:
        self._next_info = time.monotonic() + self.info_interval
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.xinfo_groups(self.url.stream).xpending(self.url.stream, self.url.group).xlen(self.url.stream)
            groups, summary, length = pipe.execute()
            mine = next((g for g in groups if _text(g.get("name")) == self.url.group), None)
            lag = None if mine is None else mine.get("lag")
            if mine is not None and lag is None:
                lag = self._count_lag(mine)
        except redis.RedisError as e:  # counted; the reads say whether Redis is down
            self._count_error(RedisDown("info", e), down=False)
            return
        if lag is not None and lag > length:
            # Redis counts entries trimmed (MAXLEN) before the group read them as lag for good; no
            # more than the stream holds can be waiting, and those trimmed ones are lost: say so.
            self.exporter.warn_limited("stream:trimmed", logging.WARNING,
                                       "stream %s: about %d entries were trimmed before the group read them (lost; "
                                       "MAXLEN is too small for the backlog); lag shown as the stream length %d",
                                       self.url.safe(), lag - length, length)
            lag = length
        with self.exporter.lock:
            self.lag = lag
            self.pending = int(summary.get("pending") or 0)

    def _count_lag(self, group: dict) -> int:
        """Redis cannot compute the lag (entries deleted with XDEL after the group's position, or
        Redis < 7): count the entries after the last delivered id, up to LAG_COUNT_CAP; above that
        the stream's length, an upper bound."""
        last = _text(group.get("last-delivered-id")) or "0-0"
        after = self._client.xrange(self.url.stream, min=f"({last}", max="+", count=LAG_COUNT_CAP)
        if len(after) < LAG_COUNT_CAP:
            return len(after)
        return int(self._client.xlen(self.url.stream))

    def fill(self, families: dict) -> None:
        """Add this source's samples to the families of a scrape (called under the exporter lock)."""
        labels = self.labels
        families["modelmon_stream_entries_total"].add_metric(labels, self.entries)
        families["modelmon_stream_acked_total"].add_metric(labels, self.acked)
        for owner, n in self.claimed.items():
            families["modelmon_stream_claimed_total"].add_metric(labels + [owner], n)
        for operation, n in self.errors.items():
            families["modelmon_stream_errors_total"].add_metric(labels + [operation], n)
        families["modelmon_stream_up"].add_metric(labels, 1 if self.up else 0)
        if self.up and self.lag is not None:  # unknown while Redis is unreachable: no stale value
            families["modelmon_stream_lag_entries"].add_metric(labels, self.lag)
        if self.up and self.pending is not None:
            families["modelmon_stream_pending_entries"].add_metric(labels, self.pending)

    # ------------------------------------------------------------------ faults

    def _count_error(self, e: RedisDown, down: bool = True) -> None:
        with self.exporter.lock:
            self.errors[e.operation] += 1
            if not down:
                return
            self.up = False
            self.lag = self.pending = None  # unknown until the next refresh after reconnecting
        self._set_problem(f"stream {self.url.safe()}: Redis {e.operation} failed: {_describe(e.error)}")

    def _down(self, e: RedisDown, unexpected: bool = False) -> None:
        self._count_error(e)
        self._recover_own = True
        self._failures += 1
        delay = min(BACKOFF_MIN * 2 ** (self._failures - 1), BACKOFF_MAX) * random.uniform(0.5, 1.0)
        self.exporter.warn_limited(f"stream:{e.operation}", logging.ERROR, "stream %s: Redis %s failed; retrying "
                                   "with backoff (up to %gs): %s", self.url.safe(), e.operation, BACKOFF_MAX,
                                   _describe(e.error), exc_info=unexpected)
        self._stop.wait(delay)

    def _recovered(self) -> None:
        with self.exporter.lock:
            self.up = True
        self._set_problem(None)

    def _set_problem(self, problem: str | None) -> None:
        """Show `problem` on /ready (None: ready as far as the stream goes)."""
        if problem == self._problem:
            return
        with self.exporter.lock:
            self.exporter.stream_problem = problem
        if problem is None and self._problem is not None:
            log.info("stream %s: connected, consuming as %r", self.url.safe(), self.url.consumer)
        self._problem = problem


def _text(value) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _describe(error: BaseException) -> str:
    return redact(f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)
