"""Drift: per-feature PSI/JS worst first, statistical tests, missing values, the bins of a feature
against the reference, output drift, domain classifier and outliers for one model (``$model``,
thresholds as in model_detail).

PSI, JS distance, missing ratio and prediction PSI read the recorded series summed over exporter
replicas over ``$window`` (default the alert window); the KS, χ² and Welch t-test p-values, the
normed Wasserstein distance, the domain classifier and the outlier ratio are per exporter process
(``dashboards.recorded``): the worst exporter's value."""
from __future__ import annotations

from typing import Any

from modelmon.config import Config
from modelmon.contract import ALL_TASKS, DRIFT_UID, MISSING_BIN
from modelmon.dashboards import thresholds as th
from modelmon.dashboards.base import build_dashboard, factory, feature_variable, model_variable
from modelmon.dashboards import recorded as rc
from modelmon.dashboards.catalog import BY_KEY, Quantity, threshold
from modelmon.dashboards.panels import Cell, PanelFactory, Query
from modelmon.generation import GenerationContext
from modelmon.promql import Regex, match, selector

M = "$model"
F = Regex("$feature")
BY_FEATURE = "{{model}}/{{feature}}"
BY_VERSION = "{{model}} {{version}}"
REFERENCE_RATIO = "modelmon_feature_reference_ratio"


def _overrides(config: Config, q: Quantity) -> list[dict[str, Any]]:
    def steps(m):
        t = threshold(q, m)
        return th.threshold_steps(t) if t else None

    return th.per_model_overrides(config.models, steps)


def _feature_models(config: Config, kind: str) -> list[str]:
    """Models that have at least one numeric (KS, t-test, Wasserstein) or categorical (chi² test) feature."""
    attr = "numeric_features" if kind == "numeric" else "categorical_features"
    return [m.name for m in config.models if getattr(m, attr)]


def _recorded_feature(q: Quantity) -> str:
    return rc.recorded(q, rc.W, model=M, feature=F)


def _per_process_feature(f: PanelFactory, q: Quantity) -> str:
    return rc.per_process(q, "model, feature", f.sel(q.metric, model=M, feature=F))


def _feature_query(f: PanelFactory, q: Quantity) -> str:
    """A per-feature quantity: recorded over $window (summed over replicas), else the worst exporter."""
    return _recorded_feature(q) if q.recorded_tasks == ALL_TASKS else _per_process_feature(f, q)


def _table_query(f: PanelFactory, q: Quantity) -> str:
    if q.recorded_tasks == ALL_TASKS:
        return f"max by (model, feature) ({_recorded_feature(q)})"
    return _per_process_feature(f, q)


RECORDED_NOTE = ("over the last $window of records, summed over every exporter replica (recorded from the "
                 "feature bin counters; the alerts read {alert})")


def _worst_first(config: Config, f: PanelFactory) -> list[Cell]:
    psi = BY_KEY["psi"]
    alert = rc.alert_window(config)
    table_columns = [("A", "psi", "PSI"), ("B", "js_distance", "JS distance"), ("C", "ks_pvalue", "KS p-value"),
                     ("D", "chi2_pvalue", "χ² p-value"), ("E", "missing_ratio", "Missing ratio"),
                     ("F", "wasserstein_normed", "Wasserstein (normed)"), ("G", "ttest_pvalue", "t-test p-value")]
    return [
        f.bargauge(
            "Feature PSI, worst first",
            f"Population stability index of each feature {RECORDED_NOTE.format(alert=alert)}, largest first. "
            f"Colours come from the selected model's psi thresholds in modelmon.yaml (rule of thumb: 0.1 "
            f"moderate, 0.25 large shift). Appears once the window holds a record.",
            [Query(f"sort_desc({_recorded_feature(psi)})", legend=BY_FEATURE, instant=True)],
            unit="short", overrides=_overrides(config, psi), w=10, h=10),
        f.table(
            "Drift by feature, worst first",
            f"All per-feature drift scores at once, sorted by PSI. PSI, JS distance (0 same, 1 disjoint) and "
            f"the share of missing values {RECORDED_NOTE.format(alert=alert)}. KS p-value for numeric and "
            f"χ² p-value for categorical features (small: the distributions differ), and for numeric features "
            f"the normed Wasserstein distance (how far the values moved, in reference standard deviations; "
            f"Evidently's default threshold 0.1) and the Welch t-test p-value (small: the mean moved) are "
            f"{rc.PER_PROCESS} (each exporter tests its own drift window): the smallest p-value and the largest "
            f"distance over the exporters.",
            # One frame per column with the same label columns (model, feature), no __name__: merged by feature.
            [Query(_table_query(f, BY_KEY[key]), instant=True, format="table", ref=ref)
             for ref, key, _ in table_columns],
            transformations=[
                {"id": "merge", "options": {}},
                {"id": "organize", "options": {
                    "excludeByName": {"Time": True, "model": True, "__name__": True, "instance": True, "job": True},
                    "indexByName": {"feature": 0, **{title: i + 1 for i, (_, _, title) in enumerate(table_columns)}},
                    "renameByName": {f"Value #{ref}": title for ref, _, title in table_columns}}},
            ],
            overrides=[{"matcher": {"id": "byName", "options": "Missing ratio"},
                        "properties": [{"id": "unit", "value": "percentunit"}]}],
            sort_by="PSI", w=14, h=10),
    ]


def _feature_over_time(config: Config, f: PanelFactory, key: str, *, w: int, log_scale: bool = False,
                       models: list[str] | None = None) -> Cell:
    q = BY_KEY[key]
    if q.recorded_tasks == ALL_TASKS:
        where = f"Recorded {RECORDED_NOTE.format(alert=rc.alert_window(config))}."
    else:
        where = (f"{rc.PER_PROCESS} (each exporter computes it over its own drift window): the worst "
                 f"exporter's value.")
    return f.timeseries(
        f"{q.short_title} over time",
        f"{q.short_title}: {q.meaning}. One line per feature. {where} Dashed thresholds from modelmon.yaml for "
        f"the selected model where it sets {key}.",
        [Query(_feature_query(f, q), legend=BY_FEATURE)],
        unit=q.unit, overrides=_overrides(config, q), log_scale=log_scale, w=w, h=8, models=models)


def bin_shares(f: PanelFactory, window: str = rc.W) -> tuple[str, str, str]:
    """(recent share, reference share, PSI term) per (model, feature, bin) of the selected features.

    Recent: each non-missing bin's share of the feature's values over ``window``, summed over
    replicas (PSI leaves missing values out; the missing ratio counts them). Reference: the
    reference's share (the same on every replica that loads the same reference, so ``max``). PSI
    term: (q - p)·ln(q/p) with both floored at PSI_EPS as drift.psi floors them; the terms of a
    feature add up to its recorded PSI."""
    bins = selector(rc.feature_bins(window), match("bin", MISSING_BIN, "!="), model=M, feature=F)
    recent = f"{bins} / on (model, feature) group_left sum by (model, feature) ({bins})"
    reference = f"max by (model, feature, bin) ({f.sel(REFERENCE_RATIO, model=M, feature=F)})"
    q, p = f"clamp_min({recent}, {rc.PSI_EPS:g})", f"clamp_min({reference}, {rc.PSI_EPS:g})"
    term = f"({q} - on (model, feature, bin) {p}) * on (model, feature, bin) ln({q} / on (model, feature, bin) {p})"
    return recent, reference, term


def _bins_panel(config: Config, f: PanelFactory) -> Cell:
    recent, reference, term = bin_shares(f)
    columns = [("A", "recent share", "percentunit"), ("B", "reference share", "percentunit"),
               ("C", "PSI term", "short")]
    alert = rc.alert_window(config)
    return f.table(
        "Bin shares: recent against the reference",
        f"Pick a feature ($feature) to see why it drifts: per bin of the frozen reference, the share of the "
        f"feature's values {RECORDED_NOTE.format(alert=alert)}, next to the reference's share, and the bin's "
        f"PSI term (q - p)·ln(q/p) (shares floored at {rc.PSI_EPS:g}, as PSI does; a feature's terms add up "
        f"to its PSI). Numeric bins: 00 below the reference minimum, then the quantile bins, the last above "
        f"the maximum; categorical: the kept categories and __other__. Missing values are left out of the "
        f"shares (see Missing ratio). Sorted by PSI term: the bins that drive the drift first.",
        [Query(recent, instant=True, format="table", ref="A"),
         Query(reference, instant=True, format="table", ref="B"),
         Query(term, instant=True, format="table", ref="C")],
        transformations=[
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {
                "excludeByName": {"Time": True, "model": True, "__name__": True},
                "indexByName": {"feature": 0, "bin": 1, **{name: i + 2 for i, (_, name, _) in enumerate(columns)}},
                "renameByName": {f"Value #{ref}": name for ref, name, _ in columns}}},
        ],
        overrides=[
            *({"matcher": {"id": "byName", "options": name}, "properties": [
                {"id": "unit", "value": unit}, {"id": "min", "value": 0}, {"id": "max", "value": 1},
                {"id": "custom.cellOptions", "value": {"type": "gauge", "mode": "basic"}}]}
              for _, name, unit in columns[:2]),
            {"matcher": {"id": "byName", "options": "PSI term"}, "properties": [
                {"id": "unit", "value": "short"}, {"id": "decimals", "value": 4}]},
        ],
        sort_by="PSI term", w=24, h=10)


def _output_and_multivariate(config: Config, f: PanelFactory) -> list[Cell]:
    classification = [m.name for m in config.models if m.is_classification]
    multivariate = [m.name for m in config.models] if config.exporter.multivariate_enabled else []
    interval = config.exporter.multivariate_interval_seconds
    prediction_psi = BY_KEY["prediction_psi"]
    panels = [
        f.heatmap(
            "Prediction score distribution",
            "How the model's scores are spread over time (binary: positive-class probability; "
            "multiclass: top-class probability). A shifting band means the output distribution changed, "
            "often before labels confirm a quality drop. Classification models only.",
            [Query(f"sum by (le) (increase({f.sel('modelmon_prediction_score_bucket', model=M)}[$__rate_interval]))",
                   legend="{{le}}", format="heatmap")],
            unit="short", w=12, h=8, models=classification),
        f.timeseries(
            prediction_psi.short_title,
            f"{prediction_psi.short_title}: {prediction_psi.meaning}, one line per version (shadow included). "
            f"Recorded over the last $window of outputs, summed over every exporter replica (from the "
            f"prediction bin counters; the alerts read {rc.alert_window(config)}). Dashed thresholds from "
            f"modelmon.yaml for the selected model.",
            [Query(rc.recorded(prediction_psi, rc.W, model=M), legend=BY_VERSION)],
            unit=prediction_psi.unit, overrides=_overrides(config, prediction_psi), w=12, h=8),
    ]
    for key in ("drift_classifier_auc", "outlier_ratio"):
        q = BY_KEY[key]
        panels.append(f.timeseries(
            q.short_title,
            f"{q.short_title}: {q.meaning}. Refitted by the exporter's background worker on its own drift "
            f"window: {rc.PER_PROCESS}, so the worst exporter's value is shown. Dashed thresholds from "
            f"modelmon.yaml for the selected model.",
            [Query(rc.per_process(q, "model", f.sel(q.metric, model=M)), legend="{{model}}")],
            unit=q.unit, overrides=_overrides(config, q), w=8, h=8, models=multivariate))
    panels += [
        f.stat(
            "Drift samples",
            f"Records per feature over the last $window, summed over every exporter replica (the fewest of any "
            f"feature; at {rc.alert_window(config)}, the default, the count the drift alerts' "
            f"min_drift_samples guard reads), and the records in the smallest exporter drift window (what its "
            f"per-process gauges rest on). Orange below the model's min_drift_samples from modelmon.yaml.",
            [Query(f"min by (model) ({selector(rc.feature_values(rc.W), model=M)})",
                   legend="{{model}} ($window, all exporters)", ref="A"),
             Query(f"min by (model) ({f.sel('modelmon_drift_window_records', model=M)})",
                   legend="{{model}} (one exporter's drift window)", ref="B")],
            unit="short",
            overrides=th.per_model_overrides(config.models, lambda m: th.min_count_steps(m.min_drift_samples)),
            w=4, h=8),
        f.stat(
            "Multivariate check age",
            f"Seconds since the domain classifier and IsolationForest last ran (the longest over the exporters). "
            f"Orange beyond three refit intervals ({3 * interval:g}s, exporter.multivariate.interval): the "
            f"worker is stuck or slow.",
            [Query(f"time() - min by (model) "
                   f"({f.sel('modelmon_multivariate_last_run_timestamp_seconds', model=M)})", legend="{{model}}")],
            unit="s", steps=[th.step(th.GREEN, None), th.step(th.ORANGE, 3 * interval)], w=4, h=8,
            models=multivariate),
    ]
    return panels


def build(ctx: GenerationContext) -> dict[str, Any]:
    config = ctx.config
    f = factory(config)
    sections = [
        ("Feature drift, worst first · $model", _worst_first(config, f)),
        ("Feature drift over time · $model", [
            _feature_over_time(config, f, "psi", w=12),
            _feature_over_time(config, f, "js_distance", w=12),
            _feature_over_time(config, f, "ks_pvalue", w=8, log_scale=True, models=_feature_models(config, "numeric")),
            _feature_over_time(config, f, "ttest_pvalue", w=8, log_scale=True,
                               models=_feature_models(config, "numeric")),
            _feature_over_time(config, f, "wasserstein_normed", w=8, models=_feature_models(config, "numeric")),
            _feature_over_time(config, f, "chi2_pvalue", w=12, log_scale=True,
                               models=_feature_models(config, "categorical")),
            _feature_over_time(config, f, "missing_ratio", w=12),
        ]),
        ("Bins of the selected features · $model", [_bins_panel(config, f)]),
        ("Output and multivariate drift · $model", _output_and_multivariate(config, f)),
    ]
    return build_dashboard(
        config, uid=DRIFT_UID, title="modelmon · Drift", kind="drift",
        description="Is the data the model sees still like its reference data? Per feature, per output, jointly.",
        sections=sections, variables=[model_variable(config), feature_variable(config), rc.window_variable(config)],
        annotation_expr=selector("ALERTS", alertstate="firing", model=M), time_from="now-6h")
