"""Labels and metadata every generated resource shares."""
from __future__ import annotations

from typing import Any, Mapping

from modelmon import __version__

APP = "modelmon"
EXPORTER = "exporter"
# What the exporter's Deployment selects and its Service routes to (immutable once applied: keep small).
SELECTOR = {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": EXPORTER}


def labels(component: str, extra: Mapping[str, str] = {}) -> dict[str, str]:
    """The recommended app.kubernetes.io labels of a modelmon resource, then ``extra`` (the
    selector labels of prometheus-operator or the Grafana sidecar, from modelmon.yaml)."""
    out = {
        "app.kubernetes.io/name": APP,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": APP,
        "app.kubernetes.io/version": __version__,
        "app.kubernetes.io/managed-by": "modelmon-generate",
    }
    out.update(extra)
    return out


def metadata(name: str, namespace: str, component: str, extra_labels: Mapping[str, str] = {},
             annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels(component, extra_labels)}
    if annotations:
        out["annotations"] = dict(annotations)
    return out
