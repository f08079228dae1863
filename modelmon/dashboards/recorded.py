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

from modelmon.alerting.additive import PSI_EPS, feature_bins, feature_values, labeled_predictions, prediction_bins
from modelmon.config import Config
from modelmon.contract import Quantity
from modelmon.dashboards.catalog import worst
from modelmon.promql import selector

WINDOW_VARIABLE = "window"
W = "$" + WINDOW_VARIABLE

PER_PROCESS = "per exporter process: does not add up across replicas"
PER_PROCESS_NOTE = (f"This number is {PER_PROCESS} (each exporter computes it over its own window), so the "
                    f"panel shows the worst exporter's value, not a sum.")

# The intermediate recorded series (counts over each window, summed over replicas) are named by
# the rule generator: the min_labeled and min_drift_samples guards, and the feature bins.
__all__ = ["PSI_EPS", "PER_PROCESS", "PER_PROCESS_NOTE", "W", "WINDOW_VARIABLE", "alert_window", "feature_bins",
           "feature_values", "labeled_predictions", "per_process", "prediction_bins", "recorded",
           "window_variable"]


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
