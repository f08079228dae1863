"""All Grafana artefacts of a config: dashboard JSON and provisioning files.

``modelmon generate`` writes ``artefacts(config)``; ``dashboards push`` sends ``dashboards(config)``.
"""
from __future__ import annotations

import json
from typing import Any

from modelmon.config import Config
from modelmon.dashboards import drift, model_detail, overview, rollout, self_monitoring, service
from modelmon.dashboards.provisioning import provisioning_files
from modelmon.generation import GenerationContext

DASHBOARD_DIR = "grafana/dashboards"
BUILDERS = (overview.build, model_detail.build, rollout.build, drift.build, service.build, self_monitoring.build)


def dashboards(source: Config | GenerationContext) -> list[dict[str, Any]]:
    """Every dashboard, from the generation context (or a Config with the default policy): the
    overview, one model detail per task the config has, rollout, drift, service and modelmon itself."""
    ctx = GenerationContext.of(source)
    out: list[dict[str, Any]] = []
    for build in BUILDERS:
        built = build(ctx)
        out.extend(built if isinstance(built, list) else [built])
    return out


def render(dashboard: dict[str, Any]) -> str:
    """The committed form of a dashboard: sorted keys, two-space indent, trailing newline."""
    return json.dumps(dashboard, sort_keys=True, indent=2) + "\n"


def dashboard_path(dashboard: dict[str, Any]) -> str:
    return f"{DASHBOARD_DIR}/{dashboard['uid']}.json"


def artefacts(source: Config | GenerationContext) -> dict[str, str]:
    """Repo-relative path -> exact file text, for every Grafana file modelmon generates."""
    ctx = GenerationContext.of(source)
    files = {dashboard_path(d): render(d) for d in dashboards(ctx)}
    files.update(provisioning_files(ctx.config))
    return dict(sorted(files.items()))
