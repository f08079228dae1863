"""The quality and drift quantities the exporter serves, keyed like modelmon.yaml thresholds."""
from __future__ import annotations

from dataclasses import dataclass

from modelmon.config import THRESHOLD_DIRECTIONS, ModelConfig, Threshold

CLASSIFICATION = ("binary", "multiclass")


@dataclass(frozen=True)
class Quantity:
    key: str  # threshold key in modelmon.yaml
    metric: str
    title: str
    unit: str
    tasks: tuple[str, ...]
    meaning: str

    @property
    def direction(self) -> str:
        return THRESHOLD_DIRECTIONS[self.key]

    @property
    def worst(self) -> str:
        """PromQL aggregation that picks the worst series (the lowest accuracy, the highest PSI)."""
        return "min" if self.direction == "below" else "max"

    def applies_to(self, m: ModelConfig) -> bool:
        return m.task in self.tasks

    def threshold(self, m: ModelConfig) -> Threshold | None:
        return m.thresholds.get(self.key)


QUALITY = (
    Quantity("accuracy", "modelmon_accuracy_ratio", "Accuracy", "percentunit", CLASSIFICATION,
             "share of labelled predictions that were right"),
    Quantity("precision", "modelmon_precision_ratio", "Precision", "percentunit", CLASSIFICATION,
             "binary: of the predicted positives, the share that were positive; multiclass: macro average"),
    Quantity("recall", "modelmon_recall_ratio", "Recall", "percentunit", CLASSIFICATION,
             "binary: of the actual positives, the share that were found; multiclass: macro average"),
    Quantity("f1", "modelmon_f1_ratio", "F1", "percentunit", CLASSIFICATION,
             "harmonic mean of precision and recall (macro for multiclass)"),
    Quantity("roc_auc", "modelmon_roc_auc_ratio", "ROC AUC", "short", CLASSIFICATION,
             "ranking quality of the scores, 0.5 is a coin flip"),
    Quantity("log_loss", "modelmon_log_loss", "Log loss", "short", CLASSIFICATION,
             "cross-entropy of the predicted probabilities, lower is better"),
    Quantity("brier_score", "modelmon_brier_score", "Brier score", "short", ("binary",),
             "mean squared error of the positive-class probability, lower is better"),
    Quantity("mae", "modelmon_mae", "MAE", "short", ("regression",),
             "mean absolute error, in the unit of the target"),
    Quantity("rmse", "modelmon_rmse", "RMSE", "short", ("regression",),
             "root mean squared error, in the unit of the target; weighs large misses more than MAE"),
    Quantity("r2", "modelmon_r2", "R²", "short", ("regression",),
             "share of the target's variance the model explains, 1 is perfect"),
)

ALL_TASKS = ("binary", "multiclass", "regression")

DRIFT = (
    Quantity("psi", "modelmon_feature_psi", "PSI", "short", ALL_TASKS,
             "population stability index of a feature against the reference (0.1 moderate, 0.25 large shift)"),
    Quantity("js_distance", "modelmon_feature_js_distance", "JS distance", "short", ALL_TASKS,
             "Jensen-Shannon distance between reference and recent histograms (0 same, 1 disjoint)"),
    Quantity("ks_pvalue", "modelmon_feature_ks_pvalue", "KS p-value", "short", ALL_TASKS,
             "two-sample Kolmogorov-Smirnov test, numeric features; small means the distributions differ"),
    Quantity("chi2_pvalue", "modelmon_feature_chi2_pvalue", "χ² p-value", "short", ALL_TASKS,
             "chi-squared test of category frequencies, categorical features; small means they differ"),
    Quantity("missing_ratio", "modelmon_feature_missing_ratio", "Missing ratio", "percentunit", ALL_TASKS,
             "share of recent records without a value for the feature"),
    Quantity("prediction_psi", "modelmon_prediction_psi", "Prediction PSI", "short", ALL_TASKS,
             "population stability index of the model's output against the reference"),
    Quantity("drift_classifier_auc", "modelmon_drift_classifier_auc", "Domain-classifier AUC", "short", ALL_TASKS,
             "AUC of a classifier telling reference from recent records; 0.5 means indistinguishable"),
    Quantity("outlier_ratio", "modelmon_outlier_ratio", "Outlier ratio", "percentunit", ALL_TASKS,
             "share of recent records an IsolationForest fitted on the reference calls outliers"),
)

BY_KEY = {q.key: q for q in QUALITY + DRIFT}


def headline_quality(m: ModelConfig) -> list[Quantity]:
    """Quality numbers the overview shows for a model: the thresholded ones, else a default."""
    chosen = [q for q in QUALITY if q.threshold(m) is not None and q.applies_to(m)]
    if chosen:
        return chosen
    return [BY_KEY["accuracy"] if m.is_classification else BY_KEY["mae"]]


def headline_drift(m: ModelConfig) -> list[Quantity]:
    """Drift numbers the overview shows: PSI always, plus every other thresholded one
    except the per-feature p-values/missing ratios (those need the drift dashboard)."""
    per_model = ("psi", "prediction_psi", "drift_classifier_auc", "outlier_ratio")
    return [BY_KEY[k] for k in per_model if k == "psi" or BY_KEY[k].threshold(m) is not None]
