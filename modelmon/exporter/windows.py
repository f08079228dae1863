"""Sliding windows over columnar batches, by record count or by event time.

A window is a queue of chunks (one per ingested batch), each a dict of equal-length numpy
arrays. Appending is O(1); trimming drops whole chunks and cuts at most one, so memory stays
O(window) however long the log.

Immutability (what lets a refresh compute outside the exporter lock): a chunk dict, and every
array in it, is never modified once it is in the window. Appending adds a new chunk; trimming
pops chunks or *replaces* the first one with a new dict of slices; compacting replaces the
queue. So ``view()`` -- a tuple of the current chunk dicts, taken under the lock -- stays
valid after the lock is released, whatever ingest does next, and ``concat(view.chunks)``
can run on it without the lock. ``append`` takes ownership of the arrays it is given: callers
must not write to them afterwards (ModelState hands over fresh copies, from fancy indexing).

Compaction: ``columns()`` concatenates and keeps the result (the multivariate worker's sample,
under the lock). The refresh and the checkpoint concatenate a view outside the lock; the refresh
hands the result back with ``adopt()`` (under the lock again), which replaces the chunks it covers if the window
only appended or dropped records at the front since the view; otherwise adoption is skipped
(the values are right either way; only the chunk count is at stake).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from modelmon.config import Window

# A time window could hold unbounded records at a huge rate; this hard cap keeps memory bounded.
TIME_WINDOW_MAX_RECORDS = 1_000_000

Chunk = dict[str, np.ndarray]


@dataclass(frozen=True)
class WindowView:
    """The window's records at one instant: immutable chunks, oldest first (see the module doc)."""

    chunks: tuple[Chunk, ...]
    size: int
    dropped: int  # the window's front-drop count then (for adopt)
    reshaped: int  # the window's reshape count then (for adopt)


def concat(chunks: tuple[Chunk, ...]) -> Chunk:
    """The records of `chunks` as one array per column (the chunk itself when there is one).

    Pure: reads the chunks, writes nothing shared, so it needs no lock."""
    if not chunks:
        return {}
    if len(chunks) == 1:
        return chunks[0]
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def _rows(chunk: Chunk) -> int:
    return len(next(iter(chunk.values())))


class SlidingWindow:
    def __init__(self, spec: Window, max_records: int = TIME_WINDOW_MAX_RECORDS):
        self.spec = spec
        self.limit = spec.count if spec.count is not None else max_records
        self._chunks: deque[Chunk] = deque()
        self._size = 0
        self._cached: Chunk | None = None
        # Records ever dropped from the front (whole chunks popped, or the first chunk cut to a
        # suffix), and how many times the layout changed otherwise (a non-suffix cut, a compaction).
        self._dropped = 0
        self._reshaped = 0

    def __len__(self) -> int:
        return self._size

    def append(self, columns: Chunk) -> None:
        """Add a batch. Every window column must be present; `ts` is required for time windows.

        The window owns the arrays from now on: the caller must not modify them."""
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

    def _pop_first(self) -> None:
        n = _rows(self._chunks.popleft())
        self._size -= n
        self._dropped += n

    def _keep_first(self, keep: np.ndarray) -> None:
        """Keep the records of the first chunk where `keep` is true (a new dict; arrays untouched)."""
        first = self._chunks[0]
        start = int(np.argmax(keep))
        if keep[start:].all():  # a suffix (in-order event time): a view, and a plain front drop
            self._chunks[0] = {k: v[start:] for k, v in first.items()}
            self._dropped += start
        else:
            self._chunks[0] = {k: v[keep] for k, v in first.items()}
            self._reshaped += 1
        self._size -= int((~keep).sum())

    def _trim(self) -> None:
        if self.spec.seconds is not None:
            newest = max(float(np.max(c["ts"])) for c in self._chunks)
            cutoff = newest - self.spec.seconds
            while self._chunks:
                ts = self._chunks[0]["ts"]
                if float(np.max(ts)) < cutoff:  # whole chunk expired
                    self._pop_first()
                    continue
                keep = ts >= cutoff
                if not keep.all():
                    self._keep_first(keep)
                break
        while self._size > self.limit:
            first = self._chunks[0]
            n = _rows(first)
            excess = self._size - self.limit
            if n <= excess:
                self._pop_first()
            else:
                self._chunks[0] = {k: v[excess:] for k, v in first.items()}
                self._size -= excess
                self._dropped += excess

    def expire(self, now: float) -> None:
        """Drop records older than the window relative to `now` (time windows only)."""
        if self.spec.seconds is None or not self._chunks:
            return
        before = self._size
        cutoff = now - self.spec.seconds
        while self._chunks and float(np.max(self._chunks[0]["ts"])) < cutoff:
            self._pop_first()
        if self._chunks:
            keep = self._chunks[0]["ts"] >= cutoff
            if not keep.all():
                self._keep_first(keep)
        if self._size != before:
            self._cached = None

    def view(self) -> WindowView:
        """The current records as immutable chunks (take under the lock; use anywhere after)."""
        return WindowView(tuple(self._chunks), self._size, self._dropped, self._reshaped)

    def adopt(self, view: WindowView, merged: Chunk) -> bool:
        """Replace the chunks still holding `view`'s records by `merged` (= ``concat(view.chunks)``).

        Valid when, since the view, records were only appended at the end or dropped at the
        front: the view's records still in the window are then ``merged[d:]`` (d = records
        dropped since), and they fill the first chunks exactly, as chunk boundaries only move
        by front drops. Anything else (a non-suffix cut, a compaction) skips adoption.
        Call under the lock. True when adopted."""
        if self._reshaped != view.reshaped or len(view.chunks) < 2:
            return False
        d = self._dropped - view.dropped
        left = view.size - d
        if left <= 0:
            return False
        covered = acc = 0
        for c in self._chunks:
            if acc >= left:
                break
            acc += _rows(c)
            covered += 1
        if acc != left:  # cannot happen by the argument above; never adopt on doubt
            return False
        head = merged if d == 0 else {k: v[d:] for k, v in merged.items()}
        rest = list(self._chunks)[covered:]
        self._chunks = deque([head, *rest])
        if not rest:
            self._cached = head
        return True

    def columns(self) -> Chunk:
        """All records in the window, oldest first, as one array per column (cached until changed)."""
        if self._cached is None:
            if not self._chunks:
                return {}
            if len(self._chunks) > 1:
                merged = concat(tuple(self._chunks))
                self._chunks = deque([merged])  # compact: later reads and trims touch one chunk
                self._reshaped += 1
            self._cached = self._chunks[0]
        return self._cached
