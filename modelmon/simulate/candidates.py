"""Candidate versions for the rollout scenarios (shadow, canary): a second real scikit-learn model
of the same spec, clearly better or clearly worse than the served version.

The served demo models are within about 0.5-2 accuracy points (credit, segment) or 0.2 minutes of
MAE (eta) of the best any model can do on the stable process, so no model can be clearly better
there. The better candidate is therefore the realistic one: retrained (on twice the rows) after
the concept changed, while the served version is stale; the better scenarios play under the
changed concept (as concept_drift does). The worse candidate is a shallow decision tree trained on
the stable process: it misses the smooth effects the served model captures.
"""
from __future__ import annotations

import re

import numpy as np
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from modelmon.simulate.scenarios import CANDIDATES
from modelmon.simulate.spec import FittedModel, ModelSpec

WEAK_DEPTH = 5  # the worse candidate's tree depth
WEAK_MIN_LEAF = 20
BETTER_ROWS_FACTOR = 2  # the better candidate trains on this many times the served model's rows
LATENCY_FACTOR = {"better": 1.25, "worse": 0.5}  # median latency against the served version's


def candidate_version(spec: ModelSpec, kind: str) -> str:
    """The candidate's version label: the served one's number plus one (v3 -> v4), and for the weak
    candidate a '-lite' suffix (v4-lite), so both can appear in one log."""
    if kind not in CANDIDATES:
        raise ValueError(f"candidate must be one of {', '.join(CANDIDATES)}, got {kind!r}")
    m = re.fullmatch(r"(.*?)(\d+)", spec.version)
    base = f"{m.group(1)}{int(m.group(2)) + 1}" if m else f"{spec.version}-next"
    return base if kind == "better" else f"{base}-lite"


def train_candidate(spec: ModelSpec, kind: str, rng: np.random.Generator, missing_rate: float) -> FittedModel:
    version = candidate_version(spec, kind)
    latency = spec.latency_ms * LATENCY_FACTOR[kind]
    if kind == "better":
        return FittedModel(spec, rng, missing_rate, concept_drift=True, train_rows=spec.train_rows * BETTER_ROWS_FACTOR,
                           version=version, latency_ms=latency)
    tree = DecisionTreeRegressor if spec.task == "regression" else DecisionTreeClassifier
    return FittedModel(spec, rng, missing_rate, estimator=tree(max_depth=WEAK_DEPTH, min_samples_leaf=WEAK_MIN_LEAF,
                                                               random_state=0),
                       version=version, latency_ms=latency)
