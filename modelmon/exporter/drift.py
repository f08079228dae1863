"""Per-feature drift: frozen reference profiles and the statistics that compare a window to them.

A profile is built once, when the reference is loaded; afterwards binning a batch is one
``np.searchsorted`` and counting it one ``np.bincount``, so the exporter can keep per-window bin
counts up to date incrementally (add a batch's counts, subtract the evicted records' counts).

Statistics take counts aligned with a profile's bins (PSI, Jensen-Shannon, chi-squared) or raw
values (Kolmogorov-Smirnov). They raise ValueError on an empty side; callers gate on
``min_drift_samples`` first.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

OTHER = "__other__"


def _missing_numeric(values: np.ndarray) -> np.ndarray:
    return np.isnan(values)


def _missing_categorical(values: np.ndarray) -> np.ndarray:
    return np.equal(values, None)


@dataclass(frozen=True, eq=False)
class NumericProfile:
    """Reference distribution of one numeric feature.

    Bins (``n_bins`` of them, counting both outer ones): index 0 holds values below the
    reference minimum, the last index values above the reference maximum (both empty in the
    reference, so a shifted range shows up at once), and in between the reference range cut at
    its unique interior quantiles, each bin closed on the left. NaN is missing and gets no bin;
    +/-inf are values and land in the outer bins.
    """

    edges: np.ndarray  # cut points: [ref min, interior quantiles..., next float above ref max]
    ref_counts: np.ndarray  # reference values per bin
    sample: np.ndarray  # sorted reference values (at most sample_max of them) for the KS test
    ref_missing_ratio: float

    @classmethod
    def from_values(cls, values: np.ndarray, n_bins: int = 10, sample_max: int = 20000,
                    seed: int = 0) -> NumericProfile:
        """Profile of reference ``values`` with up to ``n_bins`` quantile bins inside its range.

        The KS sample is all non-missing values, or a uniform random subset of ``sample_max`` of
        them (deterministic for ``seed``). Raises ValueError when no value is finite.
        """
        if n_bins < 1 or sample_max < 1:
            raise ValueError("n_bins and sample_max must be at least 1")
        v = np.asarray(values, dtype=np.float64).ravel()
        present = v[~_missing_numeric(v)]
        finite = present[np.isfinite(present)]
        if finite.size == 0:
            raise ValueError("the reference holds no finite value for this feature")
        lo, hi = finite.min(), finite.max()
        interior = np.quantile(finite, np.arange(1, n_bins) / n_bins)
        edges = np.unique(np.concatenate([[lo], interior, [np.nextafter(hi, np.inf)]]))
        if present.size > sample_max:
            present = np.random.default_rng(seed).choice(present, size=sample_max, replace=False)
        missing_ratio = float(np.count_nonzero(_missing_numeric(v))) / v.size
        profile = cls(edges=edges, ref_counts=np.zeros(edges.size + 1, dtype=np.int64),
                      sample=np.sort(present), ref_missing_ratio=missing_ratio)
        object.__setattr__(profile, "ref_counts", profile.counts(v))
        return profile

    @property
    def n_bins(self) -> int:
        return self.edges.size + 1

    def bin(self, values: np.ndarray) -> np.ndarray:
        """Bin index per value; -1 for a missing (NaN) value."""
        v = np.asarray(values, dtype=np.float64)
        idx = np.searchsorted(self.edges, v, side="right")
        idx[_missing_numeric(v)] = -1
        return idx

    def counts(self, values: np.ndarray) -> np.ndarray:
        """Non-missing values per bin (length ``n_bins``)."""
        idx = self.bin(values)
        return np.bincount(idx[idx >= 0], minlength=self.n_bins)

    @staticmethod
    def missing_ratio(values: np.ndarray) -> float:
        v = np.asarray(values, dtype=np.float64)
        return float(np.count_nonzero(_missing_numeric(v))) / v.size if v.size else 0.0


@dataclass(frozen=True, eq=False)
class CategoricalProfile:
    """Reference distribution of one categorical feature.

    ``categories`` are the reference's ``top_k`` most frequent values (ties broken by the
    value, so the order is deterministic) followed by ``"__other__"``, which collects every
    other value, including ones the reference never had. Values are category strings
    (see ``reference.category_string``); ``None`` is missing and gets no code.
    """

    categories: tuple[str, ...]  # kept values, most frequent first, then OTHER
    ref_counts: np.ndarray  # aligned with categories
    ref_missing_ratio: float
    _sorted: np.ndarray = field(init=False, repr=False)  # kept values sorted, for searchsorted
    _sorted_codes: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        kept = np.array(self.categories[:-1], dtype=str)
        order = np.argsort(kept, kind="stable")
        object.__setattr__(self, "_sorted", kept[order])
        object.__setattr__(self, "_sorted_codes", order)

    @classmethod
    def from_values(cls, values: np.ndarray, top_k: int = 20) -> CategoricalProfile:
        if top_k < 1:
            raise ValueError("top_k must be at least 1")
        v = np.asarray(values, dtype=object).ravel()
        missing = _missing_categorical(v)
        present = v[~missing].astype(str)
        names, counts = np.unique(present[present != OTHER], return_counts=True)
        keep = np.lexsort((names, -counts))[:top_k]  # by count descending, then by name
        profile = cls(categories=(*names[keep].tolist(), OTHER),
                      ref_counts=np.zeros(keep.size + 1, dtype=np.int64),
                      ref_missing_ratio=float(np.count_nonzero(missing)) / v.size if v.size else 0.0)
        object.__setattr__(profile, "ref_counts", profile.counts(v))
        return profile

    @property
    def other_code(self) -> int:
        return len(self.categories) - 1

    def codes(self, values: np.ndarray) -> np.ndarray:
        """Index into ``categories`` per value; the OTHER code for unknown values, -1 for None."""
        v = np.asarray(values, dtype=object).ravel()
        missing = _missing_categorical(v)
        out = np.full(v.size, self.other_code, dtype=np.int64)
        out[missing] = -1
        if self._sorted.size and not missing.all():
            s = v[~missing].astype(str)
            pos = np.minimum(np.searchsorted(self._sorted, s), self._sorted.size - 1)
            hit = self._sorted[pos] == s
            out[np.flatnonzero(~missing)[hit]] = self._sorted_codes[pos[hit]]
        return out

    def counts(self, values: np.ndarray) -> np.ndarray:
        """Non-missing values per category (length ``len(categories)``)."""
        c = self.codes(values)
        return np.bincount(c[c >= 0], minlength=len(self.categories))

    @staticmethod
    def missing_ratio(values: np.ndarray) -> float:
        v = np.asarray(values, dtype=object).ravel()
        return float(np.count_nonzero(_missing_categorical(v))) / v.size if v.size else 0.0


def _proportions(counts: np.ndarray, side: str) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    if total <= 0:
        raise ValueError(f"{side} counts are empty")
    return c / total


def psi(ref_counts: np.ndarray, cur_counts: np.ndarray, eps: float = 1e-4) -> float:
    """Population Stability Index of the current distribution against the reference.

    With p = reference and q = current bin proportions, each floored at ``eps`` so that a bin
    empty on one side gives a large but finite term (no renormalisation after flooring):

        PSI = sum_i (q_i - p_i) * ln(q_i / p_i)

    Bins empty on both sides contribute 0. Rule of thumb: < 0.1 stable, 0.1-0.25 moderate
    shift, > 0.25 major shift.
    """
    p = np.maximum(_proportions(ref_counts, "reference"), eps)
    q = np.maximum(_proportions(cur_counts, "current"), eps)
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Jensen-Shannon distance (square root of the divergence, base 2), in [0, 1].

    Equals ``scipy.spatial.distance.jensenshannon(ref, cur, base=2)``.
    """
    p = _proportions(ref_counts, "reference")
    q = _proportions(cur_counts, "current")
    m = (p + q) / 2

    def kl_to_m(a: np.ndarray) -> float:
        nz = a > 0  # 0 * log 0 = 0; m > 0 wherever a > 0
        return float(np.sum(a[nz] * np.log(a[nz] / m[nz])))

    divergence = (kl_to_m(p) + kl_to_m(q)) / (2 * np.log(2))
    return float(np.sqrt(np.clip(divergence, 0.0, 1.0)))


def ks_pvalue(ref_sorted_sample: np.ndarray, cur_values: np.ndarray) -> float:
    """Two-sided two-sample Kolmogorov-Smirnov p-value; NaN in ``cur_values`` is ignored.

    Equals ``scipy.stats.ks_2samp(ref, cur, method='asymp').pvalue``: the statistic comes from
    the empirical CDFs evaluated with searchsorted on the pre-sorted reference sample, the
    p-value from Smirnov's limiting distribution at the effective size n*m/(n+m). The asymptotic
    method is used at every size so a scrape costs O((n+m) log m), never the exact method's
    O(n*m) (scipy's ``method='auto'`` switches to exact up to 10000 values).
    """
    ref = np.asarray(ref_sorted_sample, dtype=np.float64)
    cur = np.asarray(cur_values, dtype=np.float64)
    cur = np.sort(cur[~np.isnan(cur)])
    if ref.size == 0 or cur.size == 0:
        raise ValueError("KS test needs values on both sides")
    both = np.concatenate([ref, cur])
    d = float(np.max(np.abs(np.searchsorted(ref, both, side="right") / ref.size
                            - np.searchsorted(cur, both, side="right") / cur.size)))
    effective_n = ref.size * cur.size / (ref.size + cur.size)
    return float(np.clip(stats.kstwo.sf(d, np.round(effective_n)), 0.0, 1.0))


def chi2_pvalue(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """p-value of Pearson's chi-squared test of homogeneity on the 2 x K table [ref; cur].

    Categories empty on both sides are dropped; with fewer than 2 left there is nothing to
    compare and the result is 1.0. Equals the p-value of
    ``scipy.stats.chi2_contingency(table, correction=False)``.
    """
    table = np.vstack([np.asarray(ref_counts, dtype=np.float64), np.asarray(cur_counts, dtype=np.float64)])
    if table[0].sum() <= 0 or table[1].sum() <= 0:
        raise ValueError("chi-squared test needs counts on both sides")
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 1.0
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    return float(stats.chi2.sf(statistic, table.shape[1] - 1))
