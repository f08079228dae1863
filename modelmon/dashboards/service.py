"""Service and SLO: throughput, errors, latency (heatmap and quantiles), error-budget burn.

SLO constants differ per model (latency bound, availability, period), so the SLO queries are
unions of one branch per model (``model="credit", model=~"$model"``) with that model's
constants; the selected ``$model`` keeps exactly one branch.
"""
from __future__ import annotations

from typing import Any

from modelmon.config import Config, ModelConfig, parse_duration
from modelmon.contract import SERVICE_UID
from modelmon.dashboards import thresholds as th
from modelmon.dashboards.base import build_dashboard, factory, model_variable, version_variable
from modelmon.dashboards.expressions import error_ratio, per_model_union
from modelmon.dashboards.panels import Cell, PanelFactory, Query
from modelmon.generation import GenerationContext
from modelmon.promql import Regex, le_regex, match, number, rate, selector

RATE = "$__rate_interval"
M = "$model"
V = Regex("$version")
MODEL_FILTER = match("model", Regex(M))
BY_VERSION = "{{model}} {{version}}"
PREDICTIONS = "modelmon_predictions_total"
LATENCY = "modelmon_prediction_latency_seconds"


def _traffic_row(ctx: GenerationContext, f: PanelFactory) -> list[Cell]:
    config = ctx.config
    factors = sorted({th.fast_burn(ctx, m) for m in config.models if m.slo.availability is not None})
    fastest = f" ({', '.join(f'{number(x)}x' for x in factors)} here)" if factors else ""
    return [
        f.timeseries(
            "Throughput by version", "Predictions per second logged by each version of the model.",
            [Query(f"sum by (model, version) ({rate(selector(PREDICTIONS, model=M, version=V), RATE)})",
                   legend=BY_VERSION)], unit="reqps", w=8),
        f.timeseries(
            "Requests by status", "Predictions per second by status: ok, or error (the model failed to answer).",
            [Query(f"sum by (model, status) ({rate(selector(PREDICTIONS, model=M, version=V), RATE)})",
                   legend="{{model}} {{status}}")], unit="reqps", stack=True, w=8),
        f.timeseries(
            "Error rate by version",
            "Share of predictions with status=error. Dashed: the selected model's SLO allowance "
            "(1 - availability) and that allowance times the fastest burn rate that pages: the "
            f"burn-rate alert's factor scaled to the model's slo.period{fastest}.",
            [Query(error_ratio("model, version", model=M, version=V), legend=BY_VERSION)],
            unit="percentunit", overrides=th.per_model_overrides(config.models, lambda m: th.error_rate_steps(ctx, m)),
            w=8),
    ]


def _within_slo(m: ModelConfig) -> str | None:
    if m.slo.latency_p99_seconds is None:
        return None
    le = match("le", le_regex(m.slo.latency_p99_seconds))
    good = selector(f"{LATENCY}_bucket", MODEL_FILTER, le, match("model", m.name), match("version", V))
    total = selector(f"{LATENCY}_count", MODEL_FILTER, match("model", m.name), match("version", V))
    return f"sum by (model) ({rate(good, RATE)}) / sum by (model) ({rate(total, RATE)})"


def _latency_row(config: Config, f: PanelFactory) -> list[Cell]:
    buckets = selector(f"{LATENCY}_bucket", model=M, version=V)
    with_latency_slo = [m.name for m in config.models if m.slo.latency_p99_seconds is not None]
    return [
        f.timeseries(
            "Latency quantiles",
            "Median, 90th and 99th percentile serving latency from the log (histogram quantiles). "
            "Dashed: the selected model's latency_p99_seconds SLO from modelmon.yaml.",
            [Query(f"histogram_quantile({p}, sum by (model, le) ({rate(buckets, RATE)}))",
                   legend=f"{{{{model}}}} p{int(p * 100)}") for p in (0.5, 0.9, 0.99)],
            unit="s", overrides=th.per_model_overrides(config.models, th.latency_steps), w=12),
        f.heatmap(
            "Latency heatmap",
            "Requests per latency bucket over time. The SLO bound is one of the bucket edges, so the "
            "band above it is exactly the slow requests.",
            [Query(f"sum by (le) ({rate(buckets, RATE)})", legend="{{le}}", format="heatmap")],
            unit="s", w=12),
        f.timeseries(
            "p99 latency by version",
            "99th percentile latency per version, for canary comparisons. Dashed: the model's SLO.",
            [Query(f"histogram_quantile(0.99, sum by (model, version, le) ({rate(buckets, RATE)}))",
                   legend=BY_VERSION)],
            unit="s", overrides=th.per_model_overrides(config.models, th.latency_steps), w=12),
        f.timeseries(
            "Requests within the latency SLO",
            "Share of requests answered within the model's latency_p99_seconds (an exact bucket edge). "
            "The p99 objective holds while this stays at or above 99%.",
            [Query(per_model_union(config.models, _within_slo), legend="{{model}}")],
            unit="percentunit", steps=[th.step(th.RED, None), th.step(th.GREEN, 0.99)], w=12,
            models=with_latency_slo),
    ]


def _burn(m: ModelConfig, window: str) -> str | None:
    budget = th.error_budget_ratio(m)
    if budget is None:
        return None
    return f"{error_ratio('model', MODEL_FILTER, window=window, model=m.name)} / {budget:g}"


def _budget_left(m: ModelConfig) -> str | None:
    budget = th.error_budget_ratio(m)
    if budget is None:
        return None
    ratio = error_ratio("model", MODEL_FILTER, window=f"{m.slo.period_days}d", fn="increase", model=m.name)
    return f"1 - {ratio} / {budget:g}"


def _availability(m: ModelConfig) -> str | None:
    if m.slo.availability is None:
        return None
    return f"1 - {error_ratio('model', MODEL_FILTER, window=f'{m.slo.period_days}d', fn='increase', model=m.name)}"


def _burn_windows(ctx: GenerationContext) -> list[str]:
    """Long windows of the burn-rate alerts that page, shortest first (1h and 6h by default)."""
    paging = [b for b in ctx.policy.burn_windows if b.severity == "critical"] or list(ctx.policy.burn_windows)
    return sorted({b.long for b in paging}, key=parse_duration)


def _burn_levels(ctx: GenerationContext) -> str:
    """'14.4x over 1h and 6x over 6h' for the policy's reference period."""
    policy = ctx.policy
    paging = [b for b in policy.burn_windows if b.severity == "critical"] or list(policy.burn_windows)
    return " and ".join(f"{number(b.factor)}x over {b.long}" for b in paging)


def _budget_row(ctx: GenerationContext, f: PanelFactory) -> list[Cell]:
    config = ctx.config
    with_availability = [m.name for m in config.models if m.slo.availability is not None]
    windows = _burn_windows(ctx)
    return [
        f.timeseries(
            "Error budget burn rate",
            f"How fast errors consume the availability SLO's budget, over the last {' and '.join(windows)} "
            f"(1 = exactly on budget for the SLO period). Dashed: the burn rates at which the error-budget "
            f"pages fire ({_burn_levels(ctx)} for a {ctx.policy.burn_reference_days}-day SLO period, scaled "
            f"to the selected model's slo.period exactly as the alerts scale them).",
            [Query(per_model_union(config.models, lambda m, w=w: _burn(m, w)), legend=f"{{{{model}}}} {w}",
                   ref=chr(ord("A") + i)) for i, w in enumerate(windows)],
            unit="short", overrides=th.per_model_overrides(config.models, lambda m: th.burn_rate_steps(ctx, m)),
            w=12, models=with_availability),
        f.stat(
            "Error budget left",
            "Share of the SLO period's error budget still unspent (period from slo.period in modelmon.yaml, "
            "30 days by default). Red once it is spent.",
            [Query(per_model_union(config.models, _budget_left), legend="{{model}}")],
            unit="percentunit", steps=[th.step(th.RED, None), th.step(th.ORANGE, 0), th.step(th.GREEN, 0.25)],
            decimals=1, w=6, h=8, models=with_availability),
        f.stat(
            "Availability over the SLO period",
            "Share of successful predictions over the SLO period. Green at or above the selected model's "
            "availability objective from modelmon.yaml.",
            [Query(per_model_union(config.models, _availability), legend="{{model}}")],
            unit="percentunit",
            overrides=th.per_model_overrides(
                config.models,
                lambda m: None if m.slo.availability is None else
                [th.step(th.RED, None), th.step(th.GREEN, round(m.slo.availability / 100, 10))]),
            decimals=3, w=6, h=8, models=with_availability),
    ]


def build(ctx: GenerationContext) -> dict[str, Any]:
    config = ctx.config
    f = factory(config)
    sections = [
        ("Traffic and errors · $model", _traffic_row(ctx, f)),
        ("Latency · $model", _latency_row(config, f)),
        ("Availability SLO · $model", _budget_row(ctx, f)),
    ]
    return build_dashboard(
        config, uid=SERVICE_UID, title="modelmon · Service and SLO", kind="service",
        description="The model as a service: throughput, errors, latency, and its SLOs' error budgets.",
        sections=sections, variables=[model_variable(config), version_variable(config)],
        annotation_expr=selector("ALERTS", alertstate="firing", model=M))
