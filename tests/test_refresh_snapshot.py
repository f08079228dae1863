"""The refresh computes outside the exporter lock (issue 12).

`Exporter.refresh` captures immutable window views under the lock (`ModelState.refresh_inputs`),
computes without it (`ModelState.compute`) and publishes under it. Tested here: the snapshot is
the one the former all-under-the-lock refresh computed; ingest and /metrics proceed while a
compute is paused; an ingest during a compute is picked up by the next pass; a failing compute
keeps the last snapshot; two refreshes never compute one model at once; and a window handed its
concatenation back (`SlidingWindow.adopt`) holds exactly the records it held before.
No timing assertions beyond generous timeouts that only catch a deadlock.
"""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from modelmon.config import Window
from modelmon.exporter import drift
from modelmon.exporter.model_state import PRED, ModelState, Snapshot, feature_drift
from modelmon.exporter.pipeline import Exporter
from modelmon.exporter.windows import SlidingWindow, concat
from tests.exporter_helpers import T0, binary_records, make_config, multiclass_records, regression_records
from tests.test_exporter import lines, scrape, value

TIMEOUT = 30  # seconds: only a deadlock gets anywhere near it


def old_refresh(state: ModelState) -> Snapshot:
    """The refresh as it was before the split (everything from `columns()`, under the caller's lock)."""
    snap = Snapshot()
    for version, win in state.quality_windows.items():
        if state.cfg.quality_window.is_time and state.last_ts is not None:
            win.expire(state.last_ts)
        cols = win.columns()
        n = len(win)
        snap.window_labeled[version] = n
        if n:
            snap.quality[version] = state._quality(cols)
    if state.cfg.drift_window.is_time and state.last_ts is not None:
        state.drift_window.expire(state.last_ts)
    snap.drift_window_records = len(state.drift_window)
    if state.reference is not None and len(state.drift_window) >= state.cfg.min_drift_samples:
        cols = state.drift_window.columns()
        for f, profile in state.reference.profiles.items():
            snap.feature_drift[f] = feature_drift(profile, cols[f])
    if state.reference is not None and state.reference.prediction is not None:
        for version, win in state.output_windows.items():  # each version's outputs
            if state.cfg.drift_window.is_time and state.last_ts is not None:
                win.expire(state.last_ts)
            if len(win) >= state.cfg.min_drift_samples:
                snap.prediction_psi[version] = drift.psi(state.reference.prediction.ref_counts,
                                                         state.reference.prediction.counts(win.columns()[PRED]))
    return snap


def same(a, b) -> bool:
    """Equality of nested dicts of floats, NaN equal to NaN."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def snap_dict(s: Snapshot) -> dict:
    return {"quality": s.quality, "window_labeled": s.window_labeled, "feature_drift": s.feature_drift,
            "prediction_psi": s.prediction_psi, "drift_window_records": s.drift_window_records}


def batches(round_: int) -> list[list]:
    start = T0 + 400 * round_
    preds, _ = binary_records(150, seed=round_, start=start, inline_share=1.0)
    return [preds, multiclass_records(150, seed=100 + round_, start=start),
            regression_records(150, seed=200 + round_, start=start)]


@pytest.mark.parametrize("windows", [{"quality_window": 400, "drift_window": 300},
                                     {"quality_window": "5m", "drift_window": "4m"}],
                         ids=["count", "time"])
def test_split_refresh_equals_the_former_refresh(windows):
    new, old = Exporter(make_config(**windows)), Exporter(make_config(**windows))
    assert new.states["reg"].cfg.drift_window.is_time == (windows["drift_window"] == "4m")
    for round_ in range(6):  # windows fill, slide (trims during and between refreshes), and adopt
        for recs in batches(round_):
            for half in (recs[:70], recs[70:]):
                new.ingest_lines(lines(half), "file")
                old.ingest_lines(lines(half), "file")
        new.refresh(force=True)
        for name, state in old.states.items():
            want = snap_dict(old_refresh(state))
            got = snap_dict(new.states[name].snapshot)
            assert same(got, want), (round_, name)
        # Every task got quality and drift gauges by the end.
    for name in ("bin", "multi", "reg"):
        snap = new.states[name].snapshot
        assert snap.quality and snap.feature_drift, name
    assert scrape(new).count("modelmon_feature_psi") > 0


def paused_compute(state: ModelState):
    """Replace `state.compute` by one that waits for `release`; `entered` is set once it waits."""
    entered, release = threading.Event(), threading.Event()
    real = state.compute

    def compute(inputs):
        entered.set()
        assert release.wait(TIMEOUT)
        return real(inputs)

    state.compute = compute
    return entered, release


def in_thread(fn) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def test_a_paused_compute_blocks_neither_ingest_nor_metrics():
    ex = Exporter(make_config())
    ex.ingest_lines(lines(binary_records(300, seed=1, inline_share=1.0)[0]), "file")
    ex.refresh(force=True)
    before = ex.states["bin"].snapshot
    entered, release = paused_compute(ex.states["bin"])
    ex.ingest_lines(lines(binary_records(50, seed=2, start=T0 + 1000, inline_share=1.0)[0]), "file")
    refresher = in_thread(ex.refresh)
    try:
        assert entered.wait(TIMEOUT)
        done: dict = {}
        ingest = in_thread(lambda: done.setdefault("ingest", ex.ingest_lines(
            lines(binary_records(20, seed=3, start=T0 + 2000, inline_share=1.0)[0]), "http")))
        metrics = in_thread(lambda: done.setdefault("metrics", scrape(ex)))
        ingest.join(TIMEOUT)
        metrics.join(TIMEOUT)
        assert not ingest.is_alive() and not metrics.is_alive(), "blocked behind the paused compute"
        assert done["ingest"].accepted == 20
        assert "modelmon_predictions_total" in done["metrics"]
        assert ex.states["bin"].snapshot is before  # not published yet
        assert refresher.is_alive()
    finally:
        release.set()
    refresher.join(TIMEOUT)
    assert not refresher.is_alive()
    assert ex.states["bin"].snapshot is not before


def test_an_ingest_during_the_compute_is_in_the_next_refresh():
    ex = Exporter(make_config(quality_window=1000))
    ex.ingest_lines(lines(binary_records(300, seed=4, inline_share=1.0)[0]), "file")
    ex.refresh(force=True)
    state = ex.states["bin"]
    assert state.snapshot.window_labeled == {"v1": 300} and not state.dirty
    ex.ingest_lines(lines(binary_records(10, seed=5, start=T0 + 1000, inline_share=1.0)[0]), "file")
    entered, release = paused_compute(state)
    refresher = in_thread(ex.refresh)
    try:
        assert entered.wait(TIMEOUT)
        ex.ingest_lines(lines(binary_records(40, seed=6, start=T0 + 2000, inline_share=1.0)[0]), "file")
    finally:
        release.set()
    refresher.join(TIMEOUT)
    assert state.snapshot.window_labeled == {"v1": 310}  # what was captured before the compute
    assert state.dirty  # the ingest during the compute is not lost...
    ex.refresh()
    assert state.snapshot.window_labeled == {"v1": 350}  # ...the next pass includes it
    assert not state.dirty
    text = scrape(ex)
    assert value(text, "modelmon_window_labeled", model="bin", version="v1") == 350


def test_a_failing_compute_keeps_the_last_snapshot_and_counts_the_error():
    ex = Exporter(make_config())
    ex.ingest_lines(lines(binary_records(300, seed=7, inline_share=1.0)[0]), "file")
    ex.refresh(force=True)
    state = ex.states["bin"]
    last = state.snapshot
    assert last.quality

    def broken(inputs):
        raise RuntimeError("injected")

    state.compute = broken
    ex.ingest_lines(lines(binary_records(30, seed=8, start=T0 + 1000, inline_share=1.0)[0]), "file")
    ex.ingest_lines(lines(regression_records(60, seed=9, start=T0)), "file")
    ex.refresh()
    assert state.snapshot is last
    assert ex.model_errors[("bin", "refresh")] == 1
    assert state.dirty  # retried on the next pass
    assert "bin" in ex.refresh_seconds
    assert ex.states["reg"].snapshot.window_labeled == {"v2": 60}  # the others go on
    text = scrape(ex)
    assert value(text, "modelmon_refresh_errors_total", model="bin", stage="refresh") == 1
    del state.compute  # the class's compute again
    ex.refresh()
    assert state.snapshot.window_labeled == {"v1": 330} and not state.dirty


def test_two_refreshes_never_compute_one_model_at_once():
    ex = Exporter(make_config())
    ex.ingest_lines(lines(binary_records(300, seed=10, inline_share=1.0)[0]), "file")
    state = ex.states["bin"]
    entered, release = paused_compute(state)
    running, most = [0], [0]
    paused = state.compute

    def counting(inputs):
        running[0] += 1
        most[0] = max(most[0], running[0])
        try:
            return paused(inputs)
        finally:
            running[0] -= 1

    state.compute = counting
    first = in_thread(lambda: ex.refresh(force=True))
    assert entered.wait(TIMEOUT)
    second = in_thread(lambda: ex.refresh(force=True))
    second.join(0.2)  # given the chance, it must wait for the first pass
    assert second.is_alive() and most[0] == 1
    release.set()
    for t in (first, second):
        t.join(TIMEOUT)
        assert not t.is_alive()
    assert most[0] == 1 and not ex.model_errors


def test_lock_holds_of_a_refresh_exclude_the_compute():
    ex = Exporter(make_config())
    ex.ingest_lines(lines(binary_records(300, seed=11, inline_share=1.0)[0]), "file")
    state = ex.states["bin"]
    real = state.compute
    seen = []

    def compute(inputs):
        seen.append(ex.lock._is_owned())  # noqa: SLF001 - RLock's own check, for this test only
        return real(inputs)

    state.compute = compute
    ex.refresh(force=True)
    assert seen == [False]


# ---------------------------------------------------------------- windows: views and adoption


def ops_window(spec: Window, seed: int, adopt: bool) -> list[dict]:
    """Random appends, expiries and view/concat/adopt rounds; returns the window's records after
    every step. Event time is out of order within and across batches for count windows, in order
    for time windows: a time window cuts only its first chunk, so with out-of-order event time
    what it keeps depends on the chunk layout (as with `columns()` compaction before adoption
    existed), and two layouts cannot be compared record for record."""
    rng = np.random.default_rng(seed)
    win = SlidingWindow(spec, max_records=500)
    pending = []
    states = []
    t = 0.0
    for step in range(300):
        r = rng.random()
        if r < 0.6:
            n = int(rng.integers(1, 60))
            ts = t + np.sort(rng.random(n) * 5)
            if spec.seconds is None and rng.random() < 0.3:
                ts = t + rng.random(n) * 5 - 3
            t += 5
            win.append({"ts": ts, "x": rng.normal(size=n), "c": np.array([f"v{step}"] * n, dtype=object)})
        elif r < 0.7 and spec.seconds is not None:
            win.expire(t + rng.random() * 10)
        elif r < 0.85:
            view = win.view()
            pending.append((view, concat(view.chunks)))
        elif pending:
            view, merged = pending.pop(0)
            if adopt:
                win.adopt(view, merged)
        elif rng.random() < 0.3:
            win.columns()
        got = concat(win.view().chunks)
        assert len(win) == (len(got["ts"]) if got else 0)
        states.append(got)
    return states


@pytest.mark.parametrize("spec", [Window(count=200), Window(seconds=60.0), Window(seconds=1e9)],
                         ids=["count", "time", "time-capped"])
@pytest.mark.parametrize("seed", range(8))
def test_adopting_a_concatenation_never_changes_the_window(spec, seed):
    with_adopt = ops_window(spec, seed, adopt=True)
    without = ops_window(spec, seed, adopt=False)
    for a, b in zip(with_adopt, without):
        assert a.keys() == b.keys()
        for k in a:
            assert np.array_equal(a[k], b[k])


def test_adopt_compacts_after_front_drops_and_appends():
    win = SlidingWindow(Window(count=100))
    for i in range(10):
        win.append({"ts": np.arange(i * 20, i * 20 + 20, dtype=float)})
    view = win.view()
    merged = concat(view.chunks)
    win.append({"ts": np.arange(200, 230, dtype=float)})  # drops 30 records at the front
    assert win.adopt(view, merged)
    assert len(win.view().chunks) == 2
    assert np.array_equal(win.columns()["ts"], np.arange(130, 230, dtype=float))
