"""The rollout dashboard: versions of one model (shadow, canary, A/B) against its baseline.

One dashboard for every task, not one per task like the model detail: its uid is fixed
(``modelmon-rollout``) because the ModelmonVersionWorse/Better alerts link it for any model, and
most of it is task-free (traffic, shadow traffic, the comparison table, latency and errors).
The few task-specific panels (accuracy and F1, MAE and RMSE; agreement for classifiers, mean
absolute difference for regression) carry the panel metadata ``models`` (the models of their
task) and say in their description which task they show, as the service dashboard's SLO panels
do: for another model they are empty, and the end-to-end test allows exactly that. Panels of
a task no configured model has are left out.

Everything that only exists once a second version runs (shadow series, comparisons, pairs) is
declared ``empty_until``. The baseline itself is exported as soon as the model served a
prediction, so the "Current baseline" panel is expected to have data.

The significance colours (p-value below ``rollout.alpha``, samples below ``rollout.min_samples``)
come from the alerting policy the ModelmonVersionWorse/Better alerts read: a cell turns
coloured at the level at which the alert can fire.
"""
from __future__ import annotations

from typing import Any

from modelmon.config import Config, ModelConfig
from modelmon.contract import CLASSIFICATION
from modelmon.dashboards import thresholds as th
from modelmon.dashboards.base import ROLLOUT_UID, build_dashboard, factory, model_variable
from modelmon.dashboards import recorded as rc
from modelmon.dashboards.catalog import BY_KEY, Quantity, threshold
from modelmon.dashboards.expressions import error_ratio
from modelmon.dashboards.panels import Cell, PanelFactory, Query, merged_columns
from modelmon.generation import GenerationContext
from modelmon.promql import rate, selector

RATE = "$__rate_interval"
RANGE = "$__range"
M = "$model"
BY_VERSION = "{{model}} {{version}}"
VS_BASELINE = "{{model}} {{version}} vs {{baseline}}"

PREDICTIONS = "modelmon_predictions_total"
SHADOW = "modelmon_shadow_predictions_total"
LATENCY = "modelmon_prediction_latency_seconds"
SHADOW_LATENCY = "modelmon_shadow_latency_seconds"
PAIRS = "modelmon_version_pairs_total"
AGREEMENTS = "modelmon_version_agreements_total"
ABS_DIFFERENCE = "modelmon_version_abs_difference_total"
DELTA = "modelmon_version_quality_delta"
PVALUE = "modelmon_version_quality_pvalue"
SAMPLES = "modelmon_version_comparison_samples"
BASELINE = "modelmon_version_baseline_info"
VERSION_FEATURE_DRIFT = "modelmon_version_feature_drift"

# The per-version quality gauges side by side, per task family.
CLASSIFICATION_QUALITY = ("accuracy", "f1")
REGRESSION_QUALITY = ("mae", "rmse")

WHEN_SHADOW = 'a version runs in shadow (records with "shadow": true)'
WHEN_COMPARED = ("a second version (served or shadow) has labelled predictions to compare with the "
                 "baseline's")
WHEN_PAIRED = ("a second version predicts on the same requests (same id) as the baseline: a shadow "
               "version, or both versions logged for one request")

WHEN_SEVERAL_SERVE = "several versions serve the model's traffic (a canary, an A/B test)"
CLASSIFIERS_ONLY = "Classification models only: empty for a regression model."
REGRESSION_ONLY = "Regression models only: empty for a classifier."


def _models(config: Config, classification: bool) -> tuple[ModelConfig, ...]:
    return tuple(m for m in config.models if (m.task in CLASSIFICATION) == classification)


def _names(models: tuple[ModelConfig, ...]) -> list[str]:
    return [m.name for m in models]


def _traffic_row(f: PanelFactory) -> list[Cell]:
    served = f.sel(PREDICTIONS, model=M)
    shadow = f.sel(SHADOW, model=M)
    return [
        f.timeseries(
            "Served traffic share by version",
            "Each version's share of the model's served predictions (shadow predictions are not served and "
            "not counted here): the canary or A/B split as it actually happened.",
            [Query(f"sum by (model, version) ({rate(served, RATE)}) / ignoring (version) group_left "
                   f"sum by (model) ({rate(served, RATE)})", legend=BY_VERSION)],
            unit="percentunit", stack=True, w=8, h=8),
        f.bargauge(
            "Served share over the selected range",
            "Each version's share of the served predictions over the dashboard's whole time range ($__range): "
            "the split a rollout decision rests on. A version with a small share has noisy quality numbers.",
            [Query(f"sum by (model, version) (increase({served}[{RANGE}])) / ignoring (version) group_left "
                   f"sum by (model) (increase({served}[{RANGE}]))", legend=BY_VERSION, instant=True)],
            unit="percentunit", w=4, h=8),
        f.timeseries(
            "Shadow predictions by version",
            "Predictions per second of versions running in shadow: made on live requests but not served, so "
            "they are kept out of the served traffic, the SLO and the latency histogram above.",
            [Query(f"sum by (model, version) ({rate(shadow, RATE)})", legend=BY_VERSION)],
            unit="reqps", w=8, h=8, empty_until=WHEN_SHADOW),
        f.bargauge(
            "Shadow predictions over the selected range",
            "Shadow predictions per version over the dashboard's whole time range ($__range).",
            [Query(f"sum by (model, version) (increase({shadow}[{RANGE}]))", legend=BY_VERSION, instant=True)],
            unit="short", w=4, h=8, empty_until=WHEN_SHADOW),
    ]


def _quality_cells(config: Config, f: PanelFactory, models: tuple[ModelConfig, ...], keys: tuple[str, ...],
                   only: str) -> list[Cell]:
    """Quality per version: every quantity shown here has a recorded form for its task (accuracy and
    F1 for classifiers, MAE and RMSE for regression), read over ``$window`` summed over replicas."""
    cells = []
    quantities: list[Quantity] = [BY_KEY[k] for k in keys]
    for q in quantities:
        assert all(q.is_recorded(m.task) for m in models), q.key
        overrides = th.per_model_overrides(
            models, lambda m, q=q: th.threshold_steps(threshold(q, m)) if threshold(q, m) else None)
        cells.append(f.timeseries(
            f"{q.short_title} by version",
            f"{q.short_title}: {q.meaning}, over the last $window of labelled predictions (served and shadow "
            f"predictions alike) summed over every exporter replica (the recorded {q.recorded('$window')}; the "
            f"alerts read {rc.alert_window(config)}), one line per version: candidates beside the baseline. "
            f"Dashed: the selected model's thresholds from modelmon.yaml. {only}",
            [Query(rc.recorded(q, rc.W, model=M), legend=BY_VERSION)],
            unit=q.unit, overrides=overrides, w=8, h=7, models=_names(models)))
    columns = {chr(ord("A") + i): (f"{q.short_title} (average)", q.unit) for i, q in enumerate(quantities)}
    transformations, overrides = merged_columns(columns)
    cells.append(f.table(
        f"{' and '.join(q.short_title for q in quantities)} over the selected range",
        f"Per version, the recorded {' and '.join(q.short_title for q in quantities)} over $window (summed over "
        f"every exporter replica) averaged over the dashboard's time range ($__range). {only}",
        [Query(f"avg by (version) (avg_over_time({rc.recorded(q, rc.W, model=M)}[{RANGE}]))", instant=True,
               format="table", ref=ref) for ref, q in zip(columns, quantities)],
        transformations=transformations, overrides=overrides, w=8, h=7, models=_names(models)))
    return cells


def _quality_row(config: Config, f: PanelFactory) -> list[Cell]:
    cells: list[Cell] = []
    classifiers, regressors = _models(config, True), _models(config, False)
    if classifiers:
        cells += _quality_cells(config, f, classifiers, CLASSIFICATION_QUALITY, CLASSIFIERS_ONLY)
    if regressors:
        cells += _quality_cells(config, f, regressors, REGRESSION_QUALITY, REGRESSION_ONLY)
    return cells


def _cell_colour(name: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {"matcher": {"id": "byName", "options": name}, "properties": [
        {"id": "thresholds", "value": {"mode": "absolute", "steps": steps}},
        {"id": "color", "value": {"mode": "thresholds"}},
        {"id": "custom.cellOptions", "value": {"type": "color-background"}},
    ]}


def _comparison_row(ctx: GenerationContext, f: PanelFactory) -> list[Cell]:
    alpha, min_samples = ctx.policy.rollout.alpha, ctx.policy.rollout.min_samples
    delta, pvalue, samples = f.sel(DELTA, model=M), f.sel(PVALUE, model=M), f.sel(SAMPLES, model=M)
    keys = "version, baseline, quantity, pairing"
    # The samples gauge has no quantity label (one test per pairing); take it from the delta's
    # series so the three tables merge into one row per (version, baseline, quantity, pairing).
    samples_by_quantity = (f"min by (version, baseline, pairing) ({samples}) * on (version, baseline, pairing) "
                           f"group_left (quantity) group by ({keys}) ({delta})")
    columns = {"A": "delta", "B": "p-value", "C": "samples"}
    return [
        f.table(
            "Current baseline",
            "The version every other version is compared with, and where it comes from: source=config is "
            "baseline_version in modelmon.yaml, source=traffic the served version with the most predictions "
            "over the quality window.",
            [Query(f.sel(BASELINE, model=M), instant=True, format="table")],
            transformations=[{"id": "organize", "options": {
                "excludeByName": {"Time": True, "Value": True, "__name__": True, "job": True}, "indexByName": {
                    "model": 0, "version": 1, "source": 2}, "renameByName": {"version": "baseline"}}}],
            w=6, h=8),
        f.table(
            "Quality delta against the baseline",
            f"Per version, quantity and pairing: delta = candidate minus baseline (accuracy: higher is better, "
            f"so a negative delta is worse; mae: lower is better, a positive delta is worse), its two-sided "
            f"p-value (paired: McNemar or paired t-test on the same requests; unpaired: two-proportion z or "
            f"Welch's t-test on each version's quality window) and the samples behind it. The p-value is "
            f"coloured below alpha = {alpha:g} and samples below min_samples = {min_samples} "
            f"(rollout in the alerting policy): ModelmonVersionWorse/Better fire when both hold for 15 minutes. "
            f"Test statistics of the exporter's current windows, not of the dashboard's time range; across "
            f"exporter replicas the weakest evidence (largest p-value, fewest samples).",
            [Query(f"avg by ({keys}) ({delta})", instant=True, format="table", ref="A"),
             Query(f"max by ({keys}) ({pvalue})", instant=True, format="table", ref="B"),
             Query(samples_by_quantity, instant=True, format="table", ref="C")],
            transformations=[
                {"id": "merge", "options": {}},
                {"id": "organize", "options": {
                    "excludeByName": {"Time": True},
                    "indexByName": {"version": 0, "baseline": 1, "quantity": 2, "pairing": 3, "delta": 4,
                                    "p-value": 5, "samples": 6},
                    "renameByName": {f"Value #{ref}": name for ref, name in columns.items()}}},
            ],
            overrides=[
                {"matcher": {"id": "byName", "options": "delta"},
                 "properties": [{"id": "decimals", "value": 4}]},
                _cell_colour("p-value", [th.step(th.ORANGE, None), th.step("transparent", alpha)]),
                _cell_colour("samples", th.min_count_steps(min_samples)),
            ],
            sort_by="p-value", w=18, h=8, empty_until=WHEN_COMPARED),
        f.timeseries(
            "p-value against the baseline over time",
            f"The comparison p-values over time, log scale. Dashed: alpha = {alpha:g}; below it (with enough "
            f"samples) the delta is significant and ModelmonVersionWorse or Better fires after 15 minutes.",
            [Query(f"max by ({keys}) ({pvalue})", legend="{{version}} {{quantity}} {{pairing}}")],
            unit="short", steps=[th.step(th.ORANGE, None), th.step(th.GREEN, alpha)], log_scale=True,
            w=12, h=8, empty_until=WHEN_COMPARED),
        f.timeseries(
            "Quality delta against the baseline over time",
            "Candidate minus baseline over time, per quantity and pairing (accuracy: below 0 is worse; mae: "
            "above 0 is worse).",
            [Query(f"avg by ({keys}) ({delta})", legend="{{version}} {{quantity}} {{pairing}}")],
            unit="short", w=12, h=8, empty_until=WHEN_COMPARED),
    ]


def _agreement_row(config: Config, f: PanelFactory) -> list[Cell]:
    pairs = f.sel(PAIRS, model=M)
    cells = [
        f.timeseries(
            "Paired predictions by version",
            "Predictions per second of each version paired by request id with the baseline's prediction "
            "for the same request (before any label): what agreement and the paired tests are computed on.",
            [Query(f"sum by (model, version, baseline) ({rate(pairs, RATE)})", legend=VS_BASELINE)],
            unit="reqps", w=8, h=8, empty_until=WHEN_PAIRED),
    ]
    classifiers, regressors = _models(config, True), _models(config, False)
    if classifiers:
        cells += _per_pair(
            f, f.sel(AGREEMENTS, model=M), pairs, _names(classifiers), unit="percentunit", min_value=0,
            title=("Agreement with the baseline", "Agreement over the selected range"),
            description=(f"Share of paired requests on which a version predicted the same class as the baseline, per "
                         f"rate interval. Disagreement is where the versions' quality can differ. {CLASSIFIERS_ONLY}",
                         f"Agreement with the baseline over the dashboard's whole time range ($__range): agreements "
                         f"over pairs. {CLASSIFIERS_ONLY}"))
    if regressors:
        cells += _per_pair(
            f, f.sel(ABS_DIFFERENCE, model=M), pairs, _names(regressors), unit="short", min_value=None,
            title=("Mean absolute difference from the baseline", "Mean absolute difference over the selected range"),
            description=(f"Mean of |prediction - baseline prediction| over paired requests, per rate interval, in the "
                         f"target's unit. {REGRESSION_ONLY}",
                         f"Mean absolute difference from the baseline's prediction over the dashboard's whole time "
                         f"range ($__range). {REGRESSION_ONLY}"))
    return cells


def _per_pair(f: PanelFactory, counter: str, pairs: str, models: list[str], *, unit: str, min_value: float | None,
              title: tuple[str, str], description: tuple[str, str]) -> list[Cell]:
    """A counter per paired request (agreements, absolute differences): over each rate interval and
    over the selected range."""
    def per_pair(window: str, fn: str) -> str:
        return (f"sum by (model, version, baseline) ({rate(counter, window, fn)}) / "
                f"sum by (model, version, baseline) ({rate(pairs, window, fn)})")

    return [
        f.timeseries(title[0], description[0], [Query(per_pair(RATE, "rate"), legend=VS_BASELINE)],
                     unit=unit, w=12, h=8, empty_until=WHEN_PAIRED, models=models),
        f.bargauge(title[1], description[1], [Query(per_pair(RANGE, "increase"), legend=VS_BASELINE, instant=True)],
                   unit=unit, min_value=min_value, w=4, h=8, empty_until=WHEN_PAIRED, models=models),
    ]


def _feature_drift_row(f: PanelFactory) -> list[Cell]:
    psi = f.sel(VERSION_FEATURE_DRIFT, model=M, statistic="psi")
    return [
        f.timeseries(
            "Feature PSI by version",
            "Population stability index of each feature, computed on each served version's own records "
            "against the reference, while several versions serve: a canary or an A/B arm that gets other "
            "traffic than the baseline shows it here (the model-level drift numbers mix all versions). "
            f"{rc.PER_PROCESS_NOTE}",
            [Query(f"max by (model, version, feature) ({psi})", legend="{{version}} {{feature}}")],
            unit="short", w=16, h=8, empty_until=WHEN_SEVERAL_SERVE),
        f.table(
            "Largest feature PSI by version, now",
            "Per served version, its features with the largest PSI against the reference at the last refresh. "
            f"{rc.PER_PROCESS_NOTE}",
            [Query(f"topk(10, max by (model, version, feature) ({psi}))", instant=True, format="table")],
            sort_by="Value", w=8, h=8, empty_until=WHEN_SEVERAL_SERVE),
    ]


def _latency_errors_row(config: Config, f: PanelFactory) -> list[Cell]:
    served = f.sel(f"{LATENCY}_bucket", model=M)
    shadow = f.sel(f"{SHADOW_LATENCY}_bucket", model=M)
    slo = th.per_model_overrides(config.models, th.latency_steps)

    def p99(buckets: str, window: str = RATE, fn: str = "rate", by: str = "model, version") -> str:
        return f"histogram_quantile(0.99, sum by ({by}, le) ({rate(buckets, window, fn)}))"

    return [
        f.timeseries(
            "p99 latency by version, served",
            "99th percentile serving latency per served version. Dashed: the model's latency_p99_seconds SLO.",
            [Query(p99(served), legend=BY_VERSION)], unit="s", overrides=slo, w=6, h=8),
        f.timeseries(
            "p99 latency by version, shadow",
            "99th percentile latency of the shadow versions' predictions (same buckets as the served latency). "
            "Dashed: the model's latency_p99_seconds SLO, which a version must meet before it serves.",
            [Query(p99(shadow), legend=BY_VERSION)], unit="s", overrides=slo, w=6, h=8, empty_until=WHEN_SHADOW),
        f.timeseries(
            "Error ratio by version, served",
            'Share of served predictions per version with status="error" (0 while a version had none).',
            [Query(error_ratio("model, version", job=f.job, model=M), legend=BY_VERSION)],
            unit="percentunit", w=6, h=8),
        f.timeseries(
            "Error ratio by version, shadow",
            'Share of shadow predictions per version with status="error" (0 while a version had none).',
            [Query(error_ratio("model, version", job=f.job, model=M, metric=SHADOW), legend=BY_VERSION)],
            unit="percentunit", w=6, h=8, empty_until=WHEN_SHADOW),
        f.table(
            "Served versions over the selected range",
            "Per served version over the dashboard's time range ($__range): predictions, error ratio and p99 "
            "latency from the counters' increase over the range.",
            [Query(f"sum by (version) (increase({f.sel(PREDICTIONS, model=M)}[{RANGE}]))", instant=True,
                   format="table", ref="A"),
             Query(error_ratio("version", job=f.job, model=M, window=RANGE, fn="increase"), instant=True,
                   format="table", ref="B"),
             Query(p99(served, RANGE, "increase", by="version"), instant=True,
                   format="table", ref="C")],
            **_range_table(), sort_by="predictions", w=12, h=7),
        f.table(
            "Shadow versions over the selected range",
            "Per shadow version over the dashboard's time range ($__range): shadow predictions, error ratio "
            "and p99 latency from the counters' increase over the range.",
            [Query(f"sum by (version) (increase({f.sel(SHADOW, model=M)}[{RANGE}]))", instant=True,
                   format="table", ref="A"),
             Query(error_ratio("version", job=f.job, model=M, window=RANGE, fn="increase", metric=SHADOW),
                   instant=True, format="table", ref="B"),
             Query(p99(shadow, RANGE, "increase", by="version"), instant=True,
                   format="table", ref="C")],
            **_range_table(), sort_by="predictions", w=12, h=7, empty_until=WHEN_SHADOW),
    ]


RANGE_COLUMNS = {"A": ("predictions", "short"), "B": ("error ratio", "percentunit"), "C": ("p99 latency", "s")}


def _range_table() -> dict[str, Any]:
    transformations, overrides = merged_columns(RANGE_COLUMNS)
    return {"transformations": transformations, "overrides": overrides}


def build(ctx: GenerationContext) -> dict[str, Any]:
    config = ctx.config
    f = factory(config)
    sections = [
        ("Traffic by version · $model", _traffic_row(f)),
        ("Quality by version · $model", _quality_row(config, f)),
        ("Comparison with the baseline · $model", _comparison_row(ctx, f)),
        ("Agreement with the baseline · $model", _agreement_row(config, f)),
        ("Feature drift by version · $model", _feature_drift_row(f)),
        ("Latency and errors by version · $model", _latency_errors_row(config, f)),
    ]
    return build_dashboard(
        config, uid=ROLLOUT_UID, title="modelmon · rollout", kind="rollout",
        description="Versions of one model side by side during a shadow, canary or A/B rollout: served and shadow "
                    "traffic, quality per version, the significance of each version's difference to the baseline, "
                    "agreement with the baseline, latency and errors.",
        sections=sections, variables=[model_variable(config), rc.window_variable(config)],
        annotation_expr=selector("ALERTS", alertstate="firing", model=M), time_from="now-6h",
        models=[m.name for m in config.models])
