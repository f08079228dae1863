"""Panel factories: every modelmon panel goes through here, so all share the same datasource
reference, units, descriptions and the metadata the end-to-end test reads.

Panel metadata lives under the custom panel key ``modelmon`` (Grafana keeps unknown keys):
- ``emptyUntil``: why the panel legitimately shows no data on a healthy system
  (e.g. "an alert fires"); the description says the same in words.
- ``models``: the panel only has data for these models (task-specific metrics such as the
  confusion matrix), checked against the value of ``$model``.
- ``requires``: what the selected model needs before the panel has data, other than traffic:
  ``labelledReference`` (estimated performance and reference quality exist only for a model whose
  reference file carries labels; the end-to-end test asks ``modelmon_reference_labeled``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import attr
from grafanalib import core

from modelmon.dashboards.grafana import BarGaugePanel, HeatmapPanel, PromTarget, datasource_ref
from modelmon.promql import selector

LABELLED_REFERENCE = "labelledReference"  # panel metadata ``requires``: see the module docstring


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False
    format: str = "time_series"  # time_series | table | heatmap
    ref: str | None = None


@dataclass
class Cell:
    """A panel and its size on the 24-column grid; layout() assigns the position."""

    panel: Any
    w: int
    h: int


@dataclass
class PanelFactory:
    datasource_uid: str  # "${datasource}": the dashboard's datasource variable
    job: str  # the exporters' scrape job (grafana.job)

    @property
    def ds(self) -> dict[str, str]:
        return datasource_ref(self.datasource_uid)

    def sel(self, metric: str, *matchers: str, **labels: str) -> str:
        """A selector of an exporter series, scoped to the exporters' job: ``metric{job="...", ...}``."""
        return selector(metric, *matchers, job=self.job, **labels)

    def targets(self, queries: list[Query]) -> list[PromTarget]:
        out = []
        for i, q in enumerate(queries):
            out.append(PromTarget(expr=q.expr, legendFormat=q.legend, instant=q.instant, format=q.format,
                                  refId=q.ref or chr(ord("A") + i), datasource=self.ds))
        return out

    def _common(self, title: str, description: str, queries: list[Query], *, empty_until: str | None,
                models: list[str] | None, links: list[dict] | None, requires: str | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {}
        if empty_until:
            description = f"{description} Expected empty until {empty_until}."
            meta["emptyUntil"] = empty_until
        if models is not None:
            meta["models"] = sorted(models)
        if requires is not None:
            if requires != LABELLED_REFERENCE:
                raise ValueError(f"panel {title!r}: unknown requirement {requires!r}")
            description = (f"{description} Empty for a model whose reference data has no label column "
                           f"(/ready says so): no reference quality, no estimated performance.")
            meta["requires"] = requires
        return {
            "title": title,
            "description": description,
            "dataSource": self.ds,
            "targets": self.targets(queries),
            "links": links or [],
            "maxDataPoints": None,  # let Grafana size the resolution to the panel width
            "extraJson": {"modelmon": meta} if meta else None,
        }

    def timeseries(self, title: str, description: str, queries: list[Query], *, unit: str,
                   steps: list[dict] | None = None, overrides: list[dict] | None = None,
                   stack: bool = False, log_scale: bool = False, bars: bool = False,
                   w: int = 8, h: int = 8, empty_until: str | None = None,
                   models: list[str] | None = None, links: list[dict] | None = None,
                   requires: str | None = None) -> Cell:
        shows_thresholds = steps is not None or bool(overrides)
        panel = core.TimeSeries(
            **self._common(title, description, queries, empty_until=empty_until, models=models, links=links,
                           requires=requires),
            unit=unit,
            thresholds=steps or [{"color": "green", "value": None}],
            thresholdsStyleMode="dashed" if shows_thresholds else "off",
            overrides=overrides or [],
            stacking={"group": "A", "mode": "normal"} if stack else {"group": "A", "mode": "none"},
            fillOpacity=20 if (stack or bars) else 10,
            drawStyle="bars" if bars else "line",
            scaleDistributionType="log" if log_scale else "linear",
            scaleDistributionLog=10,
            legendDisplayMode="table", legendPlacement="bottom", legendCalcs=["lastNotNull", "max"],
            tooltipMode="multi", tooltipSort="desc", spanNulls=True, showPoints="never",
        )
        return Cell(panel, w, h)

    def stat(self, title: str, description: str, queries: list[Query], *, unit: str,
             steps: list[dict] | None = None, overrides: list[dict] | None = None,
             decimals: int | None = None, w: int = 4, h: int = 4, empty_until: str | None = None,
             models: list[str] | None = None, links: list[dict] | None = None,
             color_mode: str = "background", text_mode: str = "auto") -> Cell:
        panel = core.Stat(
            **self._common(title, description, queries, empty_until=empty_until, models=models, links=links),
            format=unit, thresholds=steps or [{"color": "green", "value": None}],
            overrides=overrides or [], decimals=decimals, reduceCalc="lastNotNull",
            colorMode=color_mode, graphMode="area", textMode=text_mode, noValue="no data",
            color={"mode": "thresholds"},
        )
        return Cell(panel, w, h)

    def table(self, title: str, description: str, queries: list[Query], *, unit: str = "short",
              transformations: list[dict] | None = None, overrides: list[dict] | None = None,
              sort_by: str | None = None, w: int = 12, h: int = 8, empty_until: str | None = None,
              models: list[str] | None = None, links: list[dict] | None = None) -> Cell:
        panel = core.Table(
            **self._common(title, description, queries, empty_until=empty_until, models=models, links=links),
            unit=unit, transformations=transformations or [], overrides=overrides or [],
            sortBy=[core.TableSortByField(displayName=sort_by, desc=True)] if sort_by else [],
            filterable=True, thresholds=[{"color": "green", "value": None}],
        )
        return Cell(panel, w, h)

    def bargauge(self, title: str, description: str, queries: list[Query], *, unit: str,
                 overrides: list[dict] | None = None, min_value: float | None = 0,
                 w: int = 12, h: int = 8, empty_until: str | None = None,
                 models: list[str] | None = None, links: list[dict] | None = None) -> Cell:
        panel = BarGaugePanel(
            **self._common(title, description, queries, empty_until=empty_until, models=models, links=links),
            unit=unit, min=min_value, overrides=overrides or [],
            thresholds=[{"color": "green", "value": None}],
        )
        return Cell(panel, w, h)

    def heatmap(self, title: str, description: str, queries: list[Query], *, unit: str,
                w: int = 12, h: int = 8, empty_until: str | None = None,
                models: list[str] | None = None, links: list[dict] | None = None) -> Cell:
        common = self._common(title, description, queries, empty_until=empty_until, models=models, links=links)
        # Few, wide time buckets: each heatmap column needs enough requests to show a shape.
        panel = HeatmapPanel(**{**common, "maxDataPoints": 60}, unit=unit)
        return Cell(panel, w, h)


GRID_COLUMNS = 24


def merged_columns(columns: dict[str, tuple[str, str]], key: str = "version") -> tuple[list[dict], list[dict]]:
    """(transformations, overrides) of a table merging instant queries by `key`: one row per `key`
    value, one column per query, `columns` = {query ref: (column name, unit)}, in that order."""
    names = [name for name, _ in columns.values()]
    transformations = [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {
            "excludeByName": {"Time": True},
            "indexByName": {key: 0, **{name: i + 1 for i, name in enumerate(names)}},
            "renameByName": {f"Value #{ref}": name for ref, (name, _) in columns.items()}}},
    ]
    overrides = [{"matcher": {"id": "byName", "options": name}, "properties": [{"id": "unit", "value": unit}]}
                 for name, unit in columns.values()]
    return transformations, overrides


def layout(sections: list[tuple[str, list[Cell]]]) -> list[Any]:
    """Place rows and their panels on the grid: a full-width row header, then panels left to
    right, wrapping at 24 columns; each line is as tall as its tallest panel."""
    panels: list[Any] = []
    y = 0
    for row_title, cells in sections:
        panels.append(core.RowPanel(title=row_title, gridPos=core.GridPos(h=1, w=GRID_COLUMNS, x=0, y=y)))
        y += 1
        x, line_height = 0, 0
        for cell in cells:
            if cell.w > GRID_COLUMNS:
                raise ValueError(f"panel {cell.panel.title!r} is wider than the grid")
            if x + cell.w > GRID_COLUMNS:
                y += line_height
                x, line_height = 0, 0
            panels.append(attr.evolve(cell.panel, gridPos=core.GridPos(h=cell.h, w=cell.w, x=x, y=y)))
            x += cell.w
            line_height = max(line_height, cell.h)
        y += line_height
    return panels


def dashboard_link(title: str, uid: str, *, model: str | None = None, keep_vars: bool = False) -> dict[str, Any]:
    """A panel link to another modelmon dashboard, keeping the time range (and the model)."""
    params = ["${__url_time_range}"]
    if model is not None:
        params.insert(0, f"var-model={model}")
    if keep_vars:
        params.append("${__all_variables}")
    return {"title": title, "url": f"/d/{uid}?{'&'.join(params)}", "targetBlank": False}
