"""PrometheusRule resources carrying exactly the generated rule files.

The rule groups are parsed from the texts the rule generator writes to prometheus/rules/*.yml
(never derived a second time), one PrometheusRule per file, labelled with
``kubernetes.rule_labels`` so that the Prometheus of prometheus-operator selects them
(its ``ruleSelector``; kube-prometheus-stack's default is ``release: <its release name>``).
"""
from __future__ import annotations

import posixpath
from typing import Any, Mapping

import yaml

from modelmon.config import Config
from modelmon.kubernetes import meta, render

API_VERSION = "monitoring.coreos.com/v1"
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: same document, 10x faster
COMPONENT = "rules"


def rule_groups(text: str, path: str) -> list[dict[str, Any]]:
    """The groups of one generated rule file."""
    doc = yaml.load(text, Loader=_LOADER)
    if not isinstance(doc, dict) or set(doc) != {"groups"}:
        raise ValueError(f"{path}: expected a rule file with `groups` only")
    return doc["groups"]


def prometheus_rule(config: Config, path: str, text: str) -> dict[str, Any]:
    stem = posixpath.splitext(posixpath.basename(path))[0]
    k = config.kubernetes
    return {
        "apiVersion": API_VERSION,
        "kind": "PrometheusRule",
        "metadata": meta.metadata(resource_name(stem), k.namespace, COMPONENT, k.rule_labels,
                                  {"modelmon.io/source": path}),
        "spec": {"groups": rule_groups(text, path)},
    }


def resource_name(stem: str) -> str:
    """``model-credit`` -> ``modelmon-model-credit``; ``modelmon`` stays ``modelmon``."""
    return render.name(stem) if stem == meta.APP or stem.startswith(meta.APP + "-") else render.name(meta.APP, stem)


def prometheus_rules(config: Config, rule_files: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """{rule file path: its PrometheusRule}, for the rule files given (prometheus/rules/*.yml)."""
    return {path: prometheus_rule(config, path, text) for path, text in sorted(rule_files.items())}
