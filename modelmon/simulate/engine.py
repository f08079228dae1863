"""Turn fitted models and scenarios into prediction-log records (schema v1 dicts).

``RecordStream`` produces the records of consecutive traffic slots in event-time order. Labels
that come later than their prediction wait in a heap and are emitted once their time has come,
so a log written by one stream is ordered by ``ts`` throughout.
"""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from modelmon.simulate.delays import DelayDistribution
from modelmon.simulate.scenarios import SCENARIOS, Scenario, scenario
from modelmon.simulate.spec import FittedModel, with_missing

if TYPE_CHECKING:
    from modelmon.simulate.shift import ShiftSampler

STABLE = SCENARIOS["stable"]
LATENCY_SIGMA = 0.4  # lognormal spread of healthy latency: p99 is about 2.5x the median
SLOW_MEDIAN_MS = 600.0  # the slow path of latency_regression
SLOW_SIGMA = 0.5


@dataclass(frozen=True)
class LabelPolicy:
    """Which predictions get a ground-truth label, and when it arrives."""

    rate: float = 0.9  # share of successful predictions that ever get a label
    delay: DelayDistribution = DelayDistribution("exp", 30.0)
    inline: bool = False  # label on the prediction record instead of a later label record
    late_rate: float = 0.6  # the late_labels scenario: fewer labels ...
    late_delay: DelayDistribution = DelayDistribution("lognormal", 900.0, 1.0)  # ... much later
    # The covariate_shift_* scenarios: labels days later (the share labelled is ``rate``).
    delayed_delay: DelayDistribution = DelayDistribution("uniform", 2 * 86400.0, 5 * 86400.0)
    withhold: bool = False  # no label for any prediction, in every scenario

    def __post_init__(self) -> None:
        for name in ("rate", "late_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"label {name.replace('_', ' ')} must be between 0 and 1")


def format_ts(ms: np.ndarray) -> list[str]:
    """Epoch milliseconds -> RFC 3339 UTC strings with millisecond precision."""
    text = np.datetime_as_string(np.asarray(ms, dtype=np.int64).astype("datetime64[ms]"), unit="ms")
    return [t + "Z" for t in text.tolist()]


def _python_values(values: np.ndarray, integer: bool) -> list[Any]:
    """A numeric column as JSON-ready Python values; NaN becomes None."""
    missing = np.isnan(values)
    out = (np.where(missing, 0, values).astype(np.int64) if integer else values).tolist()
    for i in np.flatnonzero(missing).tolist():
        out[i] = None
    return out


class RecordStream:
    """Records for consecutive slots of traffic. Not thread-safe; one per output."""

    def __init__(self, models: Mapping[str, FittedModel], *, targets: frozenset[str],
                 drifted: Mapping[str, frozenset[str]], labels: LabelPolicy, rng: np.random.Generator,
                 run_tag: str, missing_rate: float, error_rate: float,
                 candidates: Callable[[str, str], FittedModel] | None = None, candidate: str = "better",
                 canary_share: float = 0.2, shifts: Callable[[str], "ShiftSampler"] | None = None):
        self.models = list(models.values())
        self.targets = targets
        self.drifted = drifted
        self.labels = labels
        self.rng = rng
        self.run_tag = run_tag
        self.missing_rate = missing_rate
        self.error_rate = error_rate
        self.candidates = candidates  # (model, "better"/"worse") -> the candidate version, for rollouts
        self.candidate = candidate  # the candidate of the plain shadow and canary scenarios
        self.canary_share = canary_share
        self.shifts = shifts  # model -> its ShiftSampler, for the covariate_shift_* scenarios
        self._heap: list[tuple[int, int, dict]] = []  # (due ms, tie-breaker, label record)
        self._seq = itertools.count()
        self._next_id = 0

    def emit(self, scenario_name: str, times_ms: np.ndarray) -> list[dict]:
        """Records for one slot per time (each slot goes to a random model), preceded by every
        pending label that is due by then."""
        scen = scenario(scenario_name).resolved(self.candidate)
        owner = self.rng.integers(len(self.models), size=len(times_ms))
        bodies: list[dict | None] = [None] * len(times_ms)
        shadows: dict[int, dict] = {}  # slot -> the shadow prediction of the same request
        later: dict[int, tuple[int, Any]] = {}  # slot -> (delay ms, label) for a later label record
        for j, fitted in enumerate(self.models):
            slots = np.flatnonzero(owner == j).tolist()
            effective = scen if fitted.spec.name in self.targets else STABLE
            if not slots or not effective.traffic:
                continue
            model_bodies, pending, model_shadows = self._model_records(fitted, effective, len(slots))
            for k, slot in enumerate(slots):
                bodies[slot] = model_bodies[k]
            for k, item in pending.items():
                later[slots[k]] = item
            for k, item in model_shadows.items():
                shadows[slots[k]] = item
        stamps = format_ts(times_ms)
        later_slots = sorted(later)
        due_ms = [int(times_ms[i]) + later[i][0] for i in later_slots]
        due = dict(zip(later_slots, zip(due_ms, format_ts(np.array(due_ms, dtype=np.int64)))))
        out: list[dict] = []
        for i, body in enumerate(bodies):
            self._pop_due(int(times_ms[i]), out)
            if body is None:
                continue
            rid = f"req-{self.run_tag}-{self._next_id:07d}"
            self._next_id += 1
            out.append({"ts": stamps[i], "id": rid, **body})
            if i in shadows:
                out.append({"ts": stamps[i], "id": rid, **shadows[i]})
            if i in due:
                due_at, stamp = due[i]
                label = {"ts": stamp, "id": rid, "model": body["model"], "label": later[i][1]}
                heapq.heappush(self._heap, (due_at, next(self._seq), label))
        return out

    def due_labels(self, until_ms: float) -> list[dict]:
        """Pending label records due at or before ``until_ms`` (all of them for +inf)."""
        out: list[dict] = []
        self._pop_due(until_ms, out)
        return out

    def _pop_due(self, t: float, out: list[dict]) -> None:
        heap = self._heap
        while heap and heap[0][0] <= t:
            out.append(heapq.heappop(heap)[2])

    def _model_records(self, fitted: FittedModel, scen: Scenario, n: int
                       ) -> tuple[list[dict], dict[int, tuple[int, Any]], dict[int, dict]]:
        """n request bodies (no ts/id yet) for one model, the later labels by position and, in the
        shadow scenarios, the candidate's shadow bodies by position."""
        spec, rng = fitted.spec, self.rng
        drifted = self.drifted[spec.name] if scen.covariate_drift else frozenset()
        if scen.shift is not None:
            if self.shifts is None:
                raise ValueError(f"scenario {scen.name!r} needs the simulator's shift samplers")
            cols = self.shifts(spec.name).sample(rng, n, scen.shift)
        else:
            cols = spec.sample(rng, n, drifted)
        truth = spec.truth(rng, cols, scen.concept_drift)
        seen = with_missing(spec, rng, cols, self.missing_rate)
        predicted, proba = fitted.predict(spec.matrix(seen))

        failed = rng.random(n) < (self.error_rate if scen.error_rate is None else scen.error_rate)
        latency = rng.lognormal(np.log(fitted.latency_ms), LATENCY_SIGMA, n)
        slow = rng.random(n) < scen.slow_share
        latency[slow] = rng.lognormal(np.log(SLOW_MEDIAN_MS), SLOW_SIGMA, int(slow.sum()))
        policy = self.labels
        rate, delay = (policy.late_rate, policy.late_delay) if scen.late_labels else (policy.rate, policy.delay)
        if scen.delayed_labels:
            delay = policy.delayed_delay
        labelled = ~failed & (rng.random(n) < rate)
        if scen.no_labels or policy.withhold:
            labelled[:] = False
        inline = policy.inline and not (scen.late_labels or scen.delayed_labels)
        delays_ms = np.round(delay.sample(rng, n) * 1000).astype(np.int64).tolist()

        names = spec.feature_names
        columns = [_python_values(seen[f.name], f.decimals == 0) for f in spec.numeric]
        columns += [np.asarray(c.values, dtype=object)[seen[c.name]].tolist() for c in spec.categorical]
        features = [dict(zip(names, row)) for row in zip(*columns)]
        latency_ms = np.round(latency, 2).tolist()
        outputs = self._outputs(fitted, predicted, proba)
        label_values = self._label_values(fitted, truth)

        # Rollouts draw from the traffic stream only here, so the other scenarios' bytes stay put.
        routed = np.zeros(n, dtype=bool)  # canary: served by the candidate
        shadowed = False
        if scen.rollout is not None:
            if self.candidates is None:
                raise ValueError(f"scenario {scen.name!r} needs candidate versions")
            candidate = self.candidates(spec.name, scen.candidate)
            c_predicted, c_proba = candidate.predict(spec.matrix(seen))
            c_outputs = self._outputs(candidate, c_predicted, c_proba)
            c_latency_ms = np.round(rng.lognormal(np.log(candidate.latency_ms), LATENCY_SIGMA, n), 2).tolist()
            c_head = {"model": spec.name, "version": candidate.version}
            if scen.rollout == "canary":
                routed = rng.random(n) < self.canary_share
            else:
                shadowed = True
                c_failed = rng.random(n) < self.error_rate
                c_head["shadow"] = True

        bodies: list[dict] = []
        later: dict[int, tuple[int, Any]] = {}
        shadows: dict[int, dict] = {}
        head = {"model": spec.name, "version": fitted.version}
        for i in range(n):
            if routed[i]:
                bodies.append(self._body(c_head, features[i], c_outputs[i], c_latency_ms[i], failed[i]))
            else:
                bodies.append(self._body(head, features[i], outputs[i], latency_ms[i], failed[i]))
            if shadowed:
                shadows[i] = self._body(c_head, features[i], c_outputs[i], c_latency_ms[i], c_failed[i])
            if failed[i] or not labelled[i]:
                continue
            if inline:  # a shadow prediction is evaluated too: it carries the request's label
                bodies[i]["label"] = label_values[i]
                if i in shadows and shadows[i]["status"] == "ok":
                    shadows[i]["label"] = label_values[i]
            else:  # one label record per request id, for the served and the shadow prediction
                later[i] = (delays_ms[i], label_values[i])
        return bodies, later, shadows

    @staticmethod
    def _body(head: dict, features: dict, outputs: dict, latency_ms: float, failed: bool) -> dict:
        if failed:
            return {**head, "features": features, "latency_ms": latency_ms, "status": "error"}
        return {**head, "features": features, **outputs, "latency_ms": latency_ms, "status": "ok"}

    @staticmethod
    def _outputs(fitted: FittedModel, predicted: np.ndarray, proba: np.ndarray | None) -> list[dict]:
        spec = fitted.spec
        if spec.task == "regression":
            return [{"prediction": p} for p in np.round(predicted, 2).tolist()]
        classes = list(spec.classes)
        labels = [classes[k] for k in predicted.tolist()]
        if spec.task == "binary":
            return [{"prediction": p, "score": s} for p, s in zip(labels, np.round(proba[:, 1], 4).tolist())]
        rounded = np.round(proba, 4).tolist()
        return [{"prediction": p, "scores": dict(zip(classes, row))} for p, row in zip(labels, rounded)]

    @staticmethod
    def _label_values(fitted: FittedModel, truth: np.ndarray) -> list[Any]:
        if fitted.spec.task == "regression":
            return np.asarray(truth, dtype=np.float64).tolist()
        classes = fitted.spec.classes
        return [classes[k] for k in truth.tolist()]
