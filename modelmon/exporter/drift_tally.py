"""Incremental drift counts over a sliding window: code each record once, count, never re-bin.

Each drift-window column gets a *coder* built once per reference profile: a small int code per
value, plus two extra codes, MISSING (counted in the missing ratio) and IGNORED (neither missing
nor a value: a NaN inside an object-typed numeric column, which ``feature_drift`` also skips).

* numeric: the cells of the sorted union of the profile's distinct KS-sample values and its bin
  edges (P points): code 2i is the open interval just below point i (2P: above the last), 2i+1
  point i itself. A bin is a run of cells (``np.add.reduceat``). KS D = sup |F_ref - F_cur| is
  attained just below or at a distinct reference value (between two, F_ref is constant and F_cur
  monotone), and each reference value is a point, so #current values below / at it are
  cumulative cell counts: D is exact against the reference sample, the same integers
  ``drift.ks_statistic`` gets by sorting the window.
* categorical: the profile's category code (``CategoricalProfile.codes``).

``DriftTally.update`` (run by the refresh outside the exporter lock, one refresh at a time) keeps
per-column counts of the window's codes: it codes only the records appended since the last
update and subtracts those dropped since, found through the window's stream counters (see
windows.py). The dropped records are no longer in any view, so the tally keeps the codes of the
counted records, a queue of segments aligned with stream positions (2 bytes per numeric value
with up to ~32k distinct sample values, 1 per categorical one: 35 MB for a 1M-record window of
20 features and a score). Subtracting dropped records is one bincount of their stored codes
(1-3 ms per 1M) where re-coding them would cost what coding did, 65-110 ms per 1M values (a dict
lookup per category, a searchsorted into 40k cells); ``benchmarks/drift_ks.py`` measures both.
When the window cut records out of its first chunk since (``reordered``: a time window with
out-of-order event time), the records both views share are the appended stream's from the
later ``start`` on (see windows.py): the update subtracts the tally's records before those and
codes the later view's ``front`` records (at most a chunk or two) and its new tail. A new
reference starts over from the whole view.

The normed Wasserstein distance and the Welch t-test (``mean_stats``) need the values, not only
their cells: inside an open cell the reference CDF is constant but the window's is not. They are
computed from the cells without a sort (``WassersteinCells``): per-cell counts and sums of the
values' offsets from the cell's left point give the integral exactly wherever the window's CDF
stays on one side of the reference's over a cell, and the few cells where it crosses (5 of
~40k on a mildly drifted 1M window) are integrated over their sorted values. That is one pass
over a column (~11 ms per 1M values on the 2-core dev box, against ~100 ms for a sort), so it
is not run for every column at every refresh: each update recomputes the stalest numeric
columns within a budget of ``MEAN_BUDGET`` window values (at least one column), and publishes
every column's latest. Windows up to the budget are recomputed in full at each refresh (what
the tests compare, bit for bit, with ``model_state.feature_drift``); a 1M-record window with
15 numeric features refreshes each column's pair every 15 refreshes (at 1000 records a refresh:
at most 1.5 % of the window behind). The values are read from the view being counted, whose
records are the stored codes' records in the same order.
"""
from __future__ import annotations

from collections import deque
from functools import cached_property, lru_cache
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelmon.exporter import drift
from modelmon.exporter.windows import WindowView

SEGMENT_MERGE_MAX = 262144  # codes per segment beyond which segments are no longer merged
# Window values per update whose Wasserstein distance / t-test are recomputed (whole columns, the
# stalest first, at least one column): a 1M-record window gets one numeric column per refresh.
MEAN_BUDGET = 1_000_000


def _code_dtype(n_codes: int) -> type:
    return np.uint8 if n_codes <= 256 else np.uint16 if n_codes <= 65536 else np.int32


def _is_none(values: np.ndarray) -> np.ndarray:
    return np.fromiter((v is None for v in values), dtype=bool, count=len(values))


class NumericCoder:
    """Cells of a NumericProfile (``ks``: with the KS sample's values; without, only the bin edges)."""

    def __init__(self, profile: drift.NumericProfile, ks: bool = True):
        self.profile = profile
        edges = profile.edges
        points = np.unique(np.concatenate([profile.sample, edges])) if ks else edges
        p = points.size
        self.points = points
        self.cells = 2 * p + 1
        self.missing, self.ignored = self.cells, self.cells + 1
        self.n_codes = self.cells + 2
        self.dtype = _code_dtype(self.n_codes)
        # bin of each cell: #edges <= any value in it (edges are points, so none lies inside a cell)
        cell_bin = np.empty(self.cells, dtype=np.int64)
        cell_bin[0:2 * p:2] = np.searchsorted(edges, points, side="left")
        cell_bin[1:2 * p:2] = np.searchsorted(edges, points, side="right")
        cell_bin[2 * p] = edges.size
        self.bin_starts = np.searchsorted(cell_bin, np.arange(profile.n_bins), side="left")  # every bin has a cell
        self.ks = ks
        self.means = None  # (counts, mean_stats) of the owning tally's latest state (see feature_stats)
        if ks:
            sample = profile.sample
            self.ks_last = np.flatnonzero(np.append(sample[1:] != sample[:-1], True))
            at = np.searchsorted(points, sample[self.ks_last])  # point index of each distinct value
            self.ks_below = 2 * at + 1  # #cells before point i's cell, +1: an index into [0, *cumsum]
            self.ks_upto = 2 * at + 2

    @cached_property
    def wasserstein(self) -> WassersteinCells:
        return WassersteinCells(self)

    def code(self, values: np.ndarray) -> np.ndarray:
        """One code per value, with ``feature_drift``'s missing rule (None in an object column, NaN otherwise)."""
        if values.dtype == object:
            none = _is_none(values)
            out = np.full(values.size, self.missing, dtype=np.int64)
            out[~none] = self._cells(np.asarray(values[~none], dtype=np.float64), self.ignored)
            return out.astype(self.dtype)
        return self._cells(np.asarray(values, dtype=np.float64), self.missing).astype(self.dtype)

    def _cells(self, v: np.ndarray, nan_code: int) -> np.ndarray:
        i = np.searchsorted(self.points, v, side="left")
        hit = self.points[np.minimum(i, self.points.size - 1)] == v
        out = 2 * i + hit
        out[np.isnan(v)] = nan_code
        return out

    def bins(self, counts: np.ndarray) -> np.ndarray:
        return np.add.reduceat(counts[:self.cells], self.bin_starts)

    def ks_statistic(self, counts: np.ndarray) -> tuple[float, int, int]:
        cum = np.concatenate([[0], np.cumsum(counts[:self.cells])])
        n, m = self.profile.sample.size, int(cum[-1])
        if m == 0:
            raise ValueError("KS test needs values on both sides")
        return drift.ks_from_counts(self.ks_last, n, cum[self.ks_below], cum[self.ks_upto], m), n, m


class CategoricalCoder:
    """Category codes of a CategoricalProfile; ``feature``: ``feature_drift``'s missing rule for a
    non-object column (NaN missing), else the profile's own (None missing)."""

    def __init__(self, profile: drift.CategoricalProfile, feature: bool = True):
        self.profile = profile
        self.cells = len(profile.categories)
        self.missing, self.ignored = self.cells, self.cells + 1
        self.n_codes = self.cells + 2
        self.dtype = _code_dtype(self.n_codes)
        self.feature = feature

    def code(self, values: np.ndarray) -> np.ndarray:
        if values.dtype == object or not self.feature:
            out = self.profile.codes(values)  # a fresh array; -1 exactly for None
            out[out < 0] = self.missing
            return out.astype(self.dtype)
        nan = np.isnan(values)
        out = np.full(values.size, self.missing, dtype=np.int64)
        present = self.profile.codes(values[~nan])
        present[present < 0] = self.ignored
        out[~nan] = present
        return out.astype(self.dtype)

    def bins(self, counts: np.ndarray) -> np.ndarray:
        return counts[:self.cells]


class WassersteinCells:
    """What the normed Wasserstein distance needs of a NumericCoder's cells, built once per coder.

    W1 = integral of |F_ref - F_cur| over the line, both CDFs over finite values (the reference
    side: the profile's KS sample). F_ref is constant on each open cell (every sample value is a
    point), so on an open cell (p, q) holding k current values with offsets o = c - p, and B
    current values at or below p:

    * if F_cur >= F_ref over the whole cell (B/m >= A/n) the integral is ((B+k)/m - A/n)(q-p) - sum(o)/m,
      if F_cur <= F_ref over it ((B+k)/m <= A/n), its negative: exact from counts and one offset sum;
    * otherwise F_cur crosses F_ref inside the cell: integrated exactly over the cell's values,
      sorted (a few hundred cells at most, found by one table lookup over the codes);
    * below the smallest finite point F_ref = 0 and above the largest F_ref = 1: sum of distances
      to that point, over m.

    Signs are decided on exact integers (B*n vs A*m). Offsets are taken from the cell's left point
    (from the right point for the cell below the reference), so sums stay small and cancel nothing.
    """

    def __init__(self, coder: NumericCoder):
        pts, cells = coder.points, coder.cells
        sample = coder.profile.sample
        self.ref = ref = sample[np.isfinite(sample)]
        finite = np.flatnonzero(np.isfinite(pts))
        self.ok = ref.size > 0 and finite.size > 0
        if not self.ok:
            return
        i0, i1 = int(finite[0]), int(finite[-1])
        j = np.arange(i0 + 1, i1 + 1)  # open cells 2j between two finite points
        anchor = np.zeros(cells)
        anchor[1:2 * pts.size:2] = np.where(np.isfinite(pts), pts, 0.0)
        anchor[2 * j] = pts[j - 1]
        anchor[2 * i0], anchor[2 * i1 + 2] = pts[i0], pts[i1]
        self.anchor = anchor
        self.below, self.above = 2 * i0, 2 * i1 + 2  # the cells outside the reference's finite range
        self.interior = 2 * j
        self.length = pts[j] - pts[j - 1]
        self.ref_below = np.searchsorted(ref, pts[j], side="left").astype(np.int64)  # n * F_ref on cell 2j
        self.norm = max(float(np.std(ref)), 0.001)  # Evidently's norm: np.std (ddof=0), floored at 0.001

    def distance(self, codes: np.ndarray, values: np.ndarray) -> float:
        """W1 between the reference sample and `values` (finite, with their cell `codes`); m >= 1."""
        n, m, cells = self.ref.size, values.size, self.anchor.size
        codes = codes.astype(np.intp, copy=False)
        k = np.bincount(codes, minlength=cells)
        offsets = values - self.anchor[codes]
        sums = np.bincount(codes, weights=offsets, minlength=cells)
        below = np.cumsum(k)[self.interior - 1]  # current values at or below each cell's left point
        count = k[self.interior]
        lo = below * n - self.ref_below * m
        hi = (below + count) * n - self.ref_below * m
        signed = (hi / n) * self.length - sums[self.interior]
        total = -sums[self.below] + sums[self.above] + float(np.sum(np.where(lo >= 0, signed, 0.0))) \
            - float(np.sum(np.where(hi <= 0, signed, 0.0)))
        crossed = (lo < 0) & (hi > 0)
        if crossed.any():
            total += self._crossed(codes, offsets, self.interior[crossed], below[crossed], count[crossed],
                                   self.ref_below[crossed], self.length[crossed], n, m)
        return total / m

    def _crossed(self, codes, offsets, cells, below, count, ref_below, length, n, m) -> float:
        """Exact integral over the cells where F_cur crosses F_ref, from their values."""
        table = np.zeros(self.anchor.size, dtype=bool)
        table[cells] = True
        pick = table[codes]
        c, o = codes[pick], offsets[pick]
        order = np.lexsort((o, c))
        c, o = c[order], o[order]
        cell = np.searchsorted(cells, c)  # index among the crossed cells
        first = np.concatenate([[0], np.cumsum(count)[:-1]])
        rank = np.arange(o.size) - first[cell]  # values of the cell before this one
        prev = np.where(rank == 0, 0.0, np.concatenate([[0.0], o[:-1]]))
        level = np.abs((below[cell] + rank) * n - ref_below[cell] * m) / n  # m * |F_cur - F_ref| before it
        last = o[first + count - 1]
        tail = np.abs((below + count) * n - ref_below * m) / n * (length - last)
        return float(np.sum(level * (o - prev))) + float(np.sum(tail))


def mean_stats(coder: NumericCoder, codes: np.ndarray, values: np.ndarray) -> dict[str, float]:
    """``wasserstein_normed`` and ``ttest_pvalue`` of a window's values (with their codes; any
    missing or infinite ones are left out here: neither statistic has a meaning for them, and the
    outer PSI bins and the missing ratio already show them). Empty when no finite value is left;
    no t-test below 2 values on either side. The same function serves the tally and the raw path,
    so both give the same floats."""
    keep = codes < coder.cells
    if values.dtype == object:
        v = np.full(values.size, np.nan)
        v[keep] = np.asarray(values[keep], dtype=np.float64)
    else:
        v = np.asarray(values, dtype=np.float64)
    keep &= np.isfinite(v)
    if not keep.all():
        v, codes = v[keep], codes[keep]
    out: dict[str, float] = {}
    if not v.size:
        return out
    cells = coder.wasserstein
    if cells.ok:
        out["wasserstein_normed"] = cells.distance(codes, v) / cells.norm
    n_ref, mean_ref, var_ref = coder.profile.ref_moments
    if n_ref >= 2 and v.size >= 2:
        out["ttest_pvalue"] = drift.welch_pvalue(n_ref, mean_ref, var_ref, v.size, float(np.mean(v)),
                                                 float(np.var(v, ddof=1)))
    return out


@lru_cache(maxsize=16)
def _raw_coder(profile: drift.NumericProfile) -> NumericCoder:
    return NumericCoder(profile)  # profiles hash by identity (eq=False); a few recent ones are kept


def mean_stats_of(profile: drift.NumericProfile, values: np.ndarray) -> dict[str, float]:
    """``mean_stats`` from raw values (``model_state.feature_drift``, the full recompute)."""
    coder = _raw_coder(profile)
    return mean_stats(coder, coder.code(values), values)


def coder_for(profile: Any, feature: bool = True):
    if isinstance(profile, drift.NumericProfile):
        return NumericCoder(profile, ks=feature)
    return CategoricalCoder(profile, feature=feature)


def feature_stats(coder, counts: np.ndarray) -> dict[str, float]:
    """What ``model_state.feature_drift`` returns for the values whose codes `counts` counts."""
    total = int(counts.sum())
    missing = int(counts[coder.missing])
    out = {"missing_ratio": missing / total if total else 0.0}
    if not total or missing == total:
        return out
    bins = coder.bins(counts)
    ref = coder.profile.ref_counts
    out["psi"] = drift.psi(ref, bins)
    out["js_distance"] = drift.js_distance(ref, bins)
    if isinstance(coder, NumericCoder):
        out["ks_pvalue"] = drift.ks_pvalue_of(*coder.ks_statistic(counts))
        attached = coder.means  # (counts, stats) set by DriftTally.update for exactly these counts
        if attached is not None and attached[0] is counts:
            out.update(attached[1])
    else:
        out["chi2_pvalue"] = drift.chi2_pvalue(ref, bins)
    return out


@dataclass(frozen=True)
class _State:
    """The tally after one update: counts of the codes of a view's records (replaced, never modified)."""

    profiles: dict
    prediction: Any
    coders: dict  # column -> coder
    reordered: int
    dropped: int
    appended: int
    front: int
    start: int
    size: int
    counts: dict  # column -> int64 counts per code
    segments: tuple  # (n, {column: codes}), oldest first, covering the `size` counted records


class DriftTally:
    """Per-column code counts of a drift window, brought up to date by ``update``. Not thread-safe:
    one refresh at a time (the exporter's ``_refreshing``)."""

    def __init__(self) -> None:
        self._state: _State | None = None
        self.full_recomputes = 0  # updates that started over (tests and benchmarks read it)
        self.front_recodes = 0  # updates that re-coded a front cut by the window
        self.mean_budget = MEAN_BUDGET
        # numeric column -> (coder, stream position (appended, dropped, reordered) computed at, stats)
        self._means: dict = {}
        self.mean_recomputes = 0  # column recomputes of the Wasserstein/t-test (tests and benchmarks)

    @property
    def code_bytes(self) -> int:
        """Memory of the stored codes (one small int per counted record and column)."""
        st = self._state
        return sum(k.nbytes for _, seg in st.segments for k in seg.values()) if st else 0

    def update(self, view: WindowView, profiles: dict, prediction: Any, prediction_column: str) -> _State:
        """Counts of `view`'s records against `profiles` (and `prediction` for `prediction_column`).

        Builds the new state aside and swaps it in at the end: an exception leaves the old one."""
        st = self._state
        full = st is None or st.profiles is not profiles or st.prediction is not prediction
        head = 0  # view records to code at the front (a cut region)
        if not full and st.reordered == view.reordered:  # appends and front drops only
            d, a = view.dropped - st.dropped, view.appended - st.appended
            full = d < 0 or a < 0 or st.size - d + a != view.size
            gone, fresh = min(d, st.size), view.size if d >= st.size else a
        elif not full:  # cuts: keep the shared stream range [view.start, st.appended)
            full = view.start < st.start or view.front + view.appended - view.start != view.size
            gone = min(st.front + min(view.start, st.appended) - st.start, st.size)
            head, fresh = view.front, view.appended - max(st.appended, view.start)
        if full:
            if st is not None and st.profiles is profiles and st.prediction is prediction:
                coders = st.coders
            else:
                coders = {f: coder_for(p) for f, p in profiles.items()}
                if prediction is not None:
                    coders[prediction_column] = coder_for(prediction, feature=False)
            counts = {c: np.zeros(k.n_codes, dtype=np.int64) for c, k in coders.items()}
            segments: deque = deque()
            head, fresh = 0, view.size
        else:
            coders = st.coders
            counts = dict(st.counts)
            segments = deque(st.segments)
            _drop(segments, counts, gone)
        if fresh:
            _push(segments, fresh, _count(_last_records(view, fresh, coders), coders, counts))
        if head:
            segments.appendleft((head, _count(_first_records(view, head, coders), coders, counts)))
        state = _State(profiles, prediction, coders, view.reordered, view.dropped, view.appended,
                       view.front, view.start, view.size, counts, tuple(segments))
        self._update_means(state, view)
        self._state = state
        self.full_recomputes += full
        self.front_recodes += bool(head) and not full
        return self._state

    def _update_means(self, st: _State, view: WindowView) -> None:
        """Recompute the Wasserstein distance and t-test of the stalest numeric columns, within the
        budget of `mean_budget` window values per update (at least one column when any is stale),
        and attach every numeric column's latest to its coder for `feature_stats`."""
        at = (st.appended, st.dropped, st.reordered)
        numeric = [c for c, k in st.coders.items() if isinstance(k, NumericCoder) and k.ks]
        known = {c: self._means[c] for c in numeric if c in self._means and self._means[c][0] is st.coders[c]}

        def lag(c: str) -> float:  # records appended and dropped since the column's stats
            if c not in known:
                return float("inf")
            (a, d, r) = known[c][1]
            return float("inf") if r != st.reordered else (st.appended - a) + (st.dropped - d)

        stale = sorted((c for c in numeric if lag(c) > 0), key=lag, reverse=True)
        spent = 0
        for c in stale:
            if spent and spent + st.size > self.mean_budget:
                break
            stats: dict = {}
            if st.size:
                codes = np.concatenate([seg[c] for _, seg in st.segments])
                chunks = view.chunks
                col = chunks[0][c] if len(chunks) == 1 else np.concatenate([ch[c] for ch in chunks])
                if codes.size != col.size:
                    raise AssertionError("drift tally: stored codes and view out of step")
                stats = mean_stats(st.coders[c], codes, col)
            known[c] = (st.coders[c], at, stats)
            spent += st.size
            self.mean_recomputes += 1
        self._means = known
        for c in numeric:
            st.coders[c].means = (st.counts[c], known[c][2]) if c in known else None


def _count(cols: dict, coders: dict, counts: dict) -> dict:
    """Code `cols`, add the codes to `counts` (new arrays), return the codes."""
    codes = {c: coders[c].code(v) for c, v in cols.items()}
    for c, k in codes.items():
        counts[c] = counts[c] + np.bincount(k, minlength=coders[c].n_codes)
    return codes


def _drop(segments: deque, counts: dict, d: int) -> None:
    """Subtract the codes of the first `d` counted records (replaces the count arrays, never writes them)."""
    while d > 0:
        n, codes = segments[0]
        take = min(n, d)
        for c, k in codes.items():
            counts[c] = counts[c] - np.bincount(k[:take], minlength=counts[c].size)
        if take == n:
            segments.popleft()
        else:
            segments[0] = (n - take, {c: k[take:] for c, k in codes.items()})
        d -= take


def _push(segments: deque, n: int, codes: dict) -> None:
    """Append a segment, merging trailing ones while the previous is at most twice the merged
    size (a code is copied O(log window) times; the segment count stays logarithmic)."""
    while segments and segments[-1][0] <= 2 * n and segments[-1][0] + n <= SEGMENT_MERGE_MAX:
        m, prev = segments.pop()
        codes = {c: np.concatenate([prev[c], k]) for c, k in codes.items()}
        n += m
    segments.append((n, codes))


def _last_records(view: WindowView, k: int, coders: dict) -> dict[str, np.ndarray]:
    """The coded columns of the view's last `k` records, one array per column."""
    pieces = []
    for chunk in reversed(view.chunks):
        n = len(next(iter(chunk.values())))
        pieces.append(chunk if n <= k else {c: chunk[c][n - k:] for c in coders})
        k -= min(n, k)
        if k == 0:
            break
    return _joined(pieces[::-1], coders)


def _first_records(view: WindowView, k: int, coders: dict) -> dict[str, np.ndarray]:
    """The coded columns of the view's first `k` records, one array per column."""
    pieces = []
    for chunk in view.chunks:
        n = len(next(iter(chunk.values())))
        pieces.append(chunk if n <= k else {c: chunk[c][:k] for c in coders})
        k -= min(n, k)
        if k == 0:
            break
    return _joined(pieces, coders)


def _joined(pieces: list, coders: dict) -> dict[str, np.ndarray]:
    if len(pieces) == 1:
        return {c: pieces[0][c] for c in coders}
    return {c: np.concatenate([p[c] for p in pieces]) for c in coders}
