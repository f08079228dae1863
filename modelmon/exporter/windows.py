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
must not write to them afterwards (ModelState hands over fresh copies, from fancy indexing, or,
when a batch enters whole, the parser's own arrays, which nothing writes once parsed).

Compaction: ``columns()`` concatenates and keeps the result (tests and tools; the exporter's
threads read views). The refresh concatenates a run of a view's chunks outside the lock (all of a
quality window; for the drift window only the small trailing chunks, see ``tail_run``) and hands
the result back with ``adopt()`` (under the lock again), which replaces the chunks the run still
covers if the window only appended or dropped records at the front since the view; otherwise
adoption is skipped (the values are right either way; only the chunk count is at stake).

Stream counters (what lets the drift tally update incrementally): ``appended`` counts records
ever appended, ``dropped`` records ever dropped from the front, and ``reordered`` the changes of
content that are neither (a time window cutting records out of the middle of its first chunk,
when event time is out of order). While ``reordered`` stays the same, the window between two
views only lost records at the front and gained records at the end: the later view's records are
the earlier view's minus its first ``dropped`` difference, plus the last ``appended`` difference.
Across cuts, the window is ``front`` records left by cuts, then the appended stream's records
from position ``start`` on (``start`` only grows): what two views share is that stream range.
Compaction and adoption change the chunk layout (``reshaped``), never the content or order.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from modelmon.config import Window

# A time window could hold unbounded records at a huge rate; this hard cap keeps memory bounded.
TIME_WINDOW_MAX_RECORDS = 1_000_000
# The drift refresh merges trailing chunks up to this many records: the chunk count stays about
# 2 * window / CHUNK_RECORDS + log2(CHUNK_RECORDS), and a refresh copies at most this many records.
CHUNK_RECORDS = 16384

Chunk = dict[str, np.ndarray]


@dataclass(frozen=True)
class WindowView:
    """The window's records at one instant: immutable chunks, oldest first (see the module doc)."""

    chunks: tuple[Chunk, ...]
    size: int
    dropped: int  # records ever dropped from the front, then (for adopt and the drift tally)
    reshaped: int  # the window's layout-change count then (for adopt)
    appended: int  # records ever appended, then (the drift tally)
    reordered: int  # content changes other than appends and front drops, then (the drift tally)
    front: int  # records at the front left by those changes; then the stream from `start` on
    start: int


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


def tail_run(view: WindowView, cap: int = CHUNK_RECORDS) -> int | None:
    """Index of the first chunk of the trailing run worth merging, or None (nothing to merge).

    The run grows from the last chunk while the previous one is at most twice the run so far
    (so merged sizes grow geometrically and a record is copied O(log) times) and the run stays
    within `cap` records (so no refresh copies more than `cap` records)."""
    sizes = [_rows(c) for c in view.chunks]
    i = len(sizes) - 1
    if i < 1:
        return None
    acc = sizes[i]
    while i > 0 and sizes[i - 1] <= 2 * acc and acc + sizes[i - 1] <= cap:
        i -= 1
        acc += sizes[i]
    return i if i < len(sizes) - 1 else None


class SlidingWindow:
    def __init__(self, spec: Window, max_records: int = TIME_WINDOW_MAX_RECORDS):
        self.spec = spec
        self.limit = spec.count if spec.count is not None else max_records
        self._chunks: deque[Chunk] = deque()
        self._size = 0
        self._cached: Chunk | None = None
        # Stream counters (see the module doc): records ever appended; ever dropped from the front
        # (whole chunks popped, or the first chunk cut to a suffix); content changes that are
        # neither (a non-suffix cut); layout changes other than front drops (those cuts, compactions).
        self._appended = 0
        self._dropped = 0
        self._reordered = 0
        self._front = 0  # records at the front left by non-suffix cuts ...
        self._start = 0  # ... followed by the appended stream from this position on
        self._reshaped = 0
        self._newest = -np.inf  # newest event time ever appended: O(1) per append (was a scan of every chunk)

    def __len__(self) -> int:
        return self._size

    def append(self, columns: Chunk) -> None:
        """Add a batch. Every window column must be present; `ts` is required for time windows.

        The window owns the arrays from now on: the caller must not modify them."""
        n = len(next(iter(columns.values())))
        if n == 0:
            return
        self._appended += n
        if n > self.limit:  # only the newest `limit` records of a huge batch can ever be visible
            columns = {k: v[-self.limit:] for k, v in columns.items()}
            self._dropped += n - self.limit  # counted as appended, then dropped from the front
            self._start += n - self.limit  # right once the trim below has dropped every older record
            n = self.limit
        if self.spec.seconds is not None:
            self._newest = max(self._newest, float(np.max(columns["ts"])))
        self._chunks.append(columns)
        self._size += n
        self._cached = None
        self._trim()

    def _pop_first(self) -> None:
        n = _rows(self._chunks.popleft())
        self._size -= n
        self._front_drop(n)

    def _front_drop(self, n: int) -> None:
        self._dropped += n
        self._start += max(n - self._front, 0)
        self._front = max(self._front - n, 0)

    def _keep_first(self, keep: np.ndarray) -> None:
        """Keep the records of the first chunk where `keep` is true (a new dict; arrays untouched)."""
        first = self._chunks[0]
        start = int(np.argmax(keep))
        if keep[start:].all():  # a suffix (in-order event time): a view, and a plain front drop
            self._chunks[0] = {k: v[start:] for k, v in first.items()}
            self._front_drop(start)
        else:
            self._chunks[0] = {k: v[keep] for k, v in first.items()}
            self._reshaped += 1
            self._reordered += 1
            n, kept = keep.size, int(keep.sum())  # the chunk is the first n records
            self._start += max(n - self._front, 0)
            self._front = kept + max(self._front - n, 0)
        self._size -= int((~keep).sum())

    def _trim(self) -> None:
        if self.spec.seconds is not None:
            cutoff = self._newest - self.spec.seconds
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
                self._front_drop(excess)

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
        return WindowView(tuple(self._chunks), self._size, self._dropped, self._reshaped,
                          self._appended, self._reordered, self._front, self._start)

    def adopt(self, view: WindowView, merged: Chunk, first: int = 0) -> bool:
        """Replace the chunks still holding the records of ``view.chunks[first:]`` by `merged`
        (= ``concat(view.chunks[first:])``).

        Valid when, since the view, records were only appended at the end or dropped at the
        front: the view's records still in the window are then its last ``size - d`` ones
        (d = records dropped since), and chunk boundaries only move by front drops, so the run
        starts at a chunk boundary (or was cut at the front: ``merged[skip:]``) and ends at one.
        Anything else (a non-suffix cut, a compaction) skips adoption. O(chunks); call under
        the lock. True when adopted."""
        if self._reshaped != view.reshaped or len(view.chunks) - first < 2:
            return False
        d = self._dropped - view.dropped
        left = view.size - d  # the view's records still in the window: the window's first `left`
        before = sum(_rows(c) for c in view.chunks[:first]) - d  # window position of the run
        start, skip = max(before, 0), max(-before, 0)  # skip: run records dropped since
        if start >= left:
            return False
        a = b = None
        acc = 0
        for i, c in enumerate(self._chunks):
            if acc == start and a is None:
                a = i
            if acc == left:
                b = i
                break
            acc += _rows(c)
        if b is None and acc == left:
            b = len(self._chunks)
        if a is None or b is None:  # cannot happen by the argument above; never adopt on doubt
            return False
        chunks = list(self._chunks)
        head = merged if skip == 0 else {k: v[skip:] for k, v in merged.items()}
        self._chunks = deque([*chunks[:a], head, *chunks[b:]])
        if len(self._chunks) == 1:
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
