"""Golden /metrics: a fixed prediction log replayed into an Exporter on an injected clock, scraped
as GET /metrics scrapes it, and compared line by line with tests/fixtures/metrics.golden.prom.

A change to any family's name, help, type, labels, sample order or value shows up here as a
unified diff. After an intended change, regenerate the file (node_exporter's ``-update`` flag):

    MODELMON_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden_metrics.py

and review ``git diff tests/fixtures/metrics.golden.prom`` before committing it.

The input is committed, not simulated on each run (tests/fixtures/replay.jsonl, config
tests/fixtures/replay.yaml), so a change in the simulator or in scikit-learn's training does not
move the golden file; only the exporter (and the numerical libraries it computes with, see below)
does. Rewrite the log only on purpose, then regenerate the golden file:

    .venv/bin/python -m tests.test_golden_metrics --write-log

What is pinned or filtered, and why (everything else is a function of the log, the config and
the clock):
- ``modelmon_build_info{version}``: the package version, pinned to ``golden`` so a release does
  not rewrite the fixture.
- ``modelmon_multivariate_last_run_timestamp_seconds``: the multivariate pass stamps wall-clock
  ``time.time()``, not the exporter's injected clock; set to the replay clock after the pass.
- ``modelmon_checkpoint_last_success_timestamp_seconds``: stamped by the Checkpointer with
  ``time.time()``; no checkpointer runs here, so it is set to the replay clock (the series then
  exists, as it does in a serving exporter after its first checkpoint).
- The exporter's own costs (``modelmon_refresh_duration_seconds``, ``modelmon_ingest_batch_duration_seconds``,
  ``modelmon_lock_hold_seconds``): wall durations, different on every run. The exporter is given a constant
  ``timer`` (``PINNED_TIMER``), so every duration is 0 and lands in the first bucket; what stays compared is
  which series exist and how many ingest calls and lock holds were counted. tests/test_costs.py checks the
  durations themselves.
Checked against two library stacks: numpy 2.4.6 / scipy 1.17.1 / scikit-learn 1.9.1 (which wrote
the golden file) and numpy 1.26.4 / scipy 1.11.4 / scikit-learn 1.4.2 (the oldest pyproject allows):
- Floating point: the golden file holds the exact bytes of one scrape, but sample values are
  compared rounded to 12 significant digits: the two stacks disagree in the last one or two of 17
  digits of some PSI and Jensen-Shannon values (summation order). Every other value, the
  IsolationForest's outlier ratio included, matched exactly.
- ``modelmon_drift_classifier_auc``: its value is the fit of scikit-learn's
  HistGradientBoostingClassifier, which differs between the stacks (0.575 and 0.572 for credit),
  so its sample lines are compared without their values; tests/test_multivariate.py checks what
  it measures.
"""
from __future__ import annotations

import difflib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from modelmon.config import load_config
from modelmon.exporter import collector
from modelmon.exporter.collector import ExporterCollector
from modelmon.exporter.pipeline import Exporter

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CONFIG = FIXTURES / "replay.yaml"
LOG = FIXTURES / "replay.jsonl"
GOLDEN = FIXTURES / "metrics.golden.prom"
UPDATE = os.environ.get("MODELMON_UPDATE_GOLDEN") == "1"

# The replay: 110 s of demo traffic at 50 records/s through seven scenarios (the last two log a worse
# shadow version next to every served prediction, then serve a worse canary on a fifth of the
# requests, so the version families have samples), labels delayed by the simulator's default (about 30 s).
SEED = 0
START = "2026-11-23T10:00:00Z"  # = 1795428000
SCHEDULE = "stable:30,covariate_drift:10,concept_drift:5,latency_regression:8,error_burst:7,shadow_worse:10,canary_worse:40"
RATE = 50.0
CLOCK = 1_795_428_300.0  # START + 300 s: the exporter's wall clock, fixed, after every record
CHUNK = 500  # lines per ingest call, as the log follower reads them in batches
BUILD_VERSION = "golden"
# Durations are wall time, nondeterministic: the exporter's timer is pinned to a constant (every
# duration 0; the counts of ingest calls and lock holds stay exact and compared).
PINNED_TIMER = lambda: 0.0  # noqa: E731
# Hand-written lines after the simulated traffic, one per reject reason and an unmatched label,
# so the reject and unmatched counters carry values.
EXTRA_LINES = (
    b'{not json',
    b'{"ts":"2026-11-23T10:01:00.000Z","id":"x-1","model":"fraud","version":"v1","prediction":1}',
    # More than max_clock_skew (300 s) ahead of CLOCK: bad_timestamp.
    b'{"ts":"2026-11-23T11:00:00.000Z","id":"x-2","model":"credit","version":"v3","features":{},"prediction":1}',
    b'{"ts":"2026-11-23T10:04:00.000Z","id":"never-predicted","model":"credit","label":1}',
)


def write_log(path: Path = LOG) -> int:
    """Write the replay log: the simulator's records at a fixed seed and start, then EXTRA_LINES."""
    from modelmon.simulate import Simulator

    buf = io.BytesIO()
    n = Simulator(seed=SEED).write(buf, start=START, schedule=SCHEDULE, rate=RATE)
    buf.write(b"\n".join(EXTRA_LINES) + b"\n")
    path.write_bytes(buf.getvalue())
    return n + len(EXTRA_LINES)


def replay() -> bytes:
    """The /metrics body of an exporter that has read the whole replay log."""
    ex = Exporter(load_config(CONFIG), clock=lambda: CLOCK, timer=PINNED_TIMER)  # durations pinned to 0
    ex.load_references()  # {first: N} references: nothing to load, frozen from the log as it is read
    lines = LOG.read_bytes().splitlines()
    for i in range(0, len(lines), CHUNK):
        ex.ingest_lines(lines[i:i + CHUNK], "file")
    ex.refresh(force=True)
    ex.run_multivariate(seed=0)
    with ex.lock:
        for state in ex.states.values():
            if "last_run" in state.multivariate:
                state.multivariate["last_run"] = CLOCK  # stamped with time.time(), not the injected clock
        ex.checkpoint_saved_at = CLOCK  # stamped by the Checkpointer with time.time(); none runs here
    # As modelmon.exporter.server builds the registry behind GET /metrics.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExporterCollector(ex))
    return generate_latest(registry)


@pytest.fixture(scope="module")
def scraped() -> bytes:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(collector, "__version__", BUILD_VERSION)  # the release version must not move the file
        return replay()


# Series whose values are not compared (see the module docstring): their sample lines must match
# up to the value.
VERSION_DEPENDENT = ("modelmon_drift_classifier_auc",)
SIGNIFICANT_DIGITS = 12


def comparable(exposition: bytes) -> list[str]:
    """The exposition's lines with sample values rounded to SIGNIFICANT_DIGITS, and those of the
    VERSION_DEPENDENT series replaced by a placeholder; HELP and TYPE lines as they are."""
    out = []
    for line in exposition.decode().splitlines(keepends=True):
        if not line.startswith("#"):
            series, value = line.rstrip("\n").rsplit(" ", 1)  # no timestamps: the value is the last field
            name = series.split("{", 1)[0]
            value = "(not compared)" if name in VERSION_DEPENDENT else f"{float(value):.{SIGNIFICANT_DIGITS}g}"
            line = f"{series} {value}\n"
        out.append(line)
    return out


def test_metrics_match_golden(scraped: bytes):
    if UPDATE:
        GOLDEN.write_bytes(scraped)
        pytest.skip(f"MODELMON_UPDATE_GOLDEN=1: wrote {GOLDEN}; review `git diff` and commit it")
    assert GOLDEN.exists(), f"{GOLDEN} missing: run MODELMON_UPDATE_GOLDEN=1 .venv/bin/python -m pytest {__file__}"
    expected, actual = comparable(GOLDEN.read_bytes()), comparable(scraped)
    if actual != expected:
        diff = difflib.unified_diff(expected, actual, fromfile="tests/fixtures/metrics.golden.prom",
                                    tofile="replayed /metrics")
        pytest.fail(f"the replayed /metrics differs from the golden file (values rounded to {SIGNIFICANT_DIGITS} "
                    "significant digits). If the change is intended, run\n"
                    "  MODELMON_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden_metrics.py\n"
                    "and review the diff before committing:\n\n" + "".join(diff), pytrace=False)


def test_replay_is_deterministic(scraped: bytes):
    """A second replay in the same process gives the same bytes: a golden mismatch is a change in
    the exporter, never noise (dict order, a wall clock, an unseeded random draw)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(collector, "__version__", BUILD_VERSION)
        assert replay() == scraped


# Families exposed (empty) but without samples in the replay: its references are frozen from traffic,
# which carry no labels, so nothing is estimated and there is no reference quality
# (tests/test_estimation.py and tests/test_contract.py check them with labelled references).
UNSAMPLED = {"modelmon_reference_labeled", "modelmon_estimated_stderr", "modelmon_estimation_labeled_delta",
             "modelmon_estimation_labeled_stderr"}


def _unsampled(name: str) -> bool:
    # The KServe and stream families have samples only while those ways in are used (a file replay).
    return name in UNSAMPLED or name.startswith(("modelmon_reference_", "modelmon_estimated_", "modelmon_kserve_",
                                                 "modelmon_stream_"))


def test_golden_covers_every_family():
    """Every family of the contract is in the golden file, with samples (the replay is rich enough
    that a change to any of them shows up in the diff), but for UNSAMPLED."""
    from modelmon.contract import SERIES

    text = GOLDEN.read_text()
    for s in SERIES:
        assert f"# TYPE {s.name} {s.type}\n" in text, f"{s.name} missing from the golden file"
        if _unsampled(s.name):
            continue
        sample = re.compile(rf"^{s.name}(_bucket|_count|_sum)?[{{ ]", flags=re.M)
        assert sample.search(text), f"{s.name} has no samples in the golden file"


# promtool check metrics parses the exposition (exit 1 on an error) and lints names, units and
# help text (exit 3 with one line per problem). Accepted lint warnings, as {substring: why}; a new
# warning fails the test until it is fixed or listed here with its reason. promtool 2.42 reports
# none for the golden file today, so the list is empty.
ACCEPTED_LINT: dict[str, str] = {}


def test_golden_passes_promtool(promtool: str):
    """The golden exposition parses, and lints clean apart from ACCEPTED_LINT."""
    proc = subprocess.run([promtool, "check", "metrics"], input=GOLDEN.read_bytes(), capture_output=True,
                          timeout=60)
    output = (proc.stdout + proc.stderr).decode()
    assert proc.returncode in (0, 3) and "error while linting" not in output, \
        f"promtool check metrics failed (exit {proc.returncode}):\n{output}"
    problems = [line for line in output.splitlines() if line.strip()]
    unexpected = [p for p in problems if not any(key in p for key in ACCEPTED_LINT)]
    assert not unexpected, "promtool check metrics lint warnings (fix, or accept in ACCEPTED_LINT with a reason):\n" \
        + "\n".join(unexpected)


if __name__ == "__main__":
    if sys.argv[1:] != ["--write-log"]:
        raise SystemExit(f"usage: python -m tests.test_golden_metrics --write-log  (rewrites {LOG.name})")
    print(f"wrote {write_log()} lines to {LOG}")
