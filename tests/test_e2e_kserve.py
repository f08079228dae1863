"""KServe's inference logger into the live stack: events posted to the exporter's POST /ingest the
way KServe's agent sends them reach Prometheus, and the self-monitoring dashboard's KServe panels
show them (the general live-PromQL test allows them to be empty on a stack without KServe)."""
from __future__ import annotations

import time
import uuid

import orjson
import pytest
import requests

from modelmon.dashboards.generate import dashboards
from modelmon.dashboards.queries import iter_panel_queries, substitute_variables, variable_values
from modelmon.dashboards.self_monitoring import KSERVE_EMPTY

pytestmark = pytest.mark.e2e

PAIRS = 6
SERVICE = "credit-risk"  # bound to credit by tests/e2e_stack.py's config


def event(half: str, ce_id: str, body: dict, service: str = SERVICE) -> tuple[dict, bytes]:
    """Headers and body as KServe's agent posts one half (no Ce-Time: stamped on arrival)."""
    headers = {"Content-Type": "application/json", "Ce-Specversion": "1.0", "Ce-Id": ce_id,
               "Ce-Source": "http://localhost:9081/", "Ce-Type": f"org.kubeflow.serving.inference.{half}",
               "Ce-Inferenceservicename": service, "Ce-Namespace": "models", "Ce-Component": "predictor",
               "Ce-Endpoint": "", "User-Agent": "Go-http-client/1.1"}
    return headers, orjson.dumps(body)


def post(url: str, half: str, ce_id: str, body: dict, **kw) -> requests.Response:
    headers, data = event(half, ce_id, body, **kw)
    return requests.post(url, data=data, headers=headers, timeout=10)


def test_kserve_events_reach_prometheus_and_the_kserve_panels(live_stack):
    url = f"http://127.0.0.1:{live_stack.ports['exporter']}/ingest"
    credit = live_stack.config.model("credit")
    assert credit.kserve is not None and credit.kserve.features == credit.features
    for i in range(PAIRS):  # v1, positional in the binding's order, probabilities in sklearn's [0, 1] order
        ce_id = f"e2e-{uuid.uuid4().hex}"
        instance = [5120.5 + i, 41, 0.31, 4, "DE", "web"]
        assert post(url, "request", ce_id, {"instances": [instance]}).status_code == 202
        joined = post(url, "response", ce_id, {"predictions": [[0.2, 0.8]]})
        assert joined.status_code == 202 and joined.json()["accepted"] == 1, joined.text
    dup = f"e2e-{uuid.uuid4().hex}"  # the same request half twice: the first is counted unmatched (duplicate)
    for _ in range(2):
        assert post(url, "request", dup, {"instances": [[1.0, 30, 0.1, 1, "FR", "app"]]}).status_code == 202
    refused = post(url, "request", "e2e-x", {"instances": [[1]]}, service="not-bound")
    assert refused.status_code == 400 and refused.json()["reason"] == "unknown_service"

    ingested = 'sum(modelmon_records_ingested_total{source="kserve"})'
    deadline = time.time() + 60
    while not [r for r in live_stack.query(ingested) if float(r["value"][1]) == PAIRS]:
        assert time.time() < deadline, f"Prometheus never saw {PAIRS} kserve records: {live_stack.query(ingested)}"
        live_stack.check_alive()
        time.sleep(1)

    self_dash = next(d for d in dashboards(live_stack.config) if d["uid"] == "modelmon-self")
    values = {**variable_values(self_dash), "__rate_interval": "30s", "__interval": "5s", "__range": "300s"}
    kserve_panels = {title: [] for title, _ in iter_panel_queries(self_dash) if title.startswith("KServe")}
    assert len(kserve_panels) == 2, kserve_panels
    for title, expr in iter_panel_queries(self_dash):
        if title in kserve_panels:
            kserve_panels[title].append(substitute_variables(expr, values))
    missing = set(kserve_panels)
    while missing:  # rates need two scrapes after the events
        missing = {t for t in missing if not any(live_stack.query(q) for q in kserve_panels[t])}
        assert time.time() < deadline + 60 or not missing, f"no data in {sorted(missing)} ({KSERVE_EMPTY})"
        time.sleep(2)
