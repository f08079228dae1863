"""Multivariate drift: a domain classifier and an IsolationForest, for the background worker.

Per-feature tests miss a change in how features move together; these two look at whole rows.
Both run on bounded samples (``exporter.multivariate.sample_size`` rows a side), are
deterministic for a given seed, and take about half a second together for 2000 + 2000 rows x 30
features. They run single-threaded on purpose: the worker shares the machine with ingest and
scrapes, and on a busy 2-core box scikit-learn's OpenMP threads made the fit 5-10x slower
than one thread, not faster. Input rows come from :func:`encode`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, IsolationForest
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from modelmon.exporter.drift import CategoricalProfile
from modelmon.exporter.quality import roc_auc


def encode(columns: Mapping[str, np.ndarray], numeric: Sequence[str], categorical: Sequence[str],
           profiles: Mapping[str, CategoricalProfile]) -> np.ndarray:
    """Rows as a float matrix: numeric features as they are (NaN = missing), then categorical
    features as their profile's codes (NaN = missing), columns in the order given.

    Use :func:`categorical_mask` with the same arguments to tell the classifier which columns
    hold codes.
    """
    parts = [np.asarray(columns[name], dtype=np.float64) for name in numeric]
    for name in categorical:
        codes = profiles[name].codes(columns[name]).astype(np.float64)
        codes[codes < 0] = np.nan
        parts.append(codes)
    if not parts:
        raise ValueError("no features to encode")
    return np.column_stack(parts)


def categorical_mask(numeric: Sequence[str], categorical: Sequence[str]) -> np.ndarray:
    """Boolean mask over :func:`encode`'s columns: True where the column holds category codes."""
    return np.array([False] * len(numeric) + [True] * len(categorical), dtype=bool)


def _balanced(ref: np.ndarray, cur: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Both sides subsampled (without replacement) to the smaller side's size."""
    n = min(len(ref), len(cur))
    if len(ref) > n:
        ref = ref[np.sort(rng.choice(len(ref), n, replace=False))]
    if len(cur) > n:
        cur = cur[np.sort(rng.choice(len(cur), n, replace=False))]
    return ref, cur


def domain_classifier_auc(ref: np.ndarray, cur: np.ndarray, seed: int = 0, folds: int = 3,
                          categorical: np.ndarray | None = None) -> float:
    """How well a classifier tells recent rows (``cur``) from reference rows: cross-validated ROC AUC.

    The larger side is subsampled so both are equally large; a gradient-boosted tree model
    (NaN-aware, category codes handled natively when ``categorical`` marks them) is trained on
    ``folds - 1`` folds and scores the held-out fold, and the AUC is taken over all out-of-fold
    scores. 0.5 means the two samples are indistinguishable; 1.0 means fully separable.
    Values a little under 0.5 are noise. Raises ValueError with fewer than ``2 * folds`` rows
    on a side.
    """
    if ref.ndim != 2 or cur.ndim != 2 or ref.shape[1] != cur.shape[1]:
        raise ValueError(f"ref and cur must be 2-D with the same columns, got {ref.shape} and {cur.shape}")
    rng = np.random.default_rng(seed)
    ref, cur = _balanced(ref, cur, rng)
    if len(ref) < 2 * folds:
        raise ValueError(f"domain classifier needs at least {2 * folds} rows on each side, got {len(ref)}")
    x = np.vstack([ref, cur])
    y = np.repeat([False, True], len(ref))
    if categorical is not None:
        # The model bins categories natively only below 255 codes; larger ones stay ordinal.
        categorical = np.asarray(categorical, dtype=bool) & (np.where(np.isnan(x), 0, x).max(axis=0) < 255)
    oof = np.empty(len(y))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with threadpool_limits(limits=1):
        for train, test in splitter.split(x, y):
            model = HistGradientBoostingClassifier(
                max_iter=40, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=20,
                early_stopping=False, categorical_features=categorical, random_state=seed)
            model.fit(x[train], y[train])
            oof[test] = model.predict_proba(x[test])[:, 1]
    return float(roc_auc(y, oof))


def _impute(x: np.ndarray, fill: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(x), fill, x)


def outlier_ratio(ref: np.ndarray, cur: np.ndarray, seed: int = 0, baseline: float = 0.01) -> float:
    """Share of ``cur`` rows an IsolationForest fit on ``ref`` calls outliers.

    Missing values are filled with the reference column medians (0 for an all-missing column)
    on both sides. The threshold is calibrated on reference rows the forest did not see: the
    reference is split in half at random, the forest fits one half, and the cut-off is the
    anomaly score that a ``baseline`` share (default 1%) of the other half falls below. So data
    like the reference gives about ``baseline`` whatever its shape, and the gauge reads as "how
    many more odd rows than usual". Calibrating on the training rows instead (which is what
    IsolationForest's ``contamination`` does) scores them as too normal and, on small
    references, puts the stable level below the stated baseline.
    """
    if ref.ndim != 2 or cur.ndim != 2 or ref.shape[1] != cur.shape[1]:
        raise ValueError(f"ref and cur must be 2-D with the same columns, got {ref.shape} and {cur.shape}")
    if len(ref) < 20 or len(cur) == 0:
        raise ValueError(f"outlier ratio needs at least 20 reference rows and 1 current row, "
                         f"got {len(ref)} and {len(cur)}")
    if not 0 < baseline < 1:
        raise ValueError("baseline must lie strictly between 0 and 1")
    all_missing = np.isnan(ref).all(axis=0)
    medians = np.zeros(ref.shape[1])
    medians[~all_missing] = np.nanmedian(ref[:, ~all_missing], axis=0)
    ref = _impute(ref, medians)
    cur = _impute(cur, medians)
    order = np.random.default_rng(seed).permutation(len(ref))
    fit_rows, calib_rows = ref[order[: len(ref) // 2]], ref[order[len(ref) // 2:]]
    forest = IsolationForest(n_estimators=100, random_state=seed, n_jobs=1).fit(fit_rows)
    # The k-th lowest of m calibration scores with k = baseline * (m + 1): a new row like the
    # reference scores below it with probability k / (m + 1), i.e. ``baseline`` (a plain
    # interpolated quantile overshoots that on small samples).
    calib = np.sort(forest.score_samples(calib_rows))
    k = max(1, round(baseline * (calib.size + 1)))
    return float(np.mean(forest.score_samples(cur) < calib[k - 1]))
