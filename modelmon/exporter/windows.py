"""Sliding windows over columnar batches, by record count or by event time.

A window is a queue of chunks (one per ingested batch), each a dict of equal-length numpy
arrays. Appending is O(1); trimming drops whole chunks and slices at most one, so memory stays
O(window) however long the log. Reading concatenates the chunks once per refresh.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from modelmon.config import Window

# A time window could hold unbounded records at a huge rate; this hard cap keeps memory bounded.
TIME_WINDOW_MAX_RECORDS = 1_000_000


class SlidingWindow:
    def __init__(self, spec: Window, max_records: int = TIME_WINDOW_MAX_RECORDS):
        self.spec = spec
        self.limit = spec.count if spec.count is not None else max_records
        self._chunks: deque[dict[str, np.ndarray]] = deque()
        self._size = 0
        self._cached: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return self._size

    def append(self, columns: dict[str, np.ndarray]) -> None:
        """Add a batch. Every window column must be present; `ts` is required for time windows."""
        n = len(next(iter(columns.values())))
        if n == 0:
            return
        if n > self.limit:  # only the newest `limit` records of a huge batch can ever be visible
            columns = {k: v[-self.limit:] for k, v in columns.items()}
            n = self.limit
        self._chunks.append(columns)
        self._size += n
        self._cached = None
        self._trim()

    def _trim(self) -> None:
        if self.spec.seconds is not None:
            newest = max(float(np.max(c["ts"])) for c in self._chunks)
            cutoff = newest - self.spec.seconds
            while self._chunks:
                first = self._chunks[0]
                ts = first["ts"]
                if float(np.max(ts)) < cutoff:  # whole chunk expired
                    self._chunks.popleft()
                    self._size -= len(ts)
                    continue
                keep = ts >= cutoff
                if not keep.all():
                    self._chunks[0] = {k: v[keep] for k, v in first.items()}
                    self._size -= int((~keep).sum())
                break
        while self._size > self.limit:
            first = self._chunks[0]
            n = len(next(iter(first.values())))
            excess = self._size - self.limit
            if n <= excess:
                self._chunks.popleft()
                self._size -= n
            else:
                self._chunks[0] = {k: v[excess:] for k, v in first.items()}
                self._size -= excess

    def expire(self, now: float) -> None:
        """Drop records older than the window relative to `now` (time windows only)."""
        if self.spec.seconds is None or not self._chunks:
            return
        before = self._size
        cutoff = now - self.spec.seconds
        while self._chunks and float(np.max(self._chunks[0]["ts"])) < cutoff:
            self._size -= len(self._chunks.popleft()["ts"])
        if self._chunks:
            ts = self._chunks[0]["ts"]
            keep = ts >= cutoff
            if not keep.all():
                self._chunks[0] = {k: v[keep] for k, v in self._chunks[0].items()}
                self._size -= int((~keep).sum())
        if self._size != before:
            self._cached = None

    def columns(self) -> dict[str, np.ndarray]:
        """All records in the window, oldest first, as one array per column (cached until changed)."""
        if self._cached is None:
            if not self._chunks:
                return {}
            if len(self._chunks) > 1:
                keys = self._chunks[0].keys()
                merged = {k: np.concatenate([c[k] for c in self._chunks]) for k in keys}
                self._chunks = deque([merged])  # compact: later reads and trims touch one chunk
            self._cached = self._chunks[0]
        return self._cached
