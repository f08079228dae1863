"""Every panel query of every generated dashboard, run against the live Prometheus of the e2e stack.

Runs after tests/test_e2e_alerts.py on the same stack, so the incident panels have seen an
incident. Each query (variables substituted, for every model the dashboard offers: a model
detail only its task's models) must parse and return data, unless the panel declares itself
empty until an incident or not applicable to that model. Targets Grafana runs as instant
queries (stats and tables, the SLO panels over the SLO period) run as instant queries here too;
the others as range queries over the stack's lifetime.
"""
from __future__ import annotations

import time

import pytest

from modelmon.alerting.policy import load_policy
from modelmon.alerting.recording import predictions_rate
from modelmon.contract import QUANTITIES
from modelmon.dashboards.generate import dashboards
from modelmon.dashboards.service import SAMPLE_STEP
from modelmon.dashboards.queries import (dashboard_models, instant_queries, iter_annotation_queries,
                                         iter_panel_queries, panels_allowed_empty, substitute_variables,
                                         variable_values)

pytestmark = pytest.mark.e2e

WARM_UP_TIMEOUT = 180


def run(stack, expr: str, *, instant: bool) -> tuple[str, list, str]:
    end = time.time()
    if instant:
        data = stack.prom("/api/v1/query", query=expr, time=end)
    else:
        data = stack.prom("/api/v1/query_range", query=expr, start=stack.started_at, end=end, step="5s")
    return data["status"], (data.get("data") or {}).get("result", []), data.get("error", "")


def wait_for_recorded_slo_samples(stack) -> None:
    """The SLO-period panels sample the 5m recording rules every minute: on a stack started a
    moment ago they have a value once a minute boundary passed after the first rule evaluation."""
    names = [m.name for m in stack.config.models if m.slo.availability is not None]
    deadline = time.time() + WARM_UP_TIMEOUT
    while True:
        recorded = predictions_rate("model", load_policy().burn_durations[0])
        found = {r["metric"].get("model") for r in stack.query(f"count_over_time({recorded}[1h:{SAMPLE_STEP}]) > 0")}
        if set(names) <= found or time.time() > deadline:
            return
        time.sleep(2)


def labelled_references(stack) -> dict[str, bool]:
    """Per model: whether its reference carries labels (then its estimates and reference quality
    must be on the dashboards; waits for the first estimate of each such model)."""
    labelled = {r["metric"]["model"] for r in stack.query("modelmon_reference_labeled > 0")}
    deadline = time.time() + WARM_UP_TIMEOUT
    while True:
        estimated = {r["metric"]["model"] for r in stack.query("group by (model) (modelmon_estimated_stderr)")}
        if labelled <= estimated or time.time() > deadline:
            break
        time.sleep(2)
    return {m.name: m.name in labelled for m in stack.config.models}


def test_every_panel_query_parses_and_returns_data(live_stack):
    # The dashboards of the stack's own config (same models and thresholds as the demo).
    wait_for_recorded_slo_samples(live_stack)
    labelled = labelled_references(live_stack)
    print(f"\nmodels with a labelled reference (estimation panels must have data): {labelled}")
    uptime = max(60, int(time.time() - live_stack.started_at))
    problems, ran, per_model = [], 0, {}
    names = [m.name for m in live_stack.config.models]
    for dash in dashboards(live_stack.config):
        instant = instant_queries(dash)
        for model in dashboard_models(dash, names):
            per_model.setdefault(dash["uid"], []).append(model)
            values = {**variable_values(dash, model), "__rate_interval": "30s", "__interval": "5s",
                      "__range": f"{uptime}s"}
            allowed = panels_allowed_empty(dash, model, labelled_reference=labelled.get(model, False))
            for title, expr in iter_panel_queries(dash):
                query = substitute_variables(expr, values)
                is_instant = (title, expr) in instant
                status, result, error = run(live_stack, query, instant=is_instant)
                ran += 1
                where = f"{dash['uid']} / {title} (model={model}, {'instant' if is_instant else 'range'}): {query}"
                if status != "success":
                    problems.append(f"does not run: {where}: {error}")
                elif not result and title not in allowed:
                    problems.append(f"no data: {where}")
            for name, expr in iter_annotation_queries(dash):
                status, _, error = run(live_stack, substitute_variables(expr, values), instant=False)
                if status != "success":
                    problems.append(f"annotation {name} does not run: {error}")
    assert ran > 100
    # A model detail per task, each checked with its own models only.
    tasks = {m.task: [] for m in live_stack.config.models}
    for m in live_stack.config.models:
        tasks[m.task].append(m.name)
    assert {uid: models for uid, models in per_model.items() if uid.startswith("modelmon-model-")} == {
        f"modelmon-model-{task}": models for task, models in tasks.items()}
    assert not problems, "\n".join(problems)


def test_bin_shares_panel_adds_up_to_the_recorded_psi(live_stack):
    """The drift dashboard's bins table: each feature's recent shares sum to 1, the reference's too,
    and its PSI terms add up to the recorded PSI the alerts read (same bins, same floor)."""
    dash = next(d for d in dashboards(live_stack.config) if d["uid"] == "modelmon-drift")
    recent, reference, term = [expr for title, expr in iter_panel_queries(dash)
                               if title == "Bin shares: recent against the reference"]
    window = live_stack.config.recording.alert_window
    deadline = time.time() + WARM_UP_TIMEOUT
    for model in live_stack.config.models:
        values = {**variable_values(dash, model.name), "feature": ".*"}
        assert values["window"] == window
        psi = f'{QUANTITIES["psi"].recorded(window)}{{model="{model.name}"}}'
        while True:
            at = time.time() - 3  # a finished rule evaluation: every recorded series of it is written
            shares = {name: stack_values(live_stack, f"sum by (feature) ({substitute_variables(expr, values)})", at)
                      for name, expr in (("recent", recent), ("reference", reference), ("psi", term))}
            recorded = stack_values(live_stack, f"sum by (feature) ({psi})", at)
            if recorded or time.time() > deadline:
                break
            time.sleep(1)
        features = set(model.numeric_features) | set(model.categorical_features)
        assert set(recorded) == features, model.name
        for feature in features:
            assert shares["recent"][feature] == pytest.approx(1, abs=1e-9), (model.name, feature)
            assert shares["reference"][feature] == pytest.approx(1, abs=1e-6), (model.name, feature)
            assert shares["psi"][feature] == pytest.approx(recorded[feature], rel=1e-9, abs=1e-12), (model.name, feature)


def stack_values(stack, expr: str, at: float) -> dict[str, float]:
    data = stack.prom("/api/v1/query", query=expr, time=at)
    assert data["status"] == "success", data
    return {r["metric"].get("feature"): float(r["value"][1]) for r in data["data"]["result"]}
