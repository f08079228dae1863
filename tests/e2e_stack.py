"""A live modelmon stack for end-to-end tests: real processes on 127.0.0.1.

Prometheus (scrape and evaluate every second), Alertmanager (1 s grouping), the exporter on a
log file, the on-call receiver, and a traffic thread writing simulator records with current
timestamps. Scenarios switch per model at run time. Rules come from the generator with short
`for` and rate windows, so an incident reaches the receiver in seconds.
"""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import requests
import yaml

from modelmon.alerting.alerts import estimated_alert_name
from modelmon.alerting.generate import artefacts as alerting_artefacts
from modelmon.alerting.options import RuleOptions
from modelmon.alerting.prometheus_config import PrometheusOptions, ScrapeTargets
from modelmon.config import load_config
from modelmon.contract import ESTIMATED_KEYS
from modelmon.simulate import Simulator
from tests.conftest import ROOT, free_port

RATE_PER_MODEL = 25.0  # records per second per model
TICK = 0.25
# Alerts whose `for` stays longer than the stack's 5s: labels flow inline (no "not arriving"), and
# the estimated-quality alerts rest on estimates refitted every 5s from a 300-prediction window, so
# they must hold for a while (a single 3-SE excursion or a startup estimate is not an incident).
E2E_FOR_OVERRIDES = {
    "ModelmonLabelsNotArriving": "10m",
    "ModelmonEstimateDisagrees": "1m",
    **{estimated_alert_name(k): "20s" for k in ESTIMATED_KEYS},
}


def e2e_config_text(receiver_port: int) -> str:
    """The demo config with windows small enough to react within seconds, pointing at our receiver."""
    data = yaml.safe_load((ROOT / "modelmon.yaml").read_text())
    for m in data["models"]:
        m["reference"] = str((ROOT / m["reference"]).resolve())
        m.update(quality_window=300, drift_window=300, min_labeled=100, min_drift_samples=100)
        # A 300-record window's normed Wasserstein distance sits at ~0.07 on unchanged data (its noise
        # floor shrinks with the window: README, "Drift decisions"); the demo's 0.09 is for 1000+.
        if "wasserstein_normed" in m.get("thresholds", {}):
            m["thresholds"]["wasserstein_normed"] = {"warning": 0.25}
    # credit is also served by a KServe InferenceService here (tests/test_e2e_kserve.py posts its
    # logger's events): the KServe panels and runbook queries then have data on this stack.
    for m in data["models"]:
        if m["name"] == "credit":
            m["kserve"] = {"inference_service": "credit-risk", "component": "predictor"}
    data["exporter"]["multivariate"] = {"enabled": True, "interval": "5s", "sample_size": 600}
    # Alerts read the replica-summed recorded series over the alert window: 30s holds ~750 records a
    # model at 25/s (past min_labeled and min_drift_samples), so a fault shows within seconds.
    data["recording"] = {"windows": ["30s", "1h", "1d"], "alert_window": "30s"}
    data["alerting"]["receivers"] = [{"name": "modelmon-inbox", "webhook": {
        "url": f"http://127.0.0.1:{receiver_port}/webhook", "send_resolved": True}}]
    data["alerting"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    return yaml.safe_dump(data, sort_keys=False)


class Traffic(threading.Thread):
    """Writes live records (ts = now) for every model; `scenarios[model]` can change any time."""

    def __init__(self, log: Path, models: list[str]):
        super().__init__(name="e2e-traffic", daemon=True)
        self.log = log
        self.scenarios = {m: "stable" for m in models}
        sims = {m: Simulator(models=(m,), seed=7 + i, inline_labels=True, label_rate=1.0, error_rate=0.0)
                for i, m in enumerate(models)}
        now = time.time()
        self.streams = {m: sim.stream(now) for m, sim in sims.items()}
        self._halt = threading.Event()
        self._carry = {m: 0.0 for m in models}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            last = time.time()
            while not self._halt.wait(TICK):
                now = time.time()
                lines = []
                for model, stream in self.streams.items():
                    due = self._carry[model] + (now - last) * RATE_PER_MODEL
                    n = int(due)
                    self._carry[model] = due - n
                    ts_ms = np.round(np.linspace(last, now, n, endpoint=False) * 1000).astype(np.int64)
                    records = list(stream.emit(self.scenarios[model], ts_ms)) if n else []
                    records += list(stream.due_labels(now * 1000))
                    lines.extend(orjson.dumps(r) for r in records)
                last = now
                if lines:
                    with self.log.open("ab") as f:
                        f.write(b"\n".join(lines) + b"\n")
        except BaseException as e:  # noqa: BLE001 - surfaced by the test through .error
            self.error = e

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


class LiveStack:
    def __init__(self, workdir: Path, prometheus_bin: str, alertmanager_bin: str):
        self.dir = workdir
        self.ports = {name: free_port() for name in ("exporter", "receiver", "prometheus", "alertmanager")}
        self.procs: dict[str, subprocess.Popen] = {}
        self.config_path = workdir / "modelmon.yaml"
        self.config_path.write_text(e2e_config_text(self.ports["receiver"]))
        self.config = load_config(self.config_path)
        self.log = workdir / "predictions.jsonl"
        self.log.touch()
        self.prometheus_bin, self.alertmanager_bin = prometheus_bin, alertmanager_bin
        self.traffic: Traffic | None = None
        self.started_at = time.time()

    # ------------------------------------------------------------------ lifecycle

    def write_generated(self) -> None:
        p = self.ports
        files = alerting_artefacts(
            self.config,
            rules=RuleOptions(for_override="5s", rate_window="30s", min_requests=5,
                              for_overrides=E2E_FOR_OVERRIDES),
            prometheus=PrometheusOptions(
                targets=ScrapeTargets(exporter=f"127.0.0.1:{p['exporter']}", prometheus=f"127.0.0.1:{p['prometheus']}",
                                      alertmanager=f"127.0.0.1:{p['alertmanager']}"),
                scrape_interval="1s", evaluation_interval="1s"))
        for rel, text in files.items():
            path = self.dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    def start(self) -> None:
        self.write_generated()
        p, d = self.ports, self.dir
        py = [sys.executable, "-m", "modelmon"]
        self._spawn("receiver", py + ["receiver", "--port", str(p["receiver"]), "--db", str(d / "alerts.db")],
                    f"http://127.0.0.1:{p['receiver']}/healthz")
        self._spawn("exporter", py + ["serve", "--config", str(self.config_path), "--log", str(self.log),
                                      "--from-start", "--port", str(p["exporter"]), "--refresh-interval", "0.5",
                                      "--poll-interval", "0.1"],
                    f"http://127.0.0.1:{p['exporter']}/ready")
        self._spawn("alertmanager", [self.alertmanager_bin, f"--config.file={d / 'alerting/alertmanager.yml'}",
                                     f"--storage.path={d / 'am-data'}",
                                     f"--web.listen-address=127.0.0.1:{p['alertmanager']}",
                                     "--cluster.listen-address="],
                    f"http://127.0.0.1:{p['alertmanager']}/-/ready")
        self._spawn("prometheus", [self.prometheus_bin, f"--config.file={d / 'prometheus/prometheus.yml'}",
                                   f"--storage.tsdb.path={d / 'prom-data'}",
                                   f"--web.listen-address=127.0.0.1:{p['prometheus']}"],
                    f"http://127.0.0.1:{p['prometheus']}/-/ready")
        self.traffic = Traffic(self.log, [m.name for m in self.config.models])
        self.traffic.start()
        self.started_at = time.time()

    def _spawn(self, name: str, argv: list[str], ready_url: str, timeout: float = 60) -> None:
        out = open(self.dir / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=self.dir)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited: {self.tail(name)}")
            try:
                if requests.get(ready_url, timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{name} not ready after {timeout}s: {self.tail(name)}")

    def tail(self, name: str, n: int = 3000) -> str:
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    def stop(self) -> None:
        try:
            if self.traffic:
                self.traffic.stop()
        finally:
            self._stop_processes()

    def _stop_processes(self) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    # ------------------------------------------------------------------ queries

    def prom(self, path: str, **params) -> dict:
        r = requests.get(f"http://127.0.0.1:{self.ports['prometheus']}{path}", params=params, timeout=10)
        return r.json()

    def query(self, expr: str) -> list[dict]:
        data = self.prom("/api/v1/query", query=expr)
        assert data["status"] == "success", (expr, data)
        return data["data"]["result"]

    def receiver_alerts(self) -> list[dict]:
        r = requests.get(f"http://127.0.0.1:{self.ports['receiver']}/api/alerts", timeout=5)
        return r.json()["alerts"]

    def wait_for_notification(self, alertname: str, status: str, model: str | None, timeout: float,
                              since: float = 0.0) -> dict:
        """The receiver's alert once it reached `status` (received after `since`), or AssertionError."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            for a in self.receiver_alerts():
                labels = a["labels"]
                if labels.get("alertname") == alertname and a["status"] == status \
                        and (model is None or labels.get("model") == model) and a["last_received_at"] >= since:
                    return a
            self.check_alive()
            time.sleep(0.5)
        raise AssertionError(f"no {status} {alertname} for {model} within {timeout}s; receiver has "
                             f"{[(x['labels'].get('alertname'), x['labels'].get('model'), x['status']) for x in self.receiver_alerts()]}; "
                             f"ALERTS: {[(s['metric'].get('alertname'), s['metric'].get('model'), s['metric'].get('alertstate')) for s in self.query('ALERTS')]}")

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} died: {self.tail(name)}")
        if self.traffic and self.traffic.error:
            raise AssertionError(f"traffic writer failed: {self.traffic.error!r}")
