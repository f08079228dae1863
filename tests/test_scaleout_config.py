"""The scale-out Prometheus configs (modelmon/stack/scaleout.py) through the real promtool, and the
README's recipe equal to what the functions write."""
from __future__ import annotations

import re
import subprocess

import yaml

from modelmon.alerting.generate import artefacts as alerting_artefacts
from modelmon.config import load_config
from modelmon.contract import EXPORTER_JOB
from modelmon.stack.scaleout import REMOTE_WRITE_PATH, central_prometheus_config, edge_prometheus_config
from conftest import ROOT


def check_config(promtool: str, folder) -> str:
    proc = subprocess.run([promtool, "check", "config", "prometheus.yml"], cwd=folder, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def test_edge_config_scrapes_the_replicas_and_remote_writes(promtool, tmp_path):
    config = edge_prometheus_config(cluster="eu-1", replica="0", exporters=["exporter-0:9188", "exporter-1:9188"],
                                    remote_write_url=f"http://central:9090{REMOTE_WRITE_PATH}")
    assert config["global"]["external_labels"] == {"cluster": "eu-1", "replica": "0"}
    assert config["scrape_configs"][0]["job_name"] == EXPORTER_JOB
    assert "rule_files" not in config  # an edge server runs no modelmon rule (see the module docstring)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    check_config(promtool, tmp_path)


def test_central_config_loads_every_generated_rule_file(promtool, tmp_path):
    files = alerting_artefacts(load_config(ROOT / "modelmon.yaml"))
    (tmp_path / "rules").mkdir()
    for rel, text in files.items():
        if rel.startswith("prometheus/rules/"):
            (tmp_path / "rules" / rel.rsplit("/", 1)[1]).write_text(text)
    config = central_prometheus_config(rule_files=["rules/*.yml"], alertmanagers=["alertmanager:9093"])
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    output = check_config(promtool, tmp_path)
    assert "rules/model-credit.yml" in output  # the rule files were found and checked


def test_readme_recipe_is_what_the_functions_write():
    """The README shows an edge and a central config; they must be the functions' output."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```yaml\n# (edge|central) Prometheus[^\n]*\n(.*?)```", readme, re.S)
    found = {kind: yaml.safe_load(body) for kind, body in blocks}
    assert set(found) == {"edge", "central"}, "README: the scale-out recipe's two yaml blocks"
    assert found["edge"] == edge_prometheus_config(
        cluster="eu-1", replica="0", exporters=["modelmon-0:9188", "modelmon-1:9188"],
        remote_write_url=f"http://central-prometheus:9090{REMOTE_WRITE_PATH}")
    assert found["central"] == central_prometheus_config(rule_files=["rules/*.yml"],
                                                         alertmanagers=["alertmanager:9093"])
