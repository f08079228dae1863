"""Estimated performance before labels arrive: CBPE for classifiers, DLE for regression.

(Filled in by issue 13; the result type is what the collector exposes.)
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Estimate:
    """One version's estimated quality over its last quality-window's worth of predictions."""

    values: dict[str, float] = field(default_factory=dict)  # quality key -> estimated value
    stderr: dict[str, float] = field(default_factory=dict)  # quality key -> its standard error
    delta: dict[str, float] = field(default_factory=dict)  # realized - estimated on the labelled records
    delta_stderr: dict[str, float] = field(default_factory=dict)
    records: int = 0  # predictions estimated over
    labeled: int = 0  # of them labelled (the delta's sample)
