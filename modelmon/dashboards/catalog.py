"""The quality and drift quantities as the dashboards show them; the entries are the contract's."""
from __future__ import annotations

from modelmon.config import ModelConfig, Threshold
from modelmon.contract import DRIFT, QUALITY, QUANTITIES, Quantity

__all__ = ["QUALITY", "DRIFT", "BY_KEY", "Quantity", "worst", "threshold", "applies", "headline_quality",
           "headline_drift"]

BY_KEY = QUANTITIES


def worst(q: Quantity) -> str:
    """PromQL aggregation that picks the worst series (the lowest accuracy, the highest PSI)."""
    return "min" if q.direction == "below" else "max"


def threshold(q: Quantity, m: ModelConfig) -> Threshold | None:
    return m.thresholds.get(q.key)


def applies(q: Quantity, m: ModelConfig) -> bool:
    return q.applies_to(m.task)


def headline_quality(m: ModelConfig) -> list[Quantity]:
    """Quality numbers the overview shows for a model: the thresholded ones, else a default."""
    chosen = [q for q in QUALITY if threshold(q, m) is not None and applies(q, m)]
    if chosen:
        return chosen
    return [BY_KEY["accuracy"] if m.is_classification else BY_KEY["mae"]]


def headline_drift(m: ModelConfig) -> list[Quantity]:
    """Drift numbers the overview shows: PSI always, plus every other thresholded one
    except the per-feature p-values/missing ratios (those need the drift dashboard)."""
    per_model = ("psi", "prediction_psi", "drift_classifier_auc", "outlier_ratio")
    return [BY_KEY[k] for k in per_model if k == "psi" or threshold(BY_KEY[k], m) is not None]
