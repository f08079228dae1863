"""Prometheus rule files: one for the exporter itself, one per model (recording rules + alerts)."""
from __future__ import annotations

from modelmon.alerting.alerts import Alert, ModelAlerts, exporter_alerts
from modelmon.alerting.options import RuleOptions
from modelmon.alerting.policy import Policy, load_policy
from modelmon.alerting.recording import exporter_recording_rules, model_recording_rules
from modelmon.alerting.ways_in import ways_in_alerts
from modelmon.config import Config

__all__ = ["RuleOptions", "rule_files", "alerts_of", "EXPORTER_RULES_FILE", "model_rules_file"]

EXPORTER_RULES_FILE = "modelmon.yml"


def model_rules_file(model: str) -> str:
    return f"model-{model}.yml"


def _pipeline_alerts(policy: Policy, options: RuleOptions) -> list[Alert]:
    """Alerts without a model: the exporter's own, then those of the ways in (stream, KServe)."""
    return exporter_alerts(policy, options) + ways_in_alerts(policy, options)


def alerts_of(config: Config, options: RuleOptions = RuleOptions(), policy: Policy | None = None) -> list[Alert]:
    """Every alert the rule files hold, exporter alerts first, then model by model."""
    policy = policy or load_policy()
    out = _pipeline_alerts(policy, options)
    for m in config.models:
        out.extend(ModelAlerts(m, policy, options, config.recording).all())
    return out


def rule_files(config: Config, options: RuleOptions = RuleOptions(),
               policy: Policy | None = None) -> dict[str, dict]:
    """{file name inside prometheus/rules/: rule-file document}."""
    policy = policy or load_policy()
    alerting = config.alerting
    files = {EXPORTER_RULES_FILE: {"groups": [
        {"name": "modelmon-exporter-recording", "rules": exporter_recording_rules(options.rate_window)},
        {"name": "modelmon-exporter-alerts",
         "rules": [a.render(alerting) for a in _pipeline_alerts(policy, options)]},
    ]}}
    for m in config.models:
        files[model_rules_file(m.name)] = {"groups": [
            {"name": f"modelmon-{m.name}-recording",
             "rules": model_recording_rules(m, policy, options.rate_window, config.recording)},
            {"name": f"modelmon-{m.name}-alerts",
             "rules": [a.render(alerting) for a in ModelAlerts(m, policy, options, config.recording).all()]},
        ]}
    return files
