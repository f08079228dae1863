"""A real redis-server for the stream tests: 127.0.0.1, a free port, a temp dir, no persistence.

Import the fixture into a test module: ``from tests.redis_server import redis_server  # noqa: F401``.
"""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
import redis

from tests.conftest import free_port, which_or_skip


class RedisServer:
    """One redis-server process; `stop()` and `start()` again on the same port: it comes back empty,
    or, `persistent`, with everything it acknowledged (append-only file, fsync before each reply)."""

    def __init__(self, binary: str, directory: Path, password: str | None = None, persistent: bool = False):
        self.binary = binary
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.password = password
        self.persistent = persistent
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10) -> None:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log"),
                *(["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"])]
        if self.password:
            argv += ["--requirepass", self.password]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + timeout
        client = self.client()
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.time() > deadline:
                    log = (self.dir / "redis.log").read_text() if (self.dir / "redis.log").exists() else ""
                    raise AssertionError(f"redis-server did not come up on {self.port}: {log[-1500:]}") from None
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self, sig=signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=10)

    def url(self, stream: str = "preds", group: str = "mm", **params) -> str:
        """``redis://127.0.0.1:PORT/0?stream=..&group=..&<params>`` (the password in it when set)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0?" + urlencode({"stream": stream, "group": group, **params})


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(which_or_skip("redis-server"), tmp_path / "redis")
    server.start()
    yield server
    server.stop()
