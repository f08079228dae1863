"""Grafana dashboard ConfigMaps for the Grafana sidecar (kiwigrid k8s-sidecar, as
kube-prometheus-stack's Grafana runs it).

One ConfigMap per generated dashboard, holding the committed JSON unchanged under ``<uid>.json``,
labelled ``<kubernetes.dashboard_label>: "1"`` (the sidecar's ``label``/``labelValue``) and
annotated ``grafana_folder: <grafana.folder>`` (the sidecar's ``folderAnnotation``, which
kube-prometheus-stack sets to ``grafana_folder``; the sidecar needs ``provider.foldersFromFilesStructure``).
"""
from __future__ import annotations

import json
import posixpath
from typing import Any, Mapping

from modelmon.config import Config
from modelmon.kubernetes import meta, render

COMPONENT = "dashboards"
FOLDER_ANNOTATION = "grafana_folder"
SIDECAR_LABEL_VALUE = "1"


def dashboard_config_map(config: Config, path: str, text: str) -> dict[str, Any]:
    uid = json.loads(text)["uid"]
    k = config.kubernetes
    short = uid[len(meta.APP) + 1:] if uid.startswith(meta.APP + "-") else uid
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta.metadata(render.name(meta.APP, "dashboard", short), k.namespace, COMPONENT,
                                  {k.dashboard_label: SIDECAR_LABEL_VALUE},
                                  {FOLDER_ANNOTATION: config.grafana.folder, "modelmon.io/source": path}),
        "data": {render.data_key(posixpath.basename(path)): text},
    }


def dashboard_config_maps(config: Config, dashboard_files: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """{dashboard JSON path: its ConfigMap}, for the dashboard files given (grafana/dashboards/*.json)."""
    return {path: dashboard_config_map(config, path, text) for path, text in sorted(dashboard_files.items())}
