"""A generic synthetic model with many features, for benchmarks and scale tests."""
from __future__ import annotations

import zlib

import numpy as np

from modelmon.simulate.estimators import one_hot_linear
from modelmon.simulate.spec import TASKS, CategoricalFeature, Columns, ModelSpec, NumericFeature

_CATEGORIES = 6
_CLASSES = ("a", "b", "c")


def _numeric(name: str, mean: float, scale: float) -> NumericFeature:
    return NumericFeature(name, lambda r, n, c: r.normal(mean, scale, n),
                          drift=lambda x: x + scale, decimals=3)  # one standard deviation


def wide_model(name: str, n_numeric: int = 16, n_categorical: int = 4, task: str = "binary",
               seed: int = 0) -> ModelSpec:
    """A model with ``num_00..`` numeric and ``cat_00..`` categorical features whose label is a
    noisy linear function of all of them; concept drift flips half of the weights."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if n_numeric < 0 or n_categorical < 0 or n_numeric + n_categorical == 0:
        raise ValueError("a wide model needs at least one feature")
    rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(name.encode())]))
    means = rng.normal(0, 10, n_numeric)
    scales = rng.uniform(0.5, 5, n_numeric)
    n_out = len(_CLASSES) if task == "multiclass" else 1
    weights = rng.normal(0, 1, (n_numeric, n_out)) / np.sqrt(max(n_numeric, 1))
    cat_effects = rng.normal(0, 0.5, (n_categorical, _CATEGORIES, n_out))
    flip = np.where(np.arange(n_numeric) % 2 == 0, -1.0, 1.0)[:, None]
    numeric = tuple(_numeric(f"num_{i:02d}", means[i], scales[i]) for i in range(n_numeric))
    categorical = []
    for i in range(n_categorical):
        probs = rng.dirichlet(np.full(_CATEGORIES, 3.0))
        categorical.append(CategoricalFeature(f"cat_{i:02d}", tuple(f"v{j}" for j in range(_CATEGORIES)),
                                              tuple(probs / probs.sum()), tuple(probs[::-1] / probs.sum())))

    def truth(r: np.random.Generator, c: Columns, concept_drift: bool) -> np.ndarray:
        n = len(next(iter(c.values())))
        z = np.zeros((n, n_out))
        w = weights * flip if concept_drift else weights
        for i, f in enumerate(numeric):
            z += np.outer((c[f.name] - means[i]) / scales[i], w[i])
        for i, f in enumerate(categorical):
            z += cat_effects[i][c[f.name]]
        if task == "binary":
            return (r.random(n) < 1 / (1 + np.exp(-3 * z[:, 0]))).astype(np.int64)
        if task == "multiclass":
            return (3 * z + r.gumbel(0, 1, z.shape)).argmax(axis=1)
        return np.round(50 + 10 * z[:, 0] + r.normal(0, 2, n), 2)

    classes = {"binary": (0, 1), "multiclass": _CLASSES, "regression": ()}[task]
    return ModelSpec(
        name=name, task=task, version="v1", numeric=numeric, categorical=tuple(categorical), truth=truth,
        make_estimator=one_hot_linear, classes=classes,
        drift_defaults=tuple(f.name for f in (numeric[:1] + tuple(categorical[:1]))),
        config={"quality_window": 2000, "drift_window": 1000,
                "thresholds": {"psi": {"warning": 0.1}},
                "slo": {"latency_p99_seconds": 0.25, "availability": 99.5}},
    )
