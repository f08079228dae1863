"""Faults around the followed log (issue 8, points 8, 10, 12): copytruncate, unwritable offset state,
a missing log. FileSource directly, then `modelmon serve` as a real process (tests/processes.py)."""
from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
import requests

from modelmon.exporter.pipeline import Exporter
from modelmon.exporter.reference_store import ReferenceStore
from modelmon.exporter.source import FileSource
from tests.exporter_helpers import T0, binary_records, make_config
from tests.processes import Serve, append


def lines_of(records) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def tmp_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.name.endswith(".tmp"))


# -- FileSource, in process ------------------------------------------------------------------


def test_offset_save_failures_are_counted_and_never_stop_ingestion(tmp_path):
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    state = tmp_path / "offset"
    state.mkdir()  # the offset cannot be written there, whoever we are
    ex = Exporter(make_config())
    saves = []
    source = FileSource(ex, log, state, after_commit=lambda: saves.append(1))  # does not raise
    assert ex.state_write_errors["offset"] == 1
    records, _ = binary_records(50, seed=1, inline_share=1.0)
    log.write_bytes(lines_of(records))
    assert source.step() == 50
    assert sum(ex.ingested.values()) == 50
    assert ex.state_write_errors["offset"] == 2
    assert saves == []  # no checkpoint ahead of the saved offset
    assert tmp_files(tmp_path) == []

    state.rmdir()  # the disk is fine again: the next commit saves the position
    assert source.step() == 0
    assert saves == [1]
    assert ex.state_write_errors["offset"] == 2

    state.unlink()
    state.mkdir()
    log.write_bytes(log.read_bytes() + lines_of(records[:1]))
    assert source.step() == 1
    assert ex.state_write_errors["offset"] == 3
    assert source.stop() is True  # the final commit fails: never raises
    assert isinstance(source.final_commit_error, OSError)
    assert ex.state_write_errors["offset"] == 4
    assert tmp_files(tmp_path) == []
    assert source.stop() is True  # idempotent


def test_final_commit_error_is_none_after_a_clean_stop(tmp_path):
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    source = FileSource(Exporter(make_config()), log, tmp_path / "offset")
    assert source.stop() is True  # never started: nothing to join
    assert source.final_commit_error is None
    assert (tmp_path / "offset").exists()


def test_missing_log_is_a_reason_on_ready_until_it_appears(tmp_path, caplog):
    log = tmp_path / "app.log"
    ex = Exporter(make_config())
    source = FileSource(ex, log, tmp_path / "offset")
    ready, detail = ex.readiness()
    assert not ready and detail["reason"] == f"waiting for log {log}: no such file"
    for _ in range(3):
        source.step()
    assert caplog.text.count("waiting for log") == 1  # logged once, not on every poll
    log.mkdir()
    source.step()
    assert ex.readiness()[1]["reason"] == f"waiting for log {log}: is a directory, not a regular file"
    log.rmdir()
    records, _ = binary_records(10, seed=2, inline_share=1.0)
    log.write_bytes(lines_of(records))
    assert source.step() == 10
    ready, detail = ex.readiness()
    assert "reason" not in detail and detail["source_open"]


def test_mistyped_log_directory_is_reported_and_not_created(tmp_path):
    log = tmp_path / "typo" / "app.log"
    ex = Exporter(make_config(), reference_store=tmp_path / "typo" / "app.log.refs")
    source = FileSource(ex, log, tmp_path / "typo" / "app.log.offset")
    source.step()
    assert f"its directory {log.parent} does not exist" in ex.readiness()[1]["reason"]
    assert ex.state_write_errors["offset"] >= 1
    assert not (tmp_path / "typo").exists()


def test_reference_store_creates_its_own_directory_but_never_a_missing_parent(tmp_path):
    model = make_config().models[0]
    ReferenceStore(tmp_path / "refs").save(model, None, np.array([0.1, 0.9]))
    assert (tmp_path / "refs" / f"{model.name}.jsonl").exists()
    with pytest.raises(FileNotFoundError, match="not created automatically"):
        ReferenceStore(tmp_path / "typo" / "refs").save(model, None, np.array([0.1]))
    assert not (tmp_path / "typo").exists()


# -- modelmon serve, as a real process -------------------------------------------------------


def test_copytruncate_rotations_under_a_live_writer_count_every_line_once(tmp_path):
    """5 copytruncate rotations (the writer paused around copy + truncate): nothing lost, nothing twice.

    Before each copy a burst is appended that the exporter has not read yet: it is only in the copy.
    """
    log = tmp_path / "app.log"
    log.touch()
    serve = Serve(tmp_path, log)
    serve.start("--from-start")
    lock = threading.Lock()
    stop = threading.Event()
    written = [0]
    batch = [0]

    def write(n: int) -> None:
        records, _ = binary_records(n, seed=batch[0], start=T0 + written[0], inline_share=1.0)
        append(log, records)
        written[0] += n
        batch[0] += 1

    def writer() -> None:
        while not stop.is_set():
            with lock:
                write(10)
            time.sleep(0.005)

    w = threading.Thread(target=writer)
    w.start()
    try:
        in_copies = 0
        for k in range(1, 6):
            time.sleep(0.3)
            # One rotation at a time (two between polls lose a period, as documented): the exporter
            # has read past the previous copy into the truncated file before the next rotation.
            assert serve.wait_for(in_copies + 1) > in_copies
            with lock:  # the writer is paused: copytruncate itself loses nothing
                write(300)
                for j in range(k - 1, 0, -1):  # app.log.j -> app.log.j+1, as logrotate does
                    os.rename(tmp_path / f"app.log.{j}", tmp_path / f"app.log.{j + 1}")
                shutil.copyfile(log, tmp_path / "app.log.1")
                os.truncate(log, 0)
                in_copies = written[0]
        time.sleep(0.3)
    finally:
        stop.set()
        w.join(10)
    total = written[0]
    try:
        assert serve.wait_for(total) == total
        time.sleep(0.3)  # a duplicate would show up after the total
        assert serve.predictions() == total
        assert serve.value("modelmon_log_rotations_total") == 5
        assert serve.stderr().count("reading the rest of its rotated copy") == 5
        assert "no rotated copy was found" not in serve.stderr()
    finally:
        serve.stop(signal.SIGKILL)


@pytest.mark.parametrize("when", ["at-start", "while-running"])
def test_unwritable_offset_is_counted_without_a_traceback_storm(tmp_path, when):
    log = tmp_path / "app.log"
    records, _ = binary_records(600, seed=3, inline_share=1.0)
    append(log, records[:200])
    # A fault even root cannot override: the state path is a directory, which no file can replace.
    state = tmp_path / "offset"
    if when == "at-start":
        state.mkdir()
    serve = Serve(tmp_path, log)
    try:
        serve.start("--from-start", "--state-file", str(state))
        assert serve.wait_for(200) == 200
        if when == "while-running":
            serve.wait_until(state.is_file)
            state.unlink()
            state.mkdir()
        for i in range(200, 600, 100):  # ingestion goes on, batch after batch
            append(log, records[i:i + 100])
            assert serve.wait_for(i + 100) == i + 100
        time.sleep(1.0)  # ~20 idle polls, each retrying the save
        assert serve.value("modelmon_state_write_errors_total", file="offset") > 0
        # None is left behind: a save in progress holds one for a moment (up to its fsync), so look
        # until one look finds none, rather than once at an instant a retry may be writing.
        serve.wait_until(lambda: tmp_files(tmp_path) == [], timeout=5, interval=0.01)
        stderr = serve.stderr()
        assert "Traceback" not in stderr
        assert 1 <= sum("offset state file" in line for line in stderr.splitlines()) <= 2
        assert requests.get(serve.url("/ready"), timeout=5).status_code == 200
        serve.stop(signal.SIGTERM)  # the exit status and its message belong to `serve`'s shutdown
        assert "Traceback" not in serve.stderr()
        assert tmp_files(tmp_path) == []
    finally:
        serve.stop(signal.SIGKILL)


def test_missing_log_makes_ready_503_with_a_reason_until_it_appears(tmp_path):
    log = tmp_path / "app.log"
    serve = Serve(tmp_path, log)
    try:
        serve.start()
        r = requests.get(serve.url("/ready"), timeout=5)
        assert r.status_code == 503
        assert r.json()["reason"] == f"waiting for log {log}: no such file"
        time.sleep(0.5)  # ~10 polls
        assert serve.stderr().count("waiting for log") == 1
        records, _ = binary_records(50, seed=4, inline_share=1.0)
        append(log, records)
        serve.wait_until(lambda: requests.get(serve.url("/ready"), timeout=5).status_code == 200)
        assert "reason" not in requests.get(serve.url("/ready"), timeout=5).json()
        assert serve.wait_for(50) == 50  # a log that appears after start is read from its beginning
    finally:
        serve.stop(signal.SIGKILL)
