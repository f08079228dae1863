"""Cumulative-ready histogram and a label-value budget, both updated a batch at a time."""
from __future__ import annotations

import hashlib
import time
from typing import Callable, Sequence

import numpy as np

from modelmon import contract

OTHER = "__other__"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LABEL_DELAY_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 259200, 604800)
SCORE_BUCKETS = contract.SCORE_BUCKETS  # the rules' ROC AUC shifts by these bounds


class Histogram:
    """Bucket counts for Prometheus `le` semantics: a value equal to a bound falls in that bucket."""

    def __init__(self, bounds: Sequence[float]):
        self.bounds = np.asarray(sorted(set(float(b) for b in bounds)))
        self.counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)  # last = +Inf only
        self.sum = 0.0

    def observe(self, values: np.ndarray) -> None:
        v = values[np.isfinite(values)]
        if v.size == 0:
            return
        idx = np.searchsorted(self.bounds, v, side="left")
        self.counts += np.bincount(idx, minlength=len(self.counts))
        self.sum += float(v.sum())

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def buckets(self) -> list[tuple[str, int]]:
        """(le, cumulative count) pairs ending with +Inf, as prometheus_client expects."""
        cum = np.cumsum(self.counts)
        out = [(_fmt(b), int(c)) for b, c in zip(self.bounds, cum[:-1])]
        out.append(("+Inf", int(cum[-1])))
        return out


def observe_grouped(hists: Sequence[Histogram], group: np.ndarray, values: np.ndarray) -> None:
    """``hists[g].observe(values[group == g])`` for every g, in one pass (the histograms share bounds)."""
    finite = np.isfinite(values)
    if not finite.all():
        group, values = group[finite], values[finite]
    if not values.size:
        return
    width = len(hists[0].counts)
    idx = np.searchsorted(hists[0].bounds, values, side="left")
    counts = np.bincount(group * width + idx, minlength=len(hists) * width).reshape(len(hists), width)
    sums = np.bincount(group, weights=values, minlength=len(hists))
    for h, c, total in zip(hists, counts, sums.tolist()):
        h.counts += c
        h.sum += total


def _fmt(b: float) -> str:
    return repr(float(b))


def shorten(value: str, limit: int) -> str:
    """`value` cut to `limit` characters, ending in a hash of the whole, so that distinct long
    values stay distinct (and the same value always gets the same short form)."""
    if len(value) <= limit:
        return value
    digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()
    return f"{value[:limit - len(digest) - 1]}~{digest}"


class LabelBudget:
    """Admits at most `limit` distinct values of one label; the rest fold into "__other__".

    A slot is not held for good: a value not seen for `idle_seconds` (wall clock) is freed by
    `free_idle`, so a burst of junk values cannot keep a real new value out forever. Values
    given as `pinned` (configured classes) are never freed.
    """

    def __init__(self, limit: int, initial: Sequence[str] = (), idle_seconds: float | None = None,
                 clock: Callable[[], float] = time.time):
        self.limit = limit
        self.pinned = frozenset(initial)
        self.known: dict[str, None] = dict.fromkeys(initial)
        self.last_seen: dict[str, float] = {}  # value -> wall time it was last folded
        self.idle_seconds = idle_seconds
        self.clock = clock
        self.overflow = 0  # values folded so far (records, not distinct values)

    def fold(self, value: str) -> str:
        if value == OTHER:  # folded already (a joined label's version), not a value of its own
            return OTHER
        if value in self.known:
            self.last_seen[value] = self.clock()
            return value
        if len(self.known) < self.limit:
            self.known[value] = None
            self.last_seen[value] = self.clock()
            return value
        self.overflow += 1
        return OTHER

    def fold_many(self, values: Sequence[str]) -> list[str]:
        known = self.known
        distinct = set(values)
        if all(v in known for v in distinct):  # common case: nothing new in the batch
            now = self.clock()
            for v in distinct:
                self.last_seen[v] = now
            return list(values)
        return [self.fold(v) for v in values]

    def admit(self, value: str, seen_at: float) -> bool:
        """Put back a value a checkpoint saved, unless it has been idle too long. True if admitted."""
        if self.idle_seconds is not None and value not in self.pinned and \
                self.clock() - seen_at > self.idle_seconds:
            return False
        if value not in self.known and len(self.known) >= self.limit:
            return False
        self.known[value] = None
        self.last_seen[value] = max(seen_at, self.last_seen.get(value, seen_at))
        return True

    def free_idle(self) -> list[str]:
        """Forget values unseen for `idle_seconds`; returns them (their series should go too)."""
        if self.idle_seconds is None:
            return []
        cutoff = self.clock() - self.idle_seconds
        idle = [v for v in self.known if v not in self.pinned and self.last_seen.get(v, cutoff) < cutoff]
        for v in idle:
            del self.known[v]
            self.last_seen.pop(v, None)
        return idle
