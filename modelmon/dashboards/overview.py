"""Models overview: one row per model, coloured by that model's thresholds, click to details."""
from __future__ import annotations

from typing import Any

from modelmon.config import ModelConfig
from modelmon.contract import DRIFT_UID, OVERVIEW_UID, SELF_UID, SERVICE_UID
from modelmon.dashboards import thresholds as th
from modelmon.dashboards.base import build_dashboard, factory, model_uid
from modelmon.dashboards import recorded as rc
from modelmon.dashboards.catalog import Quantity, headline_drift, headline_quality, threshold, worst
from modelmon.dashboards.panels import Cell, PanelFactory, Query, dashboard_link
from modelmon.generation import GenerationContext
from modelmon.promql import number, rate, selector

RATE = "$__rate_interval"


def _by_ref(ref: str, steps: list[dict], display: str, unit: str | None = None) -> dict[str, Any]:
    """Per-query thresholds, name (and unit) inside one stat panel."""
    props = [{"id": "thresholds", "value": {"mode": "absolute", "steps": steps}},
             {"id": "displayName", "value": display}]
    if unit is not None:
        props.append({"id": "unit", "value": unit})
    return {"matcher": {"id": "byFrameRefID", "options": ref}, "properties": props}


def _quantity_overrides(m: ModelConfig, quantities) -> list[dict[str, Any]]:
    out = []
    for q in quantities:
        t = threshold(q, m)
        out.append(_by_ref(q.key, th.threshold_steps(t) if t else th.neutral_steps(), q.short_title, q.unit))
    return out


def _summary_row(f: PanelFactory) -> list[Cell]:
    return [
        f.stat("Models watched", "Models that report modelmon_model_info (one per model, whatever its versions).",
               [Query(f"count(count by (model) ({f.sel('modelmon_model_info')}))")], unit="short", w=4,
               color_mode="value"),
        f.stat("Predictions per second", "All models together, over the dashboard's rate interval.",
               [Query(f"sum({rate(f.sel('modelmon_predictions_total'), RATE)})")], unit="reqps", w=5,
               color_mode="value"),
        f.stat("Critical alerts firing", "Firing Prometheus alerts with severity=critical, all models.",
               [Query(f"count({selector('ALERTS', alertstate='firing', severity='critical')}) or vector(0)")],
               unit="short",
               steps=[th.step(th.GREEN, None), th.step(th.RED, 1)], w=5),
        f.stat("Rejected records per second",
               "Log lines the exporter skipped as invalid (see the modelmon dashboard for the reasons).",
               [Query(f"sum({rate(f.sel('modelmon_records_rejected_total'), RATE)}) or vector(0)")], unit="reqps",
               steps=[th.step(th.GREEN, None), th.step(th.ORANGE, 0.001)], w=5,
               links=[dashboard_link("modelmon itself", SELF_UID)]),
        f.stat("Exporter up", "1 when Prometheus scraped every modelmon exporter at the last scrape.",
               [Query(f"min({f.sel('up')})")], unit="short",
               steps=[th.step(th.RED, None), th.step(th.GREEN, 1)], w=5),
    ]


def _headline(f: PanelFactory, window: str, m: ModelConfig, q: Quantity) -> str:
    """The worst series of ``q`` for ``m``: its recorded form over the alert window where the task has
    one (summed over replicas: the number the alert reads), else the worst exporter's gauge."""
    if q.is_recorded(m.task):
        return f"{worst(q)}({rc.recorded(q, window, model=m.name)})"
    return f"{worst(q)}({f.sel(q.metric, model=m.name)})"


def _scopes(window: str, m: ModelConfig, quantities: list[Quantity], what: str) -> str:
    """Where each number of a headline stat comes from, in words."""
    summed = [q.short_title for q in quantities if q.is_recorded(m.task)]
    gauges = [q.short_title for q in quantities if not q.is_recorded(m.task)]
    out = []
    if summed:
        out.append(f"{', '.join(summed)}: over the last {window} of {what}, summed over every exporter replica "
                   f"(the recorded series the alerts read).")
    if gauges:
        out.append(f"{', '.join(gauges)}: {rc.PER_PROCESS}, the worst exporter's value over its own window.")
    return " ".join(out)


def _model_row(ctx: GenerationContext, f: PanelFactory, m: ModelConfig) -> list[Cell]:
    name = m.name
    window = rc.alert_window(ctx.config)
    detail = dashboard_link(f"{name}: model detail", model_uid(m.task), model=name)
    service = dashboard_link(f"{name}: service and SLO", SERVICE_UID, model=name)
    drift = dashboard_link(f"{name}: drift", DRIFT_UID, model=name)
    quality = headline_quality(m)
    drifts = headline_drift(m)
    budget = th.error_budget_ratio(m)
    slo_text = (f" Orange above the SLO allowance ({budget:g} of requests, availability {m.slo.availability:g}%), "
                f"red at {number(th.fast_burn(ctx, m))}x that (fast budget burn).") if budget is not None else ""
    lat_text = (f" Red above the SLO of {m.slo.latency_p99_seconds:g}s."
                if m.slo.latency_p99_seconds is not None else "")
    return [
        f.stat(f"Traffic · {name}", f"Predictions per second of {name}, all versions.",
               [Query(f"sum({rate(f.sel('modelmon_predictions_total', model=name), RATE)})")],
               unit="reqps", w=3, color_mode="value", links=[service, detail]),
        f.stat(f"Error rate · {name}",
               f"Share of {name}'s predictions logged with status=error.{slo_text}",
               [Query(f"sum({rate(f.sel('modelmon_predictions_total', model=name, status='error'), RATE)}) "
                      f"/ sum({rate(f.sel('modelmon_predictions_total', model=name), RATE)}) "
                      f"or 0 * sum({rate(f.sel('modelmon_predictions_total', model=name), RATE)})")],
               unit="percentunit", steps=th.error_rate_steps(ctx, m), w=3, decimals=2, links=[service]),
        f.stat(f"p99 latency · {name}", f"99th percentile serving latency of {name} from the log.{lat_text}",
               [Query(f"histogram_quantile(0.99, sum by (le) "
                      f"({rate(f.sel('modelmon_prediction_latency_seconds_bucket', model=name), RATE)}))")],
               unit="s", steps=th.latency_steps(m), w=3, links=[service]),
        f.stat(f"Quality · {name}",
               f"Worst version's {', '.join(q.short_title for q in quality)}; colours from modelmon.yaml. "
               f"{_scopes(window, m, quality, 'labelled predictions')} Quality alerts wait for {m.min_labeled} labelled "
               f"predictions. Click for quality over time per version.",
               [Query(_headline(f, window, m, q), legend=q.short_title, ref=q.key) for q in quality],
               unit="short", overrides=_quantity_overrides(m, quality),
               decimals=3, w=5, links=[detail]),
        f.stat(f"Drift · {name}",
               f"Worst feature PSI and the other drift scores of {name}; colours from modelmon.yaml. "
               f"{_scopes(window, m, drifts, 'records')} Click for per-feature drift.",
               [Query(_headline(f, window, m, q), legend=q.short_title, ref=q.key) for q in drifts],
               unit="short", overrides=_quantity_overrides(m, drifts),
               decimals=3, w=5, links=[drift]),
        f.stat(f"Firing alerts · {name}",
               f"Prometheus alerts firing for {name} (team {m.team}), by severity.",
               [Query(f"count({selector('ALERTS', alertstate='firing', model=name, severity='critical')}) or vector(0)",
                      legend="critical", ref="critical"),
                Query(f"count({selector('ALERTS', alertstate='firing', model=name, severity='warning')}) or vector(0)",
                      legend="warning", ref="warning")],
               unit="short",
               overrides=[_by_ref("critical", [th.step(th.GREEN, None), th.step(th.RED, 1)], "critical"),
                          _by_ref("warning", [th.step(th.GREEN, None), th.step(th.ORANGE, 1)], "warning")],
               w=5, links=[detail]),
    ]


def build(ctx: GenerationContext) -> dict[str, Any]:
    config = ctx.config
    f = factory(config)
    sections: list[tuple[str, list[Cell]]] = [("All models", _summary_row(f))]
    for m in config.models:
        sections.append((f"{m.name} · {m.task} · team {m.team}", _model_row(ctx, f, m)))
    alerts_table = f.table(
        "Firing alerts",
        "Every firing Prometheus alert with its model, severity and team (from the ALERTS series).",
        [Query(selector("ALERTS", alertstate="firing"), instant=True, format="table")],
        transformations=[{"id": "organize", "options": {
            "excludeByName": {"Time": True, "Value": True, "__name__": True, "alertstate": True},
            "indexByName": {"alertname": 0, "severity": 1, "model": 2, "team": 3},
            "renameByName": {}}}],
        w=24, h=7, empty_until="an alert fires")
    sections.append(("Alerts", [alerts_table]))
    return build_dashboard(
        config, uid=OVERVIEW_UID, title="modelmon · Models overview", kind="overview",
        description="Every watched model in one view: traffic, errors, latency, quality, drift and alerts.",
        sections=sections, variables=[], annotation_expr=selector("ALERTS", alertstate="firing"), time_from="now-3h")
