"""Checkpoint benchmark: how long `Checkpointer.save` holds the exporter lock, and takes in all, at a 1M window.

    python benchmarks/checkpoint.py [--rows 1000000] [--features 20] [--chunks 200] [--pending 200000]

One binary model with `--features` features (15 numeric, 5 categorical at 20), a drift window and a
quality window of `--rows` records each, filled in `--chunks` batches (as ingest leaves them), and
`--pending` predictions waiting for their labels in the join buffer.

Figures (target from issue 12: the lock is never held longer than 10 ms by a checkpoint at 1M):
  * the exporter-lock hold of one save (`_capture`: window views, budget copies, the join buffer's
    entry list), and the save's total time (concatenation, .npy/JSON members, the atomic write);
  * the cost of copying the join buffer's entries alone (`LabelJoiner.snapshot`), the one part of the
    capture that grows with something other than the model count, next to ``list(joiner.items())``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modelmon.config import parse_config  # noqa: E402
from modelmon.exporter.checkpoint import Checkpointer  # noqa: E402
from modelmon.exporter.joiner import Pending  # noqa: E402
from modelmon.exporter.model_state import PRED  # noqa: E402
from modelmon.exporter.pipeline import Exporter  # noqa: E402
from lock_holds import recording_holds  # noqa: E402  (benchmarks/, the script's folder)

N_CATEGORICAL = 5


def loaded_exporter(rows: int, n_features: int, chunks: int, pending: int) -> Exporter:
    numeric = [f"n{j}" for j in range(n_features - N_CATEGORICAL)]
    categorical = [f"c{j}" for j in range(N_CATEGORICAL)]
    config = parse_config({"models": [{
        "name": "m", "task": "binary", "features": {"numeric": numeric, "categorical": categorical},
        "reference": {"first": 10}, "drift_window": rows, "quality_window": rows,
        "min_drift_samples": 10}],
        "exporter": {"multivariate": {"enabled": False}, "join_buffer_max": max(pending, 1)}})
    ex = Exporter(config)
    state = ex.states["m"]
    rng = np.random.default_rng(0)
    cats = np.array([f"v{k}" for k in range(8)], dtype=object)
    per = rows // chunks
    for i in range(chunks):
        ts = np.arange(i * per, (i + 1) * per, dtype=np.float64)
        cols = {"ts": ts, PRED: rng.random(per)}
        cols |= {f: rng.normal(0, 1, per) for f in numeric}
        cols |= {f: rng.choice(cats, per) for f in categorical}
        state.drift_window.append(cols)
        y = rng.random(per) < 0.5
        state.versions.fold("v1")
        state.quality_windows.setdefault("v1", type(state.drift_window)(state.cfg.quality_window)).append(
            {"y_true": y, "y_pred": rng.random(per) < 0.5, "score": rng.random(per), "ts": ts})
    for i in range(pending):
        ex.joiner.add("m", f"id-{i}", Pending("m", "v1", float(i), "1", 0.5))
    ex.ingested["m"] = rows  # the generation the checkpoint records
    return ex


def timed_save(ex: Exporter, path: Path) -> tuple[float, float]:
    """(longest exporter-lock hold, total duration) of one `Checkpointer.save`."""
    with recording_holds(ex) as holds:
        t = time.perf_counter()
        assert Checkpointer(ex, path).save(), "the checkpoint failed"
        took = time.perf_counter() - t
    return max(holds), took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--chunks", type=int, default=200)
    ap.add_argument("--pending", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    ex = loaded_exporter(args.rows, args.features, args.chunks, args.pending)
    print(f"data: drift and quality windows of {args.rows:,} records x {args.features} features in "
          f"{args.chunks} chunks, {len(ex.joiner):,} predictions waiting for labels")
    copies, item_lists = [], []
    for _ in range(5):
        t = time.perf_counter()
        ex.joiner.snapshot()
        copies.append(time.perf_counter() - t)
        t = time.perf_counter()
        list(ex.joiner.items())
        item_lists.append(time.perf_counter() - t)
    with tempfile.TemporaryDirectory() as d:
        runs = [timed_save(ex, Path(d) / "ckpt") for _ in range(args.repeat)]
        size = (Path(d) / "ckpt").stat().st_size
    holds, totals = [r[0] for r in runs], [r[1] for r in runs]
    print(f"checkpoint of {size / 1e6:,.0f} MB, {args.repeat} saves")
    print(f"longest exporter-lock hold by a save:  {max(holds) * 1000:8.3f} ms   (median "
          f"{statistics.median(holds) * 1000:.3f} ms; target <= 10 ms)")
    print(f"save total (capture, archive, write):  {statistics.median(totals) * 1000:8.1f} ms   (median)")
    print(f"of the hold: copying the join buffer's entries ({len(ex.joiner):,}): "
          f"{statistics.median(copies) * 1000:.3f} ms (median of 5; list(joiner.items()) would take "
          f"{statistics.median(item_lists) * 1000:.1f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
