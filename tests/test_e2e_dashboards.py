"""Every panel query of every generated dashboard, run against the live Prometheus of the e2e stack.

Runs after tests/test_e2e_alerts.py on the same stack, so the incident panels have seen an
incident. Each query (variables substituted, for every model where the dashboard has a `model`
variable) must parse and return data, unless the panel declares itself empty until an incident
or not applicable to that model.
"""
from __future__ import annotations

import time

import pytest

from modelmon.dashboards.generate import dashboards
from modelmon.dashboards.queries import (has_model_variable, iter_annotation_queries, iter_panel_queries,
                                         panels_allowed_empty, substitute_variables, variable_values)

pytestmark = pytest.mark.e2e


def run_range(stack, expr: str) -> tuple[str, list]:
    end = time.time()
    data = stack.prom("/api/v1/query_range", query=expr, start=stack.started_at, end=end, step="5s")
    return data["status"], (data.get("data") or {}).get("result", []), data.get("error", "")


def test_every_panel_query_parses_and_returns_data(live_stack):
    # The dashboards of the stack's own config (same models and thresholds as the demo).
    uptime = max(60, int(time.time() - live_stack.started_at))
    problems, ran = [], 0
    for dash in dashboards(live_stack.config):
        models = [m.name for m in live_stack.config.models] if has_model_variable(dash) else [None]
        for model in models:
            values = {**variable_values(dash, model), "__rate_interval": "30s", "__interval": "5s",
                      "__range": f"{uptime}s"}
            allowed = panels_allowed_empty(dash, model)
            for title, expr in iter_panel_queries(dash):
                query = substitute_variables(expr, values)
                status, result, error = run_range(live_stack, query)
                ran += 1
                where = f"{dash['uid']} / {title} (model={model}): {query}"
                if status != "success":
                    problems.append(f"does not run: {where}: {error}")
                elif not result and title not in allowed:
                    problems.append(f"no data: {where}")
            for name, expr in iter_annotation_queries(dash):
                status, _, error = run_range(live_stack, substitute_variables(expr, values))
                if status != "success":
                    problems.append(f"annotation {name} does not run: {error}")
    assert ran > 100
    assert not problems, "\n".join(problems)
