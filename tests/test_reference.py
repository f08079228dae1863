"""modelmon.exporter.reference: CSV, JSON Lines and Parquet reference data, and its error messages."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from modelmon.exporter.reference import ReferenceDataError, category_string, load_reference

NUM = ["income", "age"]
CAT = ["country"]
EXPECTED_INCOME = [5120.5, np.nan, 3000.0]
EXPECTED_AGE = [41.0, 35.0, np.nan]
EXPECTED_COUNTRY = ["DE", None, "1"]


def check(cols: dict[str, np.ndarray]) -> None:
    assert set(cols) == {"income", "age", "country"}
    assert cols["income"].dtype == np.float64 and cols["age"].dtype == np.float64
    np.testing.assert_array_equal(cols["income"], EXPECTED_INCOME)
    np.testing.assert_array_equal(cols["age"], EXPECTED_AGE)
    assert cols["country"].dtype == object
    assert cols["country"].tolist() == EXPECTED_COUNTRY


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_csv(tmp_path):
    p = write(tmp_path, "ref.csv", "income,age,country,unused\n5120.5,41,DE,x\n,35,,y\n\n3000,NaN,1,z\n")
    check(load_reference(p, NUM, CAT))


def test_csv_missing_tokens_and_stripping(tmp_path):
    p = write(tmp_path, "ref.csv", " income , country\nnull, NA \nN/A,de\n 7 , \n")
    cols = load_reference(p, ["income"], ["country"])
    np.testing.assert_array_equal(cols["income"], [np.nan, np.nan, 7.0])
    assert cols["country"].tolist() == ["NA", "de", None]  # NA is a value in a categorical column


def test_json_lines_flat_and_prediction_log_records(tmp_path):
    rows = [
        {"income": 5120.5, "age": 41, "country": "DE"},
        {"ts": "2026-11-23T10:00:00Z", "model": "credit", "prediction": 1,
         "features": {"income": None, "age": 35}},  # country absent: missing
        {"income": 3000, "age": None, "country": 1.0},  # 1.0 is the same category as 1 and "1"
    ]
    text = "\n".join(json.dumps(r) for r in rows) + "\n\n"
    for suffix in (".jsonl", ".ndjson", ".json"):
        check(load_reference(write(tmp_path, "ref" + suffix, text), NUM, CAT))
    check(load_reference(write(tmp_path, "array.json", json.dumps(rows)), NUM, CAT))


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    table = pa.table({"income": [5120.5, None, 3000.0], "age": pa.array([41, 35, None], pa.int64()),
                      "country": ["DE", None, "1"], "other": [1, 2, 3]})
    p = tmp_path / "ref.parquet"
    pq.write_table(table, p, row_group_size=2)  # several chunks
    check(load_reference(p, NUM, CAT))


def test_parquet_non_numeric_column_names_the_row(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    p = tmp_path / "ref.parquet"
    pq.write_table(pa.table({"income": [None, "lots"], "age": [None, None]}), p)
    with pytest.raises(ReferenceDataError, match=r"row 2: column 'income': expected a number, got 'lots'"):
        load_reference(p, ["income"], [])
    pq.write_table(pa.table({"income": pa.array([None, None], pa.string())}), p)
    assert np.isnan(load_reference(p, ["income"], [])["income"]).all()


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    p = tmp_path / "ref.parquet"
    p.write_bytes(b"PAR1")
    for mod in ("pyarrow", "pyarrow.parquet", "pyarrow.compute"):
        monkeypatch.setitem(sys.modules, mod, None)  # makes `import pyarrow` raise ImportError
    with pytest.raises(ReferenceDataError, match=r"pip install 'modelmon\[parquet\]'"):
        load_reference(p, ["income"], [])


@pytest.mark.parametrize("name, text, message", [
    ("ref.csv", "", "empty file"),
    ("ref.csv", "income,age,country\n", "no data rows"),
    ("ref.jsonl", "\n\n", "no data rows"),
    ("ref.csv", "income\n1\n", "missing column(s): age, country"),
    ("ref.jsonl", '{"income": 1, "age": 2}\n', "missing column(s): country"),
    ("ref.csv", "income,age,country\n1,2,DE\n3,old,FR\n", "row 2: column 'age': expected a number, got 'old'"),
    ("ref.jsonl", '{"income": 1, "age": 2, "country": "DE"}\n{"income": "3", "age": 4}\n',
     "line 2: column 'income': expected a number, got '3'"),
    ("ref.jsonl", '{"income": true, "age": 2, "country": "DE"}\n', "line 1: column 'income'"),
    ("ref.jsonl", '{"income": 1}\n{oops\n', "line 2: not valid JSON"),
    ("ref.jsonl", '[1, 2]\n', "item 1: expected a JSON object"),
    ("ref.csv", "income,age,country\n1,2\n", "row 1: 2 fields, the header has 3"),
    ("ref.txt", "income\n", "unsupported reference format '.txt'"),
])
def test_errors_are_clear(tmp_path, name, text, message):
    p = write(tmp_path, name, text)
    with pytest.raises(ReferenceDataError, match="^" + re.escape(f"{p}: ")) as e:
        load_reference(p, NUM, CAT)
    assert message in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ReferenceDataError, match="reference file not found"):
        load_reference(tmp_path / "nope.csv", NUM, CAT)
    assert issubclass(ReferenceDataError, ValueError)


@pytest.mark.parametrize("raw, expected", [
    (None, None), (float("nan"), None), ("DE", "DE"), (1, "1"), (1.0, "1"), (1.5, "1.5"),
    (True, "true"), (False, "false"), (0, "0"),
])
def test_category_string(raw, expected):
    assert category_string(raw) == expected


def test_python_whitespace_is_what_str_strip_removes():
    from modelmon.exporter.reference import PY_WHITESPACE
    assert set(PY_WHITESPACE) == {chr(c) for c in range(0x110000) if chr(c).isspace()}


def _generated_csv(rng: np.random.Generator, rows: int) -> str:
    """Every kind of cell both CSV readers must agree on, shuffled over many rows."""
    numbers = ["1", "-2.5", " 7 ", "\t3", "+4", "1e3", "1E-3", ".5", "5.", "inf", "-Infinity", "1e500",
               "NaN", "-nan", "", "null", "NULL", "None", "na", "N/A", "n/a", '"8"', '""', '" 9 "',
               "0.1", "123456789.123456789"]
    categories = ["DE", " FR ", "", '"Paris, FR"', '"say ""hi"""', "1", "1.0", "01", "2.50", "NA", "null",
                  "true", '" "', "Zürich", "\u3000x\u3000", '"two\nlines"']
    lines = ["income,country,unused,age, code "]
    for i in range(rows):
        cells = [rng.choice(numbers), rng.choice(categories), str(i), rng.choice(numbers), rng.choice(categories)]
        lines.append(",".join(cells))
        if i % 97 == 0:
            lines.append("")  # blank lines are skipped
    return "\ufeff" + "\r\n".join(lines) + "\r\n"


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        if a[name].dtype == object:
            assert a[name].tolist() == b[name].tolist(), name
        else:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("rows", [50, 30_000])  # 30k rows: more than one Arrow block
def test_fast_csv_path_matches_the_pure_python_reader(tmp_path, rows):
    pytest.importorskip("pyarrow")
    from modelmon.exporter import reference
    rng = np.random.default_rng(rows)
    p = write(tmp_path, "ref.csv", "")
    p.write_text(_generated_csv(rng, rows), encoding="utf-8", newline="")
    num, cat = ["income", "age"], ["country", "code"]
    fast = reference._read_csv_arrow(p, num, cat)
    assert fast is not None  # the file is read the fast way, not handed back
    slow = reference._read_csv_python(p, num, cat)
    _assert_same(fast, slow)
    _assert_same(load_reference(p, num, cat), slow)
    assert np.isnan(slow["income"]).any() and None in slow["country"].tolist()  # the file has missing cells
    assert {"1", "1.0", "01"} <= set(slow["country"].tolist())  # categorical numbers stay as written
    # A numeric column Arrow cannot parse (numpy's float parser takes "1_000"): same values, via numpy.
    text = p.read_bytes().decode("utf-8")
    p.write_text(text.replace("\r\n1,", "\r\n1_000,", 1).replace("\r\n-2.5,", "\r\n\x1c5\x1c,", 1),
                 encoding="utf-8", newline="")
    _assert_same(load_reference(p, num, cat), reference._read_csv_python(p, num, cat))
    # An invalid cell: the same error, naming the same row, from either path.
    lines = text.split("\r\n")
    data_rows = [i for i, line in enumerate(lines[1:], start=1) if line]
    bad = data_rows[len(data_rows) // 2]
    lines[bad] = "oops," + lines[bad].split(",", 1)[1]
    p.write_text("\r\n".join(lines), encoding="utf-8", newline="")
    with pytest.raises(ReferenceDataError) as slow_error:
        reference._read_csv_python(p, num, cat)
    with pytest.raises(ReferenceDataError) as fast_error:
        load_reference(p, num, cat)
    assert str(fast_error.value) == str(slow_error.value)
    assert "column 'income': expected a number, got 'oops'" in str(fast_error.value)


# ---------------------------------------------------------------------------- the label column (issue 13)


def _labelled_frames():
    return {"x": [1.0, 2.0, 3.0], "prediction": [1, 0, 1], "score": [0.9, 0.2, None], "label": [1, None, 0]}


def _check_labelled(out):
    from modelmon.exporter.reference import object_array  # noqa: F401

    assert out["label"].tolist() == ["1", None, "0"]
    assert out["prediction"].tolist() == ["1", "0", "1"]
    np.testing.assert_array_equal(out["score"], [0.9, 0.2, np.nan])


def test_labelled_csv_jsonl_parquet(tmp_path):
    from modelmon.exporter.reference import load_labelled

    csv_path = write(tmp_path, "ref.csv", "x,prediction,score,label\n1,1,0.9,1\n2,0,0.2,\n3,1,,0\n")
    _check_labelled(load_labelled(csv_path, "binary", (), 1))
    rows = [{"x": 1, "prediction": 1, "score": 0.9, "label": 1}, {"x": 2, "prediction": 0, "score": 0.2},
            {"x": 3, "prediction": 1, "score": None, "label": False}]
    jsonl = write(tmp_path, "ref.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    _check_labelled(load_labelled(jsonl, "binary", (), 1))  # a JSON false is class "0", as in the log
    # prediction-log records: the label and outputs beside the "features" object
    logs = [{"ts": 1, "model": "m", "features": {"x": r["x"]}, **{k: v for k, v in r.items() if k != "x"}}
            for r in rows]
    log_path = write(tmp_path, "log.jsonl", "\n".join(json.dumps(r) for r in logs) + "\n")
    _check_labelled(load_labelled(log_path, "binary", (), 1))
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table(_labelled_frames()), tmp_path / "ref.parquet")
    _check_labelled(load_labelled(tmp_path / "ref.parquet", "binary", (), 1))


def test_labelled_multiclass_scores_and_regression(tmp_path):
    from modelmon.exporter.reference import load_labelled

    p = write(tmp_path, "m.csv", "x,prediction,score_a,score_b,label\n1,a,0.7,0.3,a\n2,b,0.4,0.6,a\n")
    out = load_labelled(p, "multiclass", ["a", "b"])
    assert out["label"].tolist() == ["a", "a"] and out["prediction"].tolist() == ["a", "b"]
    np.testing.assert_array_equal(out["proba"], [[0.7, 0.3], [0.4, 0.6]])
    assert "proba" not in load_labelled(p, "multiclass", ["a", "b", "c"])  # score_c missing: no scores
    logs = [{"features": {"x": 1}, "prediction": "a", "scores": {"a": 0.7, "b": 0.3}, "label": "a"}]
    out = load_labelled(write(tmp_path, "m.jsonl", json.dumps(logs[0]) + "\n"), "multiclass", ["a", "b"])
    np.testing.assert_array_equal(out["proba"], [[0.7, 0.3]])
    r = write(tmp_path, "r.csv", "x,prediction,label\n1,2.5,3\n2,1.0,\n")
    out = load_labelled(r, "regression")
    np.testing.assert_array_equal(out["label"], [3.0, np.nan])
    np.testing.assert_array_equal(out["prediction"], [2.5, 1.0])


def test_no_label_column_is_none_and_a_bad_one_an_error(tmp_path):
    from modelmon.exporter.reference import load_labelled

    assert load_labelled(write(tmp_path, "a.csv", "x,score\n1,0.5\n"), "binary") is None
    with pytest.raises(ReferenceDataError, match="label"):
        load_labelled(write(tmp_path, "b.csv", "x,label\n1,oops\n"), "regression")
