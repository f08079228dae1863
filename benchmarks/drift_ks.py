"""KS p-value per numeric feature: SciPy's kstwo.sf at en (the former path) vs the asymptotic one.

Prints, for a 20000-value reference sample (the profile's default ``sample_max``) against windows
of 5k / 100k / 1M values shifted into the alert range, the best-of-5 milliseconds of: the former
statistic (concatenate + two searchsorted), ``ks_statistic``, ``kstwo.sf`` and ``ks_pvalue``'s
tail; the categorical re-coding per 1M values, former path vs hash lookup; and what the drift
tally pays per 1M records: coding them (numeric cells, categorical codes) when they arrive, one
bincount of their stored codes when they leave (re-coding them instead would cost the former).

    .venv/bin/python benchmarks/drift_ks.py
"""
from __future__ import annotations

import math
import time

import numpy as np
from scipy import special, stats

from modelmon.exporter.drift import CategoricalProfile, NumericProfile, ks_pvalue, ks_statistic
from modelmon.exporter.drift_tally import CategoricalCoder, NumericCoder


def best_ms(fn, *args, repeat: int = 5) -> float:
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def former_statistic(ref: np.ndarray, cur_values: np.ndarray) -> float:
    cur = np.sort(cur_values[~np.isnan(cur_values)])
    both = np.concatenate([ref, cur])
    return float(np.max(np.abs(np.searchsorted(ref, both, side="right") / ref.size
                               - np.searchsorted(cur, both, side="right") / cur.size)))


def main() -> None:
    rng = np.random.default_rng(0)
    prof = NumericProfile.from_values(rng.normal(size=100_000))
    ref = prof.sample
    print(f"reference sample {ref.size}; ms per feature, best of 5")
    print(f"{'window':>9} {'aim':>4} | {'stat old':>8} {'stat new':>8} | {'kstwo.sf':>8} {'asymp':>8} |"
          f" {'old total':>9} {'new total':>9} | {'p kstwo':>9} {'p new':>9}")
    for m in (5_000, 100_000, 1_000_000):
        en = ref.size * m / (ref.size + m)
        for z in (0.8, 1.36, 1.63, 2.5):  # aimed z = sqrt(en)*D; the realised D runs larger (p column)
            cur = rng.normal(size=m) + z / math.sqrt(en) / 0.4
            d, n, mm = ks_statistic(ref, cur)
            t_old = best_ms(former_statistic, ref, cur)
            t_new = best_ms(ks_statistic, ref, cur)
            t_kstwo = best_ms(stats.kstwo.sf, d, round(en))
            root = math.sqrt(en)
            t_asym = best_ms(special.kolmogorov, (root + 0.12 + 0.11 / root) * d)
            p_old = float(stats.kstwo.sf(d, round(en)))
            print(f"{m:>9} {z:>4} | {t_old:8.2f} {t_new:8.2f} | {t_kstwo:8.2f} {t_asym:8.3f} |"
                  f" {t_old + t_kstwo:9.2f} {best_ms(ks_pvalue, ref, cur):9.2f} | {p_old:9.2e} {ks_pvalue(ref, cur):9.2e}")
    cats = [f"cat{i}" for i in range(30)] + [None]
    values = np.empty(1_000_000, dtype=object)
    values[:] = [cats[i] for i in rng.integers(0, len(cats), values.size)]
    cprof = CategoricalProfile.from_values(values[:100_000])
    print(f"categorical codes, 1M values: former {best_ms(cprof._codes_by_search, values, repeat=3):.1f} ms,"
          f" hash lookup {best_ms(cprof.codes, values, repeat=3):.1f} ms")
    ncoder, ccoder = NumericCoder(prof), CategoricalCoder(cprof)
    nums = rng.normal(size=values.size)
    ncodes, ccodes = ncoder.code(nums), ccoder.code(values)
    print(f"drift tally, 1M records: numeric cells ({ncoder.cells}) code"
          f" {best_ms(ncoder.code, nums, repeat=3):.1f} ms,"
          f" categorical code {best_ms(ccoder.code, values, repeat=3):.1f} ms; bincount of stored codes"
          f" {best_ms(np.bincount, ncodes, None, ncoder.n_codes, repeat=3):.1f} ms numeric"
          f" ({ncodes.dtype}), {best_ms(np.bincount, ccodes, None, ccoder.n_codes, repeat=3):.1f} ms categorical"
          f" ({ccodes.dtype})")


if __name__ == "__main__":
    main()
