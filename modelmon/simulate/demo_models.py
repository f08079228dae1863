"""The three demo models of modelmon.yaml: credit (binary), segment (multiclass), eta (regression).

Each has a plausible data-generating process with noise, so the trained model is good but not
perfect, and a changed process for concept drift, under which the trained model's quality falls
past the critical thresholds of modelmon.yaml while the feature distributions stay the same.
"""
from __future__ import annotations

import numpy as np

from modelmon.simulate.estimators import gradient_boosting, one_hot_linear
from modelmon.simulate.spec import CategoricalFeature, Columns, ModelSpec, NumericFeature


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _effect(codes: np.ndarray, effects: tuple[float, ...]) -> np.ndarray:
    return np.asarray(effects)[codes]


# --------------------------------------------------------------------------- credit

_COUNTRIES = ("DE", "FR", "ES", "IT", "NL")
_CHANNELS = ("web", "mobile", "branch", "partner")


def _credit_truth(rng: np.random.Generator, c: Columns, concept_drift: bool) -> np.ndarray:
    """1 = the loan defaults. Debt burden and low income drive risk. Under concept drift (a
    downturn that hits well-paid borrowers) income and the country effects turn against the
    model and debt matters much less."""
    log_income = np.log(c["income"] / 3500.0)
    debt = c["debt_ratio"] - 0.29
    age = c["age"] - 42.0
    lines = c["credit_lines"] - 4.0
    country = _effect(c["country"], (-0.4, 0.0, 0.5, 0.4, -0.5))
    channel = _effect(c["channel"], (0.0, 0.3, -0.5, 0.8))
    if concept_drift:
        z = 0.5 + 5.0 * debt + 3.0 * log_income + 0.03 * age + 0.2 * lines - 2 * country + channel
    else:
        z = -0.9 + 16.0 * debt - 4.5 * log_income - 0.04 * age + 0.35 * lines + 3 * country + 3 * channel
    return (rng.random(len(z)) < _sigmoid(z)).astype(np.int64)


CREDIT = ModelSpec(
    name="credit",
    task="binary",
    version="v3",
    numeric=(
        NumericFeature("income", lambda r, n, c: r.lognormal(np.log(3500), 0.45, n), drift=lambda x: x * 1.6),
        # Older applicants tend to earn more: age is drawn given income.
        NumericFeature("age", lambda r, n, c: np.clip(r.normal(42 + 8 * np.log(c["income"] / 3500), 11, n), 18, 85),
                       drift=lambda x: np.clip(x + 12, 18, 90), decimals=0),
        NumericFeature("debt_ratio", lambda r, n, c: r.beta(2, 5, n),
                       drift=lambda x: np.clip(x + 0.15, 0, 1), decimals=3),
        NumericFeature("credit_lines", lambda r, n, c: r.poisson(4, n), drift=lambda x: x + 3, decimals=0),
    ),
    categorical=(
        CategoricalFeature("country", _COUNTRIES, (0.35, 0.25, 0.15, 0.15, 0.10), (0.10, 0.10, 0.35, 0.35, 0.10)),
        CategoricalFeature("channel", _CHANNELS, (0.45, 0.30, 0.15, 0.10), (0.20, 0.25, 0.05, 0.50)),
    ),
    truth=_credit_truth,
    make_estimator=one_hot_linear,
    classes=(0, 1),
    latency_ms=14.0,
    drift_defaults=("income", "country"),
    # The model is linear in income where the truth is linear in log income: along income its confidence
    # drifts from its accuracy; along age both are linear, so the harmless shift tilts age.
    shift_feature="age",
    config={
        "quality_window": 2000, "drift_window": 1000, "min_labeled": 200,
        "thresholds": {
            "accuracy": {"warning": 0.80, "critical": 0.75},
            "roc_auc": {"warning": 0.80, "critical": 0.70},
            "psi": {"warning": 0.1},
            "wasserstein_normed": {"warning": 0.09},
            "prediction_psi": {"warning": 0.1},
            "drift_classifier_auc": {"warning": 0.65},
            "outlier_ratio": {"warning": 0.15},
        },
        "slo": {"latency_p99_seconds": 0.25, "availability": 99.5, "period": "30d"},
        "team": "risk",
    },
)

# --------------------------------------------------------------------------- segment

_PLANS = ("monthly", "annual", "trial")
_REGIONS = ("north", "south", "east", "west")


def _segment_truth(rng: np.random.Generator, c: Columns, concept_drift: bool) -> np.ndarray:
    """0 basic, 1 plus, 2 premium: an ordinal latent value score cut at two thresholds. Under
    concept drift (a repricing) spend stops mattering and loyalty decides the segment."""
    spend = np.log(c["monthly_spend"] / 45.0)
    tenure = (c["tenure_months"] - 24.0) / 24.0
    calls = c["support_calls"] - 1.8
    plan = _effect(c["plan"], (0.0, 0.7, -1.2))
    region = _effect(c["region"], (0.15, -0.15, 0.0, 0.05))
    if concept_drift:
        s = 0.6 * spend + 1.2 * tenure + 0.3 * calls - 0.5 * plan
    else:
        s = 2.4 * spend + 0.5 * tenure - 0.3 * calls + plan + region
    s = s + rng.logistic(0.0, 0.22, len(s))
    return np.digitize(s, (-0.35, 0.6)).astype(np.int64)


SEGMENT = ModelSpec(
    name="segment",
    task="multiclass",
    version="v2",
    numeric=(
        NumericFeature("tenure_months", lambda r, n, c: np.clip(r.gamma(1.5, 16, n), 1, 120),
                       drift=lambda x: np.clip(x * 0.4, 1, 120), decimals=0),
        NumericFeature("monthly_spend", lambda r, n, c: r.lognormal(np.log(45), 0.55, n), drift=lambda x: x * 1.5),
        NumericFeature("support_calls", lambda r, n, c: r.poisson(1.8, n), drift=lambda x: x + 2, decimals=0),
    ),
    categorical=(
        CategoricalFeature("plan", _PLANS, (0.55, 0.35, 0.10), (0.35, 0.25, 0.40)),
        CategoricalFeature("region", _REGIONS, (0.30, 0.25, 0.20, 0.25), (0.10, 0.15, 0.60, 0.15)),
    ),
    truth=_segment_truth,
    make_estimator=gradient_boosting,
    classes=("basic", "plus", "premium"),
    latency_ms=22.0,
    drift_defaults=("monthly_spend", "plan"),
    shift_feature="tenure_months",
    config={
        "quality_window": 2000, "drift_window": 1000, "min_labeled": 200,
        "thresholds": {
            "accuracy": {"warning": 0.70, "critical": 0.60},
            "f1": {"warning": 0.65, "critical": 0.55},
            "psi": {"warning": 0.1},
            "wasserstein_normed": {"warning": 0.09},
        },
        "slo": {"latency_p99_seconds": 0.3, "availability": 99.5},
        "team": "growth",
    },
)

# --------------------------------------------------------------------------- eta

_CITIES = ("berlin", "paris", "madrid", "rome")
# Orders per hour of day: quiet nights, a lunch peak and a bigger dinner peak.
_HOURLY = np.array([1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 3.5, 4, 6, 7, 6, 4, 3.5, 4, 6, 8, 8.5, 7, 5, 3, 2])
_HOUR_PROBS = _HOURLY / _HOURLY.sum()
_RUSH = np.array([-2, -2, -2, -2, -2, -2, 0, 0, 1, 1, 2, 5, 6, 5, 2, 1, 2, 5, 7, 7, 5, 2, 0, -1], dtype=float)


def _eta_truth(rng: np.random.Generator, c: Columns, concept_drift: bool) -> np.ndarray:
    """Delivery minutes: distance, basket size, rush hour amplified by city congestion. Under
    concept drift (a courier shortage) everything takes longer and rush hour hurts twice as much."""
    hour = c["hour"].astype(np.int64) % 24
    rush = _RUSH[hour] * _effect(c["city"], (1.0, 1.4, 0.9, 1.2))
    base = 9.0 + 3.0 * c["distance_km"] + 0.9 * c["items"] + rush + _effect(c["city"], (0.0, 3.0, 1.0, 2.0))
    if concept_drift:
        base = 1.15 * base + 1.0 * rush + 3.0
    return np.round(np.maximum(base + rng.normal(0.0, 3.0, len(base)), 3.0), 1)


ETA = ModelSpec(
    name="eta",
    task="regression",
    version="v1",
    numeric=(
        NumericFeature("distance_km", lambda r, n, c: np.clip(r.gamma(2.0, 2.2, n), 0.2, 30),
                       drift=lambda x: np.clip(x * 1.8, 0.2, 50)),
        NumericFeature("items", lambda r, n, c: 1 + r.poisson(2.0, n), drift=lambda x: x + 2, decimals=0),
        NumericFeature("hour", lambda r, n, c: r.choice(24, size=n, p=_HOUR_PROBS),
                       drift=lambda x: (x + 6) % 24, decimals=0),
    ),
    categorical=(
        CategoricalFeature("city", _CITIES, (0.30, 0.30, 0.20, 0.20), (0.10, 0.15, 0.25, 0.50)),
    ),
    truth=_eta_truth,
    make_estimator=gradient_boosting,
    latency_ms=30.0,
    drift_defaults=("distance_km", "city"),
    shift_feature="distance_km",
    config={
        "quality_window": "1h", "drift_window": 1000, "min_labeled": 100,
        "thresholds": {
            "mae": {"warning": 6.0, "critical": 9.0},
            "psi": {"warning": 0.1},
            "wasserstein_normed": {"warning": 0.09},
        },
        "slo": {"latency_p99_seconds": 0.2, "availability": 99.5},
        "team": "logistics",
    },
)

DEMO_MODELS: dict[str, ModelSpec] = {m.name: m for m in (CREDIT, SEGMENT, ETA)}
