"""Fuzzed and mutated lines never crash the exporter, and every line is either counted or rejected."""
from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelmon.exporter.collector import ExporterCollector
from modelmon.exporter.pipeline import Exporter
from tests.exporter_helpers import binary_records, make_config

CONFIG = make_config()
VALID, LATE = binary_records(30, seed=21, inline_share=0.5)
KEYS = ["ts", "id", "model", "version", "features", "prediction", "score", "latency_ms", "status", "label",
        "scores"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def mutated_line(draw):
    rec = dict(draw(st.sampled_from(VALID + LATE)))
    kind = draw(st.sampled_from(["keep", "drop", "retype", "feature", "bytes", "truncate", "model"]))
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
    assert result.accepted + len(result.rejects) == len(raw)
    rejected = {r.index for r in result.rejects}
    for i, (_, intact) in enumerate(batch):
        if intact:
            assert i not in rejected, result.rejects
    ex.refresh(force=True)
    list(ExporterCollector(ex).collect())  # formatting never fails either
    assert sum(ex.rejected.values()) == len(result.rejects)
