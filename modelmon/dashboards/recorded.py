"""Quality and drift as the dashboards read them: the recorded, replica-summed series where a
quantity has an additive form, the exporter's gauge (one process's window) where it has none.

The recording rules (modelmon.alerting.recording) compute accuracy, precision, recall, F1,
binary ROC AUC, MAE, RMSE, R², PSI, JS distance, missing ratio and prediction PSI from additive
counters summed over every exporter replica, over each window of ``recording.windows`` in
modelmon.yaml, under the contract's names (``Quantity.recorded(window)``:
``model_version:modelmon_accuracy_ratio:1h``). The alerts read ``recording.alert_window``; the
panels read the ``$window`` variable, whose default is that window, so a panel turns red where the
alert fires (the overview, without variables, reads the alert window itself).

The other quantities (KS and χ² p-values, log loss, Brier score, multiclass ROC AUC, the domain
classifier's AUC, the outlier ratio) are per exporter process and do not add up: panels show them
as the worst value over the exporters (``min`` for "low is bad", ``max`` otherwise), never a sum,
and say so in their description (``PER_PROCESS``).

Recording rules aggregate per model over every scrape job, so recorded series carry no job
selector (as the SLO panels' recording rules).
"""
from __future__ import annotations

from typing import Any

from modelmon.config import Config
from modelmon.contract import Quantity, recorded_name
from modelmon.dashboards.catalog import worst
from modelmon.promql import selector

WINDOW_VARIABLE = "window"
W = "$" + WINDOW_VARIABLE

PER_PROCESS = "per exporter process: does not add up across replicas"
PER_PROCESS_NOTE = (f"This number is {PER_PROCESS} (each exporter computes it over its own window), so the "
                    f"panel shows the worst exporter's value, not a sum.")

# The intermediate recorded series of the rule generator (design of issue 11): counts over each
# window, summed over replicas. `level:metric:operation`, the window in the operation.
LABELED_PREDICTIONS = ("model_version", "modelmon_labeled_predictions")  # the min_labeled guard
FEATURE_VALUES = ("model_feature", "modelmon_feature_values")  # the min_drift_samples guard
FEATURE_BINS = ("model_feature_bin", "modelmon_feature_bin")
PREDICTION_BINS = ("model_version_bin", "modelmon_prediction_bin")

# PSI's floor for empty bins (drift.psi, and the recording rules, clamp proportions at it).
PSI_EPS = 1e-4


def _increase(series: tuple[str, str], window: str) -> str:
    level, metric = series
    return recorded_name(level, metric, f"increase{window}")


def labeled_predictions(window: str) -> str:
    return _increase(LABELED_PREDICTIONS, window)


def feature_values(window: str) -> str:
    return _increase(FEATURE_VALUES, window)


def feature_bins(window: str) -> str:
    return _increase(FEATURE_BINS, window)


def prediction_bins(window: str) -> str:
    return _increase(PREDICTION_BINS, window)


def alert_window(config: Config) -> str:
    return config.recording.alert_window


def window_variable(config: Config) -> dict[str, Any]:
    """``$window``: which recorded window the quality and drift panels read, default the alert window."""
    windows = config.recording.windows
    chosen = config.recording.alert_window
    return {
        "name": WINDOW_VARIABLE,
        "label": "Window",
        "type": "custom",
        "query": ",".join(windows),
        "current": {"selected": True, "text": chosen, "value": chosen},
        "options": [{"selected": w == chosen, "text": w, "value": w} for w in windows],
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "skipUrlSync": False,
        "description": (f"The window of the recorded quality and drift series (recording.windows in "
                        f"modelmon.yaml), summed over every exporter replica. The alerts read {chosen}: at "
                        f"{chosen} the thresholds colour a panel exactly where its alert fires."),
    }


def recorded(q: Quantity, window: str = W, *matchers: str, **labels: str) -> str:
    """The recorded series of ``q`` over ``window``: ``model_feature:modelmon_feature_psi:$window{...}``."""
    return selector(q.recorded(window), *matchers, **labels)


def per_process(q: Quantity, by: str, sel: str) -> str:
    """A gauge without an additive form over the exporters: the worst one's value, never a sum."""
    return f"{worst(q)} by ({by}) ({sel})"


def scope(q: Quantity, task: str | None, window: str = W) -> str:
    """A sentence saying where the panel's number comes from."""
    if task is None or q.is_recorded(task):
        return (f"Recorded over {window} from the additive counters, summed over every exporter replica "
                f"({q.recorded(window)}).")
    return PER_PROCESS_NOTE
