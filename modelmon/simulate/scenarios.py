"""Named scenarios, and schedules of them as a timeline of traffic slots."""
from __future__ import annotations

from dataclasses import dataclass

from modelmon.config import parse_duration


@dataclass(frozen=True)
class Scenario:
    """How a scenario changes the traffic of the models it targets."""

    name: str
    description: str
    covariate_drift: bool = False  # chosen features shift; the feature -> label relation stays
    concept_drift: bool = False  # the feature -> label relation changes; features stay
    slow_share: float = 0.0  # share of requests that take the slow path (latency regression)
    error_rate: float | None = None  # None: the healthy baseline
    traffic: bool = True  # False: the model receives no requests at all
    late_labels: bool = False  # labels come much later, and fewer of them
    # Covariate shift that moves the inputs only (P(y | x) unchanged, see modelmon.simulate.shift):
    # "harmful" towards where the model errs more, "harmless" along a direction it handles equally well.
    shift: str | None = None
    delayed_labels: bool = False  # labels come days later (the simulator's delayed-label delay)
    no_labels: bool = False  # labels are withheld: no prediction of this scenario ever gets one
    # Versions: a second, candidate version of the model next to the served one. "shadow": every
    # request is also predicted by the candidate, logged with "shadow": true under the same id;
    # "canary": a share of requests is served by the candidate instead.
    rollout: str | None = None
    candidate: str | None = None  # "better" or "worse"; None: the simulator's --candidate

    def resolved(self, default_candidate: str) -> "Scenario":
        """A rollout scenario with its candidate fixed (shadow -> shadow_better, ...)."""
        if self.rollout is None or self.candidate is not None:
            return self
        return scenario(f"{self.rollout}_{default_candidate}")


CANDIDATES = ("better", "worse")


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("stable", "the healthy service: reference distribution, baseline latency and errors"),
    Scenario("covariate_drift", "chosen features shift (see --drift-features); the concept is unchanged",
             covariate_drift=True),
    Scenario("concept_drift", "the relation between features and labels changes; features do not",
             concept_drift=True),
    Scenario("latency_regression", "a fifth of requests take a slow path, p99 latency far above the SLO",
             slow_share=0.2),
    Scenario("error_burst", "a third of requests fail with status 'error' and no prediction", error_rate=0.35),
    Scenario("traffic_stop", "no predictions at all; labels of earlier predictions still arrive",
             traffic=False),
    Scenario("late_labels", "labels arrive much later as separate records, and some never arrive",
             late_labels=True),
    Scenario("covariate_shift_harmful", "inputs move towards where the model errs more (near its decision "
             "boundary; P(y|x) unchanged): real quality falls, labels arrive days later (--delayed-label-delay), "
             "so only estimated quality can see it in time", shift="harmful", delayed_labels=True),
    Scenario("covariate_shift_harmless", "inputs move along a direction the model handles equally well (one "
             "feature drifts clearly, P(y|x) unchanged): real quality stays, labels arrive days later "
             "(--delayed-label-delay); drift without harm", shift="harmless", delayed_labels=True),
    Scenario("no_labels", "the stable service, but no prediction ever gets a label (labels withheld)",
             no_labels=True),
    Scenario("shadow", "every request is also predicted by a candidate version (--candidate), logged with "
             "shadow: true under the same id", rollout="shadow"),
    Scenario("shadow_better", "shadow with a candidate retrained on a changed concept: the served version is "
             "stale (as in concept_drift), the shadow clearly better", rollout="shadow", candidate="better",
             concept_drift=True),
    Scenario("shadow_worse", "shadow with a weak candidate (a shallow decision tree): clearly worse than the "
             "served version", rollout="shadow", candidate="worse"),
    Scenario("canary", "a share of requests (--canary-share) is served by a candidate version (--candidate)",
             rollout="canary"),
    Scenario("canary_better", "canary with a candidate retrained on a changed concept: the old version is stale "
             "(as in concept_drift), the canary clearly better", rollout="canary", candidate="better",
             concept_drift=True),
    Scenario("canary_worse", "canary with a weak candidate (a shallow decision tree): clearly worse than the "
             "old version", rollout="canary", candidate="worse"),
)}


def scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})") from None


def parse_schedule(text: str) -> list[tuple[str, float]]:
    """'stable:60,concept_drift:2m' -> [('stable', 60.0), ('concept_drift', 120.0)]."""
    phases: list[tuple[str, float]] = []
    for part in text.split(","):
        name, sep, length = part.strip().partition(":")
        if not sep:
            raise ValueError(f"schedule phase {part.strip()!r}: expected NAME:SECONDS, e.g. stable:60")
        scenario(name)
        try:
            seconds = float(length)  # bare seconds
        except ValueError:
            try:
                seconds = parse_duration(length)
            except ValueError as e:
                raise ValueError(f"schedule phase {part.strip()!r}: {e}") from None
        if not 0 < seconds < float("inf"):
            raise ValueError(f"schedule phase {part.strip()!r}: duration must be positive")
        phases.append((name, seconds))
    return phases


@dataclass(frozen=True)
class Timeline:
    """Traffic as numbered slots (slot i happens at start + i / rate), each slot belonging to
    the scenario of its phase. Batch and live mode share it, so a schedule means the same in both."""

    phases: tuple[tuple[str, int], ...]  # (scenario name, slots)
    loop: bool = False

    @classmethod
    def single(cls, name: str, slots: int) -> "Timeline":
        scenario(name)
        return cls(((name, slots),))

    @classmethod
    def from_schedule(cls, phases: list[tuple[str, float]], rate: float, loop: bool = False) -> "Timeline":
        for name, _ in phases:
            scenario(name)
        return cls(tuple((name, max(1, round(seconds * rate))) for name, seconds in phases), loop)

    @property
    def total(self) -> int | None:
        """Slots in the whole timeline; None when it loops forever."""
        return None if self.loop else sum(n for _, n in self.phases)

    def segments(self, lo: int, hi: int) -> list[tuple[str, int, int]]:
        """Split slots [lo, hi) by phase: [(scenario, first, end), ...]; nothing past the end."""
        cycle = sum(n for _, n in self.phases)
        out = []
        pos = lo
        while pos < hi:
            offset = pos % cycle if self.loop else pos
            if offset >= cycle:
                break
            phase_end = 0
            for name, n in self.phases:
                phase_end += n
                if offset < phase_end:
                    end = min(hi, pos - offset + phase_end)
                    out.append((name, pos, end))
                    pos = end
                    break
        return out
