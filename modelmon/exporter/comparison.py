"""Is a candidate model version better or worse than the baseline? Two-sided significance tests.

Pure functions on counts or arrays, no state: the exporter pairs predictions and keeps the
windows; this module turns them into ``Comparison(delta, pvalue, samples)`` at a refresh. Which
test fits depends on the data:

* Paired accuracy (both versions answered the *same* labelled requests, e.g. shadow traffic):
  McNemar's test (``mcnemar``). Only the discordant pairs carry information: ``b`` = baseline right
  and candidate wrong, ``c`` = baseline wrong and candidate right; under the null hypothesis of
  equal accuracy each discordant pair goes either way with probability 1/2. With fewer than 25
  discordant pairs the exact binomial test is used; from 25 on, the chi-squared statistic with
  Edwards' continuity correction ``(|b - c| - 1)^2 / (b + c)``, 1 degree of freedom (25: the
  usual rule of thumb for the chi-squared approximation). Each branch equals statsmodels'
  ``mcnemar(table, exact=True)`` / ``mcnemar(table, exact=False, correction=True)``.
  A two-proportion test would be wrong here: the two accuracies are measured on the same
  requests, so they are correlated and that test would be conservative.
* Unpaired accuracy (each version served its own requests, e.g. canary or A/B): the
  two-proportion z-test with pooled variance (``two_proportion_ztest``), statsmodels'
  ``proportions_ztest([k1, k2], [n1, n2])`` default.
* Paired MAE: the paired t-test on the per-request absolute errors (``paired_ttest``), i.e. the
  one-sample t-test of the differences, ``scipy.stats.ttest_rel``. Pairing removes the
  request-to-request variation both versions share (hard and easy requests).
* Unpaired MAE: Welch's t-test (``welch_ttest``), ``scipy.stats.ttest_ind(equal_var=False)``:
  the two versions' error spreads need not be equal, and Welch's test does not assume they are.

The t-tests lean on the central limit theorem for the mean absolute error (errors are not
normal); at the sample sizes the alerts require (``min_samples``, 200 by default) that is a
reasonable approximation.

Degenerate inputs never produce warnings. Where the statistic is 0/0 or x/0 because there is no
variation at all (no discordant pairs, a pooled proportion of 0 or 1, all differences equal), the
p-value is its limit: 1.0 when the two sides are exactly equal, 0.0 when they differ by a constant
with no noise at all. Too few samples for the test to be defined gives NaN.

References: McNemar, Psychometrika 12 (1947) 153-157; Edwards, Psychometrika 13 (1948) 185-187;
Agresti, *Categorical Data Analysis* (3rd ed., 2013), on two proportions and on matched pairs;
Welch, Biometrika 34 (1947) 28-35.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

# Below this many discordant pairs McNemar's test is the exact binomial test (issue 10 design).
MCNEMAR_EXACT_BELOW = 25


@dataclass(frozen=True)
class Comparison:
    """Candidate minus baseline (``delta``), its two-sided ``pvalue``, and the ``samples`` behind it.

    ``samples`` is the number of pairs (paired tests) or the smaller of the two windows
    (unpaired tests). ``delta`` and ``pvalue`` are NaN when there is nothing to compare.
    """

    delta: float
    pvalue: float
    samples: int


EMPTY = Comparison(math.nan, math.nan, 0)


def _constant_limit(equal: bool) -> float:
    """The p-value of a test whose statistic is 0/0 (equal sides) or x/0 (a noiseless shift)."""
    return 1.0 if equal else 0.0


def mcnemar(b: int, c: int) -> float:
    """Two-sided p-value of McNemar's test on the discordant pair counts.

    ``b``: baseline right and candidate wrong; ``c``: baseline wrong and candidate right (the
    test is symmetric in them). Exact binomial test when ``b + c < 25``, which equals
    ``scipy.stats.binomtest(min(b, c), b + c, 0.5).pvalue``; otherwise the continuity-corrected
    chi-squared test. Like statsmodels, the corrected statistic is ``(|b - c| - 1)^2 / (b + c)``
    without clipping, so ``b == c`` gives ``1 / (b + c)`` and a p-value just below 1.
    ``b + c == 0`` (no discordant pair, no evidence either way) gives 1.0.
    """
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    if n < MCNEMAR_EXACT_BELOW:
        if abs(b - c) <= 1:
            return 1.0  # the two tails overlap (b == c) or touch: exactly 1, not 2 * cdf rounded
        # binomial(n, 1/2) is symmetric, so the two tails are twice the lower one.
        return min(1.0, 2.0 * float(special.bdtr(min(b, c), n, 0.5)))
    statistic = (abs(b - c) - 1) ** 2 / n
    return float(special.chdtrc(1, statistic))  # = scipy.stats.chi2.sf(statistic, 1)


def two_proportion_ztest(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p-value of the z-test that ``k1 / n1`` and ``k2 / n2`` are equal, pooled variance.

    ``z = (p1 - p2) / sqrt(p (1 - p) (1/n1 + 1/n2))`` with ``p = (k1 + k2) / (n1 + n2)``, as
    statsmodels' ``proportions_ztest([k1, k2], [n1, n2])``. A pooled proportion of 0 or 1 means
    both proportions are equal (all failures or all successes): 1.0. An empty side (``n == 0``)
    is no evidence of a difference: 1.0 as well (callers that need to tell "no data" apart check
    the sample counts; ``unpaired_accuracy`` returns NaN there).
    """
    k1, n1, k2, n2 = int(k1), int(n1), int(k2), int(n2)
    if not (0 <= k1 <= n1 and 0 <= k2 <= n2):
        raise ValueError(f"need 0 <= k <= n, got k1={k1}, n1={n1}, k2={k2}, n2={n2}")
    if n1 == 0 or n2 == 0:
        return 1.0
    pooled = (k1 + k2) / (n1 + n2)
    if pooled <= 0.0 or pooled >= 1.0:
        return 1.0
    diff = k1 / n1 - k2 / n2
    std = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    return float(2.0 * special.ndtr(-abs(diff / std)))  # = 2 * scipy.stats.norm.sf(|z|)


def _vector(values: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    return array


def _mean_var(values: np.ndarray) -> tuple[float, float]:
    """Mean and unbiased variance as SciPy's t-tests compute them; variance exactly 0 when all
    values are equal (the float mean of equal values need not be that value, which would leave a
    spurious variance of ~1e-33 and a meaningless p-value of ~0)."""
    mean = float(np.mean(values))
    if values[0] == values[-1] and np.ptp(values) == 0:
        return mean, 0.0
    n = values.size
    return mean, float(np.mean((values - mean) ** 2)) * (n / (n - 1))


def _t_pvalue(t: float, df: float) -> float:
    return float(2.0 * special.stdtr(df, -abs(t)))  # = 2 * scipy.stats.t.sf(|t|, df)


def paired_ttest(baseline_err: np.ndarray, candidate_err: np.ndarray) -> float:
    """Two-sided p-value of the paired t-test, ``scipy.stats.ttest_rel(baseline_err, candidate_err)``.

    The arrays are aligned pair by pair and must have the same length. Fewer than 2 pairs: NaN.
    All differences equal (zero variance): 1.0 when they are all 0, else 0.0 (the limit of the
    test as the noise vanishes; SciPy gives NaN or a precision warning there). A NaN in the
    input gives NaN.
    """
    base = _vector(baseline_err, "baseline_err")
    cand = _vector(candidate_err, "candidate_err")
    if base.shape != cand.shape:
        raise ValueError(f"paired arrays differ in length: {base.size} vs {cand.size}")
    n = base.size
    if n < 2:
        return math.nan
    diff = base - cand
    mean, var = _mean_var(diff)
    if math.isnan(var):
        return math.nan
    if var == 0.0:
        return _constant_limit(diff[0] == 0.0)
    return _t_pvalue(mean / math.sqrt(var / n), n - 1)


def welch_ttest(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of Welch's t-test, ``scipy.stats.ttest_ind(a, b, equal_var=False)``.

    Fewer than 2 values on either side: NaN. Both sides constant: 1.0 when they hold the same
    value, else 0.0 (see ``paired_ttest``). One constant side is fine: its variance is 0 and the
    Welch-Satterthwaite degrees of freedom become those of the other side. A NaN gives NaN.
    """
    a = _vector(a, "a")
    b = _vector(b, "b")
    n1, n2 = a.size, b.size
    if n1 < 2 or n2 < 2:
        return math.nan
    m1, v1 = _mean_var(a)
    m2, v2 = _mean_var(b)
    if math.isnan(v1) or math.isnan(v2):
        return math.nan
    vn1, vn2 = v1 / n1, v2 / n2
    if vn1 + vn2 == 0.0:
        return _constant_limit(a[0] == b[0])
    # Welch-Satterthwaite, written scale-free (shares of the summed variance) so that tiny or huge
    # variances cannot underflow or overflow when squared.
    share1, share2 = vn1 / (vn1 + vn2), vn2 / (vn1 + vn2)
    df = 1.0 / (share1 ** 2 / (n1 - 1) + share2 ** 2 / (n2 - 1))
    return _t_pvalue((m1 - m2) / math.sqrt(vn1 + vn2), df)


def _bools(values: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.dtype != np.bool_:
        raise ValueError(f"{name} must be a boolean array, got {array.dtype}")
    return array


def paired_accuracy(baseline_correct: np.ndarray, candidate_correct: np.ndarray) -> Comparison:
    """Accuracy of the candidate minus the baseline's on the same labelled requests, McNemar p.

    ``baseline_correct[i]`` and ``candidate_correct[i]`` say whether each version was right on
    the i-th pair. ``samples`` = pairs.
    """
    base = _bools(baseline_correct, "baseline_correct")
    cand = _bools(candidate_correct, "candidate_correct")
    if base.shape != cand.shape:
        raise ValueError(f"paired arrays differ in length: {base.size} vs {cand.size}")
    n = base.size
    if n == 0:
        return EMPTY
    b = int(np.count_nonzero(base & ~cand))
    c = int(np.count_nonzero(~base & cand))
    # candidate right - baseline right = c - b: the concordant pairs cancel.
    return Comparison((c - b) / n, mcnemar(b, c), n)


def unpaired_accuracy(baseline_correct: np.ndarray, candidate_correct: np.ndarray) -> Comparison:
    """Accuracy of the candidate's window minus the baseline's, two-proportion z-test p.

    ``samples`` = the smaller window; an empty window on either side gives NaN, NaN, 0.
    """
    base = _bools(baseline_correct, "baseline_correct")
    cand = _bools(candidate_correct, "candidate_correct")
    n1, n2 = base.size, cand.size
    if n1 == 0 or n2 == 0:
        return EMPTY
    k1 = int(np.count_nonzero(base))
    k2 = int(np.count_nonzero(cand))
    return Comparison(k2 / n2 - k1 / n1, two_proportion_ztest(k1, n1, k2, n2), min(n1, n2))


def paired_mae(baseline_abs_err: np.ndarray, candidate_abs_err: np.ndarray) -> Comparison:
    """MAE of the candidate minus the baseline's on the same requests, paired t-test p.

    ``samples`` = pairs; one pair gives a delta and a NaN p-value.
    """
    base = _vector(baseline_abs_err, "baseline_abs_err")
    cand = _vector(candidate_abs_err, "candidate_abs_err")
    if base.shape != cand.shape:
        raise ValueError(f"paired arrays differ in length: {base.size} vs {cand.size}")
    if base.size == 0:
        return EMPTY
    return Comparison(float(np.mean(cand)) - float(np.mean(base)), paired_ttest(base, cand), base.size)


def unpaired_mae(baseline_abs_err: np.ndarray, candidate_abs_err: np.ndarray) -> Comparison:
    """MAE of the candidate's window minus the baseline's, Welch's t-test p.

    ``samples`` = the smaller window; an empty window on either side gives NaN, NaN, 0.
    """
    base = _vector(baseline_abs_err, "baseline_abs_err")
    cand = _vector(candidate_abs_err, "candidate_abs_err")
    if base.size == 0 or cand.size == 0:
        return EMPTY
    return Comparison(float(np.mean(cand)) - float(np.mean(base)), welch_ttest(base, cand),
                      min(base.size, cand.size))
