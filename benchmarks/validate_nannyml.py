"""Validation (not a unit test): modelmon's estimated performance next to NannyML's, per chunk.

Both estimators get the same data from the simulator: the demo model's labelled reference (the rows
of examples/reference/<model>.csv for the seed) to fit on, and an analysis log of one model through
three phases (no shift, covariate_shift_harmless, covariate_shift_harmful; labels come days later
and are not shown to either estimator). The log is cut into chunks of CHUNK predictions; per chunk:

- modelmon: an Exporter in process reads the chunk's predictions, its estimation worker runs once,
  and the /metrics gauges are read (``modelmon_estimated_*`` and ``modelmon_estimated_stderr``):
  CBPE for the classifiers, DLE for the regression model, exactly as served;
- NannyML: ``nannyml.CBPE`` / ``nannyml.DLE`` fitted on the same reference, estimating the same
  chunks (its ``sampling_error`` beside the value);
- realized: scikit-learn on the revealed labels of the chunk.

NannyML is an optional dependency and never a runtime one: run this in a separate virtualenv,

    python3 -m venv /tmp/nmlvenv
    /tmp/nmlvenv/bin/pip install -e '/work/main[validation]'     # modelmon + nannyml
    /tmp/nmlvenv/bin/python benchmarks/validate_nannyml.py [--models credit,segment,eta] [--seed 0]

Figures of a run are in the README (section on estimated performance).
"""
from __future__ import annotations

import argparse
import io
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

from datetime import datetime

import numpy as np

os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")  # NannyML's usage analytics: never from here

PHASES = ("stable", "covariate_shift_harmless", "covariate_shift_harmful")
CHUNK = 2000  # predictions per chunk (the demo classifiers' quality window)
CHUNKS_PER_PHASE = 3
RATE = 50.0
KEYS = {"binary": ("accuracy", "roc_auc"), "multiclass": ("accuracy", "f1"), "regression": ("mae", "rmse")}


def _pandas():
    import pandas as pd

    try:  # pandas 3 stores text as Arrow strings, which NannyML 0.13's DLE cannot reshape: plain objects
        pd.set_option("future.infer_string", False)
    except (KeyError, ValueError, pd.errors.OptionError):
        pass
    return pd


def reference_frame(sim, model: str):
    """The labelled reference the exporter reads (the simulator's reference CSV), as a DataFrame."""
    pd = _pandas()

    return pd.read_csv(io.StringIO(sim.reference_csv(model, 5000)))


SLOTS_PER_PHASE = math.ceil(CHUNK * CHUNKS_PER_PHASE * 1.01)  # a few requests fail: enough ok predictions


def analysis(sim, model: str, start: float) -> tuple[list[tuple[str, list[dict]]], dict[str, object]]:
    """Chunks of (phase, ok predictions) of one model through the phases, and the labels revealed
    later (id -> label)."""
    schedule = [(p, SLOTS_PER_PHASE / RATE) for p in PHASES]
    records = sim.records(start=start, rate=RATE, schedule=schedule)
    labels = {r["id"]: r["label"] for r in records if "features" not in r and "label" in r}
    start_ms = round(start * 1000)
    by_phase: dict[int, list[dict]] = {}
    for r in records:
        if "features" in r and r.get("status") == "ok":
            ts = datetime.fromisoformat(r["ts"].replace("Z", "+00:00")).timestamp()
            slot = round((ts * 1000 - start_ms) * RATE / 1000)
            by_phase.setdefault(slot // SLOTS_PER_PHASE, []).append(r)
    chunks = []
    for i, phase in enumerate(PHASES):
        preds = by_phase.get(i, [])
        chunks += [(phase, preds[k * CHUNK:(k + 1) * CHUNK]) for k in range(CHUNKS_PER_PHASE)]
    return chunks, labels


def realized(task: str, spec, preds: list[dict], labels: dict) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, mean_squared_error, roc_auc_score

    rows = [r for r in preds if r["id"] in labels]
    y = [labels[r["id"]] for r in rows]
    p = [r["prediction"] for r in rows]
    if task == "regression":
        return {"mae": mean_absolute_error(y, p), "rmse": float(np.sqrt(mean_squared_error(y, p)))}
    if task == "binary":
        return {"accuracy": accuracy_score(y, p),
                "roc_auc": roc_auc_score(np.array(y) == spec.positive_class, [r["score"] for r in rows])}
    return {"accuracy": accuracy_score(y, p), "f1": f1_score(y, p, average="macro")}


def modelmon_estimates(config_path: Path, model: str, version: str, task: str, chunk: list[dict]) -> dict:
    """(value, stderr) per key from a fresh exporter that read this chunk's predictions."""
    import orjson
    from prometheus_client import CollectorRegistry

    from modelmon import contract
    from modelmon.config import load_config
    from modelmon.exporter.collector import ExporterCollector
    from modelmon.exporter.pipeline import Exporter

    ex = Exporter(load_config(config_path))
    ex.load_references()
    lines = [orjson.dumps(r) for r in chunk]
    for i in range(0, len(lines), 1000):
        ex.ingest_lines(lines[i:i + 1000], "file")
    ex.refresh(force=True)
    ex.run_estimation(seed=0)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(ExporterCollector(ex))
    out = {}
    for key in KEYS[task]:
        labels = {"model": model, "version": version}
        value = reg.get_sample_value(contract.estimated_name(key), labels)
        se = reg.get_sample_value("modelmon_estimated_stderr", {**labels, "quantity": key})
        out[key] = (value, se)
    return out


def nannyml_estimates(spec, reference, chunks: list[list[dict]]) -> list[dict]:
    """(value, sampling error) per key and chunk from NannyML's CBPE or DLE fitted on the reference."""
    import nannyml as nml

    pd = _pandas()

    task = spec.task
    features = list(spec.feature_names)
    rows = []
    for k, chunk in enumerate(chunks):
        for r in chunk:
            row = {"chunk": k, **{f: r["features"].get(f) for f in features}, "prediction": r["prediction"]}
            if task == "binary":
                row["score"] = r["score"]
            elif task == "multiclass":
                row.update({f"score_{c}": r["scores"][c] for c in spec.classes})
            rows.append(row)
    data = pd.DataFrame(rows)
    ref = reference.copy()
    if task == "regression":
        for c in spec.categorical_names:  # LightGBM: categorical features as pandas categories
            cats = sorted(set(ref[c]) | set(data[c].dropna()))
            ref[c] = pd.Categorical(ref[c], categories=cats)
            data[c] = pd.Categorical(data[c], categories=cats)
        est = nml.DLE(feature_column_names=features, y_pred="prediction", y_true="label", metrics=["mae", "rmse"],
                      chunk_size=CHUNK, tune_hyperparameters=False, hyperparameters={"verbosity": -1})
    elif task == "binary":
        ref = ref.assign(label=(ref["label"] == spec.positive_class).astype(int),
                         prediction=(ref["prediction"] == spec.positive_class).astype(int))
        data = data.assign(prediction=(data["prediction"] == spec.positive_class).astype(int))
        est = nml.CBPE(y_pred_proba="score", y_pred="prediction", y_true="label", metrics=["accuracy", "roc_auc"],
                       chunk_size=CHUNK, problem_type="classification_binary")
    else:
        est = nml.CBPE(y_pred_proba={c: f"score_{c}" for c in spec.classes}, y_pred="prediction", y_true="label",
                       metrics=["accuracy", "f1"], chunk_size=CHUNK, problem_type="classification_multiclass")
    est.fit(ref)
    out: list[dict] = []
    for k in range(len(chunks)):  # one estimate call per chunk: the chunks are ours, not NannyML's cut
        res = est.estimate(data[data["chunk"] == k].drop(columns="chunk")).to_df()
        if ("chunk", "period") in res.columns:
            res = res[res[("chunk", "period")] == "analysis"]
        out.append({key: (float(res[(key, "value")].iloc[0]), float(res[(key, "sampling_error")].iloc[0]))
                    for key in KEYS[task]})
    return out


def run(model: str, seed: int) -> list[dict]:
    from modelmon.simulate import Simulator

    sim = Simulator(models=(model,), seed=seed, label_rate=1.0)
    spec = sim.specs[model]
    tmp = Path(tempfile.mkdtemp(prefix="validate-nannyml-"))
    config_path = sim.write_config(tmp / "modelmon.yaml", sim.write_reference(tmp / "ref", 5000))
    start = time.time() - SLOTS_PER_PHASE * len(PHASES) / RATE - 60
    phased, labels = analysis(sim, model, float(round(start)))
    chunks = [c for _, c in phased]
    nml_out = nannyml_estimates(spec, reference_frame(sim, model), chunks)
    rows = []
    for k, (phase, chunk) in enumerate(phased):
        mm = modelmon_estimates(config_path, model, sim.fitted[model].version, spec.task, chunk)
        rows.append({"model": model, "chunk": k, "phase": phase, "realized": realized(spec.task, spec, chunk, labels),
                     "modelmon": mm, "nannyml": nml_out[k]})
    return rows


def report(rows: list[dict]) -> str:
    lines = []
    header = (f"{'model':8} {'chunk':>5} {'phase':26} {'metric':9} {'realized':>9} "
              f"{'modelmon':>9} {'±SE':>7} {'NannyML':>9} {'±SE':>7} {'mm err':>7} {'nml err':>7}")
    lines += [header, "-" * len(header)]
    errors: dict[tuple[str, str, str], list[float]] = {}
    for r in rows:
        for key, real in r["realized"].items():
            mv, ms = r["modelmon"][key]
            nv, ns = r["nannyml"][key]
            lines.append(f"{r['model']:8} {r['chunk']:>5} {r['phase']:26} {key:9} {real:9.4f} "
                         f"{mv if mv is not None else float('nan'):9.4f} {ms if ms is not None else float('nan'):7.4f} "
                         f"{nv:9.4f} {ns:7.4f} {(mv or np.nan) - real:+7.4f} {nv - real:+7.4f}")
            errors.setdefault((r["model"], key, "modelmon"), []).append(abs((mv if mv is not None else np.nan) - real))
            errors.setdefault((r["model"], key, "nannyml"), []).append(abs(nv - real))
    lines += ["", "mean |estimated - realized| over the chunks:"]
    for (model, key, who), errs in sorted(errors.items()):
        lines.append(f"  {model:8} {key:9} {who:9} {np.nanmean(errs):.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="credit,segment,eta")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        import nannyml  # noqa: F401
    except ImportError:
        print("validate_nannyml: nannyml is not installed (pip install 'modelmon[validation]' in a separate venv)",
              file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore")
    rows = []
    for model in args.models.split(","):
        t = time.perf_counter()
        rows += run(model.strip(), args.seed)
        print(f"{model}: {time.perf_counter() - t:.1f}s", file=sys.stderr)
    print(report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
