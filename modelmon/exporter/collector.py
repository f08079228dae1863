"""prometheus_client custom collector: formats the exporter's state, computes nothing.

Metric names and labels follow the contract in DESIGN.md; dashboards and rules rely on them.
"""
from __future__ import annotations

import math
from typing import Iterator

from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily,
                                    Metric)
from prometheus_client.registry import Collector

from modelmon import __version__
from modelmon.exporter.pipeline import Exporter

QUALITY_GAUGES = {
    # snapshot key: (metric name, help)
    "accuracy": ("modelmon_accuracy_ratio", "Accuracy over the quality window."),
    "precision": ("modelmon_precision_ratio", "Precision over the quality window (binary: positive class; multiclass: macro)."),
    "recall": ("modelmon_recall_ratio", "Recall over the quality window (binary: positive class; multiclass: macro)."),
    "f1": ("modelmon_f1_ratio", "F1 score over the quality window (binary: positive class; multiclass: macro)."),
    "roc_auc": ("modelmon_roc_auc_ratio", "ROC AUC over the quality window (multiclass: macro one-vs-rest)."),
    "log_loss": ("modelmon_log_loss", "Log loss over the quality window."),
    "brier_score": ("modelmon_brier_score", "Brier score over the quality window (binary)."),
    "mae": ("modelmon_mae", "Mean absolute error over the quality window, in label units."),
    "rmse": ("modelmon_rmse", "Root mean squared error over the quality window, in label units."),
    "r2": ("modelmon_r2", "Coefficient of determination over the quality window."),
}
FEATURE_GAUGES = {
    "psi": ("modelmon_feature_psi", "Population stability index of the drift window against the reference."),
    "js_distance": ("modelmon_feature_js_distance", "Jensen-Shannon distance (base 2) of the drift window against the reference."),
    "ks_pvalue": ("modelmon_feature_ks_pvalue", "Two-sample Kolmogorov-Smirnov p-value, numeric features."),
    "chi2_pvalue": ("modelmon_feature_chi2_pvalue", "Chi-square homogeneity p-value, categorical features."),
    "missing_ratio": ("modelmon_feature_missing_ratio", "Share of records in the drift window with the feature missing."),
}


class ExporterCollector(Collector):
    def __init__(self, exporter: Exporter):
        self.exporter = exporter

    def collect(self) -> Iterator[Metric]:
        ex = self.exporter
        with ex.lock:
            yield from self._service(ex)
            yield from self._quality(ex)
            yield from self._drift(ex)
            yield from self._self(ex)

    # ------------------------------------------------------------------ service

    def _service(self, ex: Exporter) -> Iterator[Metric]:
        preds = CounterMetricFamily("modelmon_predictions", "Predictions seen in the log.",
                                    labels=["model", "version", "status"])
        latency = HistogramMetricFamily("modelmon_prediction_latency_seconds",
                                        "Serving latency reported in the prediction log.",
                                        labels=["model", "version"])
        last = GaugeMetricFamily("modelmon_last_record_timestamp_seconds",
                                 "Event time of the newest prediction record.", labels=["model"])
        info = GaugeMetricFamily("modelmon_model_info", "Models watched, with version, task and team.",
                                 labels=["model", "version", "task", "team"])
        score = HistogramMetricFamily("modelmon_prediction_score",
                                      "Distribution of the positive-class score (binary) or top-class probability (multiclass).",
                                      labels=["model"])
        for name, s in ex.states.items():
            for (version, status), n in sorted(s.predictions_total.items()):
                preds.add_metric([name, version, status], n)
            for version, h in sorted(s.latency.items()):
                latency.add_metric([name, version], h.buckets(), h.sum)
            if s.last_ts is not None:
                last.add_metric([name], s.last_ts)
            versions = sorted(s.versions.known) or ["unknown"]
            for version in versions:
                info.add_metric([name, version, s.cfg.task, s.cfg.team], 1)
            if s.cfg.task != "regression":
                score.add_metric([name], s.score_hist.buckets(), s.score_hist.sum)
        yield from (preds, latency, last, info, score)

    # ------------------------------------------------------------------ quality

    def _quality(self, ex: Exporter) -> Iterator[Metric]:
        labels = CounterMetricFamily("modelmon_labels", "Ground-truth labels joined to predictions.",
                                     labels=["model", "version"])
        unmatched = CounterMetricFamily("modelmon_labels_unmatched",
                                        "Labels whose prediction was unknown, already labelled or expired.",
                                        labels=["model"])
        expired = CounterMetricFamily("modelmon_predictions_expired",
                                      "Predictions that left the join buffer without a label.",
                                      labels=["model", "reason"])
        delay = HistogramMetricFamily("modelmon_label_delay_seconds",
                                      "Label arrival time minus prediction time (late labels).", labels=["model"])
        confusion = CounterMetricFamily("modelmon_confusion", "Classification outcomes of labelled predictions.",
                                        labels=["model", "version", "actual", "predicted"])
        windowed = GaugeMetricFamily("modelmon_window_labeled", "Labelled predictions inside the quality window.",
                                     labels=["model", "version"])
        gauges = {k: GaugeMetricFamily(name, help_, labels=["model", "version"])
                  for k, (name, help_) in QUALITY_GAUGES.items()}
        for name, s in ex.states.items():
            for version, n in sorted(s.labels_total.items()):
                labels.add_metric([name, version], n)
            unmatched.add_metric([name], s.labels_unmatched)
            for reason in ("ttl", "buffer_full", "replaced"):
                expired.add_metric([name, reason], s.expired.get(reason, 0))
            delay.add_metric([name], s.label_delay.buckets(), s.label_delay.sum)
            for (version, actual, predicted), n in sorted(s.confusion.items()):
                confusion.add_metric([name, version, actual, predicted], n)
            snap = s.snapshot
            for version, n in sorted(snap.window_labeled.items()):
                windowed.add_metric([name, version], n)
            for version, values in sorted(snap.quality.items()):
                for key, value in values.items():
                    if key in gauges and _finite(value):
                        gauges[key].add_metric([name, version], value)
        yield from (labels, unmatched, expired, delay, confusion, windowed)
        yield from gauges.values()

    # ------------------------------------------------------------------ drift

    def _drift(self, ex: Exporter) -> Iterator[Metric]:
        gauges = {k: GaugeMetricFamily(name, help_, labels=["model", "feature"])
                  for k, (name, help_) in FEATURE_GAUGES.items()}
        pred_psi = GaugeMetricFamily("modelmon_prediction_psi",
                                     "Population stability index of the model output against its reference.",
                                     labels=["model"])
        window = GaugeMetricFamily("modelmon_drift_window_records", "Records in the drift window.", labels=["model"])
        auc = GaugeMetricFamily("modelmon_drift_classifier_auc",
                                "Cross-validated AUC of a classifier telling reference from recent rows (0.5 = no drift).",
                                labels=["model"])
        outliers = GaugeMetricFamily("modelmon_outlier_ratio",
                                     "Share of recent rows an IsolationForest fit on the reference calls outliers.",
                                     labels=["model"])
        mv_last = GaugeMetricFamily("modelmon_multivariate_last_run_timestamp_seconds",
                                    "Wall-clock time of the last multivariate drift fit.", labels=["model"])
        for name, s in ex.states.items():
            snap = s.snapshot
            window.add_metric([name], snap.drift_window_records)
            for feature, values in sorted(snap.feature_drift.items()):
                for key, value in values.items():
                    if _finite(value):
                        gauges[key].add_metric([name, feature], value)
            if _finite(snap.prediction_psi):
                pred_psi.add_metric([name], snap.prediction_psi)
            mv = s.multivariate
            if _finite(mv.get("drift_classifier_auc")):
                auc.add_metric([name], mv["drift_classifier_auc"])
            if _finite(mv.get("outlier_ratio")):
                outliers.add_metric([name], mv["outlier_ratio"])
            if mv.get("last_run"):
                mv_last.add_metric([name], mv["last_run"])
        yield from gauges.values()
        yield from (pred_psi, window, auc, outliers, mv_last)

    # ------------------------------------------------------------------ the exporter itself

    def _self(self, ex: Exporter) -> Iterator[Metric]:
        ingested = CounterMetricFamily("modelmon_records_ingested", "Records accepted, by source.", labels=["source"])
        for source in sorted(set(ex.ingested) | {"file", "http"}):
            ingested.add_metric([source], ex.ingested.get(source, 0))
        rejected = CounterMetricFamily("modelmon_records_rejected", "Records skipped as bad input, by reason.",
                                       labels=["reason"])
        for reason, n in sorted(ex.rejected.items()):
            rejected.add_metric([reason], n)
        overflow = CounterMetricFamily("modelmon_cardinality_overflow",
                                       "Records whose label value was folded into __other__ by the cardinality budget.",
                                       labels=["model", "label"])
        shortened = CounterMetricFamily("modelmon_label_values_shortened",
                                        "Label values (version, class) longer than exporter.max_label_value_length, "
                                        "cut to it with a hash suffix.", labels=["model", "label"])
        errors = CounterMetricFamily("modelmon_refresh_errors",
                                     "Failed passes of one model's ingest, refresh (quality, drift) or multivariate "
                                     "fit; other models are unaffected.", labels=["model", "stage"])
        for name, s in ex.states.items():
            labels = ("version",) if s.cfg.task == "regression" else ("version", "class")
            for label in labels:
                budget = s.versions if label == "version" else s.classes
                overflow.add_metric([name, label], budget.overflow)
                shortened.add_metric([name, label], s.shortened.get(label, 0))
            for stage in ("ingest", "refresh", "multivariate"):
                errors.add_metric([name, stage], ex.model_errors.get((name, stage), 0))
        pending = GaugeMetricFamily("modelmon_label_join_pending", "Predictions waiting for a late label.")
        pending.add_metric([], len(ex.joiner))
        lag = GaugeMetricFamily("modelmon_log_lag_bytes", "Bytes of the prediction log not read yet.")
        lag.add_metric([], ex.log_lag_bytes)
        rotations = CounterMetricFamily("modelmon_log_rotations", "Log rotations and truncations detected.")
        rotations.add_metric([], ex.log_rotations)
        missed = CounterMetricFamily("modelmon_log_copies_missed",
                                     "Truncations of the log (copytruncate) whose rotated copy was not found: "
                                     "the lines not read before the truncation are lost.")
        missed.add_metric([], ex.log_copies_missed)
        saved = GaugeMetricFamily(
            "modelmon_checkpoint_last_success_timestamp_seconds",
            "When the saved windows and pending joins were last current (written, or unchanged since).")
        if ex.checkpoint_saved_at is not None:
            saved.add_metric([], ex.checkpoint_saved_at)
        write_errors = CounterMetricFamily("modelmon_state_write_errors",
                                           "Failed writes of a state file (offset, checkpoint, references).",
                                           labels=["file"])
        for file in sorted(set(ex.state_write_errors) | {"offset", "checkpoint", "references"}):
            write_errors.add_metric([file], ex.state_write_errors.get(file, 0))
        build = GaugeMetricFamily("modelmon_build_info", "modelmon build information.", labels=["version"])
        build.add_metric([__version__], 1)
        yield from (ingested, rejected, overflow, shortened, errors, pending, lag, rotations, missed, saved, write_errors, build)


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)
