"""modelmon.exporter.drift: reference profiles, and PSI / JS / KS / chi-squared against SciPy."""
from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, ks_2samp

from modelmon.exporter.drift import (
    OTHER,
    CategoricalProfile,
    NumericProfile,
    chi2_pvalue,
    js_distance,
    ks_pvalue,
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


def test_ks_matches_scipy_asymp():
    rng = np.random.default_rng(3)
    for n_ref, n_cur in ((5, 3), (50, 80), (1000, 200), (3000, 3000)):
        for shift in (0.0, 0.1, 0.5):
            for discrete in (False, True):
                ref = rng.normal(size=n_ref)
                cur = rng.normal(shift, size=n_cur)
                if discrete:  # heavy ties
                    ref, cur = np.round(ref), np.round(cur)
                expected = ks_2samp(ref, cur, method="asymp").pvalue
                assert_allclose(ks_pvalue(np.sort(ref), cur), expected, rtol=1e-10, atol=1e-300)
    cur = np.array([0.1, np.nan, 0.5, 2.0])
    ref = np.sort(rng.normal(size=40))
    assert ks_pvalue(ref, cur) == pytest.approx(ks_2samp(ref, cur[~np.isnan(cur)], method="asymp").pvalue)
    with pytest.raises(ValueError):
        ks_pvalue(ref, np.array([np.nan]))


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
