"""Drift benchmark: modelmon's drift refresh next to Evidently's DataDriftPreset, same data, same run.

    python benchmarks/drift.py [--rows 100000] [--features 20] [--big 1000000] [--no-evidently]
                               [--config modelmon.yaml]

Evidently is never a dependency of modelmon: run the script with the Python of a separate
environment that has both (DO_NOT_TRACK=1 is set here), e.g.

    python3 -m venv /tmp/benchvenv && /tmp/benchvenv/bin/pip install -e . evidently 'pandas<3'
    /tmp/benchvenv/bin/python benchmarks/drift.py

Data: a reference and a current frame of `--rows` rows each, 15 numeric and 5 categorical
features (`--features` 20), 6 of them drifted in the current frame (mean shift of 0.1 sd and
0.5 sd, a +10% and +50% scale change, two categorical frequency changes).

Figures (targets from issue 12):
  * modelmon cold: build the reference profiles and run one refresh of the drift window;
  * modelmon steady: one more refresh after a small append (what the 1 s refresher does);
  * Evidently 0.7 DataDriftPreset on the same frames (optional: needs `pip install evidently "pandas<3"`
    in a separate environment, never a runtime dependency; DO_NOT_TRACK=1 is set here);
    target: modelmon steady >= 50x faster;
  * the `--big` window (1M rows): its first refresh (codes every record into the drift tally) and
    a steady refresh after a 1000-record append (codes those, subtracts the 1000 evicted);
    target <= 100 ms for the steady one;
  * the longest exporter-lock hold of that refresh, through `Exporter.refresh` (capture of the
    window views, then publish; the statistics run outside the lock); target <= 10 ms;
  * a `--big` time window (100 s at 10k records/s) with 10 ms of event-time jitter, whose trims
    cut records out of the middle of its first chunk: median refresh after 10k new records;
  * features each tool flags as drifted, side by side: modelmon with the drift thresholds of the
    example config (`--config`, its first model's warning levels: the defaults the README
    recommends), Evidently with its defaults (normed Wasserstein >= 0.1 for numeric columns,
    Jensen-Shannon distance >= 0.1, natural log, for categorical ones, at these sizes);
  * the cost of the Wasserstein distance and t-test: one column of the `--big` window, and how
    many columns a steady refresh recomputed (see drift_tally.py for the schedule).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DO_NOT_TRACK", "1")

from modelmon.config import load_config, parse_config  # noqa: E402
from modelmon.exporter.drift_tally import mean_stats  # noqa: E402
from modelmon.exporter.model_state import PRED, ModelState  # noqa: E402
from modelmon.exporter.pipeline import Exporter  # noqa: E402
from lock_holds import recording_holds  # noqa: E402  (benchmarks/, the script's folder)

N_CATEGORICAL = 5


def frames(rows: int, n_features: int, seed: int = 0) -> tuple[dict, dict, list[str], list[str]]:
    rng = np.random.default_rng(seed)
    numeric = [f"n{j}" for j in range(n_features - N_CATEGORICAL)]
    categorical = [f"c{j}" for j in range(N_CATEGORICAL)]
    ref, cur = {}, {}
    for j, f in enumerate(numeric):
        ref[f] = rng.normal(0, 1, rows)
        shift, scale = {0: (0.1, 1.0), 1: (0.5, 1.0), 2: (0.0, 1.1), 3: (0.0, 1.5)}.get(j, (0.0, 1.0))
        cur[f] = rng.normal(shift, scale, rows)
    cats = np.array([f"v{k}" for k in range(8)], dtype=object)
    base = np.full(8, 1 / 8)
    for j, f in enumerate(categorical):
        ref[f] = rng.choice(cats, rows, p=base)
        p = base
        if j == 0:
            p = np.array([0.25, 0.05] + [0.7 / 6] * 6)
        elif j == 1:
            p = np.array([0.15, 0.10] + [0.75 / 6] * 6)
        cur[f] = rng.choice(cats, rows, p=p / p.sum())
    return ref, cur, numeric, categorical


def model_config(numeric: list[str], categorical: list[str], window: int | str):
    return parse_config({"models": [{
        "name": "m", "task": "binary", "features": {"numeric": numeric, "categorical": categorical},
        "reference": {"first": 10}, "drift_window": window, "min_drift_samples": 10}],
        "exporter": {"multivariate": {"enabled": False}}})


def model_state(numeric: list[str], categorical: list[str], window: int) -> ModelState:
    config = model_config(numeric, categorical, window)
    return ModelState(config.models[0], config.exporter)


def fill(state: ModelState, cur: dict, rows: int) -> None:
    cols = {f: np.asarray(v[:rows]) for f, v in cur.items()}
    cols["ts"] = np.arange(rows, dtype=np.float64)
    cols[PRED] = np.random.default_rng(1).random(rows)
    state.drift_window.append(cols)


DRIFTED = ("n0", "n1", "n2", "n3", "c0", "c1")  # what `frames` changed
FEATURE_KEYS = ("wasserstein_normed", "ttest_pvalue", "psi", "js_distance", "ks_pvalue", "chi2_pvalue")
SHORT = {"wasserstein_normed": "W1", "ttest_pvalue": "t-p", "psi": "PSI", "js_distance": "JS",
         "ks_pvalue": "KS-p", "chi2_pvalue": "chi2-p"}


def config_thresholds(path: str) -> tuple[str, dict[str, tuple[float, str]]]:
    """The example config's feature-drift warning thresholds (its first model's): key -> (value, direction)."""
    model = load_config(path).models[0]
    return model.name, {k: (t.warning, t.direction) for k, t in model.thresholds.items()
                        if k in FEATURE_KEYS and t.warning is not None}


def flags(stats: dict[str, float], thresholds: dict[str, tuple[float, str]]) -> list[str]:
    """The threshold keys a feature's statistics cross (the alert rules compare with > and <)."""
    return [k for k, (value, direction) in thresholds.items() if k in stats
            and (stats[k] > value if direction == "above" else stats[k] < value)]


def modelmon_figures(ref: dict, cur: dict, numeric: list[str], categorical: list[str], rows: int):
    t = time.perf_counter()
    state = model_state(numeric, categorical, rows)
    state.set_reference(ref, None)
    fill(state, cur, rows)
    state.refresh()
    cold = time.perf_counter() - t
    fill(state, {f: v[:100] for f, v in cur.items()}, 100)  # a small append, as between two refreshes
    t = time.perf_counter()
    state.refresh()
    steady = time.perf_counter() - t
    return cold, steady, dict(state.snapshot.feature_drift)


def big_refresh(numeric: list[str], categorical: list[str], rows: int) -> tuple[float, float, float]:
    """(first refresh, steady refresh, longest exporter-lock hold of the steady one) of a
    `rows`-record window, run by `Exporter.refresh` as the refresher thread runs it."""
    ref, cur, _, _ = frames(rows, len(numeric) + len(categorical), seed=2)
    ex = Exporter(model_config(numeric, categorical, rows))
    state = ex.states["m"]
    state.set_reference({f: v[:100_000] for f, v in ref.items()}, None)
    fill(state, cur, rows)
    state.dirty = True
    t = time.perf_counter()
    ex.refresh()  # the first refresh codes the whole window
    first = time.perf_counter() - t
    fill(state, {f: v[:1000] for f, v in cur.items()}, 1000)
    state.dirty = True
    with recording_holds(ex) as holds:
        t = time.perf_counter()
        ex.refresh()
        took = time.perf_counter() - t
    assert state.snapshot.drift_window_records == rows and not ex.model_errors
    assert state.drift_tally.full_recomputes == 1  # the steady refresh was incremental
    print(f"drift tally of the {rows:,}-row window: {state.drift_tally.code_bytes / 1e6:.0f} MB of stored codes")
    # One column's Wasserstein distance and t-test, as a refresh computes it (codes from the tally,
    # values from the window): the steady refresh above recomputed this many columns.
    tally, view = state.drift_tally._state, state.drift_window.view()
    codes = np.concatenate([seg["n0"] for _, seg in tally.segments])
    values = np.concatenate([c["n0"] for c in view.chunks])
    once = []
    for _ in range(5):
        t = time.perf_counter()
        mean_stats(tally.coders["n0"], codes, values)
        once.append(time.perf_counter() - t)
    print(f"Wasserstein + t-test of one {rows:,}-value column: {min(once) * 1000:.1f} ms (best of 5); "
          f"columns recomputed: {state.drift_tally.mean_recomputes} over the two refreshes "
          f"({len(numeric)} numeric; one column a refresh past {rows:,} records)")
    return first, took, max(holds)


def jittered_time_window(numeric: list[str], categorical: list[str], rows: int, rounds: int = 20) -> float:
    """Median refresh of a time window of `rows` records (10k records per second of event time,
    10 ms jitter) after each 10k-record append, through `Exporter.refresh`."""
    ref, cur, _, _ = frames(100_000, len(numeric) + len(categorical), seed=3)
    rate = 10_000
    ex = Exporter(model_config(numeric, categorical, f"{rows // rate}s"))
    state = ex.states["m"]
    state.set_reference(ref, None)
    rng = np.random.default_rng(4)

    def second(t: float) -> None:
        idx = rng.integers(0, 100_000, rate)
        cols = {f: v[idx] for f, v in cur.items()}
        cols["ts"] = t + np.arange(rate) / rate + rng.random(rate) * 0.01
        cols[PRED] = rng.random(rate)
        with ex.lock:
            state.drift_window.append(cols)
            state.last_ts = float(cols["ts"].max())
            state.dirty = True

    for t in range(rows // rate):
        second(float(t))
    ex.refresh()  # codes the whole window once
    took = []
    for t in range(rows // rate, rows // rate + rounds):
        second(float(t))
        start = time.perf_counter()
        ex.refresh()
        took.append(time.perf_counter() - start)
    assert state.drift_tally.full_recomputes == 1 and not ex.model_errors
    return float(np.median(took))


def evidently_figures(ref: dict, cur: dict):
    try:
        import pandas as pd
        from evidently import Report
        from evidently.presets import DataDriftPreset
    except ImportError as e:
        return None, f"not installed ({e.name}): pip install evidently 'pandas<3' in a separate venv"
    ref_df, cur_df = pd.DataFrame(ref), pd.DataFrame(cur)
    t = time.perf_counter()
    result = Report([DataDriftPreset()]).run(reference_data=ref_df, current_data=cur_df)
    seconds = time.perf_counter() - t
    columns = {}  # column -> (method, value, threshold, drifted)
    for metric in result.dict().get("metrics", []):
        cfg = metric.get("config", {})
        if not str(cfg.get("type", "")).endswith("ValueDrift"):
            continue
        value, threshold, method = metric["value"], cfg["threshold"], str(cfg.get("method", ""))
        # p-value methods drift below their threshold, distances at or above it
        pvalue = "p_value" in method.lower() or "p-value" in method.lower()
        columns[cfg["column"]] = (method, value, threshold, value < threshold if pvalue else value >= threshold)
    return seconds, columns


def side_by_side(features: list[str], ours: dict, thresholds: dict, theirs: dict | None) -> None:
    """One line per feature: modelmon's statistics and flags, Evidently's value and flag."""
    head = "  ".join(f"{SHORT[k]:>8}" for k in FEATURE_KEYS)
    print(f"{'feature':8} {'changed':8} {head}  {'modelmon flags':16} {'Evidently':30} flag")
    for f in features:
        d = ours.get(f, {})
        cells = "  ".join(f"{d[k]:8.3g}" if k in d else f"{'':8}" for k in FEATURE_KEYS)
        mine = flags(d, thresholds)
        ev = ""
        ev_flag = ""
        if theirs is not None and f in theirs:
            method, value, threshold, drifted = theirs[f]
            name = {"wasserstein distance (normed)": "W1", "jensen-shannon distance": "JS(ln)"}.get(
                method.lower(), method.split()[0])
            ev, ev_flag = f"{name} {value:.4f} (threshold {threshold:g})", "DRIFT" if drifted else ""
        print(f"{f:8} {'yes' if f in DRIFTED else '':8} {cells}  {' '.join(SHORT[k] for k in mine) or '-':16} "
              f"{ev:30} {ev_flag}")
    got = sorted(f for f in features if flags(ours.get(f, {}), thresholds))
    print(f"modelmon flags (example config): {' '.join(got) or '-'}")
    if theirs is not None:
        print(f"Evidently flags (its defaults):  {' '.join(sorted(f for f, v in theirs.items() if v[3])) or '-'}")
    print(f"changed in the data:             {' '.join(sorted(DRIFTED))}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--big", type=int, default=1_000_000)
    ap.add_argument("--no-evidently", action="store_true")
    ap.add_argument("--config", default=str(Path(__file__).resolve().parent.parent / "modelmon.yaml"),
                    help="the config whose drift thresholds modelmon's flags use (its first model)")
    args = ap.parse_args()
    model, thresholds = config_thresholds(args.config)
    ref, cur, numeric, categorical = frames(args.rows, args.features)
    print(f"data: {args.rows:,} reference and {args.rows:,} current rows x {args.features} features "
          f"({len(numeric)} numeric, {len(categorical)} categorical), 6 drifted: n0 n1 n2 n3 c0 c1")
    cold, steady, ours = modelmon_figures(ref, cur, numeric, categorical, args.rows)
    print(f"modelmon cold (profiles + first refresh): {cold * 1000:9.1f} ms")
    print(f"modelmon steady refresh:                  {steady * 1000:9.1f} ms")
    theirs = None
    if not args.no_evidently:
        seconds, info = evidently_figures(ref, cur)
        if seconds is None:
            print(f"Evidently: {info}")
        else:
            theirs = info
            print(f"Evidently DataDriftPreset:                {seconds * 1000:9.1f} ms")
            print(f"ratio Evidently / modelmon: cold {seconds / cold:6.1f}x   steady {seconds / steady:6.1f}x"
                  f"   (target steady >= 50x)")
    limits = ", ".join(f"{k} {'>' if d == 'above' else '<'} {v:g}" for k, (v, d) in thresholds.items())
    print(f"modelmon thresholds: model {model!r} of {args.config}: {limits or 'none'}")
    side_by_side(numeric + categorical, ours, thresholds, theirs)
    if args.big:
        first, big, hold = big_refresh(numeric, categorical, args.big)
        print(f"modelmon first refresh of a {args.big:,}-row window: {first * 1000:8.1f} ms   (codes every record)")
        print(f"modelmon refresh of a {args.big:,}-row window: {big * 1000:8.1f} ms   (target <= 100 ms)")
        print(f"longest exporter-lock hold by that refresh:  {hold * 1000:8.3f} ms   (target <= 10 ms; the "
              f"statistics run outside the lock)")
        jittered = jittered_time_window(numeric, categorical, args.big)
        print(f"modelmon refresh of a {args.big:,}-record time window, out-of-order event time: "
              f"{jittered * 1000:8.1f} ms (median, 10k new records each)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
