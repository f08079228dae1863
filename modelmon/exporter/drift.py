"""Per-feature drift: frozen reference profiles and the statistics that compare a window to them.

A profile is built once, when the reference is loaded. The exporter does not re-bin its drift
window at every refresh: ``drift_tally.DriftTally`` keeps per-window counts over a finer partition
of each numeric feature (the cells: every distinct value of the profile's KS sample and every bin
edge, and the open intervals between them), adds the counts of the records appended since the
last refresh and subtracts those of the records dropped since. PSI, Jensen-Shannon and chi-squared
take bin counts, which are sums of cell counts; the KS statistic needs, at each distinct reference
value r, the number of current values < r and <= r, which are cumulative cell counts. So every
statistic is the one ``feature_drift`` computes from the raw window, exactly (same integers).

Statistics take counts aligned with a profile's bins (PSI, Jensen-Shannon, chi-squared) or raw
values (Kolmogorov-Smirnov, whose p-value is the asymptotic Kolmogorov distribution with Stephens'
correction: see ``ks_pvalue`` for its measured accuracy against the exact test). They raise
ValueError on an empty side; callers gate on ``min_drift_samples`` first. KS is exact against the
reference *sample* (all reference values, or ``sample_max`` of them drawn at random): the window
side is never sampled.

Two statistics of the numeric values themselves, not of their bins, complete the set (issue 13):
the normed Wasserstein distance, Evidently's ``wasserstein_distance_norm`` (W1 between the
reference sample and the window, divided by ``max(np.std(reference sample), 0.001)``, ddof=0),
and the Welch t-test p-value (``welch_pvalue``: the reference side from the moments of *all*
finite reference values, kept in ``NumericProfile.ref_moments``). Both leave out missing and
infinite values. ``drift_tally.mean_stats`` computes them, exactly against SciPy, from the
tally's cells without sorting the window (see there for the schedule).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import special, stats

from modelmon.contract import MISSING_BIN

OTHER = "__other__"
MISSING = MISSING_BIN  # the bin of missing values in the additive counters (bins.py)


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
    # (count, mean, variance with ddof=1) of all finite reference values: the reference side of the
    # Welch t-test (``from_values`` sets it; a profile built otherwise has no t-test)
    ref_moments: tuple[int, float, float] = (0, math.nan, math.nan)

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
        moments = (int(finite.size), float(np.mean(finite)),
                   float(np.var(finite, ddof=1)) if finite.size > 1 else math.nan)
        profile = cls(edges=edges, ref_counts=np.zeros(edges.size + 1, dtype=np.int64),
                      sample=np.sort(present), ref_missing_ratio=missing_ratio, ref_moments=moments)
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


class _CodeLookup(dict):
    """Category string -> code, ``None`` -> -1; any other value -> the OTHER code."""

    __slots__ = ("other",)

    def __init__(self, kept: tuple[str, ...], other: int) -> None:
        super().__init__((name, code) for code, name in enumerate(kept))
        self[None] = -1
        self.other = other

    def __missing__(self, key: object) -> int:
        if isinstance(key, str):
            return self.other
        if isinstance(key, (int, float)):  # spelt by str() as astype(str) spells it
            return self.get(str(key), self.other)
        raise TypeError("not a str, int or float")  # CategoricalProfile.codes falls back


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
    _lookup: _CodeLookup = field(init=False, repr=False)  # value -> code, None -> -1

    def __post_init__(self) -> None:
        kept = np.array(self.categories[:-1], dtype=str)
        order = np.argsort(kept, kind="stable")
        object.__setattr__(self, "_sorted", kept[order])
        object.__setattr__(self, "_sorted_codes", order)
        object.__setattr__(self, "_lookup", _CodeLookup(self.categories[:-1], self.other_code))

    @classmethod
    def from_values(cls, values: np.ndarray, top_k: int = 20) -> CategoricalProfile:
        if top_k < 1:
            raise ValueError("top_k must be at least 1")
        v = np.asarray(values, dtype=object).ravel()
        missing = _missing_categorical(v)
        present = v[~missing].astype(str)
        # OTHER, and MISSING (the bin label of missing values in modelmon_feature_bin_total), are
        # never kept as categories of their own: such a value counts as any unknown one, in OTHER.
        names, counts = np.unique(present[(present != OTHER) & (present != MISSING)], return_counts=True)
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
        """Index into ``categories`` per value; the OTHER code for unknown values, -1 for None.

        One hash lookup per value, missing check included (an int or float value is looked up
        by ``str(value)``, as ``astype(str)`` spells it; any other non-str value sends the whole
        batch down the former path): about 75 ms per 1M
        values on the 2-core dev box, against 165 ms for the former string re-coding plus
        searchsorted (``benchmarks/drift_ks.py``). ``_codes_by_search`` is that former path,
        kept as the tests' reference.
        """
        v = np.asarray(values, dtype=object).ravel()
        try:
            return np.fromiter(map(self._lookup.__getitem__, v), dtype=np.int64, count=v.size)
        except TypeError:  # an unhashable or odd value: spell every value with astype(str)
            return self._codes_by_search(v)

    def _codes_by_search(self, values: np.ndarray) -> np.ndarray:
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


def ks_statistic(ref_sorted_sample: np.ndarray, cur_values: np.ndarray) -> tuple[float, int, int]:
    """Two-sample KS statistic D = sup |F_ref - F_cur|, with the two sample sizes.

    NaN in ``cur_values`` is ignored; ``ref_sorted_sample`` must be sorted (NumericProfile's
    ``sample`` is) and NaN-free. Same D as ``scipy.stats.ks_2samp`` (ties included; D is the
    exact fraction k/(n*m) correctly rounded, scipy's may differ in the last bit): only the
    current values are sorted, then both counts at each distinct reference value, #cur < r and
    #cur <= r, come from two searchsorted calls of the (small) reference into them. Between two
    distinct reference values F_ref is constant and F_cur is monotone, so the supremum is at one
    of those counts. Costs one sort of the window plus O(n_ref log m).
    """
    ref = np.asarray(ref_sorted_sample, dtype=np.float64)
    cur = np.asarray(cur_values, dtype=np.float64)
    cur = np.sort(cur[~np.isnan(cur)])
    n, m = ref.size, cur.size
    if n == 0 or m == 0:
        raise ValueError("KS test needs values on both sides")
    last = np.flatnonzero(np.append(ref[1:] != ref[:-1], True))  # last index of each distinct value
    distinct = ref[last]
    cur_below = np.searchsorted(cur, distinct, side="left")  # m * F_cur just below each
    cur_upto = np.searchsorted(cur, distinct, side="right")  # ... at each
    return ks_from_counts(last, n, cur_below, cur_upto, m), n, m


def ks_from_counts(last: np.ndarray, n: int, cur_below: np.ndarray, cur_upto: np.ndarray, m: int) -> float:
    """KS D from counts: `last` the last index of each distinct value of the sorted reference
    sample (size n); `cur_below` / `cur_upto` the number of the m current values below / at most
    each distinct value. D = k/(n*m) with k an exact integer (the counts are scaled to n*m)."""
    # counts scaled to the common denominator n*m, in integers so D is the exact fraction
    ref_upto = (last + 1) * m  # n*m * F_ref at each distinct value
    ref_below = np.concatenate([[0], ref_upto[:-1]])  # ... just below it
    k = max(int(np.max(np.abs(ref_below - np.asarray(cur_below, dtype=np.int64) * n))),
            int(np.max(np.abs(ref_upto - np.asarray(cur_upto, dtype=np.int64) * n))))
    return k / (n * m)


def ks_pvalue(ref_sorted_sample: np.ndarray, cur_values: np.ndarray) -> float:
    """Two-sided two-sample Kolmogorov-Smirnov p-value; NaN in ``cur_values`` is ignored.

    The statistic D is ``ks_statistic`` (equal to ``scipy.stats.ks_2samp``'s). The p-value is
    Smirnov's limiting distribution, the Kolmogorov survival function
    ``scipy.special.kolmogorov(z)``, at the effective size en = n*m/(n+m):

    * n != m: z = (sqrt(en) + 0.12 + 0.11/sqrt(en)) * D (Stephens' small-sample correction);
    * n == m: z = sqrt(en) * D (D lives on the lattice k/n, where the plain limit is already
      close; Stephens' shift over-corrects there).

    Constant time, about 1 microsecond, whatever D and the sizes; SciPy's ``kstwo.sf`` at en
    (what ``ks_2samp(method='asymp')`` computes, and this function did before) took 10-20 ms
    for a D in the alert-relevant range at en ~ 20000 (``benchmarks/drift_ks.py``).

    Accuracy against ``ks_2samp(method='exact')``, continuous data, n and m from 200 to 20000
    (``tests/test_drift.py``, which fails beyond these): absolute difference <= 0.01 everywhere
    (measured max 0.0075, at n=200 or 300), <= 0.003 where the exact p <= 0.2 (measured 0.002),
    within 15 % relative for exact p in [1e-6, 0.05] (measured 10 %); so the decision at
    alpha = 0.05 or 0.01 is the same unless the exact p is within 0.003 of alpha. For larger
    samples, where the exact method is out of reach, within 0.005 of ``kstwo.sf`` at en. Ties
    (discrete values) make every one of these p-values approximate, the exact one included.
    Correction and measurements: Stephens (1970), JRSS B 32(1), 115-122; the choice between
    the two forms above was made on the measured grid.
    """
    return ks_pvalue_of(*ks_statistic(ref_sorted_sample, cur_values))


def ks_pvalue_of(d: float, n: int, m: int) -> float:
    """The p-value of ``ks_pvalue`` from the statistic D and the two sample sizes."""
    en = n * m / (n + m)
    root = math.sqrt(en)
    z = root * d if n == m else (root + 0.12 + 0.11 / root) * d
    return float(min(max(special.kolmogorov(z), 0.0), 1.0))


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


def welch_pvalue(n1: int, mean1: float, var1: float, n2: int, mean2: float, var2: float) -> float:
    """Two-sided p-value of Welch's unequal-variance t-test from each side's count, mean and
    variance (ddof=1): ``scipy.stats.ttest_ind(a, b, equal_var=False).pvalue`` when these are
    ``len``, ``np.mean`` and ``np.var(ddof=1)`` of a and b (same formulas: t = (mean1 - mean2) /
    sqrt(var1/n1 + var2/n2), Welch-Satterthwaite degrees of freedom, 2 * t.sf(|t|)).

    Needs n1, n2 >= 2 (ValueError otherwise). Where SciPy answers NaN -- both sides constant, so
    the standard error is 0 -- this answers 1.0 for equal means and 0.0 for different ones (a gauge
    has no use for NaN, and a constant feature that moved has certainly moved).
    """
    if n1 < 2 or n2 < 2:
        raise ValueError("the t-test needs at least 2 values on each side")
    vn1, vn2 = var1 / n1, var2 / n2
    se2 = vn1 + vn2
    diff = mean1 - mean2
    if not se2 > 0:
        return 1.0 if diff == 0 else 0.0
    df = se2 * se2 / (vn1 * vn1 / (n1 - 1) + vn2 * vn2 / (n2 - 1))
    t = diff / math.sqrt(se2)
    return float(min(max(2.0 * special.stdtr(df, -abs(t)), 0.0), 1.0))
