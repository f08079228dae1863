"""Everything modelmon knows about one model: counters, histograms, windows, reference profiles.

Ingest calls `add_predictions` / `add_labelled` with parsed columns; a refresh turns the
windows into a snapshot of gauge values (quality, drift) in three steps: `refresh_inputs`
(under the exporter lock: capture immutable window views, O(chunks)), `compute` (without the
lock: the statistics) and `publish` (under the lock: swap the snapshot in). The collector only
reads counters and the latest snapshot, so a scrape never computes statistics.

Drift is incremental: `compute` brings the model's `DriftTally` (compute-side state, touched only
by the refresh pass) up to date with the drift view, coding only the records appended since the
last refresh and subtracting those dropped since, then derives every statistic from the counts
(see drift_tally.py). Quality windows are recomputed from their records at each refresh.
"""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from modelmon.config import ExporterConfig, ModelConfig
from modelmon.exporter import drift, estimation, quality
from modelmon.exporter.bins import FeatureBins, OutputBins, served_rows
from modelmon.exporter.comparison import Comparison
from modelmon.exporter.versions import PAIRED_WINDOW, PairedOutcomes, RequestBook, Traffic, compare as compare_versions
from modelmon.exporter.drift_tally import DriftTally, feature_stats, mean_stats_of
from modelmon.exporter.estimation import Estimate
from modelmon.exporter.histogram import (LABEL_DELAY_BUCKETS, LATENCY_BUCKETS, SCORE_BUCKETS,
                                         Histogram, LabelBudget, observe_grouped, shorten as shorten_value)
from modelmon.contract import class_key, class_keys
from modelmon.exporter.records import PredictionColumns
from modelmon.exporter.reference import object_array
from modelmon.exporter.windows import SlidingWindow, WindowView, concat, tail_run

PRED = "__prediction__"  # drift-window column holding the model output
PREDICTION_REFERENCE_SIZE = 5000  # predictions frozen as output reference when the file has none
LABELLED_REFERENCE_MAX = 50_000  # labelled reference rows kept for the estimators (a seeded sample past it)


@dataclass
class Snapshot:
    """Gauge values computed at the last refresh (immutable once published)."""

    quality: dict[str, dict[str, float]] = field(default_factory=dict)  # version -> metric -> value
    window_labeled: dict[str, int] = field(default_factory=dict)
    feature_drift: dict[str, dict[str, float]] = field(default_factory=dict)  # feature -> metric -> value
    prediction_psi: dict[str, float] = field(default_factory=dict)  # version -> PSI of its outputs
    drift_window_records: int = 0
    baseline: str | None = None  # the version the others were compared with
    comparisons: dict[tuple[str, str, str], Comparison] = field(default_factory=dict)  # (version, quantity, pairing)
    # version -> feature -> statistic -> value, while several versions serve
    version_feature_drift: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)


@dataclass(frozen=True)
class RefreshInputs:
    """What one refresh computes from, captured under the lock; immutable (see windows.py)."""

    quality: tuple[tuple[str, SlidingWindow, WindowView], ...]  # (version, window, its view)
    drift_records: int
    drift: WindowView | None  # None: no drift this time (no reference, or too few records)
    profiles: dict[str, Any] | None
    prediction: Any  # the output reference profile, or None
    baseline: str | None = None
    paired: dict[str, np.ndarray] = field(default_factory=dict)  # candidate -> (n, 2) paired outcomes
    outputs: tuple[tuple[str, SlidingWindow, WindowView], ...] = ()  # (version, its output window, view)
    output_profile: Any = None  # the output reference the versions' outputs are compared with
    version_drift: tuple[tuple[str, SlidingWindow, WindowView], ...] = ()  # (version, its feature window, view)


class Reference:
    """Frozen reference profiles of a model's inputs and outputs."""

    def __init__(self, model: ModelConfig, columns: dict[str, np.ndarray], exp: ExporterConfig,
                 prediction: np.ndarray | None = None, labelled: dict[str, np.ndarray] | None = None):
        self.profiles: dict[str, Any] = {}
        self.unusable: list[str] = []  # features without a single reference value: no drift for them
        for f in model.numeric_features:
            try:
                self.profiles[f] = drift.NumericProfile.from_values(
                    np.asarray(columns[f], dtype=np.float64), sample_max=exp.reference_sample_max)
            except ValueError:
                self.unusable.append(f)
        for f in model.categorical_features:
            self.profiles[f] = drift.CategoricalProfile.from_values(
                np.asarray(columns[f], dtype=object), top_k=exp.top_k_categories)
        self.size = len(next(iter(columns.values()))) if columns else 0
        self.labeled = 0  # labelled rows (a `label` column): the training baseline and the estimators
        self.quality: dict[str, float] = {}  # quality key -> value on the labelled rows
        self.labels_problem: str | None = None  # why the labels cannot be used (None: fine, or no labels)
        # The labelled rows the estimators fit on (bounded sample): label, prediction, score/proba, features.
        self.fit_rows: dict[str, np.ndarray] | None = None
        if labelled is not None:
            self._set_labelled(model, columns, labelled)
        # A bounded, row-aligned sample for the multivariate worker.
        rng = np.random.default_rng(0)
        take = rng.choice(self.size, size=min(self.size, exp.multivariate_sample_size), replace=False) \
            if self.size else np.array([], dtype=int)
        self.rows = {f: np.asarray(columns[f])[np.sort(take)] for f in model.features}
        self.prediction: Any = None
        if prediction is not None:
            self.set_prediction(model, prediction)

    def _set_labelled(self, model: ModelConfig, columns: dict[str, np.ndarray], labelled: dict[str, np.ndarray]) -> None:
        """Keep the labelled rows (those with a label and the outputs the task needs)."""
        task = model.task
        label = labelled["label"]
        has = ~np.isnan(label) if task == "regression" else np.array([v is not None for v in label], dtype=bool)
        pred = labelled.get("prediction")
        if task == "binary" and pred is None and "score" in labelled:
            positive = class_key(model.positive_class)
            other = next((class_key(c) for c in (model.classes or ()) if class_key(c) != positive), "0")
            pred = object_array(np.where(labelled["score"] >= 0.5, positive, other).tolist())
        if task == "multiclass" and pred is None and "proba" in labelled:
            names = [class_key(c) for c in model.classes or ()]
            pred = object_array([names[i] for i in np.argmax(np.nan_to_num(labelled["proba"], nan=-1), axis=1)])
        if pred is None:
            self.labels_problem = "the reference has labels but no `prediction` column"
            return
        has &= ~np.isnan(pred) if task == "regression" else np.array([v is not None for v in pred], dtype=bool)
        rows = np.flatnonzero(has)
        if rows.size > LABELLED_REFERENCE_MAX:
            rows = np.sort(np.random.default_rng(0).choice(rows, LABELLED_REFERENCE_MAX, replace=False))
        self.labeled = int(has.sum())
        if not rows.size:
            return
        fit = {"label": label[rows], "prediction": pred[rows]}
        for key in ("score", "proba"):
            if key in labelled:
                fit[key] = labelled[key][rows]
        for f in model.features:
            fit["feature:" + f] = np.asarray(columns[f])[rows]
        self.fit_rows = fit

    def set_prediction(self, model: ModelConfig, values: np.ndarray) -> None:
        if model.task == "multiclass":
            self.prediction = drift.CategoricalProfile.from_values(np.asarray(values, dtype=object), top_k=50)
        else:
            self.prediction = drift.NumericProfile.from_values(np.asarray(values, dtype=np.float64))


class ModelState:
    def __init__(self, model: ModelConfig, exp: ExporterConfig, clock: Callable[[], float] = time.time):
        self.cfg = model
        self.exp = exp
        self.versions = LabelBudget(exp.max_versions_per_model, idle_seconds=exp.label_idle_seconds, clock=clock)
        # Configured classes are pinned; learned ones give their slot back when idle.
        self.classes = LabelBudget(exp.max_classes, [class_key(c) for c in (model.classes or ())],
                                   idle_seconds=exp.label_idle_seconds, clock=clock)
        self.shortened: dict[str, int] = defaultdict(int)  # label -> values cut to max_label_value_length
        self.positive = class_key(model.positive_class)
        self.predictions_total: dict[tuple[str, str], int] = defaultdict(int)  # served: (version, status)
        self.latency: dict[str, Histogram] = {}
        self.shadow_total: dict[tuple[str, str], int] = defaultdict(int)  # shadow: (version, status)
        self.shadow_latency: dict[str, Histogram] = {}
        # Versions side by side (versions.py): served traffic per version, requests by id, pairs.
        self.traffic = Traffic(model.quality_window)
        self.predicted = RequestBook()
        self.outcomes = RequestBook()
        self.paired = PairedOutcomes(model.quality_window.count or PAIRED_WINDOW)
        self.version_pairs: dict[tuple[str, str], int] = defaultdict(int)  # (version, baseline)
        self.version_agreements: dict[tuple[str, str], int] = defaultdict(int)
        self.version_abs_difference: dict[tuple[str, str], float] = defaultdict(float)
        self.latency_bounds = LATENCY_BUCKETS
        self.labels_total: dict[str, int] = defaultdict(int)
        self.label_delay = Histogram(LABEL_DELAY_BUCKETS)
        self.confusion: dict[tuple[str, str, str], int] = defaultdict(int)
        # Additive families (counters summed over replicas by the recording rules; in memory only: a
        # restart starts them at 0, which rate()/increase() read as a counter reset).
        self.labeled_score: dict[tuple[str, str], Histogram] = {}  # (version, actual) -> labelled records' scores
        # version -> [labelled, sum |error|, sum error^2, sum |label| of positive labels, of negative ones, sum label^2]
        self.regression_sums: dict[str, np.ndarray] = {}
        self.feature_bins: FeatureBins | None = None  # set with the reference (bins.py)
        self.output_bins: OutputBins | None = None  # set with the output reference
        self.score_hist: dict[str, Histogram] = {}  # version -> scores of its predictions (served and shadow)
        # Version -> its outputs over the drift window, and their drift tally (prediction drift per version)
        self.output_windows: dict[str, SlidingWindow] = {}
        self.output_tallies: dict[str, DriftTally] = {}
        # Version -> its served records' features while several versions serve (a canary, an A/B test)
        self.version_drift_windows: dict[str, SlidingWindow] = {}
        self.version_drift_tallies: dict[str, DriftTally] = {}
        self.last_ts: float | None = None
        self.labels_unmatched = 0
        self.expired: dict[str, int] = defaultdict(int)
        self.quality_windows: dict[str, SlidingWindow] = {}
        self.drift_window = SlidingWindow(model.drift_window)
        self.drift_tally = DriftTally()  # compute-side: only `compute` (one refresh at a time) touches it
        self.reference: Reference | None = None
        self.reference_error: str | None = None
        self._collecting: list[dict[str, np.ndarray]] = []  # reference {first: N} or output reference
        self._collected = 0
        self.snapshot = Snapshot()
        # Called with (model, frozen features or None, frozen outputs) when traffic froze a reference.
        self.on_frozen: Callable[[ModelConfig, dict | None, np.ndarray], None] | None = None
        self.multivariate: dict[str, float] = {}  # drift_classifier_auc, outlier_ratio, last_run
        self.estimation: dict[str, Estimate] = {}  # version -> estimated quality (the estimation worker's)
        # Version -> its predictions over the quality window's span, labelled or not, kept while the
        # reference can be estimated from (`estimation_state` ready); read by the estimation worker.
        self.estimation_windows: dict[str, SlidingWindow] = {}
        self.estimating = False  # set with the reference: whether ingest feeds estimation_windows
        self.dirty = False

    # ------------------------------------------------------------------ ingest

    def add_predictions(self, cols: PredictionColumns, latency_bounds: tuple[float, ...]) -> list[str]:
        """Count a batch of predictions and slide the drift window; returns the folded versions.

        Shadow predictions (predicted, not served) are counted in their own series and stay out of
        the served ones (traffic, errors, latency: the SLO), the drift window, the score histogram
        and a reference frozen from traffic; they are evaluated like any other once labelled."""
        n = len(cols)
        versions = self.versions.fold_many(cols.versions)
        ok = cols.status_ok
        shadow = cols.shadow if cols.shadow is not None and cols.shadow.any() else None
        distinct = set(versions)
        vers = np.asarray(versions, dtype=object) if len(distinct) > 1 else None
        served: dict[str, int] = {}
        roles = [(None, self.predictions_total, self.latency)] if shadow is None else [
            (~shadow, self.predictions_total, self.latency), (shadow, self.shadow_total, self.shadow_latency)]
        for v in distinct:
            in_version = None if vers is None else vers == v
            for role, totals, latencies in roles:
                sel = in_version if role is None else (role if in_version is None else role & in_version)
                total = n if sel is None else int(sel.sum())
                if not total:
                    continue
                good = int(ok.sum()) if sel is None else int((ok & sel).sum())
                if totals is self.predictions_total:
                    served[v] = total
                totals[(v, "ok")] += good
                if total > good:
                    totals[(v, "error")] += total - good
                hist = latencies.get(v)
                if hist is None:
                    hist = latencies[v] = Histogram(latency_bounds)
                hist.observe(cols.latency_s if sel is None else cols.latency_s[sel])
        newest = float(np.max(cols.ts))
        self.last_ts = newest if self.last_ts is None else max(self.last_ts, newest)
        self.traffic.add(served, self.last_ts)

        okall = np.flatnonzero(ok)
        if okall.size == 0:
            self.dirty = True
            return versions
        # Every version's outputs (served and shadow): its score histogram and prediction drift.
        out_all = self._output_values(cols, okall)
        top = cols.scores[okall] if self.cfg.task == "binary" else (
            self._top_probability(cols, okall) if self.cfg.task == "multiclass" else None)
        ok_versions = None if vers is None else vers[okall]
        ok_ts = cols.ts[okall]
        output_bins = self.output_bins  # every output entering an output window, by reference bin
        out_codes = output_bins.code(out_all) if output_bins is not None else None
        estimated = self._estimation_columns(cols, okall, ok_ts, out_all) if self.estimating else None
        for v in distinct:
            sel = slice(None) if ok_versions is None else ok_versions == v
            if ok_versions is not None and not sel.any():
                continue
            self.output_window(v).append({"ts": ok_ts[sel], PRED: out_all[sel]})
            if estimated is not None:
                self.estimation_window(v).append(estimated if ok_versions is None else
                                                 {k: c[sel] for k, c in estimated.items()})
            if out_codes is not None:
                output_bins.add(v, out_codes[sel])
            if top is not None:
                hist = self.score_hist.get(v)
                if hist is None:
                    hist = self.score_hist[v] = Histogram(SCORE_BUCKETS)
                hist.observe(top[sel])
        # The drift window (and a reference frozen from traffic) describe the service: served only.
        served_ok = np.ones(okall.size, dtype=bool) if shadow is None else ~shadow[okall]
        if not served_ok.any():
            self.dirty = True
            return versions
        okidx = okall[served_ok]
        if okidx.size == n:  # every record: the parser's arrays as they are (nothing writes them; windows.py)
            window_cols = {"ts": cols.ts, PRED: out_all, **cols.features}
        else:
            window_cols = {"ts": cols.ts[okidx], PRED: out_all[served_ok]}
            for f, values in cols.features.items():
                window_cols[f] = values[okidx]
        self.drift_window.append(window_cols)
        bins = self.feature_bins  # the records entering the drift window, by reference bin
        if bins is not None:
            pre = cols.binned
            bins.add(pre[1] if pre is not None and pre[0] is bins else
                     bins.count(cols.features, served_rows(ok, shadow), cols.categories))
        self._feed_reference(window_cols)  # a reference frozen now counts from the next batch on
        if len(self.traffic.totals) > 1:  # several versions serve: each one's inputs on their own
            served_versions = None if vers is None else vers[okidx]
            for v in distinct:
                sel = slice(None) if served_versions is None else served_versions == v
                if served_versions is not None and not sel.any():
                    continue
                cols_v = {k: c[sel] for k, c in window_cols.items() if k != PRED}
                self.version_drift_window(v).append(cols_v)
        self.dirty = True
        return versions

    def bin_inputs(self, cols: PredictionColumns):
        """(FeatureBins, bin counts of the batch's records that `add_predictions` will append to the
        drift window), or None. Reads only the batch and the current FeatureBins (replaced, never
        modified, when the reference changes): runs before the exporter lock is taken, and
        `add_predictions` uses the counts if that FeatureBins is still the model's."""
        bins = self.feature_bins
        if bins is None or not len(cols):
            return None
        shadow = cols.shadow if cols.shadow is not None and cols.shadow.any() else None
        rows = served_rows(cols.status_ok, shadow)
        if rows is not None and not rows.any():
            return None
        return bins, bins.count(cols.features, rows, cols.categories)

    def version_drift_window(self, version: str) -> SlidingWindow:
        """The features of one served version's records, kept while several versions serve."""
        win = self.version_drift_windows.get(version)
        if win is None:
            win = self.version_drift_windows[version] = SlidingWindow(self.cfg.drift_window)
        return win

    def output_window(self, version: str) -> SlidingWindow:
        """The outputs of one version (served or shadow), for its prediction drift."""
        win = self.output_windows.get(version)
        if win is None:
            win = self.output_windows[version] = SlidingWindow(self.cfg.drift_window)
        return win

    def _output_values(self, cols: PredictionColumns, okidx: np.ndarray) -> np.ndarray:
        """The model output whose distribution prediction drift compares."""
        if self.cfg.task == "binary":
            scores = cols.scores[okidx]
            if np.isfinite(scores).all():
                return scores  # (the common case needs no list of the predictions)
        preds = [cols.predictions[i] for i in okidx]
        if self.cfg.task == "regression":
            return np.asarray(preds, dtype=np.float64)
        if self.cfg.task == "binary":
            return (np.asarray(class_keys(preds), dtype=object) == self.positive).astype(np.float64)
        return object_array(class_keys(preds))

    def _estimation_columns(self, cols: PredictionColumns, okidx: np.ndarray, ts: np.ndarray,
                            out: np.ndarray) -> dict[str, np.ndarray]:
        """What the estimators need of the batch's ok records, as they are (no per-record work here:
        class keys and probability matrices are made by the estimation worker)."""
        task = self.cfg.task
        if task == "regression":
            return {"ts": ts, "pred": out, **{"feature:" + f: c[okidx] for f, c in cols.features.items()}}
        pred = object_array(cols.predictions)[okidx]
        if task == "binary":
            return {"ts": ts, "score": cols.scores[okidx], "pred": pred}
        return {"ts": ts, "scores": object_array(cols.score_maps)[okidx], "pred": pred}

    def _top_probability(self, cols: PredictionColumns, okidx: np.ndarray) -> np.ndarray:
        maps = [cols.score_maps[i] for i in okidx]
        return np.array([max(m.values()) if m else np.nan for m in maps], dtype=np.float64)

    def add_labelled(self, versions: list[str], preds: list, labels: list, scores: list | np.ndarray,
                     ts: np.ndarray, delays: np.ndarray | None) -> None:
        """Labelled predictions (inline or joined): confusion counters and the quality window.

        `ts` is the prediction's event time: it places the row in a time-based quality window.
        """
        n = len(labels)
        if n == 0:
            return
        versions = self.versions.fold_many(versions)  # a late label keeps its version's slot alive
        distinct = set(versions)
        if len(distinct) == 1:  # the common case, without a pass per row
            self.labels_total[versions[0]] += n
        else:
            for v, k in Counter(versions).items():
                self.labels_total[v] += k
        if delays is not None:
            self.label_delay.observe(delays)
        if self.cfg.task == "regression":
            cols = {"y_true": np.asarray(labels, dtype=np.float64), "y_pred": np.asarray(preds, dtype=np.float64)}
        else:
            actual = self.classes.fold_many(class_keys(labels))
            predicted = self.classes.fold_many(class_keys(preds))
            true_keys, pred_keys = object_array(actual), object_array(predicted)
            self._count_confusion(distinct, versions, actual, predicted, true_keys, pred_keys)
            if self.cfg.task == "binary":
                cols = {"y_true": true_keys == self.positive, "y_pred": pred_keys == self.positive,
                        "score": np.asarray(scores, dtype=np.float64)}
                self._observe_labeled_scores(distinct, versions, actual, cols["score"], cols["y_true"])
            else:
                top = np.array([max(m.values()) if m else np.nan for m in scores], dtype=np.float64)
                self._observe_labeled_scores(distinct, versions, actual, top)
                # Class keys, not codes: a folded "__other__" is a class like any other, and a
                # slot freed later cannot change what an old row means.
                cols = {"y_true": object_array(actual), "y_pred": object_array(predicted),
                        "proba": self._proba_matrix(scores)}
        vers = np.asarray(versions, dtype=object)
        for v in set(versions):
            mask = vers == v
            win = self.quality_windows.get(v)
            if win is None:
                win = self.quality_windows[v] = SlidingWindow(self.cfg.quality_window)
            part = {k: c[mask] for k, c in cols.items()}
            win.append(part | {"ts": ts[mask]})
            if self.cfg.task == "regression":
                self._add_regression_sums(v, part["y_true"], part["y_pred"])
        self.dirty = True

    def _observe_labeled_scores(self, distinct: set, versions: list, actual: list, score: np.ndarray,
                                positive: np.ndarray | None = None) -> None:
        """`modelmon_labeled_score`: the labelled records' scores by (version, actual class), in one
        pass; records without a finite score are left out. `positive`: actual == the positive class
        (binary), which groups the common batch (one version, two classes) without a pass per row."""
        classes = set(actual)
        if len(distinct) == 1 and positive is not None and len(classes) == 2 and self.positive in classes:
            other = next(c for c in classes if c != self.positive)
            keys, group = [(versions[0], other), (versions[0], self.positive)], positive.astype(np.intp)
        elif len(distinct) == 1 and len(classes) == 1:
            keys, group = [(versions[0], actual[0])], np.zeros(len(actual), dtype=np.intp)
        else:
            index: dict[tuple[str, str], int] = {}
            group = np.fromiter((index.setdefault(k, len(index)) for k in zip(versions, actual)), dtype=np.intp,
                                count=len(actual))
            keys = list(index)
        hists = []
        for key in keys:
            hist = self.labeled_score.get(key)
            if hist is None:
                hist = self.labeled_score[key] = Histogram(SCORE_BUCKETS)
            hists.append(hist)
        observe_grouped(hists, group, score)

    def _add_regression_sums(self, version: str, y: np.ndarray, pred: np.ndarray) -> None:
        """The regression error and label sums over the labelled records the quality window takes."""
        sums = self.regression_sums.get(version)
        if sums is None:
            sums = self.regression_sums[version] = np.zeros(6)
        err = pred - y
        sums += (y.size, np.abs(err).sum(), np.dot(err, err), y[y > 0].sum(), -y[y < 0].sum(), np.dot(y, y))

    def _count_confusion(self, distinct: set, versions: list, actual: list, predicted: list,
                         true_keys: np.ndarray, pred_keys: np.ndarray) -> None:
        """Add the batch's (version, actual, predicted) counts to the confusion counters: with one
        version and a few classes, one vectorised comparison per class instead of a tuple per row."""
        classes_true, classes_pred = set(actual), set(predicted)
        if len(distinct) > 1 or len(classes_true) * len(classes_pred) > 16:
            for key, k in Counter(zip(versions, actual, predicted)).items():
                self.confusion[key] += k
            return
        version = versions[0]
        pred_masks = {y: pred_keys == y for y in classes_pred}
        for x in classes_true:
            is_x = true_keys == x
            for y, is_y in pred_masks.items():
                k = int(np.count_nonzero(is_x & is_y))
                if k:
                    self.confusion[(version, x, y)] += k

    def _proba_matrix(self, score_maps: list) -> np.ndarray:
        """Multiclass probabilities in configured class order; NaN rows where a record has none."""
        classes = [class_key(c) for c in (self.cfg.classes or ())]
        out = np.full((len(score_maps), max(len(classes), 1)), np.nan)
        if not classes:
            return out
        for i, m in enumerate(score_maps):
            if m:
                row = [m.get(c) for c in classes]  # JSON object keys are strings, like class_key
                if all(x is not None for x in row):
                    out[i] = row
        return out

    # ------------------------------------------------------------------ reference

    def set_reference(self, columns: dict[str, np.ndarray], prediction: np.ndarray | None,
                      labelled: dict[str, np.ndarray] | None = None) -> None:
        self.reference = Reference(self.cfg, columns, self.exp, prediction, labelled)
        if self.reference.fit_rows is not None:
            self.reference.quality = self._quality(self._reference_quality_columns(self.reference.fit_rows))
        self.estimation = {}
        self.estimating = self.estimation_state == "ready"
        self._new_bins(inputs=True)

    def _reference_quality_columns(self, fit: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The labelled reference rows as a quality window holds them (see `add_labelled`)."""
        task = self.cfg.task
        if task == "regression":
            return {"y_true": fit["label"].astype(np.float64), "y_pred": fit["prediction"].astype(np.float64)}
        if task == "binary":
            n = len(fit["label"])
            return {"y_true": fit["label"] == self.positive, "y_pred": fit["prediction"] == self.positive,
                    "score": fit.get("score", np.full(n, np.nan))}
        n_conf = max(len(self.cfg.classes or ()), 1)
        return {"y_true": fit["label"], "y_pred": fit["prediction"],
                "proba": fit.get("proba", np.full((len(fit["label"]), n_conf), np.nan))}

    @property
    def estimation_state(self) -> str:
        """Whether performance can be estimated, in a sentence for /ready (`ready` when it can)."""
        ref = self.reference
        if ref is None:
            return "waiting for the reference"
        if ref.labels_problem:
            return f"reference labels unusable ({ref.labels_problem}): no estimated performance"
        if ref.fit_rows is None:
            return "reference has no labels: no estimated performance"
        if ref.labeled < self.cfg.min_labeled:
            return (f"reference has {ref.labeled} labelled rows, fewer than min_labeled ({self.cfg.min_labeled}): "
                    "no estimated performance")
        if self.cfg.task == "binary" and "score" not in ref.fit_rows:
            return "reference has no `score` column: no estimated performance"
        if self.cfg.task == "multiclass" and "proba" not in ref.fit_rows:
            return "reference lacks a `score_<class>` column for some configured class: no estimated performance"
        return "ready"

    def estimation_window(self, version: str) -> SlidingWindow:
        """One version's predictions (labelled or not) over the quality window's span, for the estimators."""
        win = self.estimation_windows.get(version)
        if win is None:
            win = self.estimation_windows[version] = SlidingWindow(self.cfg.quality_window)
        return win

    def _new_bins(self, inputs: bool) -> None:
        """Bin counters for a new reference (inputs and outputs) or output reference: they start at 0,
        every bin at once (all exported from now on), every known version's output bins too."""
        ref, limit = self.reference, self.exp.max_label_value_length
        if inputs:
            self.feature_bins = FeatureBins(ref.profiles, limit)
        self.output_bins = None if ref.prediction is None else OutputBins(ref.prediction, self.output_windows, limit)

    def _feed_reference(self, window_cols: dict[str, np.ndarray]) -> None:
        """Freeze the first N records as the reference, or the first outputs as the output reference."""
        need_inputs, need_output = self._collection_needed()
        if not (need_inputs or need_output):
            return
        target = self.cfg.reference.first if need_inputs else PREDICTION_REFERENCE_SIZE
        take = min(target - self._collected, len(window_cols["ts"]))
        self._collecting.append({k: v[:take] for k, v in window_cols.items()})
        self._collected += take
        if self._collected < target:
            return
        merged = {k: np.concatenate([c[k] for c in self._collecting]) for k in window_cols}
        self._collecting, self._collected = [], 0
        features = {f: merged[f] for f in self.cfg.features} if need_inputs else None
        if need_inputs:
            self.set_reference(features, merged[PRED])
        else:
            self.reference.set_prediction(self.cfg, merged[PRED])
            self._new_bins(inputs=False)
        if self.on_frozen is not None:
            self.on_frozen(self.cfg, features, merged[PRED])

    def _collection_needed(self) -> tuple[bool, bool]:
        """(inputs, output): whether traffic must still freeze the input or the output reference."""
        return (self.reference is None and self.cfg.reference.first is not None,
                self.reference is not None and self.reference.prediction is None)

    def collecting_columns(self) -> dict[str, np.ndarray] | None:
        """Records gathered so far towards a reference frozen from traffic (for the checkpoint)."""
        if not self._collecting:
            return None
        return {k: np.concatenate([c[k] for c in self._collecting]) for k in self._collecting[0]}

    def collecting_chunks(self) -> tuple[dict[str, np.ndarray], ...]:
        """The same records as `collecting_columns`, unconcatenated: take under the lock, concatenate
        after (the chunks are never written once appended; the list is replaced, not emptied)."""
        return tuple(self._collecting)

    def resume_collecting(self, columns: dict[str, np.ndarray]) -> None:
        """Continue a collection a checkpoint saved, unless the reference it was for is complete now."""
        if any(self._collection_needed()):
            self._collecting = [columns]
            self._collected = len(columns["ts"])

    @property
    def reference_state(self) -> str:
        if self.reference_error:
            return "error"
        if self.reference is None:
            return "collecting"
        return "ready"

    # ------------------------------------------------------------------ refresh

    def refresh(self) -> None:
        """Recompute windowed gauges into a new snapshot, all in one go (no lock of its own: the
        exporter runs the three steps separately, computing outside its lock)."""
        inputs = self.refresh_inputs()
        self.publish(inputs, self.compute(inputs))

    def refresh_inputs(self) -> RefreshInputs:
        """Step 1, under the exporter lock: expire time windows and capture what `compute` needs as
        immutable references (window views, reference profiles); marks the model clean, so an
        ingest from now on makes it dirty again and the next pass recomputes. Cheap: no
        concatenation, no statistics."""
        quality_views = []
        for version, win in self.quality_windows.items():
            if self.cfg.quality_window.is_time and self.last_ts is not None:
                win.expire(self.last_ts)
            quality_views.append((version, win, win.view()))
        if self.cfg.drift_window.is_time and self.last_ts is not None:
            self.drift_window.expire(self.last_ts)
        drift_view = profiles = prediction = None
        if self.reference is not None and len(self.drift_window) >= self.cfg.min_drift_samples:
            drift_view = self.drift_window.view()
            # A Reference's profiles are never modified after it is built; `prediction` may be set
            # later (an output reference frozen from traffic), so it is captured as it is now.
            profiles = self.reference.profiles
            prediction = self.reference.prediction
        outputs = []
        if self.reference is not None and self.reference.prediction is not None:
            for version, win in self.output_windows.items():
                if self.cfg.drift_window.is_time and self.last_ts is not None:
                    win.expire(self.last_ts)
                if len(win) >= self.cfg.min_drift_samples:
                    outputs.append((version, win, win.view()))
        version_drift = []
        if profiles is not None and len(self.traffic.totals) > 1:  # while several versions serve
            # (a version that stopped serving keeps its window until its budget slot is freed)
            for version, win in self.version_drift_windows.items():
                if version not in self.traffic.totals:
                    continue
                if self.cfg.drift_window.is_time and self.last_ts is not None:
                    win.expire(self.last_ts)
                if len(win) >= self.cfg.min_drift_samples:
                    version_drift.append((version, win, win.view()))
        self.dirty = False
        baseline = self.baseline()
        return RefreshInputs(tuple(quality_views), len(self.drift_window), drift_view, profiles, prediction,
                             baseline, self.paired.snapshot(baseline), tuple(outputs),
                             self.reference.prediction if self.reference is not None else None,
                             tuple(version_drift))

    def compute(self, inputs: RefreshInputs) -> tuple[Snapshot, list]:
        """Step 2, without the lock: the snapshot of `inputs`, and the concatenated chunk runs to
        hand back to `publish`. Reads `inputs`, the model's config (immutable) and updates the
        drift tally (which only the refresh pass touches)."""
        snap = Snapshot(drift_window_records=inputs.drift_records, baseline=inputs.baseline)
        merged = []
        outcomes = {}
        for version, win, view in inputs.quality:
            snap.window_labeled[version] = view.size
            if view.size:
                cols = concat(view.chunks)
                merged.append((win, view, cols, 0))
                snap.quality[version] = self._quality(cols)
                outcomes[version] = self._outcomes(cols["y_true"], cols["y_pred"])
        if inputs.baseline is not None:
            snap.comparisons = compare_versions(self.cfg.task, inputs.baseline, inputs.paired, outcomes)
        if inputs.drift is not None:
            view = inputs.drift
            tally = self.drift_tally.update(view, inputs.profiles, None, PRED)  # outputs: per version, below
            for f in inputs.profiles:
                snap.feature_drift[f] = feature_stats(tally.coders[f], tally.counts[f])
            first = tail_run(view)  # only the small trailing chunks: the counts need no concatenation
            if first is not None:
                merged.append((self.drift_window, view, concat(view.chunks[first:]), first))
        for version, win, view in inputs.version_drift:
            tally = self.version_drift_tallies.get(version)
            if tally is None:
                tally = self.version_drift_tallies[version] = DriftTally()
            counted = tally.update(view, inputs.profiles, None, PRED)
            snap.version_feature_drift[version] = {
                f: feature_stats(counted.coders[f], counted.counts[f]) for f in inputs.profiles}
            first = tail_run(view)
            if first is not None:
                merged.append((win, view, concat(view.chunks[first:]), first))
        for version, win, view in inputs.outputs:
            out = self.output_tallies.get(version)
            if out is None:
                out = self.output_tallies[version] = DriftTally()
            counted = out.update(view, {}, inputs.output_profile, PRED)
            snap.prediction_psi[version] = drift.psi(inputs.output_profile.ref_counts,
                                                     counted.coders[PRED].bins(counted.counts[PRED]))
            first = tail_run(view)
            if first is not None:
                merged.append((win, view, concat(view.chunks[first:]), first))
        return snap, merged

    def publish(self, inputs: RefreshInputs, result: tuple[Snapshot, list]) -> None:
        """Step 3, under the lock: publish the snapshot and let the windows keep the
        concatenations (so the chunk count stays small). O(chunks)."""
        snap, merged = result
        for win, view, cols, first in merged:
            win.adopt(view, cols, first)
        self.snapshot = snap

    def _outcomes(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        """Per labelled prediction: right or wrong (classification), absolute error (regression)."""
        if self.cfg.task == "regression":
            return np.abs(np.asarray(y_pred, dtype=np.float64) - np.asarray(y_true, dtype=np.float64))
        return (np.asarray(y_true) == np.asarray(y_pred)).astype(np.float64)

    # ------------------------------------------------------------------ versions side by side

    def baseline(self) -> str | None:
        """`baseline_version` from the config, else the served version with the most traffic."""
        if self.cfg.baseline_version is not None:
            return shorten_value(self.cfg.baseline_version, self.exp.max_label_value_length)
        return self.traffic.leader()

    @property
    def pairing(self) -> bool:
        """Whether requests are recorded for pairing: once the model has a second version. Recording
        every request of a single-version model cost ingest a tenth of its speed for nothing; the
        price is that the first batch of a new version finds no earlier baseline requests."""
        return len(self.versions.known) > 1

    def pair_predictions(self, ids: list, versions: list[str], preds: list) -> None:
        """Pair predictions with the baseline's on the same request (agreement, before labels)."""
        if not self.pairing:
            return
        baseline = self.baseline()
        regression = self.cfg.task == "regression"
        for version, rids, values in _by_version(ids, versions, preds):
            values = [float(v) for v in values] if regression else class_keys(values)
            for cand, cand_value, base_value in self.predicted.add(version, rids, values, baseline):
                key = (cand, baseline)
                self.version_pairs[key] += 1
                if regression:
                    self.version_abs_difference[key] += abs(cand_value - base_value)
                else:
                    self.version_agreements[key] += cand_value == base_value

    def pair_outcomes(self, ids: list, versions: list[str], preds: list, labels: list) -> None:
        """Pair labelled outcomes with the baseline's on the same request (the paired comparison)."""
        if not self.pairing:
            return
        baseline = self.baseline()
        if self.cfg.task == "regression":
            values = np.abs(np.asarray(preds, dtype=np.float64) - np.asarray(labels, dtype=np.float64))
        else:
            values = object_array(class_keys(preds)) == object_array(class_keys(labels))
        for version, rids, outcomes in _by_version(ids, versions, values.astype(np.float64).tolist()):
            for cand, cand_value, base_value in self.outcomes.add(version, rids, outcomes, baseline):
                self.paired.add(cand, baseline, base_value, cand_value)
        self.dirty = True

    def _quality(self, cols: dict[str, np.ndarray]) -> dict[str, float]:
        task = self.cfg.task
        if task == "regression":
            return quality.regression_quality(cols["y_true"], cols["y_pred"])
        if task == "binary":
            score = cols["score"]
            finite = np.isfinite(score)
            out = quality.binary_quality(cols["y_true"], cols["y_pred"], None)
            if finite.any():
                prob = quality.binary_quality(cols["y_true"][finite], cols["y_pred"][finite], score[finite])
                for key in ("roc_auc", "log_loss", "brier_score"):
                    if key in prob:
                        out[key] = prob[key]
            return out
        y_true, y_pred, n_classes = self._class_codes(cols["y_true"], cols["y_pred"])
        out = quality.multiclass_quality(y_true, y_pred, n_classes, None)
        proba = cols["proba"]
        n_conf = len(self.cfg.classes or ())
        if n_conf:
            rows = np.isfinite(proba).all(axis=1) & (y_true >= 0) & (y_true < n_conf)
            if rows.any():
                prob = quality.multiclass_quality(y_true[rows], np.clip(y_pred[rows], 0, n_conf - 1), n_conf,
                                                  proba[rows])
                for key in ("roc_auc", "log_loss"):
                    if key in prob:
                        out[key] = prob[key]
        return out

    def _class_codes(self, actual: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Class keys -> codes: the configured classes first (the columns of `proba`), then the rest."""
        configured = [class_key(c) for c in (self.cfg.classes or ())]
        both = np.concatenate([actual, predicted]).astype(str)
        uniq, inverse = np.unique(both, return_inverse=True)
        known = set(configured)
        order = configured + [c for c in uniq.tolist() if c not in known]
        position = {c: i for i, c in enumerate(order)}
        codes = np.array([position[c] for c in uniq.tolist()], dtype=np.int64)[inverse]
        return codes[:len(actual)], codes[len(actual):], len(order)

    # ------------------------------------------------------------------ idle label values

    def free_idle(self) -> None:
        """Give back the budget slots of versions and classes idle past `exporter.label_idle`, with
        their series: a burst of junk values must not hold the budget, or /metrics, for good."""
        for version in self.versions.free_idle():
            for totals in (self.predictions_total, self.shadow_total):
                for key in [k for k in totals if k[0] == version]:
                    del totals[key]
            for store in (self.latency, self.shadow_latency, self.labels_total, self.quality_windows,
                          self.score_hist, self.output_windows, self.output_tallies, self.version_drift_windows,
                          self.version_drift_tallies, self.regression_sums, self.estimation,
                          self.estimation_windows):
                store.pop(version, None)
            if self.output_bins is not None:
                self.output_bins.counts.pop(version, None)
            for key in [k for k in self.labeled_score if k[0] == version]:
                del self.labeled_score[key]
            for store in (self.version_pairs, self.version_agreements, self.version_abs_difference):
                for key in [k for k in store if version in k]:
                    del store[key]
            self.traffic.forget(version)
            self.paired.forget(version)
            self.predicted.forget(version)
            self.outcomes.forget(version)
            for key in [k for k in self.confusion if k[0] == version]:
                del self.confusion[key]
            self.dirty = True
        for cls in self.classes.free_idle():
            for key in [k for k in self.confusion if cls in (k[1], k[2])]:
                del self.confusion[key]
            for key in [k for k in self.labeled_score if k[1] == cls]:
                del self.labeled_score[key]
            self.dirty = True

    # ------------------------------------------------------------------ estimation worker

    def estimation_inputs(self):
        """(reference, {version: (estimation window view, quality window view or None)}), or None
        when nothing can be estimated. Under the lock: O(chunks); compute with `compute_estimation`
        after releasing it (the reference and the views are never modified)."""
        if not self.estimating or self.reference is None:
            return None
        views = {}
        for version, win in self.estimation_windows.items():
            if self.cfg.quality_window.is_time and self.last_ts is not None:
                win.expire(self.last_ts)
            if len(win):
                q = self.quality_windows.get(version)
                views[version] = (win.view(), q.view() if q is not None and len(q) else None)
        return self.reference, views

    def fit_estimator(self, reference: Reference, seed: int = 0) -> estimation.Estimator:
        """The estimator of the task fitted on the reference's labelled rows (no lock needed)."""
        fit, task = reference.fit_rows, self.cfg.task
        if task == "binary":
            return estimation.Estimator(task, binary=estimation.BinaryCBPE.fit(fit["score"], fit["label"] == self.positive))
        if task == "multiclass":
            return estimation.Estimator(task, multiclass=estimation.MulticlassCBPE.fit(
                fit["proba"], self._configured_codes(fit["label"])))
        x = self._encode({f: fit["feature:" + f] for f in self.cfg.features}, reference)
        return estimation.Estimator(task, dle=estimation.DLE.fit(x, fit["prediction"], fit["label"], seed=seed))

    def compute_estimation(self, estimator: estimation.Estimator, reference: Reference, views: dict,
                           seed: int = 0) -> dict[str, estimation.Estimate]:
        """Per version: the estimate over its window and the check on its labelled records (no lock)."""
        out = {}
        for version, (view, qview) in views.items():
            cols = concat(view.chunks)
            qcols = concat(qview.chunks) if qview is not None else None
            out[version] = self._estimate_one(estimator, reference, cols, qcols, seed)
        return out

    def _estimate_one(self, est, reference, cols, qcols, seed):
        task = self.cfg.task
        if task == "regression":
            x = self._encode({f: cols["feature:" + f] for f in self.cfg.features}, reference)
            pred = cols["pred"]
            labeled = None
            if qcols is not None and len(qcols["y_true"]):
                # Labelled records still in the estimation window: matched on (event time, prediction)
                index = {k: i for i, k in enumerate(zip(cols["ts"].tolist(), pred.tolist()))}
                pairs = [(index.get(k), j) for j, k in enumerate(zip(qcols["ts"].tolist(), qcols["y_pred"].tolist()))]
                pairs = [(i, j) for i, j in pairs if i is not None]
                if pairs:
                    i, j = (np.array(t) for t in zip(*pairs))
                    labeled = (x[i], pred[i], qcols["y_true"][j])
            return estimation.estimate_regression(est, x, pred, labeled)
        if task == "binary":
            window = {"score": cols["score"], "pred": object_array(class_keys(cols["pred"].tolist())) == self.positive}
            labeled = None if qcols is None else {"score": qcols["score"], "pred": qcols["y_pred"], "y": qcols["y_true"]}
        else:
            window = {"proba": self._proba_matrix(cols["scores"].tolist()),
                      "pred": self._configured_codes(object_array(class_keys(cols["pred"].tolist())))}
            labeled = None if qcols is None else {"proba": qcols["proba"], "pred": self._configured_codes(qcols["y_pred"]),
                                                  "y": self._configured_codes(qcols["y_true"])}
        return estimation.estimate_classification(est, window, labeled, seed=seed)

    def _configured_codes(self, keys: np.ndarray) -> np.ndarray:
        """Class keys -> codes of the configured classes (-1 for any other)."""
        codes = np.full(len(keys), -1, dtype=np.int64)
        for i, c in enumerate(self.cfg.classes or ()):
            codes[keys == class_key(c)] = i
        return codes

    def _encode(self, columns: dict[str, np.ndarray], reference: Reference) -> np.ndarray:
        from modelmon.exporter import multivariate

        if not self.cfg.features:
            return np.empty((len(next(iter(columns.values()), ())), 0))
        return multivariate.encode(columns, self.cfg.numeric_features, self.cfg.categorical_features,
                                   reference.profiles)

    # ------------------------------------------------------------------ multivariate worker input

    def multivariate_view(self):
        """(reference rows, drift window view, profiles), or None when not ready. Under the lock:
        O(chunks); sample the view with `sample_view` after releasing it."""
        if self.reference is None or len(self.drift_window) < self.cfg.min_drift_samples:
            return None
        return self.reference.rows, self.drift_window.view(), self.reference.profiles


def sample_view(view: WindowView, features: list[str], sample_size: int,
                rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A uniform sample of `sample_size` of the view's records (all of them if fewer), in window
    order, gathered chunk by chunk (no concatenation of the window). Needs no lock."""
    n = view.size
    take = np.sort(rng.choice(n, size=min(n, sample_size), replace=False))
    sizes = [len(next(iter(c.values()))) for c in view.chunks]
    bounds = np.searchsorted(take, np.cumsum([0, *sizes]))
    start = 0
    parts: dict[str, list] = {f: [] for f in features}
    for c, size, lo, hi in zip(view.chunks, sizes, bounds[:-1], bounds[1:]):
        if hi > lo:
            local = take[lo:hi] - start
            for f in features:
                parts[f].append(c[f][local])
        start += size
    return {f: np.concatenate(p) if p else view.chunks[0][f][:0] for f, p in parts.items()}


def _by_version(ids: list, versions: list[str], values: list):
    """(version, ids, values) of the rows with an id, one group per version in first-seen order."""
    if len(set(versions)) == 1:  # the common case, without a pass per row
        if None in ids:
            keep = [i for i, rid in enumerate(ids) if rid is not None]
            ids, values = [ids[i] for i in keep], [values[i] for i in keep]
        return [(versions[0], ids, values)] if ids else []
    groups: dict[str, tuple[list, list]] = {}
    for rid, version, value in zip(ids, versions, values):
        if rid is not None:
            group = groups.get(version)
            if group is None:
                group = groups[version] = ([], [])
            group[0].append(rid)
            group[1].append(value)
    return [(v, rids, vals) for v, (rids, vals) in groups.items()]


def feature_drift(profile: Any, values: np.ndarray) -> dict[str, float]:
    """Drift of one feature's window against its reference profile, from the raw values: the
    full recompute that the refresh's drift tally equals exactly (tests and tools use it)."""
    if values.dtype == object and isinstance(profile, drift.CategoricalProfile):
        # One coding pass: codes() maps exactly the None values to -1 (no separate missing scan).
        codes = profile.codes(values)
        missing = codes < 0
        counts = np.bincount(codes[~missing], minlength=len(profile.categories))
        present = None
    else:
        if values.dtype == object:
            missing = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
        else:
            missing = np.isnan(values)
        present = values[~missing]
        counts = profile.counts(present)
    out = {"missing_ratio": float(missing.mean()) if len(values) else 0.0}
    if not len(values) or missing.all():  # no value present
        return out
    out["psi"] = drift.psi(profile.ref_counts, counts)
    out["js_distance"] = drift.js_distance(profile.ref_counts, counts)
    if isinstance(profile, drift.NumericProfile):
        out["ks_pvalue"] = drift.ks_pvalue(profile.sample, present.astype(np.float64))
        out.update(mean_stats_of(profile, present))  # wasserstein_normed, ttest_pvalue
    else:
        out["chi2_pvalue"] = drift.chi2_pvalue(profile.ref_counts, counts)
    return out

