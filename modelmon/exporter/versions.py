"""Versions side by side: the baseline, pairs of versions on the same request, and their comparison.

A model's *baseline* is `baseline_version` from the config or, without one, the served version with
the most predictions over the quality window (`Traffic`). Every other version -- a shadow, a canary,
an A/B arm -- is compared with it:

* before any label, on the requests both answered (`RequestBook`, by request id): how often the
  candidate predicts the baseline's class, or how far its value is from the baseline's
  (`modelmon_version_pairs_total`, `_agreements_total`, `_abs_difference_total`: counters, so the
  ratio adds up across replicas and windows);
* once labelled, paired on the same requests (`PairedOutcomes`: McNemar on accuracy, a paired t-test
  on absolute errors) and unpaired on each version's own quality window (two-proportion z-test,
  Welch's t-test): the gauges `modelmon_version_quality_delta` / `_pvalue` / `_comparison_samples`.

A request is paired while it is among the last `REQUESTS_KEPT` (to twice that) requests of each
version (a shadow's prediction is logged next to the served one), from the moment the model has
a second version: the first batch of a new version finds no earlier requests of the others.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

import numpy as np

from modelmon.config import Window
from modelmon.exporter import comparison
from modelmon.exporter.comparison import Comparison

REQUESTS_KEPT = 50_000  # per model and book: a shadow's prediction arrives next to the served one
PAIRED_WINDOW = 10_000  # labelled pairs kept per candidate version (a count quality window uses its count)


class Traffic:
    """Served predictions per version over the quality window: who the traffic baseline is."""

    def __init__(self, window: Window):
        self.window = window
        self._batches: deque[tuple[float, dict[str, int]]] = deque()  # (newest ts, version -> count)
        self.totals: dict[str, int] = {}
        self._size = 0

    def add(self, counts: dict[str, int], newest_ts: float) -> None:
        if not counts:
            return
        self._batches.append((newest_ts, counts))
        for v, k in counts.items():
            self.totals[v] = self.totals.get(v, 0) + k
            self._size += k
        self._trim(newest_ts)

    def _trim(self, now: float) -> None:
        while self._batches:
            ts, counts = self._batches[0]
            too_old = self.window.seconds is not None and ts < now - self.window.seconds
            too_many = self.window.count is not None and self._size - sum(counts.values()) >= self.window.count
            if not (too_old or too_many):
                break
            self._batches.popleft()
            for v, k in counts.items():
                self.totals[v] -= k
                self._size -= k
                if not self.totals[v]:
                    del self.totals[v]

    def forget(self, version: str) -> None:
        """A version whose budget slot was freed (idle) leaves the running."""
        for _, counts in self._batches:
            counts.pop(version, None)
        self._size -= self.totals.pop(version, 0)

    def leader(self) -> str | None:
        """The version with the most served predictions (ties: the smallest name)."""
        if not self.totals:
            return None
        return min(self.totals, key=lambda v: (-self.totals[v], v))


class RequestBook:
    """Each version's value on its recent requests, to pair a version with the baseline by request id.

    Per version, two generations of plain dicts (id -> value): a batch is recorded with one
    `dict.update` at C speed, and when the newer generation holds `max_requests` ids it becomes the
    older one (the oldest is dropped), so a lookup sees between `max_requests` and twice that many
    of the latest requests. Requests are recorded once the model has a second version
    (`ModelState.pairing`); from then on every version is, so either side of a pair may come first.
    """

    def __init__(self, max_requests: int = REQUESTS_KEPT):
        self.max_requests = max_requests
        self._books: dict[str, tuple[dict, dict]] = {}  # version -> (newer, older)

    def get(self, version: str, rid: str) -> Any:
        books = self._books.get(version)
        if books is None:
            return None
        newer, older = books
        value = newer.get(rid)
        return older.get(rid) if value is None else value

    def _record(self, version: str, ids: list, values: list) -> None:
        newer, older = self._books.get(version) or ({}, {})
        newer.update(zip(ids, values))
        if len(newer) >= self.max_requests:
            newer, older = {}, newer
        self._books[version] = (newer, older)

    def add(self, version: str, ids: list, values: list, baseline: str | None) -> list[tuple[str, Any, Any]]:
        """Record `version`'s values on requests `ids` (no None); returns the (candidate version,
        candidate value, baseline value) pairs they complete. A pair is made once, by whichever of
        the two predictions arrives second; a re-sent prediction pairs nothing again."""
        pairs: list[tuple[str, Any, Any]] = []
        if baseline is not None:
            if version == baseline:
                for cand in self._books:
                    if cand == baseline:
                        continue
                    for rid, value in zip(ids, values):
                        other = self.get(cand, rid)
                        if other is not None and self.get(baseline, rid) is None:
                            pairs.append((cand, other, value))
            elif baseline in self._books:
                for rid, value in zip(ids, values):
                    base = self.get(baseline, rid)
                    if base is not None and self.get(version, rid) is None:
                        pairs.append((version, value, base))
        self._record(version, ids, values)
        return pairs

    def forget(self, version: str) -> None:
        self._books.pop(version, None)


class PairedOutcomes:
    """Labelled outcomes of a candidate and the baseline on the same requests, last `size` pairs."""

    def __init__(self, size: int):
        self.size = size
        self._pairs: dict[tuple[str, str], deque] = {}  # (candidate, baseline) -> (baseline, candidate)

    def add(self, candidate: str, baseline: str, base_value: float, cand_value: float) -> None:
        pairs = self._pairs.get((candidate, baseline))
        if pairs is None:
            pairs = self._pairs[(candidate, baseline)] = deque(maxlen=self.size)
        pairs.append((base_value, cand_value))

    def snapshot(self, baseline: str | None) -> dict[str, np.ndarray]:
        """Candidate -> array (n, 2) of (baseline, candidate) outcomes against `baseline`; pairs
        against an earlier baseline are dropped."""
        for key in [k for k in self._pairs if k[1] != baseline]:
            del self._pairs[key]
        return {cand: np.array(pairs, dtype=np.float64).reshape(-1, 2) for (cand, _), pairs in self._pairs.items()}

    def forget(self, version: str) -> None:
        for key in [k for k in self._pairs if version in k]:
            del self._pairs[key]


def compare(task: str, baseline: str, paired: dict[str, np.ndarray],
            unpaired: dict[str, np.ndarray]) -> dict[tuple[str, str, str], Comparison]:
    """(version, quantity, pairing) -> Comparison against `baseline`.

    `paired`: candidate -> (n, 2) outcomes (baseline, candidate) on shared requests; `unpaired`:
    version -> outcomes on its own quality window. Outcomes are correctness (classification,
    quantity `accuracy`) or absolute errors (regression, quantity `mae`)."""
    quantity = "mae" if task == "regression" else "accuracy"
    out: dict[tuple[str, str, str], Comparison] = {}
    for version, pairs in paired.items():
        if version == baseline or not len(pairs):
            continue
        if quantity == "accuracy":
            result = comparison.paired_accuracy(pairs[:, 0].astype(bool), pairs[:, 1].astype(bool))
        else:
            result = comparison.paired_mae(pairs[:, 0], pairs[:, 1])
        out[(version, quantity, "paired")] = result
    base = unpaired.get(baseline)
    if base is not None and len(base):
        for version, outcomes in unpaired.items():
            if version == baseline or not len(outcomes):
                continue
            if quantity == "accuracy":
                result = comparison.unpaired_accuracy(base.astype(bool), outcomes.astype(bool))
            else:
                result = comparison.unpaired_mae(base, outcomes)
            out[(version, quantity, "unpaired")] = result
    return out
