"""Knobs of the rule generator. Production uses the defaults; tests shrink the clocks."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from modelmon.config import parse_duration


@dataclass(frozen=True)
class RuleOptions:
    """How to render the rules.

    for_override: replace every alert's `for` (e.g. "5s" for an end-to-end test whose
        Prometheus evaluates every second); None keeps the policy's durations.
    for_overrides: per-alert `for` by alert name, stronger than for_override (e.g. keep
        {"ModelmonLabelsNotArriving": "5m"} while everything else waits 5s).
    rate_window: range of the rates behind traffic, latency and version alerts and of the
        `...:rate5m`-style recording rules (their names follow it: rate_window="30s" records
        `model:modelmon_predictions:rate30s`). Error-budget windows come from policy.yml.
    min_requests: predictions needed in a window before latency and error-budget alerts may
        fire; None keeps policy.yml's guard.
    keep_firing_override: replace every alert's `keep_firing_for` ("0s" drops it); None keeps
        the policy's, except that shrunk clocks (`for_override`) drop it too, so a test's or the
        quick demo's alerts resolve as fast as they fire.
    """

    for_override: str | None = None
    for_overrides: Mapping[str, str] = field(default_factory=dict)
    rate_window: str = "5m"
    min_requests: int | None = None
    keep_firing_override: str | None = None

    def __post_init__(self) -> None:
        for name in ("for_override", "rate_window", "keep_firing_override"):
            value = getattr(self, name)
            if value is not None:
                try:
                    parse_duration(value)
                except ValueError as e:
                    raise ValueError(f"RuleOptions.{name}: {e}") from None
        for alert, value in self.for_overrides.items():
            try:
                parse_duration(value)
            except ValueError as e:
                raise ValueError(f"RuleOptions.for_overrides[{alert!r}]: {e}") from None
        if self.min_requests is not None and self.min_requests < 1:
            raise ValueError(f"RuleOptions.min_requests: must be >= 1, got {self.min_requests}")

    def pending(self, alert: str, default: str) -> str:
        """The `for` of ``alert``: its own override, else the global one, else the policy's."""
        if alert in self.for_overrides:
            return self.for_overrides[alert]
        return self.for_override if self.for_override is not None else default

    def keep(self, default: str | None) -> str | None:
        """The `keep_firing_for` of an alert whose policy says ``default`` (None: none)."""
        if self.keep_firing_override is not None:
            return None if parse_duration(self.keep_firing_override) == 0 else self.keep_firing_override
        return None if self.for_override is not None else default
