"""Load reference data (the distribution drift is measured against) from CSV, JSON Lines or Parquet.

Result: one numpy array per declared feature. Numeric features are float64 with NaN for a
missing value; categorical features are object arrays of ``str`` with ``None`` for a missing
value. Categorical values go through :func:`category_string`, so that the exporter, which must
stringify prediction-log values the same way, puts ``1``, ``1.0`` and ``"1"`` in one category.

Missing values:
- CSV: an empty (or blank) cell; in numeric columns also ``nan``, ``null``, ``none``, ``na``,
  ``n/a`` (any case). In categorical columns only the blank cell: ``NA`` may be a real value
  (Namibia). Categorical cells are stripped of surrounding spaces.
- JSON Lines: ``null`` or an absent key. Numbers must be JSON numbers (a quoted number is an
  error, since the prediction log would reject it too).
- Parquet: null.

CSV files are read with pyarrow's multithreaded columnar reader when pyarrow is importable (a
runtime dependency; ~15x faster than the csv module on 100k rows, see
``benchmarks/reference_load.py``). It must give exactly what the pure-Python reader gives, which
stays as the reference semantics and the fallback: the fast path only takes files and cells it can
prove it reads the same way, and hands anything else (a quoted header, ragged rows, invalid UTF-8,
a numeric cell Arrow does not parse, e.g. ``1_000``) to the pure-Python reader, which then accepts
the same values and raises the same errors with the same positions.
"""
from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

MISSING_NUMERIC_TOKENS = frozenset({"", "nan", "null", "none", "na", "n/a"})
# Exactly the characters str.strip() removes (str.isspace(); a test checks the set), so the
# columnar path strips cells as the pure-Python one does. Unicode White_Space lacks \x1c-\x1f.
PY_WHITESPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004"
                 "\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
UTF8_BOM = b"\xef\xbb\xbf"


def _case_variants(word: str) -> list[str]:
    variants = [""]
    for ch in word:
        variants = [v + c for v in variants for c in dict.fromkeys((ch.lower(), ch.upper()))]
    return variants


# The missing-value tokens as Arrow's CSV reader must list them (it matches exactly, case included).
ARROW_NULL_TOKENS = [v for token in sorted(MISSING_NUMERIC_TOKENS) for v in _case_variants(token)]
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
OUTPUT_COLUMNS = ("label", "prediction", "score")  # read beside a prediction-log record's features


class ReferenceDataError(ValueError):
    """Reference data that cannot be used; the message names the file and what is wrong."""


def category_string(value: Any) -> str | None:
    """The category a raw value belongs to: None for missing, JSON spelling for booleans,
    integral floats as integers (``1.0`` -> ``"1"``), everything else ``str()``."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return str(int(value))
    return str(value)


def load_reference(path: Path, numeric: Sequence[str], categorical: Sequence[str]) -> dict[str, np.ndarray]:
    """Read the declared features from a reference file (format chosen by suffix).

    Raises ReferenceDataError when the file is missing or unreadable, has no data rows, lacks
    declared columns (all of them are named), or holds a non-numeric value in a numeric column
    (position given: CSV/Parquet "row N" counting data rows from 1, JSON Lines "line N").
    A key absent from some JSON rows is a missing value there; absent from all, a missing column.
    """
    path = Path(path)
    if not path.is_file():
        raise ReferenceDataError(f"{path}: reference file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            columns = _read_csv(path, numeric, categorical)
        elif suffix in JSON_SUFFIXES:
            columns = _read_json_lines(path, numeric, categorical)
        elif suffix == ".parquet":
            columns = _read_parquet(path, numeric, categorical)
        else:
            raise ReferenceDataError(f"{path}: unsupported reference format {suffix!r} "
                                     f"(expected .csv, .jsonl, .ndjson, .json or .parquet)")
    except OSError as e:
        raise ReferenceDataError(f"{path}: cannot read: {e.strerror or e}") from None
    n_rows = {len(v) for v in columns.values()}
    if not columns or n_rows == {0}:
        raise ReferenceDataError(f"{path}: no data rows")
    return columns


def _check_columns(path: Path, present: Iterable[str], wanted: Sequence[str]) -> None:
    missing = [c for c in wanted if c not in set(present)]
    if missing:
        raise ReferenceDataError(f"{path}: missing column(s): {', '.join(missing)}")


def _numeric_from_strings(path: Path, name: str, cells: list[str]) -> np.ndarray:
    """Parse text cells in one numpy call; on failure, find the first bad row for the message."""
    arr = np.array(cells, dtype=object)
    lowered = np.char.lower(np.char.strip(arr.astype(str)))
    missing = np.isin(lowered, list(MISSING_NUMERIC_TOKENS))
    out = np.full(len(cells), np.nan)
    try:
        out[~missing] = np.asarray(lowered[~missing], dtype=np.float64)
    except ValueError:
        for i in np.flatnonzero(~missing):
            try:
                np.float64(lowered[i])
            except ValueError:
                raise ReferenceDataError(f"{path}: row {i + 1}: column {name!r}: "
                                         f"expected a number, got {cells[i]!r}") from None
        raise
    return out


def object_array(values: Sequence[Any]) -> np.ndarray:
    """A 1-d object array of `values` as they are (np.array would turn a list of tuples or lists
    into a 2-d array)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _categorical(values: Iterable[Any]) -> np.ndarray:
    return object_array([category_string(v) for v in values])


def fast_csv_available() -> bool:
    """Whether CSV reference files go through pyarrow's columnar reader (else the csv module)."""
    try:
        import pyarrow.compute  # noqa: F401
        import pyarrow.csv  # noqa: F401
    except ImportError:
        return False
    return True


def _read_csv(path: Path, numeric: Sequence[str], categorical: Sequence[str]) -> dict[str, np.ndarray]:
    if fast_csv_available():
        columns = _read_csv_arrow(path, numeric, categorical)
        if columns is not None:
            return columns
    return _read_csv_python(path, numeric, categorical)


class _NotFast(Exception):
    """Arrow could not read the file with the options tried."""


def _read_csv_arrow(path: Path, numeric: Sequence[str],
                    categorical: Sequence[str]) -> dict[str, np.ndarray] | None:
    """The CSV read with pyarrow; None when the file needs the pure-Python reader (which then
    gives the result or the error message). Same dialect as ``csv.reader``'s default: comma,
    double quotes, doubled quote inside quotes, no escape character, blank lines skipped."""
    if set(numeric) & set(categorical):
        return None  # declared both ways: the slow path checks it as numbers, then keeps it as text
    data = path.read_bytes()
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM):]
    if not data.isascii():
        try:
            data.decode("utf-8")  # the csv module decodes the whole file, unused columns too
        except UnicodeDecodeError:
            return None
    end = data.find(b"\n")
    first = data if end < 0 else data[:end]
    if first.endswith(b"\r"):
        first = first[:-1]
    if not first.strip() or b'"' in first or b"\r" in first:
        return None  # empty file, blank or quoted header, old-Mac line ends: rare, read the slow way
    header = [h.strip() for h in first.decode("utf-8").split(",")]
    _check_columns(path, header, [*numeric, *categorical])
    index = {name: header.index(name) for name in [*numeric, *categorical]}
    body = memoryview(data)[end + 1:] if end >= 0 else memoryview(b"")  # no copy
    names = [f"c{j}" for j in range(len(header))]
    # First try: Arrow parses the numeric cells itself. Its float syntax is a subset of float()'s
    # (it trims spaces and tabs, takes inf/nan in any case, rejects "1_000", "\xa05"...) and
    # rounds the same; a cell it rejects fails the read and the second try parses the numeric
    # columns from text. The first try also assumes no quoted cell spans lines (parallel block
    # splitting at any newline, much faster); Arrow checks that assumption ("parser got out of
    # sync with chunker") and raises when a block split it, so the second try allows them.
    for numbers_as_text in (False, True):
        try:
            table = _arrow_csv_table(body, names, {index[n] for n in numeric},
                                     {index[n] for n in categorical}, numbers_as_text)
        except _NotFast:
            if numbers_as_text:
                return None  # e.g. a row with more or fewer fields than the header
            continue
        out = {name: _numeric_from_arrow(path, name, table.column(names[index[name]])) for name in numeric}
        for name in categorical:
            out[name] = _categorical_from_arrow(table.column(names[index[name]]))
        return out
    return None


def _arrow_csv_table(body: memoryview, names: list[str], numeric: set[int], categorical: set[int],
                     numbers_as_text: bool) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    text = pa.dictionary(pa.int32(), pa.large_string())
    types = {names[j]: pa.large_string() if numbers_as_text else pa.float64() for j in numeric}
    types.update({names[j]: text for j in categorical})
    try:
        return pacsv.read_csv(
            pa.BufferReader(pa.py_buffer(body)),
            read_options=pacsv.ReadOptions(column_names=names),
            parse_options=pacsv.ParseOptions(delimiter=",", quote_char='"', double_quote=True,
                                             escape_char=False,
                                             newlines_in_values=numbers_as_text,
                                             ignore_empty_lines=True),
            convert_options=pacsv.ConvertOptions(
                include_columns=[names[j] for j in sorted(numeric | categorical)], column_types=types,
                null_values=ARROW_NULL_TOKENS, strings_can_be_null=False, quoted_strings_can_be_null=True),
        )
    except pa.ArrowException:
        raise _NotFast from None


def _numeric_from_arrow(path: Path, name: str, column: Any) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_floating(column.type):
        return column.to_numpy()  # nulls -> NaN
    lowered = pc.utf8_lower(pc.utf8_trim(column, characters=PY_WHITESPACE))
    missing = pc.is_in(lowered, value_set=pa.array(sorted(MISSING_NUMERIC_TOKENS), pa.large_string()))
    try:
        # Arrow parses a subset of what float() takes (no "1_000", no non-ASCII digits), to the
        # same correctly rounded value; a cell outside it sends the column to numpy, which also
        # finds the first bad row for the message.
        parsed = pc.cast(pc.if_else(missing, None, lowered), pa.float64())
    except pa.ArrowInvalid:
        return _numeric_from_strings(path, name, column.to_pylist())
    return parsed.to_numpy()  # nulls -> NaN


def _categorical_from_arrow(column: Any) -> np.ndarray:
    """Dictionary-encoded text -> object array; each distinct value is stripped once and the rows
    share its str object."""
    import pyarrow as pa

    column = column.unify_dictionaries()  # one dictionary for every chunk
    if column.num_chunks == 0:
        return np.empty(0, dtype=object)
    dictionary = column.chunk(0).dictionary
    values = np.empty(len(dictionary) + 1, dtype=object)  # the last slot stays None: missing
    values[:-1] = [v.strip(PY_WHITESPACE) or None for v in dictionary.to_pylist()]
    codes = pa.chunked_array([c.indices for c in column.chunks], pa.int32()).fill_null(len(dictionary))
    return values[codes.to_numpy()]


def _read_csv_python(path: Path, numeric: Sequence[str], categorical: Sequence[str]) -> dict[str, np.ndarray]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ReferenceDataError(f"{path}: empty file (expected a header row)")
        header = [h.strip() for h in header]
        _check_columns(path, header, [*numeric, *categorical])
        index = {name: header.index(name) for name in [*numeric, *categorical]}
        rows = [r for r in reader if r]  # csv yields [] for blank lines
    for i, r in enumerate(rows, start=1):
        if len(r) != len(header):
            raise ReferenceDataError(f"{path}: row {i}: {len(r)} fields, the header has {len(header)}")
    cells = {name: [r[j] for r in rows] for name, j in index.items()}
    out = {name: _numeric_from_strings(path, name, cells[name]) for name in numeric}
    for name in categorical:
        out[name] = _categorical(c.strip() or None for c in cells[name])
    return out


def _json_objects(path: Path) -> Iterator[tuple[str, Any]]:
    """(position for messages, parsed value) for a JSON Lines file or a file holding one JSON array."""
    with path.open("rb") as f:
        head = f.read(64).lstrip()
    if head.startswith(b"["):
        try:
            doc = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as e:
            raise ReferenceDataError(f"{path}: not valid JSON: {e}") from None
        yield from ((f"item {i}", obj) for i, obj in enumerate(doc, start=1))
        return
    with path.open("rb") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield f"line {lineno}", orjson.loads(line)
            except orjson.JSONDecodeError as e:
                raise ReferenceDataError(f"{path}: line {lineno}: not valid JSON: {e}") from None


def _read_json_lines(path: Path, numeric: Sequence[str], categorical: Sequence[str]) -> dict[str, np.ndarray]:
    rows: list[dict[str, Any]] = []
    where: list[str] = []
    seen: set[str] = set()
    for pos, obj in _json_objects(path):
        if not isinstance(obj, dict):
            raise ReferenceDataError(f"{path}: {pos}: expected a JSON object, got {type(obj).__name__}")
        # Either flat feature columns or a prediction-log record with a "features" object (whose
        # outputs and label stay readable: `label`, `prediction`, `score`, `scores` as score_<class>).
        feats = _log_record_columns(obj) if isinstance(obj.get("features"), dict) else obj
        rows.append(feats)
        where.append(pos)
        seen.update(feats)
    if not rows:
        raise ReferenceDataError(f"{path}: no data rows")
    _check_columns(path, seen, [*numeric, *categorical])
    out: dict[str, np.ndarray] = {}
    for name in numeric:
        values = [r.get(name) for r in rows]
        for v, pos in zip(values, where):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ReferenceDataError(f"{path}: {pos}: column {name!r}: expected a number, got {v!r}")
        out[name] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    for name in categorical:
        out[name] = _categorical(r.get(name) for r in rows)
    return out


def _log_record_columns(obj: dict[str, Any]) -> dict[str, Any]:
    feats = obj["features"]
    extra = {k: obj[k] for k in OUTPUT_COLUMNS if k in obj and k not in feats}
    scores = obj.get("scores")
    if isinstance(scores, dict):
        extra.update({f"score_{k}": v for k, v in scores.items() if f"score_{k}" not in feats})
    return {**feats, **extra} if extra else feats


def _read_parquet(path: Path, numeric: Sequence[str], categorical: Sequence[str]) -> dict[str, np.ndarray]:
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError:
        raise ReferenceDataError(f"{path}: reading Parquet needs pyarrow: pip install 'modelmon[parquet]'") from None
    try:
        schema = pq.read_schema(path)
        _check_columns(path, schema.names, [*numeric, *categorical])
        table = pq.read_table(path, columns=[*numeric, *categorical])
    except pa.ArrowException as e:
        raise ReferenceDataError(f"{path}: not a readable Parquet file: {e}") from None
    out: dict[str, np.ndarray] = {}
    for name in numeric:
        col = table.column(name)
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
                or pa.types.is_decimal(col.type) or pa.types.is_null(col.type)):
            bad = next((i for i, v in enumerate(col.to_pylist()) if v is not None), None)
            if bad is not None:
                raise ReferenceDataError(f"{path}: row {bad + 1}: column {name!r}: expected a number, "
                                         f"got {col[bad].as_py()!r} (column type {col.type})")
            col = pa.nulls(len(col))  # a typed column holding only nulls: all missing
        out[name] = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)  # nulls -> NaN
    for name in categorical:
        out[name] = _categorical(table.column(name).to_pylist())
    return out


def load_labelled(path: Path, task: str, classes: Sequence[Any] = (),
                  positive_class: Any = None) -> dict[str, np.ndarray] | None:
    """The reference's outputs and labels, or None when the file has no ``label`` column.

    Keys: ``label`` (classification: class keys as the log's labels are normalised, None where
    missing; regression: float, NaN where missing), ``prediction`` (the same types), and the
    scores: binary ``score`` (probability of the positive class), multiclass ``proba`` (n, C) from
    the columns ``score_<class>`` of every configured class, in config order (NaN where absent).
    A missing output column is absent from the result; other errors raise ReferenceDataError.
    """
    from modelmon.contract import class_key

    def column(name: str, numeric: bool) -> np.ndarray | None:
        try:
            return load_reference(path, [name] if numeric else [], [] if numeric else [name])[name]
        except ReferenceDataError as e:
            if "missing column" in str(e):
                return None
            raise

    regression = task == "regression"
    label = column("label", regression)
    if label is None:
        return None
    out: dict[str, np.ndarray] = {"label": label}
    prediction = column("prediction", regression)
    if prediction is not None:
        out["prediction"] = prediction
    if not regression:
        # As the log's labels are keyed (contract.class_key); JSON booleans read as true/false here
        numeric = task == "binary" and class_key(positive_class) in ("0", "1")
        spelt = {"true": "1", "false": "0"} if numeric else {}
        for key in ("label", "prediction"):
            if key in out:
                out[key] = object_array([None if v is None else spelt.get(v, class_key(v)) for v in out[key]])
    if task == "binary":
        score = column("score", True)
        if score is not None:
            out["score"] = score
    elif task == "multiclass" and classes:
        cols = [column(f"score_{class_key(c)}", True) for c in classes]
        if all(c is not None for c in cols):
            out["proba"] = np.column_stack(cols)
    return out
