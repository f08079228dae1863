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
