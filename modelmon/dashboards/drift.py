"""Drift: per-feature PSI/JS worst first, statistical tests, missing values, output drift,
domain classifier and outliers for one model (``$model``, thresholds as in model_detail)."""
from __future__ import annotations

from typing import Any

from modelmon.config import Config
from modelmon.contract import DRIFT_UID
from modelmon.dashboards import thresholds as th
from modelmon.dashboards.base import build_dashboard, factory, feature_variable, model_variable
from modelmon.dashboards.catalog import BY_KEY, Quantity, threshold
from modelmon.dashboards.panels import Cell, PanelFactory, Query
from modelmon.generation import GenerationContext
from modelmon.promql import Regex, selector

M = "$model"
F = Regex("$feature")
BY_FEATURE = "{{model}}/{{feature}}"


def _overrides(config: Config, q: Quantity) -> list[dict[str, Any]]:
    def steps(m):
        t = threshold(q, m)
        return th.threshold_steps(t) if t else None

    return th.per_model_overrides(config.models, steps)


def _feature_models(config: Config, kind: str) -> list[str]:
    """Models that have at least one numeric (KS test) or categorical (chi² test) feature."""
    attr = "numeric_features" if kind == "numeric" else "categorical_features"
    return [m.name for m in config.models if getattr(m, attr)]


def _worst_first(config: Config, f: PanelFactory) -> list[Cell]:
    psi = BY_KEY["psi"]
    table_columns = [("A", "psi", "PSI"), ("B", "js_distance", "JS distance"), ("C", "ks_pvalue", "KS p-value"),
                     ("D", "chi2_pvalue", "χ² p-value"), ("E", "missing_ratio", "Missing ratio")]
    return [
        f.bargauge(
            "Feature PSI, worst first",
            "Population stability index of each feature over the drift window against the reference, "
            "largest first. Colours come from the selected model's psi thresholds in modelmon.yaml "
            "(rule of thumb: 0.1 moderate, 0.25 large shift). Appears once the drift window holds "
            "min_drift_samples records.",
            [Query(f"sort_desc({f.sel(psi.metric, model=M, feature=F)})", legend=BY_FEATURE, instant=True)],
            unit="short", overrides=_overrides(config, psi), w=10, h=10),
        f.table(
            "Drift by feature, worst first",
            "All per-feature drift scores at once, sorted by PSI: JS distance (0 same, 1 disjoint), "
            "KS p-value for numeric and χ² p-value for categorical features (small: the distributions "
            "differ), and the share of missing values.",
            [Query(f.sel(BY_KEY[key].metric, model=M, feature=F), instant=True, format="table", ref=ref)
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
    return f.timeseries(
        f"{q.short_title} over time",
        f"{q.short_title}: {q.meaning}. One line per feature; dashed thresholds from modelmon.yaml for the "
        f"selected model where it sets {key}.",
        [Query(f.sel(q.metric, model=M, feature=F), legend=BY_FEATURE)],
        unit=q.unit, overrides=_overrides(config, q), log_scale=log_scale, w=w, h=8, models=models)


def _output_and_multivariate(config: Config, f: PanelFactory) -> list[Cell]:
    classification = [m.name for m in config.models if m.is_classification]
    multivariate = [m.name for m in config.models] if config.exporter.multivariate_enabled else []
    interval = config.exporter.multivariate_interval_seconds
    panels = [
        f.heatmap(
            "Prediction score distribution",
            "How the model's scores are spread over time (binary: positive-class probability; "
            "multiclass: top-class probability). A shifting band means the output distribution changed, "
            "often before labels confirm a quality drop. Classification models only.",
            [Query(f"sum by (le) (increase({f.sel('modelmon_prediction_score_bucket', model=M)}[$__rate_interval]))",
                   legend="{{le}}", format="heatmap")],
            unit="short", w=12, h=8, models=classification),
    ]
    for key, w, background in (("prediction_psi", 12, False), ("drift_classifier_auc", 8, True),
                               ("outlier_ratio", 8, True)):
        q = BY_KEY[key]
        worker = " Refitted by the exporter's background worker." if background else ""
        panels.append(f.timeseries(
            q.short_title,
            f"{q.short_title}: {q.meaning}. Dashed thresholds from modelmon.yaml for the selected model.{worker}",
            [Query(f.sel(q.metric, model=M), legend="{{model}}")],
            unit=q.unit, overrides=_overrides(config, q), w=w, h=8, models=multivariate if background else None))
    panels += [
        f.stat(
            "Drift window records",
            "Records in the drift window. Orange below the model's min_drift_samples from modelmon.yaml: "
            "until then the exporter publishes no drift numbers.",
            [Query(f.sel("modelmon_drift_window_records", model=M), legend="{{model}}")], unit="short",
            overrides=th.per_model_overrides(config.models, lambda m: th.min_count_steps(m.min_drift_samples)),
            w=4, h=8),
        f.stat(
            "Multivariate check age",
            f"Seconds since the domain classifier and IsolationForest last ran. Orange beyond three "
            f"refit intervals ({3 * interval:g}s, exporter.multivariate.interval): the worker is stuck or slow.",
            [Query(f"time() - {f.sel('modelmon_multivariate_last_run_timestamp_seconds', model=M)}",
                   legend="{{model}}")],
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
            _feature_over_time(config, f, "chi2_pvalue", w=8, log_scale=True,
                               models=_feature_models(config, "categorical")),
            _feature_over_time(config, f, "missing_ratio", w=8),
        ]),
        ("Output and multivariate drift · $model", _output_and_multivariate(config, f)),
    ]
    return build_dashboard(
        config, uid=DRIFT_UID, title="modelmon · Drift", kind="drift",
        description="Is the data the model sees still like its reference data? Per feature, per output, jointly.",
        sections=sections, variables=[model_variable(config), feature_variable(config)],
        annotation_expr=selector("ALERTS", alertstate="firing", model=M), time_from="now-6h")
