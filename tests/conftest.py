"""Shared test fixtures: real binaries (skip on a laptop, fail in CI), free ports, the demo config."""
from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_BINARIES = os.environ.get("MODELMON_REQUIRE_BINARIES") == "1"
INSTALL_HINT = "apt-get install -y prometheus prometheus-alertmanager redis-server"


def which_or_skip(name: str) -> str:
    """Path of a real binary. Missing: skip with a hint, or fail when CI demands binaries."""
    path = shutil.which(name)
    if path:
        return path
    msg = f"{name} not found on PATH (install it: {INSTALL_HINT})"
    if REQUIRE_BINARIES:
        pytest.fail(msg + "; MODELMON_REQUIRE_BINARIES=1 forbids skipping")
    pytest.skip(msg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def promtool() -> str:
    return which_or_skip("promtool")


@pytest.fixture
def amtool() -> str:
    return which_or_skip("amtool")


@pytest.fixture
def prometheus_bin() -> str:
    return which_or_skip("prometheus")


@pytest.fixture
def alertmanager_bin() -> str:
    return which_or_skip("prometheus-alertmanager")


@pytest.fixture
def demo_config_path() -> Path:
    return ROOT / "modelmon.yaml"


@pytest.fixture(scope="session")
def live_stack(tmp_path_factory):
    """Real Prometheus, Alertmanager, exporter, receiver and live traffic (see tests/e2e_stack.py)."""
    from tests.e2e_stack import LiveStack

    stack = LiveStack(tmp_path_factory.mktemp("e2e"), which_or_skip("prometheus"),
                      which_or_skip("prometheus-alertmanager"))
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
