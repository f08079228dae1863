"""Every CLI error path a user can hit ends in one readable line and a non-zero status, never a traceback.

Each case runs the real `modelmon` command as a user would, in a fresh process.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

GOOD = """
models:
  - name: m
    task: binary
    features: {numeric: [x]}
    reference: {first: 50}
"""
DUPLICATE = GOOD + "  - name: n\n    name: o\n    task: binary\n    features: {numeric: [x]}\n    reference: {first: 50}\n"
DRIFT_PAGES = GOOD + "    thresholds: {psi: {warning: 0.1, critical: 0.25}}\n"


def cases(tmp: Path) -> list[tuple[str, list[str], str]]:
    """(what, argv after `modelmon`, a phrase the error must contain)."""
    (tmp / "good.yaml").write_text(GOOD)
    (tmp / "dup.yaml").write_text(DUPLICATE)
    (tmp / "drift.yaml").write_text(DRIFT_PAGES)
    (tmp / "bad.yaml").write_text("models: [\n")
    (tmp / "empty-token").write_text("")
    good = str(tmp / "good.yaml")
    return [
        ("config file missing", ["generate", "--config", str(tmp / "nope.yaml"), "--check"], "cannot read"),
        ("config not YAML", ["generate", "--config", str(tmp / "bad.yaml"), "--check"], "not valid YAML"),
        ("duplicate key", ["generate", "--config", str(tmp / "dup.yaml"), "--check"], "duplicate key 'name'"),
        ("drift may not page", ["serve", "--config", str(tmp / "drift.yaml")], "drift opens tickets"),
        ("log in a missing directory", ["serve", "--config", good, "--log", str(tmp / "typo" / "p.jsonl")],
         "does not exist"),
        ("empty token file", ["serve", "--config", good, "--ingest-token-file", str(tmp / "empty-token")], "empty"),
        ("receiver db is a directory", ["receiver", "--db", str(tmp)], str(tmp)),
        ("push URL without scheme", ["dashboards", "push", "--config", good, "--url", "127.0.0.1:19999"],
         "http://127.0.0.1:19999"),
        ("unknown command", ["frobnicate"], "invalid choice"),
        ("simulate: unknown scenario", ["simulate", "--scenario", "nope", "--records", "1"], "invalid choice"),
    ]


@pytest.mark.parametrize("index", range(10))
def test_cli_error_is_one_line_without_traceback(tmp_path, index):
    what, argv, phrase = cases(tmp_path)[index]
    proc = subprocess.run([sys.executable, "-m", "modelmon", *argv], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert proc.returncode not in (0, None), f"{what}: exit 0"
    assert "Traceback" not in proc.stderr, f"{what}:\n{proc.stderr}"
    assert phrase in proc.stderr, f"{what}: {phrase!r} not in {proc.stderr!r}"


def test_every_case_is_run(tmp_path):
    assert len(cases(tmp_path)) == 10  # the parametrize range above
