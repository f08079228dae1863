"""`modelmon generate`: the committed artefacts are current, and --check catches stale and orphan files."""
from __future__ import annotations

import shutil

from modelmon.cli import main
from modelmon.config import load_config
from modelmon.generate import artefacts
from tests.conftest import ROOT


def test_committed_artefacts_are_current(capsys):
    assert main(["generate", "--config", str(ROOT / "modelmon.yaml"), "--out", str(ROOT), "--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_generation_is_deterministic():
    config = load_config(ROOT / "modelmon.yaml")
    first, second = artefacts(config), artefacts(config)
    assert first == second
    assert {"prometheus/prometheus.yml", "alerting/alertmanager.yml", "docker-compose.yml"} <= set(first)
    assert any(p.startswith("grafana/dashboards/") for p in first)
    assert any(p.startswith("prometheus/rules/") for p in first)


def test_check_reports_stale_missing_and_orphan_files_and_generate_repairs_them(tmp_path, capsys):
    cfg = tmp_path / "modelmon.yaml"
    shutil.copy(ROOT / "modelmon.yaml", cfg)
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    args = ["generate", "--config", str(cfg), "--out", str(tmp_path)]
    assert main(args) == 0
    assert main([*args, "--check"]) == 0

    (tmp_path / "alerting/alertmanager.yml").write_text("edited by hand\n")
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(compose.read_text().replace("--rate=50", "--rate=500"))
    (tmp_path / "grafana/dashboards/modelmon-drift.json").unlink()
    (tmp_path / "prometheus/rules/model-gone.yml").write_text("groups: []\n")
    capsys.readouterr()
    assert main([*args, "--check"]) == 1
    err = capsys.readouterr().err
    assert "alerting/alertmanager.yml: stale" in err
    assert "docker-compose.yml: stale" in err  # the compose topology is generated too
    assert "grafana/dashboards/modelmon-drift.json: missing" in err
    assert "prometheus/rules/model-gone.yml: orphan" in err

    assert main(args) == 0
    assert not (tmp_path / "prometheus/rules/model-gone.yml").exists()
    assert "--rate=50\n" in compose.read_text()
    assert main([*args, "--check"]) == 0


def test_bad_config_is_one_clear_error(tmp_path, capsys):
    cfg = tmp_path / "modelmon.yaml"
    cfg.write_text("models:\n  - name: m\n    task: binary\n    features: {numeric: [x]}\n"
                   "    reference: {first: 100}\n    thresholds: {accuracy: {warning: high}}\n")
    assert main(["generate", "--config", str(cfg), "--out", str(tmp_path), "--check"]) == 2
    assert "models[0].thresholds.accuracy.warning: expected a number, got 'high'" in capsys.readouterr().err
