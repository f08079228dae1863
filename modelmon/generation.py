"""The generation context: what every build-time generator reads, built once per `modelmon generate`.

The rule generator and the dashboard generator receive the same context, so the numbers both
derive from the burn-rate policy (a model's burn factors scaled by its ``slo.period``) are
computed by one function: the level at which a dashboard turns red is the level at which the
page fires.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from modelmon.alerting.options import RuleOptions
from modelmon.alerting.policy import BurnWindow, Policy, load_policy
from modelmon.config import Config, ModelConfig


@dataclass(frozen=True)
class Burn:
    """One burn-rate window pair of the policy, for one model: fire while the error ratio over
    both windows exceeds ``factor`` x the error budget."""

    window: BurnWindow
    factor: Fraction  # scaled for the model's slo.period

    @property
    def severity(self) -> str:
        return self.window.severity

    @property
    def long(self) -> str:
        return self.window.long

    @property
    def short(self) -> str:
        return self.window.short


def burns(policy: Policy, m: ModelConfig) -> tuple[Burn, ...]:
    """The policy's burn windows with factors scaled to ``m``'s SLO period, as the alerts use them."""
    return tuple(Burn(b, b.factor_for(m.slo.period_days, policy.burn_reference_days)) for b in policy.burn_windows)


@dataclass(frozen=True)
class GenerationContext:
    """The config, the alerting policy and the rule options, shared by every generator."""

    config: Config
    policy: Policy = field(default_factory=load_policy)
    rules: RuleOptions = field(default_factory=RuleOptions)

    @classmethod
    def of(cls, source: "Config | GenerationContext", rules: RuleOptions | None = None) -> "GenerationContext":
        """A context for ``source``: a context as it is, a Config with the default policy and
        ``rules`` (default RuleOptions)."""
        if isinstance(source, GenerationContext):
            if rules is not None and rules != source.rules:
                raise ValueError("pass rule options in the context, not beside it")
            return source
        return cls(config=source, rules=rules if rules is not None else RuleOptions())

    def burns(self, m: ModelConfig) -> tuple[Burn, ...]:
        return burns(self.policy, m)

    def paging_burns(self, m: ModelConfig) -> tuple[Burn, ...]:
        """The burn windows that page (severity critical), fastest (highest factor) first."""
        return tuple(sorted((b for b in self.burns(m) if b.severity == "critical"), key=lambda b: -b.factor))
