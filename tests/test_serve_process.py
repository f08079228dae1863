"""`modelmon serve` as a real process: follows a log through rotation, restart and SIGKILL."""
from __future__ import annotations

import os
import signal
import time

import orjson
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.exporter_helpers import binary_records
from tests.processes import Serve, append


@pytest.fixture
def serve(tmp_path):
    s = Serve(tmp_path, tmp_path / "predictions.jsonl")
    yield s
    s.stop(signal.SIGKILL)


def test_serve_follows_rotation_and_restarts_without_loss_or_duplicates(serve, tmp_path):
    records, _ = binary_records(1000, seed=50, inline_share=1.0)
    append(serve.log, records[:200])
    serve.start("--from-start")
    assert serve.wait_for(200) == 200

    # Rename rotation: lines also land in the old file after the rename, before the new one exists.
    os.rename(serve.log, tmp_path / "predictions.jsonl.1")
    append(tmp_path / "predictions.jsonl.1", records[200:250])
    append(serve.log, records[250:400])
    assert serve.wait_for(400) == 400

    # Copytruncate rotation.
    (tmp_path / "copy.jsonl").write_bytes(serve.log.read_bytes())
    with serve.log.open("r+b") as f:
        f.truncate(0)
    append(serve.log, records[400:500])
    assert serve.wait_for(500) == 500

    # Graceful restart: the offset state file means nothing is read twice.
    serve.stop()
    append(serve.log, records[500:600])
    serve.start()
    assert serve.wait_for(100) == 100  # counters restart at zero, and only the 100 new lines are read
    time.sleep(0.5)
    assert serve.predictions() == 100

    # SIGKILL: offsets are committed after every ingested batch.
    serve.stop(signal.SIGKILL)
    append(serve.log, records[600:700])
    serve.start()
    assert serve.wait_for(100) == 100
    time.sleep(0.5)
    assert serve.predictions() == 100


def test_serve_ready_and_ingest_over_http(serve):
    serve.log.touch()
    serve.start("--ingest-token", "t0ken")
    assert requests.get(serve.url("/ready"), timeout=5).status_code == 200
    records, _ = binary_records(30, seed=51, inline_share=1.0)
    body = b"\n".join(orjson.dumps(r) for r in records)
    assert requests.post(serve.url("/ingest"), data=body, timeout=5).status_code == 401
    r = requests.post(serve.url("/ingest"), data=body, headers={"Authorization": "Bearer t0ken"}, timeout=5)
    assert r.status_code == 200 and r.json()["accepted"] == 30
    assert serve.wait_for(30) == 30


def metric(serve: Serve, name: str, **labels) -> float | None:
    text = requests.get(serve.url("/metrics"), timeout=5).text
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def wait_metric(serve: Serve, name: str, expected: float, timeout: float = 30, **labels) -> float | None:
    deadline = time.time() + timeout
    seen = None
    while time.time() < deadline:
        seen = metric(serve, name, **labels)
        if seen == expected:
            break
        time.sleep(0.1)
    return seen


def test_restart_keeps_quality_window_and_predictions_waiting_for_labels(serve):
    preds, late = binary_records(400, seed=53, inline_share=0.5)
    inline = sum("label" in p for p in preds)
    append(serve.log, preds)
    serve.start("--from-start")
    assert wait_metric(serve, "modelmon_window_labeled", inline, model="bin", version="v1") == inline
    accuracy = metric(serve, "modelmon_accuracy_ratio", model="bin")
    assert metric(serve, "modelmon_label_join_pending") == len(late)

    serve.stop()  # SIGTERM: the offset is committed, then the checkpoint written
    checkpoint = serve.log.with_name(serve.log.name + ".modelmon-checkpoint")
    assert checkpoint.exists()
    serve.start()
    # Before any new record: the window and its gauges are back, and the predictions still wait.
    assert wait_metric(serve, "modelmon_window_labeled", inline, model="bin", version="v1") == inline
    assert metric(serve, "modelmon_accuracy_ratio", model="bin") == accuracy
    assert metric(serve, "modelmon_label_join_pending") == len(late)
    assert serve.predictions() == 0  # counters restart at zero; nothing was read twice

    append(serve.log, late)
    assert wait_metric(serve, "modelmon_labels_total", len(late), model="bin", version="v1") == len(late)
    assert metric(serve, "modelmon_labels_unmatched_total", model="bin") == 0
    assert wait_metric(serve, "modelmon_window_labeled", 400, model="bin", version="v1") == 400


def test_after_a_crash_the_periodic_checkpoint_is_used(serve):
    preds, _ = binary_records(300, seed=54, inline_share=1.0)
    append(serve.log, preds[:200])
    serve.start("--from-start", "--checkpoint-interval", "0.2")
    assert serve.wait_for(200) == 200
    checkpoint = serve.log.with_name(serve.log.name + ".modelmon-checkpoint")
    deadline = time.time() + 10
    while not checkpoint.exists() and time.time() < deadline:
        time.sleep(0.1)
    append(serve.log, preds[200:250])  # read, then a checkpoint after the commit
    assert serve.wait_for(250) == 250
    time.sleep(1.0)
    serve.stop(signal.SIGKILL)
    append(serve.log, preds[250:])
    serve.start()
    assert wait_metric(serve, "modelmon_window_labeled", 300, model="bin", version="v1") == 300
    assert serve.predictions() == 50


def test_http_only_exporter_checkpoints_to_the_path_given(tmp_path):
    serve = Serve(tmp_path, None)
    checkpoint = tmp_path / "state" / "http.ckpt"
    checkpoint.parent.mkdir()  # serve creates no directory: a missing one is a startup error
    try:
        serve.start("--checkpoint", str(checkpoint), "--checkpoint-interval", "0.3")
        preds, _ = binary_records(120, seed=55, inline_share=1.0)
        r = requests.post(serve.url("/ingest"), data=b"\n".join(orjson.dumps(p) for p in preds), timeout=5)
        assert r.status_code == 200
        deadline = time.time() + 10
        while not checkpoint.exists() and time.time() < deadline:  # the timer saves it, not only shutdown
            time.sleep(0.1)
        assert checkpoint.exists()
        serve.stop(signal.SIGKILL)
        serve.start("--checkpoint", str(checkpoint))
        assert wait_metric(serve, "modelmon_window_labeled", 120, model="bin", version="v1") == 120
    finally:
        serve.stop(signal.SIGKILL)


def test_scrapes_leave_no_access_log_or_colour_codes_in_the_output(tmp_path):
    """Every scrape used to print a Werkzeug access-log line with ANSI colours; on waitress the
    output is modelmon's own log lines only, however often Prometheus scrapes."""
    import subprocess

    serve = Serve(tmp_path, tmp_path / "predictions.jsonl")
    serve.log.touch()
    out_path, err_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        serve.proc = subprocess.Popen(serve.argv(), stdout=out, stderr=err)
    try:
        serve.wait_healthy()
        for path in ["/metrics"] * 20 + ["/ready", "/healthz", "/", "/no-such-page"]:
            requests.get(serve.url(path), timeout=5)
    finally:
        assert serve.stop() == 0
    text = out_path.read_text() + err_path.read_text()
    assert "\x1b[" not in text  # no ANSI escape
    assert "GET /" not in text and "HTTP/1.1" not in text and '" 200' not in text  # no access log
    assert "serving http://127.0.0.1:" in text  # the output that is there is modelmon's own


def test_ready_names_every_reason_in_a_sentence(tmp_path):
    """503 from /ready carries `reason`: the log it waits for, and each model whose reference
    file did not load (the other keys as before)."""
    config = SERVE_CONFIG_WITH_REFERENCE.format(reference=tmp_path / "ref" / "missing.csv")
    serve = Serve(tmp_path, tmp_path / "not-yet.jsonl", config=config)
    try:
        serve.start()
        r = requests.get(serve.url("/ready"), timeout=5)
        assert r.status_code == 503
        body = r.json()
        assert {"ready", "source_open", "references", "errors", "reason"} <= set(body)
        reasons = body["reason"].split("; ")
        assert reasons[0].startswith(f"waiting for log {serve.log}")
        assert reasons[1].startswith("reference for model bin not loaded: ") and "missing.csv" in reasons[1]
        assert body["references"] == {"bin": "error"} and body["ready"] is False
    finally:
        serve.stop(signal.SIGKILL)


SERVE_CONFIG_WITH_REFERENCE = """
models:
  - name: bin
    task: binary
    features: {{numeric: [x1, x2], categorical: [c]}}
    reference: {reference}
exporter:
  multivariate: {{enabled: false}}
"""
