"""Small builders shared by the exporter tests: configs and synthetic records with known truth."""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from modelmon.config import parse_config

T0 = 1_790_000_000.0  # 2026-09-21, a fixed event time origin


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def make_config(tmp_path=None, *, quality_window=500, drift_window=300, reference=None, extra_models=(),
                exporter=None, **model_overrides):
    """A config with three small models: bin (binary), multi (multiclass), reg (regression)."""
    ref = reference or {"first": 200}
    models = [
        {"name": "bin", "task": "binary", "positive_class": 1,
         "features": {"numeric": ["x1", "x2"], "categorical": ["c"]},
         "reference": ref, "quality_window": quality_window, "drift_window": drift_window,
         "min_drift_samples": 50, **model_overrides},
        {"name": "multi", "task": "multiclass", "classes": ["a", "b", "c"],
         "features": {"numeric": ["x1"], "categorical": ["c"]},
         "reference": {"first": 200}, "quality_window": quality_window, "drift_window": drift_window,
         "min_drift_samples": 50},
        {"name": "reg", "task": "regression",
         "features": {"numeric": ["x1", "x2"]},
         "reference": {"first": 200}, "quality_window": quality_window, "drift_window": drift_window,
         "min_drift_samples": 50},
        *extra_models,
    ]
    data = {"models": models,
            "exporter": {"multivariate": {"enabled": False}, **(exporter or {})}}
    return parse_config(data, base_dir=tmp_path or ".")


def binary_records(n, seed=0, start=T0, inline_share=0.5, version="v1", shift=0.0):
    """Binary predictions (score, prediction) with labels; returns (predictions, late_label_records)."""
    rng = np.random.default_rng(seed)
    preds, labels = [], []
    for i in range(n):
        ts = start + i
        x1 = float(rng.normal(shift, 1))
        y = int(rng.random() < 1 / (1 + np.exp(-2 * x1)))
        score = float(np.clip(1 / (1 + np.exp(-2 * x1 + rng.normal(0, 0.5))), 0, 1))
        rec = {"ts": rfc3339(ts), "id": f"b-{seed}-{i}", "model": "bin", "version": version,
               "features": {"x1": x1, "x2": float(rng.normal()), "c": str(rng.choice(["de", "fr", "it"]))},
               "prediction": int(score >= 0.5), "score": score, "latency_ms": float(rng.lognormal(3, 0.3)),
               "status": "ok"}
        if rng.random() < inline_share:
            rec["label"] = y
        else:
            labels.append({"ts": rfc3339(ts + 30 + i % 50), "id": rec["id"], "model": "bin", "label": y})
        preds.append(rec)
    return preds, labels


def multiclass_records(n, seed, start):
    """Multiclass predictions of model "multi" (classes a, b, c) with scores and inline labels."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        probs = rng.dirichlet([2, 2, 2])
        pred = "abc"[int(np.argmax(probs))]
        out.append({"ts": rfc3339(start + i), "id": f"m-{seed}-{i}", "model": "multi", "version": "v1",
                    "features": {"x1": float(rng.normal()), "c": str(rng.choice(["de", "fr"]))},
                    "prediction": pred, "scores": dict(zip("abc", map(float, probs))),
                    "label": "abc"[int(rng.integers(3))], "latency_ms": 5.0})
    return out


def regression_records(n, seed, start):
    """Regression predictions of model "reg" (version v2, some x2 missing) with inline labels."""
    rng = np.random.default_rng(seed)
    return [{"ts": start + i, "id": f"r-{seed}-{i}", "model": "reg", "version": "v2",
             "features": {"x1": float(rng.normal()), "x2": None if i % 7 == 0 else float(rng.normal())},
             "prediction": float(rng.normal()), "label": float(rng.normal()), "latency_ms": 3.0}
            for i in range(n)]
