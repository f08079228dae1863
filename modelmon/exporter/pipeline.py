"""The exporter's state machine: lines in, per-model state updated, snapshots refreshed.

Sources (the log follower, POST /ingest) call `ingest_lines`; a refresher thread recomputes
windowed gauges of changed models at most once per `refresh_interval`, computing outside the
lock on immutable window views; the multivariate worker fits its models on bounded samples
outside the lock. The collector reads under the lock.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from modelmon.config import Config
from modelmon.exporter import multivariate
from modelmon.exporter.columnar import ColumnarParser, Prepared
from modelmon.exporter.histogram import LATENCY_BUCKETS, Histogram
from modelmon.exporter.joiner import LabelJoiner, Pending
from modelmon.exporter.model_state import ModelState, sample_view
from modelmon.exporter.records import ParsedBatch, PredictionColumns, RecordParser, Reject
from modelmon.exporter.reference import ReferenceDataError, load_labelled, load_reference
from modelmon.exporter.reference_store import ReferenceStore

log = logging.getLogger("modelmon.exporter")

# The exporter's own costs (modelmon_ingest_batch_duration_seconds, modelmon_lock_hold_seconds).
INGEST_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LOCK_HOLD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                     5.0, 10.0)  # 0.01: the longest hold the performance target allows
INGEST_SOURCES = ("file", "http")  # exported from the start; kserve and stream from their first batch
LOCK_OPERATIONS = ("ingest", "refresh", "checkpoint", "exposition")


@dataclass
class IngestResult:
    accepted: int
    rejected: int  # exact
    errors: list[Reject]  # the first MAX_LISTED_REJECTS rejects by index, with their messages


class Exporter:
    def __init__(self, config: Config, refresh_interval: float = 1.0, reference_store: Path | None = None,
                 clock: Callable[[], float] = time.time, timer: Callable[[], float] = time.perf_counter):
        self.config = config
        self.refresh_interval = refresh_interval
        self.clock = clock  # wall clock: the event-time guard and idle label values are measured on it
        self.lock = threading.RLock()
        self.parser = RecordParser(config, clock)
        self.columnar = ColumnarParser(self.parser)  # the fast path; hands what it cannot vouch for to `parser`
        self.states = {m.name: ModelState(m, config.exporter, clock) for m in config.models}
        self.reference_store = ReferenceStore(reference_store) if reference_store is not None else None
        if self.reference_store is not None:
            for state in self.states.values():
                state.on_frozen = self._save_frozen
        self.latency_bounds = tuple(sorted(set(LATENCY_BUCKETS) | {
            m.slo.latency_p99_seconds for m in config.models if m.slo.latency_p99_seconds}))
        self.joiner = LabelJoiner(config.exporter.label_ttl_seconds, config.exporter.join_buffer_max,
                                  self._count_expired)
        self.rejected: dict[str, int] = defaultdict(int)
        self.ingested: dict[str, int] = defaultdict(int)
        self.duplicate_batches: dict[str, int] = defaultdict(int)  # POST /ingest retries not applied again
        self.model_errors: dict[tuple[str, str], int] = defaultdict(int)  # (model, stage) -> failures
        self.log_lag_bytes = 0
        self.log_rotations = 0
        self.log_copies_missed = 0  # truncations whose rotated copy was not found (its unread tail is lost)
        self.source_open = True  # a file source sets this; HTTP-only is always open
        self.checkpoint_saved_at: float | None = None  # set by the Checkpointer
        self.state_write_errors: dict[str, int] = defaultdict(int)  # file kind -> failed writes
        self.source_problem: str | None = None  # why the file source cannot read (shown on /ready)
        self.stream_problem: str | None = None  # why the stream source cannot consume (shown on /ready)
        # The ways in besides the log (the KServe joiner, the stream source) add their samples to
        # /metrics: each a callable given {name: the empty family of collector.SOURCE_SERIES} to fill,
        # called under the lock at every scrape.
        self.extra_collectors: list = []
        self._warned: dict[str, float] = {}  # log key -> monotonic time of its last line (rate limit)
        # The exporter's own costs, measured on `timer` (tests inject a constant one), updated under the lock.
        self.timer = timer
        self.refresh_seconds: dict[str, float] = {}  # model -> wall duration of its last refresh
        self.ingest_seconds = {s: Histogram(INGEST_DURATION_BUCKETS) for s in INGEST_SOURCES}  # by source
        self.lock_hold = {op: Histogram(LOCK_HOLD_BUCKETS) for op in LOCK_OPERATIONS}  # by operation
        self._estimators: dict[str, tuple] = {}  # model -> (the reference fitted on, its Estimator): worker-only
        self._refreshing = threading.Lock()  # one refresh pass at a time; taken before `lock`, never inside it
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ references

    def load_references(self) -> None:
        """Load file references and references frozen from traffic before a restart.

        A model whose file fails is reported on /ready and in the log; the others go on.
        """
        for m in self.config.models:
            state = self.states[m.name]
            if m.reference.path is None:
                saved = self.reference_store.load(m, with_features=True) if self.reference_store else None
                if saved is not None:
                    with self.lock:
                        state.set_reference(*saved)
                    log.info("model %s: reference frozen earlier reloaded from %s (%d rows)", m.name,
                             self.reference_store.path(m.name), state.reference.size)
                continue
            try:
                cols = load_reference(m.reference.path, m.numeric_features, m.categorical_features)
                prediction = self._reference_prediction(m)
                if prediction is None and self.reference_store is not None:
                    saved = self.reference_store.load(m, with_features=False)
                    prediction = saved[1] if saved is not None else None
                labelled, labels_error = None, None
                try:
                    labelled = load_labelled(m.reference.path, m.task, m.classes or (), m.positive_class)
                except ReferenceDataError as e:  # drift still works from the features; only the labels are lost
                    labels_error = str(e)
                with self.lock:
                    state.set_reference({f: cols[f] for f in m.features}, prediction, labelled)
                    if labels_error:
                        state.reference.labels_problem = labels_error
                        state.estimating = False
                    state.reference_error = None
                log.info("model %s: reference %s loaded (%d rows, %d labelled)", m.name, m.reference.path,
                         state.reference.size, state.reference.labeled)
                if state.estimation_state != "ready":
                    log.warning("model %s: %s", m.name, state.estimation_state)
            except Exception as e:  # noqa: BLE001 - reported on /ready and in the log, never fatal
                state.reference_error = f"{m.reference.path}: {e}"
                log.error("model %s: cannot load reference: %s", m.name, e)

    @staticmethod
    def _reference_prediction(m) -> np.ndarray | None:
        """The model's reference outputs, when the file has them: `score` (binary) or `prediction`.

        Without them, the first predictions seen are frozen as the output reference instead.
        """
        candidates = {"binary": [("score", True), ("prediction", True)], "regression": [("prediction", True)],
                      "multiclass": [("prediction", False)]}[m.task]
        for column, numeric in candidates:
            try:
                cols = load_reference(m.reference.path, [column] if numeric else [], [] if numeric else [column])
            except ReferenceDataError:
                continue
            return cols[column]
        return None

    # ------------------------------------------------------------------ ingest

    def ingest_lines(self, lines: Sequence[bytes], source: str, blank_free: bool = False,
                     prepared: Prepared | None = None) -> IngestResult:
        """Ingest log lines (no line breaks inside); `blank_free`: none is empty or only whitespace;
        `prepared`: `columnar.prepare(lines, ...)`, done earlier (the file source's read-ahead)."""
        return self._ingest(lambda items: self.columnar.parse_lines(items, blank_free, prepared), lines, source)

    def ingest_objects(self, objs: Sequence, source: str) -> IngestResult:
        return self._ingest(self.parser.parse_objects, objs, source)

    def _ingest(self, parse, items: Sequence, source: str) -> IngestResult:
        """Parse outside the lock, apply under it; the whole call is timed per source."""
        started = self.timer()
        batch = parse(items)
        self._bin_inputs(batch)
        self._apply_timed(batch, source, started)
        return IngestResult(batch.accepted, len(batch.rejects), batch.rejects.listed())

    def _bin_inputs(self, batch: ParsedBatch) -> None:
        """Count the batch's feature values by reference bin before taking the lock (the bulk of the
        additive counters' cost); `add_predictions` adds the counts under it, or counts again if the
        reference changed meanwhile."""
        for model, cols in batch.predictions.items():
            try:
                cols.binned = self.states[model].bin_inputs(cols)
            except Exception:  # noqa: BLE001 - counted again under the lock, where a failure is counted
                cols.binned = None

    def _apply_timed(self, batch: ParsedBatch, source: str, started: float) -> None:
        with self.held("ingest"):
            try:
                self._apply(batch, source)
            finally:
                self._ingest_took(source, self.timer() - started)

    # ------------------------------------------------------------------ the exporter's own costs

    @contextmanager
    def held(self, operation: str) -> Iterator[None]:
        """Hold the exporter lock, observing how long it was held (not waited for) into
        ``lock_hold[operation]``. Re-entrant like the lock; the observation is made while still holding it."""
        with self.lock:
            started = self.timer()
            try:
                yield
            finally:
                _observe(self.lock_hold, operation, LOCK_HOLD_BUCKETS, self.timer() - started)

    def _ingest_took(self, source: str, seconds: float) -> None:
        """Observe one ingest call's duration (call under the lock)."""
        _observe(self.ingest_seconds, source, INGEST_DURATION_BUCKETS, seconds)

    def _apply(self, batch: ParsedBatch, source: str) -> None:
        """Apply a parsed batch, one model at a time: a model whose update fails has its records
        counted as `internal_error` rejects (and the failure as a refresh error); the rest go on."""
        failed = 0
        for model, cols in batch.predictions.items():
            state = self.states[model]
            try:
                versions = state.add_predictions(cols, self.latency_bounds)
                self._labels_of(state, cols, versions)
                if state.pairing:  # versions side by side: pair by request id
                    ok = cols.status_ok if cols.id_present is None else cols.status_ok & cols.id_present
                    ok = np.flatnonzero(ok).tolist()
                    state.pair_predictions([cols.ids[i] for i in ok], [versions[i] for i in ok],
                                           [cols.predictions[i] for i in ok])
            except Exception:  # noqa: BLE001 - one model's failure must not touch the others
                failed += len(cols)
                self.model_failed(model, "ingest")
        for model, lab in batch.labels.items():
            try:
                self._join(self.states[model], lab)
            except Exception:  # noqa: BLE001
                failed += len(lab.ids)
                self.model_failed(model, "ingest")
        if failed:
            batch.accepted -= failed
            batch.rejects.counts["internal_error"] = batch.rejects.counts.get("internal_error", 0) + failed
        for reason, n in batch.rejects.counts.items():
            self.rejected[reason] += n
        for (model, label), n in batch.shortened.items():
            self.states[model].shortened[label] += n
        self.ingested[source] += batch.accepted
        clocks = [s.last_ts for s in self.states.values() if s.last_ts is not None]
        if clocks:
            # The join clock is event time, never beyond the wall clock's allowance (the parser
            # refuses such records; a restored or injected value is clamped here too).
            self.joiner.expire(min(max(clocks), self.clock() + self.config.exporter.max_clock_skew_seconds))

    def count_duplicate_batch(self, outcome: str) -> None:
        """A POST /ingest batch whose Idempotency-Key was seen: `replayed` (answered again, not
        applied) or `in_flight` (its first request still running: 409)."""
        with self.lock:
            self.duplicate_batches[outcome] += 1

    def model_failed(self, model: str, stage: str) -> None:
        """Count a failure of one model's ingest/refresh/multivariate pass; log it once a minute (under
        the lock: also called by the KServe receiver when a joined pair fails to apply)."""
        self.model_errors[(model, stage)] += 1
        self.warn_limited(f"model:{model}:{stage}", logging.ERROR,
                          "model %s: %s failed (%d time(s) so far; other models are unaffected)", model, stage,
                          self.model_errors[(model, stage)], exc_info=True)

    def _labels_of(self, state: ModelState, cols: PredictionColumns, versions: list[str]) -> None:
        """Inline labels go straight to quality; unlabelled predictions with an id wait for one."""
        n = len(cols)
        has_label = cols.label_present if cols.label_present is not None else \
            np.fromiter((x is not None for x in cols.labels), dtype=bool, count=n)
        with_id = cols.id_present if cols.id_present is not None else \
            np.fromiter((x is not None for x in cols.ids), dtype=bool, count=n)
        labelled = cols.status_ok & has_label
        lab_idx = np.flatnonzero(labelled).tolist()
        wait = np.flatnonzero(cols.status_ok & ~labelled & with_id)
        if lab_idx:
            idx = np.asarray(lab_idx)
            lab_versions, lab_preds = _pick(versions, lab_idx), _pick(cols.predictions, lab_idx)
            lab_labels = _pick(cols.labels, lab_idx)
            state.add_labelled(lab_versions, lab_preds, lab_labels, self._scores(state, cols, lab_idx),
                               cols.ts[idx], None)
            if state.pairing:
                state.pair_outcomes(_pick(cols.ids, lab_idx), lab_versions, lab_preds, lab_labels)
        if not wait.size:
            return
        name = state.cfg.name
        task = state.cfg.task
        wait_idx = wait.tolist()
        if task == "binary":
            scores = cols.scores[wait].tolist()
        elif task == "multiclass":
            scores = [cols.score_maps[i] for i in wait_idx]
        else:
            scores = [None] * len(wait_idx)
        preds = cols.predictions
        # tuple.__new__ through map: the namedtuple's Python-level __new__ cost a call per entry
        fields = zip(repeat(name), _pick(versions, wait_idx), cols.ts[wait].tolist(), _pick(preds, wait_idx), scores)
        entries = list(map(tuple.__new__, repeat(Pending), fields))
        self.joiner.add_many(name, _pick(cols.ids, wait_idx), entries)

    @staticmethod
    def _scores(state: ModelState, cols: PredictionColumns, idx: list[int]):
        if state.cfg.task == "binary":
            return cols.scores[np.asarray(idx)]
        if state.cfg.task == "multiclass":
            return [cols.score_maps[i] for i in idx]
        return np.full(len(idx), np.nan)

    def _join(self, state: ModelState, lab) -> None:
        """Late labels: each applies to every prediction of its request (served and shadow versions)."""
        found = self.joiner.take_many(state.cfg.name, lab.ids)
        rows = [i for i, ps in enumerate(found) for _ in ps]
        state.labels_unmatched += sum(1 for ps in found if not ps)
        if not rows:
            return
        pending = [p for ps in found for p in ps]  # Pending tuples: transpose them into columns at once
        _, versions, pred_ts, preds, scores = map(list, zip(*pending))
        labels = _pick(lab.labels, rows)
        pred_ts = np.asarray(pred_ts, dtype=np.float64)
        delays = lab.ts[rows] - pred_ts  # NaN when the label record has no ts: not observed
        if len(rows) > len(set(rows)):  # a request with several versions: one label, one delay
            first = np.ones(len(rows), dtype=bool)
            first[1:] = np.asarray(rows[1:]) != np.asarray(rows[:-1])
            delays[~first] = np.nan
        if state.cfg.task != "multiclass":
            scores = np.asarray([np.nan if s is None else s for s in scores], dtype=np.float64)
        state.add_labelled(versions, preds, labels, scores, pred_ts, delays)
        if state.pairing:
            state.pair_outcomes(_pick(lab.ids, rows), versions, preds, labels)

    def _save_frozen(self, model, features, prediction) -> None:
        try:
            self.reference_store.save(model, features, prediction)
        except OSError as e:  # the reference still works in memory; only the restart loses it
            self.state_write_failed("references", OSError(f"model {model.name}: {e}"))

    def state_write_failed(self, file: str, error: BaseException) -> None:
        """Count a failed write of a state file (`offset`, `checkpoint`, `references`); log it at most
        once a minute, without a traceback: a full disk must not turn into a log storm."""
        with self.lock:
            self.state_write_errors[file] += 1
            n = self.state_write_errors[file]
        self.warn_limited(f"state:{file}", logging.ERROR, "cannot write the %s state file (%d failure(s) so far): %s",
                          file, n, error)

    def warn_limited(self, key: str, level: int, msg: str, *args, exc_info=None, every: float = 60.0) -> bool:
        """Log `msg` unless the same `key` was logged within `every` seconds. True when logged."""
        now = time.monotonic()
        last = self._warned.get(key)
        if last is not None and now - last < every:
            return False
        self._warned[key] = now
        log.log(level, msg, *args, exc_info=exc_info)
        return True

    def _count_expired(self, model: str, reason: str, n: int) -> None:
        self.states[model].expired[reason] += n

    # ------------------------------------------------------------------ refresh

    def refresh(self, force: bool = False) -> None:
        """Refresh the snapshot of every dirty model (every model with `force`).

        Per model: capture its inputs under the lock (`ModelState.refresh_inputs`: expiry, idle
        label values, immutable window views), compute the statistics *without* the lock, then
        publish the snapshot under it; ingest and /metrics go on meanwhile. An ingest during
        the compute leaves the model dirty, so the next pass recomputes it. One refresh pass at
        a time (`_refreshing`, always taken before the exporter lock): the refresher thread and
        a forced refresh never compute the same model at once, and snapshots publish in order;
        that is also what lets each model's drift tally (updated by the compute with the records
        appended and dropped since the last pass) go without a lock of its own.
        """
        with self._refreshing:
            for name, state in self.states.items():
                self._refresh_one(name, state, force)

    def _refresh_one(self, name: str, state: ModelState, force: bool) -> None:
        started = self.timer()
        inputs = None
        try:
            with self.held("refresh"):
                state.free_idle()
                if not (state.dirty or force):
                    return  # a pass that only freed idle values is no refresh: the gauge keeps the last one's
                inputs = state.refresh_inputs()
            result = state.compute(inputs)
            with self.held("refresh"):
                state.publish(inputs, result)
                self.refresh_seconds[name] = self.timer() - started
        except Exception:  # noqa: BLE001 - isolated per model; the snapshot keeps its last good values
            with self.lock:
                self.refresh_seconds[name] = self.timer() - started  # its duration up to the raise
                if inputs is not None:
                    state.dirty = True  # retried on the next pass, as before the split
                self.model_failed(name, "refresh")

    def run_multivariate(self, seed: int = 0) -> None:
        """One pass of the domain classifier and IsolationForest over every ready model."""
        rng = np.random.default_rng(seed)
        size = self.config.exporter.multivariate_sample_size
        for name, state in self.states.items():
            try:
                self._multivariate_one(state, size, rng, seed)
            except Exception:  # noqa: BLE001 - isolated per model
                with self.lock:
                    self.model_failed(name, "multivariate")

    def _multivariate_one(self, state: ModelState, size: int, rng: np.random.Generator, seed: int) -> None:
        with self.lock:  # O(chunks): the sample is gathered from the view after the lock
            captured = state.multivariate_view()
        if captured is None:
            return
        ref_rows, view, profiles = captured
        cfg = state.cfg
        recent_rows = sample_view(view, cfg.features, size, rng)
        ref = multivariate.encode(ref_rows, cfg.numeric_features, cfg.categorical_features, profiles)
        cur = multivariate.encode(recent_rows, cfg.numeric_features, cfg.categorical_features, profiles)
        mask = multivariate.categorical_mask(cfg.numeric_features, cfg.categorical_features)
        result = {
            "drift_classifier_auc": multivariate.domain_classifier_auc(ref, cur, seed=seed, categorical=mask),
            "outlier_ratio": multivariate.outlier_ratio(ref, cur, seed=seed),
            "last_run": self.clock(),
        }
        with self.lock:
            state.multivariate = result

    def run_estimation(self, seed: int = 0) -> None:
        """One pass of the performance estimators over every model whose reference has labels: fit
        once per reference (kept until the reference changes), then estimate each version's window,
        all outside the exporter lock (views captured under it, the result swapped in under it)."""
        for name, state in self.states.items():
            try:
                self._estimation_one(state, seed)
            except Exception:  # noqa: BLE001 - isolated per model
                with self.lock:
                    self.model_failed(name, "estimation")

    def _estimation_one(self, state: ModelState, seed: int) -> None:
        with self.lock:
            captured = state.estimation_inputs()
        if captured is None:
            return
        reference, views = captured
        fitted = self._estimators.get(state.cfg.name)
        if fitted is None or fitted[0] is not reference:
            fitted = self._estimators[state.cfg.name] = (reference, state.fit_estimator(reference, seed))
        result = state.compute_estimation(fitted[1], reference, views, seed)
        with self.lock:
            if state.reference is reference:  # a reference replaced meanwhile: its estimates are stale
                state.estimation = {v: e for v, e in result.items() if v in state.estimation_windows}

    def start_background(self) -> None:
        self.run_every("modelmon-refresh", self.refresh_interval, self.refresh)
        if self.config.exporter.multivariate_enabled:
            self.run_every("modelmon-multivariate", self.config.exporter.multivariate_interval_seconds,
                           self.run_multivariate)
        exp = self.config.exporter
        if exp.estimation_enabled:
            self.run_every("modelmon-estimation", exp.estimation_interval_seconds or exp.multivariate_interval_seconds,
                           self.run_estimation)

    def run_every(self, name: str, interval: float, fn) -> None:
        """Run `fn` every `interval` seconds on a daemon thread until `stop()`."""
        self._threads.append(_loop(name, interval, fn, self._stop))

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)

    # ------------------------------------------------------------------ readiness

    def readiness(self) -> tuple[bool, dict]:
        """(ready, the /ready body). Whenever not ready, ``reason`` says why in one sentence per
        cause, joined by "; " (the log source first, then the stream source, then each model's reference)."""
        models = {name: s.reference_state for name, s in self.states.items()}
        errors = {name: s.reference_error for name, s in self.states.items() if s.reference_error}
        ready = self.source_open and not self.stream_problem and not errors and all(
            s.reference is not None or s.cfg.reference.first is not None for s in self.states.values())
        detail = {"ready": ready, "source_open": self.source_open, "references": models, "errors": errors,
                  # per model: `ready`, or why nothing is estimated (no labels in the reference: not an error)
                  "estimation": {name: s.estimation_state for name, s in self.states.items()}}
        reasons = []
        if self.source_problem:
            reasons.append(self.source_problem)
        elif not self.source_open:
            reasons.append("the prediction log is not open yet")
        if self.stream_problem:
            reasons.append(self.stream_problem)
        for name, s in self.states.items():
            if s.reference_error:
                reasons.append(f"reference for model {name} not loaded: {s.reference_error}")
            elif s.reference is None and s.cfg.reference.first is None:
                reasons.append(f"reference for model {name} not loaded yet ({s.cfg.reference.path})")
        if reasons:
            detail["reason"] = "; ".join(reasons)
        return ready, detail


def _pick(values: Sequence, idx: list[int]) -> list:
    """``[values[i] for i in idx]`` at C speed (itemgetter)."""
    if len(idx) == 1:
        return [values[idx[0]]]
    return list(itemgetter(*idx)(values)) if idx else []


def _observe(histograms: dict[str, Histogram], key: str, bounds: Sequence[float], seconds: float) -> None:
    """Observe one duration into ``histograms[key]``, created on first use (an unforeseen source)."""
    hist = histograms.get(key)
    if hist is None:
        hist = histograms[key] = Histogram(bounds)
    hist.observe(np.array([seconds]))


def _loop(name: str, interval: float, fn, stop: threading.Event) -> threading.Thread:
    def run() -> None:
        while not stop.wait(interval):
            try:
                fn()
            except Exception:  # noqa: BLE001 - one failed pass (a fit, a refresh) must not end the loop
                log.exception("%s failed; retrying in %g s", name, interval)
    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    return t
