"""The alerting half of `modelmon generate`: rule files, prometheus.yml and alertmanager.yml."""
from __future__ import annotations

from modelmon.alerting.alertmanager import AlertmanagerOptions, alertmanager_config
from modelmon.alerting.options import RuleOptions
from modelmon.alerting.prometheus_config import PrometheusOptions, prometheus_config
from modelmon.alerting.render import dump_yaml
from modelmon.alerting.rules import rule_files
from modelmon.config import Config

PROMETHEUS_DIR = "prometheus"
RULES_DIR = "prometheus/rules"
ALERTMANAGER_FILE = "alerting/alertmanager.yml"


def artefacts(config: Config, *, rules: RuleOptions = RuleOptions(),
              prometheus: PrometheusOptions = PrometheusOptions(),
              alertmanager: AlertmanagerOptions = AlertmanagerOptions()) -> dict[str, str]:
    """{repo-relative path: exact file text}. The defaults give the committed files; an
    end-to-end test passes short clocks (RuleOptions) and 127.0.0.1 targets (PrometheusOptions)."""
    out = {f"{RULES_DIR}/{name}": dump_yaml(doc) for name, doc in rule_files(config, rules).items()}
    out[f"{PROMETHEUS_DIR}/prometheus.yml"] = dump_yaml(prometheus_config(prometheus))
    out[ALERTMANAGER_FILE] = dump_yaml(alertmanager_config(config, alertmanager))
    return dict(sorted(out.items()))
