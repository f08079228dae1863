"""modelmon.yaml validation: every problem reported at once, each with its key path."""
from __future__ import annotations

import pytest

from modelmon.config import ConfigError, Window, load_config, parse_config, parse_duration
from tests.conftest import ROOT


def model(**over):
    base = {"name": "m", "task": "binary", "features": {"numeric": ["x"]}, "reference": {"first": 100}}
    return {**base, **over}


def errors_of(data) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    return e.value.errors


def test_demo_config_loads():
    cfg = load_config(ROOT / "modelmon.yaml")
    assert [m.name for m in cfg.models] == ["credit", "segment", "eta"]
    credit = cfg.model("credit")
    assert credit.reference.path == (ROOT / "examples/reference/credit.csv")
    assert credit.quality_window == Window(count=2000)
    assert cfg.model("eta").quality_window == Window(seconds=900)
    assert credit.thresholds["accuracy"].critical == 0.75 and credit.thresholds["accuracy"].direction == "below"
    assert credit.thresholds["psi"].direction == "above"


def test_all_errors_are_reported_with_key_paths():
    errs = errors_of({"models": [
        model(),
        {"name": "b", "task": "bin", "thresholds": {"accuracy": {"warning": "x"}}},
        model(name="c", quality_window="soon", drift_window=5),
    ], "surprise": 1})
    assert "(root).surprise: unknown key (allowed: alerting, exporter, grafana, models)" in errs
    assert "models[1].task: expected one of binary, multiclass, regression, got 'bin'" in errs
    assert "models[1].features: required" in errs
    assert "models[1].reference: required" in errs
    assert "models[1].thresholds.accuracy.warning: expected a number, got 'x'" in errs
    assert any(e.startswith("models[2].quality_window: expected a duration") for e in errs)
    assert "models[2].drift_window: a record window needs at least 10 records, got 5" in errs


@pytest.mark.parametrize("over, message", [
    ({"thresholds": {"accuracy": {"warning": 0.8, "critical": 0.9}}},
     "models[0].thresholds.accuracy: critical (0.9) must be below warning (0.8) for a metric where below is bad"),
    ({"thresholds": {"mae": {"warning": 1}}}, "models[0].thresholds.mae: only available for a regression model"),
    ({"features": {"numeric": ["x"], "categorical": ["x"]}},
     "models[0].features: feature(s) both numeric and categorical: x"),
    ({"reference": "data/ref.xlsx"}, "models[0].reference: expected a .csv, .jsonl/.ndjson or .parquet file"),
    ({"slo": {"availability": 120}}, "models[0].slo.availability: must be <= 99.9999, got 120"),
    ({"slo": {"period": "36h"}}, "models[0].slo.period: must be a whole number of days, e.g. 30d"),
    ({"name": "has space"}, "models[0].name: invalid name 'has space' (letters, digits, '_', '-', '.')"),
])
def test_model_errors(over, message):
    assert message in errors_of({"models": [model(**over)]})


def test_duplicate_models_and_unknown_receivers():
    errs = errors_of({"models": [model(), model()], "alerting": {
        "receivers": [{"name": "inbox", "webhook": {"url": "http://x/webhook"}},
                      {"name": "pager", "pagerduty": {"routing_key": "inline-secret"}}],
        "teams": {"risk": {"critical": ["nobody"]}}}})
    assert "models[1].name: duplicate model name 'm'" in errs
    assert "alerting.receivers[1].pagerduty.routing_key: unknown key (allowed: routing_key_env, routing_key_file, " \
           "send_resolved, severity)" in errs
    assert "alerting.receivers[1].pagerduty: needs routing_key_file or routing_key_env " \
           "(secrets are never written inline)" in errs
    assert "alerting.teams.risk.critical[0]: unknown receiver 'nobody'" in errs


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("5m", 300), ("6h", 21600), ("7d", 604800),
                                           ("250ms", 0.25), (30, 30)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds
