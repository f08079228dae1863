"""The metric contract (modelmon.contract) against what the code does.

Every series the exporter exposes is in the contract with its type, help and labels, and the
other way round; every quantity is computed for exactly the tasks the contract lists, the config
accepts a threshold for exactly those tasks, and no alert can be generated for a quantity a task
never computes; the generators read only contract series and write label values through the one
PromQL builder, which escapes them.
"""
from __future__ import annotations

import dataclasses
import re

import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from modelmon import contract
from modelmon.alerting.alerts import threshold_alert_name
from modelmon.alerting.rules import alerts_of, rule_files
from modelmon.exporter.collector import SOURCE_SERIES
from modelmon.config import ConfigError, parse_config
from modelmon.contract import QUANTITIES, SERIES, SERIES_BY_NAME, TASKS, quantities_for
from modelmon.exporter.pipeline import Exporter
from modelmon.promql import Regex, le_regex, match, quote, selector
from tests.exporter_helpers import T0, rfc3339
from tests.test_exporter import lines, scrape

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ("a", "b", "c")
# One model per task, each with numeric and categorical features, so every quantity can exist.
NAMES = {"binary": "bin", "multiclass": "multi", "regression": "reg"}


def model(task: str, **over) -> dict:
    m = {"name": NAMES[task], "task": task, "features": {"numeric": ["x1", "x2"], "categorical": ["c"]},
         "reference": {"first": 200}, "quality_window": 500, "drift_window": 300, "min_drift_samples": 50,
         "slo": {"availability": 99.5}}
    if task == "multiclass":
        m["classes"] = list(CLASSES)
    return {**m, **over}


def config_of(*models: dict):
    return parse_config({"models": list(models), "exporter": {"multivariate": {"enabled": True}}})


def records(task: str, n: int, seed: int) -> list[dict]:
    """Predictions with inline labels and scores; the second half shifted, so drift has something to see."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        shift = 1.0 if i >= n // 2 else 0.0
        x1 = float(rng.normal(shift, 1))
        rec = {"ts": rfc3339(T0 + i), "id": f"{task}-{i}", "model": NAMES[task], "version": "v1",
               "features": {"x1": x1, "x2": None if i % 9 == 0 else float(rng.normal()),
                            "c": str(rng.choice(["de", "fr", "it"]))},
               "latency_ms": 5.0, "status": "ok"}
        if task == "binary":
            score = float(1 / (1 + np.exp(-2 * x1)))
            rec.update(prediction=int(score >= 0.5), score=score, label=int(rng.random() < score))
        elif task == "multiclass":
            probs = rng.dirichlet([2, 2, 2])
            rec.update(prediction=CLASSES[int(np.argmax(probs))], scores=dict(zip(CLASSES, map(float, probs))),
                       label=CLASSES[int(rng.integers(3))])
        else:
            rec.update(prediction=x1 * 2, label=float(x1 * 2 + rng.normal()))
        out.append(rec)
    return out


def shadows(task: str, served: list[dict]) -> list[dict]:
    """A shadow version answering the same requests, differently on every third one."""
    out = []
    for i, rec in enumerate(served):
        pred = rec["prediction"]
        if i % 3 == 0:
            pred = {"binary": lambda p: 1 - p, "multiclass": lambda p: CLASSES[(CLASSES.index(p) + 1) % 3],
                    "regression": lambda p: p + 1.0}[task](pred)
        out.append({**rec, "version": "v2", "shadow": True, "prediction": pred})
    return out


def labelled_reference(task: str, path: Path) -> Path:
    """A reference file with labels and outputs (like `records`), so estimation and reference quality run."""
    rows = records(task, 400, seed=99)
    header = ["x1", "x2", "c", "prediction", "label"] + (["score"] if task == "binary" else []) + (
        [f"score_{c}" for c in CLASSES] if task == "multiclass" else [])
    lines_out = [",".join(header)]
    for r in rows:
        f = r["features"]
        cells = [f["x1"], "" if f["x2"] is None else f["x2"], f["c"], r["prediction"], r["label"]]
        cells += [r["score"]] if task == "binary" else []
        cells += [r["scores"][c] for c in CLASSES] if task == "multiclass" else []
        lines_out.append(",".join(map(str, cells)))
    path.write_text("\n".join(lines_out) + "\n")
    return path


@pytest.fixture(scope="module")
def populated(tmp_path_factory) -> tuple[Exporter, str]:
    """One exporter watching a model of every task, after traffic (with a shadow version), refresh,
    multivariate and estimation passes and one bad line: every family of the contract has samples."""
    tmp = tmp_path_factory.mktemp("references")
    ex = Exporter(config_of(*(model(task, reference=str(labelled_reference(task, tmp / f"{task}.csv")))
                              for task in TASKS)))
    ex.load_references()
    for i, task in enumerate(TASKS):
        served = records(task, 600, seed=10 + i)
        ex.ingest_lines(lines(served[:300]), "file")
        # The shadow is logged next to each served prediction, as a shadow deployment writes it.
        ex.ingest_lines(lines([r for pair in zip(served[300:], shadows(task, served[300:])) for r in pair]), "file")
        # Then a canary serves a third of the requests: each served version's inputs drift on their own.
        canary = [{**r, "id": f"canary-{r['id']}", "version": "v3" if k % 3 == 0 else "v1"}
                  for k, r in enumerate(records(task, 450, seed=20 + i))]
        ex.ingest_lines(lines(canary), "file")
    ex.ingest_lines([b"{not json", b'{"model": "nope", "ts": 1}'], "http")
    ex.refresh(force=True)
    ex.run_multivariate()
    ex.run_estimation()
    ex.checkpoint_saved_at = T0  # the checkpoint gauge exists once a checkpoint was written
    return ex, scrape(ex)


def families(text: str) -> dict[str, dict]:
    """{name as in # TYPE: {type, help, label sets of its samples (le dropped)}}."""
    out: dict[str, dict] = {}
    for m in re.finditer(r"^# HELP (\S+) (.*)$", text, flags=re.M):
        out.setdefault(m.group(1), {"labels": set()})["help"] = m.group(2).replace("\\\\", "\\")
    for m in re.finditer(r"^# TYPE (\S+) (\S+)$", text, flags=re.M):
        out[m.group(1)]["type"] = m.group(2)
    for m in re.finditer(r"^([a-z_:][a-z0-9_:]*)(?:\{(.*)\})? \S+$", text, flags=re.M):
        name, labels = m.group(1), m.group(2) or ""
        base = re.sub(r"_(bucket|count|sum|created)$", "", name)
        family = name if name in out else base
        keys = tuple(k for k in re.findall(r'([a-z_]+)="', labels) if k != "le")
        out[family]["labels"].add(keys)
    return out


def samples_of(text: str, metric: str, model: str) -> list[str]:
    """Sample lines of ``metric`` (a series name; histograms by their base) for ``model``."""
    names = "|".join(re.escape(n) for n in SERIES_BY_NAME[metric].samples)
    return re.findall(rf'^(?:{names})\{{[^}}]*model="{re.escape(model)}"[^}}]*\}} \S+$', text, flags=re.M)


# ---------------------------------------------------------------------------- series


def test_contract_entries_are_well_formed():
    assert len({s.name for s in SERIES}) == len(SERIES)
    for s in SERIES:
        assert re.fullmatch(r"modelmon_[a-z0-9_]+", s.name)
        assert s.help.endswith(".") and s.doc and "|" not in s.doc + s.help
        assert set(s.tasks) <= set(TASKS)
    for q in QUANTITIES.values():
        assert SERIES_BY_NAME[q.metric] is q.series, f"{q.key}: its series is not in SERIES"
        assert q.unit in ("percentunit", "short") and q.direction in ("above", "below")
        assert q.tasks and set(q.tasks) <= set(TASKS)


def test_every_exposed_series_is_in_the_contract_and_the_other_way_round(populated):
    _, text = populated
    exposed = families(text)
    assert set(exposed) == {s.name for s in SERIES}
    for s in SERIES:
        got = exposed[s.name]
        assert got["type"] == s.type, s.name
        assert got["help"] == s.help, s.name
        if s.name in SOURCE_SERIES and not got["labels"]:
            continue  # the KServe and stream families are empty here: tests/test_kserve.py, test_stream*.py
        # the exposition writes label names sorted
        assert got["labels"] == {tuple(sorted(s.labels))}, f"{s.name}: samples {got['labels']}, contract {s.labels}"


def test_family_types_follow_the_naming_conventions():
    for s in SERIES:
        assert (s.type == "counter") == s.name.endswith("_total"), s.name
        if s.name.endswith("_ratio"):
            assert s.type == "gauge"
        if s.constant:
            assert s.name.endswith("_info")


# ---------------------------------------------------------------------------- quantities × tasks


def test_the_exporter_computes_every_quantity_for_exactly_its_tasks(populated):
    ex, text = populated
    for task in TASKS:
        name = NAMES[task]
        for q in QUANTITIES.values():
            found = samples_of(text, q.metric, name)
            if q.applies_to(task):
                assert found, f"{q.key}: the contract lists it for {task}, the exporter exports none"
            else:
                assert not found, f"{q.key}: exported for {task}, which the contract excludes"
        for s in SERIES:
            if s.tasks != contract.ALL_TASKS and "model" in s.labels:
                assert bool(samples_of(text, s.name, name)) == (task in s.tasks), (s.name, task)


def test_the_collector_never_hides_a_computed_quantity(populated):
    """What model_state computes for a task is exactly what the contract allows: the collector's
    per-task filter is a guard, not a place where values silently disappear."""
    ex, _ = populated
    for task in TASKS:
        state = ex.states[NAMES[task]]
        computed = {k for values in state.snapshot.quality.values() for k in values}
        computed |= {k for values in state.snapshot.feature_drift.values() for k in values}
        if state.snapshot.prediction_psi:
            computed.add("prediction_psi")
        computed |= {k for k in state.multivariate if k in QUANTITIES}
        assert computed == {q.key for q in quantities_for(task)}, task


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("key", list(QUANTITIES))
def test_config_accepts_a_threshold_iff_the_task_computes_it(task, key):
    q = QUANTITIES[key]
    limits = {"warning": 0.5, **({"critical": 0.4 if q.direction == "below" else 0.6} if q.pages else {})}
    raw = model(task, thresholds={key: limits})
    if q.applies_to(task):
        config = config_of(raw)
        names = {a.name for a in alerts_of(config)}
        assert threshold_alert_name(key, q.direction) in names
    else:
        with pytest.raises(ConfigError) as e:
            config_of(raw)
        assert e.value.errors == [f"models[0].thresholds.{key}: not computed for a {task} model "
                                  f"(only for {' and '.join(q.tasks)} models)"]


@pytest.mark.parametrize("key", [k for k, q in QUANTITIES.items() if not q.pages])
def test_drift_cannot_page(key):
    """Drift opens tickets: a critical threshold on a drift quantity is refused with its key path,
    and every drift alert is a warning."""
    q = QUANTITIES[key]
    with pytest.raises(ConfigError) as e:
        config_of(model(q.tasks[0], thresholds={key: {"warning": 0.5, "critical": 0.4 if q.direction == "below"
                                                       else 0.6}}))
    assert e.value.errors[0].startswith(f"models[0].thresholds.{key}.critical: drift opens tickets and never pages")
    alerts = [a for a in alerts_of(config_of(model(q.tasks[0], thresholds={key: {"warning": 0.5}})))
              if a.name == threshold_alert_name(key, q.direction)]
    assert alerts and {a.severity for a in alerts} == {"warning"}


def test_brier_score_is_binary_only():
    """The issue's case: a multiclass model never gets a Brier score, so it cannot alert on one."""
    assert QUANTITIES["brier_score"].tasks == ("binary",)
    with pytest.raises(ConfigError, match=r"models\[0\]\.thresholds\.brier_score: not computed for a multiclass"):
        config_of(model("multiclass", thresholds={"brier_score": {"warning": 0.2}}))


def test_no_alert_for_a_quantity_the_task_never_computes():
    """Even a ModelConfig built around the validation cannot make the generator emit one."""
    config = config_of(model("multiclass", thresholds={"accuracy": {"warning": 0.7}}))
    (m,) = config.models
    bad = dataclasses.replace(m, thresholds={**m.thresholds, "brier_score": dataclasses.replace(
        m.thresholds["accuracy"], direction="above")})
    with pytest.raises(ValueError, match="never computes brier_score for a multiclass model"):
        alerts_of(dataclasses.replace(config, models=(bad,)))


def test_every_threshold_alert_reads_a_quantity_of_its_models_task():
    config = config_of(*(model(task, thresholds={q.key: {"warning": 0.5} for q in quantities_for(task)})
                         for task in TASKS))
    metrics = {q.metric: q for q in QUANTITIES.values()}
    seen = set()
    for a in alerts_of(config):
        if a.family not in ("quality", "drift"):
            continue
        read = {n for n in re.findall(r"\bmodelmon_[a-z0-9_]+", a.expr) if n in metrics}
        assert len(read) == 1, a.expr
        (q,) = (metrics[n] for n in read)
        assert q.applies_to(a.model.task), (a.name, a.model.task)
        seen.add((a.model.task, q.key))
    assert seen == {(task, q.key) for task in TASKS for q in quantities_for(task)}


# ---------------------------------------------------------------------------- generators read the contract

# A metric name as written in PromQL, not inside a recording rule's name (`model:modelmon_x:rate5m`).
RAW_METRIC = re.compile(r"(?<![:\w])modelmon_[a-z0-9_]+(?![\w:])")


def test_rules_read_only_contract_series():
    config = config_of(*(model(task, thresholds={q.key: {"warning": 0.5} for q in quantities_for(task)})
                         for task in TASKS))
    known = contract.sample_names()
    for name, doc in rule_files(config).items():
        for group in doc["groups"]:
            for rule in group["rules"]:
                unknown = set(RAW_METRIC.findall(rule["expr"])) - known
                assert not unknown, f"{name}: {rule.get('record') or rule.get('alert')} reads {unknown}"


def test_uids_and_job_are_one_definition():
    from modelmon.alerting import alerts
    from modelmon.dashboards import base
    from modelmon.dashboards.generate import dashboards

    for task in TASKS:
        cfg = config_of(model(task))
        assert [d["uid"] for d in dashboards(cfg)] == list(base.uids(cfg))
        # every alert links a dashboard that is generated for its model's task
        linked = {a.dashboard for a in alerts_of(cfg)}
        assert linked <= set(base.uids(cfg)), linked - set(base.uids(cfg))
        assert contract.model_uid(task) in linked
    assert {alerts.DASHBOARD_DRIFT, alerts.DASHBOARD_SERVICE, alerts.DASHBOARD_SELF} <= set(base.UIDS)
    assert alerts.EXPORTER_JOB == contract.EXPORTER_JOB


# ---------------------------------------------------------------------------- one PromQL builder


HOSTILE = 'a"b\\c'


def test_label_values_are_escaped():
    assert quote(HOSTILE) == '"a\\"b\\\\c"'
    assert selector("m", model=HOSTILE) == 'm{model="a\\"b\\\\c"}'
    assert selector("m", match("actual", HOSTILE, "!="), model="x") == 'm{model="x", actual!="a\\"b\\\\c"}'
    assert selector("m", version=Regex("$version")) == 'm{version=~"$version"}'
    assert match("le", le_regex(0.25)) == 'le=~"0\\\\.25"'
    assert match("le", le_regex(1)) == 'le=~"1|1\\\\.0"'
    assert selector("m", model="line\nbreak") == 'm{model="line\\nbreak"}'
    with pytest.raises(ValueError):
        match("x", "y", "==")


def test_escaped_selectors_parse_in_promtool(promtool, tmp_path):
    exprs = [selector("m", model=HOSTILE), selector("m", match("actual", HOSTILE, "!="), model="x"),
             selector("m", job=Regex('a"|b\\.c')), f"sum by (le) (rate({selector('h_bucket', le=le_regex(0.25))}[5m]))"]
    rules = [{"record": f"check_{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "escaped.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "escaped", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_class_values_with_quotes_and_backslashes_reach_the_rules_escaped():
    config = config_of(model("multiclass", classes=["plain", HOSTILE]), model("binary", positive_class=HOSTILE))
    exprs = [r["expr"] for d in rule_files(config).values() for g in d["groups"] for r in g["rules"]]
    assert any('actual="a\\"b\\\\c", predicted="a\\"b\\\\c"' in e for e in exprs)
    assert any('actual!="a\\"b\\\\c"' in e for e in exprs)  # the negative class of the binary ROC AUC


# Source files that write PromQL: a label value embedded by hand (`model="{name}"`) bypasses the escaping.
PROMQL_SOURCES = [ROOT / "modelmon/alerting/alerts.py", ROOT / "modelmon/alerting/recording.py",
                  ROOT / "modelmon/alerting/additive.py",
                  *sorted((ROOT / "modelmon/dashboards").glob("*.py"))]
INLINE_VALUE = re.compile(r"""[a-z_]+(?:=|!=|=~|!~)\\?["']\{(?!\{)""")


@pytest.mark.parametrize("path", PROMQL_SOURCES, ids=lambda p: p.name)
def test_generators_write_label_values_only_through_the_builder(path):
    hits = [line.strip() for line in path.read_text().splitlines() if INLINE_VALUE.search(line)]
    assert not hits, f"{path.name} embeds label values without modelmon.promql: {hits}"
