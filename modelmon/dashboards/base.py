"""What every modelmon dashboard shares: uids, tags, links, variables, alert annotations."""
from __future__ import annotations

from typing import Any

from grafanalib import core

from modelmon.config import Config
from modelmon.contract import DRIFT_UID, MODEL_UID, OVERVIEW_UID, SELF_UID, SERVICE_UID
from modelmon.dashboards.grafana import dashboard_to_dict, datasource_ref
from modelmon.dashboards.panels import Cell, PanelFactory, layout
from modelmon.promql import selector

TAG = "modelmon"

# Fixed uids (defined in the contract): links, bookmarks, alert annotations and `dashboards push` rely on them.
UIDS = (OVERVIEW_UID, MODEL_UID, DRIFT_UID, SERVICE_UID, SELF_UID)


def factory(config: Config) -> PanelFactory:
    return PanelFactory(config.grafana.datasource_uid)


def _query_variable(config: Config, name: str, label: str, query: str, *, default: str, multi: bool,
                    description: str) -> dict[str, Any]:
    var = core.Template(
        name=name, label=label, query=query, default=default, multi=multi, includeAll=multi,
        allValue=".*" if multi else None, dataSource=datasource_ref(config.grafana.datasource_uid),
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


def model_variable(config: Config) -> dict[str, Any]:
    return _query_variable(
        config, "model", "Model", "label_values(modelmon_model_info, model)",
        default=config.models[0].name, multi=False,
        description="The watched model; thresholds on this dashboard follow its section in modelmon.yaml.")


def version_variable(config: Config) -> dict[str, Any]:
    return _query_variable(
        config, "version", "Version", f"label_values({selector('modelmon_model_info', model='$model')}, version)",
        default="$__all", multi=True,
        description="Model versions to show side by side (canary, A/B).")


def feature_variable(config: Config) -> dict[str, Any]:
    return _query_variable(
        config, "feature", "Feature", f"label_values({selector('modelmon_feature_psi', model='$model')}, feature)",
        default="$__all", multi=True, description="Input features of the selected model.")


def alert_annotation(config: Config, expr: str) -> dict[str, Any]:
    """Firing Prometheus alerts as annotations (the ALERTS series the rule files create)."""
    return {
        "datasource": datasource_ref(config.grafana.datasource_uid),
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
                    annotation_expr: str, time_from: str = "now-1h") -> dict[str, Any]:
    dash = core.Dashboard(
        title=title, uid=uid, description=description, tags=[TAG, kind],
        panels=layout(sections),
        templating=core.Templating(list=variables),
        annotations=core.Annotations(list=[alert_annotation(config, annotation_expr)]),
        links=[core.DashboardLink(title="modelmon", tags=[TAG], asDropdown=False, includeVars=True,
                                  keepTime=True, type="dashboards")],
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
    return data
