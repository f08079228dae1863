"""Scale-out end to end: two exporter replicas, two edge Prometheus servers, one central server.

Each replica follows its own log and gets a disjoint half of the traffic (split at random by
request); edge server `a` scrapes replica 1, edge server `b` replica 2, and both remote-write to a
central Prometheus (`--web.enable-remote-write-receiver`) that runs the generated rules. The
central recorded PSI per feature, accuracy per version (credit, segment) and MAE (eta) must equal
what one exporter computes over all of the traffic: an in-process exporter fed every record,
whose windows hold all of them.

Tolerance. PSI and the quality ratios from counters are exact functions of the summed counts, but
`increase()` extrapolates each series a little past its last sample (by up to 1.1 scrape
intervals), by a factor that is the same for every series of one target but differs slightly
between the two replicas; and a version's series appear with its first records, whose first
scrape `increase()` cannot count (all of a version's cells appear together, at 0 where not yet hit,
so the loss is proportional, not biased towards the common cells). Traffic is paced over about 30
scrapes so both effects stay small: PSI within 0.01 + 5 %, accuracy within 0.01 (measured: at most
0.003), MAE within 1 %.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
import requests
import yaml

from modelmon.alerting.generate import artefacts as alerting_artefacts
from modelmon.alerting.options import RuleOptions
from modelmon.config import load_config
from modelmon.contract import QUANTITIES
from modelmon.exporter.pipeline import Exporter
from modelmon.simulate import Simulator
from modelmon.stack.scaleout import REMOTE_WRITE_PATH, RemoteWriteOptions, central_prometheus_config, \
    edge_prometheus_config
from conftest import ROOT, free_port

pytestmark = pytest.mark.e2e

WINDOW = "1h"  # covers the whole run: the recorded value is over all of the traffic
N_SLOTS = 9000  # records, all models together (split between the replicas)
PACE_STEPS = 30  # the logs grow in this many steps, one per second (one scrape each)


def scaleout_config(tmp: Path) -> Path:
    """The demo config with windows that hold every record of the run, so the single exporter's
    gauges describe all of the traffic."""
    data = yaml.safe_load((ROOT / "modelmon.yaml").read_text())
    for m in data["models"]:
        m["reference"] = str((ROOT / m["reference"]).resolve())
        m.update(quality_window=100_000, drift_window=100_000, min_labeled=50, min_drift_samples=50)
    data["exporter"]["multivariate"] = {"enabled": False}
    data["recording"] = {"windows": [WINDOW], "alert_window": WINDOW}
    path = tmp / "modelmon.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def traffic() -> list[dict]:
    """A canary on every model (two versions), then covariate drift (PSI well above 0), labels inline."""
    sim = Simulator(seed=11, inline_labels=True, label_rate=1.0, error_rate=0.0, candidate="worse",
                    canary_share=0.3)
    now_ms = int(time.time() * 1000) - 10 * 60_000  # in the past: within every clock guard
    stream = sim.stream(now_ms / 1000)
    half = N_SLOTS // 2
    times = now_ms + np.arange(N_SLOTS, dtype=np.int64) * 50
    return stream.emit("canary", times[:half]) + stream.emit("covariate_drift", times[half:])


class Proc:
    def __init__(self, name: str, argv: list[str], tmp: Path, ready: str):
        self.name, self.ready = name, ready
        self.log = tmp / f"{name}.log"
        self.proc = subprocess.Popen(argv, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, cwd=tmp)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self.tail()}")
            try:
                if requests.get(self.ready, timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.name} not ready: {self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def query(port: int, expr: str) -> dict[tuple, float]:
    r = requests.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert r["status"] == "success", r
    return {tuple(sorted(s["metric"].items())): float(s["value"][1]) for s in r["data"]["result"]}


def single_exporter(config_path: Path, records: list[dict]) -> Exporter:
    ex = Exporter(load_config(config_path))
    ex.load_references()
    ex.ingest_lines([orjson.dumps(r) for r in records], "file")
    ex.refresh(force=True)
    return ex


@pytest.fixture(scope="module")
def topology(tmp_path_factory, request):
    from conftest import which_or_skip

    prometheus = which_or_skip("prometheus")
    tmp = tmp_path_factory.mktemp("scaleout")
    config_path = scaleout_config(tmp)
    config = load_config(config_path)
    procs: list[Proc] = []
    request.addfinalizer(lambda: [p.stop() for p in reversed(procs)])

    # the central server: receives remote writes, runs the generated rules
    central_port = free_port()
    rules = alerting_artefacts(config, rules=RuleOptions(for_override="5s", rate_window="30s"))
    rule_dir = tmp / "central"
    for rel, text in rules.items():
        if rel.startswith("prometheus/rules/"):
            (rule_dir / "rules").mkdir(parents=True, exist_ok=True)
            (rule_dir / "rules" / Path(rel).name).write_text(text)
    (rule_dir / "prometheus.yml").write_text(yaml.safe_dump(
        central_prometheus_config(rule_files=["rules/*.yml"], evaluation_interval="1s")))
    procs.append(Proc("central", [prometheus, f"--config.file={rule_dir / 'prometheus.yml'}",
                                  f"--storage.tsdb.path={tmp / 'central-data'}", "--web.enable-remote-write-receiver",
                                  f"--web.listen-address=127.0.0.1:{central_port}"], tmp,
                      f"http://127.0.0.1:{central_port}/-/ready"))

    logs, exporter_ports = [], []
    for i in (1, 2):  # the exporter replicas, each on its own (empty) log
        log = tmp / f"predictions-{i}.jsonl"
        log.touch()
        port = free_port()
        procs.append(Proc(f"exporter-{i}", [sys.executable, "-m", "modelmon", "serve", "--config",
                                            str(config_path), "--log", str(log), "--from-start",
                                            "--port", str(port), "--state-file", str(tmp / f"offset-{i}.json"),
                                            "--refresh-interval", "0.5", "--poll-interval", "0.1"], tmp,
                          f"http://127.0.0.1:{port}/ready"))
        logs.append(log)
        exporter_ports.append(port)
    for cluster, port in zip("ab", exporter_ports):  # one edge server per replica
        edge_port = free_port()
        d = tmp / f"edge-{cluster}"
        d.mkdir()
        (d / "prometheus.yml").write_text(yaml.safe_dump(edge_prometheus_config(
            cluster=cluster, exporters=[f"127.0.0.1:{port}"], scrape_interval="1s",
            remote_write_url=f"http://127.0.0.1:{central_port}{REMOTE_WRITE_PATH}",
            remote_write=RemoteWriteOptions(batch_send_deadline="500ms"))))
        procs.append(Proc(f"edge-{cluster}", [prometheus, f"--config.file={d / 'prometheus.yml'}",
                                              f"--storage.tsdb.path={d / 'data'}",
                                              f"--web.listen-address=127.0.0.1:{edge_port}"], tmp,
                          f"http://127.0.0.1:{edge_port}/-/ready"))
    for p in procs:
        p.wait_ready()

    # Every bin counter exists at 0 from the start; wait until the centre holds both replicas' zeros,
    # so increase() counts every record from the first.
    deadline = time.time() + 60
    while time.time() < deadline:
        clusters = query(central_port, 'count by (cluster) (modelmon_feature_bin_total{job="modelmon"})')
        if len(clusters) == 2:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"the central server never saw both replicas: {procs[0].tail()}")
    time.sleep(3)

    records = traffic()
    rng = np.random.default_rng(5)
    side = rng.integers(2, size=len(records))
    parts = [[r for r, s in zip(records, side) if s == k] for k in (0, 1)]
    for step in range(PACE_STEPS):  # paced, one step per scrape
        for log, part in zip(logs, parts):
            chunk = part[step * len(part) // PACE_STEPS:(step + 1) * len(part) // PACE_STEPS]
            with log.open("ab") as f:
                f.write(b"".join(orjson.dumps(r) + b"\n" for r in chunk))
        time.sleep(1.0)
    for port, part in zip(exporter_ports, parts):  # both replicas have applied their whole half
        deadline = time.time() + 60
        want = len(part)
        while time.time() < deadline:
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            served = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                         if line.startswith(("modelmon_predictions_total{", "modelmon_shadow_predictions_total{")))
            if served >= want:
                break
            time.sleep(0.5)
    time.sleep(8)  # a few scrapes, remote writes and rule evaluations past the last record
    return {"central": central_port, "config": config, "single": single_exporter(config_path, records),
            "records": records, "parts": parts, "procs": procs}


def test_the_traffic_is_split_between_the_replicas(topology):
    a, b = topology["parts"]
    assert len(a) > 0.4 * len(topology["records"]) and len(b) > 0.4 * len(topology["records"])
    ids = lambda part: {r.get("id") for r in part}
    assert not ids(a) & ids(b)


def test_central_psi_per_feature_equals_one_exporter_over_all_traffic(topology):
    single = topology["single"]
    recorded = query(topology["central"], QUANTITIES["psi"].recorded(WINDOW))
    got = {(dict(k)["model"], dict(k)["feature"]): v for k, v in recorded.items()}
    expected = {(name, feature): stats["psi"] for name, s in single.states.items()
                for feature, stats in s.snapshot.feature_drift.items() if "psi" in stats}
    assert set(expected) <= set(got), f"recorded at the centre: {sorted(got)}"
    assert max(expected.values()) > 0.1  # the drift half moved some features: not a comparison of zeros
    for key, want in expected.items():
        assert got[key] == pytest.approx(want, rel=0.05, abs=0.01), key


def test_central_accuracy_per_version_equals_one_exporter_over_all_traffic(topology):
    single = topology["single"]
    recorded = query(topology["central"], QUANTITIES["accuracy"].recorded(WINDOW))
    got = {(dict(k)["model"], dict(k)["version"]): v for k, v in recorded.items()}
    expected = {(name, version): q["accuracy"] for name, s in single.states.items()
                for version, q in s.snapshot.quality.items() if "accuracy" in q}
    assert {m for m, _ in expected} == {"credit", "segment"}
    assert len(expected) >= 4  # two versions per classifier: the canary and its baseline
    assert set(expected) <= set(got), f"recorded at the centre: {sorted(got)}"
    for key, want in expected.items():
        assert got[key] == pytest.approx(want, abs=0.01), key


def test_central_mae_equals_one_exporter_over_all_traffic(topology):
    single = topology["single"]
    recorded = query(topology["central"], QUANTITIES["mae"].recorded(WINDOW))
    got = {dict(k)["version"]: v for k, v in recorded.items() if dict(k)["model"] == "eta"}
    expected = {version: q["mae"] for version, q in single.states["eta"].snapshot.quality.items() if "mae" in q}
    assert len(expected) >= 2 and set(expected) <= set(got)
    for version, want in expected.items():
        assert got[version] == pytest.approx(want, rel=0.01), version


def test_the_centre_holds_one_series_per_replica_and_the_rules_sum_them(topology):
    per_cluster = query(topology["central"], 'sum by (cluster) (modelmon_predictions_total{job="modelmon"})')
    assert {dict(k)["cluster"] for k in per_cluster} == {"a", "b"}
    a, b = topology["parts"]
    assert sorted(per_cluster.values()) == sorted([float(len(a)), float(len(b))])
