"""Read the PromQL back out of generated dashboards, with Grafana's variables substituted.

The end-to-end test runs every panel query against a live Prometheus::

    for dash in modelmon.dashboards.generate.dashboards(config):
        for model in dashboard_models(dash, [m.name for m in config.models]):
            values = {**variable_values(dash, model), "__rate_interval": "1m"}
            allowed_empty = panels_allowed_empty(dash, model)
            for title, expr in iter_panel_queries(dash):
                query = substitute_variables(expr, values)
                ...  # must parse; must return data unless title in allowed_empty
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Iterator

# Grafana's built-in variables with values that suit a test Prometheus scraping every few
# seconds; callers override them (e.g. __rate_interval = 4x their scrape interval).
BUILTIN_DEFAULTS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}

# $var, ${var}, ${var:format}, [[var]], [[var:format]]
_VARIABLE = re.compile(r"\$\{(\w+)(?::[\w]+)?\}|\[\[(\w+)(?::[\w]+)?\]\]|\$(\w+)")


def _walk_panels(panels: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _walk_panels(panel.get("panels", []))  # collapsed rows nest their panels


def iter_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return list(_walk_panels(dashboard.get("panels", [])))


def iter_panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL expression) for every target of every panel, in dashboard order."""
    return [(p["title"], t["expr"]) for p in iter_panels(dashboard) for t in p.get("targets", [])
            if t.get("expr") and not t.get("hide")]


def iter_annotation_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(annotation name, expression) of the Prometheus annotations (firing alerts: often empty)."""
    return [(a["name"], a["expr"]) for a in dashboard.get("annotations", {}).get("list", []) if a.get("expr")]


def variables_in(expr: str) -> set[str]:
    """Dashboard variables an expression uses (Grafana's own ``$__...`` excluded)."""
    names = {next(g for g in m.groups() if g) for m in _VARIABLE.finditer(expr)}
    return {n for n in names if not n.startswith("__")}


def substitute_variables(expr: str, values: dict[str, str | list[str]]) -> str:
    """Replace Grafana variables the way Grafana does for Prometheus.

    A list value (multi-select) becomes a regex alternation ``a|b``, which is what Grafana
    sends for ``=~"$var"``. Built-ins default to ``BUILTIN_DEFAULTS``. An unknown variable
    raises KeyError rather than sending a query Grafana would never send.
    """
    merged = {**BUILTIN_DEFAULTS, **values}

    def replace(match: re.Match) -> str:
        name = next(g for g in match.groups() if g)
        if name not in merged:
            raise KeyError(f"no value for variable ${name} in {expr!r}")
        value = merged[name]
        return "|".join(value) if isinstance(value, list) else str(value)

    return _VARIABLE.sub(replace, expr)


def variable_values(dashboard: dict[str, Any], model: str | None = None) -> dict[str, str]:
    """Values for the dashboard's variables: ``model`` as given, multi-selects at "All"."""
    values: dict[str, str] = {}
    for var in dashboard.get("templating", {}).get("list", []):
        name = var["name"]
        if name == "model":
            if model is None:
                raise ValueError(f"dashboard {dashboard['uid']} needs a model")
            values[name] = model
        elif var.get("includeAll"):
            values[name] = var.get("allValue") or ".*"
        else:
            values[name] = var["current"]["value"]
    return values


def has_model_variable(dashboard: dict[str, Any]) -> bool:
    return any(v["name"] == "model" for v in dashboard.get("templating", {}).get("list", []))


def dashboard_models(dashboard: dict[str, Any], models: list[str]) -> list[str | None]:
    """The values of ``$model`` to check a dashboard with: [None] without a model variable, else the
    configured ``models`` the dashboard offers (a model detail has only its task's models)."""
    if not has_model_variable(dashboard):
        return [None]
    offered = dashboard.get("modelmon", {}).get("models")
    return [m for m in models if offered is None or m in offered]


def instant_queries(dashboard: dict[str, Any]) -> set[tuple[str, str]]:
    """(panel title, expression) of the targets Grafana runs as instant queries."""
    return {(p["title"], t["expr"]) for p in iter_panels(dashboard) for t in p.get("targets", [])
            if t.get("expr") and not t.get("hide") and t.get("instant")}


def panels_allowed_empty(dashboard: dict[str, Any], model: str | None = None, *,
                         labelled_reference: bool = False) -> set[str]:
    """Titles of panels that may return no data: documented as empty until an incident,
    specific to other models' tasks/SLOs than ``model``, or needing a labelled reference
    (estimated and reference quality) when ``model``'s reference has no labels
    (``labelled_reference``: whether it has, e.g. ``modelmon_reference_labeled > 0``)."""
    allowed = set()
    for panel in iter_panels(dashboard):
        meta = panel.get("modelmon", {})
        if meta.get("emptyUntil"):
            allowed.add(panel["title"])
        elif "models" in meta and model not in meta["models"]:
            allowed.add(panel["title"])
        elif meta.get("requires") == "labelledReference" and not labelled_reference:
            allowed.add(panel["title"])
    return allowed


def panels_requiring_labelled_reference(dashboard: dict[str, Any]) -> set[str]:
    """Titles of the panels that have data only for a model with a labelled reference."""
    return {p["title"] for p in iter_panels(dashboard) if p.get("modelmon", {}).get("requires") == "labelledReference"}
