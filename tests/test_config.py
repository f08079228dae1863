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
    assert "(root).surprise: unknown key (allowed: alerting, exporter, grafana, kubernetes, models, recording)" in errs
    assert "models[1].task: expected one of binary, multiclass, regression, got 'bin'" in errs
    assert "models[1].features: required" in errs
    assert "models[1].reference: required" in errs
    assert "models[1].thresholds.accuracy.warning: expected a number, got 'x'" in errs
    assert any(e.startswith("models[2].quality_window: expected a duration") for e in errs)
    assert "models[2].drift_window: a record window needs at least 10 records, got 5" in errs


@pytest.mark.parametrize("over, message", [
    ({"thresholds": {"accuracy": {"warning": 0.8, "critical": 0.9}}},
     "models[0].thresholds.accuracy: critical (0.9) must be below warning (0.8) for a metric where below is bad"),
    ({"thresholds": {"mae": {"warning": 1}}},
     "models[0].thresholds.mae: not computed for a binary model (only for regression models)"),
    ({"task": "multiclass", "thresholds": {"brier_score": {"warning": 0.2}}},
     "models[0].thresholds.brier_score: not computed for a multiclass model (only for binary models)"),
    ({"task": "regression", "thresholds": {"accuracy": {"warning": 0.8}}},
     "models[0].thresholds.accuracy: not computed for a regression model (only for binary and multiclass models)"),
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


# --------------------------------------------------------------------------- duplicate keys

DUPLICATES = """\
exporter:
  label_ttl: 1d
models:
  - task: binary
    features: {numeric: [x]}
    reference: {first: 100}
    thresholds:
      psi: {warning: 0.1}
    name: first
    quality_window: 500
    drift_window: 500
    name: second
exporter:
  label_ttl: 2d
"""


def write(tmp_path, text: str, name: str = "modelmon.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_duplicate_keys_are_errors_with_file_and_line(tmp_path):
    path = write(tmp_path, DUPLICATES)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    # Every duplicate, nested or at the top, is listed at once, in document order.
    assert e.value.errors == [
        f"{path}:12: duplicate key 'name' (first at line 9)",
        f"{path}:13: duplicate key 'exporter' (first at line 1)",
    ]


@pytest.mark.parametrize("text, line, first, key", [
    ("models: []\nmodels: []\n", 2, 1, "models"),
    ("alerting:\n  teams:\n    risk: {critical: [a]}\n    risk: {warning: [a]}\n", 4, 3, "risk"),
    ("x: {k: 1, k: 2}\n", 1, 1, "k"),  # flow style
    ("a:\n  - b:\n      - c: 1\n        d: 2\n        c: 3\n", 5, 3, "c"),  # deep in lists of mappings
])
def test_duplicate_keys_at_every_level(tmp_path, text, line, first, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.errors == [f"{path}:{line}: duplicate key {key!r} (first at line {first})"]


def test_keys_that_yaml_reads_as_equal_are_duplicates(tmp_path):
    path = write(tmp_path, "models:\n  - {name: m, task: binary}\nyes: 1\ntrue: 2\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.errors == [f"{path}:4: duplicate key True (first at line 3)"]


def test_merge_keys_override_without_being_duplicates(tmp_path):
    """`<<: *base` then an explicit key is YAML's way to override: not a duplicate."""
    path = write(tmp_path, """\
x-model: &model
  task: binary
  features: {numeric: [x]}
  reference: {first: 100}
  quality_window: 100
models:
  - <<: *model
    name: a
    quality_window: 200
""")
    from modelmon.config import load_yaml

    data = load_yaml(path.read_text(), str(path))
    assert data["models"][0]["quality_window"] == 200 and data["models"][0]["task"] == "binary"


def test_syntax_errors_name_the_file(tmp_path):
    path = write(tmp_path, "models:\n  - name: [\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.errors[0].startswith(f"{path}: not valid YAML:")
    assert f'in "{path}", line' in e.value.errors[0]


def test_a_file_that_is_not_text_is_a_clear_error(tmp_path):
    path = tmp_path / "modelmon.yaml"
    path.write_bytes(b"models: \xff\xfe\n")
    with pytest.raises(ConfigError, match="cannot read: not UTF-8"):
        load_config(path)


# --------------------------------------------------------------------------- URLs and secrets


def with_alerting(**alerting):
    return {"models": [model()], "alerting": alerting}


def webhook(**settings):
    return {"receivers": [{"name": "hook", "webhook": settings}]}


@pytest.mark.parametrize("settings", [{"url": "https://hooks.example/x"}, {"url_file": "/run/secrets/hook_url"},
                                      {"url_env": "HOOK_URL"}])
def test_a_webhook_url_from_one_source(settings):
    cfg = parse_config(with_alerting(**webhook(**settings)))
    assert cfg.alerting.receivers[0].settings == settings


@pytest.mark.parametrize("settings, message", [
    ({}, "alerting.receivers[0].webhook: expected exactly one of url, url_file, url_env"),
    ({"url": "https://h/x", "url_env": "HOOK"},
     "alerting.receivers[0].webhook: expected exactly one of url, url_file, url_env (got url, url_env)"),
    ({"url_file": "/f", "url_env": "HOOK"},
     "alerting.receivers[0].webhook: expected exactly one of url, url_file, url_env (got url_file, url_env)"),
    ({"url_env": "../../etc/passwd"},  # it names a file in the secrets folder: no path tricks
     "alerting.receivers[0].webhook.url_env: expected an environment variable name (letters, digits, '_'), "
     "got '../../etc/passwd'"),
    ({"url_file": ""}, "alerting.receivers[0].webhook.url_file: expected a file path, got ''"),
    ({"url": "hooks.example/x"}, "alerting.receivers[0].webhook.url: expected an http(s) URL, got 'hooks.example/x'"),
    ({"url": "https://h/x", "bearer_token_file": "/f", "bearer_token_env": "T"},
     "alerting.receivers[0].webhook: give one of bearer_token_file, bearer_token_env, not both"),
])
def test_webhook_url_errors(settings, message):
    assert message in errors_of(with_alerting(**webhook(**settings)))


SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize("data, message", [
    (with_alerting(**webhook(url=f"http://alert:{SECRET}@hooks.example/x")),
     "alerting.receivers[0].webhook.url: credentials inline in a URL are refused; use url_file or url_env"),
    (with_alerting(**webhook(url="https://token-only@hooks.example/x")),  # user@ without a password too
     "alerting.receivers[0].webhook.url: credentials inline in a URL are refused; use url_file or url_env"),
    (with_alerting(runbook_url=f"https://wiki:{SECRET}@wiki.example/runbook"),
     "alerting.runbook_url: credentials inline in a URL are refused; the link is copied into every notification"),
    (with_alerting(dashboard_url=f"http://viewer:{SECRET}@grafana.example:3000"),
     "alerting.dashboard_url: credentials inline in a URL are refused; the link is copied into every notification"),
    ({"models": [model()], "grafana": {"url": f"http://admin:{SECRET}@grafana.example:3000"}},
     "grafana.url: credentials inline in a URL are refused; use GRAFANA_TOKEN or --token-file (or GRAFANA_USER "
     "and GRAFANA_PASSWORD) with `modelmon dashboards push`"),
])
def test_credentials_inline_in_a_url_are_refused_with_the_key_path(data, message):
    errs = errors_of(data)
    assert message in errs
    assert not any(SECRET in e for e in errs)  # the message never repeats the secret


def test_a_refused_url_is_masked_even_when_it_is_wrong_for_another_reason():
    errs = errors_of(with_alerting(dashboard_url=f"ftp://viewer:{SECRET}@files.example/"))
    assert errs == ["alerting.dashboard_url: expected an http(s) URL, got 'ftp://***@files.example/'"]


def test_every_env_secret_names_a_variable():
    errs = errors_of(with_alerting(receivers=[
        {"name": "chat", "slack": {"channel": "#a", "api_url_env": "SLACK URL"}},
        {"name": "pager", "pagerduty": {"routing_key_file": "/f", "routing_key_env": "PD"}},
    ]))
    assert "alerting.receivers[0].slack.api_url_env: expected an environment variable name (letters, digits, " \
           "'_'), got 'SLACK URL'" in errs
    assert "alerting.receivers[1].pagerduty: give one of routing_key_file, routing_key_env, not both" in errs


def test_recording_windows_are_normalised_and_the_alert_window_is_one_of_them():
    base = {"models": [{"name": "m", "task": "binary", "features": {"numeric": ["x"]}, "reference": {"first": 10}}]}
    cfg = parse_config({**base, "recording": {"windows": ["1d", "60m", "30s"]}})
    assert cfg.recording.windows == ("30s", "1h", "1d") and cfg.recording.alert_window == "30s"
    assert parse_config(base).recording.windows == ("1h", "1d") and parse_config(base).recording.alert_window == "1h"
    for recording, message in (({"windows": []}, "recording.windows: expected a non-empty list"),
                               ({"windows": ["1h"], "alert_window": "5m"}, "recording.alert_window: 5m is not one of"),
                               ({"windows": ["soon"]}, "recording.windows[0]: expected a duration"),
                               ({"windows": ["1h"], "every": 1}, "recording.every: unknown key")):
        with pytest.raises(ConfigError) as e:
            parse_config({**base, "recording": recording})
        assert any(message in err for err in e.value.errors), e.value.errors


def test_kubernetes_settings_are_checked():
    base = {"models": [{"name": "m", "task": "binary", "features": {"numeric": ["x"]}, "reference": {"first": 10}}]}
    cfg = parse_config({**base, "kubernetes": {"namespace": "ml-monitoring", "memory_limit": "4Gi",
                                               "rule_labels": {"prometheus": "main"}}})
    assert (cfg.kubernetes.namespace, cfg.kubernetes.memory_limit) == ("ml-monitoring", "4Gi")
    assert cfg.kubernetes.rule_labels == {"prometheus": "main"} and cfg.kubernetes.cpu_request == "500m"
    with pytest.raises(ConfigError) as e:
        parse_config({**base, "kubernetes": {"namespace": "Bad_NS", "cpu_limit": "lots", "log_path": "rel/x",
                                             "monitor_labels": ["x"]}})
    joined = "\n".join(e.value.errors)
    for key in ("namespace", "cpu_limit", "log_path", "monitor_labels"):
        assert f"kubernetes.{key}:" in joined
