"""Cumulative-ready histogram and a label-value budget, both updated a batch at a time."""
from __future__ import annotations

from typing import Sequence

import numpy as np

OTHER = "__other__"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LABEL_DELAY_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 259200, 604800)
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))


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


def _fmt(b: float) -> str:
    return repr(float(b))


class LabelBudget:
    """Admits at most `limit` distinct values of one label; the rest fold into "__other__"."""

    def __init__(self, limit: int, initial: Sequence[str] = ()):
        self.limit = limit
        self.known: dict[str, None] = dict.fromkeys(initial)
        self.overflow = 0  # values folded so far (records, not distinct values)

    def fold(self, value: str) -> str:
        if value in self.known:
            return value
        if len(self.known) < self.limit:
            self.known[value] = None
            return value
        self.overflow += 1
        return OTHER

    def fold_many(self, values: Sequence[str]) -> list[str]:
        known = self.known
        if all(v in known for v in set(values)):  # common case: nothing new in the batch
            return list(values)
        return [self.fold(v) for v in values]
