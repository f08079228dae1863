"""prometheus_client custom collector: formats the exporter's state, computes nothing.

Every family's name, type, help and labels come from the metric contract (modelmon.contract);
this module only decides the values. A quantity is exposed only for models whose task the
contract lists for it, so the exporter, the config and the generated alerts agree.
"""
from __future__ import annotations

import math
from typing import Iterator

from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily,
                                    Metric)
from prometheus_client.registry import Collector

from modelmon import __version__
from modelmon.contract import (DRIFT, ESTIMATED_KEYS, FEATURE_DRIFT, QUALITY, SERIES, estimated_name, reference_name,
                               series)
from modelmon.exporter.histogram import SCORE_BUCKETS, Histogram
from modelmon.exporter.pipeline import Exporter

_FAMILIES = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily, "histogram": HistogramMetricFamily}
QUALITY_GAUGES = {q.key: q for q in QUALITY}  # snapshot key -> quantity
FEATURE_GAUGES = {q.key: q for q in DRIFT if q.kind == FEATURE_DRIFT}
# Regression sums per (model, version): family -> index in ModelState.regression_sums
REGRESSION_SUMS = {"modelmon_regression_labeled_total": 0, "modelmon_regression_absolute_error_total": 1,
                   "modelmon_regression_squared_error_total": 2, "modelmon_regression_label_squared_total": 5}


# Families of the optional ways in (issue 14), in the contract's order.
SOURCE_SERIES = tuple(s.name for s in SERIES if s.name.startswith(("modelmon_kserve_", "modelmon_stream_")))


def family(name: str) -> Metric:
    """An empty family for the contract's series ``name``."""
    s = series(name)
    return _FAMILIES[s.type](s.name, s.help, labels=list(s.labels))


class ExporterCollector(Collector):
    def __init__(self, exporter: Exporter):
        self.exporter = exporter

    def collect(self) -> Iterator[Metric]:
        ex = self.exporter
        with ex.held("exposition"):  # the hold ends after the last family: it shows from the next scrape
            yield from self._service(ex)
            yield from self._quality(ex)
            yield from self._drift(ex)
            yield from self._self(ex)
            yield from self._costs(ex)
            yield from self._ways_in(ex)

    # ------------------------------------------------------------------ service

    def _service(self, ex: Exporter) -> Iterator[Metric]:
        preds = family("modelmon_predictions_total")
        latency = family("modelmon_prediction_latency_seconds")
        last = family("modelmon_last_record_timestamp_seconds")
        info = family("modelmon_model_info")
        score = family("modelmon_prediction_score")
        shadow = family("modelmon_shadow_predictions_total")
        shadow_latency = family("modelmon_shadow_latency_seconds")
        for name, s in ex.states.items():
            for (version, status), n in sorted(s.predictions_total.items()):
                preds.add_metric([name, version, status], n)
            for version, h in sorted(s.latency.items()):
                latency.add_metric([name, version], h.buckets(), h.sum)
            for (version, status), n in sorted(s.shadow_total.items()):
                shadow.add_metric([name, version, status], n)
            for version, h in sorted(s.shadow_latency.items()):
                shadow_latency.add_metric([name, version], h.buckets(), h.sum)
            if s.last_ts is not None:
                last.add_metric([name], s.last_ts)
            versions = sorted(s.versions.known) or ["unknown"]
            for version in versions:
                info.add_metric([name, version, s.cfg.task, s.cfg.team], 1)
            if s.cfg.task != "regression":
                for version, h in sorted(s.score_hist.items()):
                    score.add_metric([name, version], h.buckets(), h.sum)
        yield from (preds, latency, shadow, shadow_latency, last, info, score)

    # ------------------------------------------------------------------ quality

    def _quality(self, ex: Exporter) -> Iterator[Metric]:
        labels = family("modelmon_labels_total")
        unmatched = family("modelmon_labels_unmatched_total")
        expired = family("modelmon_predictions_expired_total")
        delay = family("modelmon_label_delay_seconds")
        confusion = family("modelmon_confusion_total")
        labeled_score = family("modelmon_labeled_score")
        regression = {name: family(name) for name in REGRESSION_SUMS}
        label_sum = family("modelmon_regression_label_total")
        windowed = family("modelmon_window_labeled")
        gauges = {k: family(q.metric) for k, q in QUALITY_GAUGES.items()}
        for name, s in ex.states.items():
            for version, n in sorted(s.labels_total.items()):
                labels.add_metric([name, version], n)
            unmatched.add_metric([name], s.labels_unmatched)
            for reason in ("ttl", "buffer_full", "replaced"):
                expired.add_metric([name, reason], s.expired.get(reason, 0))
            delay.add_metric([name], s.label_delay.buckets(), s.label_delay.sum)
            for (version, actual, predicted), n in _confusion_cells(s.confusion):
                confusion.add_metric([name, version, actual, predicted, _bool(actual == predicted)], n)
            for (version, actual), h in _score_cells(s.labeled_score):
                labeled_score.add_metric([name, version, actual], h.buckets(), h.sum)
            for version, sums in sorted(s.regression_sums.items()):
                for family_name, i in REGRESSION_SUMS.items():
                    regression[family_name].add_metric([name, version], int(sums[i]) if i == 0 else sums[i])
                label_sum.add_metric([name, version, "positive"], sums[3])
                label_sum.add_metric([name, version, "negative"], sums[4])
            snap = s.snapshot
            for version, n in sorted(snap.window_labeled.items()):
                windowed.add_metric([name, version], n)
            for version, values in sorted(snap.quality.items()):
                for key, value in values.items():
                    q = QUALITY_GAUGES.get(key)
                    if q is not None and q.applies_to(s.cfg.task) and _finite(value):
                        gauges[key].add_metric([name, version], value)
        yield from (labels, unmatched, expired, delay, confusion, labeled_score, *regression.values(), label_sum,
                    windowed)
        yield from gauges.values()
        yield from self._reference(ex)
        yield from self._estimated(ex)
        yield from self._versions(ex)

    def _reference(self, ex: Exporter) -> Iterator[Metric]:
        """The quality on the labelled reference (the training baseline), computed when it loaded."""
        gauges = {q.key: family(reference_name(q.key)) for q in QUALITY}
        labeled = family("modelmon_reference_labeled")
        for name, s in ex.states.items():
            if s.reference is None:
                continue
            labeled.add_metric([name], s.reference.labeled)
            for key, value in sorted(s.reference.quality.items()):
                q = QUALITY_GAUGES.get(key)
                if q is not None and q.applies_to(s.cfg.task) and _finite(value):
                    gauges[key].add_metric([name], value)
        yield from gauges.values()
        yield labeled

    def _estimated(self, ex: Exporter) -> Iterator[Metric]:
        """Estimated quality per version (the estimation worker's last result), with its uncertainty."""
        gauges = {k: family(estimated_name(k)) for k in ESTIMATED_KEYS}
        stderr = family("modelmon_estimated_stderr")
        delta = family("modelmon_estimation_labeled_delta")
        delta_se = family("modelmon_estimation_labeled_stderr")
        for name, s in ex.states.items():
            for version, est in sorted(s.estimation.items()):
                for key in ESTIMATED_KEYS:
                    if _finite(est.values.get(key)):
                        gauges[key].add_metric([name, version], est.values[key])
                    if _finite(est.stderr.get(key)):
                        stderr.add_metric([name, version, key], est.stderr[key])
                    if _finite(est.delta.get(key)):
                        delta.add_metric([name, version, key], est.delta[key])
                    if _finite(est.delta_stderr.get(key)):
                        delta_se.add_metric([name, version, key], est.delta_stderr[key])
        yield from gauges.values()
        yield from (stderr, delta, delta_se)

    def _versions(self, ex: Exporter) -> Iterator[Metric]:
        pairs = family("modelmon_version_pairs_total")
        agreements = family("modelmon_version_agreements_total")
        difference = family("modelmon_version_abs_difference_total")
        delta = family("modelmon_version_quality_delta")
        pvalue = family("modelmon_version_quality_pvalue")
        samples = family("modelmon_version_comparison_samples")
        baseline = family("modelmon_version_baseline_info")
        feature_drift = family("modelmon_version_feature_drift")
        for name, s in ex.states.items():
            for (version, base), n in sorted(s.version_pairs.items()):
                pairs.add_metric([name, version, base], n)
                if s.cfg.task == "regression":
                    difference.add_metric([name, version, base], s.version_abs_difference.get((version, base), 0.0))
                else:
                    agreements.add_metric([name, version, base], s.version_agreements.get((version, base), 0))
            snap = s.snapshot
            if snap.baseline is not None:
                source = "config" if s.cfg.baseline_version is not None else "traffic"
                baseline.add_metric([name, snap.baseline, source], 1)
            for version, features in sorted(snap.version_feature_drift.items()):
                for feature, stats in sorted(features.items()):
                    for statistic, value in stats.items():
                        if _finite(value):
                            feature_drift.add_metric([name, version, feature, statistic], value)
            for (version, quantity, pairing), c in sorted(snap.comparisons.items()):
                if c.samples:
                    samples.add_metric([name, version, snap.baseline, pairing], c.samples)
                if _finite(c.delta):
                    delta.add_metric([name, version, snap.baseline, quantity, pairing], c.delta)
                if _finite(c.pvalue):
                    pvalue.add_metric([name, version, snap.baseline, quantity, pairing], c.pvalue)
        yield from (pairs, agreements, difference, delta, pvalue, samples, baseline, feature_drift)

    # ------------------------------------------------------------------ drift

    def _drift(self, ex: Exporter) -> Iterator[Metric]:
        gauges = {k: family(q.metric) for k, q in FEATURE_GAUGES.items()}
        pred_psi = family("modelmon_prediction_psi")
        window = family("modelmon_drift_window_records")
        auc = family("modelmon_drift_classifier_auc")
        outliers = family("modelmon_outlier_ratio")
        mv_last = family("modelmon_multivariate_last_run_timestamp_seconds")
        feature_bins = family("modelmon_feature_bin_total")
        feature_ratio = family("modelmon_feature_reference_ratio")
        prediction_bins = family("modelmon_prediction_bin_total")
        prediction_ratio = family("modelmon_prediction_reference_ratio")
        for name, s in ex.states.items():
            fb = s.feature_bins
            if fb is not None:
                all_counts = fb.counts
                for feature in sorted(all_counts):
                    labels, counts, ratios = fb.labels[feature], all_counts[feature], fb.ratios[feature]
                    for b, n in zip(labels, counts.tolist()):
                        feature_bins.add_metric([name, feature, b], n)
                    if ratios is not None:  # (a reference without any value of the feature has no shares)
                        for b, r in zip(labels, ratios.tolist()):
                            feature_ratio.add_metric([name, feature, b], r)
            ob = s.output_bins
            if ob is not None:
                for version, counts in sorted(ob.counts.items()):
                    for b, n in zip(ob.labels, counts.tolist()):
                        prediction_bins.add_metric([name, version, b], n)
                if ob.ratios is not None:
                    for b, r in zip(ob.labels, ob.ratios.tolist()):
                        prediction_ratio.add_metric([name, b], r)
            snap = s.snapshot
            window.add_metric([name], snap.drift_window_records)
            for feature, values in sorted(snap.feature_drift.items()):
                for key, value in values.items():
                    if _finite(value):
                        gauges[key].add_metric([name, feature], value)
            for version, value in sorted(snap.prediction_psi.items()):
                if _finite(value):
                    pred_psi.add_metric([name, version], value)
            mv = s.multivariate
            if _finite(mv.get("drift_classifier_auc")):
                auc.add_metric([name], mv["drift_classifier_auc"])
            if _finite(mv.get("outlier_ratio")):
                outliers.add_metric([name], mv["outlier_ratio"])
            if mv.get("last_run"):
                mv_last.add_metric([name], mv["last_run"])
        yield from gauges.values()
        yield from (feature_bins, feature_ratio, pred_psi, prediction_bins, prediction_ratio, window, auc, outliers,
                    mv_last)

    # ------------------------------------------------------------------ the exporter itself

    def _self(self, ex: Exporter) -> Iterator[Metric]:
        ingested = family("modelmon_records_ingested_total")
        for source in sorted(set(ex.ingested) | {"file", "http"}):
            ingested.add_metric([source], ex.ingested.get(source, 0))
        duplicates = family("modelmon_ingest_duplicate_batches_total")
        for outcome in ("replayed", "in_flight"):
            duplicates.add_metric([outcome], ex.duplicate_batches.get(outcome, 0))
        rejected = family("modelmon_records_rejected_total")
        for reason, n in sorted(ex.rejected.items()):
            rejected.add_metric([reason], n)
        overflow = family("modelmon_cardinality_overflow_total")
        shortened = family("modelmon_label_values_shortened_total")
        errors = family("modelmon_refresh_errors_total")
        for name, s in ex.states.items():
            labels = ("version",) if s.cfg.task == "regression" else ("version", "class")
            for label in labels:
                budget = s.versions if label == "version" else s.classes
                overflow.add_metric([name, label], budget.overflow)
                shortened.add_metric([name, label], s.shortened.get(label, 0))
            for stage in ("ingest", "refresh", "multivariate", "estimation"):
                errors.add_metric([name, stage], ex.model_errors.get((name, stage), 0))
        pending = family("modelmon_label_join_pending")
        pending.add_metric([], len(ex.joiner))
        lag = family("modelmon_log_lag_bytes")
        lag.add_metric([], ex.log_lag_bytes)
        rotations = family("modelmon_log_rotations_total")
        rotations.add_metric([], ex.log_rotations)
        missed = family("modelmon_log_copies_missed_total")
        missed.add_metric([], ex.log_copies_missed)
        saved = family("modelmon_checkpoint_last_success_timestamp_seconds")
        if ex.checkpoint_saved_at is not None:
            saved.add_metric([], ex.checkpoint_saved_at)
        write_errors = family("modelmon_state_write_errors_total")
        for file in sorted(set(ex.state_write_errors) | {"offset", "checkpoint", "references"}):
            write_errors.add_metric([file], ex.state_write_errors.get(file, 0))
        build = family("modelmon_build_info")
        build.add_metric([__version__], 1)
        yield from (ingested, duplicates, rejected, overflow, shortened, errors, pending, lag, rotations, missed, saved, write_errors, build)


    def _ways_in(self, ex: Exporter) -> Iterator[Metric]:
        """The KServe joiner's and the stream source's families: always exposed (empty while that
        way in is unused), filled by the sources registered in ``ex.extra_collectors``."""
        families = {name: family(name) for name in SOURCE_SERIES}
        for fill in ex.extra_collectors:
            fill(families)
        yield from families.values()

    def _costs(self, ex: Exporter) -> Iterator[Metric]:
        refresh = family("modelmon_refresh_duration_seconds")
        for name in ex.states:
            if name in ex.refresh_seconds:
                refresh.add_metric([name], ex.refresh_seconds[name])
        ingest = family("modelmon_ingest_batch_duration_seconds")
        for source, h in sorted(ex.ingest_seconds.items()):
            ingest.add_metric([source], h.buckets(), h.sum)
        hold = family("modelmon_lock_hold_seconds")
        for operation, h in sorted(ex.lock_hold.items()):
            hold.add_metric([operation], h.buckets(), h.sum)
        parsed = family("modelmon_ingest_lines_parsed_total")
        stats = ex.columnar.stats
        parsed.add_metric(["columnar"], stats["fast"])
        parsed.add_metric(["per_line"], stats["slow"])
        yield from (refresh, ingest, hold, parsed)


# Confusion cells (and labelled-score histograms) are exported at 0 for every version x actual x
# predicted class seen in the model, up to this many cells per version: a cell born with a value
# > 0 loses that first value to increase(), which would bias the summed accuracy (a rare mistake is
# born late), and a series that exists at 0 costs a line of /metrics.
ZERO_FILLED_CELLS = 400


def _confusion_cells(cells: dict[tuple[str, str, str], int]):
    """(version, actual, predicted), count: every cell of the classes seen as actual and as predicted
    (by any version of the model), 0 where none was counted; sorted."""
    versions = sorted({v for v, _, _ in cells})
    actual = sorted({a for _, a, _ in cells})
    predicted = sorted({p for _, _, p in cells})
    if len(actual) * len(predicted) > ZERO_FILLED_CELLS:
        return sorted(cells.items())
    return [((v, a, p), cells.get((v, a, p), 0)) for v in versions for a in actual for p in predicted]


def _score_cells(hists: dict[tuple[str, str], Histogram]):
    """(version, actual), histogram: every version x actual class seen, empty where none was observed."""
    versions = sorted({v for v, _ in hists})
    actual = sorted({a for _, a in hists})
    if len(actual) > ZERO_FILLED_CELLS:
        return sorted(hists.items())
    empty = Histogram(SCORE_BUCKETS)
    return [((v, a), hists.get((v, a), empty)) for v in versions for a in actual]


def _bool(x: bool) -> str:
    return "true" if x else "false"


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)
