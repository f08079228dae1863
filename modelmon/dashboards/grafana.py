"""grafanalib extensions for the JSON model of current Grafana (10/11).

grafanalib 0.7.1 still emits the Grafana 6 shape for prometheus targets (``intervalFactor: 2``,
which halves the resolution), bar gauges (``options.fieldOptions``) and heatmaps (the Angular
``cards``/``xAxis`` model). These subclasses keep grafanalib's panel base (grid, links,
description, thresholds, extraJson) and emit the current field-config shape instead.
"""
from __future__ import annotations

import json
from typing import Any

import attr
from grafanalib import core
from grafanalib._gen import DashboardEncoder

# Grafana 10.4/11 dashboard schema: the panel shapes below are what it saves itself.
SCHEMA_VERSION = 39


def datasource_ref(uid: str) -> dict[str, str]:
    return {"type": "prometheus", "uid": uid}


@attr.s
class PromTarget(core.Target):
    """A Prometheus query in the shape Grafana's Prometheus query editor saves."""

    range = attr.ib(default=True, validator=attr.validators.instance_of(bool))

    def to_json_data(self) -> dict[str, Any]:
        data = {
            "datasource": self.datasource,
            "editorMode": "code",
            "expr": self.expr,
            "format": self.format,
            "instant": self.instant,
            "legendFormat": self.legendFormat or "__auto",
            "range": self.range and not self.instant,
            "refId": self.refId,
        }
        if self.interval:
            data["interval"] = self.interval
        return data


@attr.s
class BarGaugePanel(core.Panel):
    """Bar gauge with the field-config model (unit/min/max/thresholds under fieldConfig.defaults)."""

    unit = attr.ib(default="short")
    min = attr.ib(default=None)
    max = attr.ib(default=None)
    displayMode = attr.ib(default="gradient")
    orientation = attr.ib(default="horizontal")
    reduceCalc = attr.ib(default="lastNotNull")
    overrides = attr.ib(factory=list)

    def to_json_data(self) -> dict[str, Any]:
        return self.panel_json({
            "fieldConfig": {
                "defaults": {
                    "color": {"mode": "thresholds"},
                    "max": self.max,
                    "min": self.min,
                    "unit": self.unit,
                },
                "overrides": self.overrides,
            },
            "options": {
                "displayMode": self.displayMode,
                "minVizHeight": 16,
                "minVizWidth": 0,
                "namePlacement": "auto",
                "orientation": self.orientation,
                "reduceOptions": {"calcs": [self.reduceCalc], "fields": "", "values": False},
                "showUnfilled": True,
                "sizing": "auto",
                "valueMode": "color",
            },
            "type": core.BARGAUGE_TYPE,
        })


@attr.s
class HeatmapPanel(core.Panel):
    """Heatmap of pre-bucketed Prometheus histograms (format=heatmap), Grafana 9+ model."""

    unit = attr.ib(default="short")
    colorScheme = attr.ib(default="Oranges")

    def to_json_data(self) -> dict[str, Any]:
        return self.panel_json({
            "fieldConfig": {
                "defaults": {
                    "custom": {
                        "hideFrom": {"legend": False, "tooltip": False, "viz": False},
                        "scaleDistribution": {"type": "linear"},
                    },
                },
                "overrides": [],
            },
            "options": {
                "calculate": False,
                "cellGap": 1,
                "color": {"exponent": 0.5, "fill": "dark-orange", "mode": "scheme", "reverse": False,
                          "scale": "exponential", "scheme": self.colorScheme, "steps": 64},
                "exemplars": {"color": "rgba(255,0,255,0.7)"},
                "filterValues": {"le": 1e-9},
                "legend": {"show": True},
                "rowsFrame": {"layout": "auto"},
                "tooltip": {"mode": "single", "showColorScale": False, "yHistogram": True},
                "yAxis": {"axisPlacement": "left", "reverse": False, "unit": self.unit},
            },
            "type": core.HEATMAP_TYPE,
        })


# Keys grafanalib's Panel base always writes that mean nothing to current Grafana.
_LEGACY_PANEL_KEYS = ("span", "minSpan", "height", "error", "cacheTimeout", "thresholdType")


def dashboard_to_dict(dashboard: core.Dashboard) -> dict[str, Any]:
    """Serialise a grafanalib dashboard and drop what only the Grafana 6 model used."""
    data = json.loads(json.dumps(dashboard.to_json_data(), cls=DashboardEncoder))
    data.pop("rows", None)
    data["schemaVersion"] = SCHEMA_VERSION
    for panel in data["panels"]:
        for key in _LEGACY_PANEL_KEYS:
            panel.pop(key, None)
        for key in [k for k, v in panel.items() if v is None]:
            del panel[key]
        if panel.get("type") == core.ROW_TYPE:
            panel.pop("fieldConfig", None)
            panel.pop("targets", None)
            panel.pop("transformations", None)
            panel.pop("maxDataPoints", None)
    return data
