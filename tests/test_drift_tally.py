"""The incremental drift tally (issue 12) against a full recompute from the raw window.

Every refresh of the tally must give exactly what ``feature_drift`` (and the prediction PSI)
computes from ``concat(view.chunks)``: same PSI / JS / chi2 / missing ratio, same KS D, same KS
p-value. Windows get random batches, evictions, out-of-order event time (the fallback), batches
larger than the window, compaction and adoption between refreshes, and reference changes.
No timing assertions.
"""
from __future__ import annotations

import numpy as np
import pytest

from modelmon.config import Window
from modelmon.exporter import drift
from modelmon.exporter.drift_tally import DriftTally, NumericCoder, feature_stats
from modelmon.exporter.model_state import PRED, feature_drift, sample_view
from modelmon.exporter.windows import SlidingWindow, concat, tail_run

CATS = np.array(["a", "b", "c", "d", "zz-unseen", "yy-unseen"], dtype=object)


def reference(seed: int, task: str, sample_max: int = 300):
    rng = np.random.default_rng(seed)
    n = 2000
    profiles = {
        "cont": drift.NumericProfile.from_values(rng.normal(0, 1, n), sample_max=sample_max, seed=seed),
        # discrete values: ties in the KS sample and in the window
        "disc": drift.NumericProfile.from_values(rng.integers(0, 6, n).astype(float), sample_max=sample_max),
        "cat": drift.CategoricalProfile.from_values(rng.choice(CATS[:4], n, p=[0.4, 0.3, 0.2, 0.1]), top_k=3),
    }
    if task == "binary":
        prediction = drift.NumericProfile.from_values(rng.random(n))
    else:
        prediction = drift.CategoricalProfile.from_values(rng.choice(np.array(["x", "y", "z"], dtype=object), n))
    return profiles, prediction


def batch(rng: np.random.Generator, n: int, t: float, task: str, spread: float = 0.0) -> dict:
    cont = rng.normal(rng.choice([0.0, 0.7]), 1, n)
    cont[rng.random(n) < 0.1] = np.nan
    cont[rng.random(n) < 0.01] = np.inf
    disc = rng.integers(-1, 8, n).astype(float)  # values outside the reference range too
    disc[rng.random(n) < 0.05] = np.nan
    cat = rng.choice(CATS, n).astype(object)
    cat[rng.random(n) < 0.1] = None
    if task == "binary":
        pred = rng.random(n)
        pred[rng.random(n) < 0.02] = np.nan
    else:
        pred = rng.choice(np.array(["x", "y", "z", "w-unseen"], dtype=object), n)
    ts = t + np.sort(rng.random(n)) if spread == 0 else t + rng.random(n) * spread - spread / 2
    return {"ts": ts, "cont": cont, "disc": disc, "cat": cat, PRED: pred}


def full(view, profiles, prediction) -> tuple[dict, float | None]:
    cols = concat(view.chunks)
    want = {f: feature_drift(p, cols[f]) for f, p in profiles.items()}
    psi = drift.psi(prediction.ref_counts, prediction.counts(cols[PRED])) if prediction is not None else None
    return want, psi


def check(tally: DriftTally, win: SlidingWindow, profiles, prediction) -> None:
    view = win.view()
    if view.size == 0:
        return
    st = tally.update(view, profiles, prediction, PRED)
    want, want_psi = full(view, profiles, prediction)
    cols = concat(view.chunks)
    for f, coder in st.coders.items():
        if f == PRED:
            continue
        got = tally_stats(st, f)
        assert got == want[f], (f, got, want[f])
        if isinstance(coder, NumericCoder) and "ks_pvalue" in got:  # Wasserstein and t-test present too
            assert "wasserstein_normed" in got and ("ttest_pvalue" in got or got.get("missing_ratio", 0) > 0)
        if isinstance(coder, NumericCoder) and "ks_pvalue" in got:
            v = np.array([x for x in cols[f] if x is not None], dtype=np.float64)
            v = v[~np.isnan(v)]
            assert coder.ks_statistic(st.counts[f]) == drift.ks_statistic(coder.profile.sample, v)
    if prediction is not None:
        got_psi = drift.psi(prediction.ref_counts, st.coders[PRED].bins(st.counts[PRED]))
        assert got_psi == want_psi
    assert sum(n for n, _ in st.segments) == view.size


def tally_stats(st, f):
    return feature_stats(st.coders[f], st.counts[f])


@pytest.mark.parametrize("task", ["binary", "multiclass"])
@pytest.mark.parametrize("seed", range(4))
def test_count_window_matches_a_full_recompute(task, seed):
    rng = np.random.default_rng(seed)
    profiles, prediction = reference(seed, task)
    win, tally = SlidingWindow(Window(count=400)), DriftTally()
    t = 0.0
    for step in range(60):
        n = int(rng.choice([1, 7, 50, 150, 900]))  # 900: a batch larger than the window
        win.append(batch(rng, n, t, task))
        t += 10
        if rng.random() < 0.6:
            check(tally, win, profiles, prediction)
    assert tally.full_recomputes == 1  # appends and front drops only: never started over


@pytest.mark.parametrize("seed", range(4))
def test_time_window_in_order_is_incremental(seed):
    rng = np.random.default_rng(seed)
    profiles, prediction = reference(seed, "binary")
    win, tally = SlidingWindow(Window(seconds=60.0), max_records=700), DriftTally()
    t = 0.0
    for step in range(80):
        n = int(rng.integers(1, 80))
        win.append(batch(rng, n, t, "binary"))
        t += rng.random() * 15
        if rng.random() < 0.3:
            win.expire(t + rng.random() * 20)
        if rng.random() < 0.5:
            check(tally, win, profiles, prediction)
    assert tally.full_recomputes == 1


@pytest.mark.parametrize("cap", [1_000_000, 400], ids=["uncapped", "capped"])
@pytest.mark.parametrize("seed", range(4))
def test_time_window_out_of_order_recodes_the_cut_front_and_stays_exact(seed, cap):
    """Out-of-order event time: trims cut records out of the first chunk (not a front drop). The
    tally re-codes the window's front left by the cuts, never the whole window; with `cap`, some
    batches are larger than the window too."""
    rng = np.random.default_rng(seed)
    profiles, prediction = reference(seed, "multiclass")
    win, tally = SlidingWindow(Window(seconds=30.0), max_records=cap), DriftTally()
    t = 0.0
    pending = []
    for step in range(120):
        n = int(rng.choice([5, 30, 60, 450]))
        win.append(batch(rng, n, t, "multiclass", spread=40.0))
        t += 5
        r = rng.random()
        if r < 0.2:
            win.expire(t)
        elif r < 0.3:
            win.columns()
        elif r < 0.5:
            view = win.view()
            first = tail_run(view, cap=200)
            if first is not None:
                pending.append((view, concat(view.chunks[first:]), first))
        elif pending:
            win.adopt(*pending.pop(0))
        if rng.random() < 0.5:
            check(tally, win, profiles, prediction)
    assert tally.full_recomputes == 1 and tally.front_recodes > 1


@pytest.mark.parametrize("seed", range(4))
def test_compaction_and_adoption_do_not_force_a_recompute(seed):
    rng = np.random.default_rng(seed)
    profiles, prediction = reference(seed, "binary")
    win, tally = SlidingWindow(Window(count=500)), DriftTally()
    pending = []
    for step in range(120):
        win.append(batch(rng, int(rng.integers(1, 90)), step * 10.0, "binary"))
        r = rng.random()
        if r < 0.15:
            win.columns()
        elif r < 0.4:
            view = win.view()
            first = tail_run(view, cap=int(rng.choice([50, 300, 10_000])))
            if first is not None:
                pending.append((view, concat(view.chunks[first:]), first))
        elif r < 0.6 and pending:
            win.adopt(*pending.pop(0))
        if rng.random() < 0.4:
            check(tally, win, profiles, prediction)
    assert tally.full_recomputes == 1


def test_reference_change_starts_over():
    rng = np.random.default_rng(5)
    profiles, prediction = reference(1, "binary")
    win, tally = SlidingWindow(Window(count=300)), DriftTally()
    for step in range(10):
        win.append(batch(rng, 80, step * 10.0, "binary"))
        check(tally, win, profiles, None if step < 3 else prediction)  # output reference frozen later
        if step == 6:
            profiles, prediction = reference(2, "binary", sample_max=50)
    assert tally.full_recomputes == 3  # the first, the output reference, the new reference


def test_a_failed_update_leaves_the_tally_unchanged(monkeypatch):
    rng = np.random.default_rng(3)
    profiles, prediction = reference(3, "binary")
    win, tally = SlidingWindow(Window(count=300)), DriftTally()
    win.append(batch(rng, 200, 0.0, "binary"))
    check(tally, win, profiles, prediction)
    win.append(batch(rng, 150, 10.0, "binary"))
    coder = tally._state.coders["cat"]
    monkeypatch.setattr(coder, "code", lambda values: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        tally.update(win.view(), profiles, prediction, PRED)
    monkeypatch.undo()
    win.append(batch(rng, 40, 20.0, "binary"))
    check(tally, win, profiles, prediction)
    assert tally.full_recomputes == 1


def test_object_numeric_column_and_all_missing():
    """feature_drift's other branches: a numeric column of objects (None missing, NaN skipped)
    and a window where every value is missing."""
    profiles, _ = reference(0, "binary")
    win, tally = SlidingWindow(Window(count=100)), DriftTally()
    vals = np.array([1.0, None, float("nan"), 0.5, None, 3.0] * 10, dtype=object)
    win.append({"ts": np.arange(60.0), "cont": vals, "disc": np.full(60, np.nan),
                "cat": np.array([None] * 60, dtype=object), PRED: np.zeros(60)})
    check(tally, win, profiles, None)
    got = tally_stats(tally._state, "disc")
    assert got == {"missing_ratio": 1.0}


def test_sample_view_equals_indexing_the_concatenation():
    rng = np.random.default_rng(0)
    win = SlidingWindow(Window(count=1000))
    for step in range(40):
        win.append(batch(rng, int(rng.integers(1, 70)), step * 10.0, "binary"))
    view = win.view()
    cols = concat(view.chunks)
    for size in (1, 37, 500, 5000):
        a, b = np.random.default_rng(size), np.random.default_rng(size)
        got = sample_view(view, ["cont", "cat"], size, a)
        take = np.sort(b.choice(view.size, size=min(view.size, size), replace=False))
        assert np.array_equal(got["cont"], cols["cont"][take], equal_nan=True)
        assert list(got["cat"]) == list(cols["cat"][take])


def test_tail_run_keeps_the_chunk_count_small():
    win = SlidingWindow(Window(count=200_000))
    for step in range(3000):
        win.append({"ts": np.full(7, float(step))})
        view = win.view()
        first = tail_run(view, cap=4096)
        if first is not None:
            assert win.adopt(view, concat(view.chunks[first:]), first)
    assert len(win.view().chunks) <= 2 * 21_000 // 4096 + 14
    assert np.array_equal(concat(win.view().chunks)["ts"], np.repeat(np.arange(3000.0), 7))


@pytest.mark.parametrize("seed", range(6))
def test_adopting_a_tail_run_never_changes_the_window(seed):
    """Views adopted late (after more appends and front drops), with runs starting anywhere."""
    rng = np.random.default_rng(seed)
    win = SlidingWindow(Window(count=300))
    stream = np.arange(0)
    pending = []
    for step in range(400):
        r = rng.random()
        if r < 0.5:
            n = int(rng.integers(1, 120))
            ids = np.arange(stream.size, stream.size + n)
            stream = np.concatenate([stream, ids])
            win.append({"ts": ids.astype(float), "id": ids})
        elif r < 0.75:
            view = win.view()
            first = tail_run(view, cap=int(rng.choice([40, 200, 1000])))
            if first is None and len(view.chunks) > 1 and rng.random() < 0.5:
                first = int(rng.integers(0, len(view.chunks) - 1))
            if first is not None:
                pending.append((view, concat(view.chunks[first:]), first))
        elif pending:
            win.adopt(*pending.pop(int(rng.integers(0, len(pending)))))
        elif rng.random() < 0.2:
            win.columns()
        if stream.size:
            assert np.array_equal(concat(win.view().chunks)["id"], stream[-300:])


def test_wasserstein_and_ttest_within_the_budget_lag_by_at_most_a_round_of_columns():
    """With a budget of one column per update, the stalest numeric column is recomputed at each
    update; every published value equals the raw computation over the view it was computed at,
    and no column is more than (numeric columns) updates behind."""
    rng = np.random.default_rng(7)
    profiles, prediction = reference(7, "binary")
    profiles["cont2"] = profiles["cont"]
    win, tally = SlidingWindow(Window(count=400)), DriftTally()
    tally.mean_budget = 1  # one column per update
    t, seen = 0.0, []  # (view, its raw stats) of every update
    computed_at = {}  # column -> update index whose view its published stats describe
    for step in range(30):
        b = batch(rng, int(rng.choice([20, 60])), t, "binary")
        b["cont2"] = rng.normal(0.5, 1, len(b["ts"]))
        win.append(b)
        t += 10
        view = win.view()
        st = tally.update(view, profiles, prediction, PRED)
        cols = concat(view.chunks)
        seen.append({f: feature_drift(profiles[f], cols[f]) for f in ("cont", "disc", "cont2")})
        for f in ("cont", "disc", "cont2"):
            got = {k: v for k, v in tally_stats(st, f).items() if k in ("wasserstein_normed", "ttest_pvalue")}
            assert got or step < 2  # a column waits for its first turn at most a round
            match = [i for i, raw in enumerate(seen)
                     if {k: raw[f][k] for k in got} == got and i >= computed_at.get(f, 0)]
            assert match, (step, f)
            computed_at[f] = max(match)
            assert step - computed_at[f] < 3  # 3 numeric columns, one a step
    assert tally.mean_recomputes == 30
