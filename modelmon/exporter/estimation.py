"""Estimated performance before labels arrive: CBPE for classifiers, DLE for regression.

Labels come late (hours to months); until then a model's quality can still be *estimated* from
what it outputs, if the relation between its outputs and the truth learnt on labelled reference
data still holds in production (no concept drift: P(y | x) unchanged; only the inputs moved).

- Classification, confidence-based performance estimation (CBPE): the scores are calibrated on
  the labelled reference with isotonic regression (binary: the score -> P(positive); multiclass:
  one-vs-rest per class score, each row renormalised to sum 1). For production records with
  calibrated probabilities p_i and predicted classes, the *expected* confusion matrix gives
  accuracy, precision, recall and F1 (binary: positive class; multiclass: macro over the classes,
  as quality.py), and the expected true/false positive rates over the score thresholds give the
  ROC AUC (Mann-Whitney on the records' score ranks, each record a positive with weight p_i).
- Regression, direct loss estimation (DLE): gradient-boosted trees fitted on the labelled
  reference (features encoded as the multivariate worker encodes them, plus the prediction)
  predict the absolute and the squared error of each record; estimated MAE = mean of the
  predicted |e|, RMSE = sqrt(mean of the predicted e^2).

Uncertainty (the standard error): the spread of the *realized* value around the estimate if the
assumptions hold. Classification: a parametric bootstrap (labels drawn K times from the
calibrated probabilities, each draw's realized metrics computed vectorised, their SD).
Regression: the estimators are fitted on a random half of the labelled reference; the residuals
|e| - m(x) on the other half give SE(MAE) = sd / sqrt(n), and SE(RMSE) by the delta method from
the residuals of e^2.

Everything here is pure (no exporter state): the estimation worker fits once per reference and
calls `estimate` with a version's window, off the scrape path and outside the exporter lock.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits

from modelmon.exporter import quality

BOOTSTRAP_DRAWS = 200  # K: the SE of an SE from 200 draws is about 5% of it
BOOTSTRAP_CELLS = 4_000_000  # draws x records x classes per bootstrap block: bounds the worker's memory
CLASSIFICATION_KEYS = ("accuracy", "precision", "recall", "f1", "roc_auc")
REGRESSION_KEYS = ("mae", "rmse")


@dataclass(frozen=True)
class Estimate:
    """One version's estimated quality over its last quality-window's worth of predictions."""

    values: dict[str, float] = field(default_factory=dict)  # quality key -> estimated value
    stderr: dict[str, float] = field(default_factory=dict)  # quality key -> its standard error
    delta: dict[str, float] = field(default_factory=dict)  # realized - estimated on the labelled records
    delta_stderr: dict[str, float] = field(default_factory=dict)
    records: int = 0  # predictions estimated over
    labeled: int = 0  # of them labelled (the delta's sample)
    unscored: int = 0  # predictions left out for want of a score (classification)


# ---------------------------------------------------------------------------- classification (CBPE)


def _isotonic(score: np.ndarray, outcome: np.ndarray):
    from sklearn.isotonic import IsotonicRegression

    return IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(score, outcome.astype(np.float64))


@dataclass
class BinaryCBPE:
    """Isotonic calibration of a binary classifier's positive-class score, fitted on the reference."""

    calibrator: object

    @classmethod
    def fit(cls, score: np.ndarray, actual_positive: np.ndarray) -> "BinaryCBPE":
        score = np.asarray(score, dtype=np.float64)
        keep = np.isfinite(score)
        return cls(_isotonic(score[keep], np.asarray(actual_positive, dtype=bool)[keep]))

    def calibrate(self, score: np.ndarray) -> np.ndarray:
        return np.clip(self.calibrator.predict(np.asarray(score, dtype=np.float64)), 0.0, 1.0)


@dataclass
class MulticlassCBPE:
    """One isotonic calibrator per class (one-vs-rest on the class's score); rows renormalised."""

    calibrators: list

    @classmethod
    def fit(cls, proba: np.ndarray, actual: np.ndarray) -> "MulticlassCBPE":
        """`proba` (n, C) scores in class order, `actual` class codes (-1: a class outside the C)."""
        proba = np.asarray(proba, dtype=np.float64)
        keep = np.isfinite(proba).all(axis=1)
        return cls([_isotonic(proba[keep, k], actual[keep] == k) for k in range(proba.shape[1])])

    def calibrate(self, proba: np.ndarray) -> np.ndarray:
        p = np.column_stack([np.clip(c.predict(proba[:, k]), 0.0, 1.0) for k, c in enumerate(self.calibrators)])
        sums = p.sum(axis=1, keepdims=True)
        uniform = np.full_like(p, 1.0 / p.shape[1])
        return np.divide(p, sums, out=uniform, where=sums > 0)


def _binary_metrics(tp, fp, fn, tn) -> dict[str, np.ndarray]:
    """Accuracy, precision, recall, F1 of (possibly expected, possibly per-draw) confusion cells."""
    n = tp + fp + fn + tn
    return {"accuracy": quality._ratio(tp + tn, n), "precision": quality._ratio(tp, tp + fp),
            "recall": quality._ratio(tp, tp + fn), "f1": quality._ratio(2 * tp, 2 * tp + fp + fn)}


def _weighted_auc(ranks: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The realized ROC AUC of each row of 0/1 `labels` (draws, n) for scores of fixed average
    `ranks`: Mann-Whitney U, as quality.roc_auc (NaN for a draw with one class only)."""
    pos = labels.sum(axis=-1)
    neg = labels.shape[-1] - pos
    rank_sum = labels @ ranks
    return np.divide(rank_sum - pos * (pos + 1) / 2.0, pos * neg, out=np.full(np.shape(pos), np.nan),
                     where=(pos > 0) & (neg > 0))


def _expected_auc(score: np.ndarray, p: np.ndarray) -> float:
    """Area under the expected ROC curve (expected TPR against expected FPR over the score
    thresholds, trapezoid; ties one step): record i counts p_i as a positive, 1 - p_i as a negative."""
    order = np.argsort(-score, kind="stable")
    s, w = score[order], p[order]
    last = np.r_[s[1:] != s[:-1], True]  # the end of each tie group
    tps = np.cumsum(w)[last]
    fps = np.cumsum(1.0 - w)[last]
    if tps[-1] <= 0 or fps[-1] <= 0:
        return float("nan")
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    return float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2.0))


def _draw_blocks(n: int, classes: int, draws: int) -> list[int]:
    """Draw counts per bootstrap block so a block holds at most BOOTSTRAP_CELLS cells."""
    per = max(1, BOOTSTRAP_CELLS // max(1, n * classes))
    return [min(per, draws - k) for k in range(0, draws, per)]


def binary_estimate(p: np.ndarray, predicted_positive: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """Expected accuracy, precision, recall, F1 and ROC AUC of records with calibrated P(positive) `p`."""
    pred = np.asarray(predicted_positive, dtype=bool)
    tp, fp = float(p[pred].sum()), float((1.0 - p[pred]).sum())
    fn, tn = float(p[~pred].sum()), float((1.0 - p[~pred]).sum())
    out = {k: float(v) for k, v in _binary_metrics(tp, fp, fn, tn).items()}
    auc = _expected_auc(np.asarray(score, dtype=np.float64), p)
    if np.isfinite(auc):
        out["roc_auc"] = auc
    return out


def binary_bootstrap(p: np.ndarray, predicted_positive: np.ndarray, score: np.ndarray, rng: np.random.Generator,
                     draws: int = BOOTSTRAP_DRAWS) -> dict[str, np.ndarray]:
    """Realized metrics of `draws` label sets y ~ Bernoulli(p): {key: array of `draws` values}."""
    pred = np.asarray(predicted_positive, dtype=bool)
    ranks = quality.average_ranks(np.asarray(score, dtype=np.float64))
    out: dict[str, list] = {k: [] for k in CLASSIFICATION_KEYS}
    for k in _draw_blocks(p.size, 1, draws):
        y = (rng.random((k, p.size)) < p).astype(np.float64)
        tp = y @ pred.astype(np.float64)
        pos = y.sum(axis=1)
        npred = float(pred.sum())
        fp = npred - tp
        fn = pos - tp
        tn = p.size - tp - fp - fn
        for key, v in _binary_metrics(tp, fp, fn, tn).items():
            out[key].append(v)
        out["roc_auc"].append(_weighted_auc(ranks, y))
    return {k: np.concatenate(v) for k, v in out.items()}


def multiclass_estimate(p: np.ndarray, predicted: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """Expected accuracy, macro precision/recall/F1 and macro one-vs-rest ROC AUC; `p` (n, C)
    calibrated probabilities, `predicted` codes 0..C-1, `score` (n, C) the model's own scores."""
    n, c = p.shape
    onehot = np.zeros((n, c))
    onehot[np.arange(n), predicted] = 1.0
    cm = p.T @ onehot  # expected counts: row actual, column predicted
    out = {k: float(v[0]) for k, v in _macro(cm[None]).items()}
    aucs = [_expected_auc(score[:, k], p[:, k]) for k in range(c)]
    if all(np.isfinite(aucs)):
        out["roc_auc"] = float(np.mean(aucs))
    return out


def _macro(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy and macro precision/recall/F1 of confusion matrices (draws, C, C), over the classes
    that occur as actual or predicted (quality.multiclass_quality's rule; expected counts: > 0)."""
    tp = np.diagonal(cm, axis1=1, axis2=2)
    true_n, pred_n = cm.sum(axis=2), cm.sum(axis=1)
    present = (true_n + pred_n) > 1e-12
    count = np.maximum(present.sum(axis=1), 1)

    def mean(x):
        return np.where(present, x, 0.0).sum(axis=1) / count

    return {"accuracy": tp.sum(axis=1) / cm.sum(axis=(1, 2)), "precision": mean(quality._ratio(tp, pred_n)),
            "recall": mean(quality._ratio(tp, true_n)), "f1": mean(quality._ratio(2 * tp, true_n + pred_n))}


def multiclass_bootstrap(p: np.ndarray, predicted: np.ndarray, score: np.ndarray, rng: np.random.Generator,
                         draws: int = BOOTSTRAP_DRAWS) -> dict[str, np.ndarray]:
    n, c = p.shape
    cum = np.cumsum(p, axis=1)
    cum[:, -1] = 1.0
    ranks = np.column_stack([quality.average_ranks(score[:, k]) for k in range(c)])
    out: dict[str, list] = {k: [] for k in CLASSIFICATION_KEYS}
    for k in _draw_blocks(n, c, draws):
        u = rng.random((k, n, 1))
        y = (u > cum[None, :, :]).sum(axis=2)  # (k, n) drawn actual class codes
        y = np.minimum(y, c - 1)
        cells = (np.arange(k)[:, None] * c * c + y * c + predicted[None, :]).ravel()
        cm = np.bincount(cells, minlength=k * c * c).reshape(k, c, c).astype(np.float64)
        for key, v in _macro(cm).items():
            out[key].append(v)
        aucs = np.column_stack([_weighted_auc(ranks[:, j], (y == j).astype(np.float64)) for j in range(c)])
        out["roc_auc"].append(aucs.mean(axis=1))  # NaN where a draw lacks a class (sklearn raises)
    return {k: np.concatenate(v) for k, v in out.items()}


def _sd(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(np.std(values, ddof=1)) if values.size > 1 else float("nan")


# ---------------------------------------------------------------------------- regression (DLE)


@dataclass
class DLE:
    """Models of the absolute and the squared error, with held-out residual spreads for the SE."""

    abs_model: object
    sq_model: object
    abs_residual_sd: float  # sd of |e| - m(x) on the held-out half
    sq_residual_sd: float  # sd of e^2 - s(x)
    abs_residual_mean: float
    sq_residual_mean: float

    @classmethod
    def fit(cls, x: np.ndarray, prediction: np.ndarray, label: np.ndarray, seed: int = 0) -> "DLE":
        from sklearn.ensemble import HistGradientBoostingRegressor

        rows = _design(x, prediction)
        err = np.asarray(prediction, dtype=np.float64) - np.asarray(label, dtype=np.float64)
        order = np.random.default_rng(seed).permutation(len(err))
        fit_rows, held = order[: len(err) // 2], order[len(err) // 2:]
        models = []
        with threadpool_limits(limits=1):  # the worker shares the machine with ingest (see multivariate.py)
            for target in (np.abs(err), err ** 2):
                m = HistGradientBoostingRegressor(max_iter=100, learning_rate=0.1, max_leaf_nodes=15,
                                                  min_samples_leaf=20, early_stopping=False, random_state=seed)
                models.append(m.fit(rows[fit_rows], target[fit_rows]))
            r_abs = np.abs(err[held]) - np.maximum(models[0].predict(rows[held]), 0.0)
            r_sq = err[held] ** 2 - np.maximum(models[1].predict(rows[held]), 0.0)
        return cls(models[0], models[1], float(np.std(r_abs, ddof=1)), float(np.std(r_sq, ddof=1)),
                   float(r_abs.mean()), float(r_sq.mean()))

    def predict(self, x: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per record: (expected |e|, expected e^2)."""
        rows = _design(x, prediction)
        with threadpool_limits(limits=1):
            return np.maximum(self.abs_model.predict(rows), 0.0), np.maximum(self.sq_model.predict(rows), 0.0)

    def estimate(self, x: np.ndarray, prediction: np.ndarray) -> tuple[dict[str, float], dict[str, float]]:
        """(estimated mae/rmse, their standard errors) over the records."""
        abs_e, sq_e = self.predict(x, prediction)
        return _dle_values(abs_e, sq_e, self.abs_residual_sd, self.sq_residual_sd)


def _dle_values(abs_e: np.ndarray, sq_e: np.ndarray, abs_sd: float, sq_sd: float):
    n = abs_e.size
    mae, mse = float(abs_e.mean()), float(sq_e.mean())
    rmse = float(np.sqrt(mse))
    se_mae = abs_sd / np.sqrt(n)
    se_mse = sq_sd / np.sqrt(n)
    se_rmse = se_mse / (2.0 * rmse) if rmse > 0 else float("nan")
    return {"mae": mae, "rmse": rmse}, {"mae": float(se_mae), "rmse": float(se_rmse)}


def _design(x: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    pred = np.asarray(prediction, dtype=np.float64)[:, None]
    return pred if x is None or x.size == 0 else np.column_stack([x, pred])


# ---------------------------------------------------------------------------- one version's window


@dataclass
class Estimator:
    """What the worker fits once per reference: one of the three, per the task."""

    task: str
    binary: BinaryCBPE | None = None
    multiclass: MulticlassCBPE | None = None
    dle: DLE | None = None


def estimate_classification(est: Estimator, window: dict[str, np.ndarray], labeled: dict[str, np.ndarray] | None,
                            seed: int = 0, draws: int = BOOTSTRAP_DRAWS) -> Estimate:
    """The estimate over a version's window (binary: `score`, `pred` (bool: predicted positive);
    multiclass: `proba` (n, C), `pred` (codes, -1 outside the configured classes)), and the check on
    its labelled records (`labeled`: the same columns plus `y` (bool / codes)): realized - estimated."""
    rng = np.random.default_rng(seed)
    keep = _scored(est, window)
    n_all = len(window["pred"])
    values, stderr = _classification(est, {k: v[keep] for k, v in window.items()}, rng, draws, None)
    delta: dict[str, float] = {}
    delta_se: dict[str, float] = {}
    n_lab = 0
    if labeled is not None and len(labeled["pred"]):
        lk = _scored(est, labeled)
        lab = {k: v[lk] for k, v in labeled.items()}
        n_lab = int(lk.sum())
        if n_lab:
            est_lab, se_lab = _classification(est, lab, rng, draws, lab["y"])
            realized = est_lab.pop("__realized__", {})
            for key, value in est_lab.items():
                if key in realized and np.isfinite(realized[key]) and np.isfinite(se_lab.get(key, np.nan)):
                    delta[key] = realized[key] - value
                    delta_se[key] = se_lab[key]
    return Estimate(values, stderr, delta, delta_se, int(keep.sum()), n_lab, n_all - int(keep.sum()))


def _scored(est: Estimator, cols: dict[str, np.ndarray]) -> np.ndarray:
    if est.task == "binary":
        return np.isfinite(cols["score"])
    return np.isfinite(cols["proba"]).all(axis=1) & (cols["pred"] >= 0)


def _classification(est: Estimator, cols, rng, draws, y):
    if not len(cols["pred"]):
        return {}, {}
    if est.task == "binary":
        p = est.binary.calibrate(cols["score"])
        values = binary_estimate(p, cols["pred"], cols["score"])
        boot = binary_bootstrap(p, cols["pred"], cols["score"], rng, draws)
        if y is not None:
            real = quality.binary_quality(y, cols["pred"], cols["score"])
    else:
        p = est.multiclass.calibrate(cols["proba"])
        values = multiclass_estimate(p, cols["pred"], cols["proba"])
        boot = multiclass_bootstrap(p, cols["pred"], cols["proba"], rng, draws)
        if y is not None:
            c = p.shape[1]
            known = (y >= 0) & (y < c)
            real = quality.multiclass_quality(np.where(known, y, c), cols["pred"], c + 1, None)
            if known.all():
                real.update({k: v for k, v in quality.multiclass_quality(y, cols["pred"], c, cols["proba"]).items()
                             if k == "roc_auc"})
    stderr = {k: _sd(boot[k]) for k in values if k in boot}
    if y is not None:
        values = dict(values, __realized__={k: real[k] for k in values if k in real})
    return values, stderr


def estimate_regression(est: Estimator, x: np.ndarray, prediction: np.ndarray, labeled: tuple | None) -> Estimate:
    """DLE over a version's window (`x` encoded features, `prediction`); `labeled`: (x, prediction,
    label) of the window's labelled records, for the check."""
    if not len(prediction):
        return Estimate()
    values, stderr = est.dle.estimate(x, prediction)
    delta: dict[str, float] = {}
    delta_se: dict[str, float] = {}
    n_lab = 0
    if labeled is not None and len(labeled[1]):
        lx, lp, ly = labeled
        n_lab = len(lp)
        est_lab, se_lab = est.dle.estimate(lx, lp)
        real = quality.regression_quality(ly, lp)
        for key in REGRESSION_KEYS:
            if np.isfinite(se_lab[key]):
                delta[key] = real[key] - est_lab[key]
                delta_se[key] = se_lab[key]
    return Estimate(values, stderr, delta, delta_se, len(prediction), n_lab)
