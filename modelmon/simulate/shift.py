"""Covariate shift that hurts the model, and covariate shift that does not.

Both scenarios move the input distribution only: rows are drawn from the stable distribution and
kept with a probability that depends on the row's features (rejection sampling, so the shifted
distribution is exactly P_stable(x) * w(x) / E[w]); the label of a kept row is then drawn from the
unchanged concept P(y | x). What changes is *where* the inputs go:

- ``harmful``: towards where the fitted model errs more. Classification: towards the model's
  decision boundary, ``w(x)`` growing with the model's own uncertainty ``1 - max_k p_k(x)``; inside
  a level of uncertainty the inputs keep their stable mix, so what the model's scores say about its
  errors stays true (the assumption of confidence-based estimation) while real accuracy falls.
  Regression: ``w(x)`` grows with the model's expected absolute error at ``x`` under the stable
  concept, measured by drawing the ground truth of the row ``DRAWS`` times. (Weighting
  classifiers by that truth-measured error instead also selects, at a given score, the rows
  where the model is worse than its score says: real accuracy then falls further than any
  estimate from the scores can see; segment: estimated -0.17, realized -0.27.)
- ``harmless``: along a direction the model handles equally well. The rows are grouped by that
  same expected error (``BINS`` quantile bins of the stable distribution) and tilted within every
  group towards large values of one feature (``w = exp(TILT * z) / E[exp(TILT * z) | group]``, z the
  feature standardised on the stable distribution): the feature drifts clearly, the distribution of
  the model's expected error, and so its real quality, stays where it was.

Everything is vectorised; one ``ShiftSampler`` per fitted model holds the stable calibration
(quantile edges, per-bin normalisers) computed once from a random stream of its own.
"""
from __future__ import annotations

import numpy as np

from modelmon.simulate.spec import Columns, FittedModel

SHIFTS = ("harmful", "harmless")
DRAWS = 48  # ground-truth draws per row for its expected error
BINS = 12  # expected-error groups the harmless tilt keeps in proportion
TILT = 1.0  # harmless: exp(TILT * z) within each group, z clipped to +-Z_CLIP
Z_CLIP = 2.5
HARMFUL_POWER = 1.5  # harmful: w = (err / err_q) ** HARMFUL_POWER, capped at 1
HARMFUL_QUANTILE = 0.95
CALIBRATION_ROWS = 20000


def expected_error(fitted: FittedModel, rng: np.random.Generator, cols: Columns,
                   draws: int = DRAWS) -> np.ndarray:
    """The fitted model's expected error at each row under the stable concept (complete rows)."""
    spec = fitted.spec
    predicted, _ = fitted.predict(spec.matrix(cols))
    n = len(predicted)
    tiled = {k: np.tile(v, draws) for k, v in cols.items()}
    truth = spec.truth(rng, tiled, False).reshape(draws, n)
    if spec.task == "regression":
        return np.abs(truth - predicted[None, :]).mean(axis=0)
    return (truth != predicted[None, :]).mean(axis=0)


class ShiftSampler:
    """Draws rows of one model's inputs under the harmful or harmless covariate shift."""

    def __init__(self, fitted: FittedModel, rng: np.random.Generator, tilt_feature: str | None = None):
        spec = fitted.spec
        self.fitted = fitted
        if tilt_feature is None:
            tilt_feature = spec.shift_feature
        if tilt_feature is None:
            numeric = [f for f in spec.drift_defaults if f in spec.numeric_names] or list(spec.numeric_names)
            tilt_feature = numeric[0]
        if tilt_feature not in spec.numeric_names:
            raise ValueError(f"model {spec.name}: the harmless shift tilts a numeric feature, not {tilt_feature!r}")
        self.tilt_feature = tilt_feature
        cols = spec.sample(rng, CALIBRATION_ROWS)
        err = expected_error(fitted, rng, cols)
        self.harmful_scale = max(float(np.quantile(self._harm(cols, err), HARMFUL_QUANTILE)), 1e-9)
        # Quantile edges of the expected error; ties (many rows with error 0) merge bins.
        self.edges = np.unique(np.quantile(err, np.linspace(0, 1, BINS + 1)[1:-1]))
        values = cols[tilt_feature]
        self.center, self.scale = float(np.mean(values)), float(np.std(values)) or 1.0
        weight = np.exp(TILT * self._z(values))
        groups = np.searchsorted(self.edges, err, side="right")
        sums = np.bincount(groups, weights=weight, minlength=len(self.edges) + 1)
        counts = np.bincount(groups, minlength=len(self.edges) + 1)
        self.norm = np.where(counts > 0, sums / np.maximum(counts, 1), 1.0)  # E[exp(TILT z) | group]
        self.harmless_max = float(np.exp(TILT * Z_CLIP) / self.norm.min())

    def _z(self, values: np.ndarray) -> np.ndarray:
        return np.clip((values - self.center) / self.scale, -Z_CLIP, Z_CLIP)

    def _harm(self, cols: Columns, err: np.ndarray) -> np.ndarray:
        """What the harmful shift weights by: the classifier's uncertainty, the regressor's expected error."""
        if self.fitted.spec.task == "regression":
            return err
        _, proba = self.fitted.predict(self.fitted.spec.matrix(cols))
        return 1.0 - proba.max(axis=1)

    def acceptance(self, shift: str, cols: Columns, err: np.ndarray) -> np.ndarray:
        """Probability of keeping each stable row: w(x) / max w."""
        if shift == "harmful":
            return np.minimum(1.0, (self._harm(cols, err) / self.harmful_scale) ** HARMFUL_POWER)
        if shift == "harmless":
            groups = np.searchsorted(self.edges, err, side="right")
            return np.exp(TILT * self._z(cols[self.tilt_feature])) / self.norm[groups] / self.harmless_max
        raise ValueError(f"unknown shift {shift!r} (known: {', '.join(SHIFTS)})")

    def sample(self, rng: np.random.Generator, n: int, shift: str) -> Columns:
        """n complete rows from the shifted input distribution."""
        spec = self.fitted.spec
        parts: list[Columns] = []
        kept = 0
        while kept < n:
            pool = max(2 * (n - kept), 256)
            cols = spec.sample(rng, pool)
            needs_err = shift == "harmless" or spec.task == "regression"
            err = expected_error(self.fitted, rng, cols) if needs_err else np.zeros(pool)
            keep = rng.random(pool) < self.acceptance(shift, cols, err)
            parts.append({k: v[keep] for k, v in cols.items()})
            kept += int(keep.sum())
        out = {k: np.concatenate([p[k] for p in parts])[:n] for k in parts[0]}
        return out
