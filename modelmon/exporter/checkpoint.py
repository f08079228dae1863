"""Windows and pending label joins survive a restart.

Counters restart from zero, as any exporter's do, and PromQL's rate() handles the reset. The
windows and the join buffer are different: without a checkpoint a restart blanks the quality and
drift gauges until the windows refill, and drops every prediction still waiting for its label
(up to `label_ttl`, seven days by default), so those labels later count as unmatched and the
quality window misses them.

The checkpoint is one zip file: numeric columns as .npy members (read back with
allow_pickle=False), object columns (class values, categories) as JSON, and a JSON manifest.
It is written atomically (temp file, fsync, rename) by the thread that commits the log offset,
right after a commit, so checkpoint and offset agree: a graceful restart resumes exactly; after a
crash the windows lack at most the records of the last interval (still counted, as usual).
Only that cut is taken under the exporter lock (`_capture`: immutable window views, copies of the
budgets and of the join buffer's entry list); the columns are concatenated and the archive built
and written after the lock is released (`_archive`), so ingest and /metrics wait microseconds,
not the length of a 1M-record serialisation.
A model whose task, features or classes changed since the checkpoint starts cold, with a log line.
"""
from __future__ import annotations

import io
import logging
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from modelmon.config import ModelConfig
from modelmon.exporter.histogram import OTHER
from modelmon.exporter.joiner import Pending
from modelmon.exporter.model_state import PRED, ModelState
from modelmon.exporter.reference import object_array
from modelmon.exporter.windows import SlidingWindow, WindowView, concat
from modelmon.files import write_atomically

log = logging.getLogger("modelmon.checkpoint")

FORMAT = 2  # 2: multiclass quality windows hold class keys (1: codes into the class budget)
READABLE_FORMATS = (1, 2)
DEFAULT_INTERVAL_SECONDS = 60.0


class CheckpointError(Exception):
    """The checkpoint file cannot be used (corrupt, another format, unreadable)."""


def fingerprint(m: ModelConfig) -> dict[str, Any]:
    """What the saved columns depend on; windows sizes may change freely (they trim on restore)."""
    return {"task": m.task, "numeric": list(m.numeric_features), "categorical": list(m.categorical_features),
            "classes": [str(c) for c in (m.classes or ())], "positive_class": str(m.positive_class)}


class Checkpointer:
    """Saves and restores the exporter's windows, budgets and join buffer."""

    def __init__(self, exporter, path: Path, interval: float = DEFAULT_INTERVAL_SECONDS):
        self.exporter = exporter
        self.path = Path(path)
        self.interval = interval
        self._last = time.monotonic()
        self._saved_generation = -1  # records accepted when last saved: an idle exporter rewrites nothing
        self._write_lock = threading.Lock()  # the shutdown save may race a periodic one

    # ------------------------------------------------------------------ save

    def maybe_save(self) -> None:
        """Save when the interval has passed; failures are logged and counted, never raised."""
        if self.interval > 0 and time.monotonic() - self._last >= self.interval:
            self.save_if_changed()

    def save_if_changed(self) -> None:
        """Save unless no record was accepted since the last save (then the file is still current)."""
        with self.exporter.lock:  # ingest threads add keys to the counts being summed
            unchanged = _generation(self.exporter) == self._saved_generation
            if unchanged:
                self.exporter.checkpoint_saved_at = self.exporter.clock()
        if unchanged:
            self._last = time.monotonic()
            return
        self.save()

    def save(self) -> bool:
        self._last = time.monotonic()
        ex = self.exporter
        try:
            with self._write_lock:
                started = time.perf_counter()
                # A consistent cut, taken where it always was (right after the offset commit): only
                # immutable window views and small copies are captured under the lock; the columns
                # are concatenated and the archive built and written after it is released.
                with ex.held("checkpoint"):
                    captured = _capture(ex)
                    generation = _generation(ex)
                body = _archive(captured)
                write_atomically(self.path, body)
            self._saved_generation = generation
            with ex.lock:
                ex.checkpoint_saved_at = ex.clock()
            log.debug("checkpoint of %d bytes written to %s in %.3f s", len(body), self.path,
                      time.perf_counter() - started)
            return True
        except Exception as e:  # noqa: BLE001 - a failed checkpoint must never stop ingestion
            ex.state_write_failed("checkpoint", OSError(f"{self.path}: {e}"))
            return False

    # ------------------------------------------------------------------ restore

    def restore(self) -> bool:
        """Load the checkpoint into a freshly started exporter. False when there is none or it is unusable."""
        if not self.path.exists():
            return False
        try:
            restored = _restore(self.exporter, self.path)
        except CheckpointError as e:
            log.error("ignoring the checkpoint %s (%s): windows start empty", self.path, e)
            return False
        log.info("checkpoint %s restored: windows of %s, %d predictions waiting for labels", self.path,
                 ", ".join(restored) or "no model", len(self.exporter.joiner))
        return True


def _generation(ex) -> int:
    """Changes only when records are accepted: nothing else moves the windows or the join buffer."""
    return sum(ex.ingested.values())


# ---------------------------------------------------------------------- archive format


@dataclass(frozen=True)
class ModelCapture:
    """One model's saved state at the cut: immutable window views and copies of small mutables."""

    entry: dict[str, Any]  # the manifest entry (fingerprint, last_ts, budgets, quality versions)
    quality: tuple[WindowView, ...]  # aligned with entry["quality"]
    drift: WindowView
    collecting: tuple[dict[str, np.ndarray], ...]  # chunks of a reference being collected
    outputs: tuple[WindowView, ...] = ()  # aligned with entry["outputs"]: each version's output window
    version_drift: tuple[WindowView, ...] = ()  # aligned with entry["version_drift"]: each version's features


@dataclass(frozen=True)
class Capture:
    """Everything the archive is built from, taken under the exporter lock (see `_capture`)."""

    written_at: float
    models: dict[str, ModelCapture]
    pending_keys: list  # [(model, id)], oldest first
    pending: list  # [Pending], aligned; entries are never modified once added (a re-sent id replaces)


def _capture(ex) -> Capture:
    """Under the exporter lock: a consistent cut, cheap enough to hold the lock for.

    Window views are immutable (see windows.py), chunks of a reference being collected are never
    written after they are appended, and join-buffer entries are never modified (a re-sent id
    replaces its entry), so only the containers are copied here; nothing is concatenated."""
    written_at = ex.clock()
    models = {name: _capture_model(state) for name, state in ex.states.items()}
    ids, entries = ex.joiner.snapshot()
    return Capture(written_at, models, ids, entries)


def _capture_model(state: ModelState) -> ModelCapture:
    entry = {"fingerprint": fingerprint(state.cfg), "last_ts": state.last_ts,
             "versions": list(state.versions.known), "classes": list(state.classes.known),
             "seen": {"versions": dict(state.versions.last_seen), "classes": dict(state.classes.last_seen)},
             "quality": sorted(state.quality_windows), "outputs": sorted(state.output_windows),
             "version_drift": sorted(state.version_drift_windows)}
    quality = tuple(state.quality_windows[v].view() for v in entry["quality"])
    outputs = tuple(state.output_windows[v].view() for v in entry["outputs"])
    version_drift = tuple(state.version_drift_windows[v].view() for v in entry["version_drift"])
    return ModelCapture(entry, quality, state.drift_window.view(), state.collecting_chunks(), outputs, version_drift)


def _archive(captured: Capture) -> bytes:
    """The checkpoint file's bytes (no lock needed: reads only `captured`)."""
    buf = io.BytesIO()
    manifest: dict[str, Any] = {"format": FORMAT, "written_at": captured.written_at, "models": {}}
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, model in captured.models.items():
            manifest["models"][name] = _save_model(zf, f"models/{name}", model)
        keys, pending = captured.pending_keys, captured.pending
        _put_columns(zf, "pending", {
            "model": object_array([k[0] for k in keys]),
            "id": object_array([k[1] for k in keys]),
            "version": object_array([p.version for p in pending]),
            "ts": np.array([p.ts for p in pending], dtype=np.float64),
            "prediction": object_array([p.prediction for p in pending]),
            "score": object_array([p.score for p in pending]),
        })
        zf.writestr("manifest.json", orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS))
    return buf.getvalue()


def _save_model(zf: zipfile.ZipFile, prefix: str, model: ModelCapture) -> dict[str, Any]:
    entry = dict(model.entry)
    for i, view in enumerate(model.quality):
        _put_columns(zf, f"{prefix}/quality/{i}", concat(view.chunks))
    _put_columns(zf, f"{prefix}/drift", concat(model.drift.chunks))
    for i, view in enumerate(model.outputs):
        _put_columns(zf, f"{prefix}/outputs/{i}", concat(view.chunks))
    for i, view in enumerate(model.version_drift):
        _put_columns(zf, f"{prefix}/version_drift/{i}", concat(view.chunks))
    if model.collecting:
        _put_columns(zf, f"{prefix}/collecting", concat(model.collecting))
        entry["collecting"] = True
    return entry


def _restore(ex, path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            manifest = orjson.loads(zf.read("manifest.json"))
            if manifest.get("format") not in READABLE_FORMATS:
                raise CheckpointError(f"format {manifest.get('format')!r}, this modelmon reads formats "
                                      f"{', '.join(map(str, READABLE_FORMATS))}")
            loaded = {name: _load_model(zf, f"models/{name}", entry)
                      for name, entry in manifest["models"].items() if name in ex.states}
            pending = _get_columns(zf, "pending")
            age = ex.clock() - float(manifest["written_at"])
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever is wrong with the file, start cold rather than crash
        raise CheckpointError(f"{type(e).__name__}: {e}") from e

    log.info("checkpoint %s is %.0f s old", path, age)
    if manifest["format"] == 1:
        for entry, quality, _, _ in loaded.values():
            _codes_to_keys(entry, quality)
    # The event-time guard applies to what was saved too: a clock poisoned before the guard
    # existed (or by a wrong system clock) must not come back with the restart.
    horizon = ex.clock() + ex.config.exporter.max_clock_skew_seconds
    written_at = float(manifest["written_at"])
    restored = []
    with ex.lock:
        for name, (entry, quality, drift_cols, collecting) in loaded.items():
            state = ex.states[name]
            if entry["fingerprint"] != fingerprint(state.cfg):
                log.warning("model %s changed since the checkpoint (task, features or classes): its windows "
                            "start empty", name)
                continue
            dropped = _clamp(entry, quality, drift_cols, collecting, horizon)
            if dropped:
                log.warning("model %s: %d saved record(s) stamped more than the allowed clock skew in the future "
                            "were dropped from the checkpoint", name, dropped)
            _apply_model(state, entry, quality, drift_cols, collecting, written_at)
            restored.append(name)
        usable = set(restored)
        future = 0
        for i, model in enumerate(pending.get("model", [])):
            if model not in usable:
                continue
            if float(pending["ts"][i]) > horizon:
                future += 1
                continue
            ex.joiner.restore(model, pending["id"][i], Pending(
                model, pending["version"][i], float(pending["ts"][i]), pending["prediction"][i],
                pending["score"][i]))
        if future:
            log.warning("%d saved prediction(s) waiting for labels were stamped in the future and dropped", future)
    return restored


def _clamp(entry: dict, quality: dict, drift_cols: dict, collecting: dict | None, horizon: float) -> int:
    """Drop saved rows stamped past `horizon` and pull `last_ts` back to it; returns rows dropped."""
    dropped = 0
    newest = []
    for cols in [*quality.values(), drift_cols, collecting or {}]:
        if not cols:
            continue
        keep = ~(cols["ts"] > horizon)
        if not keep.all():
            dropped += int((~keep).sum())
            for k in list(cols):
                cols[k] = cols[k][keep]
        if len(cols["ts"]):
            newest.append(float(np.nanmax(cols["ts"])))
    if entry["last_ts"] is not None and entry["last_ts"] > horizon:
        # The newest sane event time saved, so time windows are measured from it, not from the horizon.
        entry["last_ts"] = max(newest) if newest else None
    return dropped


def _codes_to_keys(entry: dict, quality: dict) -> None:
    """Format 1 kept multiclass classes as codes into the saved class list (-1: folded)."""
    if entry["fingerprint"]["task"] != "multiclass":
        return
    table = object_array([*entry["classes"], OTHER])  # code -1 indexes the last entry: __other__
    for cols in quality.values():
        for key in ("y_true", "y_pred"):
            if key in cols and cols[key].dtype != object:
                cols[key] = table[cols[key].astype(np.int64)]


QUALITY_COLUMNS = {"binary": {"y_true", "y_pred", "score", "ts"}, "multiclass": {"y_true", "y_pred", "proba", "ts"},
                   "regression": {"y_true", "y_pred", "ts"}}


def _load_model(zf: zipfile.ZipFile, prefix: str, entry: dict):
    """Read (and check) everything of one model first, so that applying it cannot fail half-way."""
    fp = entry["fingerprint"]
    quality = {str(v): _get_columns(zf, f"{prefix}/quality/{i}") for i, v in enumerate(entry["quality"])}
    for version, cols in quality.items():
        _expect(cols, QUALITY_COLUMNS.get(fp["task"], set()), f"{prefix} quality window {version!r}")
    window_keys = {"ts", PRED, *fp["numeric"], *fp["categorical"]}
    drift_cols = _get_columns(zf, f"{prefix}/drift")
    _expect(drift_cols, window_keys, f"{prefix} drift window")
    collecting = _get_columns(zf, f"{prefix}/collecting") if entry.get("collecting") else None
    if collecting is not None:
        _expect(collecting, window_keys, f"{prefix} reference being collected")
    # Output windows per version (absent from checkpoints written before versions had their own).
    outputs = {str(v): _get_columns(zf, f"{prefix}/outputs/{i}") for i, v in enumerate(entry.get("outputs", []))}
    for version, cols in outputs.items():
        _expect(cols, {"ts", PRED}, f"{prefix} output window {version!r}")
    version_drift = {str(v): _get_columns(zf, f"{prefix}/version_drift/{i}")
                     for i, v in enumerate(entry.get("version_drift", []))}
    for version, cols in version_drift.items():
        _expect(cols, window_keys - {PRED}, f"{prefix} drift window of version {version!r}")
    entry = {**entry, "output_columns": outputs, "version_drift_columns": version_drift}
    return entry, quality, drift_cols, collecting


def _expect(cols: dict, keys: set[str], what: str) -> None:
    if cols and set(cols) != keys:
        raise CheckpointError(f"{what}: columns {sorted(cols)}, expected {sorted(keys)}")


def _apply_model(state: ModelState, entry: dict, quality: dict, drift_cols: dict, collecting: dict | None,
                 written_at: float) -> None:
    # Label values idle past exporter.label_idle do not get their budget slot back (nor their window).
    seen = entry.get("seen", {})
    for budget, key in ((state.versions, "versions"), (state.classes, "classes")):
        for value in entry[key]:
            budget.admit(value, float(seen.get(key, {}).get(value, written_at)))
    if entry["last_ts"] is not None:
        state.last_ts = entry["last_ts"]
    for version, cols in quality.items():
        if version not in state.versions.known and version != OTHER:
            continue
        if cols and len(cols["ts"]):
            win = state.quality_windows[version] = SlidingWindow(state.cfg.quality_window)
            win.append(cols)  # trims to the configured window, which may have shrunk
    if drift_cols and len(drift_cols["ts"]):
        state.drift_window.append(drift_cols)
    for windows, make in (("output_columns", state.output_window),
                          ("version_drift_columns", state.version_drift_window)):
        for version, cols in entry.get(windows, {}).items():
            if (version in state.versions.known or version == OTHER) and cols and len(cols["ts"]):
                make(version).append(cols)
    if collecting and len(collecting["ts"]):
        state.resume_collecting(collecting)
    state.dirty = True


# ---------------------------------------------------------------------- columns <-> zip members


def _put_columns(zf: zipfile.ZipFile, prefix: str, columns: dict[str, np.ndarray]) -> None:
    names = []
    for key, arr in columns.items():
        names.append(key)
        if arr.dtype == object:
            zf.writestr(f"{prefix}/{key}.json", orjson.dumps([_plain(v) for v in arr.tolist()]))
        else:
            out = io.BytesIO()
            np.save(out, np.ascontiguousarray(arr), allow_pickle=False)
            zf.writestr(f"{prefix}/{key}.npy", out.getvalue())
    zf.writestr(f"{prefix}/columns.json", orjson.dumps(names))


def _get_columns(zf: zipfile.ZipFile, prefix: str) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key in orjson.loads(zf.read(f"{prefix}/columns.json")):
        member = f"{prefix}/{key}"
        if f"{member}.npy" in zf.NameToInfo:
            out[key] = np.load(io.BytesIO(zf.read(f"{member}.npy")), allow_pickle=False)
        else:
            out[key] = object_array(orjson.loads(zf.read(f"{member}.json")))
    lengths = {len(v) for v in out.values()}
    if len(lengths) > 1:
        raise CheckpointError(f"{prefix}: columns of different lengths")
    return out if lengths != {0} else {}


def _plain(v: Any) -> Any:
    """JSON-ready: numpy scalars become Python numbers, NaN becomes None (read back as missing)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v != v:
        return None
    return v
