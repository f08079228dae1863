"""The generated rules and prometheus.yml through the real promtool: syntax, lint, unit tests,
coverage of every alert by those unit tests, and recording rules checked against scikit-learn."""
from __future__ import annotations

import subprocess
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from conftest import ROOT
from modelmon.alerting.generate import artefacts
from modelmon.alerting.options import RuleOptions
from modelmon.alerting.prometheus_config import PrometheusOptions, ScrapeTargets
from modelmon.alerting.render import dump_yaml
from modelmon.alerting.rules import rule_files
from modelmon.config import load_config, parse_config
from test_rules import full_config

RULES = sorted((ROOT / "prometheus" / "rules").glob("*.yml"))
UNIT_TESTS = sorted((ROOT / "prometheus" / "tests").glob("*.yml"))


def run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=cwd)


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"{' '.join(proc.args)} failed:\n{proc.stdout}\n{proc.stderr}"


def write_rules(folder: Path, docs: dict[str, dict]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, doc in docs.items():
        (folder / name).write_text(dump_yaml(doc))
    return [str(folder / name) for name in docs]


def test_committed_rules_pass_lint(promtool):
    assert RULES
    assert_ok(run(promtool, "check", "rules", "--lint-fatal", *map(str, RULES)))


@pytest.mark.parametrize("options", [RuleOptions(), RuleOptions(for_override="5s", rate_window="30s", min_requests=5)],
                         ids=["production", "end-to-end"])
def test_rules_of_every_alert_kind_pass_lint(promtool, tmp_path, options):
    """All thresholds on all tasks (with a quote in a class value), in production and fast form."""
    files = write_rules(tmp_path, rule_files(full_config(), options))
    assert_ok(run(promtool, "check", "rules", "--lint-fatal", *files))


def test_committed_prometheus_config_is_valid(promtool):
    assert_ok(run(promtool, "check", "config", "prometheus.yml", cwd=ROOT / "prometheus"))


def test_end_to_end_variant_is_valid(promtool, tmp_path):
    """What an end-to-end test writes: local targets, 1s clocks, fast rules beside prometheus.yml."""
    config = load_config(ROOT / "modelmon.yaml")
    local = ScrapeTargets(exporter="127.0.0.1:19188", prometheus="127.0.0.1:19090", alertmanager="127.0.0.1:19093")
    files = artefacts(config, rules=RuleOptions(for_override="5s", rate_window="30s"),
                      prometheus=PrometheusOptions(targets=local, scrape_interval="1s", evaluation_interval="1s"))
    for rel, text in files.items():
        if rel.startswith("prometheus/"):
            path = tmp_path / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    assert "127.0.0.1:19188" in files["prometheus/prometheus.yml"]
    proc = run(promtool, "check", "config", "prometheus.yml", cwd=tmp_path / "prometheus")
    assert_ok(proc)
    assert f"{len(config.models) + 1} rule files found" in proc.stdout


def test_unit_tests_pass(promtool):
    assert UNIT_TESTS
    assert_ok(run(promtool, "test", "rules", *map(str, UNIT_TESTS)))


def test_unit_tests_can_fail(promtool, tmp_path):
    """A wrong expectation must make promtool fail, or the suite above proves nothing."""
    source = (ROOT / "prometheus" / "tests" / "quality.yml").read_text()
    broken = source.replace("is 0.78 over", "is 0.79 over")
    assert broken != source
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "quality.yml").write_text(broken.replace("../rules/", str(ROOT / "prometheus/rules") + "/"))
    proc = run(promtool, "test", "rules", str(tmp_path / "tests" / "quality.yml"))
    assert proc.returncode != 0 and "FAILED" in proc.stdout + proc.stderr


def test_unit_tests_cover_every_alert():
    """Every (alert, severity) of the committed rules fires in some unit test, after a check
    that it was still silent earlier in the same test (its `for`), and every alert has a case
    where it must stay silent (healthy series or too little traffic)."""
    rules = [r for path in RULES for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]
             if "alert" in r]
    wanted = {(r["alert"], r["labels"]["severity"]) for r in rules}
    fired, silent, waits = set(), set(), set()
    for path in UNIT_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            checks = defaultdict(list)
            for check in test.get("alert_rule_test", []):
                checks[check["alertname"]].append(check)
            for name, items in checks.items():
                empty_times = [_minutes(c["eval_time"]) for c in items if not c.get("exp_alerts")]
                for c in items:
                    if c.get("exp_alerts"):
                        fired.update((name, a["exp_labels"]["severity"]) for a in c["exp_alerts"])
                        if any(t < _minutes(c["eval_time"]) for t in empty_times):
                            waits.add(name)
                if empty_times:
                    silent.add(name)
    assert wanted - fired == set(), "alerts never seen firing in prometheus/tests"
    names = {n for n, _ in wanted}
    assert names - silent == set(), "alerts never checked to stay silent"
    assert names - waits == set(), "alerts never checked to wait for their `for`"


def _minutes(text: str) -> int:
    return int(text[:-1]) * {"m": 1, "h": 60}[text[-1]]


# ---------------------------------------------------------------- recording rules vs scikit-learn

BINARY_CELLS = {("1", "1"): 50, ("1", "0"): 20, ("0", "1"): 10, ("0", "0"): 120}  # (actual, predicted): per minute
CLASSES = ("basic", "plus", "premium")
MULTICLASS_CELLS = {(a, p): n for (a, p), n in zip(
    [(a, p) for a in CLASSES for p in CLASSES], [40, 7, 3, 5, 30, 9, 2, 11, 0])}  # premium never right
MULTICLASS_CELLS[("basic", "vip")] = 4  # a class only ever predicted: in sklearn's macro average too


def _expected(cells: dict[tuple[str, str], int], **kwargs) -> dict[str, float]:
    y_true = np.repeat([a for a, _ in cells], list(cells.values()))
    y_pred = np.repeat([p for _, p in cells], list(cells.values()))
    return {"accuracy": accuracy_score(y_true, y_pred),
            "precision": precision_score(y_true, y_pred, zero_division=0, **kwargs),
            "recall": recall_score(y_true, y_pred, zero_division=0, **kwargs),
            "f1": f1_score(y_true, y_pred, zero_division=0, **kwargs)}


def test_confusion_recording_rules_match_scikit_learn(promtool, tmp_path):
    """Accuracy, precision, recall and F1 recorded from the confusion counters of two replicas
    (each cell split between them) equal scikit-learn's on the union of their records."""
    config = parse_config({"models": [
        {"name": "b", "task": "binary", "positive_class": 1, "features": {"numeric": ["x"]},
         "reference": {"first": 100}},
        {"name": "mc", "task": "multiclass", "features": {"numeric": ["x"]}, "reference": {"first": 100}},
    ], "recording": {"windows": ["5m", "1h"]}})
    write_rules(tmp_path, rule_files(config))
    expected = {"b": _expected(BINARY_CELLS, pos_label="1"), "mc": _expected(MULTICLASS_CELLS, average="macro")}
    series = []
    for model, cells in (("b", BINARY_CELLS), ("mc", MULTICLASS_CELLS)):
        for (a, p), n in cells.items():
            labels = f'model="{model}", version="v1", actual="{a}", predicted="{p}", correct="{str(a == p).lower()}"'
            first = n // 3
            series += [{"series": f'modelmon_confusion_total{{instance="r1", {labels}}}', "values": f"0+{first}x30"},
                       {"series": f'modelmon_confusion_total{{instance="r2", {labels}}}', "values": f"0+{n - first}x30"}]
    checks = [{"expr": f'abs(model_version:modelmon_{kind}_ratio:{w}{{model="{model}"}} - {value!r}) < bool 1e-9',
               "eval_time": "20m", "exp_samples": [{"labels": f'{{model="{model}", version="v1"}}', "value": 1}]}
              for model, values in expected.items() for kind, value in values.items() for w in ("5m", "1h")]
    unit = {"rule_files": ["model-b.yml", "model-mc.yml"], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": checks}]}
    (tmp_path / "unit.yml").write_text(yaml.safe_dump(unit, sort_keys=False))
    assert_ok(run(promtool, "test", "rules", str(tmp_path / "unit.yml")))


def test_every_additive_recording_rule_has_a_unit_test():
    """Each record name of the committed rules that reads the additive families is checked by
    prometheus/tests/additive.yml (a promql_expr_test naming it)."""
    text = (ROOT / "prometheus" / "tests" / "additive.yml").read_text()
    families = ("modelmon_feature_bin", "modelmon_prediction_bin", "modelmon_confusion_total", "modelmon_labeled",
                "modelmon_regression_", "modelmon_feature_values", "modelmon_prediction_values")
    records = {r["record"] for path in RULES for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]
               if "record" in r and any(f in r["expr"] or f in r["record"] for f in families)}
    assert len(records) > 30
    windows = sorted({r.rsplit(":", 1)[1].removeprefix("increase").removeprefix("ratio") for r in records})
    untested = {r for r in records if f"{r}{{" not in text and f"{r} " not in text}
    assert not untested, f"recording rules without a promtool unit test (windows {windows}): {sorted(untested)}"
