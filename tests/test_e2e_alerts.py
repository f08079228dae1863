"""The alert path end to end: simulator -> log -> exporter -> Prometheus -> Alertmanager -> receiver.

One live stack serves the whole module; scenarios run in sequence and each assertion waits
for the receiver, so the test measures what an on-call engineer would see. The time from the
fault to the notification is printed for every scenario (pytest -s shows it).
"""
from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.e2e

TIMINGS: dict[str, float] = {}


def run_fault(stack, model: str, scenario: str, alertname: str, timeout: float = 120) -> dict:
    start = time.time()
    stack.traffic.scenarios[model] = scenario
    alert = stack.wait_for_notification(alertname, "firing", model, timeout, since=start)
    TIMINGS[f"{scenario} on {model} -> {alertname}"] = time.time() - start
    print(f"\n{scenario} on {model}: {alertname} notified after {time.time() - start:.1f}s")
    return alert


def firing_models(stack, alertname: str) -> set[str]:
    return {s["metric"].get("model") for s in stack.query(f'ALERTS{{alertname="{alertname}",alertstate="firing"}}')}


def test_stable_traffic_raises_nothing(live_stack):
    # Let the windows fill (300 labelled records at 25/s per model) and every rule settle.
    deadline = time.time() + 45
    while time.time() < deadline:
        live_stack.check_alive()
        time.sleep(1)
    quality = live_stack.query('modelmon_window_labeled{model="credit"}')
    assert quality and float(quality[0]["value"][1]) >= 100, "quality window did not fill"
    assert live_stack.query('modelmon_feature_psi{model="credit"}'), "drift gauges missing"
    firing = [s["metric"] for s in live_stack.query('ALERTS{alertstate="firing"}')
              if s["metric"].get("severity") != "info"]
    assert firing == []
    assert [a for a in live_stack.receiver_alerts() if a["status"] == "firing"] == []


def test_concept_drift_pages_accuracy_then_resolves(live_stack):
    alert = run_fault(live_stack, "credit", "concept_drift", "ModelmonAccuracyLow")
    assert alert["labels"]["team"] == "risk"
    assert alert["labels"]["severity"] in ("warning", "critical")
    assert "runbook_url" in alert["annotations"] and "#modelmonaccuracylow" in alert["annotations"]["runbook_url"]
    # Critical eventually (accuracy ~0.43 < 0.75); recovery then resolves it.
    live_stack.wait_for_notification("ModelmonAccuracyLow", "firing", "credit", 60)
    recovered = time.time()
    live_stack.traffic.scenarios["credit"] = "stable"
    live_stack.wait_for_notification("ModelmonAccuracyLow", "resolved", "credit", 120, since=recovered)
    print(f"\nrecovery -> resolved after {time.time() - recovered:.1f}s")


def test_covariate_drift_alerts_for_the_drifted_model_only(live_stack):
    run_fault(live_stack, "credit", "covariate_drift", "ModelmonFeaturePsiHigh")
    assert firing_models(live_stack, "ModelmonFeaturePsiHigh") == {"credit"}
    features = {s["metric"]["feature"] for s in live_stack.query('modelmon_feature_psi{model="credit"} > 0.25')}
    assert features <= {"income", "country"} and features, features
    live_stack.traffic.scenarios["credit"] = "stable"


def test_latency_regression_alerts_latency(live_stack):
    run_fault(live_stack, "eta", "latency_regression", "ModelmonLatencyP99High")
    assert firing_models(live_stack, "ModelmonLatencyP99High") == {"eta"}
    live_stack.traffic.scenarios["eta"] = "stable"


def test_traffic_stop_alerts_no_predictions(live_stack):
    run_fault(live_stack, "segment", "traffic_stop", "ModelmonNoPredictions")
    assert firing_models(live_stack, "ModelmonNoPredictions") == {"segment"}
    live_stack.traffic.scenarios["segment"] = "stable"


def test_report_time_to_notification():
    assert TIMINGS, "no scenario ran"
    for what, seconds in TIMINGS.items():
        print(f"time to notification: {what}: {seconds:.1f}s")
