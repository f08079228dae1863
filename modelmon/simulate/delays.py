"""Label-delay distributions: how long after a prediction its ground truth arrives."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelmon.config import parse_duration


@dataclass(frozen=True)
class DelayDistribution:
    """Label delay in seconds. Spec forms: '30s' or 'exp:30s' (exponential, that mean),
    'fixed:30s', 'uniform:10s..5m', 'lognormal:15m' or 'lognormal:15m:0.8' (median, sigma)."""

    kind: str
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, text: str) -> "DelayDistribution":
        kind, sep, rest = text.partition(":")
        if not sep:
            kind, rest = "exp", text
        try:
            if kind in ("exp", "fixed"):
                return cls(kind, parse_duration(rest))
            if kind == "uniform":
                lo, dots, hi = rest.partition("..")
                if not dots:
                    raise ValueError("expected uniform:LOW..HIGH")
                low, high = parse_duration(lo), parse_duration(hi)
                if high < low:
                    raise ValueError("HIGH must not be below LOW")
                return cls(kind, low, high)
            if kind == "lognormal":
                median, _, sigma = rest.partition(":")
                return cls(kind, parse_duration(median), float(sigma) if sigma else 1.0)
        except ValueError as e:
            raise ValueError(f"label delay {text!r}: {e}") from None
        raise ValueError(f"label delay {text!r}: expected exp:MEAN, fixed:D, uniform:LOW..HIGH "
                         f"or lognormal:MEDIAN[:SIGMA], e.g. 'exp:30s'")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.kind == "exp":
            return rng.exponential(self.a, n)
        if self.kind == "fixed":
            return np.full(n, self.a)
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b, n)
        return self.a * np.exp(rng.normal(0.0, self.b, n))
