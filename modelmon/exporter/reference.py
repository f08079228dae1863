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
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")


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


def _categorical(values: Iterable[Any]) -> np.ndarray:
    strings = [category_string(v) for v in values]
    out = np.empty(len(strings), dtype=object)
    out[:] = strings
    return out


def _read_csv(path: Path, numeric: Sequence[str], categorical: Sequence[str]) -> dict[str, np.ndarray]:
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
        # Either flat feature columns or a prediction-log record with a "features" object.
        feats = obj["features"] if isinstance(obj.get("features"), dict) else obj
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
