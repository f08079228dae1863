"""Model quality over a window of labelled predictions, vectorised with numpy.

Every function is pure and takes whole arrays (no per-record Python loops). The numbers equal
scikit-learn's (``sklearn.metrics``), which the tests use as the oracle; sklearn itself is not
called here because it validates and re-encodes its input on every call, which is too slow for
a scrape path. A key is *omitted* from the result whenever sklearn would raise or return NaN
for the same input, so callers can export exactly the keys they get.
"""
from __future__ import annotations

import numpy as np

# sklearn clips probabilities to [eps, 1 - eps] with eps the float64 machine epsilon.
_EPS = float(np.finfo(np.float64).eps)


def confusion_counts(actual_codes: np.ndarray, predicted_codes: np.ndarray, n: int) -> np.ndarray:
    """(n, n) int64 matrix: row = actual class code, column = predicted class code."""
    actual = np.asarray(actual_codes, dtype=np.int64)
    predicted = np.asarray(predicted_codes, dtype=np.int64)
    if actual.shape != predicted.shape:
        raise ValueError(f"actual and predicted differ in length: {actual.shape} vs {predicted.shape}")
    if actual.size and (min(actual.min(), predicted.min()) < 0 or max(actual.max(), predicted.max()) >= n):
        raise ValueError(f"class codes must lie in 0..{n - 1}")
    return np.bincount(actual * n + predicted, minlength=n * n).reshape(n, n)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their average rank (scipy.stats.rankdata 'average')."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)  # rank of the last member of each tie group
    return (upper - (counts - 1) / 2.0)[inverse]


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve of ``score`` for the positive (True) class.

    Mann-Whitney U on average ranks, which equals the trapezoidal ROC area sklearn computes,
    ties included. ``None`` when only one class is present (sklearn raises there).
    """
    y = np.asarray(y_true, dtype=bool)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    rank_sum = float(average_ranks(np.asarray(score, dtype=np.float64))[y].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def _ratio(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
    """num / den with 0 where den == 0 (sklearn's zero_division=0)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


def binary_quality(y_true: np.ndarray, y_pred: np.ndarray, score: np.ndarray | None = None) -> dict[str, float]:
    """Quality of a binary classifier; True is the positive class.

    Keys: accuracy, precision, recall, f1 (zero_division=0) always when there is at least one
    record; with ``score`` (probability of the positive class, in [0, 1], NaN = no score for
    that record): log_loss and brier_score over the records that have a score, and roc_auc
    when those records hold both classes. An empty window gives ``{}``.
    """
    y = np.asarray(y_true, dtype=bool)
    pred = np.asarray(y_pred, dtype=bool)
    if y.shape != pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y.shape} vs {pred.shape}")
    if y.size == 0:
        return {}
    tp = int(np.count_nonzero(y & pred))
    fp = int(np.count_nonzero(~y & pred))
    fn = int(np.count_nonzero(y & ~pred))
    out = {
        "accuracy": float(np.count_nonzero(y == pred)) / y.size,
        "precision": float(_ratio(tp, tp + fp)),
        "recall": float(_ratio(tp, tp + fn)),
        "f1": float(_ratio(2 * tp, 2 * tp + fp + fn)),
    }
    if score is None:
        return out
    s = np.asarray(score, dtype=np.float64)
    if s.shape != y.shape:
        raise ValueError(f"score and y_true differ in length: {s.shape} vs {y.shape}")
    has = ~np.isnan(s)
    s, ys = s[has], y[has]
    if s.size == 0:
        return out
    if s.min() < 0 or s.max() > 1:
        raise ValueError("scores must be probabilities in [0, 1]")
    auc = roc_auc(ys, s)
    if auc is not None:
        out["roc_auc"] = auc
    p_true = np.where(ys, s, 1.0 - s)  # probability given to the class that happened
    out["log_loss"] = float(-np.mean(np.log(np.clip(p_true, _EPS, 1 - _EPS))))
    out["brier_score"] = float(np.mean((s - ys) ** 2))
    return out


def multiclass_quality(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, proba: np.ndarray | None = None
) -> dict[str, float]:
    """Quality of a multiclass classifier over class codes 0..n_classes-1.

    Always (at least one record): accuracy and macro precision/recall/f1 over the classes that
    occur in y_true or y_pred (sklearn's ``labels=None``), zero_division=0.

    With ``proba`` (n_records, n_classes), column k = probability of class k: rows with a
    non-finite entry or a non-positive sum carry no probabilities and are left out of the
    probabilistic keys; rows that do not sum to 1 (sklearn's tolerance) are divided by their
    sum. Then
    - log_loss (labels = all n_classes, clipped to [eps, 1-eps] like sklearn);
    - roc_auc: macro one-vs-rest, only when every class 0..n_classes-1 occurs among those rows'
      y_true (sklearn raises otherwise).
    For rows that already sum to 1 both equal sklearn 1.9 exactly. sklearn would refuse
    (roc_auc) or merely warn (log_loss) on rows that do not sum to 1; modelmon renormalises them
    because a model that omits a class from its scores still meant a distribution.
    """
    y = np.asarray(y_true, dtype=np.int64)
    pred = np.asarray(y_pred, dtype=np.int64)
    if y.size == 0:
        if y.shape != pred.shape:
            raise ValueError(f"y_true and y_pred differ in length: {y.shape} vs {pred.shape}")
        return {}
    cm = confusion_counts(y, pred, n_classes)
    tp = np.diag(cm).astype(np.float64)
    true_n = cm.sum(axis=1)
    pred_n = cm.sum(axis=0)
    present = (true_n + pred_n) > 0
    out = {
        "accuracy": float(tp.sum()) / y.size,
        "precision": float(_ratio(tp, pred_n)[present].mean()),
        "recall": float(_ratio(tp, true_n)[present].mean()),
        "f1": float(_ratio(2 * tp, true_n + pred_n)[present].mean()),
    }
    if proba is None:
        return out
    p = np.asarray(proba, dtype=np.float64)
    if p.shape != (y.size, n_classes):
        raise ValueError(f"proba must have shape ({y.size}, {n_classes}), got {p.shape}")
    if np.any(p < 0) or np.any(p > 1):
        raise ValueError("class probabilities must lie in [0, 1]")
    sums = p.sum(axis=1)
    usable = np.isfinite(sums) & (sums > 0)
    if not usable.any():
        return out
    # Rows already summing to 1 stay untouched: dividing by 0.9999999999999999 would move some
    # entries by one ulp and break score ties differently from sklearn.
    p, sums = p[usable], sums[usable]
    p = np.where(np.isclose(sums, 1.0, rtol=np.sqrt(_EPS), atol=0)[:, None], p, p / sums[:, None])
    yp = y[usable]
    out["log_loss"] = float(-np.mean(np.log(np.clip(p[np.arange(yp.size), yp], _EPS, 1 - _EPS))))
    if n_classes >= 2 and np.all(np.bincount(yp, minlength=n_classes) > 0):
        out["roc_auc"] = float(np.mean([roc_auc(yp == k, p[:, k]) for k in range(n_classes)]))
    return out


def regression_quality(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """mae, rmse and r2 of a regression model (``{}`` for an empty window).

    r2 is omitted for fewer than 2 records or a constant y_true: sklearn returns NaN for the
    first and an arbitrary 1.0/0.0 (``force_finite``) for the second, neither worth a gauge.
    """
    y = np.asarray(y_true, dtype=np.float64)
    pred = np.asarray(y_pred, dtype=np.float64)
    if y.shape != pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y.shape} vs {pred.shape}")
    if y.size == 0:
        return {}
    err = y - pred
    out = {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err**2)))}
    if y.size >= 2 and y.min() != y.max():
        out["r2"] = 1.0 - float(np.sum(err**2)) / float(np.sum((y - y.mean()) ** 2))
    return out
