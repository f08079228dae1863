"""`modelmon simulate`: realistic prediction logs from real scikit-learn models on synthetic data.

    from modelmon.simulate import Simulator
    sim = Simulator(models=("credit",), seed=1)
    records = sim.records(n=1000, scenario="stable", start="2026-11-23T10:00:00Z")

Names are imported lazily: `modelmon --help` imports modelmon.simulate.cli, which must not pull
in scikit-learn.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Simulator": "modelmon.simulate.simulator",
    "ModelSpec": "modelmon.simulate.spec",
    "DEMO_MODELS": "modelmon.simulate.demo_models",
    "SCENARIOS": "modelmon.simulate.scenarios",
    "parse_schedule": "modelmon.simulate.scenarios",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'modelmon.simulate' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
