"""The simulator's rollout scenarios (issue 10): shadow and canary with a better or a worse
candidate version, a second real scikit-learn model of the same spec."""
from __future__ import annotations

import argparse
import io
import json
from collections import Counter

import jsonschema
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, mean_absolute_error
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from modelmon.simulate import SCENARIOS, Simulator, cli
from modelmon.simulate.candidates import candidate_version
from modelmon.simulate.live import run_live
from modelmon.simulate.scenarios import Timeline, parse_schedule
from tests.test_simulate import SCHEMA, START, epoch, label_records, predictions

SERVED = {"credit": "v3", "segment": "v2", "eta": "v1"}
CANDIDATE = {("credit", "better"): "v4", ("credit", "worse"): "v4-lite",
             ("segment", "better"): "v3", ("segment", "worse"): "v3-lite",
             ("eta", "better"): "v2", ("eta", "worse"): "v2-lite"}


@pytest.fixture(scope="module")
def sim() -> Simulator:
    return Simulator(seed=0)


@pytest.fixture(scope="module")
def runs(sim) -> dict[str, list[dict]]:
    """Each concrete rollout scenario for 12000 slots (about 4000 requests per model)."""
    return {name: sim.records(n=12000, scenario=name, start=START)
            for name in ("shadow_better", "shadow_worse", "canary_better", "canary_worse")}


def served(records: list[dict], model: str | None = None) -> list[dict]:
    return [r for r in predictions(records, model) if not r.get("shadow")]


def shadows(records: list[dict], model: str | None = None) -> list[dict]:
    return [r for r in predictions(records, model) if r.get("shadow")]


def labelled_by_version(records: list[dict], model: str) -> dict[tuple[str, bool], tuple[list, list]]:
    """(version, shadow) -> (predictions, labels) of the model's ok predictions that got a label,
    inline or by a later label record joined on id."""
    late = {r["id"]: r["label"] for r in label_records(records) if r["model"] == model}
    out: dict[tuple[str, bool], tuple[list, list]] = {}
    for r in predictions(records, model):
        label = r.get("label", late.get(r["id"]))
        if r["status"] == "ok" and label is not None:
            p, y = out.setdefault((r["version"], bool(r.get("shadow"))), ([], []))
            p.append(r["prediction"])
            y.append(label)
    return out


def score(model: str, pair: tuple[list, list]) -> float:
    p, y = pair
    assert len(p) > 300, f"too few labelled {model} predictions to judge quality"
    return mean_absolute_error(y, p) if model == "eta" else accuracy_score(y, p)


# --------------------------------------------------------------------------- schema and pairing


@pytest.mark.parametrize("inline", [False, True])
def test_shadow_records_follow_the_schema_and_pair_with_the_served_prediction(inline):
    sim = Simulator(seed=2, inline_labels=inline)
    records = sim.records(start=START, schedule="stable:20,shadow_worse:40,shadow_better:40,stable:20")
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for rec in records:
        validator.validate(json.loads(json.dumps(rec)))
    times = [epoch(r["ts"]) for r in records]
    assert times == sorted(times)

    by_id = {r["id"]: r for r in served(records)}
    assert len(by_id) == len(served(records))  # served ids are distinct
    shadow = shadows(records)
    assert len(shadow) == sum(1 for r in served(records) if 20 <= epoch(r["ts"]) - epoch(START) < 100)
    assert len({r["id"] for r in shadow}) == len(shadow)  # one shadow per request
    versions = Counter()
    same_latency = 0
    for r in shadow:
        assert r["shadow"] is True
        twin = by_id[r["id"]]  # the same request id as a served prediction ...
        assert (twin["ts"], twin["model"], twin["features"]) == (r["ts"], r["model"], r["features"])
        assert "shadow" not in twin and twin["version"] == SERVED[r["model"]]
        assert r["version"] != twin["version"]
        same_latency += r["latency_ms"] == twin["latency_ms"]
        versions[r["model"], r["version"]] += 1
        if r["status"] == "ok":
            assert "prediction" in r
        if inline and r["status"] == "ok":  # the request's label rides on both, or on neither
            assert r.get("label") == twin.get("label")
        else:
            assert "label" not in r
    assert set(versions) == {(m, CANDIDATE[m, kind]) for m in SERVED for kind in ("better", "worse")}
    assert same_latency < 0.01 * len(shadow)  # the shadow has its own latency
    for i, r in enumerate(records):  # each shadow record right after its served twin
        if r.get("shadow"):
            assert records[i - 1]["id"] == r["id"] and not records[i - 1].get("shadow")

    labels = label_records(records)
    if inline:
        assert not labels
    else:  # labels come once per request id, for the served prediction's id
        ids = [r["id"] for r in labels]
        assert len(ids) == len(set(ids)) and set(ids) <= set(by_id)
        assert len(ids) > 0.85 * sum(r["status"] == "ok" for r in served(records))


def test_canary_routes_a_share_of_requests_to_the_candidate_as_served_predictions(runs, sim):
    for name, kind in (("canary_better", "better"), ("canary_worse", "worse")):
        records = runs[name]
        assert not shadows(records)
        ids = [r["id"] for r in predictions(records)]
        assert len(ids) == len(set(ids))  # distinct ids: each request is served by one version
        for model in SERVED:
            versions = Counter(r["version"] for r in predictions(records, model))
            assert set(versions) == {SERVED[model], CANDIDATE[model, kind]}
            share = versions[CANDIDATE[model, kind]] / sum(versions.values())
            assert share == pytest.approx(sim.canary_share, abs=0.025), (name, model, share)
    wide = Simulator(models=["credit"], seed=1, canary_share=0.5).records(n=3000, scenario="canary", start=START)
    share = sum(r["version"] == "v4" for r in predictions(wide)) / len(predictions(wide))
    assert share == pytest.approx(0.5, abs=0.03)
    none = Simulator(models=["credit"], seed=1, canary_share=0.0).records(n=500, scenario="canary", start=START)
    assert {r["version"] for r in predictions(none)} == {"v3"}


# --------------------------------------------------------------------------- quality of the candidates


@pytest.mark.parametrize("rollout", ["shadow", "canary"])
@pytest.mark.parametrize("model", list(SERVED))
def test_the_better_candidate_is_clearly_better_and_the_worse_clearly_worse(runs, rollout, model):
    for kind in ("better", "worse"):
        groups = labelled_by_version(runs[f"{rollout}_{kind}"], model)
        old = score(model, groups[SERVED[model], False])
        new = score(model, groups[CANDIDATE[model, kind], rollout == "shadow"])
        # "better" = higher accuracy or lower MAE, by a margin no sampling noise explains
        gain = (old - new) if model == "eta" else (new - old)
        if kind == "better":  # the served version is stale after the concept changed
            assert gain > (5.0 if model == "eta" else 0.2), (rollout, kind, model, old, new)
        else:
            assert gain < (-0.5 if model == "eta" else -0.035), (rollout, kind, model, old, new)


def test_shadow_worse_is_worse_on_the_very_same_requests(runs):
    """Paired: both versions predicted the same labelled requests; the served one is right more
    often where they disagree (a McNemar-style count on the simulator's own data)."""
    records = runs["shadow_worse"]
    late = {(r["model"], r["id"]): r["label"] for r in label_records(records)}
    for model in ("credit", "segment"):
        pairs = {}
        for r in predictions(records, model):
            if r["status"] == "ok" and (model, r["id"]) in late:
                pairs.setdefault(r["id"], {})[bool(r.get("shadow"))] = r["prediction"]
        both = [(p[False], p[True], late[model, i]) for i, p in pairs.items() if len(p) == 2]
        assert len(both) > 2000
        only_served = sum(a == y != b for a, b, y in both)
        only_shadow = sum(b == y != a for a, b, y in both)
        assert only_served > 2 * only_shadow, (model, only_served, only_shadow)


def test_candidates_are_real_scikit_learn_models(sim):
    for model, spec in sim.specs.items():
        worse = sim.candidate(model, "worse")
        tree = DecisionTreeRegressor if spec.task == "regression" else DecisionTreeClassifier
        assert isinstance(worse.estimator, tree) and worse.estimator.get_depth() <= 5
        better = sim.candidate(model, "better")
        assert type(better.estimator) is type(sim.fitted[model].estimator)  # retrained, same family
        assert (better.version, worse.version) == (CANDIDATE[model, "better"], CANDIDATE[model, "worse"])
        assert candidate_version(spec, "worse") == worse.version
    assert candidate_version(Simulator.wide_model("w", 2, 1), "better") == "v2"


# --------------------------------------------------------------------------- scenarios, targets, determinism


def test_plain_shadow_and_canary_play_the_candidate_chosen_by_the_simulator():
    for rollout in ("shadow", "canary"):
        for kind in ("better", "worse"):
            plain = Simulator(models=["segment"], seed=4, candidate=kind).records(n=400, scenario=rollout, start=START)
            fixed = Simulator(models=["segment"], seed=4).records(n=400, scenario=f"{rollout}_{kind}", start=START)
            assert plain == fixed
    with pytest.raises(ValueError, match="candidate must be one of"):
        Simulator(models=["segment"], candidate="best")
    with pytest.raises(ValueError, match="canary share"):
        Simulator(models=["segment"], canary_share=1.5)
    assert {"shadow", "canary", "shadow_better", "shadow_worse", "canary_better", "canary_worse"} <= set(SCENARIOS)


def test_rollouts_apply_to_the_target_models_only():
    records = Simulator(seed=6, target_models=["eta"]).records(n=3000, scenario="shadow_worse", start=START)
    assert {r["model"] for r in shadows(records)} == {"eta"}
    assert {r["version"] for r in predictions(records, "credit")} == {"v3"}
    assert len(shadows(records)) == len(served(records, "eta"))


def test_same_seed_same_bytes_and_candidates_do_not_depend_on_order(tmp_path):
    schedule = "stable:10,shadow:10,canary_worse:10,shadow_better:10"
    a, b, c = (tmp_path / f"{n}.jsonl" for n in "abc")
    Simulator(seed=1).write(a, start=START, schedule=schedule)
    Simulator(seed=1).write(b, start=START, schedule=schedule)
    Simulator(seed=2).write(c, start=START, schedule=schedule)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    first, second = Simulator(models=["credit"], seed=1), Simulator(models=["credit"], seed=1)
    first.candidate("credit", "worse")
    rows = first.specs["credit"].matrix(first.specs["credit"].sample(np.random.default_rng(0), 200))
    np.testing.assert_array_equal(first.candidate("credit", "better").predict(rows)[1],
                                  second.candidate("credit", "better").predict(rows)[1])


# --------------------------------------------------------------------------- CLI and live mode


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(argv))


def test_cli_runs_the_rollout_scenarios(tmp_path):
    log = tmp_path / "log.jsonl"
    assert _cli(["--out", str(log), "--models", "credit", "--records", "2000", "--start", START,
                 "--scenario", "canary", "--candidate", "worse", "--canary-share", "0.3"]) == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    versions = Counter(r["version"] for r in predictions(records))
    assert set(versions) == {"v3", "v4-lite"} and versions["v4-lite"] / 2000 == pytest.approx(0.3, abs=0.04)
    log.unlink()
    assert _cli(["--out", str(log), "--models", "eta", "--batch", "--start", START,
                 "--schedule", "stable:5,shadow_better:5"]) == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert {r["version"] for r in shadows(records)} == {"v2"} and len(shadows(records)) == 250
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    for bad in (["--candidate", "best"], ["--canary-share", "1.5"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["--out", "x", *bad])


def test_live_mode_plays_a_shadow_phase_with_a_fake_clock():
    sim = Simulator(models=["credit"], seed=8)
    clock = [1_800_000_000.0]

    def sleep(seconds: float) -> None:
        clock[0] += max(seconds, 0.001)

    out = io.BytesIO()
    timeline = Timeline.from_schedule(parse_schedule("stable:2,shadow_worse:2,canary_better:2"), 20)
    lines = run_live(sim, timeline, out, 20, clock=lambda: clock[0], sleep=sleep)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(records) == lines
    assert len(served(records)) == 120 and len(shadows(records)) == 40
    assert all(2 <= epoch(r["ts"]) - 1_800_000_000.0 < 4 for r in shadows(records))
    assert {r["version"] for r in served(records) if epoch(r["ts"]) - 1_800_000_000.0 >= 4} <= {"v3", "v4"}
    times = [epoch(r["ts"]) for r in records]
    assert times == sorted(times)


def test_the_stack_schedule_can_include_rollouts():
    phases = parse_schedule("stable:60,shadow_worse:300,canary_better:300,stable:120")
    assert [name for name, _ in phases] == ["stable", "shadow_worse", "canary_better", "stable"]
