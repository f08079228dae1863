"""What a simulated model is: feature distributions, a ground-truth process and an estimator.

A ``ModelSpec`` is pure description; ``FittedModel`` trains its estimator on data drawn from the
stable distribution and answers like a deployed model would (class + probabilities, or a number).
Columns are numpy arrays keyed by feature name: numeric features as float64 (NaN = missing),
categorical features as integer codes into ``CategoricalFeature.values``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
from threadpoolctl import threadpool_limits

Columns = dict[str, np.ndarray]
TASKS = ("binary", "multiclass", "regression")


@dataclass(frozen=True)
class NumericFeature:
    name: str
    # Draws n values; may read features sampled before it (e.g. income depends on age).
    sample: Callable[[np.random.Generator, int, Columns], np.ndarray]
    # Covariate drift: the shifted value of each stable value (applied after sampling, so the
    # other features keep their marginal distributions exactly).
    drift: Callable[[np.ndarray], np.ndarray]
    decimals: int = 2  # 0 makes an integer feature

    def finish(self, values: np.ndarray) -> np.ndarray:
        return np.round(values, self.decimals)


@dataclass(frozen=True)
class CategoricalFeature:
    name: str
    values: tuple[str, ...]
    probs: tuple[float, ...]
    drift_probs: tuple[float, ...]  # the category mix under covariate drift

    def __post_init__(self) -> None:
        for p in (self.probs, self.drift_probs):
            if len(p) != len(self.values) or abs(sum(p) - 1.0) > 1e-9:
                raise ValueError(f"feature {self.name}: probabilities must match values and sum to 1")


@dataclass(frozen=True)
class ModelSpec:
    """A synthetic model. ``truth(rng, columns, concept_drift)`` returns the ground truth:
    class indices into ``classes`` for classification, values for regression."""

    name: str
    task: str
    version: str
    numeric: tuple[NumericFeature, ...]
    categorical: tuple[CategoricalFeature, ...]
    truth: Callable[[np.random.Generator, Columns, bool], np.ndarray]
    make_estimator: Callable[["ModelSpec"], Any]
    classes: tuple[Any, ...] = ()  # binary: (negative, positive)
    latency_ms: float = 20.0  # median serving latency of the healthy service
    drift_defaults: tuple[str, ...] = ()  # features shifted by covariate_drift unless told otherwise
    # The numeric feature covariate_shift_harmless tilts (None: the first numeric drift default): one the
    # model handles equally well across its range (see modelmon.simulate.shift).
    shift_feature: str | None = None
    # Extra modelmon.yaml keys for --config-out: windows, thresholds, slo, team, min_labeled.
    config: Mapping[str, Any] = field(default_factory=dict)
    train_rows: int = 4000

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"model {self.name}: task must be one of {TASKS}, got {self.task!r}")
        if self.task != "regression" and len(self.classes) < 2:
            raise ValueError(f"model {self.name}: a classifier needs at least two classes")
        unknown = set(self.drift_defaults) - set(self.feature_names)
        if self.shift_feature is not None and self.shift_feature not in self.numeric_names:
            unknown.add(self.shift_feature)
        if unknown:
            raise ValueError(f"model {self.name}: drift_defaults names unknown features {sorted(unknown)}")

    @property
    def numeric_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.numeric)

    @property
    def categorical_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.categorical)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.numeric_names + self.categorical_names

    @property
    def positive_class(self) -> Any:
        return self.classes[1] if self.task == "binary" else None

    def sample(self, rng: np.random.Generator, n: int, drifted: frozenset[str] = frozenset()) -> Columns:
        """n complete rows (no missing values), with the ``drifted`` features shifted."""
        cols: Columns = {}
        for f in self.numeric:
            cols[f.name] = np.asarray(f.sample(rng, n, cols), dtype=np.float64)
        for f in self.numeric:
            if f.name in drifted:
                cols[f.name] = f.drift(cols[f.name])
            cols[f.name] = f.finish(cols[f.name])
        for c in self.categorical:
            probs = c.drift_probs if c.name in drifted else c.probs
            cols[c.name] = rng.choice(len(c.values), size=n, p=probs)
        return cols

    def matrix(self, cols: Columns) -> np.ndarray:
        """Estimator input: numeric columns first, then categorical codes, as float64."""
        return np.column_stack([np.asarray(cols[name], dtype=np.float64) for name in self.feature_names])


def with_missing(spec: ModelSpec, rng: np.random.Generator, cols: Columns, rate: float) -> Columns:
    """A copy where each numeric value is missing (NaN) with probability ``rate``: a logging or
    upstream gap, so the model sees NaN while the ground truth still used the real value."""
    out = dict(cols)
    for name in spec.numeric_names:
        mask = rng.random(len(cols[name])) < rate
        if mask.any():
            out[name] = np.where(mask, np.nan, cols[name])
    return out


def _one_thread() -> threadpool_limits:
    """OpenMP and BLAS on one thread: small fits and predictions gain nothing from threads, and
    on a busy machine (the exporter and Prometheus share the cores) spinning threads cost seconds."""
    return threadpool_limits(limits=1)


class FittedModel:
    """A spec plus its estimator, trained on the stable distribution (the served version), or, for
    a candidate version, with another estimator, row count or the changed concept."""

    def __init__(self, spec: ModelSpec, rng: np.random.Generator, missing_rate: float, *,
                 estimator: Any = None, concept_drift: bool = False, train_rows: int | None = None,
                 version: str | None = None, latency_ms: float | None = None):
        self.spec = spec
        self.version = spec.version if version is None else version
        self.latency_ms = spec.latency_ms if latency_ms is None else latency_ms
        cols = spec.sample(rng, spec.train_rows if train_rows is None else train_rows)
        y = spec.truth(rng, cols, concept_drift)
        X = spec.matrix(with_missing(spec, rng, cols, missing_rate))
        self.estimator = spec.make_estimator(spec) if estimator is None else estimator
        with _one_thread():
            self.estimator.fit(X, y)

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(prediction, probabilities). Classification: class indices and an (n, k) matrix in
        ``spec.classes`` order; regression: values and None."""
        with _one_thread():
            if self.spec.task == "regression":
                return self.estimator.predict(X), None
            proba = np.zeros((len(X), len(self.spec.classes)))
            proba[:, self.estimator.classes_.astype(int)] = self.estimator.predict_proba(X)
        if len(self.spec.classes) == 2:  # positive from 0.5 on: a tree leaf can score exactly 0.5
            return (proba[:, 1] >= 0.5).astype(np.int64), proba
        return proba.argmax(axis=1), proba
