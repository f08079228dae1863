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
