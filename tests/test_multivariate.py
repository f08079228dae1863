"""modelmon.exporter.multivariate: domain classifier AUC and IsolationForest outlier ratio."""
from __future__ import annotations

import time

import numpy as np
import pytest

from modelmon.exporter.drift import CategoricalProfile
from modelmon.exporter.multivariate import categorical_mask, domain_classifier_auc, encode, outlier_ratio

COUNTRIES = np.array(["DE", "FR", "IT", "ES"], dtype=object)


def rows(rng, n, mean=0.0, rho=0.0, country_p=(0.4, 0.3, 0.2, 0.1)):
    """Columns like the exporter holds them: 4 numeric features (a, b correlated by rho; some
    missing) and one categorical."""
    a = rng.normal(size=n)
    b = rho * a + np.sqrt(1 - rho**2) * rng.normal(size=n)
    c = rng.normal(mean, 1, n)
    d = rng.exponential(size=n)
    d[rng.random(n) < 0.05] = np.nan
    country = rng.choice(COUNTRIES, n, p=country_p)
    country[rng.random(n) < 0.02] = None
    return {"a": a, "b": b, "c": c, "d": d, "country": country}


NUM, CAT = ["a", "b", "c", "d"], ["country"]


@pytest.fixture(scope="module")
def reference():
    cols = rows(np.random.default_rng(0), 2000)
    profiles = {"country": CategoricalProfile.from_values(cols["country"])}
    return encode(cols, NUM, CAT, profiles), profiles


def test_encode_numeric_then_category_codes():
    profiles = {"country": CategoricalProfile.from_values(np.array(["DE", "DE", "FR"], dtype=object))}
    cols = {"x": np.array([1.5, np.nan, 3.0]), "country": np.array(["FR", None, "PL"], dtype=object)}
    x = encode(cols, ["x"], ["country"], profiles)
    np.testing.assert_array_equal(x, [[1.5, 1.0], [np.nan, np.nan], [3.0, 2.0]])  # PL -> __other__ (2)
    assert categorical_mask(["x"], ["country"]).tolist() == [False, True]


def test_domain_classifier_same_distribution_is_near_half(reference):
    ref, profiles = reference
    cur = encode(rows(np.random.default_rng(1), 2000), NUM, CAT, profiles)
    auc = domain_classifier_auc(ref, cur, categorical=categorical_mask(NUM, CAT))
    assert 0.4 < auc < 0.6


@pytest.mark.parametrize("change", [
    {"mean": 2.0},                              # one feature moved by two standard deviations
    {"rho": 0.95},                              # same marginals, new correlation: per-feature tests miss it
    {"country_p": (0.05, 0.05, 0.1, 0.8)},      # categorical mix changed
])
def test_domain_classifier_catches_a_clear_shift(reference, change):
    ref, profiles = reference
    cur = encode(rows(np.random.default_rng(2), 2000, **change), NUM, CAT, profiles)
    assert domain_classifier_auc(ref, cur, categorical=categorical_mask(NUM, CAT)) > 0.8


def test_domain_classifier_is_deterministic_and_balances_sides(reference):
    ref, profiles = reference
    cur = encode(rows(np.random.default_rng(3), 500, mean=0.5), NUM, CAT, profiles)  # 2000 vs 500 rows
    a = domain_classifier_auc(ref, cur, seed=7)
    assert a == domain_classifier_auc(ref, cur, seed=7)
    assert a != domain_classifier_auc(ref, cur, seed=8)
    assert a > 0.55
    with pytest.raises(ValueError, match="at least 6 rows"):
        domain_classifier_auc(ref, cur[:5])


def test_outlier_ratio_stable_near_baseline_and_rises_with_outliers(reference):
    ref, profiles = reference
    stable = encode(rows(np.random.default_rng(4), 2000), NUM, CAT, profiles)
    base = outlier_ratio(ref, stable)
    assert base < 0.03
    assert base == outlier_ratio(ref, stable)  # deterministic
    polluted = stable.copy()
    bad = np.random.default_rng(5).choice(2000, 200, replace=False)  # 10% of rows
    polluted[bad, 0] = 8.0
    polluted[bad, 2] = -8.0
    assert outlier_ratio(ref, polluted) > base + 0.07
    assert outlier_ratio(ref, stable, baseline=0.05) > base  # the baseline sets the stable level


def test_outlier_ratio_handles_missing_columns():
    rng = np.random.default_rng(6)
    ref = np.column_stack([rng.normal(size=400), np.full(400, np.nan)])
    cur = np.column_stack([rng.normal(size=300), np.full(300, np.nan)])
    assert outlier_ratio(ref, cur) < 0.05
    with pytest.raises(ValueError, match="at least 20 reference rows"):
        outlier_ratio(ref[:10], cur)


def test_fast_enough_on_one_core():
    """2000 + 2000 rows x 30 features: the brief asks for under a second per model."""
    rng = np.random.default_rng(7)
    ref, cur = rng.normal(size=(2000, 30)), rng.normal(0.1, 1, (2000, 30))
    start = time.perf_counter()
    domain_classifier_auc(ref, cur)
    outlier_ratio(ref, cur)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"took {elapsed:.2f}s (typically ~0.5s); margin for a loaded CI machine"
