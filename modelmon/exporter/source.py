"""The file source: a thread that polls the log follower and feeds the exporter.

Faults of the files around the log never stop ingestion, and none is silent:

* A missing log (or a path that is not a regular file, or cannot be opened) is waited for: it is
  logged once per episode ("waiting for log X: no such file") and shown as `reason` on /ready,
  which stays 503 until the file is open.
* A failed offset save (read-only or full disk, a missing directory, the state path being a
  directory) is counted in ``modelmon_state_write_errors_total{file="offset"}`` and logged at most
  once a minute; reading goes on and the next commit retries. Until an offset save succeeds no
  checkpoint is written either (`after_commit` is skipped): a checkpoint ahead of the saved offset
  would count the re-read lines twice after a restart.
* `stop()` never raises; a failed final offset save is left in `final_commit_error` for the caller.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from modelmon.exporter.columnar import Prepared
from modelmon.exporter.pipeline import Exporter
from modelmon.exporter.tailer import LogFollower

log = logging.getLogger("modelmon.source")

# Polls (of up to 4 MiB each) one step reads before it returns: a backlog is read in a pipeline of
# this many batches (the first read and the last apply of a step do not overlap: 8 measured 6 %
# slower than 32), and a stop is still looked at before every read.
MAX_POLLS_PER_STEP = 32


class FileSource:
    def __init__(self, exporter: Exporter, path: Path, state_path: Path | None, from_start: bool = False,
                 poll_interval: float = 0.2, after_commit: Callable[[], None] | None = None):
        self.exporter = exporter
        self.path = Path(path)
        self.after_commit = after_commit  # e.g. the checkpoint, which must agree with the committed offset
        self.follower = LogFollower(path, state_path=state_path, from_start=from_start, commit_at_start=False)
        self.poll_interval = poll_interval
        self.final_commit_error: BaseException | None = None  # set by stop() when the last offset save failed
        self._oversized_seen = 0
        self._problem: str | None = None
        self._stopped: bool | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="modelmon-file-source", daemon=True)
        # Reads (and parses) the next batch while step() applies the current one.
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelmon-file-read")
        self._carried: Future | None = None  # a read still in flight when an apply failed: read it next
        self._applied = self.follower.position()  # the position after the last line applied
        # Make the start position durable now (see LogFollower); a failure is counted, never fatal.
        self._commit()
        self._publish()

    def start(self) -> None:
        self._thread.start()

    def step(self) -> int:
        """Read what is there (at most `MAX_POLLS_PER_STEP` reads), ingest it, commit the offset after
        each batch. Returns the number of lines read; every one of them is applied when it returns.

        Pipelined: while a batch is checked and applied, the read-ahead thread reads the next one
        from the log and pyarrow parses it (without the GIL); each batch's offset is committed only
        after that batch is in state, so a restart re-reads exactly what was not applied. The
        follower is only ever used by one thread at a time (the read-ahead thread polls; this one
        commits positions the poll returned)."""
        total = 0
        pending, self._carried = self._carried or self._reader.submit(self._read), None
        try:
            for polls in range(1, MAX_POLLS_PER_STEP + 1):
                current, pending = pending, None
                lines, position, prepared = current.result()  # a failed read raises here, and is not carried
                if not lines:
                    break
                if polls < MAX_POLLS_PER_STEP and not self._stop.is_set():
                    pending = self._reader.submit(self._read)
                self.exporter.ingest_lines(lines, "file", blank_free=True, prepared=prepared)  # no blank lines
                total += len(lines)
                self._applied = position
                self._commit_applied(position)
                if pending is None:
                    break
        finally:
            if pending is not None:  # a failed apply: the read in flight is the next step's first batch
                self._carried = pending
        # A poll that moved past blank or oversized lines, or switched files, commits too (nothing
        # unapplied lies before that position); an idle one writes nothing.
        if not total or position != self._applied:
            self._applied = position
            self._commit_applied(position)
        self._publish()
        return total

    def _read(self) -> tuple[list[bytes], dict, Prepared | None]:
        """On the read-ahead thread: the next lines, the position after them, pyarrow's read of them."""
        lines = self.follower.poll()
        position = self.follower.position()
        return lines, position, self.exporter.columnar.prepare(lines, blank_free=True) if lines else None

    def _commit_applied(self, position: dict) -> None:
        """Commit a position whose lines are all in state, then let the checkpoint follow it: the
        two always agree (a checkpoint only after a saved offset)."""
        if self._commit(position) and self.after_commit is not None:
            self.after_commit()

    def _commit(self, position: dict | None = None) -> bool:
        """Save the offset; a failure is counted and logged (rate-limited), never raised."""
        try:
            self.follower.commit(position)
            return True
        except OSError as e:
            self.exporter.state_write_failed("offset", OSError(self._describe(e)))
            return False

    def _describe(self, e: BaseException) -> str:
        state = self.follower.state_path
        reason = getattr(e, "strerror", None) or str(e)
        if state is not None and not state.parent.is_dir():
            reason += f" (directory {state.parent} does not exist; it is not created automatically)"
        elif state is not None and state.is_dir():
            reason += " (the state file path is a directory)"
        return f"{state}: {reason}"

    def _publish(self) -> None:
        """Copy the follower's gauges and problems into the exporter."""
        f = self.follower
        ex = self.exporter
        with ex.lock:
            ex.log_lag_bytes = f.lag_bytes
            ex.log_rotations = f.rotations
            ex.log_copies_missed = f.copies_missed
            ex.source_open = f.is_open
            oversized = f.oversized_lines
            if oversized > self._oversized_seen:
                ex.rejected["oversized_line"] += oversized - self._oversized_seen
                self._oversized_seen = oversized
        if f.is_open:
            self._set_problem(None)
        else:
            self._set_problem(f"waiting for log {self.path}: {f.open_problem or 'no such file'}")

    def _set_problem(self, problem: str | None) -> None:
        """Show `problem` on /ready; log it once when it starts (at most once a minute if it flaps)."""
        if problem == self._problem:
            return
        with self.exporter.lock:
            self.exporter.source_problem = problem
        if problem is not None:
            self.exporter.warn_limited(f"source:{problem}", logging.WARNING, "%s", problem)
        elif self._problem is not None:
            log.info("log %s: open, reading", self.path)
        self._problem = problem

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.step() == 0:
                    self._stop.wait(self.poll_interval)
            except Exception as e:  # noqa: BLE001 - the exporter never stops on bad input or a passing I/O error
                self.exporter.warn_limited("source:read", logging.ERROR, "reading the log %s failed; retrying every "
                                           "%g s: %s", self.path, self.poll_interval, e, exc_info=True)
                self._set_problem(f"reading log {self.path} failed: {e}")
                self._stop.wait(self.poll_interval)

    def stop(self) -> bool:
        """Stop reading and commit the offset; never raises.

        False when the reader did not stop in time (then nothing is committed). When the final
        offset save fails, it is counted and `final_commit_error` holds the exception.
        """
        if self._stopped is not None:
            return self._stopped
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=10)
        if self._thread.is_alive():  # still inside poll(): the follower is single-threaded, leave it be
            log.warning("log reader did not stop within 10 s; its last batch may be read again on restart")
            self._stopped = False
            return False
        self._reader.shutdown(wait=True)  # no read in flight either: the follower is single-threaded
        try:
            # Up to the last line applied: a batch read ahead of a failed apply is read again on restart.
            self.follower.commit(self._applied)
        except Exception as e:  # noqa: BLE001 - shutdown goes on; the caller decides the exit status
            self.final_commit_error = e
            self.exporter.state_write_failed("offset", OSError(self._describe(e)))
        finally:
            try:
                self.follower.close()
            except OSError:
                pass
        self._stopped = True
        return True
