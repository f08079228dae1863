"""Real `modelmon serve` / `modelmon receiver` processes for tests, started by the CLI as users do."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port

SERVE_CONFIG = """
models:
  - name: bin
    task: binary
    features: {numeric: [x1, x2], categorical: [c]}
    reference: {first: 100}
    quality_window: 500
    drift_window: 300
    min_drift_samples: 50
exporter:
  multivariate: {enabled: false}
"""


class Process:
    """A CLI process on a free 127.0.0.1 port, its stderr kept in `<tmp>/<name>.log`."""

    name = "process"

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.stderr_path = tmp / f"{self.name}.log"

    def argv(self, *extra: str) -> list[str]:
        raise NotImplementedError

    def start(self, *extra: str, env: dict | None = None, wait: bool = True) -> None:
        self.proc = subprocess.Popen(self.argv(*extra), stdout=subprocess.DEVNULL,
                                     stderr=open(self.stderr_path, "ab"), env={**os.environ, **(env or {})})
        if wait:
            self.wait_healthy()

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}: {self.stderr()[-2000:]}")
            try:
                if requests.get(self.url("/healthz"), timeout=1).ok:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise AssertionError(f"{self.name} did not come up: {self.stderr()[-2000:]}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stderr(self) -> str:
        return self.stderr_path.read_text() if self.stderr_path.exists() else ""

    def rss_bytes(self) -> int:
        """Resident set size now (Linux /proc)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def peak_rss_bytes(self) -> int:
        """Peak resident set size so far (Linux /proc VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM")

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/task"))

    def stop(self, sig=signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=timeout)
        return self.proc.returncode if self.proc else None


class Serve(Process):
    """`modelmon serve` with a config text (default: one binary model `bin`)."""

    name = "serve"

    def __init__(self, tmp: Path, log: Path | None, config: str = SERVE_CONFIG):
        super().__init__(tmp)
        self.log = log
        self.config = config

    def argv(self, *extra: str) -> list[str]:
        cfg = self.tmp / "modelmon.yaml"
        cfg.write_text(self.config)
        return [sys.executable, "-m", "modelmon", "serve", "--config", str(cfg),
                *(["--log", str(self.log)] if self.log is not None else []),
                "--port", str(self.port), "--poll-interval", "0.05", "--refresh-interval", "0.2", *extra]

    def metrics(self) -> dict[tuple[str, tuple], float]:
        """Every sample of /metrics as {(name, sorted label pairs): value}."""
        text = requests.get(self.url("/metrics"), timeout=5).text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples}

    def value(self, name: str, **labels) -> float:
        """Sum of the samples of `name` whose labels include `labels` (0 when none)."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.metrics().items() if n == name and want <= set(ls))

    def predictions(self) -> float:
        return self.value("modelmon_predictions_total")

    def wait_for(self, n: int, timeout: float = 30) -> float:
        deadline = time.time() + timeout
        seen = -1.0
        while time.time() < deadline:
            seen = self.predictions()
            if seen >= n:
                return seen
            time.sleep(0.1)
        return seen

    def wait_until(self, check, timeout: float = 30, interval: float = 0.1):
        """Poll `check()` until it returns a truthy value; return it, or fail with the last one and stderr."""
        return wait_until(check, timeout, interval, detail=lambda: f"; stderr: {self.stderr()[-1500:]}")


class Receiver(Process):
    """`modelmon receiver` on a SQLite file in the test's directory."""

    name = "receiver"

    def __init__(self, tmp: Path, db: Path | None = None):
        super().__init__(tmp)
        self.db = db or tmp / "alerts.db"

    def argv(self, *extra: str) -> list[str]:
        return [sys.executable, "-m", "modelmon", "receiver", "--db", str(self.db), "--port", str(self.port), *extra]


def append(path: Path, records) -> None:
    with path.open("ab") as f:
        for r in records:
            f.write(orjson.dumps(r) + b"\n")


def ndjson(records) -> bytes:
    return b"\n".join(orjson.dumps(r) for r in records) + b"\n"


def wait_until(check, timeout: float = 20.0, interval: float = 0.02, detail=lambda: ""):
    """Poll `check()` until it returns a truthy value; return it, or fail with the last one (and `detail()`)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r}){detail()}")


@contextlib.contextmanager
def stack_up(argv: list[str], cwd: Path, timeout: float):
    """`modelmon stack up` (``argv``) in the background, its output in ``cwd``/stack.out, until its banner
    says it is up. Yields (process, output path, deadline): the deadline (``timeout`` from the start)
    also bounds what the caller waits for next. Killed at the end if still running."""
    log = cwd / "stack.out"
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
    try:
        deadline = time.monotonic() + timeout
        while "modelmon stack is up" not in log.read_text():
            assert proc.poll() is None, f"stack up exited with {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"stack not up in time:\n{log.read_text()}"
            time.sleep(0.5)
        yield proc, log, deadline
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
