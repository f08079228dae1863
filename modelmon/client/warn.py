"""Warnings that cannot flood a model service's log: one per kind per interval, with a count of the rest."""
from __future__ import annotations

import logging
import threading
import time

INTERVAL = 10.0  # seconds
MAX_KINDS = 256  # kinds remembered; past it (a caller inventing model names) they share one slot


class Throttled:
    """`warn(kind, msg, *args)` logs at most once per `interval` per kind; the next message of that
    kind says how many were held back in between."""

    def __init__(self, logger: logging.Logger, interval: float = INTERVAL, max_kinds: int = MAX_KINDS):
        self.max_kinds = max_kinds
        self.logger = logger
        self.interval = interval
        self._last: dict = {}
        self._held: dict = {}
        self._lock = threading.Lock()

    def __call__(self, kind, msg: str, *args) -> None:
        now = time.monotonic()
        with self._lock:
            if kind not in self._last and len(self._last) >= self.max_kinds:
                kind = "__other__"
            last = self._last.get(kind)
            if last is not None and now - last < self.interval:
                self._held[kind] = self._held.get(kind, 0) + 1
                return
            self._last[kind] = now
            held = self._held.pop(kind, 0)
        if held:
            msg += " (and %d more like this in the last %.0f s)"
            args = (*args, held, self.interval)
        self.logger.warning(msg, *args)
