"""Model detail, one dashboard per task: quality over time per version, labels, canary comparison.

Laid out by task: Grafana 10/11 cannot hide a row by a variable's value (a row repeated over a
variable without values is still drawn once, as a placeholder), so instead of one dashboard with
every task's panels (a regression model's alert landing under seven empty classification panels)
there is one model-detail dashboard per task present in modelmon.yaml (``base.model_uid``:
``modelmon-model-regression``). Its ``$model`` offers only that task's models, its quality row
comes first and holds only the quantities the exporter computes for the task, and the confusion
matrix exists only for classifiers. Links from the overview and the alerts' dashboard_url pick
the dashboard by the model's task.

``$model`` is single-select because thresholds are per model: each thresholded panel carries
one field override per model (matched on series names, which start with the model name), so
the selected model's thresholds from modelmon.yaml colour it. ``$version`` is multi-select so
versions show side by side.

Quality panels read the recorded series summed over exporter replicas (``dashboards.recorded``)
over ``$window``, default the alert window, for every quantity with an additive form for the task;
log loss, Brier score and multiclass ROC AUC stay per-process gauges (worst exporter shown).

Before labels arrive, the estimation row shows per estimated quantity the exporter's estimate
(``modelmon_estimated_<q>``, with a ±2 standard-error band from ``modelmon_estimated_stderr``), the
realized value (the same series as the quality row) and the reference quality (the training
baseline ``modelmon_reference_<q>``) in one panel, next to the label coverage over ``$window``.
"""
from __future__ import annotations

from typing import Any

from modelmon.config import Config, ModelConfig
from modelmon.contract import CLASSIFICATION, ESTIMATED_KEYS, estimated_name, reference_name
from modelmon.dashboards import thresholds as th
from grafanalib import core

from modelmon.dashboards.base import (ROLLOUT_UID, build_dashboard, factory, model_uid, model_variable, tasks_of,
                                      version_variable)
from modelmon.dashboards import recorded as rc
from modelmon.dashboards.catalog import BY_KEY, QUALITY, Quantity, threshold
from modelmon.dashboards.panels import LABELLED_REFERENCE, Cell, PanelFactory, Query, dashboard_link, merged_columns
from modelmon.dashboards.expressions import accuracy_over, error_ratio, mae_over
from modelmon.generation import GenerationContext
from modelmon.promql import Regex, rate, selector

RATE = "$__rate_interval"
RANGE = "$__range"
M = "$model"
V = Regex("$version")
BY_VERSION = "{{model}} {{version}}"


def _task_models(config: Config, task: str) -> tuple[ModelConfig, ...]:
    return tuple(m for m in config.models if m.task == task)


def _quality_panel(config: Config, f: PanelFactory, task: str, q: Quantity) -> Cell:
    # Only this task's models: their thresholds, and the e2e test expects their data.
    overrides = th.per_model_overrides(
        _task_models(config, task), lambda m: th.threshold_steps(threshold(q, m)) if threshold(q, m) else None)
    if q.is_recorded(task):
        query = rc.recorded(q, rc.W, model=M, version=V)
        where = (f"Over the last $window of labelled predictions, summed over every exporter replica (the "
                 f"recorded series {q.recorded('$window')}; the alerts read "
                 f"{rc.alert_window(config)}, the default of $window). It appears once the window holds a "
                 f"labelled prediction; alerts wait for min_labeled of them.")
    else:
        query = rc.per_process(q, "model, version", f.sel(q.metric, model=M, version=V))
        where = (f"Over each exporter's quality window of labelled predictions: {rc.PER_PROCESS} (no additive "
                 f"form), so the worst exporter's value is shown, not a sum. It appears once the window holds "
                 f"a labelled prediction.")
    return f.timeseries(
        f"{q.short_title} by version",
        f"{q.short_title}: {q.meaning}. One line per version. {where} Dashed thresholds come from "
        f"modelmon.yaml for the selected model.",
        [Query(query, legend=BY_VERSION)],
        unit=q.unit, overrides=overrides, w=8, h=7)


# Series names of the estimation panels (legend suffixes): the band and reference overrides match them.
ESTIMATED, LOWER, UPPER, REALIZED, REFERENCE = "estimated", "estimated - 2 SE", "estimated + 2 SE", "realized", "reference"
BAND_SE = 2


def estimated_keys(task: str) -> list[str]:
    """The quality quantities the exporter estimates for a model of ``task``, in contract order."""
    return [k for k in ESTIMATED_KEYS if BY_KEY[k].applies_to(task)]


def _realized(f: PanelFactory, task: str, q: Quantity) -> tuple[str, str]:
    """(query, where) of the realized value: as on the quality row."""
    if q.is_recorded(task):
        return (rc.recorded(q, rc.W, model=M, version=V),
                f"the recorded {q.recorded('$window')}, summed over every exporter replica")
    return (rc.per_process(q, "model, version", f.sel(q.metric, model=M, version=V)),
            f"the exporter gauge {q.metric} over its quality window, {rc.PER_PROCESS} (the worst exporter)")


def _estimated_panel(config: Config, f: PanelFactory, task: str, q: Quantity) -> Cell:
    """Estimated (with its ±2 SE band) vs realized vs reference quality of one quantity."""
    estimate = f.sel(estimated_name(q.key), model=M, version=V)
    stderr = f.sel("modelmon_estimated_stderr", model=M, version=V, quantity=q.key)
    band = f"{BAND_SE} * {stderr}"
    realized, where = _realized(f, task, q)
    style = [
        {"matcher": {"id": "byRegexp", "options": f" estimated [-+] {BAND_SE} SE$"}, "properties": [
            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [4, 4]}},
            {"id": "custom.lineWidth", "value": 1}, {"id": "custom.fillOpacity", "value": 0}]},
        {"matcher": {"id": "byRegexp", "options": f" {REFERENCE}$"}, "properties": [
            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
            {"id": "custom.lineWidth", "value": 2}, {"id": "custom.fillOpacity", "value": 0}]},
    ]
    overrides = th.per_model_overrides(
        _task_models(config, task), lambda m: th.threshold_steps(threshold(q, m)) if threshold(q, m) else None)
    method = ("scores calibrated on the labelled reference (confidence-based performance estimation)"
              if task in CLASSIFICATION else
              "a model of the error fitted on the labelled reference (direct loss estimation)")
    return f.timeseries(
        f"{q.short_title}: estimated vs realized vs reference",
        f"{q.short_title} of each version three ways. Estimated: without labels, over the last quality window's "
        f"worth of predictions (labelled or not), from {method}; the dashed lines around it are ±{BAND_SE} "
        f"standard errors (modelmon_estimated_stderr): realized quality should fall inside about 95% of the time "
        f"while the estimator's assumptions hold. Estimates are {rc.PER_PROCESS} (the worst exporter's estimate; "
        f"the band spans every exporter's). Realized: {where}, once labels arrive. Reference: the quality on the "
        f"labelled reference data (the training baseline, a constant line). An estimate falling before any label "
        f"is the early warning (ModelmonEstimated* alerts, tickets while labels are missing); an estimate far from "
        f"the realized value means concept drift (ModelmonEstimateDisagrees). Dashed thresholds from modelmon.yaml "
        f"for the selected model.",
        [Query(f"{rc.per_process(q, 'model, version', estimate)}", legend=f"{BY_VERSION} {ESTIMATED}", ref="A"),
         Query(f"min by (model, version) ({estimate} - ignoring (quantity) ({band}))",
               legend=f"{BY_VERSION} {LOWER}", ref="B"),
         Query(f"max by (model, version) ({estimate} + ignoring (quantity) ({band}))",
               legend=f"{BY_VERSION} {UPPER}", ref="C"),
         Query(realized, legend=f"{BY_VERSION} {REALIZED}", ref="D"),
         Query(f"max by (model) ({f.sel(reference_name(q.key), model=M)})", legend=f"{{{{model}}}} {REFERENCE}",
               ref="E")],
        unit=q.unit, overrides=[*overrides, *style], w=8, h=8, requires=LABELLED_REFERENCE)


def label_coverage(f: PanelFactory, window: str = rc.W) -> str:
    """Labelled predictions over ``window`` (the recorded guard of the quality alerts, summed over
    replicas) per successful prediction over the same window, per version: 0 while no label came."""
    labelled = selector(rc.labeled_predictions(window), model=M, version=V)
    predictions = (f"sum by (model, version) (increase("
                   f"{f.sel('modelmon_predictions_total', model=M, version=V, status='ok')}[{window}]))")
    return f"(\n  {labelled}\n  or\n  {predictions} * 0\n)\n/ on (model, version)\n({predictions} > 0)"


def _estimation_row(config: Config, f: PanelFactory, task: str) -> list[Cell]:
    coverage = f.timeseries(
        "Label coverage",
        f"Per version: labelled predictions over the last $window (the recorded "
        f"{rc.labeled_predictions('$window')}, summed over every exporter replica) per successful prediction "
        f"over the same window, from the counters. Low coverage is when the estimates matter: while fewer than "
        f"the model's min_labeled labelled predictions are in the alert window ({rc.alert_window(config)}), "
        f"realized quality cannot judge and the estimated-quality alerts (tickets) speak instead. Labels arrive "
        f"late, so a burst of late labels can lift it above 100% for a while.",
        [Query(label_coverage(f), legend=BY_VERSION)],
        unit="percentunit", w=8, h=8)
    return [coverage, *(_estimated_panel(config, f, task, BY_KEY[k]) for k in estimated_keys(task))]


def _labels_row(config: Config, f: PanelFactory, task: str) -> list[Cell]:
    models = _task_models(config, task)
    predictions = f.sel("modelmon_predictions_total", model=M, version=V, status="ok")
    cells = []
    if task in CLASSIFICATION:
        cells.append(f.table(
            "Confusion matrix",
            "Labelled outcomes over the dashboard's time range: rows are the actual class, columns the "
            "predicted class. Off-diagonal cells are the mistakes.",
            [Query(f"sum by (actual, predicted) (increase({f.sel('modelmon_confusion_total', model=M, version=V)}"
                   f"[$__range]))", instant=True, format="table")],
            transformations=[{"id": "groupingToMatrix", "options": {
                "columnField": "predicted", "rowField": "actual", "valueField": "Value", "emptyValue": "zero"}}],
            unit="short", w=8, h=8))
    width = 8 if cells else 12
    cells += [
        f.timeseries(
            "Labelled share",
            "Ground-truth labels joined per successful prediction. Labels arrive late, so this lags traffic; "
            "a drop means the labelling pipeline stalled and quality numbers go stale.",
            [Query(f"sum by (model, version) ({rate(f.sel('modelmon_labels_total', model=M, version=V), RATE)}) "
                   f"/ sum by (model, version) ({rate(predictions, RATE)})", legend=BY_VERSION)],
            unit="percentunit", w=width, h=8),
        f.stat(
            "Labelled predictions in window",
            f"Per version: labelled predictions over the last $window, summed over every exporter replica "
            f"(the recorded {rc.labeled_predictions('$window')}: at {rc.alert_window(config)}, the default, "
            f"the count the quality alerts' min_labeled guard reads), and the fewest labelled predictions "
            f"inside one exporter's quality window (what its per-process gauges rest on). Orange below the "
            f"model's min_labeled from modelmon.yaml: quality alerts stay silent until it is reached.",
            [Query(selector(rc.labeled_predictions(rc.W), model=M, version=V), legend=BY_VERSION, ref="A"),
             Query(f"min by (model, version) ({f.sel('modelmon_window_labeled', model=M, version=V)})",
                   legend=f"{BY_VERSION} (one exporter's quality window)", ref="B")],
            unit="short", overrides=th.per_model_overrides(models, lambda m: th.min_count_steps(m.min_labeled)),
            w=width, h=8),
        f.timeseries(
            "Label delay",
            "Time from prediction to its label (median, 90th and 99th percentile).",
            [Query(f"histogram_quantile({p}, sum by (model, le) "
                   f"({rate(f.sel('modelmon_label_delay_seconds_bucket', model=M), RATE)}))",
                   legend=f"{{{{model}}}} p{int(p * 100)}") for p in (0.5, 0.9, 0.99)],
            unit="s", w=12, h=7),
        f.timeseries(
            "Unjoinable labels and expired predictions",
            "Labels with no pending prediction (wrong id, or later than label_ttl) and predictions dropped "
            "before their label came (ttl or a full join buffer). Non-zero means quality is measured on "
            "fewer predictions than it seems.",
            [Query(f"sum({rate(f.sel('modelmon_labels_unmatched_total', model=M), RATE)}) or vector(0)",
                   legend="unmatched labels"),
             Query(f"sum({rate(f.sel('modelmon_predictions_expired_total', model=M), RATE)}) or vector(0)",
                   legend="expired predictions")],
            unit="reqps", w=12, h=7),
    ]
    return cells


def headline(task: str) -> Quantity:
    """The one quality number of the versions table: accuracy for classifiers, MAE for regression."""
    return BY_KEY["accuracy"] if task in CLASSIFICATION else BY_KEY["mae"]


# The rollout dashboard for the selected model: from the dashboard's links and the versions panels.
ROLLOUT_TITLE = "Rollout: versions against the baseline"


def rollout_link() -> dict[str, Any]:
    return dashboard_link(ROLLOUT_TITLE, ROLLOUT_UID, model="${model}")


def rollout_dashboard_link() -> core.DashboardLink:
    """The dashboard link (top bar), carrying the variables (model, datasource) and the time range."""
    return core.DashboardLink(
        title=ROLLOUT_TITLE, type="link", uri=f"/d/{ROLLOUT_UID}", icon="dashboard", includeVars=True,
        keepTime=True, asDropdown=False,
        tooltip="Shadow, canary and A/B versions of this model against its baseline: significance, agreement")


def _versions_row(config: Config, f: PanelFactory, task: str) -> list[Cell]:
    all_traffic = f.sel("modelmon_predictions_total", model=M)
    traffic = f.sel("modelmon_predictions_total", model=M, version=V)
    latency = f.sel("modelmon_prediction_latency_seconds_bucket", model=M, version=V)
    labels = f.sel("modelmon_labels_total", model=M, version=V)
    q = headline(task)
    quality_column = f"{q.short_title} over the range"
    over_range = accuracy_over if q.key == "accuracy" else mae_over
    transformations, units = merged_columns({"A": ("predictions", "short"), "B": ("error rate", "percentunit"),
                                             "C": ("p99 latency", "s"), "D": ("labels joined", "short"),
                                             "E": (quality_column, q.unit)})
    return [
        f.timeseries(
            "Traffic share by version",
            "Each version's share of the model's predictions: the canary or A/B split as actually served.",
            [Query(f"sum by (model, version) ({rate(traffic, RATE)}) / ignoring (version) group_left "
                   f"sum by (model) ({rate(all_traffic, RATE)})", legend=BY_VERSION)],
            unit="percentunit", stack=True, w=10, h=8, links=[rollout_link()]),
        f.table(
            "Versions side by side over the selected time range",
            f"Per version, over the whole dashboard time range ($__range, e.g. the last 6 hours; pick another "
            f"range to compare over it): predictions served, error rate and p99 latency from the counters' "
            f"increase over the range, labels joined over the range, and the {q.short_title} of the labelled "
            f"predictions over the range ({q.meaning}), from the additive counters summed over every exporter "
            f"replica. For canary and A/B decisions: a version that served little "
            f"traffic in the range has noisy numbers.",
            [Query(f"sum by (version) (increase({traffic}[{RANGE}]))", instant=True, format="table", ref="A"),
             Query(error_ratio("version", job=f.job, model=M, version=V, window=RANGE, fn="increase"),
                   instant=True, format="table", ref="B"),
             Query(f"histogram_quantile(0.99, sum by (version, le) (increase({latency}[{RANGE}])))",
                   instant=True, format="table", ref="C"),
             Query(f"sum by (version) (increase({labels}[{RANGE}]))", instant=True, format="table", ref="D"),
             Query(over_range("version", job=f.job, model=M, version=V, window=RANGE), instant=True,
                   format="table", ref="E")],
            transformations=transformations, overrides=units, sort_by="predictions", w=14, h=8,
            links=[rollout_link()]),
    ]


TASK_TITLES = {"binary": "binary classifiers", "multiclass": "multiclass classifiers",
               "regression": "regression models"}


def build_task(ctx: GenerationContext, task: str) -> dict[str, Any]:
    """The model detail of ``task``'s models: its quality row first, then labels and versions."""
    config = ctx.config
    f = factory(config)
    quality = [q for q in QUALITY if q.applies_to(task)]
    kind = "Classification" if task in CLASSIFICATION else "Regression"
    sections = [
        (f"{kind} quality · $model", [_quality_panel(config, f, task, q) for q in quality]),
        ("Estimated vs realized vs reference quality · $model", _estimation_row(config, f, task)),
        ("Labels · $model", _labels_row(config, f, task)),
        ("Versions · $model", _versions_row(config, f, task)),
    ]
    names = [m.name for m in _task_models(config, task)]
    return build_dashboard(
        config, uid=model_uid(task), title=f"modelmon · Model detail · {TASK_TITLES[task]}", kind="model",
        tags=(task,),
        description=f"Quality of one {task} model over time, per version: {', '.join(q.short_title for q in quality)}"
                    f", labels{', confusion matrix' if task in CLASSIFICATION else ''} and canaries. "
                    f"One dashboard per task, so every panel applies to the selected model.",
        sections=sections, variables=[model_variable(config, task), version_variable(config), rc.window_variable(config)],
        annotation_expr=selector("ALERTS", alertstate="firing", model=M), time_from="now-6h", models=names,
        links=(rollout_dashboard_link(),))


def build(ctx: GenerationContext) -> list[dict[str, Any]]:
    """One model-detail dashboard per task the configured models have (see ``base.model_uid``)."""
    return [build_task(ctx, task) for task in tasks_of(ctx.config)]
