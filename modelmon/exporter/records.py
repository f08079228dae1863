"""Parse a batch of prediction-log lines into per-model columns.

Records are grouped by model, then every field is pulled out as a column and validated a
column at a time: a C-level type scan (`set(map(type, col))`) proves most columns clean at once,
and only a column holding a suspicious type is checked record by record. Rejections carry the
line index, reason and message, so POST /ingest can report them per record.
"""
from __future__ import annotations

import heapq
import math
import time
import warnings
from dataclasses import dataclass, field
from itertools import chain
from datetime import datetime, timezone
from operator import itemgetter
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import orjson

from modelmon.config import Config, ModelConfig
from modelmon.contract import class_key, class_keys  # noqa: F401 - re-exported for the exporter
from modelmon.exporter.histogram import shorten
from modelmon.exporter.reference import category_string

# numpy parses "...Z" and "+02:00" offsets (converting to UTC) but warns that datetime64 is naive.
warnings.filterwarnings("ignore", message="no explicit representation of timezones", category=UserWarning)

STATUSES = ("ok", "error")
NONE = type(None)
NUMBER = frozenset({int, float})
NUMBER_OR_NONE = frozenset({int, float, NONE})
CLASS_TYPES = frozenset({str, int, bool, float})  # float only when integral, checked separately
CATEGORY_OK = frozenset({str, NONE})


MAX_LISTED_REJECTS = 100  # rejects kept with their message per batch; the counts stay exact
MAX_ID_LENGTH = 1024  # a request id longer than this is refused: ids are kept in the join buffer


@dataclass
class Reject:
    index: int  # position of the line in the batch
    reason: str  # invalid_json | not_object | missing_field | bad_type | bad_value | bad_timestamp | unknown_model
    message: str


class RejectLog:
    """Every reject counted by reason; only the first `keep` (by index) kept with a message.

    A body of a million bad records costs a counter, not a million error objects.
    """

    def __init__(self, keep: int = MAX_LISTED_REJECTS):
        self.keep = keep
        self.counts: dict[str, int] = {}
        self._heap: list[tuple[int, int, Reject]] = []  # (-index, seq, reject): the kept ones, largest index on top
        self._seq = 0

    def __len__(self) -> int:
        return sum(self.counts.values())

    def __bool__(self) -> bool:
        return bool(self.counts)

    def add(self, index: int, reason: str, message: str | Callable[[], str]) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        self._offer(index, reason, message)

    def add_many(self, count: int, first: Sequence[int], reason: str, message: str | Callable[[int], str]) -> None:
        """Count `count` rejects under `reason`; `first` holds the indexes of the first of them
        (ascending, at least `keep` when there are that many). `message(k)` is built only for
        the k-th one when it is kept."""
        if not count:
            return
        self.counts[reason] = self.counts.get(reason, 0) + count
        for k, index in enumerate(first[:self.keep]):
            self._offer(int(index), reason, (lambda k=k: message(k)) if callable(message) else message)

    def _offer(self, index: int, reason: str, message) -> None:
        heap = self._heap
        if len(heap) >= self.keep and index >= -heap[0][0]:
            return
        reject = Reject(index, reason, message() if callable(message) else message)
        self._seq += 1
        if len(heap) < self.keep:
            heapq.heappush(heap, (-index, self._seq, reject))
        else:
            heapq.heapreplace(heap, (-index, self._seq, reject))

    def listed(self) -> list[Reject]:
        """The kept rejects, by index."""
        return sorted((r for _, _, r in self._heap), key=lambda r: r.index)

    def remap(self, index: Sequence[int]) -> None:
        """Renumber the kept rejects: a reject at position i becomes one at ``index[i]`` (ascending),
        for a log of a subset of a batch's lines."""
        for _, _, r in self._heap:
            r.index = int(index[r.index])
        self._heap = [(-r.index, seq, r) for _, seq, r in self._heap]
        heapq.heapify(self._heap)

    def merge(self, other: "RejectLog", offset: int = 0) -> None:
        for reason, n in other.counts.items():
            self.counts[reason] = self.counts.get(reason, 0) + n
        for r in other.listed():
            self._offer(r.index + offset, r.reason, r.message)


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
    shadow: np.ndarray | None = None  # bool: predicted but not served (None: no shadow record)
    positions: np.ndarray | None = None  # index of each record's line in the parsed batch
    # Where `labels` / `ids` are not None, when the parser knows it without a pass over them (columnar)
    label_present: np.ndarray | None = None
    id_present: np.ndarray | None = None
    # The columnar parser's dictionary encoding of categorical features: feature -> (code per row, -1
    # for null; the distinct values). Lets the bin counters look up each distinct value once.
    categories: dict[str, tuple[np.ndarray, list]] | None = None
    # (FeatureBins, its counts of this batch's served records), counted before the exporter lock was
    # taken (Exporter._ingest); used if that FeatureBins is still the model's when the batch is applied.
    binned: Any = None

    def __len__(self) -> int:
        return len(self.ts)


@dataclass
class LabelColumns:
    ids: list[str]
    labels: list[Any]
    ts: np.ndarray  # float64, NaN when the label record has no ts
    positions: np.ndarray | None = None  # index of each record's line in the parsed batch


@dataclass
class ParsedBatch:
    predictions: dict[str, PredictionColumns] = field(default_factory=dict)
    labels: dict[str, LabelColumns] = field(default_factory=dict)
    rejects: RejectLog = field(default_factory=RejectLog)
    accepted: int = 0
    shortened: dict[tuple[str, str], int] = field(default_factory=dict)  # (model, label) -> values cut to length


# ---------------------------------------------------------------------- column helpers


def _types(col: Sequence[Any]) -> set[type]:
    return set(map(type, col))


def _mask(col: Sequence[Any], bad: Callable[[Any], bool]) -> np.ndarray:
    return np.fromiter(map(bad, col), dtype=bool, count=len(col))


def float_column(col: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Numbers (None -> NaN) and a mask of values that are not numbers (booleans included)."""
    if _types(col) <= NUMBER_OR_NONE:
        return np.array(col, dtype=np.float64), np.zeros(len(col), dtype=bool)
    bad = _mask(col, lambda v: type(v) not in NUMBER_OR_NONE)
    clean = [None if b else v for v, b in zip(col, bad)]
    return np.array(clean, dtype=np.float64), bad


def _bad_class_mask(col: Sequence[Any]) -> np.ndarray:
    """Class values must be strings, integers, booleans or integral floats."""
    types = _types(col)
    if types <= {str, int, bool, NONE}:
        return np.zeros(len(col), dtype=bool)
    return _mask(col, lambda v: v is not None and (type(v) not in CLASS_TYPES
                                                   or (type(v) is float and not v.is_integer())))


def parse_timestamps(values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """RFC 3339 strings or epoch seconds -> float64 epoch seconds, and a mask of unparseable ones.

    A string without an offset is read as UTC. All-string batches parse in one numpy call.
    """
    types = _types(values)
    if types == {str}:
        try:
            parsed = np.array(values, dtype="datetime64[us]")
            out = parsed.astype(np.int64) / 1e6
            return out, np.isnat(parsed)
        except ValueError:
            pass  # at least one bad string: fall through to the per-value path
    elif types <= NUMBER:
        out = np.array(values, dtype=np.float64)
        return out, ~np.isfinite(out)
    out = np.array([_parse_one(v) for v in values], dtype=np.float64)
    return out, ~np.isfinite(out)


def _parse_one(v: Any) -> float:
    if type(v) in NUMBER:
        return float(v)
    if type(v) is not str:
        return math.nan
    try:
        dt = datetime.fromisoformat(v)
    except ValueError:
        return math.nan
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _rows(dicts: Sequence[dict], names: Sequence[str]) -> list[tuple]:
    """Feature values as one tuple per record (missing keys -> None)."""
    if len(names) > 1:
        try:
            return list(map(itemgetter(*names), dicts))  # fast path: every record has every key
        except KeyError:
            pass
    return [tuple(map(d.get, names)) for d in dicts]


class _Checks:
    """Records the first failing check of each record of a group into a RejectLog."""

    def __init__(self, positions: Sequence[int], rejects: RejectLog):
        self.positions = positions
        self.bad = np.zeros(len(positions), dtype=bool)
        self.rejects = rejects

    def flag(self, mask: np.ndarray, reason: str, message: str | Callable[[int], str]) -> None:
        new = mask & ~self.bad
        if new.any():
            rows = np.flatnonzero(new)  # ascending, and so are their positions in the batch
            first = [self.positions[i] for i in rows[:self.rejects.keep]]
            self.rejects.add_many(len(rows), first, reason,
                                  (lambda k: message(int(rows[k]))) if callable(message) else message)
            self.bad |= new


# ---------------------------------------------------------------------- parser

_NOT_OBJECT = object()  # stands for "this record is not a JSON object" in the model column


def _bad_model(name: Any) -> tuple[str, Callable[[], str]]:
    if name is _NOT_OBJECT:
        return "not_object", lambda: "a record must be a JSON object"
    if name is None:
        return "missing_field", lambda: "missing field 'model'"
    if type(name) is not str:
        return "bad_type", lambda: "'model' must be a string"
    return "unknown_model", lambda: f"model {name[:100]!r} is not in the config"


class RecordParser:
    """Turns raw lines into a ParsedBatch for the models of a config."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.time):
        self.models: dict[str, ModelConfig] = {m.name: m for m in config.models}
        self.clock = clock  # the exporter's wall clock, for the event-time guard
        self.max_skew = config.exporter.max_clock_skew_seconds
        self.max_age = config.exporter.max_event_age_seconds
        self.max_value_length = config.exporter.max_label_value_length
        self.max_score_classes = config.exporter.max_classes

    def parse_lines(self, lines: Sequence[bytes]) -> ParsedBatch:
        rejects = RejectLog()
        loads = orjson.loads
        try:  # the common case: every line parses (per-line loads beat one joined array)
            objs = [loads(line) for line in lines]
            index: Sequence[int] | None = None
        except orjson.JSONDecodeError:
            objs, index = [], []
            for i, line in enumerate(lines):
                try:
                    objs.append(loads(line))
                    index.append(i)
                except orjson.JSONDecodeError as e:
                    rejects.add(i, "invalid_json", lambda e=e: f"not valid JSON: {e}")
        return self.parse_objects(objs, index, rejects)

    def parse_objects(self, objs: Sequence[Any], index: Sequence[int] | None = None,
                      rejects: RejectLog | None = None) -> ParsedBatch:
        index = range(len(objs)) if index is None else index
        batch = ParsedBatch(rejects=rejects if rejects is not None else RejectLog())
        rejects = batch.rejects
        models = self.models
        names = [o.get("model") if type(o) is dict else _NOT_OBJECT for o in objs]
        if _types(names) != {str} or not set(names) <= models.keys():  # some records have no usable model
            usable = []
            for i, n in enumerate(names):
                if type(n) is str and n in models:
                    usable.append(n)
                else:
                    reason, message = _bad_model(n)
                    rejects.add(index[i], reason, message)
                    usable.append(None)
            names = usable
        distinct = set(names) - {None}
        for model in sorted(distinct):
            sel = [i for i, n in enumerate(names) if n == model] if len(distinct) > 1 or None in names \
                else range(len(objs))
            group = [objs[i] for i in sel]
            # JSON null is the same as an absent field, everywhere (as for the columnar path).
            kinds = [o.get("prediction") is not None or o.get("status") is not None for o in group]
            if all(kinds):
                pred_pos, pred_objs, lab_pos, lab_objs = [index[i] for i in sel], group, [], []
            else:
                pred_pos = [index[i] for i, k in zip(sel, kinds) if k]
                pred_objs = [o for o, k in zip(group, kinds) if k]
                lab_pos, lab_objs = [], []
                for i, o, k in zip(sel, group, kinds):
                    if k:
                        continue
                    if o.get("label") is not None:
                        lab_pos.append(index[i])
                        lab_objs.append(o)
                    else:
                        rejects.add(index[i], "missing_field", "a record needs 'prediction' (or 'status') "
                                                               "or, for a late label, 'id' and 'label'")
            if pred_objs:
                cols = self._predictions(models[model], pred_pos, pred_objs, batch)
                if cols is not None:
                    batch.predictions[model] = cols
                    batch.accepted += len(cols)
            if lab_objs:
                labs = self._labels(models[model], lab_pos, lab_objs, batch)
                if labs is not None:
                    batch.labels[model] = labs
                    batch.accepted += len(labs.ids)
        return batch

    # ------------------------------------------------------------------ shared checks

    def _check_event_time(self, ts: np.ndarray, c: "_Checks", raw: list) -> None:
        """Refuse event times further ahead of the wall clock than the skew, or older than the max age:
        one record stamped in year 5026 must not move the join and window clocks for everyone."""
        now = self.clock()
        future = ts > now + self.max_skew  # NaN compares False: absent/unparseable ts are flagged elsewhere
        c.flag(future, "bad_timestamp",
               lambda i: f"'ts' {str(raw[i])[:40]!r} is more than {self.max_skew:g} s ahead of the exporter's clock")
        if self.max_age is not None:
            c.flag(ts < now - self.max_age, "bad_timestamp",
                   lambda i: f"'ts' {str(raw[i])[:40]!r} is older than exporter.max_event_age ({self.max_age:g} s)")

    def _shorten(self, values: list, batch: ParsedBatch, model: str, label: str) -> list:
        """Label values (a version, or a class as prediction or label) longer than the configured
        length, cut to it with a hash suffix, and counted. A number counts by the key it becomes:
        1e200 is the class "1000…0" (201 characters)."""
        limit = self.max_value_length
        big = 10.0 ** (limit - 2)  # no number below this makes a key longer than the limit
        long = [i for i, v in enumerate(values) if _too_long(v, limit, big)]
        if not long:
            return values
        out = list(values)
        for i in long:
            v = out[i]
            out[i] = shorten(v if type(v) is str else class_key(v), limit)
        batch.shortened[(model, label)] = batch.shortened.get((model, label), 0) + len(long)
        return out

    # ------------------------------------------------------------------ predictions

    def _predictions(self, m: ModelConfig, positions: list[int], objs: list[dict],
                     batch: ParsedBatch) -> PredictionColumns | None:
        n = len(objs)
        c = _Checks(positions, batch.rejects)
        raw_ts = [o.get("ts") for o in objs]
        ts, bad_ts = parse_timestamps(raw_ts)
        missing_ts = np.fromiter((v is None for v in raw_ts), dtype=bool, count=n)
        c.flag(missing_ts, "missing_field", "missing field 'ts'")
        c.flag(bad_ts, "bad_value", lambda i: f"'ts' must be RFC 3339 or epoch seconds, got {str(raw_ts[i])[:60]!r}")
        self._check_event_time(ts, c, raw_ts)

        status = ["ok" if (s := o.get("status")) is None else s for o in objs]
        if _types(status) == {str} and set(status) <= {"ok"}:
            status_ok = np.ones(n, dtype=bool)
        else:
            status_ok = np.fromiter((s == "ok" for s in status), dtype=bool, count=n)
            c.flag(_mask(status, lambda s: s not in STATUSES), "bad_value",
                   lambda i: f"'status' must be 'ok' or 'error', got {str(status[i])[:40]!r}")

        preds = [o.get("prediction") for o in objs]
        c.flag(status_ok & _mask(preds, lambda v: v is None), "missing_field", "an 'ok' record needs 'prediction'")
        if m.task == "regression":
            pred_values, bad = float_column(preds)
            c.flag(bad, "bad_type", "'prediction' must be a number for a regression model")
        else:
            c.flag(_bad_class_mask(preds), "bad_type", "'prediction' must be a class value (string, integer, boolean)")

        latency, bad = float_column([o.get("latency_ms") for o in objs])
        c.flag(bad, "bad_type", "'latency_ms' must be a number")
        c.flag(latency < 0, "bad_value", "'latency_ms' must not be negative")
        if m.task == "binary":
            scores, bad = float_column([o.get("score") for o in objs])
            c.flag(bad, "bad_type", "'score' must be a number")
            c.flag((scores < 0) | (scores > 1), "bad_value", "'score' must be a probability in [0, 1]")
        else:
            scores = np.full(n, np.nan)
        score_maps: list = []
        if m.task == "multiclass":
            score_maps = [o.get("scores") for o in objs]
            c.flag(_mask(score_maps, _bad_score_map), "bad_type", "'scores' must map class -> probability in [0, 1]")
            limit, most = self.max_value_length, max(self.max_score_classes, len(m.classes or ()))
            c.flag(_mask(score_maps, lambda v: type(v) is dict and (
                len(v) > most or any(len(k) > limit for k in v))), "bad_value",
                f"'scores' may hold at most {most} classes, each name at most {limit} characters")

        labels = [o.get("label") for o in objs]
        self._check_label_values(m, labels, c, allow_none=True)

        feats = [o.get("features") for o in objs]
        if _types(feats) != {dict}:
            bad = _mask(feats, lambda f: f is not None and type(f) is not dict)
            c.flag(bad, "bad_type", "'features' must be an object")
            feats = [f if type(f) is dict else {} for f in feats]
        features = self._features(m, feats, c)

        shadow_raw = [o.get("shadow") for o in objs]
        shadow = None
        if not _types(shadow_raw) <= {NONE}:
            c.flag(_mask(shadow_raw, lambda v: v is not None and type(v) is not bool), "bad_type",
                   "'shadow' must be true or false")
            shadow = np.fromiter((v is True for v in shadow_raw), dtype=bool, count=n)

        ids = [o.get("id") for o in objs]
        versions = [o.get("version") for o in objs]
        if not _types(ids) <= {str, NONE}:
            c.flag(_mask(ids, lambda v: type(v) not in (str, int, NONE)), "bad_type", "'id' must be a string or integer")
            ids = [None if v is None else str(v) for v in ids]
        self._check_id_length(ids, c)
        if _types(versions) != {str} or "" in versions:
            c.flag(_mask(versions, lambda v: type(v) not in (str, int, float, NONE)), "bad_type",
                   "'version' must be a string")
            versions = ["unknown" if v is None or v == "" else str(v) for v in versions]
        versions = self._shorten(versions, batch, m.name, "version")
        if m.task != "regression":
            preds = self._shorten(preds, batch, m.name, "class")
            labels = self._shorten(labels, batch, m.name, "class")

        keep = ~c.bad
        if not keep.any():
            return None
        kept_positions = np.asarray(positions)
        if c.bad.any():
            kept_positions = kept_positions[keep]
            sel = np.flatnonzero(keep)
            pick = lambda xs: [xs[i] for i in sel]  # noqa: E731
            ts, status_ok, latency, scores = ts[keep], status_ok[keep], latency[keep], scores[keep]
            features = {k: v[keep] for k, v in features.items()}
            ids, versions, preds, labels = pick(ids), pick(versions), pick(preds), pick(labels)
            score_maps = pick(score_maps) if score_maps else score_maps
            shadow = shadow[keep] if shadow is not None else None
        return PredictionColumns(ts=ts, ids=ids, versions=versions, status_ok=status_ok,
                                 latency_s=latency / 1000.0, predictions=preds, scores=scores,
                                 score_maps=score_maps, labels=labels, features=features, shadow=shadow,
                                 positions=kept_positions)

    @staticmethod
    def _features(m: ModelConfig, feats: list[dict], c: _Checks) -> dict[str, np.ndarray]:
        n = len(feats)
        out: dict[str, np.ndarray] = {}
        if m.numeric_features:
            names = m.numeric_features
            rows = _rows(feats, names)
            try:  # numbers, null, and (leniently) booleans and numeric strings convert in one call
                matrix = np.array(rows, dtype=np.float64).reshape(n, len(names))
            except (ValueError, TypeError, OverflowError):
                bad = _mask(rows, lambda r: any(map(_not_a_number, r)))
                c.flag(bad, "bad_type", lambda i: "numeric feature(s) must be numbers or null: " + ", ".join(
                    f for f, v in zip(names, rows[i]) if _not_a_number(v)))
                matrix = np.array([r if not b else (None,) * len(names) for r, b in zip(rows, bad)],
                                  dtype=np.float64).reshape(n, len(names))
            c.flag(np.isinf(matrix).any(axis=1), "bad_value", "numeric features must be finite")
            for j, f in enumerate(names):
                out[f] = matrix[:, j].copy()  # contiguous: windows slice and concatenate it
        if m.categorical_features:
            names = m.categorical_features
            rows = _rows(feats, names)
            matrix = np.empty((n, len(names)), dtype=object)
            if _types(chain.from_iterable(rows)) <= CATEGORY_OK:
                matrix[:] = rows  # only strings and None: numpy cannot mistake a value for a sequence
            else:
                for i, r in enumerate(rows):
                    for j, v in enumerate(r):
                        matrix[i, j] = v
            for j, f in enumerate(names):
                col = matrix[:, j]
                if not _types(col) <= CATEGORY_OK:
                    bad = _mask(col, lambda v: type(v) in (dict, list))
                    c.flag(bad, "bad_type", f"categorical feature {f!r} must be a string, number, boolean or null")
                    col = np.array([None if type(v) in (dict, list) else category_string(v) for v in col] or [],
                                   dtype=object)
                out[f] = np.ascontiguousarray(col)
        return out

    @staticmethod
    def _check_label_values(m: ModelConfig, labels: list, c: _Checks, allow_none: bool) -> None:
        if not allow_none:
            c.flag(_mask(labels, lambda v: v is None), "missing_field", "missing field 'label'")
        if m.task == "regression":
            values, bad = float_column(labels)
            c.flag(bad, "bad_type", "'label' must be a number for a regression model")
        else:
            c.flag(_bad_class_mask(labels), "bad_type", "'label' must be a class value (string, integer, boolean)")

    @staticmethod
    def _check_id_length(ids: list, c: "_Checks") -> None:
        if max((len(v) for v in ids if type(v) is str), default=0) > MAX_ID_LENGTH:
            c.flag(_mask(ids, lambda v: type(v) is str and len(v) > MAX_ID_LENGTH), "bad_value",
                   f"'id' must be at most {MAX_ID_LENGTH} characters")

    # ------------------------------------------------------------------ late labels

    def _labels(self, m: ModelConfig, positions: list[int], objs: list[dict],
                batch: ParsedBatch) -> LabelColumns | None:
        n = len(objs)
        c = _Checks(positions, batch.rejects)
        ids = [o.get("id") for o in objs]
        c.flag(_mask(ids, lambda v: v is None), "missing_field", "a late label needs the 'id' of its prediction")
        c.flag(_mask(ids, lambda v: type(v) not in (str, int, NONE)), "bad_type", "'id' must be a string or integer")
        self._check_id_length(ids, c)
        labels = [o.get("label") for o in objs]
        self._check_label_values(m, labels, c, allow_none=False)
        raw_ts = [o.get("ts") for o in objs]
        ts = np.full(n, np.nan)
        present = np.fromiter((v is not None for v in raw_ts), dtype=bool, count=n)
        if present.any():
            sel = np.flatnonzero(present)
            parsed, bad = parse_timestamps([raw_ts[i] for i in sel])
            ts[sel] = parsed
            bad_full = np.zeros(n, dtype=bool)
            bad_full[sel] = bad
            c.flag(bad_full, "bad_value", "'ts' must be RFC 3339 or epoch seconds")
            self._check_event_time(ts, c, raw_ts)
        if m.task != "regression":
            labels = self._shorten(labels, batch, m.name, "class")
        keep = np.flatnonzero(~c.bad)
        if keep.size == 0:
            return None
        return LabelColumns(ids=[str(ids[i]) for i in keep], labels=[labels[i] for i in keep], ts=ts[keep],
                            positions=np.asarray(positions)[keep])


def _too_long(v: Any, limit: int, big: float) -> bool:
    """Whether label value `v` (as its class key) is longer than `limit`; `big` skips the key of
    every number too small to be that long, so the common integer classes cost a comparison."""
    t = type(v)
    if t is str:
        return len(v) > limit
    if v is None or t is bool:
        return False
    if t in NUMBER and abs(v) < big:
        return False
    return len(class_key(v)) > limit


def _not_a_number(v: Any) -> bool:
    """What a numeric feature cannot hold. Booleans (0/1) and numeric strings are accepted."""
    if v is None or type(v) in (float, bool):
        return False
    if type(v) is int:
        return abs(v) > 2**1023  # beyond float range
    if type(v) is not str:
        return True
    try:
        float(v)
    except ValueError:
        return True
    return False


def _bad_score_map(v: Any) -> bool:
    if v is None:
        return False
    if type(v) is not dict:
        return True
    return not all(type(x) in NUMBER and 0 <= x <= 1 for x in v.values())


def iter_lines(data: bytes) -> Iterable[bytes]:
    """Split an NDJSON body into non-empty lines (\\r\\n tolerated)."""
    for line in data.split(b"\n"):
        line = line.strip()
        if line:
            yield line
