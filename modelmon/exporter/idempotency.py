"""POST /ingest's `Idempotency-Key`: a batch sent again is answered, not applied again.

A client that retries after a timeout cannot know whether the exporter applied the first attempt;
without a key the retry counts its records twice. modelmon.client sends one random key per batch
(the same on every retry of that batch). Here the first answer to a key is kept for a while, and
a request with a key already answered gets that answer again (with `Idempotent-Replayed: true`)
and applies nothing. A key whose first request is still being applied gets 409 and `Retry-After`:
the client retries and then gets the stored answer.

Bounded: at most `max_entries` keys and `max_bytes` of stored answers, each kept `ttl` seconds on
the exporter's monotonic clock (oldest dropped first); a key forgotten is applied again if it ever
comes back, so the bounds only need to outlast a client's retries (seconds to a minute). Per
process: a retry that a load balancer sends to another replica is not recognised (say so in docs).
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
DEFAULT_TTL = 600.0  # seconds: a client's retries of one batch end long before
DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_MAX_BYTES = 32 << 20  # the stored answers (JSON bytes), all keys together
OUTCOMES = ("replayed", "in_flight")

_IN_FLIGHT = object()


class Answer(tuple):
    """(status, body bytes) of a finished request."""

    def __new__(cls, status: int, body: bytes):
        return super().__new__(cls, (status, body))

    status = property(lambda self: self[0])
    body = property(lambda self: self[1])


class SeenBatches:
    def __init__(self, count: Callable[[str], None], ttl: float = DEFAULT_TTL,
                 max_entries: int = DEFAULT_MAX_ENTRIES, max_bytes: int = DEFAULT_MAX_BYTES,
                 clock: Callable[[], float] = time.monotonic):
        self._count = count  # (outcome) -> None: one more request answered without applying it
        self.ttl, self.max_entries, self.max_bytes = ttl, max_entries, max_bytes
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, tuple[float, object]] = OrderedDict()  # key -> (since, Answer | _IN_FLIGHT)
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._seen)

    def begin(self, key: str) -> Answer | bool:
        """True: the key is new and now in flight (apply, then `finish` or `abandon`). False: its
        first request is still in flight (answer 409). An Answer: the stored first answer."""
        now = self.clock()
        with self._lock:
            self._expire(now)
            entry = self._seen.get(key)
            if entry is None:
                self._seen[key] = (now, _IN_FLIGHT)
                self._bound()
                return True
        outcome = "in_flight" if entry[1] is _IN_FLIGHT else "replayed"
        self._count(outcome)
        return False if entry[1] is _IN_FLIGHT else entry[1]

    def finish(self, key: str, answer: Answer) -> None:
        with self._lock:
            if key in self._seen:  # not evicted meanwhile
                self._seen[key] = (self._seen[key][0], answer)
                self.bytes += len(answer.body)
                self._bound()

    def abandon(self, key: str) -> None:
        """The request failed before it had an answer: the key may be tried again."""
        with self._lock:
            entry = self._seen.get(key)
            if entry is not None and entry[1] is _IN_FLIGHT:
                del self._seen[key]

    def _expire(self, now: float) -> None:
        cutoff = now - self.ttl
        while self._seen:
            key, (since, _) = next(iter(self._seen.items()))
            if since >= cutoff:
                break
            self._drop(key)

    def _bound(self) -> None:
        while len(self._seen) > self.max_entries or self.bytes > self.max_bytes:
            self._drop(next(iter(self._seen)))

    def _drop(self, key: str) -> None:
        _, value = self._seen.pop(key)
        if isinstance(value, Answer):
            self.bytes -= len(value.body)
