"""The exporter's workload: Deployment, Service and the claim of its state volume.

The pod runs the image's `modelmon serve` (its entrypoint is `modelmon`) with the flags
docker-compose.yml gives it, and with every state file on the state volume instead of beside the
log: the log volume is mounted read-only, as the model service owns it.

- one replica, strategy Recreate: the state volume (read offset, checkpoint, frozen references) is
  ReadWriteOnce and belongs to one process. Scale out with more Deployments sharded by model or
  log, each with its own state (see the scale-out section of the README);
- probes: startup and liveness on /healthz (the process answers), readiness on /ready (log open,
  references loaded);
- non-root (the image's uid 10001), read-only root filesystem, no capabilities, RuntimeDefault
  seccomp, no service-account token (the exporter never calls the API server).
"""
from __future__ import annotations

import posixpath
from typing import Any

from modelmon.config import Config, ConfigError
from modelmon.exporter.cli import CHECKPOINT_SUFFIX, DEFAULT_PORT, OFFSET_SUFFIX, REFERENCES_SUFFIX
from modelmon.kubernetes import meta
from modelmon.kubernetes.config_files import CONFIG_DIR, CONFIG_PATH, PodConfig

NAME = f"{meta.APP}-{meta.EXPORTER}"
STATE_CLAIM = f"{meta.APP}-state"
STATE_DIR = "/var/lib/modelmon"
TMP_DIR = "/tmp"
PORT_NAME = "metrics"  # the Service port the ServiceMonitor scrapes (POST /ingest is served there too)
UID = GID = 10001  # the image's user `modelmon` (Dockerfile: useradd --uid 10001)
CHECKSUM_ANNOTATION = "modelmon.io/config-sha256"
TERMINATION_GRACE_SECONDS = 60  # the exporter saves a checkpoint on SIGTERM


class LayoutError(ConfigError):
    """A kubernetes setting the pod cannot be laid out with: one line naming the key, as config errors."""


def log_dir(config: Config) -> str:
    """The folder the log volume is mounted at: the one holding kubernetes.log_path."""
    folder = posixpath.dirname(posixpath.normpath(config.kubernetes.log_path))
    for other in (CONFIG_DIR, STATE_DIR, TMP_DIR):
        if folder in ("/", "") or folder == other or folder.startswith(other + "/") or other.startswith(folder + "/"):
            raise LayoutError([f"kubernetes.log_path: {config.kubernetes.log_path} lies in (or above) {other}, "
                               "which the exporter pod mounts for something else; use a folder of its own such "
                               "as /var/log/modelmon"])
    return folder


def serve_args(config: Config) -> list[str]:
    log = posixpath.normpath(config.kubernetes.log_path)
    base = posixpath.join(STATE_DIR, posixpath.basename(log))
    return [
        "serve",
        f"--config={CONFIG_PATH}",
        f"--log={log}",
        f"--state-file={base}{OFFSET_SUFFIX}",
        f"--checkpoint={base}{CHECKPOINT_SUFFIX}",
        f"--reference-store={base}{REFERENCES_SUFFIX}",
        "--host=0.0.0.0",
        f"--port={DEFAULT_PORT}",
    ]


def _probe(path: str, period: int, failures: int, timeout: int = 5) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": PORT_NAME}, "periodSeconds": period, "timeoutSeconds": timeout,
            "failureThreshold": failures}


def deployment(config: Config, pod: PodConfig) -> dict[str, Any]:
    k = config.kubernetes
    container = {
        "name": meta.EXPORTER,
        "image": k.image,
        "args": serve_args(config),
        "ports": [{"name": PORT_NAME, "containerPort": DEFAULT_PORT, "protocol": "TCP"}],
        # References load before the port opens: up to 5 minutes before liveness takes over.
        "startupProbe": _probe("/healthz", 5, 60),
        "livenessProbe": _probe("/healthz", 10, 6),
        "readinessProbe": _probe("/ready", 10, 3),
        "resources": {"requests": {"cpu": k.cpu_request, "memory": k.memory_request},
                      "limits": {"cpu": k.cpu_limit, "memory": k.memory_limit}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": GID,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "predictions", "mountPath": log_dir(config), "readOnly": True},
            {"name": "state", "mountPath": STATE_DIR},
            {"name": "tmp", "mountPath": TMP_DIR},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta.metadata(NAME, k.namespace, meta.EXPORTER),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},  # the state volume is ReadWriteOnce: never two pods at once
            "selector": {"matchLabels": dict(meta.SELECTOR)},
            "template": {
                "metadata": {"labels": meta.labels(meta.EXPORTER),
                             "annotations": {CHECKSUM_ANNOTATION: pod.checksum}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": UID,
                        "runAsGroup": GID,
                        "fsGroup": GID,  # the state volume is writable by the image's user
                        "fsGroupChangePolicy": "OnRootMismatch",
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [
                        {"name": "config", "projected": {"sources": pod.volume_sources}},
                        {"name": "predictions", "persistentVolumeClaim": {"claimName": k.log_claim, "readOnly": True}},
                        {"name": "state", "persistentVolumeClaim": {"claimName": STATE_CLAIM}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                    ],
                },
            },
        },
    }


def service(config: Config) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta.metadata(NAME, config.kubernetes.namespace, meta.EXPORTER),
        "spec": {
            "type": "ClusterIP",
            "selector": dict(meta.SELECTOR),
            "ports": [{"name": PORT_NAME, "port": DEFAULT_PORT, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }


def state_claim(config: Config) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta.metadata(STATE_CLAIM, config.kubernetes.namespace, meta.EXPORTER),
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": config.kubernetes.state_size}},
        },
    }
