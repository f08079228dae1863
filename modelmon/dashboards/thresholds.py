"""Grafana threshold steps and per-model overrides derived from modelmon.yaml.

A step list colours a value by the *first* step whose value it reaches, so "below is bad"
metrics (accuracy) start red and turn green at the warning value, while "above is bad"
metrics (PSI) start green and turn red at the critical value. Burn-rate levels come from the
generation context: the factors the alerts use, scaled by each model's slo.period.
"""
from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

from modelmon.config import ModelConfig, Threshold
from modelmon.generation import Burn, GenerationContext

GREEN, ORANGE, RED = "green", "orange", "red"


def step(color: str, value: float | None) -> dict[str, Any]:
    return {"color": color, "value": value}


def threshold_steps(t: Threshold) -> list[dict[str, Any]]:
    """Steps for a configured warning/critical pair (either may be missing)."""
    if t.direction == "below":
        steps = [step(RED if t.critical is not None else ORANGE, None)]
        if t.critical is not None and t.warning is not None:
            steps.append(step(ORANGE, t.critical))
        ok_from = t.warning if t.warning is not None else t.critical
        steps.append(step(GREEN, ok_from))
        return steps
    steps = [step(GREEN, None)]
    if t.warning is not None:
        steps.append(step(ORANGE, t.warning))
    if t.critical is not None:
        steps.append(step(RED, t.critical))
    return steps


def neutral_steps() -> list[dict[str, Any]]:
    """No configured threshold: one colour, so nothing looks alarming by accident."""
    return [step(GREEN, None)]


def latency_steps(m: ModelConfig) -> list[dict[str, Any]]:
    if m.slo.latency_p99_seconds is None:
        return neutral_steps()
    return [step(GREEN, None), step(RED, m.slo.latency_p99_seconds)]


def error_budget_ratio(m: ModelConfig) -> float | None:
    """Allowed error ratio of the availability SLO (99.5 -> 0.005)."""
    if m.slo.availability is None:
        return None
    return round(1 - m.slo.availability / 100, 10)


def error_budget(m: ModelConfig) -> Fraction | None:
    """The allowed error ratio exactly as the burn-rate alerts compute it (99.5 -> 1/200)."""
    if m.slo.availability is None:
        return None
    return 1 - Fraction(str(m.slo.availability)) / 100


def paged_burns(ctx: GenerationContext, m: ModelConfig) -> tuple[Burn, ...]:
    """The burn-rate windows the dashboards draw for ``m``: those that page (all of them when the
    policy pages on none), fastest first, with the factors the alerts use for its slo.period."""
    return ctx.paging_burns(m) or tuple(sorted(ctx.burns(m), key=lambda b: -b.factor))


def fast_burn(ctx: GenerationContext, m: ModelConfig) -> Fraction:
    """The highest burn factor that pages for ``m`` (14.4 for a 30-day SLO, 3.36 for a 7-day one)."""
    return paged_burns(ctx, m)[0].factor


def error_rate_steps(ctx: GenerationContext, m: ModelConfig) -> list[dict[str, Any]]:
    """Orange once errors exceed the SLO's allowance, red at the fastest paging burn rate."""
    budget = error_budget(m)
    if budget is None:
        return neutral_steps()
    return [step(GREEN, None), step(ORANGE, error_budget_ratio(m)), step(RED, float(budget * fast_burn(ctx, m)))]


def burn_rate_steps(ctx: GenerationContext, m: ModelConfig) -> list[dict[str, Any]] | None:
    """Steps of a burn-rate series (1 = on budget): orange at the slowest paging factor, red at the
    fastest, both scaled to the model's slo.period exactly as the alerts scale them."""
    if m.slo.availability is None:
        return None
    factors = sorted({b.factor for b in paged_burns(ctx, m)})
    steps = [step(GREEN, None)]
    if len(factors) > 1:
        steps.append(step(ORANGE, float(factors[0])))
    steps.append(step(RED, float(factors[-1])))
    return steps


def min_count_steps(minimum: int) -> list[dict[str, Any]]:
    """Counts that must reach a minimum before alerts trust the numbers (min_labeled...)."""
    return [step(ORANGE, None), step(GREEN, minimum)]


def model_series_regex(model: str) -> str:
    """Matches series names that start with the model name ("credit v3", "credit/income")."""
    return "^" + re.escape(model) + r"([ /]|$)"


def thresholds_override(matcher: dict[str, Any], steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {"matcher": matcher,
            "properties": [{"id": "thresholds", "value": {"mode": "absolute", "steps": steps}}]}


def per_model_overrides(models: tuple[ModelConfig, ...], steps_for) -> list[dict[str, Any]]:
    """One override per model, matched on series names that begin with the model name.

    Dashboards with a ``$model`` variable show one model at a time but are generated once, so
    the per-model thresholds of modelmon.yaml travel as field overrides; only the selected
    model's series exist, so exactly its override applies. ``steps_for(model)`` returns the
    steps, or None when that model has no threshold for this quantity.
    """
    out = []
    for m in models:
        steps = steps_for(m)
        if steps is not None:
            out.append(thresholds_override({"id": "byRegexp", "options": model_series_regex(m.name)}, steps))
    return out
