"""modelmon.exporter.drift: reference profiles, and PSI / JS / KS / chi-squared against SciPy."""
from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.spatial.distance import jensenshannon
from scipy.special import kolmogorov
from scipy.stats import chi2_contingency, ks_2samp

from modelmon.exporter.drift import (
    OTHER,
    CategoricalProfile,
    NumericProfile,
    chi2_pvalue,
    js_distance,
    ks_pvalue,
    ks_statistic,
    psi,
)


def obj(values) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


# --- numeric profile ----------------------------------------------------------------------------

def test_numeric_bins_cover_reference_with_out_of_range_bins():
    ref = np.arange(1.0, 101.0)  # 1..100
    prof = NumericProfile.from_values(ref, n_bins=4)
    assert prof.n_bins == 6  # below, 4 quantile bins, above
    assert prof.ref_counts[0] == 0 and prof.ref_counts[-1] == 0
    assert prof.ref_counts.sum() == 100
    assert np.all(np.abs(prof.ref_counts[1:-1] - 25) <= 1)  # quantile bins hold equal shares
    assert prof.bin(np.array([0.5, 1.0, 100.0, 100.5, np.nan, -np.inf, np.inf])).tolist() == [0, 1, 4, 5, -1, 0, 5]


def test_numeric_profile_ties_constant_and_missing():
    ref = np.array([0.0] * 80 + [1.0, 2.0, 3.0] * 5 + [np.nan] * 5)  # 80% zeros: duplicate quantiles
    prof = NumericProfile.from_values(ref)
    assert np.all(np.diff(prof.edges) > 0)
    assert prof.ref_counts.sum() == 95 and prof.ref_missing_ratio == 0.05
    assert prof.bin(np.array([0.0]))[0] == 1  # the zeros share one bin
    assert prof.missing_ratio(np.array([1.0, np.nan])) == 0.5
    const = NumericProfile.from_values(np.full(10, 7.0))
    assert const.n_bins == 3 and const.bin(np.array([6.9, 7.0, 7.1])).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="no finite value"):
        NumericProfile.from_values(np.array([np.nan, np.nan]))


def test_numeric_sample_is_sorted_bounded_and_deterministic():
    ref = np.random.default_rng(0).normal(size=50_000)
    a = NumericProfile.from_values(ref, sample_max=1000, seed=3)
    b = NumericProfile.from_values(ref, sample_max=1000, seed=3)
    c = NumericProfile.from_values(ref, sample_max=1000, seed=4)
    assert a.sample.size == 1000 and np.all(np.diff(a.sample) >= 0)
    np.testing.assert_array_equal(a.sample, b.sample)
    assert not np.array_equal(a.sample, c.sample)
    assert np.isin(a.sample, ref).all()
    assert abs(np.median(a.sample)) < 0.1  # a uniform subsample, not the head of the data
    assert NumericProfile.from_values(ref[:500], sample_max=1000).sample.size == 500


def test_shifted_range_lands_in_out_of_range_bin():
    rng = np.random.default_rng(1)
    prof = NumericProfile.from_values(rng.uniform(0, 10, 5000))
    cur = rng.uniform(5, 20, 1000)  # two thirds of it above the reference maximum
    counts = prof.counts(cur)
    assert counts[-1] > 600 and counts[0] == 0
    assert psi(prof.ref_counts, counts) > 1.0


# --- categorical profile ------------------------------------------------------------------------

def test_categorical_top_k_other_unseen_and_missing():
    values = obj(["b"] * 5 + ["a"] * 5 + ["c"] * 3 + ["d"] * 1 + [OTHER] * 2 + [None] * 4)
    prof = CategoricalProfile.from_values(values, top_k=2)
    assert prof.categories == ("a", "b", OTHER)  # a/b tie at 5 broken by name; "__other__" data folded
    assert prof.ref_counts.tolist() == [5, 5, 6] and prof.ref_missing_ratio == 0.2
    codes = prof.codes(obj(["a", "b", "c", "zzz", None, OTHER, ""]))
    assert codes.tolist() == [0, 1, 2, 2, -1, 2, 2]
    assert prof.counts(obj(["b", "b", "new", None])).tolist() == [0, 2, 1]
    assert prof.missing_ratio(obj(["a", None])) == 0.5


def test_categorical_codes_equal_the_string_search_path():
    """The hash lookup codes exactly as the former astype(str) + searchsorted path did."""
    rng = np.random.default_rng(21)
    pool = ["a", "b", "c", "", "None", "nan", "1", "1.5", OTHER, "zz", np.str_("b")]
    prof = CategoricalProfile.from_values(obj(rng.choice(pool[:9], 500).tolist() + [None] * 7), top_k=5)
    odd = [None, 1, 1.5, float("nan"), True, np.str_("a"), np.float64(1.5), b"a", b"zz"]
    values = obj([pool[i] for i in rng.integers(0, len(pool), 2000)] + odd)
    assert prof.codes(values).tolist() == prof._codes_by_search(values).tolist()
    with pytest.raises(ValueError):  # as before: a sequence has no category string
        prof.codes(obj([None, 1, "a", ["unhashable"]]))
    empty = CategoricalProfile.from_values(obj([None, None]))
    assert empty.codes(obj(["a", None, 3])).tolist() == [0, -1, 0]


def test_categorical_order_is_by_frequency_and_all_kept_under_budget():
    prof = CategoricalProfile.from_values(obj(["x"] * 1 + ["y"] * 3 + ["z"] * 2))
    assert prof.categories == ("y", "z", "x", OTHER)
    assert prof.ref_counts.tolist() == [3, 2, 1, 0]  # OTHER empty in the reference: new values show
    only_missing = CategoricalProfile.from_values(obj([None, None]))
    assert only_missing.categories == (OTHER,) and only_missing.codes(obj(["a", None])).tolist() == [0, -1]


# --- statistics ---------------------------------------------------------------------------------

def psi_by_hand(ref, cur, eps=1e-4):
    total = 0.0
    for r, c in zip(ref, cur):
        p = max(r / sum(ref), eps)
        q = max(c / sum(cur), eps)
        total += (q - p) * math.log(q / p)
    return total


def random_counts(rng, k):
    counts = rng.integers(0, 50, (2, k))
    counts[:, rng.random(k) < 0.2] = 0  # some bins empty on both sides
    counts[rng.integers(0, 2), rng.integers(0, k)] = 0  # and some on one side
    counts[:, 0] += 1  # never an empty side
    return counts


def test_psi_and_js_match_reference_formulas():
    rng = np.random.default_rng(2)
    for k in (1, 2, 3, 12, 21):
        for _ in range(20):
            ref, cur = random_counts(rng, k)
            assert_allclose(psi(ref, cur), psi_by_hand(ref, cur), rtol=1e-12, atol=1e-15)
            assert_allclose(js_distance(ref, cur), jensenshannon(ref, cur, base=2), rtol=1e-9, atol=1e-7)
    assert psi([10, 0], [0, 10]) == pytest.approx(2 * (1 - 1e-4) * math.log(1 / 1e-4))
    assert js_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    assert js_distance([3, 5], [6, 10]) == 0.0


def test_ks_statistic_equals_scipy():
    rng = np.random.default_rng(3)
    for n_ref, n_cur in ((1, 1), (1, 5), (5, 3), (50, 80), (1000, 200), (3000, 3000), (7, 11)):
        for shift in (0.0, 0.1, 0.5):
            for kind in ("continuous", "ties", "ties+inf"):
                ref = rng.normal(size=n_ref)
                cur = rng.normal(shift, size=n_cur)
                if kind != "continuous":  # heavy ties
                    ref, cur = np.round(ref * 2) / 2, np.round(cur * 2) / 2
                if kind == "ties+inf":
                    ref[0], cur[0] = np.inf, -np.inf
                d, n, m = ks_statistic(np.sort(ref), cur)
                assert (n, m) == (n_ref, n_cur)
                assert d == pytest.approx(ks_2samp(ref, cur, method="asymp").statistic, rel=1e-14)
    cur = np.array([0.1, np.nan, 0.5, 2.0])
    ref = np.sort(rng.normal(size=40))
    assert ks_statistic(ref, cur)[0] == pytest.approx(ks_2samp(ref, cur[~np.isnan(cur)]).statistic, rel=1e-14)
    assert ks_statistic(ref, cur)[2] == 3
    with pytest.raises(ValueError):
        ks_pvalue(ref, np.array([np.nan]))
    with pytest.raises(ValueError):
        ks_pvalue(np.array([]), cur)


# (n_ref, n_cur): small and unequal, equal (the lattice case), and the exporter's shapes (a reference
# sample of up to 20000 against windows of 2000-5000)
KS_EXACT_SIZES = ((200, 200), (200, 5000), (300, 200), (500, 500), (1000, 300), (1000, 1000),
                  (2000, 5000), (5000, 5000), (20000, 2000), (20000, 5000))


def _ks_grid(sizes, reference_method, targets=np.linspace(0.4, 2.2, 10), seed=11):
    """(exact-or-reference p, ks_pvalue) over sizes, with shifts aimed at z = sqrt(en)*D in 0.4..2.2."""
    rng = np.random.default_rng(seed)
    out = []
    for n_ref, n_cur in sizes:
        en = n_ref * n_cur / (n_ref + n_cur)
        for c in targets:
            ref = rng.normal(size=n_ref)
            cur = rng.normal(size=n_cur) + c / math.sqrt(en) / 0.4 * rng.uniform(0.5, 1.0)
            expected = ks_2samp(ref, cur, method=reference_method).pvalue
            out.append((n_ref, n_cur, expected, ks_pvalue(np.sort(ref), cur)))
    return np.array(out)


def test_ks_pvalue_agrees_with_the_exact_test():
    """The tolerance ks_pvalue's docstring states, against ks_2samp(method='exact')."""
    grid = _ks_grid(KS_EXACT_SIZES, "exact")
    exact, ours = grid[:, 2], grid[:, 3]
    assert np.sum(exact <= 0.2) >= 50 and np.sum(exact < 0.01) >= 20  # the grid covers the alert range
    diff = np.abs(ours - exact)
    assert diff.max() <= 0.01, grid[diff.argmax()]
    relevant = exact <= 0.2
    assert diff[relevant].max() <= 0.003, grid[relevant][diff[relevant].argmax()]
    tail = (exact >= 1e-6) & (exact <= 0.05)
    assert np.max(np.abs(ours[tail] / exact[tail] - 1)) <= 0.15
    for alpha in (0.05, 0.01):  # same decision unless the exact p is within the margin of alpha
        differs = (ours < alpha) != (exact < alpha)
        assert np.all(np.abs(exact[differs] - alpha) <= 0.003), grid[differs]


def test_ks_pvalue_agrees_with_scipy_at_large_sizes():
    """Beyond the exact method's reach, ks_2samp's 'auto' is kstwo.sf at en: within 0.005 of it."""
    sizes = ((20000, 20000), (20000, 100_000), (100_000, 100_000), (20000, 1_000_000))
    grid = _ks_grid(sizes, "auto", targets=np.linspace(0.4, 2.2, 6), seed=12)
    assert np.sum(grid[:, 2] < 0.05) >= 8
    assert_allclose(grid[:, 3], grid[:, 2], rtol=0, atol=0.005)


def test_ks_pvalue_is_the_documented_formula():
    rng = np.random.default_rng(13)
    for n_ref, n_cur in ((300, 200), (400, 400)):
        ref, cur = np.sort(rng.normal(size=n_ref)), rng.normal(0.2, size=n_cur)
        d = ks_2samp(ref, cur).statistic
        root = math.sqrt(n_ref * n_cur / (n_ref + n_cur))
        z = root * d if n_ref == n_cur else (root + 0.12 + 0.11 / root) * d
        assert ks_pvalue(ref, cur) == pytest.approx(kolmogorov(z), rel=1e-12)
    ref = np.sort(rng.normal(size=100))
    assert ks_pvalue(ref, ref.copy()) == 1.0
    assert ks_pvalue(ref, ref + 100) < 1e-40


def test_chi2_matches_scipy_contingency():
    rng = np.random.default_rng(4)
    for k in (2, 3, 8, 21):
        for _ in range(20):
            table = random_counts(rng, k)
            nonempty = table[:, table.sum(axis=0) > 0]
            if nonempty.shape[1] < 2:
                assert chi2_pvalue(*table) == 1.0
                continue
            expected = chi2_contingency(nonempty, correction=False).pvalue
            assert_allclose(chi2_pvalue(*table), expected, rtol=1e-9, atol=1e-300)
    assert chi2_pvalue([5, 0, 0], [7, 0, 0]) == 1.0
    with pytest.raises(ValueError, match="both sides"):
        chi2_pvalue([1, 2], [0, 0])
    with pytest.raises(ValueError, match="current counts are empty"):
        psi([1, 2], [0, 0])


def test_same_distribution_is_stable_and_a_shift_is_caught():
    rng = np.random.default_rng(5)
    prof = NumericProfile.from_values(rng.normal(50, 10, 20_000))
    same = rng.normal(50, 10, 2000)
    shifted = rng.normal(58, 10, 2000)  # +0.8 standard deviations
    assert psi(prof.ref_counts, prof.counts(same)) < 0.02
    assert ks_pvalue(prof.sample, same) > 0.05
    assert psi(prof.ref_counts, prof.counts(shifted)) > 0.25
    assert js_distance(prof.ref_counts, prof.counts(shifted)) > 3 * js_distance(prof.ref_counts, prof.counts(same))
    assert ks_pvalue(prof.sample, shifted) < 1e-6

    cats = obj(rng.choice(["DE", "FR", "IT", "ES"], 20_000, p=[0.4, 0.3, 0.2, 0.1]))
    cprof = CategoricalProfile.from_values(cats)
    same_c = obj(rng.choice(["DE", "FR", "IT", "ES"], 2000, p=[0.4, 0.3, 0.2, 0.1]))
    moved_c = obj(rng.choice(["DE", "FR", "IT", "ES", "PL"], 2000, p=[0.1, 0.2, 0.2, 0.2, 0.3]))
    assert psi(cprof.ref_counts, cprof.counts(same_c)) < 0.02
    assert chi2_pvalue(cprof.ref_counts, cprof.counts(same_c)) > 0.05
    assert psi(cprof.ref_counts, cprof.counts(moved_c)) > 0.25  # "PL" is new: lands in __other__
    assert chi2_pvalue(cprof.ref_counts, cprof.counts(moved_c)) < 1e-6


# ---------------------------------------------------------------- normed Wasserstein and Welch t-test


def _finite(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x[np.isfinite(x)]


def evidently_wasserstein_normed(reference: np.ndarray, current: np.ndarray) -> float:
    """Evidently's ``wasserstein_distance_norm`` stattest: W1 / max(np.std(reference), 0.001),
    np.std with ddof=0 (the reference here: the profile's KS sample)."""
    from scipy.stats import wasserstein_distance
    return wasserstein_distance(reference, current) / max(np.std(reference), 0.001)


@pytest.mark.parametrize("seed", range(12))
def test_wasserstein_normed_and_ttest_equal_scipy(seed):
    """Random references (continuous, discrete with ties, larger than the KS sample or not) against
    windows shifted, scaled, inside and outside the reference range, of 1 to 50k values."""
    from scipy.stats import ttest_ind

    from modelmon.exporter.drift_tally import mean_stats_of
    rng = np.random.default_rng(seed)
    for _ in range(8):
        n_ref = int(rng.choice([3, 60, 500, 5000, 30000]))
        discrete = rng.random() < 0.3
        ref = rng.integers(0, 7, n_ref).astype(float) if discrete else rng.normal(0, rng.choice([1e-3, 1, 50]), n_ref)
        profile = NumericProfile.from_values(ref, sample_max=int(rng.choice([100, 20000])), seed=seed)
        m = int(rng.choice([1, 2, 15, 1000, 50000]))
        scale = np.std(ref) or 1.0
        if discrete:
            cur = rng.integers(-2, 9, m).astype(float)
        else:
            cur = rng.normal(rng.choice([0, 0.1, 4, -30]) * scale, rng.choice([0.2, 1, 3]) * scale, m)
        got = mean_stats_of(profile, cur)
        assert_allclose(got["wasserstein_normed"], evidently_wasserstein_normed(profile.sample, cur),
                        rtol=1e-9, atol=1e-12)
        if m >= 2:
            assert_allclose(got["ttest_pvalue"], ttest_ind(ref, cur, equal_var=False).pvalue, rtol=1e-9, atol=1e-300)
        else:
            assert "ttest_pvalue" not in got


def test_wasserstein_uses_evidentlys_norm():
    """ddof=0 (np.std), and a constant reference is normed by 0.001, as Evidently does."""
    from modelmon.exporter.drift_tally import mean_stats_of
    ref = np.array([1.0, 2.0, 3.0, 4.0])
    got = mean_stats_of(NumericProfile.from_values(ref), np.array([2.0, 3.0, 4.0, 5.0]))
    assert got["wasserstein_normed"] == pytest.approx(1.0 / np.std(ref))  # W1 = 1 (a shift by 1)
    const = NumericProfile.from_values(np.full(50, 7.0))
    got = mean_stats_of(const, np.array([7.0, 7.5]))
    assert got["wasserstein_normed"] == pytest.approx(0.25 / 0.001)


def test_wasserstein_and_ttest_leave_out_missing_and_infinite_values():
    """NaN (missing), None in an object column, and +-inf on either side count in neither statistic:
    the same as SciPy on the finite values."""
    from scipy.stats import ttest_ind, wasserstein_distance

    from modelmon.exporter.drift_tally import mean_stats_of
    rng = np.random.default_rng(3)
    ref = np.concatenate([rng.normal(size=400), [np.inf, -np.inf, np.nan]])
    profile = NumericProfile.from_values(ref)
    cur = np.concatenate([rng.normal(0.3, 1, 300), [np.inf, np.inf, -np.inf, np.nan]])
    rng.shuffle(cur)
    got = mean_stats_of(profile, cur)
    s = _finite(profile.sample)
    assert_allclose(got["wasserstein_normed"], wasserstein_distance(s, _finite(cur)) / np.std(s), rtol=1e-9)
    assert_allclose(got["ttest_pvalue"], ttest_ind(_finite(ref), _finite(cur), equal_var=False).pvalue, rtol=1e-9)
    as_object = obj([None if np.isnan(x) else x for x in cur])
    assert mean_stats_of(profile, as_object) == got
    assert mean_stats_of(profile, np.array([np.nan, np.inf])) == {}  # nothing finite: neither statistic


def test_welch_pvalue_edges():
    from scipy.stats import ttest_ind_from_stats

    from modelmon.exporter.drift import welch_pvalue
    want = ttest_ind_from_stats(1.0, 2.0, 30, 1.4, 1.0, 12, equal_var=False).pvalue
    assert welch_pvalue(30, 1.0, 4.0, 12, 1.4, 1.0) == pytest.approx(want, rel=1e-12)
    assert welch_pvalue(5, 3.0, 0.0, 9, 3.0, 0.0) == 1.0  # both constant and equal: SciPy says NaN
    assert welch_pvalue(5, 3.0, 0.0, 9, 3.5, 0.0) == 0.0  # both constant, moved
    with pytest.raises(ValueError):
        welch_pvalue(1, 0.0, 0.0, 9, 0.0, 1.0)


def test_profile_keeps_the_reference_moments_of_all_finite_values():
    rng = np.random.default_rng(0)
    ref = np.concatenate([rng.normal(2, 3, 50_000), [np.nan, np.inf]])
    p = NumericProfile.from_values(ref, sample_max=1000)
    n, mean, var = p.ref_moments
    f = _finite(ref)
    assert n == f.size and mean == pytest.approx(f.mean()) and var == pytest.approx(f.var(ddof=1))
