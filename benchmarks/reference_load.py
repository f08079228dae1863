"""Reference-load benchmark: modelmon's ``load_reference`` on a CSV next to ``pandas.read_csv``.

    python benchmarks/reference_load.py [--rows 100000] [--repeat 5] [--jsonl]

The file: ``--rows`` rows x 20 columns (15 numeric, 5 categorical, all declared), about 2% missing
cells, some categorical values quoted with a comma inside. Prints the best of ``--repeat`` loads for
modelmon (the path it takes: pyarrow when installed, else the pure-Python reader), the pure-Python
reader alone for context, and ``pandas.read_csv`` when pandas is installed (it is not a modelmon
dependency: ``pip install pandas`` to compare), with the ratio. Target (issue 12): ratio <= 1.
Runs are interleaved so that a noisy machine penalises every reader alike.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modelmon.exporter import reference  # noqa: E402

N_NUM, N_CAT = 15, 5
NUMERIC = [f"num_{i}" for i in range(N_NUM)]
CATEGORICAL = [f"cat_{i}" for i in range(N_CAT)]


def write_csv(path: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    cols: list[np.ndarray] = []
    for i in range(N_NUM):
        v = np.round(rng.normal(100 * i, 10 + i, rows), 3).astype(str).astype(object)
        v[rng.random(rows) < 0.02] = ""
        cols.append(v)
    levels = np.array(["DE", "FR", "US", '"Paris, FR"', "1", "2.0", "NA", "retail"], dtype=object)
    for i in range(N_CAT):
        v = levels[rng.integers(0, len(levels), rows)]
        v[rng.random(rows) < 0.02] = ""
        cols.append(v)
    lines = [",".join([*NUMERIC, *CATEGORICAL])]
    lines += [",".join(r) for r in zip(*cols)]
    path.write_text("\n".join(lines) + "\n")


def write_jsonl(csv_path: Path, path: Path) -> None:
    import orjson
    cols = reference.load_reference(csv_path, NUMERIC, CATEGORICAL)
    n = len(cols[NUMERIC[0]])
    with path.open("wb") as f:
        for i in range(n):
            row = {k: (None if isinstance(v[i], float) and np.isnan(v[i]) else v[i]) for k, v in cols.items()}
            row = {k: float(v) if isinstance(v, np.floating) else v for k, v in row.items()}
            f.write(orjson.dumps(row) + b"\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--jsonl", action="store_true", help="also time a JSON Lines file with the same data")
    args = ap.parse_args()
    try:
        import pandas as pd
    except ImportError:
        pd = None
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "reference.csv"
        write_csv(csv_path, args.rows)
        size = csv_path.stat().st_size
        readers = {
            "modelmon load_reference": lambda: reference.load_reference(csv_path, NUMERIC, CATEGORICAL),
            "modelmon pure-Python reader": lambda: reference._read_csv_python(csv_path, NUMERIC, CATEGORICAL),
        }
        if pd is not None:
            readers["pandas.read_csv"] = lambda: pd.read_csv(csv_path, usecols=[*NUMERIC, *CATEGORICAL])
        if args.jsonl:
            jsonl_path = Path(tmp) / "reference.jsonl"
            write_jsonl(csv_path, jsonl_path)
            readers["modelmon load_reference (JSON Lines)"] = (
                lambda: reference.load_reference(jsonl_path, NUMERIC, CATEGORICAL))
            if pd is not None:
                readers["pandas.read_json(lines=True)"] = lambda: pd.read_json(jsonl_path, lines=True)
        times: dict[str, list[float]] = {name: [] for name in readers}
        for _ in range(args.repeat):
            for name, fn in readers.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        print(f"reference CSV: {args.rows:,} rows x {N_NUM + N_CAT} columns ({N_NUM} numeric, {N_CAT} categorical), "
              f"{size / 2**20:.1f} MiB; best of {args.repeat}")
        print(f"modelmon path: {'pyarrow' if reference.fast_csv_available() else 'pure Python (pyarrow not installed)'}")
        for name, ts in times.items():
            print(f"  {name:<40} {min(ts) * 1000:9.1f} ms")
        if pd is not None:
            ratio = min(times["modelmon load_reference"]) / min(times["pandas.read_csv"])
            print(f"ratio modelmon / pandas.read_csv: {ratio:.2f}  (target <= 1.00: {'met' if ratio <= 1 else 'NOT met'})")
        else:
            print("pandas not installed: no ratio (pip install pandas to compare)")


if __name__ == "__main__":
    main()
