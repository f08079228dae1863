"""Bin counting at ingest (modelmon_feature_bin_total): the exporter's way against the obvious one.

    python benchmarks/bins.py [--records 2500] [--numeric 15] [--categorical 5] [--batches 200]

One model's batch (the benchmark of benchmarks/ingest.py gives each of its two models 2500 records
per 5000-line call), random values, ten quantile bins per numeric feature, eight categories:
  * FeatureBins.count: every numeric feature in one (features x records) compare-and-add pass per
    bin edge, one bincount; categorical features by the columnar parser's dictionary codes;
  * the same with a lookup per categorical value (records parsed per line);
  * per feature np.searchsorted on the edges + np.bincount, CategoricalProfile.counts (the obvious way).
Prints milliseconds per batch and nanoseconds per value. Random values defeat the branch predictor
of searchsorted's binary search (repeating one small batch lets it learn the batch, and flatters it).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modelmon.exporter import drift  # noqa: E402
from modelmon.exporter.bins import FeatureBins  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=2500)
    p.add_argument("--numeric", type=int, default=15)
    p.add_argument("--categorical", type=int, default=5)
    p.add_argument("--batches", type=int, default=200)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    cats = np.array([f"v{i}" for i in range(8)], dtype=object)
    profiles = {f"n{j}": drift.NumericProfile.from_values(rng.normal(size=5000)) for j in range(args.numeric)}
    profiles.update({f"c{j}": drift.CategoricalProfile.from_values(cats[rng.integers(0, 8, 5000)])
                     for j in range(args.categorical)})
    bins = FeatureBins(profiles)
    batches = []
    for _ in range(args.batches):
        feats = {f"n{j}": np.round(rng.normal(size=args.records), 4) for j in range(args.numeric)}
        codes = {}
        for j in range(args.categorical):
            c = rng.integers(0, 8, args.records)
            feats[f"c{j}"], codes[f"c{j}"] = cats[c], (c, cats.tolist())
        batches.append((feats, codes))

    def obvious(feats, _):
        for f, prof in profiles.items():
            prof.counts(feats[f])

    values = args.records * (args.numeric + args.categorical)
    for name, run in (("FeatureBins.count, dictionary codes", lambda f, c: bins.add(bins.count(f, None, c))),
                      ("FeatureBins.count, lookup per value", lambda f, c: bins.add(bins.count(f, None, None))),
                      ("searchsorted + bincount per feature", obvious)):
        run(*batches[0])
        started = time.perf_counter()
        for feats, codes in batches:
            run(feats, codes)
        per_batch = (time.perf_counter() - started) / len(batches)
        print(f"{name:40s} {per_batch * 1e3:7.3f} ms per batch   {per_batch / values * 1e9:6.1f} ns per value")


if __name__ == "__main__":
    main()
