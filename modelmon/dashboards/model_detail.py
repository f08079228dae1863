"""Model detail: quality over time per version, confusion matrix, labels, canary comparison.

``$model`` is single-select because thresholds are per model: each thresholded panel carries
one field override per model (matched on series names, which start with the model name), so
the selected model's thresholds from modelmon.yaml colour it. ``$version`` is multi-select so
versions show side by side.
"""
from __future__ import annotations

from typing import Any

from modelmon.config import Config
from modelmon.contract import MODEL_UID
from modelmon.dashboards import thresholds as th
from modelmon.dashboards.base import build_dashboard, factory, model_variable, version_variable
from modelmon.dashboards.catalog import QUALITY, Quantity, threshold
from modelmon.dashboards.panels import Cell, PanelFactory, Query
from modelmon.dashboards.expressions import error_ratio
from modelmon.generation import GenerationContext
from modelmon.promql import Regex, rate, selector

RATE = "$__rate_interval"
M = "$model"
V = Regex("$version")
BY_VERSION = "{{model}} {{version}}"


def _models_for(config: Config, q: Quantity) -> list[str]:
    return [m.name for m in config.models if q.applies_to(m.task)]


def _quality_panel(config: Config, f: PanelFactory, q: Quantity) -> Cell:
    overrides = th.per_model_overrides(
        config.models, lambda m: th.threshold_steps(threshold(q, m)) if threshold(q, m) else None)
    tasks = " and ".join(sorted(set(q.tasks)))
    return f.timeseries(
        f"{q.short_title} by version",
        f"{q.short_title}: {q.meaning}. Computed over the quality window of labelled predictions, one line per "
        f"version. Dashed thresholds come from modelmon.yaml for the selected model. Only {tasks} models "
        f"have this metric; it appears once the window holds a labelled prediction.",
        [Query(selector(q.metric, model=M, version=V), legend=BY_VERSION)],
        unit=q.unit, overrides=overrides, w=8, h=7, models=_models_for(config, q))


def _labels_row(config: Config, f: PanelFactory) -> list[Cell]:
    classification = [m.name for m in config.models if m.is_classification]
    predictions = selector("modelmon_predictions_total", model=M, version=V, status="ok")
    return [
        f.table(
            "Confusion matrix",
            "Labelled outcomes over the dashboard's time range: rows are the actual class, columns the "
            "predicted class (classification models only). Off-diagonal cells are the mistakes.",
            [Query(f"sum by (actual, predicted) (increase({selector('modelmon_confusion_total', model=M, version=V)}"
                   f"[$__range]))", instant=True, format="table")],
            transformations=[{"id": "groupingToMatrix", "options": {
                "columnField": "predicted", "rowField": "actual", "valueField": "Value", "emptyValue": "zero"}}],
            unit="short", w=8, h=8, models=classification),
        f.timeseries(
            "Labelled share",
            "Ground-truth labels joined per successful prediction. Labels arrive late, so this lags traffic; "
            "a drop means the labelling pipeline stalled and quality numbers go stale.",
            [Query(f"sum by (model, version) ({rate(selector('modelmon_labels_total', model=M, version=V), RATE)}) "
                   f"/ sum by (model, version) ({rate(predictions, RATE)})", legend=BY_VERSION)],
            unit="percentunit", w=8, h=8),
        f.stat(
            "Labelled predictions in window",
            "Labelled predictions inside the quality window per version. Orange below the model's "
            "min_labeled from modelmon.yaml: quality alerts stay silent until it is reached.",
            [Query(selector("modelmon_window_labeled", model=M, version=V), legend=BY_VERSION)],
            unit="short", overrides=th.per_model_overrides(config.models, lambda m: th.min_count_steps(m.min_labeled)),
            w=8, h=8),
        f.timeseries(
            "Label delay",
            "Time from prediction to its label (median, 90th and 99th percentile).",
            [Query(f"histogram_quantile({p}, sum by (model, le) "
                   f"({rate(selector('modelmon_label_delay_seconds_bucket', model=M), RATE)}))",
                   legend=f"{{{{model}}}} p{int(p * 100)}") for p in (0.5, 0.9, 0.99)],
            unit="s", w=12, h=7),
        f.timeseries(
            "Unjoinable labels and expired predictions",
            "Labels with no pending prediction (wrong id, or later than label_ttl) and predictions dropped "
            "before their label came (ttl or a full join buffer). Non-zero means quality is measured on "
            "fewer predictions than it seems.",
            [Query(f"sum({rate(selector('modelmon_labels_unmatched_total', model=M), RATE)}) or vector(0)",
                   legend="unmatched labels"),
             Query(f"sum({rate(selector('modelmon_predictions_expired_total', model=M), RATE)}) or vector(0)",
                   legend="expired predictions")],
            unit="reqps", w=12, h=7),
    ]


def _versions_row(config: Config, f: PanelFactory) -> list[Cell]:
    all_traffic = selector("modelmon_predictions_total", model=M)
    traffic = selector("modelmon_predictions_total", model=M, version=V)
    latency = selector("modelmon_prediction_latency_seconds_bucket", model=M, version=V)
    columns = {"A": "predictions/s", "B": "error rate", "C": "p99 latency", "D": "labelled in window",
               "E": "accuracy or MAE"}
    units = {"predictions/s": "reqps", "error rate": "percentunit", "p99 latency": "s"}
    # One column for the headline quality: a model has either accuracy (classification) or MAE.
    headline = (f"max by (version) ({selector('modelmon_accuracy_ratio', model=M, version=V)}) "
                f"or max by (version) ({selector('modelmon_mae', model=M, version=V)})")
    return [
        f.timeseries(
            "Traffic share by version",
            "Each version's share of the model's predictions: the canary or A/B split as actually served.",
            [Query(f"sum by (model, version) ({rate(traffic, RATE)}) / ignoring (version) group_left "
                   f"sum by (model) ({rate(all_traffic, RATE)})", legend=BY_VERSION)],
            unit="percentunit", stack=True, w=10, h=8),
        f.table(
            "Versions side by side",
            "Current traffic, error rate, p99 latency, labelled count and headline quality per version, "
            "for canary and A/B decisions (accuracy for classification models, MAE for regression).",
            [Query(f"sum by (version) ({rate(traffic, RATE)})", instant=True, format="table", ref="A"),
             Query(error_ratio("version", model=M, version=V), instant=True, format="table", ref="B"),
             Query(f"histogram_quantile(0.99, sum by (version, le) ({rate(latency, RATE)}))",
                   instant=True, format="table", ref="C"),
             Query(f"sum by (version) ({selector('modelmon_window_labeled', model=M, version=V)})",
                   instant=True, format="table", ref="D"),
             Query(headline, instant=True, format="table", ref="E")],
            transformations=[
                {"id": "merge", "options": {}},
                {"id": "organize", "options": {
                    "excludeByName": {"Time": True},
                    "indexByName": {"version": 0, **{name: i + 1 for i, name in enumerate(columns.values())}},
                    "renameByName": {f"Value #{ref}": name for ref, name in columns.items()}}},
            ],
            overrides=[{"matcher": {"id": "byName", "options": name},
                        "properties": [{"id": "unit", "value": unit}]} for name, unit in units.items()],
            sort_by="predictions/s", w=14, h=8),
    ]


def build(ctx: GenerationContext) -> dict[str, Any]:
    config = ctx.config
    f = factory(config)
    classification = [q for q in QUALITY if "regression" not in q.tasks]
    regression = [q for q in QUALITY if "regression" in q.tasks]
    sections = [
        ("Classification quality · $model", [_quality_panel(config, f, q) for q in classification]),
        ("Regression quality · $model", [_quality_panel(config, f, q) for q in regression]),
        ("Labels · $model", _labels_row(config, f)),
        ("Versions · $model", _versions_row(config, f)),
    ]
    return build_dashboard(
        config, uid=MODEL_UID, title="modelmon · Model detail", kind="model",
        description="Quality of one model over time, per version: metrics, confusion matrix, labels, canaries.",
        sections=sections, variables=[model_variable(config), version_variable(config)],
        annotation_expr=selector("ALERTS", alertstate="firing", model=M), time_from="now-6h")
