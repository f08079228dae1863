"""The kubernetes/ folder of `modelmon generate`: every manifest and the kustomization listing them.

    kubernetes/
      kustomization.yaml          namespace + every resource below
      exporter/                   Deployment, Service, state PVC, ServiceMonitor, config ConfigMaps
      rules/<rule file>.yaml      one PrometheusRule per prometheus/rules/*.yml
      dashboards/<uid>.yaml       one ConfigMap per grafana/dashboards/*.json

The rules and dashboards are the texts the other producers generate (passed in by
modelmon.generate, or produced here when called alone), so the cluster runs exactly the files
committed under prometheus/rules/ and grafana/dashboards/.
"""
from __future__ import annotations

import posixpath
from typing import Any, Mapping

from modelmon.config import Config
from modelmon.generation import GenerationContext
from modelmon.kubernetes import config_files, dashboards, exporter, monitor, render, rules

DIR = "kubernetes"
KUSTOMIZATION = f"{DIR}/kustomization.yaml"


def manifests(source: Config | GenerationContext, produced: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """{path under kubernetes/: resource}. ``produced``: the files of the other producers
    (at least prometheus/rules/*.yml and grafana/dashboards/*.json)."""
    from modelmon.alerting.generate import RULES_DIR
    from modelmon.dashboards.generate import DASHBOARD_DIR

    ctx = GenerationContext.of(source)
    config = ctx.config
    if produced is None:
        from modelmon.alerting.generate import artefacts as alerting_artefacts
        from modelmon.dashboards.generate import artefacts as dashboard_artefacts
        produced = {**alerting_artefacts(ctx), **dashboard_artefacts(ctx)}

    def under(folder: str, ext: str) -> dict[str, str]:
        return {p: t for p, t in produced.items() if posixpath.dirname(p) == folder and p.endswith(ext)}

    pod = config_files.pod_config(config)
    out: dict[str, dict[str, Any]] = {
        "exporter/deployment.yaml": exporter.deployment(config, pod),
        "exporter/service.yaml": exporter.service(config),
        "exporter/state.yaml": exporter.state_claim(config),
        "exporter/servicemonitor.yaml": monitor.service_monitor(config),
    }
    out.update({f"exporter/{name}": cm for name, cm in pod.config_maps.items()})
    for path, rule in rules.prometheus_rules(config, under(RULES_DIR, ".yml")).items():
        out[f"rules/{posixpath.splitext(posixpath.basename(path))[0]}.yaml"] = rule
    for path, cm in dashboards.dashboard_config_maps(config, under(DASHBOARD_DIR, ".json")).items():
        out[f"dashboards/{posixpath.splitext(posixpath.basename(path))[0]}.yaml"] = cm
    _check_unique(out)
    return dict(sorted(out.items()))


def _check_unique(resources: Mapping[str, dict[str, Any]]) -> None:
    seen: dict[tuple[str, str], str] = {}
    for path, r in resources.items():
        key = (r["kind"], r["metadata"]["name"])
        if key in seen:
            raise ValueError(f"kubernetes: {seen[key]} and {path} are both {key[0]} {key[1]}")
        seen[key] = path


def kustomization(config: Config, resources: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        # Every resource goes to this namespace; it must exist (it is not created here: deleting
        # this kustomization must not delete a namespace the cluster's Prometheus may live in).
        "namespace": config.kubernetes.namespace,
        "resources": sorted(resources),
    }


def artefacts(source: Config | GenerationContext, produced: Mapping[str, str] | None = None) -> dict[str, str]:
    """{repo-relative path: exact text} for the kubernetes/ folder."""
    ctx = GenerationContext.of(source)
    found = manifests(ctx, produced)
    files = {f"{DIR}/{rel}": render.dump(doc) for rel, doc in found.items()}
    files[KUSTOMIZATION] = render.dump(kustomization(ctx.config, list(found)))
    return dict(sorted(files.items()))
