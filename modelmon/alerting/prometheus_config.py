"""prometheus/prometheus.yml: scrape the exporter, Prometheus and Alertmanager; load the rules; alert.

Targets default to the docker-compose service names (the committed file). The topology
(modelmon/stack/topology.py) renders it for a target by passing ScrapeTargets: `modelmon stack up`
passes 127.0.0.1 and its chosen ports; tests pass their own targets and intervals.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from modelmon.contract import EXPORTER_JOB


@dataclass(frozen=True)
class ScrapeTargets:
    exporter: str = "exporter:9188"
    prometheus: str = "prometheus:9090"
    alertmanager: str = "alertmanager:9093"


@dataclass(frozen=True)
class PrometheusOptions:
    targets: ScrapeTargets = field(default_factory=ScrapeTargets)
    scrape_interval: str = "15s"
    evaluation_interval: str = "15s"
    rule_files: tuple[str, ...] = ("rules/*.yml",)  # relative to prometheus.yml


def prometheus_config(options: PrometheusOptions = PrometheusOptions()) -> dict:
    t = options.targets

    def job(name: str, target: str) -> dict:
        return {"job_name": name, "static_configs": [{"targets": [target]}]}

    return {
        "global": {
            "scrape_interval": options.scrape_interval,
            "evaluation_interval": options.evaluation_interval,
        },
        "rule_files": list(options.rule_files),
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [t.alertmanager]}]}]},
        "scrape_configs": [
            job(EXPORTER_JOB, t.exporter),
            job("prometheus", t.prometheus),
            job("alertmanager", t.alertmanager),
        ],
    }
