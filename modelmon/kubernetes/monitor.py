"""The ServiceMonitor that has prometheus-operator scrape the exporter.

The `job` label of the scraped series must be the job the generated rules and dashboards select
(``grafana.job``, by default contract.EXPORTER_JOB = "modelmon"); the operator would otherwise name
it after the Service (``modelmon-exporter``). A relabeling sets it, whatever the Service is called.
"""
from __future__ import annotations

from typing import Any

from modelmon.config import Config
from modelmon.kubernetes import exporter, meta

SCRAPE_INTERVAL = "15s"  # as prometheus/prometheus.yml scrapes the exporter (the rules' windows assume it)


def service_monitor(config: Config) -> dict[str, Any]:
    k = config.kubernetes
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": meta.metadata(exporter.NAME, k.namespace, meta.EXPORTER, k.monitor_labels),
        "spec": {
            # No namespaceSelector: the Service is in the ServiceMonitor's own namespace, whichever
            # namespace kustomize puts them in.
            "selector": {"matchLabels": dict(meta.SELECTOR)},
            "endpoints": [{
                "port": exporter.PORT_NAME,
                "path": "/metrics",
                "interval": SCRAPE_INTERVAL,
                "relabelings": [{"action": "replace", "targetLabel": "job", "replacement": config.grafana.job}],
            }],
        },
    }
