"""Service and SLO: throughput, errors, latency (heatmap and quantiles), error-budget burn.

SLO constants differ per model (latency bound, availability, period), so the SLO queries are
unions of one branch per model (``model="credit", model=~"$model"``) with that model's
constants; the selected ``$model`` keeps exactly one branch.
"""
from __future__ import annotations

import re
from typing import Any

from modelmon.alerting import recording as rec
from modelmon.config import Config, ModelConfig, parse_duration
from modelmon.contract import SERVICE_UID
from modelmon.dashboards import thresholds as th
from modelmon.dashboards.base import build_dashboard, factory, model_variable, version_variable
from modelmon.dashboards.expressions import error_ratio, per_model_union
from modelmon.dashboards.panels import Cell, PanelFactory, Query
from modelmon.generation import GenerationContext
from modelmon.promql import Regex, le_regex, match, number, rate, selector
from modelmon.stack.topology import RETENTION

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
            [Query(f"sum by (model, version) ({rate(f.sel(PREDICTIONS, model=M, version=V), RATE)})",
                   legend=BY_VERSION)], unit="reqps", w=8),
        f.timeseries(
            "Requests by status", "Predictions per second by status: ok, or error (the model failed to answer).",
            [Query(f"sum by (model, status) ({rate(f.sel(PREDICTIONS, model=M, version=V), RATE)})",
                   legend="{{model}} {{status}}")], unit="reqps", stack=True, w=8),
        f.timeseries(
            "Error rate by version",
            "Share of predictions with status=error. Dashed: the selected model's SLO allowance "
            "(1 - availability) and that allowance times the fastest burn rate that pages: the "
            f"burn-rate alert's factor scaled to the model's slo.period{fastest}.",
            [Query(error_ratio("model, version", job=f.job, model=M, version=V), legend=BY_VERSION)],
            unit="percentunit", overrides=th.per_model_overrides(config.models, lambda m: th.error_rate_steps(ctx, m)),
            w=8),
    ]


def _within_slo(f: PanelFactory, m: ModelConfig) -> str | None:
    if m.slo.latency_p99_seconds is None:
        return None
    le = match("le", le_regex(m.slo.latency_p99_seconds))
    good = f.sel(f"{LATENCY}_bucket", MODEL_FILTER, le, match("model", m.name), match("version", V))
    total = f.sel(f"{LATENCY}_count", MODEL_FILTER, match("model", m.name), match("version", V))
    return f"sum by (model) ({rate(good, RATE)}) / sum by (model) ({rate(total, RATE)})"


def _latency_row(config: Config, f: PanelFactory) -> list[Cell]:
    buckets = f.sel(f"{LATENCY}_bucket", model=M, version=V)
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
            [Query(per_model_union(config.models, lambda m: _within_slo(f, m)), legend="{{model}}")],
            unit="percentunit", steps=[th.step(th.RED, None), th.step(th.GREEN, 0.99)], w=12,
            models=with_latency_slo),
    ]


# --------------------------------------------------------------------------- availability SLO
#
# The SLO panels read the recording rules the burn-rate alerts read (modelmon.alerting.recording):
# cheap, and the number on the panel is the number the alert compared. Recording rules aggregate
# per model over every job, so these panels carry no job selector. Windows as long as the SLO
# period only run as instant queries (one evaluation, not one per graph step), and Prometheus can
# only answer them from the history it keeps: RETENTION on modelmon's stacks.


def _recorded(name: str, m: ModelConfig) -> str:
    """A per-model recording rule of ``m``, still filtered by ``$model``."""
    return selector(name, MODEL_FILTER, match("model", m.name))


def _burn(m: ModelConfig, window: str) -> str | None:
    budget = th.error_budget_ratio(m)
    if budget is None:
        return None
    return f"{_recorded(rec.error_ratio('model', window), m)} / {budget:g}"


def _period(m: ModelConfig) -> str:
    return f"{m.slo.period_days}d"


# How often the period's error ratio samples the 5m recording rules: a step shorter than their window
# counts every request window/step times, the same for all, so the ratio stays request-weighted;
# a minute gives the panel a value a minute after Prometheus starts recording.
SAMPLE_STEP = "1m"


def _period_error_ratio(ctx: GenerationContext, m: ModelConfig) -> str:
    """Errors / predictions over the model's SLO period, from the shortest recorded burn window.

    The error ratio and the prediction rate over that window (5m) are sampled every SAMPLE_STEP
    with a subquery; weighting each ratio by its rate counts requests, not time (a quiet night
    does not dilute a busy day's errors). ``>= 0`` drops the NaN ratio of a window without
    predictions."""
    window = ctx.policy.burn_durations[0]
    errors = _recorded(rec.error_ratio("model", window), m)
    rate_ = _recorded(rec.predictions_rate("model", window), m)
    over = f"[{_period(m)}:{SAMPLE_STEP}]"
    return f"sum_over_time((({errors} >= 0) * {rate_}){over}) / sum_over_time({rate_}{over})"


def _budget_left(ctx: GenerationContext, m: ModelConfig) -> str | None:
    budget = th.error_budget_ratio(m)
    if budget is None:
        return None
    return f"1 - ({_period_error_ratio(ctx, m)}) / {budget:g}"


def _availability(ctx: GenerationContext, m: ModelConfig) -> str | None:
    if m.slo.availability is None:
        return None
    return f"1 - ({_period_error_ratio(ctx, m)})"


def _burn_windows(ctx: GenerationContext) -> list[str]:
    """Long windows of the burn-rate alerts that page, shortest first (1h and 6h by default)."""
    paging = [b for b in ctx.policy.burn_windows if b.severity == "critical"] or list(ctx.policy.burn_windows)
    return sorted({b.long for b in paging}, key=parse_duration)


def _all_long_windows(ctx: GenerationContext) -> list[str]:
    """Long window of every burn-rate alert pair, paging or not (1h, 6h, 1d, 3d by default)."""
    return sorted({b.long for b in ctx.policy.burn_windows}, key=parse_duration)


def _burn_levels(ctx: GenerationContext) -> str:
    """'14.4x over 1h and 6x over 6h' for the policy's reference period."""
    policy = ctx.policy
    paging = [b for b in policy.burn_windows if b.severity == "critical"] or list(policy.burn_windows)
    return " and ".join(f"{number(b.factor)}x over {b.long}" for b in paging)


def _burn_now_overrides(ctx: GenerationContext) -> list[dict[str, Any]]:
    """Per model and window: orange (ticket) or red (page) from the factor at which that window's
    alert fires for the model's slo.period."""
    out = []
    for m in ctx.config.models:
        if m.slo.availability is None:
            continue
        for window in _all_long_windows(ctx):
            steps = [th.step(th.GREEN, None)]
            for b in sorted((b for b in ctx.burns(m) if b.long == window), key=lambda b: b.factor):
                steps.append(th.step(th.RED if b.severity == "critical" else th.ORANGE, float(b.factor)))
            matcher = {"id": "byRegexp", "options": f"^{re.escape(m.name)} {re.escape(window)}$"}
            out.append(th.thresholds_override(matcher, steps))
    return out


def _periods(config: Config) -> str:
    periods = sorted({_period(m) for m in config.models if m.slo.availability is not None}, key=parse_duration)
    return " or ".join(periods) or "30d"


def _retention_caveat(config: Config) -> str:
    longest = max((parse_duration(_period(m)) for m in config.models if m.slo.availability is not None),
                  default=30 * 86400)
    example = _periods(config).split(" or ")[-1]
    caveat = (f"Windows longer than Prometheus' retention only see the retained history: modelmon's stacks "
              f"keep {RETENTION}")
    if longest > parse_duration(RETENTION):
        caveat += f", so over a {example} SLO period this is the last {RETENTION} only"
    return caveat + "."


def _budget_row(ctx: GenerationContext, f: PanelFactory) -> list[Cell]:
    config = ctx.config
    with_availability = [m.name for m in config.models if m.slo.availability is not None]
    windows = _burn_windows(ctx)
    every_window = _all_long_windows(ctx)
    step = ctx.policy.burn_durations[0]
    recorded = (f"From the recording rules {rec.error_ratio('model', '<window>')} the burn-rate alerts read "
                f"(per model over every job).")
    return [
        f.timeseries(
            "Error budget burn rate",
            f"How fast errors consume the availability SLO's budget, over the last {' and '.join(windows)} "
            f"(1 = exactly on budget for the SLO period). Dashed: the burn rates at which the error-budget "
            f"pages fire ({_burn_levels(ctx)} for a {ctx.policy.burn_reference_days}-day SLO period, scaled "
            f"to the selected model's slo.period exactly as the alerts scale them). {recorded}",
            [Query(per_model_union(config.models, lambda m, w=w: _burn(m, w)), legend=f"{{{{model}}}} {w}",
                   ref=chr(ord("A") + i)) for i, w in enumerate(windows)],
            unit="short", overrides=th.per_model_overrides(config.models, lambda m: th.burn_rate_steps(ctx, m)),
            w=12, models=with_availability),
        f.stat(
            "Burn rate now, per alert window",
            f"The burn rate over each window of the burn-rate alerts ({', '.join(every_window)}), as they "
            f"evaluate it now: an alert's `window` label names its panel value. Red at the factor that pages, "
            f"orange at the one that opens a ticket, for the selected model's slo.period. {recorded}",
            [Query(per_model_union(config.models, lambda m, w=w: _burn(m, w)), legend=f"{{{{model}}}} {w}",
                   instant=True, ref=chr(ord("A") + i)) for i, w in enumerate(every_window)],
            unit="short", overrides=_burn_now_overrides(ctx), decimals=2, w=4, h=8,
            text_mode="value_and_name", models=with_availability),
        f.stat(
            "Error budget left over the SLO period",
            f"Share of the error budget still unspent over the SLO period ({_periods(config)}, slo.period in "
            f"modelmon.yaml): 1 - (errors / predictions over the period) / (1 - availability). Red once it is "
            f"spent. Request-weighted from the recording rules {rec.error_ratio('model', step)} and "
            f"{rec.predictions_rate('model', step)} sampled every {SAMPLE_STEP}, as one instant query. "
            f"{_retention_caveat(config)}",
            [Query(per_model_union(config.models, lambda m: _budget_left(ctx, m)), legend="{{model}}",
                   instant=True)],
            unit="percentunit", steps=[th.step(th.RED, None), th.step(th.ORANGE, 0), th.step(th.GREEN, 0.25)],
            decimals=1, w=4, h=8, models=with_availability),
        f.stat(
            "Availability over the SLO period",
            f"Share of successful predictions over the SLO period ({_periods(config)}). Green at or above the "
            f"selected model's availability objective from modelmon.yaml. Same recording rules and instant "
            f"query as the budget. {_retention_caveat(config)}",
            [Query(per_model_union(config.models, lambda m: _availability(ctx, m)), legend="{{model}}",
                   instant=True)],
            unit="percentunit",
            overrides=th.per_model_overrides(
                config.models,
                lambda m: None if m.slo.availability is None else
                [th.step(th.RED, None), th.step(th.GREEN, round(m.slo.availability / 100, 10))]),
            decimals=3, w=4, h=8, models=with_availability),
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
