"""Additive drift counters: every value entering a drift window, counted by bin of the frozen reference.

The drift gauges (PSI, Jensen-Shannon, missing ratio) describe one process's window and do not add
up across replicas. Counts by reference bin do: `modelmon_feature_bin_total{model,feature,bin}`
and `modelmon_prediction_bin_total{model,version,bin}` are counters that PromQL can `increase()`
over any window and `sum` over replicas, and PSI/JS of those summed counts against
`modelmon_*_reference_ratio` equal `drift.psi` / `drift.js_distance` of the union of the
replicas' records, exactly (same integers, same formula).

Bins are a deterministic function of the reference (`bin_labels`), so replicas that load the same
reference file export the same `bin` values:
- numeric (`NumericProfile`): the bin index, zero-padded to at least two digits: `00` holds values
  below the reference minimum, the last index values above its maximum, the ones between the
  quantile bins (`drift.NumericProfile`);
- categorical (`CategoricalProfile`): the kept category (cut to `max_label_value_length` with a hash
  suffix, as every label value), then `__other__`;
- both: `__missing__` (NaN, null or absent), last. It has no reference ratio: the ratios are the
  reference's share of *non-missing* values, as PSI compares them.

Values are counted at ingest, a batch at a time, never at refresh: between two refreshes a small
drift window may drop records the refresh never sees. The counting is vectorised: every numeric
feature of a model in one (features x records) pass per bin edge (compare-and-add, branch free:
`np.searchsorted` on random values costs ~20 ns a value in branch mispredictions, this ~10),
categorical features by the parser's dictionary codes where the columnar path has them (one lookup
per distinct value, not per record) and one `np.bincount` for all numeric features.

Counters live in memory only: a restart (or a replaced reference) starts them at 0, which
Prometheus' `rate()`/`increase()` treat as a counter reset. A replaced reference means new bins:
the window after the change mixes the two; scale-out needs the same reference *file* on every
replica (a reference frozen from each replica's own traffic gives each its own bins).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from modelmon.exporter import drift
from modelmon.exporter.histogram import shorten
from modelmon.exporter.reference import object_array

MISSING = drift.MISSING  # never a kept category (CategoricalProfile folds it into __other__)


def bin_labels(profile: Any, max_length: int = 10_000) -> tuple[str, ...]:
    """The `bin` label values of a profile's value bins, in bin order (without `__missing__`)."""
    if isinstance(profile, drift.NumericProfile):
        n = profile.n_bins
        width = max(2, len(str(n - 1)))
        return tuple(f"{i:0{width}d}" for i in range(n))
    return tuple(shorten(c, max_length) for c in profile.categories)


def reference_ratios(profile: Any) -> np.ndarray | None:
    """The reference's share of non-missing values per bin (sums to 1); None without any."""
    counts = np.asarray(profile.ref_counts, dtype=np.float64)
    total = counts.sum()
    return counts / total if total > 0 else None


def served_rows(status_ok: np.ndarray, shadow: np.ndarray | None) -> np.ndarray | None:
    """Mask of the rows entering the model-level drift window (ok and served, not shadow); None: all."""
    rows = status_ok if shadow is None else status_ok & ~shadow
    return None if rows.all() else rows


class FeatureBins:
    """Counts of a model's features by bin of one reference. A new reference gets a new instance
    (so its counts start at 0); `count` is pure and may run outside the exporter lock, `add` adds
    what it counted (under the lock).

    Numeric features are counted together, in one int64 block (feature x slot): slot 0 holds the
    missing values, slot 1 + i bin i. Binning is a compare-and-add pass over a (features x records)
    matrix per cut point, in bytes (SIMD-wide; `np.searchsorted` per feature mispredicts its way
    through random values at twice the cost): the first cut point, -inf, takes every value but NaN,
    the others are each feature's edges padded with NaN (no value is >= NaN), so a value's slot is
    1 + the number of edges <= it, NumericProfile.bin's searchsorted(side="right") + 1, and NaN's 0.
    """

    def __init__(self, profiles: dict[str, Any], max_length: int = 10_000):
        self.profiles = profiles
        self.labels: dict[str, tuple[str, ...]] = {  # feature -> bin labels, `__missing__` last
            f: (*bin_labels(p, max_length), MISSING) for f, p in profiles.items()}
        self.ratios: dict[str, np.ndarray | None] = {f: reference_ratios(p) for f, p in profiles.items()}
        self.numeric = [f for f, p in profiles.items() if isinstance(p, drift.NumericProfile)]
        self.categorical = [f for f, p in profiles.items() if isinstance(p, drift.CategoricalProfile)]
        n_edges = max((profiles[f].edges.size for f in self.numeric), default=0)
        cuts = np.full((n_edges + 1, len(self.numeric), 1), np.nan)
        cuts[0] = -np.inf
        for j, f in enumerate(self.numeric):
            e = profiles[f].edges
            cuts[1:e.size + 1, j, 0] = e
        self._cuts = cuts
        self._width = n_edges + 2  # slots per numeric feature: missing, then bins 0..n_edges
        self._slot = np.uint8 if self._width <= 256 else np.uint16
        wide = np.uint16 if len(self.numeric) * self._width <= 65536 else np.intp  # a slot's index in the block
        self._offsets = (np.arange(len(self.numeric)) * self._width).astype(wide)[:, None]
        self._block = np.zeros((len(self.numeric), self._width), dtype=np.int64)
        self._categorical_counts = {f: np.zeros(len(self.labels[f]), dtype=np.int64) for f in self.categorical}

    @property
    def counts(self) -> dict[str, np.ndarray]:
        """feature -> counts in the order of its labels (values by bin, `__missing__` last)."""
        return self.as_dict((self._block, self._categorical_counts))

    def as_dict(self, counted: tuple[np.ndarray | None, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """What `count` returned, as feature -> counts in the order of its labels."""
        block, categorical = counted
        out = {}
        for j, f in enumerate(self.numeric):
            n_bins = self.profiles[f].n_bins
            out[f] = np.append(block[j, 1:n_bins + 1], block[j, 0])
        out.update(categorical)
        return {f: out[f] for f in self.profiles}

    def count(self, features: dict[str, np.ndarray], rows: np.ndarray | None,
              categories: dict[str, tuple[np.ndarray, list]] | None = None
              ) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        """Counts of `features[f][rows]` for every profiled feature (`rows`: a boolean mask, None for
        all): (the numeric block, categorical feature -> counts in label order); see `as_dict`.

        `categories`: the parser's dictionary encoding of categorical columns, (code per row, -1 for
        null; the distinct values), used instead of a lookup per value where given."""
        block = None
        if self.numeric:
            matrix = np.stack([features[f] for f in self.numeric])
            dropped = None
            if rows is not None:
                dropped = np.flatnonzero(~rows)
                if 2 * dropped.size > rows.size:  # mostly dropped: bin what is left
                    matrix, dropped = matrix[:, rows], None
            slots = np.zeros(matrix.shape, dtype=self._slot)
            above = np.empty(matrix.shape, dtype=self._slot)
            above_bool = above.view(bool) if self._slot is np.uint8 else None
            for cut in self._cuts:
                if above_bool is not None:
                    np.greater_equal(matrix, cut, out=above_bool)
                else:
                    np.copyto(above, matrix >= cut)
                slots += above
            codes = slots + self._offsets
            size = self._block.size
            block = np.bincount(codes.ravel(), minlength=size)
            if dropped is not None and dropped.size:  # a few rows out (errors, shadow): bin all, take theirs off
                block -= np.bincount(codes[:, dropped].ravel(), minlength=size)
            block = block.reshape(self._block.shape)
        categorical = {f: self._categorical(f, features[f], rows, None if categories is None else categories.get(f))
                       for f in self.categorical}
        return block, categorical

    def _categorical(self, f: str, values: np.ndarray, rows: np.ndarray | None, encoded) -> np.ndarray:
        profile = self.profiles[f]
        missing = len(profile.categories)
        if encoded is not None:
            codes, distinct = encoded
            lookup = np.append(profile.codes(object_array(distinct)), missing)  # code -1 (null) picks the last
            lookup[lookup < 0] = missing
            picked = lookup[codes if rows is None else codes[rows]]
        else:
            if rows is not None:
                values = values[rows]
            if values.dtype != object:  # (not from the parsers) NaN is missing, as CategoricalCoder has it
                values = object_array([None if v != v else v for v in values.tolist()])
            picked = profile.codes(values)
            picked[picked < 0] = missing
        return np.bincount(picked, minlength=missing + 1)

    def add(self, counted: tuple[np.ndarray | None, dict[str, np.ndarray]]) -> None:
        block, categorical = counted
        if block is not None:
            self._block += block
        for f, c in categorical.items():
            self._categorical_counts[f] += c


class OutputBins:
    """Counts of each version's outputs by bin of the output reference (one instance per reference)."""

    def __init__(self, profile: Any, versions=(), max_length: int = 10_000):
        self.profile = profile
        self.labels = (*bin_labels(profile, max_length), MISSING)
        self.ratios = reference_ratios(profile)
        self.numeric = isinstance(profile, drift.NumericProfile)
        self._edges = np.append(profile.edges, np.nan) if self.numeric else None  # NaN sorts last: missing
        self.counts: dict[str, np.ndarray] = {v: self._zeros() for v in versions}

    def _zeros(self) -> np.ndarray:
        return np.zeros(len(self.labels), dtype=np.int64)

    def code(self, values: np.ndarray) -> np.ndarray:
        """Bin code per output value (`__missing__` last)."""
        if self.numeric:
            return np.searchsorted(self._edges, np.asarray(values, dtype=np.float64), side="right")
        codes = self.profile.codes(values)
        codes[codes < 0] = len(self.labels) - 1
        return codes

    def add(self, version: str, codes: np.ndarray) -> None:
        counts = self.counts.get(version)
        if counts is None:
            counts = self.counts[version] = self._zeros()
        counts += np.bincount(codes, minlength=counts.size)
