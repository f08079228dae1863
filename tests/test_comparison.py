"""modelmon.exporter.comparison against SciPy, against the textbook formulas written out here, and
against a few values computed once with statsmodels (not a dependency; the calls are cited)."""
from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from modelmon.exporter import comparison as cmp
from modelmon.exporter.comparison import (
    Comparison,
    mcnemar,
    paired_accuracy,
    paired_mae,
    paired_ttest,
    two_proportion_ztest,
    unpaired_accuracy,
    unpaired_mae,
    welch_ttest,
)

# Degenerate inputs must not warn (divide by zero, precision loss): turn every warning into an error.
pytestmark = pytest.mark.filterwarnings("error")

RTOL = 1e-12


def close(actual: float, expected: float, rtol: float = RTOL) -> bool:
    return math.isclose(actual, expected, rel_tol=rtol, abs_tol=0.0)


def exact_binomial_two_sided(b: int, c: int) -> float:
    """Exact McNemar p from the binomial(b + c, 1/2) pmf, in rational arithmetic."""
    n = b + c
    tail = sum(Fraction(math.comb(n, i), 2 ** n) for i in range(min(b, c) + 1))
    return float(min(Fraction(1), 2 * tail))


def corrected_chi2(b: int, c: int) -> float:
    """Continuity-corrected McNemar p; the chi-squared(1) survival function is erfc(sqrt(x / 2))."""
    statistic = (abs(b - c) - 1) ** 2 / (b + c)
    return math.erfc(math.sqrt(statistic / 2.0))


# --- McNemar ---------------------------------------------------------------------------------

def test_mcnemar_exact_below_25_discordant_pairs_every_table():
    for n in range(1, 25):
        for b in range(n + 1):
            c = n - b
            p = mcnemar(b, c)
            assert close(p, stats.binomtest(min(b, c), n, 0.5).pvalue), (b, c)
            assert close(p, exact_binomial_two_sided(b, c)), (b, c)
            assert 0.0 < p <= 1.0


def test_mcnemar_chi_squared_from_25_discordant_pairs():
    rng = np.random.default_rng(10)
    tables = [(b, 25 - b) for b in range(26)]
    tables += [tuple(int(x) for x in rng.integers(0, 400, 2)) for _ in range(300)]
    tested = 0
    for b, c in tables:
        if b + c < 25:
            continue
        statistic = (abs(b - c) - 1) ** 2 / (b + c)
        p = mcnemar(b, c)
        assert close(p, stats.chi2.sf(statistic, 1)), (b, c)
        assert close(p, corrected_chi2(b, c)), (b, c)
        tested += 1
    assert tested > 250


def test_mcnemar_boundary_24_exact_25_chi_squared():
    # 24 discordant pairs: exact; 25: corrected chi-squared, which differs from the exact value.
    assert mcnemar(7, 17) == pytest.approx(exact_binomial_two_sided(7, 17), rel=RTOL)
    assert mcnemar(7, 17) != pytest.approx(corrected_chi2(7, 17), rel=1e-3)
    assert mcnemar(7, 18) == pytest.approx(corrected_chi2(7, 18), rel=RTOL)
    assert mcnemar(7, 18) != pytest.approx(exact_binomial_two_sided(7, 18), rel=1e-3)
    assert cmp.MCNEMAR_EXACT_BELOW == 25


def test_mcnemar_ties_symmetry_and_no_discordant_pairs():
    assert mcnemar(0, 0) == 1.0
    assert mcnemar(5, 5) == 1.0  # exact: the two tails cover everything
    assert mcnemar(5, 6) == 1.0  # exact: the two tails touch (2 * binom.cdf gives 1 - 4e-16)
    assert mcnemar(12, 11) == 1.0
    # Corrected statistic is not clipped (statsmodels neither): b == c gives 1 / (b + c).
    assert close(mcnemar(20, 20), stats.chi2.sf(1 / 40, 1))
    assert mcnemar(20, 20) < 1.0
    assert mcnemar(0, 1) == 1.0
    assert close(mcnemar(0, 5), 2 / 32)
    for b, c in [(0, 3), (2, 9), (13, 11), (40, 3), (100, 140)]:
        assert mcnemar(b, c) == mcnemar(c, b)


def test_mcnemar_rejects_negative_counts():
    with pytest.raises(ValueError):
        mcnemar(-1, 3)


# Computed with statsmodels 0.15.0 (scipy 1.17.1):
#   from statsmodels.stats.contingency_tables import mcnemar
#   mcnemar([[50, b], [c, 50]], exact=True).pvalue                      (b + c < 25)
#   mcnemar([[50, b], [c, 50]], exact=False, correction=True).pvalue    (b + c >= 25)
STATSMODELS_MCNEMAR = [
    (3, 12, 0.03515625),
    (10, 14, 0.5412561893463135),
    (12, 12, 1.0),
    (7, 18, 0.04550026389635857),
    (30, 45, 0.10596880912720207),
    (120, 160, 0.019769406440668026),
    (200, 200, 0.960122388323255),
]


@pytest.mark.parametrize("b, c, expected", STATSMODELS_MCNEMAR)
def test_mcnemar_matches_statsmodels(b, c, expected):
    assert close(mcnemar(b, c), expected, rtol=1e-12)


# --- two-proportion z-test -------------------------------------------------------------------

def pooled_z_pvalue(k1: int, n1: int, k2: int, n2: int) -> float:
    p = (k1 + k2) / (n1 + n2)
    z = (k1 / n1 - k2 / n2) / math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    return math.erfc(abs(z) / math.sqrt(2.0))


def test_two_proportion_ztest_random():
    rng = np.random.default_rng(11)
    for n_max in (5, 50, 1000, 100000):
        for _ in range(100):
            n1, n2 = (int(x) for x in rng.integers(1, n_max + 1, 2))
            k1, k2 = int(rng.integers(0, n1 + 1)), int(rng.integers(0, n2 + 1))
            p = two_proportion_ztest(k1, n1, k2, n2)
            pooled = (k1 + k2) / (n1 + n2)
            if pooled in (0.0, 1.0):
                assert p == 1.0
                continue
            z = (k1 / n1 - k2 / n2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
            assert close(p, 2 * stats.norm.sf(abs(z))), (k1, n1, k2, n2)
            # erfc and ndtr part ways only in the subnormal range (p < 1e-300)
            expected = pooled_z_pvalue(k1, n1, k2, n2)
            assert math.isclose(p, expected, rel_tol=1e-9, abs_tol=1e-300), (k1, n1, k2, n2)
            assert p == two_proportion_ztest(k2, n2, k1, n1)


def test_two_proportion_ztest_degenerate():
    assert two_proportion_ztest(0, 10, 0, 30) == 1.0  # pooled 0
    assert two_proportion_ztest(10, 10, 30, 30) == 1.0  # pooled 1
    assert two_proportion_ztest(0, 0, 3, 10) == 1.0  # empty side
    assert two_proportion_ztest(0, 0, 0, 0) == 1.0
    assert two_proportion_ztest(3, 10, 30, 100) == 1.0  # equal proportions, z = 0
    with pytest.raises(ValueError):
        two_proportion_ztest(11, 10, 3, 10)
    with pytest.raises(ValueError):
        two_proportion_ztest(-1, 10, 3, 10)


# Computed with statsmodels 0.15.0:
#   from statsmodels.stats.proportion import proportions_ztest
#   proportions_ztest([k1, k2], [n1, n2])[1]
STATSMODELS_ZTEST = [
    (5, 83, 12, 99, 0.15918129181156992),  # the example of statsmodels' docstring (0.159)
    (430, 500, 470, 520, 0.02980040916890665),
    (180, 200, 200, 200, 4.468387345230091e-06),
    (90, 100, 61, 100, 1.8616279146606107e-06),
]


@pytest.mark.parametrize("k1, n1, k2, n2, expected", STATSMODELS_ZTEST)
def test_two_proportion_ztest_matches_statsmodels(k1, n1, k2, n2, expected):
    assert close(two_proportion_ztest(k1, n1, k2, n2), expected, rtol=1e-12)


# --- paired t-test ---------------------------------------------------------------------------

def test_paired_ttest_matches_scipy_random():
    rng = np.random.default_rng(12)
    for n in (2, 3, 10, 200, 5000):
        for shift in (0.0, 0.05, 0.5):
            base = np.abs(rng.normal(0, 1, n))
            cand = np.abs(base + rng.normal(shift, 0.3, n))
            assert close(paired_ttest(base, cand), stats.ttest_rel(base, cand).pvalue), (n, shift)


def test_paired_ttest_textbook_formula_with_ties():
    rng = np.random.default_rng(13)
    base = rng.integers(0, 4, 300).astype(float)  # integer errors: many tied values and differences
    cand = rng.integers(0, 5, 300).astype(float)
    d = base - cand
    n = d.size
    t = d.mean() / (d.std(ddof=1) / math.sqrt(n))
    expected = 2 * stats.t.sf(abs(t), n - 1)
    assert close(paired_ttest(base, cand), expected, rtol=1e-10)
    assert close(paired_ttest(base, cand), stats.ttest_rel(base, cand).pvalue)


def test_paired_ttest_zero_variance_and_small():
    x = np.array([0.1, 0.7, 0.3, 0.3])
    assert paired_ttest(x, x) == 1.0  # all differences 0
    assert paired_ttest(x, x + 0.1) == 0.0 or paired_ttest(x, x + 0.1) < 1e-10
    assert paired_ttest(np.full(5, 0.3), np.full(5, 0.2)) == 0.0  # all differences exactly 0.1
    assert paired_ttest(np.full(10, 0.1), np.zeros(10)) == 0.0  # float mean of 0.1s is not 0.1
    assert math.isnan(paired_ttest(np.array([1.0]), np.array([2.0])))
    assert math.isnan(paired_ttest(np.array([]), np.array([])))
    assert math.isnan(paired_ttest(np.array([1.0, np.nan, 2.0]), np.array([1.0, 2.0, 2.5])))
    with pytest.raises(ValueError):
        paired_ttest(np.zeros(3), np.zeros(4))


# --- Welch t-test ----------------------------------------------------------------------------

def welch_formula(a: np.ndarray, b: np.ndarray) -> float:
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    return 2 * stats.t.sf(abs(t), df)


def test_welch_ttest_matches_scipy_random():
    rng = np.random.default_rng(14)
    for n1, n2 in [(2, 2), (2, 7), (10, 3), (50, 500), (3000, 2000)]:
        for shift, scale in [(0.0, 1.0), (0.1, 3.0), (1.0, 0.2)]:
            a = np.abs(rng.normal(1, 1, n1))
            b = np.abs(rng.normal(1 + shift, scale, n2))
            p = welch_ttest(a, b)
            assert close(p, stats.ttest_ind(a, b, equal_var=False).pvalue), (n1, n2, shift)
            assert close(p, welch_formula(a, b), rtol=1e-10), (n1, n2, shift)
            assert close(p, welch_ttest(b, a))


def test_welch_ttest_ties_and_one_constant_side():
    rng = np.random.default_rng(15)
    a = rng.integers(0, 3, 400).astype(float)
    b = rng.integers(0, 4, 300).astype(float)
    assert close(welch_ttest(a, b), stats.ttest_ind(a, b, equal_var=False).pvalue)
    # One side constant: its variance is 0 and the degrees of freedom are the other side's n - 1.
    const = np.zeros(50)
    t = (a.mean() - 0.0) / math.sqrt(a.var(ddof=1) / a.size)
    assert close(welch_ttest(a, const), 2 * stats.t.sf(abs(t), a.size - 1), rtol=1e-10)
    assert close(welch_ttest(a, const), stats.ttest_ind(a, const, equal_var=False).pvalue)


def test_welch_ttest_degenerate():
    assert welch_ttest(np.full(4, 0.25), np.full(9, 0.25)) == 1.0
    assert welch_ttest(np.full(4, 0.25), np.full(9, 0.5)) == 0.0
    assert welch_ttest(np.full(10, 0.1), np.full(3, 0.1)) == 1.0  # float means of 0.1s differ
    assert math.isnan(welch_ttest(np.array([1.0]), np.arange(5.0)))
    assert math.isnan(welch_ttest(np.arange(5.0), np.array([])))
    assert math.isnan(welch_ttest(np.array([1.0, np.nan]), np.arange(5.0)))


# --- the exporter's helpers ------------------------------------------------------------------

def test_comparison_is_frozen():
    result = Comparison(0.1, 0.5, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.delta = 0.2  # type: ignore[misc]


def test_paired_accuracy():
    rng = np.random.default_rng(16)
    for n in (1, 20, 60, 1000):
        base = rng.random(n) < 0.8
        cand = np.where(rng.random(n) < 0.9, base, ~base)  # a few discordant pairs either way
        table = np.bincount(base.astype(int) * 2 + cand.astype(int), minlength=4).reshape(2, 2)
        b, c = int(table[1, 0]), int(table[0, 1])  # baseline right & candidate wrong; and reverse
        result = paired_accuracy(base, cand)
        assert result.samples == n
        assert close(result.delta, cand.mean() - base.mean(), rtol=1e-12) or abs(result.delta) < 1e-15
        expected = (stats.binomtest(min(b, c), b + c, 0.5).pvalue if 0 < b + c < 25
                    else stats.chi2.sf((abs(b - c) - 1) ** 2 / (b + c), 1) if b + c else 1.0)
        assert close(result.pvalue, expected), (n, b, c)


def test_unpaired_accuracy():
    rng = np.random.default_rng(17)
    for n1, n2 in [(1, 1), (30, 80), (2000, 500)]:
        base = rng.random(n1) < 0.85
        cand = rng.random(n2) < 0.8
        result = unpaired_accuracy(base, cand)
        assert result.samples == min(n1, n2)
        assert close(result.delta, cand.mean() - base.mean()) or cand.mean() == base.mean()
        assert result.pvalue == two_proportion_ztest(int(base.sum()), n1, int(cand.sum()), n2)
    all_right = unpaired_accuracy(np.ones(10, bool), np.ones(20, bool))
    assert all_right == Comparison(0.0, 1.0, 10)


def test_paired_and_unpaired_mae():
    rng = np.random.default_rng(18)
    base = np.abs(rng.normal(0, 1, 400))
    cand = np.abs(base + rng.normal(0.1, 0.2, 400))
    paired = paired_mae(base, cand)
    assert paired.samples == 400
    assert close(paired.delta, cand.mean() - base.mean(), rtol=1e-12)
    assert close(paired.pvalue, stats.ttest_rel(base, cand).pvalue)
    unpaired = unpaired_mae(base, cand[:250])
    assert unpaired.samples == 250
    assert close(unpaired.delta, cand[:250].mean() - base.mean(), rtol=1e-12)
    assert close(unpaired.pvalue, stats.ttest_ind(base, cand[:250], equal_var=False).pvalue)
    one = paired_mae(np.array([0.5]), np.array([0.25]))
    assert one.delta == -0.25 and math.isnan(one.pvalue) and one.samples == 1
    assert paired_mae(np.full(5, 0.3), np.full(5, 0.3)) == Comparison(0.0, 1.0, 5)


def test_empty_inputs():
    empty_b, empty_f = np.array([], dtype=bool), np.array([], dtype=float)
    for result in (paired_accuracy(empty_b, empty_b), unpaired_accuracy(empty_b, empty_b),
                   unpaired_accuracy(np.ones(5, bool), empty_b), paired_mae(empty_f, empty_f),
                   unpaired_mae(empty_f, empty_f), unpaired_mae(empty_f, np.ones(4))):
        assert math.isnan(result.delta) and math.isnan(result.pvalue) and result.samples == 0


def test_input_validation():
    with pytest.raises(ValueError):
        paired_accuracy(np.ones(3, bool), np.ones(4, bool))
    with pytest.raises(ValueError):
        paired_accuracy(np.ones(3), np.ones(3))  # floats are not correctness flags
    with pytest.raises(ValueError):
        paired_mae(np.ones(3), np.ones(4))
    with pytest.raises(ValueError):
        unpaired_mae(np.ones((2, 3)), np.ones(4))
