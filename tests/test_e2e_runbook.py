"""Every PromQL query the runbook tells on-call to run, run against the live Prometheus of the e2e stack.

A runbook query that does not parse, or names a series or recording rule the stack does not have,
fails an engineer at the worst moment. `NAME` is replaced by each model, `<positive>` by its
positive class. Runs after tests/test_e2e_alerts.py on the same stack, so incidents have happened.
"""
from __future__ import annotations

import re
import time

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e

RUNBOOK = ROOT / "alerting" / "RUNBOOK.md"
# Inline code that is a query: names a modelmon series or recording rule, or `up`.
QUERY = re.compile(r"`([^`\n]*(?:modelmon_|model:|model_version:|model_feature:|\bup\{)[^`\n]*)`")
# Series the stack only has after a fault it does not inject (empty is then the right answer).
MAY_BE_EMPTY = ("modelmon_records_rejected_total", "modelmon_labels_unmatched_total", "modelmon_outlier",
                "modelmon_cardinality_overflow_total", "modelmon_refresh_errors_total",
                "modelmon_state_write_errors_total", "predicted=\"<positive>\"", "actual=\"<positive>\"",
                "status=\"error\"}[5m]))",  # no error in the last 5 minutes is a fine answer
                "modelmon_checkpoint_last_success_timestamp_seconds",  # the e2e exporter runs without one
                # version comparison: only while a second (canary or shadow) version has predictions
                "modelmon_version_", "modelmon_shadow_",
                # the ways in: only with a stream source or KServe's logger (the stack reads a file)
                "modelmon_stream_", "modelmon_kserve_")


def runbook_queries() -> list[str]:
    out = []
    for expr in QUERY.findall(RUNBOOK.read_text()):
        if expr.startswith(("modelmon_", "model", "up", "sum", "rate", "increase", "time", "count", "histogram")):
            out.append(expr)
    return sorted(set(out))


def test_the_runbook_has_queries():
    assert len(runbook_queries()) > 20


def test_every_runbook_query_runs_on_the_live_stack(live_stack):
    """Each query runs for every model, and returns data for at least one (quality metrics exist
    only for their task; a comparison or a fault counter may rightly be empty)."""
    deadline = time.time() + 120  # alone (not after the alert scenarios), let the stack gather data first
    ready = ("model_version:modelmon_accuracy_ratio:1h", "modelmon_drift_classifier_auc")
    while not all(live_stack.query(q) for q in ready) and time.time() < deadline:
        time.sleep(2)
    problems, ran = [], 0
    for expr in runbook_queries():
        answered = False
        for m in live_stack.config.models:
            query = expr.replace("NAME", m.name).replace("<positive>", str(m.positive_class))
            data = live_stack.prom("/api/v1/query", query=query)
            ran += 1
            if data["status"] != "success":
                problems.append(f"does not run: {query}: {data.get('error')}")
            answered |= bool((data.get("data") or {}).get("result"))
        may_be_empty = any(k in expr for k in MAY_BE_EMPTY) or re.search(r"[<>] [0-9.]+$", expr)
        if not answered and not may_be_empty:
            problems.append(f"no data for any model: {expr}")
    assert ran > 20
    assert not problems, "\n".join(problems)
