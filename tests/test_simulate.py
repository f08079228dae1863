"""The simulator: determinism, schema v1, model quality per scenario, drift, labels, CLI, files."""
from __future__ import annotations

import argparse
import io
import json
from datetime import datetime
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, roc_auc_score

from modelmon.config import load_config
from modelmon.simulate import SCENARIOS, Simulator, cli
from modelmon.simulate.delays import DelayDistribution
from modelmon.simulate.live import run_live
from modelmon.simulate.scenarios import Timeline, parse_schedule

ROOT = Path(__file__).resolve().parent.parent
START = "2026-11-23T10:00:00Z"
START_S = datetime.fromisoformat("2026-11-23T10:00:00+00:00").timestamp()
RATE = 50.0

SCHEMA = {  # prediction log schema v1 (DESIGN.md), as strict as the simulator promises to be
    "oneOf": [
        {
            "type": "object",
            "required": ["ts", "id", "model", "version", "features", "latency_ms", "status"],
            "additionalProperties": False,
            "properties": {
                "ts": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"},
                "id": {"type": "string", "minLength": 1},
                "model": {"enum": ["credit", "segment", "eta"]},
                "version": {"type": "string"},
                "shadow": {"type": "boolean"},  # predicted on live traffic but not served (issue 10)
                "features": {"type": "object", "additionalProperties": {"type": ["number", "string", "null"]}},
                "prediction": {"type": ["number", "string"]},
                "score": {"type": "number", "minimum": 0, "maximum": 1},
                "scores": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1}},
                "latency_ms": {"type": "number", "exclusiveMinimum": 0},
                "status": {"enum": ["ok", "error"]},
                "label": {"type": ["number", "string"]},
            },
            "if": {"properties": {"status": {"const": "ok"}}},
            "then": {"required": ["prediction"]},
            "else": {"not": {"anyOf": [{"required": ["prediction"]}, {"required": ["label"]}]}},
        },
        {
            "type": "object",
            "required": ["ts", "id", "model", "label"],
            "additionalProperties": False,
            "properties": {
                "ts": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"},
                "id": {"type": "string"},
                "model": {"enum": ["credit", "segment", "eta"]},
                "label": {"type": ["number", "string"]},
            },
        },
    ]
}


def epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def predictions(records: list[dict], model: str | None = None) -> list[dict]:
    return [r for r in records if "status" in r and (model is None or r["model"] == model)]


def label_records(records: list[dict]) -> list[dict]:
    return [r for r in records if "status" not in r]


def joined(records: list[dict], model: str) -> tuple[list[dict], list]:
    """Successful predictions of a model that got a label (inline or later, joined by id)."""
    late = {(r["model"], r["id"]): r["label"] for r in label_records(records)}
    preds, labels = [], []
    for r in predictions(records, model):
        label = r.get("label", late.get((model, r["id"])))
        if r["status"] == "ok" and label is not None:
            preds.append(r)
            labels.append(label)
    return preds, labels


def quality(records: list[dict], model: str) -> dict[str, float]:
    preds, y = joined(records, model)
    assert len(preds) > 300, f"too few labelled {model} predictions to judge quality"
    p = [r["prediction"] for r in preds]
    if model == "credit":
        return {"accuracy": accuracy_score(y, p), "roc_auc": roc_auc_score(y, [r["score"] for r in preds])}
    if model == "segment":
        return {"accuracy": accuracy_score(y, p), "f1": f1_score(y, p, average="macro")}
    return {"mae": mean_absolute_error(y, p)}


def feature_values(records: list[dict], model: str, feature: str) -> list:
    return [r["features"][feature] for r in predictions(records, model) if r["features"][feature] is not None]


def drift_pvalue(sim: Simulator, records: list[dict], model: str, feature: str) -> float:
    """KS test (numeric) or chi-square test (categorical) of the log against the reference."""
    spec = sim.specs[model]
    current = feature_values(records, model, feature)
    reference = [row[feature] for row in sim.reference_rows(model, 5000)]
    if feature in spec.numeric_names:
        return stats.ks_2samp(reference, current).pvalue
    values = sorted(set(reference) | set(current))
    table = [[reference.count(v) for v in values], [current.count(v) for v in values]]
    return stats.chi2_contingency(table).pvalue


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


@pytest.fixture(scope="module")
def demo_config():
    return load_config(ROOT / "modelmon.yaml")


@pytest.fixture(scope="module")
def sim() -> Simulator:
    return Simulator(seed=0)


@pytest.fixture(scope="module")
def credit_only_targets() -> Simulator:
    """All demo models; scenarios hit credit only."""
    return Simulator(seed=5, target_models=["credit"])


@pytest.fixture(scope="module")
def stable(sim) -> list[dict]:
    return sim.records(n=9000, scenario="stable", start=START, rate=RATE)


# --------------------------------------------------------------------------- determinism and schema


def test_same_seed_and_arguments_give_identical_bytes(tmp_path, sim):
    other = Simulator(seed=0)
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    schedule = "stable:20,covariate_drift:10,late_labels:10"
    assert sim.write(a, start=START, schedule=schedule) == other.write(b, start=START, schedule=schedule)
    assert a.read_bytes() == b.read_bytes()
    Simulator(seed=1).write(c, start=START, schedule=schedule)
    assert a.read_bytes() != c.read_bytes()
    # appending a second run keeps the first intact and uses fresh ids
    sim.write(a, 200, start="2026-11-23T11:00:00Z")
    lines = a.read_bytes().splitlines(keepends=True)
    assert b"".join(lines[: len(b.read_bytes().splitlines())]) == b.read_bytes()
    ids = [json.loads(line)["id"] for line in lines if b'"status"' in line]
    assert len(ids) == len(set(ids))


def test_training_does_not_depend_on_the_other_models():
    alone = Simulator(models=["eta"], seed=3)
    together = Simulator(seed=3)
    rows = together.specs["eta"].matrix(together.specs["eta"].sample(np.random.default_rng(0), 50))
    np.testing.assert_array_equal(alone.fitted["eta"].predict(rows)[0], together.fitted["eta"].predict(rows)[0])


def test_every_line_follows_schema_v1_and_event_time_order(sim):
    records = sim.records(start=START, schedule=",".join(f"{name}:8" for name in SCENARIOS))
    assert len(records) > 1500
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for rec in records:
        validator.validate(json.loads(json.dumps(rec)))
    times = [epoch(r["ts"]) for r in records]
    assert times == sorted(times)
    spec_classes = {m: set(sim.specs[m].classes) for m in ("credit", "segment")}
    for r in predictions(records):
        assert set(r["features"]) == set(sim.specs[r["model"]].feature_names)
        if r["status"] != "ok":
            continue
        if r["model"] == "credit":
            assert r["prediction"] in spec_classes["credit"] and r["prediction"] == int(r["score"] >= 0.5)
        elif r["model"] == "segment":
            assert r["prediction"] in spec_classes["segment"] and set(r["scores"]) == spec_classes["segment"]
            assert sum(r["scores"].values()) == pytest.approx(1, abs=1e-3)
            assert r["prediction"] == max(r["scores"], key=r["scores"].get)
        else:
            assert isinstance(r["prediction"], float)


def test_batch_timestamps_are_spaced_by_rate_and_default_to_ending_now(sim):
    records = predictions(sim.records(n=100, start=START, rate=10, flush_labels=False))
    times = [epoch(r["ts"]) for r in records]
    assert times[0] == START_S and times[-1] == pytest.approx(START_S + 9.9)
    assert np.allclose(np.diff(times), 0.1)
    recent = predictions(sim.records(n=100, rate=10))
    assert epoch(recent[-1]["ts"]) == pytest.approx(datetime.now().timestamp(), abs=5)


# --------------------------------------------------------------------------- quality per scenario


def test_stable_quality_is_realistic_and_healthy(stable, demo_config):
    q = {m: quality(stable, m) for m in ("credit", "segment", "eta")}
    assert 0.83 <= q["credit"]["accuracy"] <= 0.92
    assert 0.75 <= q["segment"]["accuracy"] <= 0.88
    assert 1.5 <= q["eta"]["mae"] <= 4.5
    for model, values in q.items():
        thresholds = demo_config.model(model).thresholds
        for metric, value in values.items():
            warning = thresholds[metric].warning
            if thresholds[metric].direction == "below":
                assert value >= warning + 0.05, (model, metric, value)
            else:
                assert value <= warning * 0.75, (model, metric, value)


def test_concept_drift_breaks_quality_past_critical_but_not_the_features(sim, demo_config):
    records = sim.records(n=9000, scenario="concept_drift", start=START)
    for model in ("credit", "segment", "eta"):
        thresholds = demo_config.model(model).thresholds
        for metric, value in quality(records, model).items():
            critical = thresholds[metric].critical
            worse = value < critical if thresholds[metric].direction == "below" else value > critical
            assert worse, f"{model} {metric}={value:.3f} under concept drift, critical {critical}"
    for feature in ("income", "debt_ratio", "country"):
        assert drift_pvalue(sim, records, "credit", feature) > 0.01


def test_healthy_latency_meets_the_slo_and_regression_breaks_it(stable, credit_only_targets, demo_config):
    for model in ("credit", "segment", "eta"):
        slo_ms = demo_config.model(model).slo.latency_p99_seconds * 1000
        latencies = [r["latency_ms"] for r in predictions(stable, model)]
        assert 5 < percentile(latencies, 50) < 45
        assert percentile(latencies, 99) < slo_ms * 0.5
    slow = credit_only_targets.records(n=4000, scenario="latency_regression", start=START)
    credit_slo_ms = demo_config.model("credit").slo.latency_p99_seconds * 1000
    assert percentile([r["latency_ms"] for r in predictions(slow, "credit")], 99) > 2 * credit_slo_ms
    assert percentile([r["latency_ms"] for r in predictions(slow, "eta")], 99) < 100  # not targeted


def test_error_burst_fails_a_third_of_requests(stable, credit_only_targets):
    baseline = [r["status"] for r in predictions(stable)]
    assert baseline.count("error") / len(baseline) < 0.004
    burst = credit_only_targets.records(n=4000, scenario="error_burst", start=START)
    credit = predictions(burst, "credit")
    share = sum(r["status"] == "error" for r in credit) / len(credit)
    assert 0.3 <= share <= 0.4
    assert all("prediction" not in r and "score" not in r for r in credit if r["status"] == "error")
    errored = {r["id"] for r in credit if r["status"] == "error"}
    assert not errored & {r["id"] for r in label_records(burst)}
    segment = [r["status"] for r in predictions(burst, "segment")]
    assert segment.count("error") / len(segment) < 0.01


# --------------------------------------------------------------------------- drift


def test_covariate_drift_shifts_exactly_the_default_features(sim):
    records = sim.records(n=9000, scenario="covariate_drift", start=START)
    for model, spec in sim.specs.items():
        for feature in spec.feature_names:
            p = drift_pvalue(sim, records, model, feature)
            if feature in spec.drift_defaults:
                assert p < 1e-6, f"{model}.{feature} should drift (p={p:.3g})"
            else:
                assert p > 0.01, f"{model}.{feature} should not drift (p={p:.3g})"


def test_covariate_drift_of_chosen_features_on_chosen_models():
    sim = Simulator(seed=2, target_models=["credit"], drift_features=["age", "channel"])
    records = sim.records(n=6000, scenario="covariate_drift", start=START)
    for model, spec in sim.specs.items():
        for feature in spec.feature_names:
            p = drift_pvalue(sim, records, model, feature)
            drifted = model == "credit" and feature in ("age", "channel")
            assert (p < 1e-6) if drifted else (p > 0.01), (model, feature, p)
    assert quality(records, "credit")["accuracy"] > 0.8  # the concept holds, so the model copes


def test_missing_values_are_rare_and_numeric_only(stable, sim):
    credit = predictions(stable, "credit")
    for feature in sim.specs["credit"].numeric_names:
        share = sum(r["features"][feature] is None for r in credit) / len(credit)
        assert 0 < share < 0.015
    assert all(r["features"]["country"] is not None for r in credit)


# --------------------------------------------------------------------------- labels and traffic


def test_default_labels_are_later_records_for_most_predictions(stable):
    ok = [r for r in predictions(stable) if r["status"] == "ok"]
    labels = label_records(stable)
    assert not any("label" in r for r in ok)
    assert 0.87 <= len(labels) / len(ok) <= 0.93
    when = {r["id"]: epoch(r["ts"]) for r in ok}
    delays = [epoch(r["ts"]) - when[r["id"]] for r in labels]
    assert min(delays) >= 0 and 20 < np.mean(delays) < 40  # exponential, mean 30 s


def test_inline_labels_ride_on_the_prediction():
    records = Simulator(models=["segment"], seed=4, inline_labels=True, label_rate=1.0).records(n=500, start=START)
    assert not label_records(records)
    assert all("label" in r for r in predictions(records) if r["status"] == "ok")
    assert quality(records, "segment")["accuracy"] > 0.75


def test_late_labels_arrive_after_their_predictions_or_never(credit_only_targets):
    records = credit_only_targets.records(n=6000, scenario="late_labels", start=START)
    position = {(r["model"], r["id"]): i for i, r in enumerate(records) if "status" in r}
    ts = {(r["model"], r["id"]): epoch(r["ts"]) for r in predictions(records)}
    ok_credit = [r for r in predictions(records, "credit") if r["status"] == "ok"]
    credit_labels = [r for r in label_records(records) if r["model"] == "credit"]
    assert 0.55 <= len(credit_labels) / len(ok_credit) <= 0.65  # some never arrive
    delays = []
    for i, r in enumerate(records):
        if "status" not in r:
            key = (r["model"], r["id"])
            assert position[key] < i and ts[key] <= epoch(r["ts"])
            if r["model"] == "credit":
                delays.append(epoch(r["ts"]) - ts[key])
    assert 600 < np.median(delays) < 1350  # lognormal, median 15 min
    segment_ok = [r for r in predictions(records, "segment") if r["status"] == "ok"]
    segment_labels = [r for r in label_records(records) if r["model"] == "segment"]
    assert len(segment_labels) / len(segment_ok) > 0.85  # not targeted


def test_covariate_shift_harmful_hurts_and_harmless_does_not_with_labels_days_later():
    """Issue 13: both shifts move the inputs only; the harmful one pushes the classifiers towards their
    decision boundary (real quality falls past the warning thresholds), the harmless one tilts a
    feature the models handle equally well (it drifts clearly, quality stays). Labels come days later."""
    sim = Simulator(seed=5, label_rate=1.0)
    stable = sim.records(n=9000, start=START)
    harmful = sim.records(n=9000, scenario="covariate_shift_harmful", start=START)
    harmless = sim.records(n=9000, scenario="covariate_shift_harmless", start=START)
    base = {m: quality(stable, m) for m in ("credit", "segment", "eta")}
    hurt = {m: quality(harmful, m) for m in ("credit", "segment", "eta")}
    kept = {m: quality(harmless, m) for m in ("credit", "segment", "eta")}
    assert hurt["credit"]["accuracy"] < 0.75 < 0.83 < base["credit"]["accuracy"]  # past critical
    assert hurt["segment"]["accuracy"] < 0.70 < 0.78 < base["segment"]["accuracy"]  # past warning
    for m in ("credit", "segment"):
        assert abs(kept[m]["accuracy"] - base[m]["accuracy"]) < 0.03, m
    assert abs(kept["eta"]["mae"] - base["eta"]["mae"]) < 0.3 and abs(hurt["eta"]["mae"] - base["eta"]["mae"]) < 0.5
    for m in ("credit", "segment", "eta"):  # the harmless shift is real drift of the tilted feature
        feature = sim.specs[m].shift_feature
        before, after = feature_values(stable, m, feature), feature_values(harmless, m, feature)
        assert stats.ks_2samp(before, after).pvalue < 1e-20
        assert np.mean(after) > np.mean(before) + 0.5 * np.std(before), m
    # The harmful shift's inputs sit nearer the boundary: the credit scores crowd around 0.5.
    scores = [r["score"] for r in predictions(harmful, "credit") if r["status"] == "ok"]
    base_scores = [r["score"] for r in predictions(stable, "credit") if r["status"] == "ok"]
    assert np.mean(np.abs(np.array(scores) - 0.5)) < 0.6 * np.mean(np.abs(np.array(base_scores) - 0.5))
    # Labels of the shifted predictions: every one, as later records, 2 to 5 days after the prediction.
    when = {r["id"]: epoch(r["ts"]) for r in predictions(harmful)}
    delays = np.array([epoch(r["ts"]) - when[r["id"]] for r in label_records(harmful)])
    assert not any("label" in r for r in predictions(harmful))
    assert len(delays) == sum(r["status"] == "ok" for r in predictions(harmful))
    assert delays.min() >= 2 * 86400 and delays.max() <= 5 * 86400


def test_covariate_shift_is_deterministic_and_keeps_other_scenarios_bytes():
    a = Simulator(seed=2).records(n=600, scenario="covariate_shift_harmless", start=START)
    b = Simulator(seed=2).records(n=600, scenario="covariate_shift_harmless", start=START)
    assert a == b
    # A schedule without the new scenarios is the same traffic as before they existed: the golden replay
    # log (tests/fixtures/replay.jsonl, committed) is still what the simulator writes.
    from test_golden_metrics import LOG, RATE as REPLAY_RATE, SCHEDULE, SEED, START as REPLAY_START

    buf = io.BytesIO()
    Simulator(seed=SEED).write(buf, start=REPLAY_START, schedule=SCHEDULE, rate=REPLAY_RATE)
    assert LOG.read_bytes().startswith(buf.getvalue())


def test_labels_withheld_by_scenario_or_for_the_whole_run(tmp_path):
    sim = Simulator(models=["credit"], seed=1)
    records = sim.records(start=START, rate=RATE, schedule="stable:20,no_labels:20")
    labelled = {r["id"] for r in label_records(records)}
    first = [r for r in predictions(records) if epoch(r["ts"]) < START_S + 20 and r["status"] == "ok"]
    second = [r for r in predictions(records) if epoch(r["ts"]) >= START_S + 20]
    assert len({r["id"] for r in first} & labelled) > 0.8 * len(first)
    assert second and not ({r["id"] for r in second} & labelled)
    withheld = Simulator(models=["credit"], seed=1, withhold_labels=True, inline_labels=True)
    records = withheld.records(start=START, rate=RATE, schedule="stable:10,covariate_shift_harmful:10")
    assert not label_records(records) and not any("label" in r for r in records)
    # The CLI: --no-labels withholds them all; --delayed-label-delay sets the shifted phases' delay.
    log = tmp_path / "shift.jsonl"
    assert _cli(["--out", str(log), "--models", "credit", "--records", "300", "--start", START,
                 "--scenario", "covariate_shift_harmful", "--delayed-label-delay", "fixed:1d"]) == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    when = {r["id"]: epoch(r["ts"]) for r in predictions(records)}
    assert {epoch(r["ts"]) - when[r["id"]] for r in label_records(records)} == {86400.0}
    log.write_text("")
    assert _cli(["--out", str(log), "--models", "credit", "--records", "300", "--start", START, "--no-labels"]) == 0
    assert not label_records([json.loads(line) for line in log.read_text().splitlines()])


def test_help_lists_every_scenario_with_what_it_does(capsys):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    text = parser.format_help()
    for name in SCENARIOS:
        assert f"  {name} " in text
    assert "covariate_shift_harmful" in text and "decision" in text and "--no-labels" in text


def test_traffic_stop_writes_nothing_but_due_labels(sim):
    records = sim.records(start=START, rate=RATE, schedule="stable:30,traffic_stop:30,stable:30")
    times = [(epoch(r["ts"]) - START_S, "status" in r) for r in records]
    assert not [t for t, is_prediction in times if 30 <= t < 60 and is_prediction]
    assert [t for t, is_prediction in times if 30 <= t < 60 and not is_prediction]  # labels still come
    assert sum(1 for t, p in times if p and t >= 60) == pytest.approx(1500, abs=2)


def test_traffic_stop_of_one_model_keeps_the_others_flowing(credit_only_targets):
    records = credit_only_targets.records(n=3000, scenario="traffic_stop", start=START)
    assert not predictions(records, "credit")
    assert len(predictions(records, "segment")) > 800


def test_live_mode_writes_in_real_time_with_a_fake_clock(sim):
    clock = [1_800_000_000.0]

    def sleep(seconds: float) -> None:
        clock[0] += max(seconds, 0.001)

    out = io.BytesIO()
    timeline = Timeline.from_schedule(parse_schedule("stable:2,traffic_stop:2"), 20, loop=True)
    lines = run_live(sim, timeline, out, 20, duration=10, clock=lambda: clock[0], sleep=sleep)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(records) == lines
    offsets = [epoch(r["ts"]) - 1_800_000_000.0 for r in predictions(records)]
    assert len(offsets) == 120  # 3 stable phases of 2 s at 20/s within 10 s
    assert not [t for t in offsets if 2 <= t < 4 or 6 <= t < 8]
    assert all(epoch(r["ts"]) <= clock[0] for r in records)
    times = [epoch(r["ts"]) for r in records]
    assert times == sorted(times)


# --------------------------------------------------------------------------- files and CLI


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(argv))


def test_committed_reference_files_match_the_config_and_seed_zero(sim, demo_config):
    for model in demo_config.models:
        path = ROOT / "examples" / "reference" / f"{model.name}.csv"
        assert model.reference.path.resolve() == path.resolve()
        text = path.read_text()
        header, *rows = text.splitlines()
        outputs = ["prediction", "score"] if model.task == "binary" else ["prediction"]
        if model.task == "multiclass":
            outputs += [f"score_{c}" for c in model.classes]
        assert header.split(",") == [*model.features, *outputs, "label"]
        assert len(rows) == 5000
        assert text == sim.reference_csv(model.name, 5000), f"{path} is stale: regenerate with seed 0"


def _csv_columns(text: str) -> dict[str, list[str]]:
    header, *rows = [line.split(",") for line in text.splitlines()]
    return {name: [r[i] for r in rows] for i, name in enumerate(header)}


def test_reference_labels_give_the_stable_quality_and_scores_sum_to_one(sim):
    """The reference's labels come from the stable concept: the model's quality on them is its stable
    quality (as in test_stable_quality_is_realistic_and_healthy); per-class scores are probabilities."""
    credit = _csv_columns(sim.reference_csv("credit", 5000))
    assert 0.8 < accuracy_score(credit["label"], credit["prediction"]) < 0.95
    assert 0.85 < roc_auc_score(np.array(credit["label"], int), np.array(credit["score"], float)) < 0.98
    segment = _csv_columns(sim.reference_csv("segment", 5000))
    assert 0.7 < accuracy_score(segment["label"], segment["prediction"]) < 0.95
    classes = sim.specs["segment"].classes
    scores = np.column_stack([np.array(segment[f"score_{c}"], float) for c in classes])
    assert np.allclose(scores.sum(axis=1), 1, atol=2e-3)
    assert (np.array(segment["prediction"]) == np.array(classes)[scores.argmax(axis=1)]).all()
    eta = _csv_columns(sim.reference_csv("eta", 5000))
    assert 2 < mean_absolute_error(np.array(eta["label"], float), np.array(eta["prediction"], float)) < 4
    # The rows are those of reference_rows: the labels are drawn apart, the feature rows do not move.
    rows = sim.reference_rows("credit", 5000)
    assert [int(v) for v in credit["age"]] == [r["age"] for r in rows]


def test_demo_models_match_the_repo_config(sim, demo_config):
    assert list(sim.specs) == [m.name for m in demo_config.models]
    for m in demo_config.models:
        spec = sim.specs[m.name]
        assert (spec.task, spec.numeric_names, spec.categorical_names) == \
            (m.task, m.numeric_features, m.categorical_features)
        if m.task == "multiclass":
            assert spec.classes == m.classes
        if m.task == "binary":
            assert spec.positive_class == m.positive_class


def test_cli_writes_log_reference_and_a_loadable_config(tmp_path, demo_config):
    argv = ["--out", str(tmp_path / "log.jsonl"), "--records", "600", "--seed", "9", "--start", START,
            "--reference-dir", str(tmp_path / "ref"), "--reference-rows", "300",
            "--config-out", str(tmp_path / "conf" / "modelmon.yaml")]
    assert _cli(argv) == 0
    config = load_config(tmp_path / "conf" / "modelmon.yaml")
    assert "../ref/credit.csv" in (tmp_path / "conf" / "modelmon.yaml").read_text()
    for model, demo in zip(config.models, demo_config.models):
        assert (model.name, model.task, model.features, model.thresholds, model.slo) == \
            (demo.name, demo.task, demo.features, demo.thresholds, demo.slo)
        assert model.reference.path.exists()
        assert len(model.reference.path.read_text().splitlines()) == 301
    first = (tmp_path / "log.jsonl").read_bytes()
    assert _cli(argv[:8]) == 0  # same arguments append the very same bytes
    assert (tmp_path / "log.jsonl").read_bytes() == first * 2


def test_cli_live_mode_appends_lines_stamped_now(tmp_path):
    log = tmp_path / "live.jsonl"
    log.write_text("")
    before = datetime.now().timestamp()
    assert _cli(["--out", str(log), "--models", "eta", "--rate", "40", "--duration", "1.2", "--inline-labels"]) == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert 44 <= len(predictions(records)) <= 48
    assert all(before - 1 <= epoch(r["ts"]) <= datetime.now().timestamp() for r in records)


def test_wide_model_for_benchmarks(tmp_path):
    spec = Simulator.wide_model("wide", n_numeric=16, n_categorical=4, task="multiclass")
    sim = Simulator(models=[spec], seed=0)
    records = sim.records(n=500, start=START)
    first = predictions(records)[0]
    assert len(first["features"]) == 20 and set(first["scores"]) == {"a", "b", "c"}
    paths = sim.write_reference(tmp_path / "ref", 100)
    config = load_config(sim.write_config(tmp_path / "modelmon.yaml", paths))
    assert config.model("wide").features == spec.feature_names
    assert config.model("wide").reference.path.exists()


@pytest.mark.parametrize("argv, message", [
    (["--records", "10"], "nothing to do"),
    (["--out", "x", "--loop"], "--loop repeats a --schedule"),
    (["--out", "x", "--records", "5", "--schedule", "stable:5"], "--records sets the length"),
    (["--out", "x", "--start", START], "--start is for batch mode"),
    (["--out", "x", "--records", "5", "--models", "credit,nope"], "unknown model 'nope'"),
    (["--out", "x", "--records", "5", "--target-models", "credit", "--drift-features", "city"],
     "belong to no target model"),
    (["--out", "x", "--batch", "--schedule", "stable:5,meltdown:5"], "unknown scenario 'meltdown'"),
    (["--out", "x", "--records", "5", "--label-delay", "soon"], "label delay 'soon'"),
    (["--out", "x", "--records", "5", "--start", "yesterday"], "expected RFC 3339"),
])
def test_cli_rejects_bad_options_with_a_clear_message(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _cli(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_delay_and_schedule_parsing():
    rng = np.random.default_rng(0)
    assert DelayDistribution.parse("fixed:2m").sample(rng, 3).tolist() == [120.0] * 3
    uniform = DelayDistribution.parse("uniform:10s..1m").sample(rng, 1000)
    assert uniform.min() >= 10 and uniform.max() <= 60
    assert np.median(DelayDistribution.parse("lognormal:1h:0.5").sample(rng, 4000)) == pytest.approx(3600, rel=0.1)
    assert parse_schedule("stable:60, concept_drift:2m") == [("stable", 60.0), ("concept_drift", 120.0)]
    with pytest.raises(ValueError, match="expected NAME:SECONDS"):
        parse_schedule("stable")
    looped = Timeline((("stable", 3), ("traffic_stop", 2)), loop=True)
    assert looped.segments(4, 12) == [("traffic_stop", 4, 5), ("stable", 5, 8), ("traffic_stop", 8, 10),
                                      ("stable", 10, 12)]
    assert Timeline((("stable", 3),)).segments(2, 10) == [("stable", 2, 3)]


def test_live_log_rotates_by_rename_and_the_follower_loses_nothing(tmp_path):
    from modelmon.exporter.tailer import LogFollower
    from modelmon.simulate.rotating import RotatingLog, parse_size

    assert parse_size("100M") == 100 << 20 and parse_size("512k") == 512 << 10 and parse_size("4096") == 4096
    with pytest.raises(ValueError):
        parse_size("lots")
    log = tmp_path / "p.jsonl"
    log.touch()
    follower = LogFollower(log, state_path=tmp_path / "offset")
    seen = []
    with RotatingLog(log, max_bytes=300) as out:
        for i in range(300):
            out.write(b'{"n": %d}\n' % i)
            if i % 7 == 0:
                seen.extend(follower.poll())
        assert out.rotations > 5
    for _ in range(3):
        seen.extend(follower.poll())
    # Several rotations can happen between two polls: only the newest .1 is kept on disk, so the
    # follower is guaranteed every line when it polls at least once per rotation, as here.
    assert [int(line.split(b":")[1].strip(b" }")) for line in seen] == list(range(300))
    assert log.stat().st_size <= 300 and (tmp_path / "p.jsonl.1").stat().st_size <= 300


def test_rotate_bytes_needs_live_mode_with_a_file(tmp_path, capsys):
    from modelmon.cli import main

    assert main(["simulate", "--out", str(tmp_path / "x.jsonl"), "--records", "10", "--rotate-bytes", "1M"]) == 2
    assert "--rotate-bytes is for live mode" in capsys.readouterr().err
