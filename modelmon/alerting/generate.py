"""The alerting half of `modelmon generate`: rule files, prometheus.yml and alertmanager.yml."""
from __future__ import annotations

from modelmon.alerting.alertmanager import AlertmanagerOptions, alertmanager_config
from modelmon.alerting.options import RuleOptions
from modelmon.alerting.prometheus_config import PrometheusOptions, prometheus_config
from modelmon.alerting.render import dump_yaml
from modelmon.alerting.rules import rule_files
from modelmon.config import Config
from modelmon.generation import GenerationContext

PROMETHEUS_DIR = "prometheus"
RULES_DIR = "prometheus/rules"
ALERTMANAGER_FILE = "alerting/alertmanager.yml"


def artefacts(source: Config | GenerationContext, *, rules: RuleOptions | None = None,
              prometheus: PrometheusOptions = PrometheusOptions(),
              alertmanager: AlertmanagerOptions = AlertmanagerOptions()) -> dict[str, str]:
    """{repo-relative path: exact file text}. ``source`` is the generation context (or a Config,
    for which one is built with ``rules``). The defaults give the committed files; an end-to-end
    test passes short clocks (RuleOptions) and 127.0.0.1 targets (PrometheusOptions)."""
    ctx = GenerationContext.of(source, rules)
    config = ctx.config
    out = {f"{RULES_DIR}/{name}": dump_yaml(doc) for name, doc in rule_files(config, ctx.rules, ctx.policy).items()}
    out[f"{PROMETHEUS_DIR}/prometheus.yml"] = dump_yaml(prometheus_config(prometheus))
    out[ALERTMANAGER_FILE] = dump_yaml(alertmanager_config(config, alertmanager))
    return dict(sorted(out.items()))
