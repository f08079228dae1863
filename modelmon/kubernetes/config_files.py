"""modelmon.yaml and its reference files, as the exporter pod reads them.

The exporter reads ``/etc/modelmon/modelmon.yaml`` (as in the image and docker-compose.yml) and
resolves relative reference paths against that folder. Every reference file is shipped in a
ConfigMap of its own (one object stays within the 1 MiB a ConfigMap holds, and a change to one file
changes one object), and one projected volume lays them out under /etc/modelmon exactly where the
config's own relative paths point: the config is shipped as written, comments and all.

A reference outside the config's folder (an absolute path, ``../``) has no place under
/etc/modelmon: it is shipped at ``references/<model>/<file>`` and the pod's copy of the config
points there (that copy is then re-serialised YAML, without the comments). A ``{first: N}``
reference is frozen from traffic into the reference store on the state volume: nothing to ship.
"""
from __future__ import annotations

import base64
import hashlib
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modelmon.config import Config, ConfigError, load_yaml
from modelmon.kubernetes import meta, render

CONFIG_DIR = "/etc/modelmon"  # as in the Dockerfile and docker-compose.yml
CONFIG_FILE = "modelmon.yaml"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_FILE}"
MOVED_DIR = "references"  # under CONFIG_DIR: references that lie outside the config's folder
CONFIGMAP_MAX_BYTES = 1 << 20  # the API server refuses a ConfigMap whose data is larger
COMPONENT = "config"
CONFIG_MAP = f"{meta.APP}-config"


@dataclass(frozen=True)
class ReferenceFile:
    source: Path  # on this machine
    pod_path: str  # relative to CONFIG_DIR
    config_map: str
    key: str
    file: str  # its manifest, under kubernetes/exporter/


@dataclass(frozen=True)
class PodConfig:
    """The ConfigMaps of the exporter's configuration and how its pod lays them out."""

    config_maps: dict[str, dict[str, Any]]  # {file name under kubernetes/exporter/: ConfigMap}
    volume_sources: list[dict[str, Any]]  # the projected volume mounted at CONFIG_DIR
    checksum: str  # of everything shipped: a change rolls the pod (it reads its config at start)
    references: tuple[ReferenceFile, ...] = field(default=())


def pod_config(config: Config) -> PodConfig:
    if config.path is None:
        raise ValueError("the Kubernetes output ships modelmon.yaml as written: load the config from its file")
    config_path = Path(config.path)
    text = config_path.read_text()
    base = config_path.resolve().parent
    references: list[ReferenceFile] = []
    moved: dict[str, str] = {}  # model name -> new relative path, for references outside base
    seen: dict[Path, ReferenceFile] = {}
    errors = []
    for i, m in enumerate(config.models):
        if m.reference.path is None:
            continue
        source = Path(m.reference.path).resolve()
        rel = Path(os.path.relpath(source, base)).as_posix()
        outside = rel.startswith("../") or os.path.isabs(rel)
        if outside:
            rel = posixpath.join(MOVED_DIR, render.name(m.name), source.name)
            moved[m.name] = rel
        elif source in seen:  # two models, one file: shipped once
            continue
        try:
            size = source.stat().st_size
        except OSError as e:
            errors.append(f"models[{i}].reference: cannot read {source}: {e.strerror}")
            continue
        if size > CONFIGMAP_MAX_BYTES - 4096:
            errors.append(f"models[{i}].reference: {source.name} is {size} bytes; the Kubernetes output ships "
                          f"reference files in ConfigMaps, which hold at most {CONFIGMAP_MAX_BYTES} bytes: "
                          "use a smaller sample of the reference, or {first: N}")
            continue
        ref = ReferenceFile(source, rel, render.name(meta.APP, "reference", _stem(rel)),
                            render.data_key(source.name), f"reference-{render.name(_stem(rel))}.yaml")
        seen[source] = ref
        references.append(ref)
    if errors:
        raise ConfigError(errors)
    if moved:
        text = _moved_config(text, str(config_path), moved)

    maps: dict[str, dict[str, Any]] = {"config.yaml": _config_map(config, CONFIG_MAP, {CONFIG_FILE: text.encode()})}
    sources: list[dict[str, Any]] = [{"configMap": {"name": CONFIG_MAP,
                                                    "items": [{"key": CONFIG_FILE, "path": CONFIG_FILE}]}}]
    digest = hashlib.sha256()
    digest.update(text.encode())
    for ref in sorted(references, key=lambda r: r.pod_path):
        body = ref.source.read_bytes()
        digest.update(ref.pod_path.encode() + b"\0" + body)
        if ref.file in maps or any(m["metadata"]["name"] == ref.config_map for m in maps.values()):
            raise ValueError(f"two reference files are named {ref.config_map} in Kubernetes: rename one")
        maps[ref.file] = _config_map(config, ref.config_map, {ref.key: body})
        sources.append({"configMap": {"name": ref.config_map, "items": [{"key": ref.key, "path": ref.pod_path}]}})
    return PodConfig(maps, sources, digest.hexdigest(), tuple(references))


def _stem(rel: str) -> str:
    """``examples/reference/credit.csv`` -> ``credit``; a moved file keeps its model's folder name."""
    parts = rel.split("/")
    stem = posixpath.splitext(parts[-1])[0]
    return f"{parts[1]}-{stem}" if parts[0] == MOVED_DIR and len(parts) == 3 else stem


def _config_map(config: Config, name: str, files: dict[str, bytes]) -> dict[str, Any]:
    """A ConfigMap holding ``files``: text as ``data``, anything that is not UTF-8 (Parquet) as
    base64 ``binaryData``."""
    data: dict[str, str] = {}
    binary: dict[str, str] = {}
    for key, body in sorted(files.items()):
        try:
            data[key] = body.decode("utf-8")
        except UnicodeDecodeError:
            binary[key] = base64.b64encode(body).decode("ascii")
    out: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": meta.metadata(name, config.kubernetes.namespace, COMPONENT)}
    if data:
        out["data"] = data
    if binary:
        out["binaryData"] = binary
    return out


def _moved_config(text: str, source: str, moved: dict[str, str]) -> str:
    """The config with the reference of each model in ``moved`` replaced by its pod path."""
    data = load_yaml(text, source)
    for model in data.get("models") or []:
        if isinstance(model, dict) and model.get("name") in moved:
            model["reference"] = moved[model["name"]]
    return ("# modelmon.yaml as the exporter pod reads it (generated by modelmon generate from "
            f"{Path(source).name}):\n# reference files outside its folder are shipped under "
            f"{CONFIG_DIR}/{MOVED_DIR}/.\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
