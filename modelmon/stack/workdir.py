"""The native stack's files: configs rendered for the native target, secrets, data and log folders.

The generated configs are rendered afresh from modelmon.yaml for 127.0.0.1, the chosen ports and
the work directory (``topology.render_configs``); the project's hand-written files under
prometheus/, alerting/ and grafana/ (promtool tests, the runbook) are copied as they are.
"""
from __future__ import annotations

import glob
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Mapping

from modelmon.exporter.cli import STATE_SUFFIXES, beside
from modelmon.stack.errors import StackError
from modelmon.stack.topology import (
    EXPORTER_CHECKPOINT, HEARTBEAT, PREDICTIONS, REDIS_DATA, Layout, Target, render_configs,
)

SOURCE_DIRS = ("prometheus", "alerting", "grafana")
# Hand-written files no service reads: promtool's unit tests check the committed (compose) rules.
NOT_RUN = ("prometheus/tests/",)
PROMETHEUS_CONFIG = "prometheus/prometheus.yml"
ALERTMANAGER_CONFIG = "alerting/alertmanager.yml"


def read_sources(project_dir: Path) -> dict[str, str]:
    """Every file under prometheus/, alerting/ and grafana/ of the project, by relative path
    (but the promtool tests, which no service reads)."""
    files: dict[str, str] = {}
    for top in SOURCE_DIRS:
        for path in sorted((project_dir / top).rglob("*")):
            rel = path.relative_to(project_dir).as_posix()
            if path.is_file() and "__pycache__" not in path.parts and not rel.startswith(NOT_RUN):
                files[rel] = path.read_text()
    return files


def stack_sources(config: object, project_dir: Path, target: Target, rules: object = None) -> dict[str, str]:
    """The files the stack runs on: generated afresh from the config for ``target``, so an edited
    modelmon.yaml takes effect without `modelmon generate`, plus the project's hand-written files.
    In folders whose files are all generated, only fresh ones count: no orphan rule file from an
    old config. `rules` (RuleOptions) is for `--quick`: the same alerts on shorter clocks."""
    from modelmon.generate import OWNED_DIRS

    handwritten = {rel: text for rel, text in read_sources(project_dir).items()
                   if not any(rel.startswith(d + "/") for d in OWNED_DIRS)}
    fresh = {rel: text for rel, text in render_configs(config, target, rules=rules).items()
             if rel.split("/", 1)[0] in SOURCE_DIRS}
    return {**handwritten, **fresh}


def require(files: Mapping[str, str], *paths: str) -> None:
    missing = [p for p in paths if p not in files]
    if missing:
        raise StackError(f"missing {', '.join(missing)}: run `modelmon generate --config modelmon.yaml` "
                         "in the project directory first")


def write_configs(files: Mapping[str, str], layout: Layout) -> list[Path]:
    """Write the files under layout.etc as they are (rebuilt from scratch: no stale rule files).
    The Alertmanager config is written 0600: the stack may copy secrets into it (see
    ``write_alertmanager_secrets``)."""
    from modelmon.alerting.alertmanager import write_secret_file

    if layout.etc.exists():
        shutil.rmtree(layout.etc)
    written = []
    for rel, text in sorted(files.items()):
        target = layout.etc / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel == ALERTMANAGER_CONFIG:
            write_secret_file(target, text)
        else:
            target.write_text(text)
        written.append(target)
    return written


def alertmanager_version(binary: str) -> tuple[int, int, int] | None:
    """``prometheus-alertmanager --version`` as (0, 25, 0); None when it cannot be told."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"\bversion (\d+)\.(\d+)\.(\d+)", out.stdout + out.stderr)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def secrets_dir(layout: Layout) -> Path:
    """Where the stack writes *_env secrets: the native place of compose's ./secrets mount."""
    return layout.alertmanager_secrets


def write_alertmanager_secrets(config: Any, layout: Layout, version: tuple[int, int, int] | None,
                               environ: Mapping[str, str]) -> list[str]:
    """Make the rendered Alertmanager config runnable: each *_env secret written to its file
    (0600) in the work directory; for an Alertmanager without webhook ``url_file`` (before 0.26,
    or a version that cannot be told) the URLs copied into the 0600 config. Returns notes for
    the user; raises ConfigError for an unset variable or an unreadable URL file."""
    from modelmon.alerting.alertmanager import (
        URL_FILE_SINCE, inline_url_files, write_env_secrets, write_secret_file,
    )
    from modelmon.alerting.render import dump_yaml
    from modelmon.config import load_yaml

    write_env_secrets(config, secrets_dir(layout), environ)
    notes: list[str] = []
    if version is not None and version >= URL_FILE_SINCE:
        return notes
    path = layout.alertmanager_config
    document = load_yaml(path.read_text(), str(path))
    changed = inline_url_files(document)
    if changed:
        write_secret_file(path, dump_yaml(document))
        found = ".".join(map(str, version)) if version else "of unknown version"
        notes.append(
            f"Alertmanager {found} cannot read a webhook URL from a file (url_file needs "
            f"{'.'.join(map(str, URL_FILE_SINCE))} or later): the URL of {', '.join(changed)} is copied into "
            f"{path} (mode 0600), and Alertmanager shows it on its status page (/api/v2/status, on 127.0.0.1)")
    return notes


def prepare_data(layout: Layout) -> None:
    """Data and log directories; a fresh prediction log (or stream) so that the demo timeline starts over.

    The exporter's state about the old log goes with it: windows restored from the previous run
    would show its last scenario (say, concept drift) at the start of the new timeline.
    Prometheus, Alertmanager and Grafana create their own directories under layout.data.
    """
    layout.logs.mkdir(parents=True, exist_ok=True)
    layout.data.mkdir(parents=True, exist_ok=True)
    log = layout.predictions_log
    for rotated in log.parent.glob(glob.escape(log.name) + ".[0-9]*"):
        rotated.unlink()
    for suffix in STATE_SUFFIXES:
        state = beside(log, suffix)
        if state.is_dir():
            shutil.rmtree(state)
        elif state.exists():
            state.unlink()
    log.write_bytes(b"")
    # The other ways in start over too: the exporter's checkpoint without a log, the traffic's
    # heartbeat (a stale one would pass the next start's health check), the stream and its group.
    for state in (layout.at(PREDICTIONS, EXPORTER_CHECKPOINT), layout.at(PREDICTIONS, HEARTBEAT), layout.at(REDIS_DATA)):
        if state.is_dir():
            shutil.rmtree(state)
        elif state.exists():
            state.unlink()
    layout.at(REDIS_DATA).mkdir(parents=True)
