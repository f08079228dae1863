"""The metric contract: every series the exporter exposes and every quality or drift quantity.

This is the ground floor. Config validation (which threshold keys a task accepts, and their
direction), the exporter's collector (family names, types, help and labels), the rule generator
(which metric an alert reads, how its value prints), the dashboards (titles, units) and the
README's metric table all read this module; it imports nothing from modelmon.

Adding a metric is one entry here (a ``Series``, or a ``Quantity`` which carries its series)
plus the collector's code that fills it with values.

Names: ``Series.name`` is the name as Prometheus stores and PromQL queries it, so counters end
in ``_total`` (``modelmon_predictions_total``). prometheus_client's ``CounterMetricFamily`` takes
that same name and strips the suffix for its family name itself. A histogram is named by its
base (``modelmon_prediction_latency_seconds``); the exposition adds ``_bucket``, ``_count`` and
``_sum`` samples.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

PREFIX = "modelmon_"
TASKS = ("binary", "multiclass", "regression")
CLASSIFICATION = ("binary", "multiclass")
ALL_TASKS = TASKS
TYPES = ("counter", "gauge", "histogram")

# The Prometheus job that scrapes the exporter: `up{job=...}` in alerts, dashboards and prometheus.yml.
EXPORTER_JOB = "modelmon"

# Grafana dashboard uids: fixed, because alert annotations, panel links, bookmarks and
# `dashboards push` refer to them.
OVERVIEW_UID = "modelmon-overview"
MODEL_UID = "modelmon-model"  # the prefix: one model-detail dashboard per task (model_uid)
DRIFT_UID = "modelmon-drift"
SERVICE_UID = "modelmon-service"
SELF_UID = "modelmon-self"
ROLLOUT_UID = "modelmon-rollout"  # versions of a model against its baseline; the version alerts link it


def model_uid(task: str) -> str:
    """The model-detail dashboard of models of ``task`` (``modelmon-model-regression``).

    Grafana 10/11 cannot hide a row or panel by a variable's value: a row or panel repeated over
    a variable that has no value is still drawn once (the legacy DashboardModel keeps the source
    row, the Scenes RowRepeaterBehavior adds an explicit placeholder). So the model detail is
    generated once per task, holding only the rows that task's models have, and links (overview,
    alerts' dashboard_url) pick the dashboard by the model's task from modelmon.yaml."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}")
    return f"{MODEL_UID}-{task}"


@dataclass(frozen=True)
class Series:
    """One metric family of the exporter's /metrics."""

    name: str  # as queried: counters with _total, histograms by their base name
    type: str  # counter | gauge | histogram
    help: str  # the HELP line
    labels: tuple[str, ...]
    doc: str  # what it means, for the README's metric table
    tasks: tuple[str, ...] = TASKS  # models of these tasks have samples (the family is always exposed)
    constant: bool = False  # an info-style gauge that is always 1

    def __post_init__(self) -> None:
        if not self.name.startswith(PREFIX):
            raise ValueError(f"{self.name}: series names start with {PREFIX}")
        if self.type not in TYPES:
            raise ValueError(f"{self.name}: type {self.type!r} not in {TYPES}")
        if (self.type == "counter") != self.name.endswith("_total"):
            raise ValueError(f"{self.name}: counters, and only counters, end in _total")

    @property
    def samples(self) -> tuple[str, ...]:
        """Sample names the exposition holds for this family."""
        if self.type == "histogram":
            return tuple(f"{self.name}{s}" for s in ("_bucket", "_count", "_sum"))
        return (self.name,)


# What a quantity measures. Quality quantities are per model and version over the quality window;
# feature drift is per model and feature over the drift window; the others per model.
QUALITY_KIND, FEATURE_DRIFT, PREDICTION_DRIFT, MULTIVARIATE_DRIFT = (
    "quality", "feature_drift", "prediction_drift", "multivariate_drift")
KIND_LABELS = {
    QUALITY_KIND: ("model", "version"),
    FEATURE_DRIFT: ("model", "feature"),
    PREDICTION_DRIFT: ("model", "version"),  # each version's outputs, served and shadow
    MULTIVARIATE_DRIFT: ("model",),
}
_KIND_SCOPE = {
    QUALITY_KIND: "over the quality window",
    FEATURE_DRIFT: "per feature, drift window against the reference",
    PREDICTION_DRIFT: "per version (shadow included), its last drift-window's worth of outputs against the reference",
    MULTIVARIATE_DRIFT: "drift window against the reference, refitted by a background worker",
}
_TASK_SCOPE = {ALL_TASKS: "every model", CLASSIFICATION: "binary and multiclass models"}


@dataclass(frozen=True)
class Quantity:
    """A quality or drift number a model may set thresholds on (``thresholds.<key>`` in modelmon.yaml)."""

    key: str  # threshold key in modelmon.yaml
    series: Series
    kind: str  # quality | feature_drift | prediction_drift | multivariate_drift
    title: str  # in sentences: alert descriptions ("Mean absolute error")
    short_title: str  # in panel titles and legends ("MAE")
    tasks: tuple[str, ...]  # the exporter computes it for models of these tasks, and only those
    direction: str  # "below": a value under the threshold is bad; "above": over it is bad
    unit: str  # Grafana unit
    value_format: str  # Go template pipeline stage for $value in alert descriptions ("" = as is)
    meaning: str  # one line, for dashboards and the README
    # Tasks for which recording rules compute this quantity from additive counters summed over
    # every exporter replica (`recorded`); alerts and dashboards read that form there. Elsewhere
    # the exporter's gauge is the only form: it describes one process's window and does not add up.
    recorded_tasks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.direction not in ("below", "above"):
            raise ValueError(f"{self.key}: direction must be below or above")
        if not set(self.tasks) <= set(TASKS) or not self.tasks:
            raise ValueError(f"{self.key}: tasks must be a non-empty subset of {TASKS}")
        if self.series.tasks != self.tasks or self.series.labels != KIND_LABELS[self.kind]:
            raise ValueError(f"{self.key}: its series disagrees with the quantity")
        if not set(self.recorded_tasks) <= set(self.tasks):
            raise ValueError(f"{self.key}: recorded_tasks must be a subset of tasks")
        if self.recorded_tasks and self.kind == MULTIVARIATE_DRIFT:
            raise ValueError(f"{self.key}: a multivariate statistic has no additive form")

    @property
    def metric(self) -> str:
        return self.series.name

    @property
    def per_feature(self) -> bool:
        return self.kind == FEATURE_DRIFT

    @property
    def pages(self) -> bool:
        """Whether a critical threshold may page. Quality below its critical threshold harms users;
        drift alone does not (covariate drift is often harmless), so drift opens tickets only."""
        return self.kind == QUALITY_KIND

    def applies_to(self, task: str) -> bool:
        return task in self.tasks

    def is_recorded(self, task: str) -> bool:
        """Whether recording rules compute it, summed over replicas, for models of ``task``."""
        return task in self.recorded_tasks

    @property
    def level(self) -> str:
        """The aggregation level of its recorded series: the labels it keeps, joined by `_`."""
        return "_".join(KIND_LABELS[self.kind])

    def recorded(self, window: str) -> str:
        """The recording rule's name over ``window``: `model_version:modelmon_accuracy_ratio:1h`."""
        if not self.recorded_tasks:
            raise ValueError(f"{self.key} has no additive form")
        return recorded_name(self.level, self.metric, window)


def recorded_name(level: str, metric: str, window: str) -> str:
    """`level:metric:operations` (Prometheus' naming of recording rules), the window as operation."""
    return f"{level}:{metric}:{window}"


def _quantity(key: str, metric: str, kind: str, *, title: str, short: str | None = None, tasks: tuple[str, ...],
              direction: str, unit: str, value_format: str, meaning: str, help: str, note: str = "",
              recorded: tuple[str, ...] = ()) -> Quantity:
    """A quantity and its gauge; the README line is its meaning, scope, note and threshold key."""
    models = _TASK_SCOPE.get(tasks) or f"{' and '.join(tasks)} models"
    doc = (f"{meaning} — {_KIND_SCOPE[kind]}{f'; {note}' if note else ''} · threshold `{key}` for {models}, "
           f"{'low' if direction == 'below' else 'high'} is bad")
    series = Series(metric, "gauge", _per_process(help, tasks, recorded), KIND_LABELS[kind], doc, tasks=tasks)
    return Quantity(key=key, series=series, kind=kind, title=title, short_title=short or title, tasks=tasks,
                    direction=direction, unit=unit, value_format=value_format, meaning=meaning,
                    recorded_tasks=recorded)


def _per_process(help: str, tasks: tuple[str, ...], recorded: tuple[str, ...]) -> str:
    """A quantity gauge's help: what it is, then that it describes one exporter process's window
    (two replicas' gauges are two half-truths, neither summed nor averaged), and whether the
    recording rules compute it over every replica from the additive counters."""
    if not recorded:
        where = "no additive form"
    elif set(recorded) == set(tasks):
        where = "the recording rules compute it over all replicas from additive counters"
    else:
        where = f"the recording rules compute it over all replicas for {' and '.join(recorded)} models only"
    return f"{help} Per exporter process, does not add up across replicas ({where})."


_G3, _G4 = 'printf "%.3g"', 'printf "%.4g"'
_MACRO = "binary: positive class; multiclass: macro"

QUALITY: tuple[Quantity, ...] = (
    _quantity("accuracy", "modelmon_accuracy_ratio", QUALITY_KIND, title="Accuracy", tasks=CLASSIFICATION,
              direction="below", unit="percentunit", value_format=_G3,
              meaning="share of labelled predictions that were right",
              recorded=CLASSIFICATION,
              help="Accuracy over the quality window."),
    _quantity("precision", "modelmon_precision_ratio", QUALITY_KIND, title="Precision", tasks=CLASSIFICATION,
              direction="below", unit="percentunit", value_format=_G3,
              meaning="binary: of the predicted positives, the share that were positive; multiclass: macro average",
              recorded=CLASSIFICATION,
              help=f"Precision over the quality window ({_MACRO})."),
    _quantity("recall", "modelmon_recall_ratio", QUALITY_KIND, title="Recall", tasks=CLASSIFICATION,
              direction="below", unit="percentunit", value_format=_G3,
              meaning="binary: of the actual positives, the share that were found; multiclass: macro average",
              recorded=CLASSIFICATION,
              help=f"Recall over the quality window ({_MACRO})."),
    _quantity("f1", "modelmon_f1_ratio", QUALITY_KIND, title="F1 score", short="F1", tasks=CLASSIFICATION,
              direction="below", unit="percentunit", value_format=_G3,
              meaning="harmonic mean of precision and recall (macro for multiclass)",
              recorded=CLASSIFICATION,
              help=f"F1 score over the quality window ({_MACRO})."),
    _quantity("roc_auc", "modelmon_roc_auc_ratio", QUALITY_KIND, title="ROC AUC", tasks=CLASSIFICATION,
              direction="below", unit="short", value_format=_G3,
              meaning="ranking quality of the scores, 0.5 is a coin flip",
              note="needs scores; multiclass: macro one-vs-rest, once every class was labelled",
              recorded=("binary",),
              help="ROC AUC over the quality window (multiclass: macro one-vs-rest)."),
    _quantity("log_loss", "modelmon_log_loss", QUALITY_KIND, title="Log loss", tasks=CLASSIFICATION,
              direction="above", unit="short", value_format=_G3,
              meaning="cross-entropy of the predicted probabilities, lower is better",
              note="needs `score` (binary) or `scores` (multiclass)",
              help="Log loss over the quality window."),
    _quantity("brier_score", "modelmon_brier_score", QUALITY_KIND, title="Brier score", tasks=("binary",),
              direction="above", unit="short", value_format=_G3,
              meaning="mean squared error of the positive-class probability, lower is better",
              note="needs `score`",
              help="Brier score over the quality window (binary)."),
    _quantity("mae", "modelmon_mae", QUALITY_KIND, title="Mean absolute error", short="MAE", tasks=("regression",),
              direction="above", unit="short", value_format=_G4,
              meaning="mean absolute error, in the unit of the target",
              recorded=("regression",),
              help="Mean absolute error over the quality window, in label units."),
    _quantity("rmse", "modelmon_rmse", QUALITY_KIND, title="Root mean squared error", short="RMSE",
              tasks=("regression",), direction="above", unit="short", value_format=_G4,
              meaning="root mean squared error, in the unit of the target; weighs large misses more than MAE",
              recorded=("regression",),
              help="Root mean squared error over the quality window, in label units."),
    _quantity("r2", "modelmon_r2", QUALITY_KIND, title="R2", short="R²", tasks=("regression",),
              direction="below", unit="short", value_format=_G3,
              meaning="share of the target's variance the model explains, 1 is perfect",
              note="from 2 labelled predictions with different labels",
              recorded=("regression",),
              help="Coefficient of determination over the quality window."),
)

DRIFT: tuple[Quantity, ...] = (
    _quantity("psi", "modelmon_feature_psi", FEATURE_DRIFT, title="PSI", tasks=ALL_TASKS,
              direction="above", unit="short", value_format="",
              meaning="population stability index of a feature against the reference (0.1 moderate, 0.25 large shift)",
              note="quantile bins frozen at load with two out-of-range bins; top-K categories plus `__other__`",
              recorded=ALL_TASKS,
              help="Population stability index of the drift window against the reference."),
    _quantity("js_distance", "modelmon_feature_js_distance", FEATURE_DRIFT, title="Jensen-Shannon distance",
              short="JS distance", tasks=ALL_TASKS, direction="above", unit="short", value_format="",
              meaning="Jensen-Shannon distance between reference and recent histograms (0 same, 1 disjoint)",
              note="base 2, same bins as PSI",
              recorded=ALL_TASKS,
              help="Jensen-Shannon distance (base 2) of the drift window against the reference."),
    _quantity("ks_pvalue", "modelmon_feature_ks_pvalue", FEATURE_DRIFT, title="KS test p-value",
              short="KS p-value", tasks=ALL_TASKS, direction="below", unit="short", value_format="",
              meaning="two-sample Kolmogorov-Smirnov test, numeric features; small means the distributions differ",
              help="Two-sample Kolmogorov-Smirnov p-value, numeric features."),
    _quantity("chi2_pvalue", "modelmon_feature_chi2_pvalue", FEATURE_DRIFT, title="Chi-square test p-value",
              short="χ² p-value", tasks=ALL_TASKS, direction="below", unit="short", value_format="",
              meaning="chi-squared test of category frequencies, categorical features; small means they differ",
              help="Chi-square homogeneity p-value, categorical features."),
    _quantity("missing_ratio", "modelmon_feature_missing_ratio", FEATURE_DRIFT, title="Missing-value ratio",
              short="Missing ratio", tasks=ALL_TASKS, direction="above", unit="percentunit", value_format="",
              meaning="share of recent records without a value for the feature",
              recorded=ALL_TASKS,
              help="Share of records in the drift window with the feature missing."),
    _quantity("wasserstein_normed", "modelmon_feature_wasserstein_normed", FEATURE_DRIFT,
              title="Normed Wasserstein distance", short="Wasserstein (normed)", tasks=ALL_TASKS,
              direction="above", unit="short", value_format=_G3,
              meaning="Wasserstein-1 distance between reference and recent values divided by the reference's "
                      "standard deviation (as Evidently norms it), numeric features; 0.1 is Evidently's default threshold",
              note="per exporter process",
              help="Wasserstein distance of the drift window to the reference, divided by the reference's standard "
                   "deviation (numeric features); per exporter process, does not add up across replicas."),
    _quantity("ttest_pvalue", "modelmon_feature_ttest_pvalue", FEATURE_DRIFT, title="Welch t-test p-value",
              short="t-test p-value", tasks=ALL_TASKS, direction="below", unit="short", value_format="",
              meaning="Welch's two-sample t-test of the means, numeric features; small means the mean moved",
              note="per exporter process",
              help="Welch two-sample t-test p-value of the drift window against the reference (numeric features); "
                   "per exporter process, does not add up across replicas."),
    _quantity("prediction_psi", "modelmon_prediction_psi", PREDICTION_DRIFT, title="Prediction PSI",
              tasks=ALL_TASKS, direction="above", unit="short", value_format=_G3,
              meaning="population stability index of the model's output against the reference",
              note="binary: score; multiclass: predicted class; regression: value",
              recorded=ALL_TASKS,
              help="Population stability index of the model output against its reference."),
    _quantity("drift_classifier_auc", "modelmon_drift_classifier_auc", MULTIVARIATE_DRIFT,
              title="Domain-classifier AUC", tasks=ALL_TASKS, direction="above", unit="short", value_format=_G3,
              meaning="AUC of a classifier telling reference from recent records; 0.5 means indistinguishable",
              note="cross-validated",
              help="Cross-validated AUC of a classifier telling reference from recent rows (0.5 = no drift)."),
    _quantity("outlier_ratio", "modelmon_outlier_ratio", MULTIVARIATE_DRIFT, title="Outlier ratio",
              tasks=ALL_TASKS, direction="above", unit="percentunit", value_format="humanizePercentage",
              meaning="share of recent records an IsolationForest fitted on the reference calls outliers",
              note="≈ 0.01 on reference-like data",
              help="Share of recent rows an IsolationForest fit on the reference calls outliers."),
)

# Every thresholded quantity by its modelmon.yaml key, quality first.
QUANTITIES: dict[str, Quantity] = {q.key: q for q in QUALITY + DRIFT}


# Estimated performance (before labels arrive): per quality quantity with an estimator, the gauge
# `modelmon_estimated_<suffix>` {model, version}. Classification: confidence-based performance
# estimation (scores calibrated on the labelled reference); regression: direct loss estimation.
ESTIMATED_KEYS = ("accuracy", "precision", "recall", "f1", "roc_auc", "mae", "rmse")


def _suffix(metric: str) -> str:
    return metric[len(PREFIX):]


def estimated_name(key: str) -> str:
    """`modelmon_estimated_accuracy_ratio` for `accuracy`."""
    return f"{PREFIX}estimated_{_suffix(QUANTITIES[key].metric)}"


def reference_name(key: str) -> str:
    """`modelmon_reference_accuracy_ratio` for `accuracy`: the quality on the labelled reference."""
    return f"{PREFIX}reference_{_suffix(QUANTITIES[key].metric)}"


def quantities_for(task: str) -> tuple[Quantity, ...]:
    """The quantities the exporter computes for a model of ``task``: its allowed threshold keys."""
    return tuple(q for q in QUANTITIES.values() if q.applies_to(task))


def _q(key: str) -> Series:
    return QUANTITIES[key].series


_MV = ("model", "version")

# Label values and bucket bounds the exporter exports and the rules and dashboards query.
MISSING_BIN = "__missing__"  # the `bin` of missing values in modelmon_feature_bin_total / prediction_bin_total
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))  # modelmon_prediction_score, _labeled_score

# Every series of /metrics, in the order of the README's table.
SERIES: tuple[Series, ...] = (
    Series("modelmon_predictions_total", "counter", "Predictions seen in the log.", ("model", "version", "status"),
           "predictions seen (`status` = `ok`/`error`)"),
    Series("modelmon_prediction_latency_seconds", "histogram", "Serving latency reported in the prediction log.",
           _MV, "serving latency from the log; buckets .005 … 10 s plus every `slo.latency_p99_seconds`"),
    Series("modelmon_shadow_predictions_total", "counter",
           "Shadow predictions: made on live traffic but not served; never in modelmon_predictions_total.",
           ("model", "version", "status"),
           "shadow predictions (`\"shadow\": true`), kept out of the served series, the SLO and the drift window"),
    Series("modelmon_shadow_latency_seconds", "histogram", "Latency of shadow predictions reported in the log.",
           _MV, "latency of shadow predictions; buckets as the served latency"),
    Series("modelmon_prediction_score", "histogram",
           "Distribution of the positive-class score (binary) or top-class probability (multiclass).", _MV,
           "binary: positive-class score; multiclass: top-class probability (0.05 buckets)", tasks=CLASSIFICATION),
    Series("modelmon_labels_total", "counter", "Ground-truth labels joined to predictions.", _MV,
           "labels joined to predictions (inline or late)"),
    Series("modelmon_label_delay_seconds", "histogram", "Label arrival time minus prediction time (late labels).",
           ("model",), "late label's `ts` minus its prediction's `ts`"),
    Series("modelmon_labels_unmatched_total", "counter",
           "Labels whose prediction was unknown, already labelled or expired.", ("model",),
           "labels with no waiting prediction"),
    Series("modelmon_predictions_expired_total", "counter", "Predictions that left the join buffer without a label.",
           ("model", "reason"),
           "predictions that left the join buffer unlabelled (`ttl`, `buffer_full`, `replaced`)"),
    Series("modelmon_label_join_pending", "gauge", "Predictions waiting for a late label.", (),
           "predictions waiting for a late label"),
    Series("modelmon_confusion_total", "counter", "Classification outcomes of labelled predictions.",
           ("model", "version", "actual", "predicted", "correct"),
           "classification outcomes (binary and multiclass models); `correct` is `true` where actual = predicted, "
           "so accuracy and per-class precision/recall need no list of classes in PromQL",
           tasks=CLASSIFICATION),
    Series("modelmon_labeled_score", "histogram",
           "Score of labelled predictions by actual class (binary: positive-class score; multiclass: top-class "
           "probability).", ("model", "version", "actual"),
           "the score histogram of labelled predictions split by actual class (buckets as "
           "`modelmon_prediction_score`): binary ROC AUC summed over replicas", tasks=CLASSIFICATION),
    Series("modelmon_regression_labeled_total", "counter", "Labelled regression predictions in the error sums.",
           _MV, "labelled regression predictions: the count behind the error sums", tasks=("regression",)),
    Series("modelmon_regression_absolute_error_total", "counter",
           "Sum of absolute errors abs(prediction - label) of labelled regression predictions.", _MV,
           "sum of absolute errors (MAE = this / labelled)", tasks=("regression",)),
    Series("modelmon_regression_squared_error_total", "counter",
           "Sum of squared errors (prediction - label)^2 of labelled regression predictions.", _MV,
           "sum of squared errors (RMSE = sqrt(this / labelled))", tasks=("regression",)),
    Series("modelmon_regression_label_total", "counter",
           "Sum of the absolute values of the labels, by sign (the sum of labels is positive - negative).",
           ("model", "version", "sign"),
           "sum of abs(label) by `sign` (`positive`, `negative`): two monotone counters whose difference is the sum "
           "of labels, for R²", tasks=("regression",)),
    Series("modelmon_regression_label_squared_total", "counter", "Sum of squared labels.", _MV,
           "sum of squared labels (R² = 1 - squared errors / (this - (sum of labels)² / labelled))",
           tasks=("regression",)),
    *(q.series for q in QUALITY),
    Series("modelmon_version_pairs_total", "counter",
           "Predictions of a version paired, by request id, with the baseline version's prediction.",
           ("model", "version", "baseline"),
           "predictions of `version` paired by request `id` with the `baseline` version's, before any label"),
    Series("modelmon_version_agreements_total", "counter",
           "Paired predictions of a version that predicted the baseline version's class.",
           ("model", "version", "baseline"),
           "of those pairs, the ones where both predicted the same class (agreement = this / pairs)",
           tasks=CLASSIFICATION),
    Series("modelmon_version_abs_difference_total", "counter",
           "Sum over paired predictions of the absolute difference from the baseline prediction.",
           ("model", "version", "baseline"),
           "sum over the pairs of the absolute difference from the baseline's prediction (mean = this / pairs)",
           tasks=("regression",)),
    Series("modelmon_version_quality_delta", "gauge",
           "Quality of a version minus the baseline's (accuracy or mae), paired on shared requests or "
           "unpaired on each version's quality window; per process (a test statistic does not add up).",
           ("model", "version", "baseline", "quantity", "pairing"),
           "`version` minus `baseline`: `accuracy` (classification) or `mae` (regression); `pairing` `paired` "
           "(same requests) or `unpaired` (each version's own quality window)"),
    Series("modelmon_version_quality_pvalue", "gauge",
           "Two-sided p-value of that delta: McNemar (paired accuracy), two-proportion z (unpaired accuracy), "
           "paired t (paired mae), Welch t (unpaired mae).",
           ("model", "version", "baseline", "quantity", "pairing"),
           "p-value of the delta: McNemar, two-proportion z, paired t or Welch t"),
    Series("modelmon_version_comparison_samples", "gauge",
           "Labelled requests behind a version comparison: pairs, or the smaller of both quality windows.",
           ("model", "version", "baseline", "pairing"),
           "pairs (paired) or the smaller of the two labelled windows (unpaired) behind the test"),
    Series("modelmon_version_feature_drift", "gauge",
           "Per-feature drift of one served version's inputs against the reference, while several versions serve.",
           ("model", "version", "feature", "statistic"),
           "while several versions serve (a canary, an A/B test): each version's own drift window against the "
           "reference, per feature; `statistic` `psi`, `js_distance`, `ks_pvalue`, `chi2_pvalue`, `missing_ratio` "
           "(as the model-level gauges); within the version budget"),
    Series("modelmon_version_baseline_info", "gauge",
           "The version other versions are compared with; source is config or traffic.",
           ("model", "version", "source"),
           "the baseline: `baseline_version` from the config, else the served version with the most traffic",
           constant=True),
    Series("modelmon_window_labeled", "gauge", "Labelled predictions inside the quality window.", _MV,
           "labelled predictions inside the quality window"),
    *(Series(reference_name(q.key), "gauge", f"{q.title} of the model on its labelled reference data.",
             ("model",), f"{q.meaning}, on the labelled reference (the training baseline; needs a `label` column "
                         f"in the reference file)", tasks=q.tasks) for q in QUALITY),
    Series("modelmon_reference_labeled", "gauge", "Labelled rows of the reference data.", ("model",),
           "labelled rows of the reference: what the reference quality and the estimators are fitted on"),
    *(Series(estimated_name(k), "gauge",
             f"Estimated {QUANTITIES[k].title.lower() if k not in ('roc_auc', 'mae', 'rmse') else QUANTITIES[k].short_title} "
             "over the quality window's predictions, labelled or not, without labels; per exporter process.",
             _MV, f"{QUANTITIES[k].meaning}, estimated without labels over the last quality-window's worth of "
                  f"predictions ({'confidence-based: scores calibrated on the labelled reference' if k not in ('mae', 'rmse') else 'direct loss estimation: a model of the error fitted on the labelled reference'})",
             tasks=QUANTITIES[k].tasks if k != "roc_auc" else CLASSIFICATION) for k in ESTIMATED_KEYS),
    Series("modelmon_estimated_stderr", "gauge",
           "Standard error of an estimated quality quantity: the spread of the realized value around the estimate "
           "if the estimator's assumptions hold.", ("model", "version", "quantity"),
           "sampling uncertainty of each estimate (`quantity` = accuracy, precision, …): realized quality should "
           "fall within ±2 of these around the estimate about 95% of the time"),
    Series("modelmon_estimation_labeled_delta", "gauge",
           "Realized minus estimated quality on the labelled predictions of the quality window.",
           ("model", "version", "quantity"),
           "realized minus estimated quality on the same labelled predictions: far beyond its standard error, the "
           "estimator's assumptions broke (concept drift)"),
    Series("modelmon_estimation_labeled_stderr", "gauge",
           "Standard error of the realized-minus-estimated delta on the labelled predictions.",
           ("model", "version", "quantity"), "the standard error of that delta"),
    *(q.series for q in DRIFT if q.kind == FEATURE_DRIFT),
    Series("modelmon_feature_bin_total", "counter",
           "Values of a feature in the drift stream, by reference bin (bins are fixed by the reference).",
           ("model", "feature", "bin"),
           "every served prediction's feature value by bin of the frozen reference: numeric `00` (below the "
           "reference minimum), `01` … (quantile bins), the last above the maximum; categorical the kept "
           "category, `__other__`; both `__missing__`; PSI, JS and missing ratio summed over replicas"),
    Series("modelmon_feature_reference_ratio", "gauge",
           "Share of the reference's non-missing values in each bin (the same on every replica).",
           ("model", "feature", "bin"),
           "the reference's share of non-missing values per bin (no `__missing__` bin); equal on every replica "
           "that loads the same reference"),
    Series("modelmon_prediction_bin_total", "counter",
           "Outputs of each version by reference bin (binary: score, multiclass: predicted class, regression: value).",
           ("model", "version", "bin"),
           "each version's outputs (shadow included) by bin of the reference's outputs, bins as the features'"),
    Series("modelmon_prediction_reference_ratio", "gauge", "Share of the reference's outputs in each bin.",
           ("model", "bin"), "the reference outputs' share per bin (no `__missing__` bin)"),
    _q("prediction_psi"),
    Series("modelmon_drift_window_records", "gauge", "Records in the drift window.", ("model",),
           "predictions in the drift window"),
    _q("drift_classifier_auc"),
    _q("outlier_ratio"),
    Series("modelmon_multivariate_last_run_timestamp_seconds", "gauge",
           "Wall-clock time of the last multivariate drift fit.", ("model",),
           "when the multivariate worker last ran"),
    Series("modelmon_last_record_timestamp_seconds", "gauge", "Event time of the newest prediction record.",
           ("model",), "event time of the newest prediction"),
    Series("modelmon_records_ingested_total", "counter", "Records accepted, by source.", ("source",),
           "records accepted (`file`, `http`, `kserve`, `stream`)"),
    Series("modelmon_ingest_duplicate_batches_total", "counter",
           "POST /ingest batches whose Idempotency-Key was already seen, answered without applying them.",
           ("outcome",),
           "retried batches not applied again: `replayed` (the first answer sent again) or `in_flight` (the "
           "first request still running: 409, retry); per process"),
    Series("modelmon_records_rejected_total", "counter", "Records skipped as bad input, by reason.", ("reason",),
           "bad input, skipped (`invalid_json`, `not_object`, `missing_field`, `bad_type`, `bad_value`, "
           "`bad_timestamp`, `unknown_model`, `oversized_line`, `internal_error`)"),
    Series("modelmon_cardinality_overflow_total", "counter",
           "Records whose label value was folded into __other__ by the cardinality budget.", ("model", "label"),
           "records whose `version`/class label folded into `__other__`"),
    Series("modelmon_label_values_shortened_total", "counter",
           "Label values (version, class) longer than exporter.max_label_value_length, cut to it with a hash suffix.",
           ("model", "label"),
           "`version`/class values longer than `exporter.max_label_value_length`, cut to it with a hash suffix"),
    Series("modelmon_refresh_errors_total", "counter",
           "Failed passes of one model's ingest, refresh (quality, drift) or multivariate fit; other models are "
           "unaffected.", ("model", "stage"),
           "failed `ingest`, `refresh` or `multivariate` passes of one model (logged once a minute with the "
           "traceback; other models unaffected)"),
    # Ways in besides the log file and POST /ingest (issue 14). KServe's inference logger posts each
    # request and response as a CloudEvent; the two halves are joined by `ce-id` into one record.
    Series("modelmon_kserve_events_total", "counter", "KServe inference-logger CloudEvents received, by half.",
           ("inference_service", "type"),
           "CloudEvents from KServe's inference logger per InferenceService of the `kserve:` config and "
           "`type` (`request`, `response`)"),
    Series("modelmon_kserve_events_rejected_total", "counter",
           "KServe CloudEvents refused before joining, by reason.", ("reason",),
           "events refused before the join (`bad_event`: headers missing or invalid; `unknown_service`: no model "
           "binds its InferenceService; `bad_body`: not a KServe v1 or v2 body, or not the shape the binding "
           "expects)"),
    Series("modelmon_kserve_unmatched_total", "counter",
           "KServe request or response events that left the join buffer without their other half.",
           ("inference_service", "type", "reason"),
           "halves that never met the other (`ttl`, `buffer_full`, `duplicate`: a second event of the same half "
           "and `ce-id` replaced it); `type` is the half left alone"),
    Series("modelmon_kserve_join_pending", "gauge", "KServe event halves waiting for the other half.", (),
           "request or response events waiting for the other half"),
    # A Redis Stream consumed as a member of a consumer group. Lag and pending are properties of the
    # group, the same on every replica of it: read them with max by (stream, group), never sum.
    Series("modelmon_stream_entries_total", "counter", "Stream entries read and applied, by stream and group.",
           ("stream", "group"),
           "stream entries this consumer read and applied (valid or not: each entry's record is counted in "
           "`modelmon_records_ingested_total{source=\"stream\"}` or `modelmon_records_rejected_total`)"),
    Series("modelmon_stream_acked_total", "counter", "Stream entries acknowledged after their batch was applied.",
           ("stream", "group"), "entries acknowledged (XACK) after their batch was applied"),
    Series("modelmon_stream_claimed_total", "counter",
           "Pending stream entries taken over: this consumer's own after a restart, or an idle member's.",
           ("stream", "group", "owner"),
           "pending entries re-read: `self` (its own, after a restart) or `other` (an idle member's, XAUTOCLAIM)"),
    Series("modelmon_stream_lag_entries", "gauge",
           "Stream entries not yet delivered to the consumer group (XINFO GROUPS lag).", ("stream", "group"),
           "entries not yet delivered to the group; a property of the group, equal on every member: "
           "`max by (stream, group)`"),
    Series("modelmon_stream_pending_entries", "gauge",
           "Stream entries delivered to the group and not acknowledged (XPENDING).", ("stream", "group"),
           "entries delivered to some member and not acknowledged yet (a dead member's stay until claimed); "
           "`max by (stream, group)`"),
    Series("modelmon_stream_errors_total", "counter", "Failed Redis operations of the stream source.",
           ("stream", "group", "operation"),
           "failed Redis calls (`connect`, `read`, `ack`, `claim`, `info`), each retried with backoff"),
    Series("modelmon_stream_up", "gauge", "1 while the stream source is connected to Redis, else 0.",
           ("stream", "group"), "1 while the stream source reaches Redis, else 0"),
    Series("modelmon_log_lag_bytes", "gauge", "Bytes of the prediction log not read yet.", (),
           "bytes of the log not read yet"),
    Series("modelmon_log_rotations_total", "counter", "Log rotations and truncations detected.", (),
           "rotations and truncations detected"),
    Series("modelmon_log_copies_missed_total", "counter",
           "Truncations of the log (copytruncate) whose rotated copy was not found: the lines not read before the "
           "truncation are lost.", (),
           "copytruncate truncations whose rotated copy was not found: the lines unread at the truncation are lost"),
    Series("modelmon_checkpoint_last_success_timestamp_seconds", "gauge",
           "When the saved windows and pending joins were last current (written, or unchanged since).", (),
           "when the saved windows and pending joins were last current: written, or found unchanged at an idle "
           "interval (absent until the first save)"),
    Series("modelmon_state_write_errors_total", "counter",
           "Failed writes of a state file (offset, checkpoint, references).", ("file",),
           "failed writes of a state file: `offset`, `checkpoint`, `references` (logged once a minute)"),
    # The exporter's own costs. The refresh duration is a gauge because it is a last value (one refresh per
    # model per pass, read as "how long does this model take now"), not a distribution of events; ingest calls
    # and lock holds are many events between scrapes, so they are histograms: additive (sum across instances,
    # rate over any range, `rate(_sum)` is the share of time spent) and no event between two scrapes is lost,
    # where a max-over-interval gauge would be reset by whichever scraper came last.
    Series("modelmon_refresh_duration_seconds", "gauge",
           "Wall duration of the model's last refresh (quality and drift recomputed), failed ones included.",
           ("model",),
           "wall duration of the model's last refresh (quality and drift recomputed, under the exporter lock); a "
           "gauge because it is a last value; a refresh that raised records its duration too (absent until the "
           "first refresh)"),
    Series("modelmon_ingest_batch_duration_seconds", "histogram",
           "Wall duration of one ingest call (parse, lock wait and apply of a batch of records), by source.",
           ("source",),
           "wall duration of one ingest call: parse, wait for the lock, apply the batch (`file`, `http`, `kserve`, "
           "`stream`); "
           "buckets .001 … 10 s"),
    Series("modelmon_ingest_lines_parsed_total", "counter",
           "Log lines parsed, by parser: the columnar fast path, or per line (rejects, multiclass records, a field "
           "whose JSON type changes within a batch).", ("parser",),
           "lines parsed by the `columnar` fast path or `per_line`: rejects, multiclass records, small batches and "
           "lines of a batch that mixes JSON types for one field go per line, at a fraction of the speed"),
    Series("modelmon_lock_hold_seconds", "histogram",
           "How long ingest, refresh, checkpoint and exposition held the exporter lock, per acquisition.",
           ("operation",),
           "how long one `ingest`, `refresh` (all models), `checkpoint` (the archive cut) or `exposition` "
           "(a /metrics render) held the exporter lock; buckets .0001 … 10 s with one at the .01 s target; "
           "`rate(_sum)` is the share of time the lock was held; a render's own hold shows from the next scrape"),
    Series("modelmon_model_info", "gauge", "Models watched, with version, task and team.",
           ("model", "version", "task", "team"), "what is being watched", constant=True),
    Series("modelmon_build_info", "gauge", "modelmon build information.", ("version",), "modelmon version",
           constant=True),
)

SERIES_BY_NAME: dict[str, Series] = {s.name: s for s in SERIES}
if len(SERIES_BY_NAME) != len(SERIES):
    raise ValueError("duplicate series names in the contract")


def series(name: str) -> Series:
    """The contract entry of ``name`` (KeyError names the missing series)."""
    try:
        return SERIES_BY_NAME[name]
    except KeyError:
        raise KeyError(f"{name} is not in modelmon.contract.SERIES") from None


def sample_names() -> set[str]:
    """Every sample name /metrics may hold (histograms with _bucket/_count/_sum)."""
    return {n for s in SERIES for n in s.samples}


# ---------------------------------------------------------------------------- README table

README_TABLE_HEADER = ("| metric | type | labels | meaning |", "|---|---|---|---|")


def readme_table() -> str:
    """The README's metric table, one row per series, from the entries above."""
    rows = list(README_TABLE_HEADER)
    for s in SERIES:
        kind = f"{s.type} (=1)" if s.constant else s.type
        labels = f" {', '.join(s.labels)} " if s.labels else " "
        rows.append(f"| `{s.name}` | {kind} |{labels}| {s.doc} |")
    return "\n".join(rows) + "\n"


# ---------------------------------------------------------------------------- class values


def class_key(v: Any) -> str:
    """Normalise a class value so 1, 1.0, True and "1" compare equal as "1".

    The exporter labels `actual`/`predicted` with these keys and the rule generator writes the
    configured `positive_class`/`classes` through the same function, so both sides agree.
    """
    t = type(v)
    if t is str:
        return v
    if t is bool:
        return "1" if v else "0"
    if t is float and v.is_integer():
        return str(int(v))
    return str(v)


def class_keys(values: Sequence[Any]) -> list[str]:
    """``class_key`` of every value, with fast paths for all-str and all-int columns."""
    types = set(map(type, values))
    if types == {str}:
        return list(values)
    if types == {int}:
        return list(map(str, values))
    return [class_key(v) for v in values]
