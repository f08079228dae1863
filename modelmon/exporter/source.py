"""The file source: a thread that polls the log follower and feeds the exporter."""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable

from modelmon.exporter.pipeline import Exporter
from modelmon.exporter.tailer import LogFollower

log = logging.getLogger("modelmon.source")


class FileSource:
    def __init__(self, exporter: Exporter, path: Path, state_path: Path | None, from_start: bool = False,
                 poll_interval: float = 0.2, after_commit: Callable[[], None] | None = None):
        self.exporter = exporter
        self.after_commit = after_commit  # e.g. the checkpoint, which must agree with the committed offset
        self.follower = LogFollower(path, state_path=state_path, from_start=from_start)
        self.poll_interval = poll_interval
        self._oversized_seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="modelmon-file-source", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def step(self) -> int:
        """Read what is there, ingest it, commit the offset. Returns the number of lines read."""
        lines = self.follower.poll()
        if lines:
            self.exporter.ingest_lines(lines, "file")
        # Only after the batch is in state: a restart re-reads nothing ingested. A poll that moved
        # past blank or oversized lines, or switched files, commits too; an idle one writes nothing.
        self.follower.commit()
        if self.after_commit is not None:
            self.after_commit()
        ex = self.exporter
        with ex.lock:
            ex.log_lag_bytes = self.follower.lag_bytes
            ex.log_rotations = self.follower.rotations
            ex.source_open = self.follower.is_open
            oversized = self.follower.oversized_lines
            if oversized > self._oversized_seen:
                ex.rejected["oversized_line"] += oversized - self._oversized_seen
                self._oversized_seen = oversized
        return len(lines)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.step() == 0:
                    self._stop.wait(self.poll_interval)
            except Exception:  # noqa: BLE001 - the exporter never stops on bad input or a passing I/O error
                log.exception("reading the log failed; retrying")
                self._stop.wait(self.poll_interval)

    def stop(self) -> bool:
        """Stop reading and commit the offset. False when the reader did not stop in time."""
        self._stop.set()
        self._thread.join(timeout=10)
        if self._thread.is_alive():  # still inside poll(): the follower is single-threaded, leave it be
            log.warning("log reader did not stop within 10 s; its last batch may be read again on restart")
            return False
        self.follower.commit()
        self.follower.close()
        return True
