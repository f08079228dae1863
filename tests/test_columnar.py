"""The columnar fast path parses exactly as the per-line parser does: same accepted records in the same
order, same rejects with the same reasons and messages, on clean and on fuzzed batches."""
from __future__ import annotations

import dataclasses
import random
from datetime import datetime

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelmon.contract import class_key
from modelmon.exporter.columnar import MIN_BLOCK, ColumnarParser
from modelmon.exporter.records import RecordParser
from tests.exporter_helpers import (T0, binary_records, make_config, multiclass_records, regression_records,
                                    rfc3339)
from tests.test_fuzz import mutated_line

CONFIG = make_config()
NOW = T0 + 3600.0


def parsers(config=CONFIG):
    per_line = RecordParser(config, clock=lambda: NOW)
    return per_line, ColumnarParser(RecordParser(config, clock=lambda: NOW))


def _same_values(a, b) -> bool:
    """Raw values as the state sees them: class values by their key, numbers by value."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if (x is None) != (y is None):
            return False
        if x is None:
            continue
        if type(x) in (int, float) and type(y) in (int, float) and not isinstance(x, bool):
            if not (x == y or (x != x and y != y)):
                return False
        elif class_key(x) != class_key(y):
            return False
    return True


def assert_same(expected, got) -> None:
    assert got.accepted == expected.accepted
    assert got.rejects.counts == expected.rejects.counts
    assert [(r.index, r.reason, r.message) for r in got.rejects.listed()] == \
        [(r.index, r.reason, r.message) for r in expected.rejects.listed()]
    assert got.shortened == expected.shortened
    assert sorted(got.predictions) == sorted(expected.predictions)
    for model, e in expected.predictions.items():
        g = got.predictions[model]
        assert np.array_equal(g.positions, e.positions)
        assert np.array_equal(g.ts, e.ts)
        assert g.ids == e.ids and g.versions == e.versions
        if g.label_present is not None:  # the fast path's masks say what the lists say
            assert g.label_present.tolist() == [v is not None for v in g.labels]
            assert g.id_present.tolist() == [v is not None for v in g.ids]
        assert np.array_equal(g.status_ok, e.status_ok)
        assert np.array_equal(g.latency_s, e.latency_s, equal_nan=True)
        assert np.array_equal(g.scores, e.scores, equal_nan=True)
        no = np.zeros(len(e), dtype=bool)
        assert np.array_equal(g.shadow if g.shadow is not None else no, e.shadow if e.shadow is not None else no)
        assert _same_values(g.predictions, e.predictions) and _same_values(g.labels, e.labels)
        assert (g.score_maps or [None] * len(g)) == (e.score_maps or [None] * len(e))
        assert sorted(g.features) == sorted(e.features)
        for f, values in e.features.items():
            assert g.features[f].dtype == values.dtype, f
            if values.dtype == object:
                assert g.features[f].tolist() == values.tolist(), f
            else:
                assert np.array_equal(g.features[f], values, equal_nan=True), f
    assert sorted(got.labels) == sorted(expected.labels)
    for model, e in expected.labels.items():
        g = got.labels[model]
        assert np.array_equal(g.positions, e.positions)
        assert g.ids == e.ids and _same_values(g.labels, e.labels)
        assert np.array_equal(g.ts, e.ts, equal_nan=True)


def clean_lines(n: int, seed: int, numeric_ts: bool = True) -> list[bytes]:
    recs, late = binary_records(n, seed=seed, start=T0, inline_share=0.6)
    recs += regression_records(n // 2, seed, T0) + late
    random.Random(seed).shuffle(recs)
    for r in recs:  # one JSON type per field in a batch, as one producer writes it
        if "ts" in r:
            ts = r["ts"] if type(r["ts"]) is not str else datetime.fromisoformat(r["ts"]).timestamp()
            r["ts"] = ts if numeric_ts else rfc3339(ts)
    return [orjson.dumps(r) for r in recs]


@pytest.mark.parametrize("numeric_ts", [True, False])
def test_clean_batches_take_the_fast_path_and_equal_the_per_line_parse(numeric_ts):
    per_line, columnar = parsers()
    lines = clean_lines(600, seed=3, numeric_ts=numeric_ts)
    assert_same(per_line.parse_lines(lines), columnar.parse_lines(lines))
    assert columnar.stats["fast"] == len(lines) and columnar.stats["slow"] == 0


def test_multiclass_records_and_rejects_go_per_line_in_order():
    per_line, columnar = parsers()
    lines = clean_lines(300, seed=4)
    lines += [orjson.dumps(r) for r in multiclass_records(80, 5, T0)]
    lines += [b'{"model": "bin", "ts": 1, "prediction": 1}',  # far in the past: accepted (no max age)
              b'{"model": "bin", "ts": 9e12, "prediction": 1}',  # far future: bad_timestamp
              b'{"model": "nope", "ts": 1, "prediction": 1}', b'not json', b'{"model": "bin"}']
    random.Random(1).shuffle(lines)
    assert_same(per_line.parse_lines(lines), columnar.parse_lines(lines))
    # String classes next to integer ones and string timestamps next to numbers: no single column
    # type fits, so pyarrow refuses every block and the lines are parsed per line, and counted so.
    assert columnar.stats["slow"] >= 85


def test_multiclass_lines_among_fast_ones_go_per_line_and_keep_their_order():
    per_line, columnar = parsers()
    multi = multiclass_records(80, 5, T0)
    for r in multi:
        r["ts"] = datetime.fromisoformat(r["ts"]).timestamp()
        r["prediction"] = "cab".index(r["prediction"]) if "prediction" in r else None
        r.pop("label", None)
    lines = clean_lines(300, seed=4) + [orjson.dumps({k: v for k, v in r.items() if v is not None}) for r in multi]
    random.Random(2).shuffle(lines)
    assert_same(per_line.parse_lines(lines), columnar.parse_lines(lines))
    assert columnar.stats["slow"] == 80 and columnar.stats["fast"] == len(lines) - 80


@pytest.mark.parametrize("poison", [
    b'{"model": "bin", "ts": NaN, "prediction": 1}',  # pyarrow reads NaN; JSON does not
    b'{"model": "bin", "ts": 1, "prediction": 1, "extra": Infinity}',  # even in a field nobody reads
    b'\xef\xbb\xbf{"model": "bin", "ts": 1, "prediction": 1}',  # a byte-order mark
    b'{"model": "bin", "ts": 1, "prediction": 1}{"model": "bin", "ts": 2, "prediction": 0}',  # two objects
    b'{"model": "bin", "model": "reg", "ts": 1, "prediction": 1}',  # a duplicate key
    b'{"model": "bin", "ts": "2026-01-01T00:00:00Z", "prediction": 1}',  # a type change inside the batch
    b'{"model": "bin", "ts": 1, "prediction": "yes", "id": 7}',
    b'{"model": "bin", "ts": 1, "prediction": 1.0}',  # an integral float class
    b'{"model": "bin", "ts": 1, "prediction": 1, "features": {"x1": "3.5", "c": 4}}',  # lenient per line
    b'{"model": "bin", "ts": 1, "prediction": null, "label": 1, "id": "a"}',  # null = absent: a late label
    b'{"model": "bin", "ts": 1, "status": null, "prediction": 1}',  # null status = ok
    b'   ',
])
def test_one_odd_line_in_a_block_changes_nothing_but_itself(poison):
    per_line, columnar = parsers()
    lines = clean_lines(400, seed=6)
    lines.insert(137, poison)
    assert_same(per_line.parse_lines(lines), columnar.parse_lines(lines))
    if poison.strip():  # the block is split around the odd line, not given up
        assert columnar.stats["fast"] >= len(lines) - 2 * MIN_BLOCK


def test_a_null_status_and_a_null_prediction_read_as_absent_on_both_paths():
    per_line, _ = parsers()
    batch = per_line.parse_lines([
        b'{"model": "bin", "ts": %d, "status": null, "prediction": 1}' % T0,
        b'{"model": "bin", "ts": %d, "prediction": null, "id": "r1", "label": 1}' % T0])
    assert batch.accepted == 2 and not batch.rejects
    assert batch.predictions["bin"].status_ok.tolist() == [True]
    assert batch.labels["bin"].ids == ["r1"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.data_too_large])
@given(st.lists(mutated_line(), min_size=1, max_size=30), st.integers(0, 2**31), st.booleans())
def test_fuzzed_batches_equal_the_per_line_parse(odd, seed, numeric_ts):
    """Mutated lines scattered through a clean batch big enough for the fast path."""
    per_line, columnar = parsers()
    lines = clean_lines(150, seed=seed % 1000, numeric_ts=numeric_ts)
    rng = random.Random(seed)
    for line, _ in odd:
        lines.insert(rng.randrange(len(lines) + 1), line)
    assert_same(per_line.parse_lines(lines), columnar.parse_lines(lines))


def test_a_config_without_fast_models_parses_per_line():
    config = make_config()
    only_multi = dataclasses.replace(config, models=tuple(m for m in config.models if m.task == "multiclass"))
    per_line, columnar = parsers(only_multi)
    lines = [orjson.dumps(r) for r in multiclass_records(200, 7, T0)]
    assert_same(per_line.parse_lines(lines), columnar.parse_lines(lines))
    assert columnar.stats["fast"] == 0


def test_the_exporter_counts_lines_by_parser():
    from modelmon.exporter.collector import ExporterCollector
    from modelmon.exporter.pipeline import Exporter

    ex = Exporter(CONFIG, clock=lambda: NOW)
    lines = clean_lines(200, seed=8)
    ex.ingest_lines(lines, "file")
    ex.ingest_lines(lines[:3], "http")  # too few for the fast path
    family = next(m for m in ExporterCollector(ex).collect() if m.name == "modelmon_ingest_lines_parsed")
    counts = {s.labels["parser"]: s.value for s in family.samples if s.name.endswith("_total")}
    assert counts == {"columnar": len(lines), "per_line": 3}
