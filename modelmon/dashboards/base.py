"""What every modelmon dashboard shares: uids, tags, links, variables, alert annotations.

Every dashboard has a ``datasource`` variable (type datasource, Prometheus only) that every
panel, variable and annotation queries through; its default is the pinned uid
``grafana.datasource_uid``, so provisioned dashboards work as they are and another Prometheus is
one click away. Queries on exporter series select the scrape job ``grafana.job`` (written with
the PromQL builder, so it is escaped like every other label value).
"""
from __future__ import annotations

from typing import Any

from grafanalib import core

from modelmon.config import Config
from modelmon.contract import DRIFT_UID, OVERVIEW_UID, ROLLOUT_UID, SELF_UID, SERVICE_UID, TASKS, model_uid
from modelmon.dashboards.grafana import dashboard_to_dict, datasource_ref
from modelmon.dashboards.panels import Cell, PanelFactory, layout
from modelmon.promql import selector

TAG = "modelmon"

# The datasource every query goes through: the value of the dashboard's datasource variable.
DATASOURCE_VARIABLE = "datasource"
DATASOURCE = "${%s}" % DATASOURCE_VARIABLE


UIDS = (OVERVIEW_UID, *(model_uid(t) for t in TASKS), ROLLOUT_UID, DRIFT_UID, SERVICE_UID, SELF_UID)


def tasks_of(config: Config) -> list[str]:
    """The tasks of the configured models, in contract order."""
    present = {m.task for m in config.models}
    return [t for t in TASKS if t in present]


def uids(config: Config) -> tuple[str, ...]:
    """The uids of the dashboards generated for ``config``, in generation order."""
    models = tuple(model_uid(t) for t in tasks_of(config))  # the model details, then the rollout
    return (OVERVIEW_UID, *models, ROLLOUT_UID, DRIFT_UID, SERVICE_UID, SELF_UID)


def factory(config: Config) -> PanelFactory:
    return PanelFactory(DATASOURCE, job=config.grafana.job)


def datasource_variable(config: Config) -> dict[str, Any]:
    """The Prometheus every panel reads, defaulting to the provisioned one (the value of a datasource
    variable is the datasource's uid)."""
    uid = config.grafana.datasource_uid
    return {
        "name": DATASOURCE_VARIABLE,
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "regex": "",
        "current": {"selected": True, "text": uid, "value": uid},
        "options": [],
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "refresh": 1,
        "skipUrlSync": False,
        "description": "The Prometheus that scrapes modelmon (default: grafana.datasource_uid from "
                       "modelmon.yaml, the provisioned datasource).",
    }


def _query_variable(config: Config, name: str, label: str, query: str, *, default: str, multi: bool,
                    description: str) -> dict[str, Any]:
    var = core.Template(
        name=name, label=label, query=query, default=default, multi=multi, includeAll=multi,
        allValue=".*" if multi else None, dataSource=datasource_ref(DATASOURCE),
        refresh=core.REFRESH_ON_TIME_RANGE_CHANGE, sort=core.SORT_ALPHA_ASC,
    ).to_json_data()
    var["definition"] = query
    var["description"] = description
    if multi:
        var["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    # grafanalib writes these legacy keys as null/false; current Grafana does not use them.
    for key in ("useTags", "tagsQuery", "tagValuesQuery", "auto", "auto_min", "auto_count"):
        var.pop(key, None)
    return var


def model_variable(config: Config, task: str | None = None) -> dict[str, Any]:
    """The watched model; on a model-detail dashboard only the models of its ``task``."""
    labels = {"job": config.grafana.job} if task is None else {"job": config.grafana.job, "task": task}
    models = [m.name for m in config.models if task is None or m.task == task]
    which = "The watched model" if task is None else f"The watched {task} model"
    return _query_variable(
        config, "model", "Model", f"label_values({selector('modelmon_model_info', **labels)}, model)",
        default=models[0], multi=False,
        description=f"{which}; thresholds on this dashboard follow its section in modelmon.yaml.")


def version_variable(config: Config) -> dict[str, Any]:
    return _query_variable(
        config, "version", "Version",
        f"label_values({selector('modelmon_model_info', job=config.grafana.job, model='$model')}, version)",
        default="$__all", multi=True,
        description="Model versions to show side by side (canary, A/B).")


def feature_variable(config: Config) -> dict[str, Any]:
    return _query_variable(
        config, "feature", "Feature",
        f"label_values({selector('modelmon_feature_reference_ratio', job=config.grafana.job, model='$model')}, feature)",
        default="$__all", multi=True,
        description="Input features of the selected model (those with reference bins); pick one to see its bins.")


def alert_annotation(config: Config, expr: str) -> dict[str, Any]:
    """Firing Prometheus alerts as annotations (the ALERTS series the rule files create)."""
    return {
        "datasource": datasource_ref(DATASOURCE),
        "enable": True,
        "expr": expr,
        "hide": False,
        "iconColor": "red",
        "name": "Firing alerts",
        "step": "60s",
        "tagKeys": "severity,team,model",
        "textFormat": "{{alertname}} ({{severity}}) for team {{team}}",
        "titleFormat": "{{alertname}}",
        "useValueForTime": False,
    }


def build_dashboard(config: Config, *, uid: str, title: str, description: str, kind: str,
                    sections: list[tuple[str, list[Cell]]], variables: list[dict[str, Any]],
                    annotation_expr: str, time_from: str = "now-1h", tags: tuple[str, ...] = (),
                    models: list[str] | None = None,
                    links: tuple[core.DashboardLink, ...] = ()) -> dict[str, Any]:
    """A dashboard whose variables start with the datasource variable.

    ``links``: dashboard links after the "modelmon" dropdown of every dashboard (e.g. the model
    detail's link to the rollout dashboard for the selected model).

    ``models``: the models the ``$model`` variable offers (a model-detail dashboard only has its
    task's), kept under the custom key ``modelmon`` for the end-to-end test (Grafana keeps it)."""
    dash = core.Dashboard(
        title=title, uid=uid, description=description, tags=[TAG, kind, *tags],
        panels=layout(sections),
        templating=core.Templating(list=[datasource_variable(config), *variables]),
        annotations=core.Annotations(list=[alert_annotation(config, annotation_expr)]),
        links=[core.DashboardLink(title="modelmon", tags=[TAG], asDropdown=False, includeVars=True,
                                  keepTime=True, type="dashboards"), *links],
        time=core.Time(time_from, "now"), refresh="30s", timezone="browser",
        graphTooltip=core.GRAPH_TOOLTIP_MODE_SHARED_CROSSHAIR, editable=True,
    ).auto_panel_ids()
    data = dashboard_to_dict(dash)
    # Grafana assigns the numeric id; a committed id would clash across installs.
    data["id"] = None
    data["version"] = 1
    data.pop("__inputs", None)
    data.pop("style", None)
    data.pop("hideControls", None)
    data.pop("sharedCrosshair", None)
    data.pop("gnetId", None)
    if models is not None:
        data["modelmon"] = {"models": sorted(models)}
    return data
