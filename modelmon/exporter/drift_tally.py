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
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelmon.exporter import drift
from modelmon.exporter.windows import WindowView

SEGMENT_MERGE_MAX = 262144  # codes per segment beyond which segments are no longer merged


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
        if ks:
            sample = profile.sample
            self.ks_last = np.flatnonzero(np.append(sample[1:] != sample[:-1], True))
            at = np.searchsorted(points, sample[self.ks_last])  # point index of each distinct value
            self.ks_below = 2 * at + 1  # #cells before point i's cell, +1: an index into [0, *cumsum]
            self.ks_upto = 2 * at + 2

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
        self._state = _State(profiles, prediction, coders, view.reordered, view.dropped, view.appended,
                             view.front, view.start, view.size, counts, tuple(segments))
        self.full_recomputes += full
        self.front_recodes += bool(head) and not full
        return self._state


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
