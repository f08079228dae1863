"""Composite queries several dashboards share, written with the one PromQL builder (modelmon.promql)."""
from __future__ import annotations

from typing import Callable, Iterable

from modelmon.config import ModelConfig
from modelmon.promql import match, rate, selector

PREDICTIONS = "modelmon_predictions_total"


def error_ratio(by: str, *matchers: str, window: str = "$__rate_interval", fn: str = "rate",
                metric: str = PREDICTIONS, **labels: str) -> str:
    """Share of predictions with status="error", 0 (not empty) while no error was ever seen.

    ``matchers`` (built with ``match``) come first in the selector, then ``labels``. ``metric``:
    the served predictions, or another counter with a ``status`` label (shadow predictions)."""
    chosen = [*matchers, *(match(k, v) for k, v in labels.items())]
    errors = f"sum by ({by}) ({rate(selector(metric, *chosen, match('status', 'error')), window, fn)})"
    total = f"sum by ({by}) ({rate(selector(metric, *chosen), window, fn)})"
    return f"({errors} or {total} * 0) / {total}"


def per_model_union(models: Iterable[ModelConfig], build: Callable[[ModelConfig], str | None]) -> str:
    """`(q_credit) or (q_segment) ...` for quantities whose constants differ per model (SLOs).

    Each branch selects ``model="<name>", model=~"$model"`` so the dashboard variable still
    filters; models for which ``build`` returns None are left out.
    """
    branches = [b for b in (build(m) for m in models) if b is not None]
    return " or ".join(f"({b})" for b in branches)


def _sum(by: str, metric: str, window: str, fn: str, *matchers: str) -> str:
    return f"sum by ({by}) ({rate(selector(metric, *matchers), window, fn)})"


def accuracy_over(by: str, *matchers: str, window: str, fn: str = "increase", **labels: str) -> str:
    """Accuracy over ``window`` from the confusion counters, summed over exporter replicas: right
    over labelled (0 when nothing was right, no value without a labelled prediction)."""
    chosen = [*matchers, *(match(k, v) for k, v in labels.items())]
    right = _sum(by, "modelmon_confusion_total", window, fn, *chosen, match("correct", "true"))
    total = _sum(by, "modelmon_confusion_total", window, fn, *chosen)
    return f"({right} or {total} * 0) / ({total} > 0)"


def mae_over(by: str, *matchers: str, window: str, fn: str = "increase", **labels: str) -> str:
    """Mean absolute error over ``window`` from the regression error sums, summed over exporter replicas."""
    chosen = [*matchers, *(match(k, v) for k, v in labels.items())]
    errors = _sum(by, "modelmon_regression_absolute_error_total", window, fn, *chosen)
    labelled = _sum(by, "modelmon_regression_labeled_total", window, fn, *chosen)
    return f"{errors} / ({labelled} > 0)"
