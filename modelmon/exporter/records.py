"""Parse a batch of prediction-log lines into per-model columns.

One pass classifies each record (prediction, label, or rejected with a reason); the columns
that drive the metrics (timestamps, latencies, scores, features) are then converted with numpy
in bulk. Rejections carry the line index so that POST /ingest can report them per record.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Sequence

import numpy as np
import orjson

from modelmon.config import Config, ModelConfig
from modelmon.exporter.reference import category_string

STATUSES = ("ok", "error")
_NUMBER_TYPES = (int, float)
_NONE = type(None)


@dataclass
class Reject:
    index: int  # position of the line in the batch
    reason: str  # invalid_json | not_object | missing_field | bad_type | bad_value | unknown_model
    message: str


@dataclass
class PredictionColumns:
    """Prediction records of one model, as columns aligned by position."""

    ts: np.ndarray  # float64 epoch seconds
    ids: list[str | None]
    versions: list[str]
    status_ok: np.ndarray  # bool
    latency_s: np.ndarray  # float64, NaN when absent
    predictions: list[Any]  # raw values (None for errors)
    scores: np.ndarray  # float64 positive-class score, NaN when absent (binary)
    score_maps: list[dict | None]  # multiclass `scores`
    labels: list[Any]  # inline labels (None when absent)
    features: dict[str, np.ndarray]  # numeric: float64 with NaN; categorical: object with None

    def __len__(self) -> int:
        return len(self.ts)


@dataclass
class LabelColumns:
    ids: list[str]
    labels: list[Any]
    ts: np.ndarray  # float64, NaN when the label record has no ts


@dataclass
class ParsedBatch:
    predictions: dict[str, PredictionColumns] = field(default_factory=dict)
    labels: dict[str, LabelColumns] = field(default_factory=dict)
    rejects: list[Reject] = field(default_factory=list)
    accepted: int = 0


def parse_timestamps(values: Sequence[Any]) -> tuple[np.ndarray, list[int]]:
    """RFC 3339 strings or epoch seconds -> float64 epoch seconds, plus indices that failed.

    The common UTC form ('...Z') goes through numpy's vectorised ISO parser; other offsets
    fall back to datetime.fromisoformat one by one.
    """
    n = len(values)
    out = np.full(n, np.nan)
    bad: list[int] = []
    z_idx: list[int] = []
    z_str: list[str] = []
    for i, v in enumerate(values):
        t = type(v)
        if t is str:
            if v.endswith("Z") and 19 <= len(v) <= 30:
                z_idx.append(i)
                z_str.append(v[:-1])
            else:
                out[i] = _parse_iso(v)
        elif t in _NUMBER_TYPES:
            out[i] = float(v)
        else:
            bad.append(i)
    if z_idx:
        try:
            parsed = np.array(z_str, dtype="datetime64[us]")
            out[z_idx] = parsed.astype(np.int64) / 1e6
        except ValueError:
            for i, s in zip(z_idx, z_str):
                out[i] = _parse_iso(s + "Z")
    bad.extend(int(i) for i in np.flatnonzero(~np.isfinite(out)) if i not in set(bad))
    return out, sorted(set(bad))


def _parse_iso(s: str) -> float:
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return math.nan
    if dt.tzinfo is None:
        return math.nan  # RFC 3339 requires an offset; a naive time would be silently ambiguous
    return dt.timestamp()


def _is_number(v: Any) -> bool:
    return type(v) in _NUMBER_TYPES and math.isfinite(v)


class RecordParser:
    """Turns raw lines into ParsedBatch for the models of a config."""

    def __init__(self, config: Config):
        self.models: dict[str, ModelConfig] = {m.name: m for m in config.models}

    def parse_lines(self, lines: Sequence[bytes]) -> ParsedBatch:
        objs: list[Any] = []
        rejects: list[Reject] = []
        ok_index: list[int] = []
        try:  # one C call for the whole batch; a single bad line sends us to the per-line path
            objs = orjson.loads(b"[" + b",".join(lines) + b"]") if lines else []
            ok_index = list(range(len(objs)))
            if len(objs) != len(lines):  # a line holding "1,2" would shift positions
                raise orjson.JSONDecodeError("count mismatch", "", 0)
        except orjson.JSONDecodeError:
            objs, ok_index = [], []
            for i, line in enumerate(lines):
                try:
                    objs.append(orjson.loads(line))
                    ok_index.append(i)
                except orjson.JSONDecodeError as e:
                    rejects.append(Reject(i, "invalid_json", f"not valid JSON: {e}"))
        batch = self.parse_objects(objs, ok_index)
        batch.rejects = sorted(rejects + batch.rejects, key=lambda r: r.index)
        return batch

    def parse_objects(self, objs: Sequence[Any], index: Sequence[int] | None = None) -> ParsedBatch:
        index = list(range(len(objs))) if index is None else index
        batch = ParsedBatch()
        rejects = batch.rejects
        groups_pred: dict[str, list[tuple[int, dict]]] = {}
        groups_label: dict[str, list[tuple[int, dict]]] = {}
        for pos, obj in zip(index, objs):
            if type(obj) is not dict:
                rejects.append(Reject(pos, "not_object", "a record must be a JSON object"))
                continue
            model = obj.get("model")
            if model is None:
                rejects.append(Reject(pos, "missing_field", "missing field 'model'"))
                continue
            if type(model) is not str:
                rejects.append(Reject(pos, "bad_type", "'model' must be a string"))
                continue
            if model not in self.models:
                rejects.append(Reject(pos, "unknown_model", f"model {model[:100]!r} is not in the config"))
                continue
            if "prediction" in obj or "status" in obj:
                groups_pred.setdefault(model, []).append((pos, obj))
            elif "label" in obj:
                groups_label.setdefault(model, []).append((pos, obj))
            else:
                rejects.append(Reject(pos, "missing_field",
                                      "a record needs 'prediction' (or 'status') or, for a late label, 'label'"))
        for model, items in groups_pred.items():
            cols = self._prediction_columns(self.models[model], items, rejects)
            if cols is not None:
                batch.predictions[model] = cols
                batch.accepted += len(cols)
        for model, items in groups_label.items():
            cols = self._label_columns(items, rejects)
            if cols is not None:
                batch.labels[model] = cols
                batch.accepted += len(cols.ids)
        return batch

    # ------------------------------------------------------------------ predictions

    def _prediction_columns(self, m: ModelConfig, items: list[tuple[int, dict]],
                            rejects: list[Reject]) -> PredictionColumns | None:
        ts, bad_ts = parse_timestamps([o.get("ts") for _, o in items])
        keep = np.ones(len(items), dtype=bool)
        for i in bad_ts:
            pos, o = items[i]
            reason = "missing_field" if o.get("ts") is None else "bad_value"
            rejects.append(Reject(pos, reason, f"'ts' must be RFC 3339 with an offset or epoch seconds, "
                                               f"got {str(o.get('ts'))[:60]!r}"))
            keep[i] = False
        for i, (pos, o) in enumerate(items):
            if not keep[i]:
                continue
            err = self._check_prediction(m, o)
            if err is not None:
                rejects.append(Reject(pos, err[0], err[1]))
                keep[i] = False
        if not keep.all():
            items = [it for it, k in zip(items, keep) if k]
            ts = ts[keep]
        if not items:
            return None
        objs = [o for _, o in items]
        status_ok = np.array([o.get("status", "ok") == "ok" for o in objs], dtype=bool)
        latency_ms = np.array([o.get("latency_ms") for o in objs], dtype=np.float64)  # None -> NaN
        scores = np.array([o.get("score") for o in objs], dtype=np.float64) if m.task == "binary" \
            else np.full(len(objs), np.nan)
        feats = [o.get("features") or {} for o in objs]
        features: dict[str, np.ndarray] = {}
        for f in m.numeric_features:
            features[f] = np.array([d.get(f) for d in feats], dtype=np.float64)
        for f in m.categorical_features:
            col = np.empty(len(feats), dtype=object)
            col[:] = [category_string(d.get(f)) for d in feats]
            features[f] = col
        return PredictionColumns(
            ts=ts,
            ids=[_id(o.get("id")) for o in objs],
            versions=[_version(o.get("version")) for o in objs],
            status_ok=status_ok,
            latency_s=latency_ms / 1000.0,
            predictions=[o.get("prediction") for o in objs],
            scores=scores,
            score_maps=[o.get("scores") for o in objs] if m.task == "multiclass" else [],
            labels=[o.get("label") for o in objs],
            features=features,
        )

    def _check_prediction(self, m: ModelConfig, o: dict) -> tuple[str, str] | None:
        """Schema checks on one prediction record; returns (reason, message) or None."""
        status = o.get("status", "ok")
        if status not in STATUSES:
            return "bad_value", f"'status' must be 'ok' or 'error', got {str(status)[:40]!r}"
        pred = o.get("prediction")
        if status == "ok":
            if pred is None:
                return "missing_field", "an 'ok' record needs 'prediction'"
            if m.task == "regression":
                if not _is_number(pred) or type(pred) is bool:
                    return "bad_type", "'prediction' must be a finite number for a regression model"
            elif type(pred) not in (str, int, bool) and not (type(pred) is float and pred.is_integer()):
                return "bad_type", "'prediction' must be a class value (string, integer or boolean)"
        for key in ("latency_ms", "score"):
            v = o.get(key)
            if v is not None:
                if not _is_number(v) or type(v) is bool:
                    return "bad_type", f"'{key}' must be a number"
                if v < 0 or (key == "score" and v > 1):
                    return "bad_value", f"'{key}' out of range: {v}"
        if m.task == "multiclass" and o.get("scores") is not None:
            sc = o["scores"]
            if type(sc) is not dict or not all(_is_number(x) and 0 <= x <= 1 for x in sc.values()):
                return "bad_type", "'scores' must map class -> probability in [0, 1]"
        label = o.get("label")
        if label is not None:
            err = _check_label(m, label)
            if err:
                return err
        feats = o.get("features")
        if feats is not None:
            if type(feats) is not dict:
                return "bad_type", "'features' must be an object"
            for f in m.numeric_features:
                v = feats.get(f)
                if v is not None and (type(v) not in _NUMBER_TYPES or not math.isfinite(v)):
                    return "bad_type", f"feature {f!r} must be a finite number or null"
            for f in m.categorical_features:
                v = feats.get(f)
                if v is not None and type(v) not in (str, int, bool, float):
                    return "bad_type", f"feature {f!r} must be a string, number, boolean or null"
        v = o.get("id")
        if v is not None and type(v) not in (str, int):
            return "bad_type", "'id' must be a string or integer"
        v = o.get("version")
        if v is not None and type(v) not in (str, int, float):
            return "bad_type", "'version' must be a string"
        return None

    # ------------------------------------------------------------------ late labels

    def _label_columns(self, items: list[tuple[int, dict]], rejects: list[Reject]) -> LabelColumns | None:
        ids: list[str] = []
        labels: list[Any] = []
        raw_ts: list[Any] = []
        for pos, o in items:
            rid = o.get("id")
            if rid is None:
                rejects.append(Reject(pos, "missing_field", "a late label needs the 'id' of its prediction"))
                continue
            if type(rid) not in (str, int):
                rejects.append(Reject(pos, "bad_type", "'id' must be a string or integer"))
                continue
            err = _check_label(self.models[o["model"]], o.get("label"))
            if err:
                rejects.append(Reject(pos, *err))
                continue
            ts = o.get("ts")
            if ts is not None:
                t, bad = parse_timestamps([ts])
                if bad:
                    rejects.append(Reject(pos, "bad_value", "'ts' must be RFC 3339 with an offset or epoch seconds"))
                    continue
            ids.append(str(rid))
            labels.append(o["label"])
            raw_ts.append(ts)
        if not ids:
            return None
        ts_arr = np.full(len(ids), np.nan)
        have = [i for i, t in enumerate(raw_ts) if t is not None]
        if have:
            ts_arr[have], _ = parse_timestamps([raw_ts[i] for i in have])
        return LabelColumns(ids=ids, labels=labels, ts=ts_arr)


def _check_label(m: ModelConfig, label: Any) -> tuple[str, str] | None:
    if label is None:
        return "missing_field", "missing field 'label'"
    if m.task == "regression":
        if not _is_number(label) or type(label) is bool:
            return "bad_type", "'label' must be a finite number for a regression model"
    elif type(label) not in (str, int, bool) and not (type(label) is float and label.is_integer()):
        return "bad_type", "'label' must be a class value (string, integer or boolean)"
    return None


def class_key(v: Any) -> str:
    """Normalise a class value so 1, 1.0, True and "1" compare equal as "1"."""
    t = type(v)
    if t is bool:
        return "1" if v else "0"
    if t is float and v.is_integer():
        return str(int(v))
    return str(v)


def _id(v: Any) -> str | None:
    return None if v is None else str(v)


def _version(v: Any) -> str:
    return "unknown" if v is None or v == "" else str(v)


def iter_lines(data: bytes) -> Iterable[bytes]:
    """Split an NDJSON body into non-empty lines (\\r\\n tolerated)."""
    for line in data.split(b"\n"):
        line = line.strip()
        if line:
            yield line
