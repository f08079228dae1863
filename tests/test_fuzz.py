"""Fuzzed and mutated lines never crash the exporter, and every line is either counted or rejected."""
from __future__ import annotations

import time
from datetime import datetime

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelmon.exporter.collector import ExporterCollector
from modelmon.exporter.pipeline import Exporter
from tests.exporter_helpers import binary_records, make_config

CONFIG = make_config()
VALID, LATE = binary_records(30, seed=21, inline_share=0.5)
KEYS = ["ts", "id", "model", "version", "features", "prediction", "score", "latency_ms", "status", "label",
        "scores", "shadow"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


timestamps = (
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)).map(
        lambda d: d.isoformat() + draw_suffix(d))
    | st.floats(min_value=-1e13, max_value=1e13, allow_nan=False)
    | st.integers(-2**40, 2**40)
    | st.sampled_from(["5026-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "2026-13-01T00:00:00Z", "", "now"])
)


def draw_suffix(d: datetime) -> str:
    return "Z" if d.microsecond % 2 else "+02:00"


@st.composite
def mutated_line(draw):
    rec = dict(draw(st.sampled_from(VALID + LATE)))
    kind = draw(st.sampled_from(["keep", "drop", "retype", "feature", "bytes", "truncate", "model", "ts",
                                 "label_value"]))
    if kind == "keep":
        return orjson.dumps(rec), True
    if kind == "drop":
        rec.pop(draw(st.sampled_from(sorted(rec))), None)
    elif kind == "retype":
        rec[draw(st.sampled_from(KEYS))] = draw(json_values)
    elif kind == "feature" and "features" in rec:
        rec["features"] = {**rec["features"], draw(st.sampled_from(["x1", "x2", "c"])): draw(json_values)}
    elif kind == "model":
        rec["model"] = draw(st.sampled_from(["multi", "reg", "bin", ""]))
    elif kind == "ts":  # any instant, any spelling: past, far future, epoch seconds or milliseconds
        rec["ts"] = draw(timestamps)
    elif kind == "label_value":  # label values of any length and alphabet: version or class
        key = draw(st.sampled_from(["version", "prediction", "label"]))
        rec[key] = draw(st.text(min_size=0, max_size=400))
    elif kind == "bytes":
        return draw(st.binary(min_size=1, max_size=60)).replace(b"\n", b" ").strip() or b"x", False
    else:
        raw = orjson.dumps(rec)
        return raw[: draw(st.integers(1, max(1, len(raw) - 1)))], False
    return orjson.dumps(rec, option=orjson.OPT_NON_STR_KEYS), False


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated_line(), min_size=1, max_size=40))
def test_mutated_batches_never_crash_and_every_line_is_accounted(batch):
    ex = Exporter(CONFIG)
    raw = [line for line, _ in batch]
    result = ex.ingest_lines(raw, "file")
    assert result.accepted + result.rejected == len(raw)
    assert len(result.errors) == result.rejected  # fewer than 100: every reject is listed
    rejected = {r.index for r in result.errors}
    for i, (_, intact) in enumerate(batch):
        if intact:
            assert i not in rejected, result.errors
    ex.refresh(force=True)
    metrics = list(ExporterCollector(ex).collect())  # formatting never fails either
    assert sum(ex.rejected.values()) == result.rejected
    assert not any(ex.model_errors.values()), ex.model_errors  # no input makes a model's pass fail
    limit = CONFIG.exporter.max_label_value_length
    for family in metrics:  # no label value beyond the cap, whatever came in
        for sample in family.samples:
            assert all(len(v) <= limit for v in sample.labels.values()), sample
    horizon = time.time() + CONFIG.exporter.max_clock_skew_seconds
    assert all(s.last_ts is None or s.last_ts <= horizon for s in ex.states.values())  # no clock moved past it
