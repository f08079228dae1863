"""The simulator's Python API: train the models once, then produce records, logs and references."""
from __future__ import annotations

import hashlib
import time
import zlib
from datetime import datetime
from pathlib import Path
from typing import IO, Iterable, Iterator, Sequence

import numpy as np

from modelmon.simulate.delays import DelayDistribution
from modelmon.simulate.demo_models import DEMO_MODELS
from modelmon.simulate.engine import LabelPolicy, RecordStream
from modelmon.simulate.output import config_yaml, encode_lines, reference_csv, relative_reference
from modelmon.simulate.scenarios import CANDIDATES, Timeline, parse_schedule, scenario
from modelmon.simulate.shift import ShiftSampler
from modelmon.simulate.spec import FittedModel, ModelSpec
from modelmon.simulate.wide import wide_model

DEFAULT_RATE = 50.0  # records per second, all models together
CHUNK = 2048  # slots generated per vectorised step in batch mode
MISSING_RATE = 0.005  # baseline share of missing numeric feature values
ERROR_RATE = 0.001  # baseline share of failed requests
StartTime = datetime | str | float | int | None
Schedule = str | Sequence[tuple[str, float]]


def _rng(seed: int, *keys: str) -> np.random.Generator:
    """An independent random stream per purpose, so e.g. a model's training data does not depend
    on which other models are simulated."""
    return np.random.default_rng(np.random.SeedSequence([seed, *(zlib.crc32(k.encode()) for k in keys)]))


def parse_start(start: StartTime) -> float:
    """RFC 3339 text, a datetime with a timezone, or epoch seconds -> epoch seconds."""
    if isinstance(start, (int, float)) and not isinstance(start, bool):
        return float(start)
    if isinstance(start, str):
        try:
            start = datetime.fromisoformat(start.replace("Z", "+00:00") if start.endswith("Z") else start)
        except ValueError:
            raise ValueError(f"start {start!r}: expected RFC 3339, e.g. 2026-11-23T10:00:00Z") from None
    if isinstance(start, datetime):
        if start.tzinfo is None:
            raise ValueError(f"start {start.isoformat()}: needs a timezone, e.g. a trailing Z")
        return start.timestamp()
    raise ValueError(f"start: expected RFC 3339 text, a datetime or epoch seconds, got {start!r}")


class Simulator:
    """Simulated models, trained on construction (deterministic for a seed, well under 2 s).

    ``models``: names of demo models (credit, segment, eta) and/or ``ModelSpec`` objects such as
    ``Simulator.wide_model(...)``. Scenarios apply to ``target_models`` (default: all); the other
    models stay stable. ``drift_features`` picks the features covariate_drift shifts (default: a
    pair per model); a targeted model owning none of them keeps its features unchanged.
    The rollout scenarios (shadow, canary) add a candidate version of each targeted model, trained
    when first needed: ``candidate`` ("better" or "worse") for the plain ``shadow`` and ``canary``,
    ``canary_share`` the share of requests a canary serves.
    Labels: ``label_rate`` of the successful predictions get one, ``label_delay`` later (or inline);
    the late_labels scenario uses ``late_label_rate``/``late_label_delay``, the covariate_shift_harmful
    and covariate_shift_harmless scenarios ``delayed_label_delay`` (days); ``withhold_labels`` gives no
    prediction a label at all (the no_labels scenario does so for its own phase).
    """

    wide_model = staticmethod(wide_model)

    def __init__(self, models: Iterable[str | ModelSpec] = tuple(DEMO_MODELS), seed: int = 0, *,
                 target_models: Iterable[str] | None = None, drift_features: Iterable[str] | None = None,
                 label_rate: float = 0.9, label_delay: str | DelayDistribution = "exp:30s",
                 inline_labels: bool = False, late_label_rate: float = 0.6,
                 late_label_delay: str | DelayDistribution = "lognormal:15m",
                 delayed_label_delay: str | DelayDistribution = "uniform:2d..5d", withhold_labels: bool = False,
                 missing_rate: float = MISSING_RATE, error_rate: float = ERROR_RATE,
                 candidate: str = "better", canary_share: float = 0.2):
        self.seed = int(seed)
        self.specs: dict[str, ModelSpec] = {}
        for m in models:
            spec = m if isinstance(m, ModelSpec) else self._demo(m)
            if spec.name in self.specs:
                raise ValueError(f"model {spec.name!r} given twice")
            self.specs[spec.name] = spec
        if not self.specs:
            raise ValueError("no models to simulate")
        targets = set(self.specs) if target_models is None else set(target_models)
        unknown = targets - set(self.specs)
        if unknown:
            raise ValueError(f"target model(s) {', '.join(sorted(unknown))} not simulated "
                             f"(models: {', '.join(self.specs)})")
        self.targets = frozenset(targets)
        self.drifted = self._drifted(drift_features)
        self.labels = LabelPolicy(
            rate=label_rate, delay=self._delay(label_delay), inline=inline_labels,
            late_rate=late_label_rate, late_delay=self._delay(late_label_delay),
            delayed_delay=self._delay(delayed_label_delay), withhold=bool(withhold_labels))
        if not (0 <= missing_rate < 1 and 0 <= error_rate < 1):
            raise ValueError("missing_rate and error_rate must be in [0, 1)")
        self.missing_rate = missing_rate
        self.error_rate = error_rate
        if candidate not in CANDIDATES:
            raise ValueError(f"candidate must be one of {', '.join(CANDIDATES)}, got {candidate!r}")
        if not 0 <= canary_share <= 1:
            raise ValueError(f"canary share must be between 0 and 1, got {canary_share}")
        self.default_candidate = candidate
        self.canary_share = canary_share
        self._candidates: dict[tuple[str, str], FittedModel] = {}
        self._shifts: dict[str, ShiftSampler] = {}
        self.fitted = {name: FittedModel(spec, _rng(self.seed, "train", name), missing_rate)
                       for name, spec in self.specs.items()}

    @staticmethod
    def _demo(name: str) -> ModelSpec:
        try:
            return DEMO_MODELS[name]
        except KeyError:
            raise ValueError(f"unknown model {name!r} (demo models: {', '.join(DEMO_MODELS)})") from None

    @staticmethod
    def _delay(value: str | DelayDistribution) -> DelayDistribution:
        return value if isinstance(value, DelayDistribution) else DelayDistribution.parse(value)

    def _drifted(self, features: Iterable[str] | None) -> dict[str, frozenset[str]]:
        if features is None:
            return {name: frozenset(s.drift_defaults) for name, s in self.specs.items()}
        wanted = set(features)
        owned = set().union(*(self.specs[t].feature_names for t in self.targets))
        unknown = wanted - owned
        if unknown:
            raise ValueError(f"drift feature(s) {', '.join(sorted(unknown))} belong to no target model")
        return {name: frozenset(wanted & set(s.feature_names)) for name, s in self.specs.items()}

    # ------------------------------------------------------------------ candidate versions

    def candidate(self, model: str, kind: str) -> FittedModel:
        """The candidate version of ``model`` ("better" or "worse"), trained on first use from its
        own random stream, so it does not depend on when or beside what it is first needed."""
        key = (model, kind)
        if key not in self._candidates:
            from modelmon.simulate.candidates import train_candidate

            self._candidates[key] = train_candidate(self._spec(model), kind, _rng(self.seed, "candidate", kind, model),
                                                    self.missing_rate)
        return self._candidates[key]

    def shift_sampler(self, model: str) -> ShiftSampler:
        """The sampler of the covariate_shift_* scenarios for ``model``, calibrated on first use from
        its own random stream."""
        if model not in self._shifts:
            self._shifts[model] = ShiftSampler(self.fitted[self._spec(model).name], _rng(self.seed, "shift", model))
        return self._shifts[model]

    def prepare(self, scenarios: Iterable[str]) -> None:
        """Train the candidate versions and calibrate the shift samplers these scenarios need now
        (live mode: before the clock runs)."""
        for name in scenarios:
            scen = scenario(name).resolved(self.default_candidate)
            if scen.shift is not None:
                for model in self.specs:
                    if model in self.targets:
                        self.shift_sampler(model)
            if scen.rollout is not None:
                for model in self.specs:
                    if model in self.targets:
                        self.candidate(model, scen.candidate)

    # ------------------------------------------------------------------ records

    def stream(self, start: float) -> RecordStream:
        """A record stream for a run starting at epoch seconds ``start``. Its ids carry a tag of
        seed and start, so runs appended to one log do not reuse ids."""
        tag = hashlib.blake2b(f"{self.seed}:{round(start * 1000)}".encode(), digest_size=3).hexdigest()
        return RecordStream(self.fitted, targets=self.targets, drifted=self.drifted, labels=self.labels,
                            rng=_rng(self.seed, "traffic"), run_tag=tag, missing_rate=self.missing_rate,
                            error_rate=self.error_rate, candidates=self.candidate,
                            candidate=self.default_candidate, canary_share=self.canary_share,
                            shifts=self.shift_sampler)

    def _timeline(self, n: int | None = None, scenario: str = "stable", *, rate: float = DEFAULT_RATE,
                 schedule: Schedule | None = None) -> Timeline:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        if schedule is not None:
            if n is not None:
                raise ValueError("give either a record count or a schedule, not both")
            phases = parse_schedule(schedule) if isinstance(schedule, str) else list(schedule)
            return Timeline.from_schedule(phases, rate)
        if n is None or n < 0:
            raise ValueError("give a record count n >= 0 or a schedule")
        return Timeline.single(scenario, n)

    def iter_records(self, n: int | None = None, scenario: str = "stable", *, start: StartTime = None,
                     rate: float = DEFAULT_RATE, schedule: Schedule | None = None,
                     flush_labels: bool = True) -> Iterator[dict]:
        """Batch mode: the records of ``n`` slots of traffic (or of a schedule of
        (scenario, seconds) phases), one slot every 1/rate s of event time from ``start``
        (default: so that the last slot is about now). Every slot holds one request, except in
        traffic_stop. Labels due after the last slot follow at the end unless ``flush_labels``
        is False."""
        timeline = self._timeline(n, scenario, rate=rate, schedule=schedule)
        self.prepare(name for name, _ in timeline.phases)
        total = timeline.total or 0
        t0 = time.time() - total / rate if start is None else parse_start(start)
        start_ms = round(t0 * 1000)
        stream = self.stream(start_ms / 1000)
        for name, lo, hi in timeline.segments(0, total):
            for a in range(lo, hi, CHUNK):
                slots = np.arange(a, min(hi, a + CHUNK))
                yield from stream.emit(name, start_ms + np.round(slots * 1000 / rate).astype(np.int64))
        yield from stream.due_labels(start_ms + total * 1000 / rate)
        if flush_labels:
            yield from stream.due_labels(float("inf"))

    def records(self, n: int | None = None, scenario: str = "stable", **kwargs) -> list[dict]:
        """``iter_records`` as a list."""
        return list(self.iter_records(n, scenario, **kwargs))

    def write(self, out: str | Path | IO[bytes], n: int | None = None, scenario: str = "stable",
              **kwargs) -> int:
        """Append the records of ``iter_records`` to a file (path or binary file object) as JSON
        Lines; returns the number of lines written."""
        if not isinstance(out, (str, Path)):
            return self._write_to(out, self.iter_records(n, scenario, **kwargs))
        with open(out, "ab") as fh:
            return self._write_to(fh, self.iter_records(n, scenario, **kwargs))

    @staticmethod
    def _write_to(fh: IO[bytes], records: Iterator[dict]) -> int:
        count = 0
        batch: list[dict] = []
        for rec in records:
            batch.append(rec)
            if len(batch) >= CHUNK:
                fh.write(encode_lines(batch))
                count += len(batch)
                batch.clear()
        fh.write(encode_lines(batch))
        return count + len(batch)

    # ------------------------------------------------------------------ reference data and config

    def reference_rows(self, model: str, n: int = 5000) -> list[dict]:
        """n feature rows from the model's stable distribution (no missing values)."""
        spec = self._spec(model)
        cols = spec.sample(_rng(self.seed, "reference", model), n)
        names = spec.feature_names
        columns = [cols[f.name].astype(np.int64).tolist() if f.decimals == 0 else cols[f.name].tolist()
                   for f in spec.numeric]
        columns += [[c.values[k] for k in cols[c.name].tolist()] for c in spec.categorical]
        return [dict(zip(names, row)) for row in zip(*columns)]

    def reference_labels(self, model: str, n: int = 5000) -> list:
        """The true label of each row of ``reference_rows`` (class names, or numbers for regression),
        drawn from the stable concept with a random stream of its own, so the rows do not move."""
        spec = self._spec(model)
        cols = spec.sample(_rng(self.seed, "reference", model), n)
        truth = spec.truth(_rng(self.seed, "reference-label", model), cols, False)
        return RecordStream._label_values(self.fitted[model], truth)

    def reference_csv(self, model: str, n: int = 5000) -> str:
        """The same rows as ``reference_rows``, as CSV text with about 4 significant digits, plus
        the model's outputs on them (``prediction``; ``score`` for a binary model, ``score_<class>``
        per class for a multiclass one) and the true ``label`` of each row."""
        spec = self._spec(model)
        cols = spec.sample(_rng(self.seed, "reference", model), n)
        predicted, proba = self.fitted[model].predict(spec.matrix(cols))
        return reference_csv(spec, cols, RecordStream._outputs(self.fitted[model], predicted, proba),
                             self.reference_labels(model, n))

    def write_reference(self, directory: str | Path, n: int = 5000) -> dict[str, Path]:
        """Write <model>.csv for every model into ``directory``; returns model -> path."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name in self.specs:
            paths[name] = folder / f"{name}.csv"
            paths[name].write_text(self.reference_csv(name, n))
        return paths

    def config_yaml(self, config_path: str | Path, reference_paths: dict[str, Path] | None = None,
                    reference_first: int = 5000) -> str:
        """modelmon.yaml text for the simulated models. With reference files their paths are
        written relative to ``config_path``; without, each model freezes its first records."""
        refs = {name: (relative_reference(Path(config_path), reference_paths[name]) if reference_paths
                       else {"first": reference_first}) for name in self.specs}
        return config_yaml(self.specs.values(), refs)

    def write_config(self, config_path: str | Path, reference_paths: dict[str, Path] | None = None,
                     reference_first: int = 5000) -> Path:
        path = Path(config_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.config_yaml(path, reference_paths, reference_first))
        return path

    def _spec(self, model: str) -> ModelSpec:
        try:
            return self.specs[model]
        except KeyError:
            raise ValueError(f"model {model!r} is not simulated (models: {', '.join(self.specs)})") from None
