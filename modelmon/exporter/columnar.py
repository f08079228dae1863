"""The columnar fast path: a batch of log lines parsed by pyarrow into columns, never into dicts.

The per-line parser (`records.RecordParser`) decodes every line into Python dicts and pulls each
field out record by record; merely keeping a batch of parsed dicts alive costs more than half of
orjson's speed (allocation and the cyclic GC). Here pyarrow's JSON reader decodes a whole batch
against an explicit schema derived from the config into typed columns in C++, and every check is
a vectorised operation on them.

Exactness comes first: a row is taken by this path only when it is *proven clean* -- every field
has the type, range and length the per-line parser would accept unchanged. Every other row (a
reject, a multiclass record, a value to shorten, a JSON literal pyarrow accepts but the JSON
standard does not, such as NaN) goes through the per-line parser, whose result is the definition:
same accepted records in the same order, same rejects with the same reasons and messages. A block
pyarrow cannot read at all (a type change, a bad line) is split in halves and retried, down to
`MIN_BLOCK` lines, which go through the per-line parser; so one bad line in 10,000 costs a few
re-reads, not the fast path. `tests/test_columnar.py` checks all of this on fuzzed input.

The schema's type for fields that may legitimately hold one of several JSON types (`ts` as a
number or a string, a class as an integer, string or boolean, `id` as a string or integer) is
taken from a sample of the batch and kept while it fits: a log keeps one type per field in
practice; one that mixes them in a batch still parses, on the per-line path.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from modelmon.exporter.records import (MAX_ID_LENGTH, LabelColumns, ParsedBatch, PredictionColumns, RecordParser,
                                       parse_timestamps)

MIN_BLOCK = 64  # a failing block is split until its pieces are this small, then parsed per line
SAMPLE_LINES = 32  # lines decoded with orjson to choose the schema's types
ARROW_BLOCK = 1 << 20  # pyarrow's unit of parallel work (bytes); grown to fit the longest line
LENIENT = (b"NaN", b"Inf", b"\xef\xbb\xbf")  # what pyarrow reads and the JSON standard does not
LENIENT_FIRST = (b"N", b"I", b"\xef")  # their first bytes


@dataclass(frozen=True)
class _Types:
    """The JSON types a schema expects where the log may choose: one of these per batch."""

    ts: Any
    id: Any
    prediction: Any
    label: Any


def _json_type(value: Any) -> Any:
    t = type(value)
    if t is bool:
        return pa.bool_()
    if t is int or t is float:
        return pa.float64()
    if t is str:
        return pa.string()
    return None


class ColumnarParser:
    """Parses batches of lines on the fast path, handing what it cannot vouch for to `RecordParser`."""

    def __init__(self, parser: RecordParser):
        self.parser = parser
        self.models = parser.models
        self.fast_models = {name for name, m in self.models.items() if m.task != "multiclass"}
        numeric, categorical = {}, {}
        for m in self.models.values():
            numeric.update(dict.fromkeys(m.numeric_features))
            categorical.update(dict.fromkeys(m.categorical_features))
        # A name numeric in one model and categorical in another cannot have one column type:
        # such a feature is left out of the schema, and records of models that use it go per line.
        self.conflicting = set(numeric) & set(categorical)
        fields = [pa.field(f, pa.float64()) for f in numeric if f not in self.conflicting]
        fields += [pa.field(f, pa.string()) for f in categorical if f not in self.conflicting]
        self.features_type = pa.struct(fields)
        for m in self.models.values():
            if self.conflicting & set(m.features):
                self.fast_models.discard(m.name)
        self.types = _Types(pa.float64(), pa.string(), pa.float64(), pa.float64())
        self._schemas: dict[_Types, pa.Schema] = {}
        self.stats = {"fast": 0, "slow": 0}  # lines parsed on each path (the exporter exports them)
        self._stats_lock = threading.Lock()

    # ------------------------------------------------------------------ entry point

    def prepare(self, lines: Sequence[bytes], blank_free: bool = False) -> "Prepared":
        """The first step of `parse_lines`: the checks of the raw batch and pyarrow's read of it.
        pyarrow reads from an Arrow buffer without the GIL, so the file source runs this for its
        next batch on its read-ahead thread while the current one is checked and applied."""
        try:
            usable = bool(self.fast_models) and len(lines) >= MIN_BLOCK and (
                blank_free or all(map(bytes.strip, lines)))
        except TypeError:  # not bytes
            usable = False
        if not usable:  # few lines, or a blank one (pyarrow skips it, which would shift rows against lines)
            return Prepared(lines, False, None, (), lines, None, None)
        index = np.arange(len(lines))
        slow: list[int] = []
        joined = b"\n".join(lines)
        lines_fast = lines
        if any(first in joined for first in LENIENT_FIRST):  # one memchr each: most batches stop here
            suspect = np.fromiter((any(t in line for t in LENIENT) for line in lines), dtype=bool, count=len(lines))
            if suspect.any():
                # pyarrow reads NaN/Infinity literals and a byte-order mark, which JSON (and orjson) refuse
                slow = np.flatnonzero(suspect).tolist()
                index = np.flatnonzero(~suspect)
                lines_fast = [lines[i] for i in index]
                joined = None
        table = self._read(lines_fast, self.types, joined) if len(lines_fast) >= MIN_BLOCK else None
        return Prepared(lines, True, index, tuple(slow), lines_fast, joined, table)

    def parse_lines(self, lines: Sequence[bytes], blank_free: bool = False,
                    prepared: "Prepared | None" = None) -> ParsedBatch:
        """Parse `lines` (one JSON record each, no line breaks inside) into a ParsedBatch equal to
        `RecordParser.parse_lines(lines)`. `blank_free`: the caller vouches that no line is empty or
        only whitespace (the log follower and POST /ingest drop those), which saves a pass.
        `prepared`: `prepare(lines)`, when it ran already (on the read-ahead thread)."""
        p = prepared if prepared is not None and prepared.lines is lines else self.prepare(lines, blank_free)
        if not p.usable:
            self._count(0, len(lines))
            return self.parser.parse_lines(lines)
        pieces: list[_Piece] = []
        slow = list(p.slow)
        self._parse_range(p.lines_fast, p.index, 0, len(p.lines_fast), pieces, slow, retry=True, joined=p.joined,
                          table=p.table)
        self._count(len(lines) - len(slow), len(slow))
        return self._assemble(lines, pieces, slow)

    def _count(self, fast: int, slow: int) -> None:
        with self._stats_lock:
            self.stats["fast"] += fast
            self.stats["slow"] += slow

    def _parse_range(self, lines: Sequence[bytes], index: np.ndarray, start: int, stop: int, pieces: list,
                     slow: list[int], retry: bool, joined: bytes | None = None, table: pa.Table | None = None) -> None:
        """Parse lines[start:stop] (whose batch positions are index[start:stop]) on the fast path,
        splitting in halves where pyarrow cannot read them."""
        if stop - start < MIN_BLOCK:
            slow.extend(index[start:stop].tolist())
            return
        if table is None:  # (a table read ahead is for exactly these lines)
            table = self._read(lines[start:stop], self.types, joined)
        if table is None and retry:  # the log may have changed a field's type: look again
            types = self._sample_types(lines, start, stop)
            if types != self.types:
                table = self._read(lines[start:stop], types)
                if table is not None:
                    self.types = types
        if table is None or table.num_rows != stop - start:
            mid = (start + stop) // 2
            self._parse_range(lines, index, start, mid, pieces, slow, retry=False)
            self._parse_range(lines, index, mid, stop, pieces, slow, retry=False)
            return
        self._take_clean(table, index[start:stop], pieces, slow)

    def _read(self, lines: Sequence[bytes], types: _Types, data: bytes | None = None) -> pa.Table | None:
        if data is None:
            data = b"\n".join(lines)
        # From an Arrow buffer, not a Python file object: pyarrow then reads without taking the GIL
        # back for every block, so a read ahead on another thread runs beside the apply.
        # Blocks of about a quarter of the batch (256 KiB - 1 MiB) keep both cores busy: measured
        # fastest for 5,000-20,000-line batches. A block must hold the longest line: when one does
        # not fit, pyarrow says so and the batch is read again as one block.
        block = min(max(len(data) // 4, ARROW_BLOCK // 4), ARROW_BLOCK)
        parse = pj.ParseOptions(explicit_schema=self._schema(types), unexpected_field_behavior="ignore")
        for size in (block, len(data) + 1):
            try:
                return pj.read_json(pa.BufferReader(data), read_options=pj.ReadOptions(use_threads=True, block_size=size),
                                    parse_options=parse)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, UnicodeDecodeError) as e:
                if "straddl" not in str(e) or size > len(data):
                    return None
        return None

    def _schema(self, types: _Types) -> pa.Schema:
        schema = self._schemas.get(types)
        if schema is None:
            schema = self._schemas[types] = pa.schema([
                ("model", pa.string()), ("ts", types.ts), ("id", types.id), ("version", pa.string()),
                ("status", pa.string()), ("prediction", types.prediction), ("label", types.label),
                ("score", pa.float64()), ("latency_ms", pa.float64()), ("shadow", pa.bool_()),
                ("features", self.features_type)])
        return schema

    def _sample_types(self, lines: Sequence[bytes], start: int, stop: int) -> _Types:
        seen: dict[str, Any] = {}
        for line in lines[start:min(stop, start + SAMPLE_LINES)]:
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if type(obj) is not dict:
                continue
            for key in ("ts", "id", "prediction", "label"):
                if key not in seen:
                    t = _json_type(obj.get(key))
                    if t is not None:
                        seen[key] = t
        ts = pa.string() if seen.get("ts") == pa.string() else pa.float64()
        rid = pa.int64() if seen.get("id") == pa.float64() else pa.string()  # an integer id (a float one: per line)
        prediction = seen.get("prediction", self.types.prediction)
        return _Types(ts, rid, prediction, seen.get("label", prediction))

    # ------------------------------------------------------------------ one parsed block

    def _take_clean(self, table: pa.Table, index: np.ndarray, pieces: list, slow: list[int]) -> None:
        """Split a parsed block into clean rows per model (kept as columns) and the rest (`slow`)."""
        n = table.num_rows
        block = _Block(table, self.parser)
        model_codes, model_names = block.dictionary("model")
        clean_any = np.zeros(n, dtype=bool)
        for code, name in enumerate(model_names):
            if name not in self.fast_models:
                continue
            rows = np.flatnonzero(model_codes == code)
            m = self.models[name]
            is_pred = block.present("prediction")[rows] | block.present("status")[rows]
            is_label = ~is_pred & block.present("label")[rows]
            pred_rows = rows[is_pred]
            pred_rows = pred_rows[block.clean_prediction(m, pred_rows)]
            label_rows = rows[is_label]
            label_rows = label_rows[block.clean_label_record(m, label_rows)]
            if pred_rows.size:
                pieces.append(_Piece(name, index[pred_rows], block.predictions(m, pred_rows), None))
            if label_rows.size:
                pieces.append(_Piece(name, index[label_rows], None, block.labels(m, label_rows)))
            clean_any[pred_rows] = True
            clean_any[label_rows] = True
        slow.extend(index[~clean_any].tolist())

    # ------------------------------------------------------------------ assembly

    def _assemble(self, lines: Sequence[bytes], pieces: list["_Piece"], slow: list[int]) -> ParsedBatch:
        if slow:
            slow.sort()
            batch = self.parser.parse_lines([lines[i] for i in slow])
            batch.rejects.remap(slow)
            for name, cols in batch.predictions.items():
                pieces.append(_Piece(name, np.asarray(slow)[cols.positions], cols, None))
            for name, labs in batch.labels.items():
                pieces.append(_Piece(name, np.asarray(slow)[labs.positions], None, labs))
        else:
            batch = ParsedBatch()
        by_model: dict[str, list[_Piece]] = {}
        for piece in pieces:
            by_model.setdefault(piece.model, []).append(piece)
        predictions, labels = {}, {}
        for name in sorted(by_model):
            preds = [p for p in by_model[name] if p.predictions is not None]
            labs = [p for p in by_model[name] if p.labels is not None]
            if preds:
                predictions[name] = _concat_predictions([(p.positions, p.predictions) for p in preds])
            if labs:
                labels[name] = _concat_labels([(p.positions, p.labels) for p in labs])
        batch.predictions, batch.labels = predictions, labels
        batch.accepted = sum(len(c) for c in predictions.values()) + sum(len(c.ids) for c in labels.values())
        return batch


@dataclass(frozen=True)
class Prepared:
    """A batch checked and read by pyarrow, ready for `ColumnarParser.parse_lines`."""

    lines: Sequence[bytes]  # the batch it was prepared for (parse_lines checks it is the same object)
    usable: bool  # False: the whole batch goes per line
    index: np.ndarray | None  # batch position of each line of lines_fast
    slow: tuple[int, ...]  # positions already known to go per line (JSON pyarrow would misread)
    lines_fast: Sequence[bytes]
    joined: bytes | None
    table: pa.Table | None  # pyarrow's read of lines_fast; None when it failed (or too few lines)


@dataclass
class _Piece:
    model: str
    positions: np.ndarray  # line index of each row, ascending
    predictions: PredictionColumns | None
    labels: LabelColumns | None


class _Block:
    """One pyarrow table, converted column by column on first use."""

    def __init__(self, table: pa.Table, parser: RecordParser):
        self.table = table
        self.parser = parser
        self.n = table.num_rows
        self._cache: dict[str, Any] = {}

    def column(self, name: str) -> pa.Array:
        key = "col:" + name
        if key not in self._cache:
            self._cache[key] = self.table.column(name).combine_chunks()
        return self._cache[key]

    def present(self, name: str) -> np.ndarray:
        key = "present:" + name
        if key not in self._cache:
            self._cache[key] = self.column(name).is_valid().to_numpy(zero_copy_only=False)
        return self._cache[key]

    def dictionary(self, name: str, array: pa.Array | None = None) -> tuple[np.ndarray, list]:
        """(code per row, -1 for null; the distinct values) of a string column (`array`: a column
        not at the top level, such as a feature)."""
        encoded = pc.dictionary_encode(self.column(name) if array is None else array)
        codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
        return codes, encoded.dictionary.to_pylist()

    def encoded(self, name: str, array: pa.Array | None = None) -> tuple[np.ndarray, list]:
        """`dictionary`, computed once per column."""
        key = "dict:" + name
        if key not in self._cache:
            self._cache[key] = self.dictionary(name, array)
        return self._cache[key]

    def strings(self, name: str, array: pa.Array | None = None) -> np.ndarray:
        """A string column as an object array (None for null); repeated values share one str."""
        key = "str:" + name
        if key not in self._cache:
            codes, values = self.encoded(name, array)
            table = np.empty(len(values) + 1, dtype=object)
            table[:len(values)] = values  # the last slot, None, is what code -1 picks
            self._cache[key] = table[codes]
        return self._cache[key]

    def floats(self, name: str, array: pa.Array | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(values with NaN for null, mask of values that are present but not finite: Infinity or
        NaN literals, which pyarrow reads and the JSON standard -- and the per-line parser -- refuse)."""
        key = "float:" + name
        if key not in self._cache:
            arr = self.column(name) if array is None else array
            values = arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
            bad = ~np.isfinite(values) & arr.is_valid().to_numpy(zero_copy_only=False)
            self._cache[key] = (values, bad)
        return self._cache[key]

    def features(self) -> dict[str, pa.Array]:
        if "features" not in self._cache:
            struct = self.column("features")
            # flatten() applies the struct's own nulls to its children: {"features": null} -> all null
            self._cache["features"] = dict(zip([f.name for f in struct.type], struct.flatten()))
        return self._cache["features"]

    # ------------------------------------------------------------------ shared field checks

    def _timestamps(self, rows: np.ndarray, required: bool) -> tuple[np.ndarray, np.ndarray]:
        """(epoch seconds per row, NaN where absent; mask of rows whose ts the fast path cannot vouch for)."""
        ts_all, unparsable = self._ts_block()
        ts = ts_all[rows]
        bad = unparsable[rows] | (~self.present("ts")[rows] if required else False)
        p = self.parser
        now = p.clock()
        bad |= ts > now + p.max_skew
        if p.max_age is not None:
            bad |= ts < now - p.max_age
        return ts, bad

    def _ts_block(self) -> tuple[np.ndarray, np.ndarray]:
        """Every row's ts as epoch seconds (NaN where absent) and a mask of the unparsable ones, parsed
        once for the block: the check and the conversion of a model's rows both read it."""
        if "ts" not in self._cache:
            if self.table.schema.field("ts").type == pa.float64():
                values, bad = self.floats("ts")
                self._cache["ts"] = (values, bad)
            else:
                raw = self.strings("ts")
                present = self.present("ts")
                ts = np.full(self.n, np.nan)
                bad = np.zeros(self.n, dtype=bool)
                if present.any():
                    sel = np.flatnonzero(present)
                    ts[sel], bad[sel] = parse_timestamps(raw[sel].tolist())
                self._cache["ts"] = (ts, bad)
        return self._cache["ts"]

    def _class_values(self, name: str, rows: np.ndarray, regression: bool) -> tuple[list, np.ndarray]:
        """(values, None for null; mask of rows to send per line). Regression values as floats; classes
        as the per-line parser reads them or as their class key (1 -> "1"), which the state reads alike.

        Numbers come in a float64 column (a batch mixes regression outputs and integer classes): a
        class is then the key of the int it spells, and only integral values below 2**53 (exact in a
        double) are taken; the rest go per line, which keeps or refuses them as it always did."""
        values, bad = self._class_block(name, regression)
        return values[rows].tolist(), bad[rows]

    def _class_block(self, name: str, regression: bool) -> tuple[np.ndarray, np.ndarray]:
        key = f"class:{name}:{regression}"
        if key not in self._cache:
            self._cache[key] = self._class_column(name, regression)
        return self._cache[key]

    def _class_column(self, name: str, regression: bool) -> tuple[np.ndarray, np.ndarray]:
        """`_class_values` for every row of the block, as (object array, mask)."""
        col_type = self.table.schema.field(name).type
        present = self.present(name)
        if col_type == pa.float64():
            v, nonfinite = self.floats(name)
            if regression:
                out = v.astype(object)
                out[~present] = None
                return out, nonfinite
            exact = present & (np.floor(v) == v) & (np.abs(v) < 2.0 ** 53)
            out = np.empty(self.n, dtype=object)  # None where absent
            if exact.any():  # a class as its key, made once per distinct value
                distinct, inverse = np.unique(v[exact], return_inverse=True)
                out[exact] = np.array([str(int(d)) for d in distinct.tolist()], dtype=object)[inverse]
            return out, present & ~exact
        if regression:  # a string or boolean regression value: per line
            return np.empty(self.n, dtype=object), np.ones(self.n, dtype=bool)
        if col_type == pa.string():
            return self.strings(name), self._too_long(name)
        out = np.empty(self.n, dtype=object)  # booleans
        out[:] = self.column(name).to_pylist()
        return out, np.zeros(self.n, dtype=bool)

    def _ids(self, rows: np.ndarray) -> tuple[list, np.ndarray]:
        ids, bad = self._id_block()
        return ids[rows].tolist(), bad[rows]

    def _id_block(self) -> tuple[np.ndarray, np.ndarray]:
        if "ids" not in self._cache:
            arr = self.column("id")
            if self.table.schema.field("id").type == pa.int64():
                ids = np.array([None if v is None else str(v) for v in arr.to_pylist()] or [], dtype=object)
                self._cache["ids"] = (ids, np.zeros(self.n, dtype=bool))
            else:
                too_long = pc.utf8_length(arr).fill_null(0).to_numpy(zero_copy_only=False) > MAX_ID_LENGTH
                self._cache["ids"] = (arr.to_numpy(zero_copy_only=False), too_long)
        return self._cache["ids"]

    def _too_long(self, name: str) -> np.ndarray:
        """Rows whose string in column `name` is longer than a label value may be."""
        key = "long:" + name
        if key not in self._cache:
            lengths = pc.utf8_length(self.column(name)).fill_null(0).to_numpy(zero_copy_only=False)
            self._cache[key] = lengths > self.parser.max_value_length
        return self._cache[key]

    # ------------------------------------------------------------------ prediction records

    def clean_prediction(self, m, rows: np.ndarray) -> np.ndarray:
        """Mask over `rows` (prediction records of model `m`) of those the fast path takes as they are."""
        if rows.size == 0:
            return np.zeros(0, dtype=bool)
        _, bad = self._timestamps(rows, required=True)
        status = self.strings("status")[rows]
        ok = (status == "ok") | (status == None)  # noqa: E711 - elementwise on an object array
        bad |= ~(ok | (status == "error"))
        bad |= ok & ~self.present("prediction")[rows]
        regression = m.task == "regression"
        bad |= self._class_block("prediction", regression)[1][rows]
        bad |= self._class_block("label", regression)[1][rows]
        latency, nonfinite = self.floats("latency_ms")
        bad |= nonfinite[rows] | (latency[rows] < 0)
        score, nonfinite = self.floats("score")
        if m.task == "binary":
            bad |= nonfinite[rows] | (score[rows] < 0) | (score[rows] > 1)
        bad |= self._id_block()[1][rows]
        bad |= self._too_long("version")[rows]
        feats = self.features()
        for f in m.numeric_features:
            _, nonfinite = self.floats("features." + f, feats[f])
            bad |= nonfinite[rows]
        return ~bad

    def predictions(self, m, rows: np.ndarray) -> PredictionColumns:
        ts, _ = self._timestamps(rows, required=True)
        status = self.strings("status")[rows]
        status_ok = status != "error"
        regression = m.task == "regression"
        preds, _ = self._class_values("prediction", rows, regression)
        labels, _ = self._class_values("label", rows, regression)
        latency, _ = self.floats("latency_ms")
        scores = self.floats("score")[0][rows] if m.task == "binary" else np.full(rows.size, np.nan)
        ids, _ = self._ids(rows)
        versions = self.strings("version")[rows]
        unnamed = (versions == None) | (versions == "")  # noqa: E711 - elementwise on an object array
        if unnamed.any():
            versions = versions.copy()
            versions[unnamed] = "unknown"
        versions = versions.tolist()
        feats = self.features()
        features: dict[str, np.ndarray] = {}
        for f in m.numeric_features:
            features[f] = np.ascontiguousarray(self.floats("features." + f, feats[f])[0][rows])
        categories = {}
        for f in m.categorical_features:
            features[f] = np.ascontiguousarray(self.strings("features." + f, feats[f])[rows])
            codes, distinct = self.encoded("features." + f, feats[f])
            categories[f] = (codes[rows], distinct)
        shadow = None
        if self.present("shadow")[rows].any():  # null is absent is false
            shadow = self.column("shadow").fill_null(False).to_numpy(zero_copy_only=False)[rows]
        return PredictionColumns(ts=ts, ids=ids, versions=versions, status_ok=status_ok,
                                 latency_s=latency[rows] / 1000.0, predictions=preds, scores=scores,
                                 score_maps=[], labels=labels, features=features, shadow=shadow,
                                 positions=np.arange(rows.size), label_present=self.present("label")[rows],
                                 id_present=self.present("id")[rows], categories=categories)

    # ------------------------------------------------------------------ late labels

    def clean_label_record(self, m, rows: np.ndarray) -> np.ndarray:
        if rows.size == 0:
            return np.zeros(0, dtype=bool)
        _, bad = self._timestamps(rows, required=False)
        bad |= ~self.present("id")[rows]
        bad |= self._id_block()[1][rows]
        bad |= self._class_block("label", m.task == "regression")[1][rows]
        return ~bad

    def labels(self, m, rows: np.ndarray) -> LabelColumns:
        ts, _ = self._timestamps(rows, required=False)
        ids, _ = self._ids(rows)
        labels, _ = self._class_values("label", rows, m.task == "regression")
        return LabelColumns(ids=ids, labels=labels, ts=ts, positions=np.arange(rows.size))


# ---------------------------------------------------------------------- merging pieces in line order


def _order(parts: list[tuple[np.ndarray, Any]]) -> tuple[np.ndarray | None, np.ndarray]:
    """(permutation putting the concatenated rows in line order, or None when they already are;
    the concatenated positions in that order)."""
    positions = np.concatenate([p for p, _ in parts])
    if positions.size < 2 or bool(np.all(positions[1:] > positions[:-1])):
        return None, positions
    order = np.argsort(positions, kind="stable")
    return order, positions[order]


def _join_lists(lists: list[list], order: np.ndarray | None) -> list:
    out = [v for lst in lists for v in lst] if len(lists) > 1 else list(lists[0])
    return out if order is None else [out[i] for i in order]


def _join_arrays(arrays: list[np.ndarray], order: np.ndarray | None) -> np.ndarray:
    out = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
    return out if order is None else out[order]


def _concat_predictions(parts: list[tuple[np.ndarray, PredictionColumns]]) -> PredictionColumns:
    if len(parts) == 1:
        positions, cols = parts[0]
        cols.positions = positions
        return cols
    order, positions = _order(parts)
    cs = [c for _, c in parts]
    names = cs[0].features.keys()
    maps = [c.score_maps if c.score_maps else [None] * len(c) for c in cs]
    score_maps = _join_lists(maps, order) if any(c.score_maps for c in cs) else []
    return PredictionColumns(
        ts=_join_arrays([c.ts for c in cs], order), ids=_join_lists([c.ids for c in cs], order),
        versions=_join_lists([c.versions for c in cs], order),
        status_ok=_join_arrays([c.status_ok for c in cs], order),
        latency_s=_join_arrays([c.latency_s for c in cs], order),
        predictions=_join_lists([c.predictions for c in cs], order),
        scores=_join_arrays([c.scores for c in cs], order), score_maps=score_maps,
        labels=_join_lists([c.labels for c in cs], order),
        features={f: np.ascontiguousarray(_join_arrays([c.features[f] for c in cs], order)) for f in names},
        shadow=_join_arrays([c.shadow if c.shadow is not None else np.zeros(len(c), dtype=bool) for c in cs], order)
        if any(c.shadow is not None for c in cs) else None,
        positions=positions)


def _concat_labels(parts: list[tuple[np.ndarray, LabelColumns]]) -> LabelColumns:
    if len(parts) == 1:
        positions, labs = parts[0]
        labs.positions = positions
        return labs
    order, positions = _order(parts)
    ls = [c for _, c in parts]
    return LabelColumns(ids=_join_lists([c.ids for c in ls], order), labels=_join_lists([c.labels for c in ls], order),
                        ts=_join_arrays([c.ts for c in ls], order), positions=positions)


__all__ = ["ColumnarParser", "MIN_BLOCK", "Prepared"]
