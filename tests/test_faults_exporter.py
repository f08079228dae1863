"""Issue 8, points 1, 2 and 7, against a real `modelmon serve`: one record cannot blind the exporter."""
from __future__ import annotations

import signal
import time
from datetime import datetime, timezone

import pytest
import requests

from tests.processes import Serve, ndjson

CONFIG = """
models:
  - name: credit
    task: binary
    features: {numeric: [x]}
    reference: {first: 20}
    quality_window: 1h
    drift_window: 300
    min_drift_samples: 20
  - name: segment
    task: multiclass
    classes: [a, b, c]
    features: {numeric: [x]}
    reference: {first: 20}
    quality_window: 1h
    drift_window: 300
    min_drift_samples: 20
  - name: eta
    task: regression
    features: {numeric: [x]}
    reference: {first: 20}
    quality_window: 1h
    drift_window: 300
    min_drift_samples: 20
exporter:
  max_classes: 10
  max_versions_per_model: 3
  label_idle: 3s
  multivariate: {enabled: false}
"""


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def eta(n: int, start: float, tag: str, **extra) -> list[dict]:
    return [{"ts": iso(start + i), "id": f"{tag}-{i}", "model": "eta", "version": "v1", "features": {"x": i % 7},
             "prediction": 10.0 + i % 5, "label": 11.0, "latency_ms": 3.0, **extra} for i in range(n)]


def segment(n: int, start: float, tag: str, prediction=lambda i: "abc"[i % 3]) -> list[dict]:
    return [{"ts": iso(start + i), "id": f"{tag}-{i}", "model": "segment", "version": "v1", "features": {"x": i % 5},
             "prediction": prediction(i), "label": "abc"[(i + 1) % 3]} for i in range(n)]


@pytest.fixture
def serve(tmp_path):
    s = Serve(tmp_path, None, CONFIG)
    s.start("--checkpoint", str(tmp_path / "ckpt"), "--checkpoint-interval", "0")
    yield s
    s.stop(signal.SIGKILL)


def post(serve: Serve, records: list[dict]) -> requests.Response:
    return requests.post(serve.url("/ingest"), data=ndjson(records), timeout=30)


def restart(serve: Serve) -> None:
    assert serve.stop(signal.SIGTERM) == 0, serve.stderr()[-2000:]
    serve.start("--checkpoint", str(serve.tmp / "ckpt"), "--checkpoint-interval", "0")


def test_a_record_from_year_5026_is_refused_and_blinds_nothing_even_after_a_restart(serve):
    now = time.time() - 600
    assert post(serve, eta(50, now, "a")).status_code == 200
    waiting = {"ts": iso(now), "id": "c-1", "model": "credit", "features": {"x": 1.0}, "prediction": 1, "score": 0.9}
    assert post(serve, [waiting]).status_code == 200
    r = post(serve, [{**eta(1, now, "poison")[0], "ts": "5026-01-01T00:00:00Z"}])
    assert r.status_code == 400 and r.json()["errors"][0]["reason"] == "bad_timestamp"
    assert post(serve, eta(50, now + 60, "b")).status_code == 200

    def settled():
        return serve.value("modelmon_window_labeled", model="eta") == 100
    serve.wait_until(settled, timeout=10)
    assert serve.value("modelmon_records_rejected_total", reason="bad_timestamp") == 1
    assert serve.value("modelmon_label_join_pending") == 1  # the credit prediction still waits
    assert serve.value("modelmon_predictions_expired_total", model="credit", reason="ttl") == 0
    assert serve.value("modelmon_last_record_timestamp_seconds", model="eta") < time.time() + 300

    restart(serve)  # the checkpoint holds nothing from 5026, and the first scrape shows the windows
    assert serve.value("modelmon_window_labeled", model="eta") == 100
    assert serve.value("modelmon_label_join_pending") == 1
    assert requests.post(serve.url("/ingest"), data=ndjson([{"model": "credit", "id": "c-1", "label": 1}]),
                         timeout=10).status_code == 200
    serve.wait_until(lambda: serve.value("modelmon_labels_total", model="credit") == 1, timeout=10)


def test_a_class_overflow_in_one_model_freezes_no_model(serve):
    now = time.time() - 600
    assert post(serve, segment(60, now, "s", prediction=lambda i: f"cls-{i}")).status_code == 200  # 60 classes
    assert post(serve, eta(30, now, "e")).status_code == 200
    serve.wait_until(lambda: serve.value("modelmon_window_labeled", model="eta") == 30, timeout=10)
    assert serve.value("modelmon_accuracy_ratio", model="segment", version="v1") == 0.0
    assert serve.value("modelmon_confusion_total", model="segment", predicted="__other__") > 0
    assert serve.value("modelmon_cardinality_overflow_total", model="segment", label="class") > 0

    restart(serve)  # the checkpoint restores the overflowed window; nothing raises on it
    assert post(serve, eta(20, now + 100, "f")).status_code == 200
    assert post(serve, segment(30, now + 100, "t")).status_code == 200
    serve.wait_until(lambda: serve.value("modelmon_window_labeled", model="eta") == 50, timeout=10)
    serve.wait_until(lambda: serve.value("modelmon_window_labeled", model="segment") == 90, timeout=10)
    assert serve.value("modelmon_refresh_errors_total") == 0
    assert "Traceback" not in serve.stderr()


def test_huge_and_churning_label_values_cannot_hold_the_budget_or_bloat_metrics(serve):
    now = time.time() - 600
    attack = [{**eta(1, now + i, f"x{i}")[0], "version": f"{i}" * 65536} for i in range(3)]
    assert post(serve, attack).status_code == 200
    text = requests.get(serve.url("/metrics"), timeout=10).text
    assert len(text) < 200_000  # before: 13.8 MB
    assert serve.value("modelmon_label_values_shortened_total", model="eta", label="version") == 3
    assert post(serve, eta(5, now + 10, "real", version="v9")).status_code == 200
    assert serve.value("modelmon_predictions_total", model="eta", version="v9") == 0  # budget full: __other__

    restart(serve)  # the attack versions come back with the checkpoint while they are fresh...
    time.sleep(3.5)  # ...and give their slots back once idle past label_idle (3 s here)
    assert post(serve, eta(5, now + 20, "real2", version="v9")).status_code == 200
    serve.wait_until(lambda: serve.value("modelmon_predictions_total", model="eta", version="v9") == 5, timeout=10)
    versions = {dict(labels).get("version") for (name, labels) in serve.metrics()
                if name == "modelmon_predictions_total"}
    assert all(v is None or len(v) <= 128 for v in versions)
