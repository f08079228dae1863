"""Start services in order with health-waits, watch them, and stop them all on one signal.

Each child runs in its own session, so a Ctrl-C in the terminal reaches only this process,
which then stops the children itself, one by one, newest first (terminate, wait, kill). A child that
exits on its own stops the whole stack with a non-zero status and the end of its log.

Logs are kept across runs: each start appends a marker line and then the child's output to
``<workdir>/logs/<service>.log``; a log past ``LOG_ROTATE_BYTES`` is renamed to ``<name>.log.1``
(replacing the previous one) at the next start, so each service keeps at most about twice that.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Callable, NoReturn, Sequence, TextIO

from modelmon.stack.errors import StackError
from modelmon.stack.plan import Health, Service

LOG_TAIL_LINES = 20
LOG_ROTATE_BYTES = 10 << 20


class _Interrupted(Exception):
    """SIGINT or SIGTERM arrived: stop cleanly, exit 0."""


def is_healthy(health: Health) -> bool:
    if health.redis:
        import redis

        client = redis.Redis.from_url(health.redis, socket_timeout=2, socket_connect_timeout=2)
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()
    if health.url:
        try:
            with urllib.request.urlopen(health.url, timeout=2) as resp:
                return 200 <= resp.status < 300
        except (urllib.error.URLError, OSError):
            return False
    if health.file:
        try:
            st = health.file.stat()
        except OSError:
            return False
        fresh = health.max_age is None or time.time() - st.st_mtime <= health.max_age
        return st.st_size > 0 and fresh
    return True


def log_tail(svc: Service, lines: int = LOG_TAIL_LINES, start: int = 0) -> str:
    """The last lines the service wrote in this run (its log from byte ``start`` on)."""
    try:
        with open(svc.log, "rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
    except OSError:
        return "    (no log)"
    tail = text.splitlines()[-lines:] or ["(empty)"]
    return "\n".join("    " + line for line in tail)


def open_log(path, name: str, argv: Sequence[str], rotate_bytes: int = LOG_ROTATE_BYTES,
             now: Callable[[], float] = time.time):
    """The service's log opened for appending (rotated first when past ``rotate_bytes``), with a
    line marking this start. Returns (file, offset where this run's output begins)."""
    try:
        if path.stat().st_size > rotate_bytes:
            os.replace(path, path.with_name(path.name + ".1"))
    except FileNotFoundError:
        pass
    log = open(path, "ab")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(now()))
    log.write(f"==== {stamp} modelmon stack: starting {name}: {' '.join(argv)}\n".encode())
    log.flush()
    return log, log.tell()


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the runner itself is killed (-9), no orphans."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Supervisor:
    def __init__(self, services: Sequence[Service], *, out: TextIO = sys.stdout,
                 health_timeout: float = 90.0, stop_timeout: float = 10.0, poll_interval: float = 0.2):
        self.services = list(services)
        self.out = out
        self.health_timeout = health_timeout
        self.stop_timeout = stop_timeout
        self.poll_interval = poll_interval
        self.running: list[tuple[Service, subprocess.Popen[bytes]]] = []
        self.log_start: dict[str, int] = {}  # service -> offset of this run's output in its log
        self._signal: int | None = None

    def run(self, on_ready: Callable[[], None] = lambda: None) -> int:
        """Start, wait for a signal or a death, stop. 0 after a signal, 1 after a failure."""
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            for svc in self.services:
                self._start(svc)
            on_ready()
            self._watch()
        except _Interrupted:
            self._say(f"{signal.Signals(self._signal or signal.SIGINT).name} received, stopping")
            return 0
        except StackError as e:
            self._say(str(e))
            return 1
        finally:
            self.stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signal = signum

    def _check_signal(self) -> None:
        if self._signal is not None:
            raise _Interrupted

    def _say(self, message: str) -> None:
        print(f"stack: {message}", file=self.out, flush=True)

    def _start(self, svc: Service) -> None:
        self._check_signal()
        svc.log.parent.mkdir(parents=True, exist_ok=True)
        self._say(f"starting {svc.name:<12} log: {svc.log}")
        log, self.log_start[svc.name] = open_log(svc.log, svc.name, svc.argv)
        with log:
            try:
                proc = subprocess.Popen(
                    svc.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env={**os.environ, **svc.env}, start_new_session=True,
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                )
            except OSError as e:
                raise StackError(f"cannot start {svc.name} ({svc.argv[0]}): {e.strerror}") from None
        self.running.append((svc, proc))
        self._wait_healthy(svc, proc)

    def _wait_healthy(self, svc: Service, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.health_timeout
        while True:
            self._check_signal()
            code = proc.poll()
            if code is not None:
                raise StackError(f"{svc.name} exited during startup (exit code {code}); "
                                 f"last lines of {svc.log}:\n{self._tail(svc)}")
            if is_healthy(svc.health):
                return
            if time.monotonic() > deadline:
                raise StackError(f"{svc.name} not healthy after {self.health_timeout:g}s (waited for "
                                 f"{svc.health.describe()}); last lines of {svc.log}:\n{self._tail(svc)}")
            time.sleep(self.poll_interval)

    def _tail(self, svc: Service) -> str:
        return log_tail(svc, start=self.log_start.get(svc.name, 0))

    def _watch(self) -> NoReturn:
        while True:
            self._check_signal()
            for svc, proc in self.running:
                code = proc.poll()
                if code is not None:
                    raise StackError(f"{svc.name} exited unexpectedly (exit code {code}); stopping the "
                                     f"stack. Last lines of {svc.log}:\n{self._tail(svc)}")
            time.sleep(self.poll_interval)

    def stop_all(self) -> None:
        """Stop the children one by one, newest first: SIGTERM its process group, wait, SIGKILL what
        is left at the deadline. One at a time, so each stops while what it feeds still runs: the
        traffic delivers what its client holds to a live exporter, which then saves it."""
        alive = [(svc, proc) for svc, proc in reversed(self.running) if proc.poll() is None]
        for svc, proc in alive:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._say(f"{svc.name} did not stop within {self.stop_timeout:g}s; killing it")
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        if alive:
            self._say("stopped " + ", ".join(svc.name for svc, _ in alive))
        self.running.clear()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the child leads its own session: its group id is its pid
    except ProcessLookupError:
        pass
