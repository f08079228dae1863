"""LogFollower: tail -F semantics, rotation, truncation, restart safety (modelmon/exporter/tailer.py)."""
from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from modelmon.exporter.tailer import LogFollower

ROOT = Path(__file__).resolve().parent.parent


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


def numbered(start: int, stop: int) -> bytes:
    return b"".join(b"%d\n" % i for i in range(start, stop))


def drain(f: LogFollower) -> list[bytes]:
    """Poll until nothing new is returned."""
    lines: list[bytes] = []
    for _ in range(10_000):
        batch = f.poll()
        if not batch:
            return lines
        lines += batch
    raise AssertionError("follower never ran dry")


def wait_until(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "predictions.jsonl"


@pytest.fixture
def state(tmp_path: Path) -> Path:
    (tmp_path / "state").mkdir()  # commit() never creates directories
    return tmp_path / "state" / "tailer.json"


# -- reading ---------------------------------------------------------------------------------


def test_append_and_poll_starts_at_end_without_state(log):
    log.write_bytes(b"old1\nold2\n")
    f = LogFollower(log)
    assert f.is_open
    assert f.poll() == []
    append(log, b"a\nb\n")
    assert f.poll() == [b"a", b"b"]
    assert f.poll() == []
    append(log, b"c\n")
    assert f.poll() == [b"c"]


def test_start_at_end_delivers_the_line_being_written_whole(log):
    log.write_bytes(b"done\nhalf-")
    f = LogFollower(log)
    assert f.poll() == []
    append(log, b"line\n")
    assert f.poll() == [b"half-line"]


def test_partial_line_is_held_back_until_completed(log):
    log.write_bytes(b"x\ny")
    f = LogFollower(log, from_start=True)
    assert f.poll() == [b"x"]
    assert f.poll() == []
    append(log, b"z")
    assert f.poll() == []
    append(log, b"z\n")
    assert f.poll() == [b"yzz"]


def test_crlf_empty_and_blank_lines(log):
    log.write_bytes(b"a\r\n\r\n\n   \n\t\r\nb\r\nc\rd\n")
    f = LogFollower(log, from_start=True)
    assert f.poll() == [b"a", b"b", b"c\rd"]


def test_max_batch_bytes_bounds_each_poll(log):
    lines = [b"%05d" % i + b"x" * 94 for i in range(1000)]  # 100 bytes + newline each
    log.write_bytes(b"".join(line + b"\n" for line in lines))
    f = LogFollower(log, from_start=True, max_batch_bytes=4096)
    got: list[bytes] = []
    polls = 0
    while batch := f.poll():
        assert sum(len(line) + 1 for line in batch) <= 4096 + 101  # + the line completed by this read
        got += batch
        polls += 1
    assert got == lines
    assert polls >= 1000 * 101 // 4096


def test_oversized_line_is_skipped_across_polls_with_bounded_buffer(log):
    log.write_bytes(b"ok1\n" + b"x" * 5000 + b"\nok2\n")
    f = LogFollower(log, from_start=True, max_batch_bytes=64, max_line_bytes=100)
    got: list[bytes] = []
    for _ in range(200):
        got += f.poll()
        assert len(f._pending) <= 100 + 64  # never buffers the giant line
    assert got == [b"ok1", b"ok2"]
    assert f.oversized_lines == 1


def test_oversized_line_within_one_read_is_skipped(log):
    log.write_bytes(b"short\n" + b"y" * 50 + b"\nend\n")
    f = LogFollower(log, from_start=True, max_line_bytes=10)
    assert f.poll() == [b"short", b"end"]
    assert f.oversized_lines == 1


def test_restart_inside_an_oversized_line_keeps_skipping_it(log, state):
    log.write_bytes(b"ok1\n" + b"x" * 3000)
    f = LogFollower(log, state, from_start=True, max_batch_bytes=1000, max_line_bytes=100)
    assert [line for _ in range(5) for line in f.poll()] == [b"ok1"]
    assert f.oversized_lines == 1
    f.commit()
    assert json.loads(state.read_text())["file"]["offset"] == 4 + 3000  # skipped bytes are not re-read
    f.close()
    append(log, b"x" * 500 + b"\nok2\n")
    g = LogFollower(log, state, max_line_bytes=100)
    assert drain(g) == [b"ok2"]
    assert g.oversized_lines == 0  # already counted before the restart


def test_lag_bytes_counts_unreturned_bytes_including_a_partial_line(log):
    log.write_bytes(b"")
    f = LogFollower(log)
    assert f.lag_bytes == 0
    append(log, b"a" * 99 + b"\n" + b"partial")
    assert f.poll() == [b"a" * 99]
    assert f.lag_bytes == len(b"partial")
    append(log, b"\n")
    assert f.poll() == [b"partial"]
    assert f.lag_bytes == 0


# -- missing file, rotation, truncation ------------------------------------------------------


def test_missing_file_is_waited_for_and_read_from_the_start(tmp_path):
    log = tmp_path / "not-yet" / "predictions.jsonl"
    f = LogFollower(log)
    assert not f.is_open
    assert f.poll() == [] and f.lag_bytes == 0
    log.parent.mkdir()
    log.write_bytes(b"first\nsecond\n")
    assert f.poll() == [b"first", b"second"]
    assert f.is_open


def test_rename_rotation_keeps_lines_written_to_the_old_file_after_the_rename(log):
    old = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    f = LogFollower(log)
    os.write(old, numbered(0, 5))
    assert f.poll() == [b"0", b"1", b"2", b"3", b"4"]
    os.write(old, b"5\n6")  # "6" is unterminated
    os.rename(log, log.with_name(log.name + ".1"))
    os.write(old, b"6\n7\n8")  # the writer has not reopened yet; "8" is never terminated
    os.close(old)
    log.write_bytes(numbered(9, 12))
    assert f.poll() == [b"5", b"66", b"7", b"8", b"9", b"10", b"11"]
    assert f.rotations == 1
    append(log, b"12\n")
    assert f.poll() == [b"12"]


def test_rename_rotation_follows_the_old_file_while_the_new_one_is_empty(log):
    old = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    f = LogFollower(log)
    os.rename(log, log.with_name(log.name + ".1"))
    assert f.poll() == []  # nothing at `path` yet: keep the old file
    log.write_bytes(b"")  # logrotate `create`: the new file exists but the writer has not reopened
    os.write(old, b"late1\n")
    assert f.poll() == [b"late1"]
    assert f.rotations == 0
    os.write(old, b"late2\n")
    os.close(old)
    append(log, b"new1\n")
    assert f.poll() == [b"late2", b"new1"]
    assert f.rotations == 1
    assert f.lag_bytes == 0


def test_lines_appended_between_eof_and_the_rotation_check_are_kept(log, monkeypatch):
    old = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    f = LogFollower(log)
    os.write(old, b"0\n")
    assert f.poll() == [b"0"]
    os.rename(log, log.with_name(log.name + ".1"))
    log.write_bytes(b"new\n")
    real_path_stat = f._path_stat

    def stat_racing_with_the_writer():
        os.write(old, b"late\n")  # lands after our read hit EOF, before we see the new file
        monkeypatch.setattr(f, "_path_stat", real_path_stat)
        return real_path_stat()

    monkeypatch.setattr(f, "_path_stat", stat_racing_with_the_writer)
    assert f.poll() == [b"late", b"new"]
    os.close(old)


def test_copytruncate_restarts_at_zero(log):
    log.write_bytes(numbered(0, 3))
    f = LogFollower(log, from_start=True)
    assert f.poll() == [b"0", b"1", b"2"]
    append(log, b"half")
    assert f.poll() == []
    os.truncate(log, 0)  # the copy holds "half"; its rest goes nowhere we can see
    append(log, b"3\n4\n")
    assert f.poll() == [b"3", b"4"]
    assert f.rotations == 1


def test_truncated_and_rewritten_past_the_offset_is_detected_by_fingerprint(log):
    log.write_bytes(b'{"n": "first"}\n')
    f = LogFollower(log, from_start=True)
    assert f.poll() == [b'{"n": "first"}']
    with open(log, "r+b") as fh:  # same inode, new content, longer than our offset
        fh.truncate(0)
        fh.write(b'{"n": "second"}\n{"n": "third"}\n')
    assert f.poll() == [b'{"n": "second"}', b'{"n": "third"}']
    assert f.rotations == 1


def copytruncate(log: Path, copy_name: str = ".1") -> Path:
    """What logrotate `copytruncate` does (with no write in between): copy, then truncate in place."""
    copy = log.with_name(log.name + copy_name)
    shutil.copyfile(log, copy)
    os.truncate(log, 0)
    return copy


def test_copytruncate_reads_the_unread_tail_of_the_rotated_copy(log):
    log.write_bytes(numbered(0, 3))
    f = LogFollower(log, from_start=True)
    assert f.poll() == [b"0", b"1", b"2"]
    append(log, numbered(3, 6))  # written, not read yet, when the copy is taken
    copytruncate(log)
    append(log, numbered(6, 8))
    assert drain(f) == [b"%d" % i for i in range(3, 8)]
    assert (f.rotations, f.copies_missed) == (1, 0)
    append(log, b"8\n")
    assert f.poll() == [b"8"]
    assert f.lag_bytes == 0


def test_copytruncate_without_a_copy_restarts_at_zero_and_counts_it(log, caplog):
    log.write_bytes(numbered(0, 3))
    f = LogFollower(log, from_start=True)
    assert f.poll() == [b"0", b"1", b"2"]
    append(log, b"half")
    assert f.poll() == []
    os.truncate(log, 0)  # no copy anywhere: "half" is gone with it
    append(log, b"3\n4\n")
    assert f.poll() == [b"3", b"4"]
    assert (f.rotations, f.copies_missed) == (1, 1)
    assert "no rotated copy was found" in caplog.text


def test_copytruncate_partial_line_continues_in_the_copy(log):
    log.write_bytes(b"0\nhal")
    f = LogFollower(log, from_start=True)
    assert f.poll() == [b"0"]  # "hal" is buffered
    append(log, b"f-line\n1\n")
    copytruncate(log)
    append(log, b"2\n")
    assert drain(f) == [b"half-line", b"1", b"2"]
    assert f.rotations == 1


def test_copytruncate_unterminated_end_of_the_copy_is_not_joined_to_the_new_file(log):
    log.write_bytes(b"0\n")
    f = LogFollower(log, from_start=True)
    assert f.poll() == [b"0"]
    append(log, b"cut-by-the-co")
    copytruncate(log)
    append(log, b"py\n1\n")  # bytes in between may have been lost: never glue the two pieces
    assert drain(f) == [b"cut-by-the-co", b"py", b"1"]


def test_copytruncate_keeps_following_the_copy_while_the_truncated_file_is_empty(log):
    log.write_bytes(numbered(0, 2))
    f = LogFollower(log, from_start=True)
    assert f.poll() == [b"0", b"1"]
    append(log, numbered(2, 4))
    copytruncate(log)
    assert f.poll() == [b"2", b"3"]
    assert f.poll() == []
    assert f.rotations == 0  # still on the copy
    append(log, numbered(4, 6))
    assert f.poll() == [b"4", b"5"]
    assert f.rotations == 1


def test_copytruncate_tail_is_read_within_the_batch_limit(log):
    log.write_bytes(b"first\n")
    f = LogFollower(log, from_start=True, max_batch_bytes=64)
    assert f.poll() == [b"first"]
    append(log, numbered(1000, 1100))  # 500 bytes unread
    copytruncate(log)
    append(log, b"new\n")
    batches = []
    while batch := f.poll():
        batches.append(batch)
    assert [x for b in batches for x in b] == [b"%d" % i for i in range(1000, 1100)] + [b"new"]
    assert len(batches) >= 500 // 64
    # each poll reads at most 64 bytes; a batch may also complete the line carried from the last one
    assert all(len(b"".join(x + b"\n" for x in b)) <= 64 + len(b"1000\n") for b in batches)


def test_copytruncate_picks_the_copy_by_content_not_by_name(log):
    """Decoys: an older copy, a compressed copy, a newer file with our first bytes but other content."""
    head = b'{"header": "same first bytes in every cycle"}\n'
    log.write_bytes(head + numbered(0, 3))
    f = LogFollower(log, from_start=True)
    assert f.poll()[-1] == b"2"
    append(log, numbered(3, 6))
    log.with_name(log.name + ".2").write_bytes(head + b"old cycle\n")  # too short
    copytruncate(log, "-20261130")
    with gzip.open(log.with_name(log.name + ".1.gz"), "wb") as gz:
        gz.write(head + numbered(0, 50))
    other = log.with_name(log.name + ".bak")
    other.write_bytes(head + b"X\nY\nZ\n" + numbered(90, 99))  # right head, long enough, other bytes before our offset
    os.utime(other, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))  # and the newest
    append(log, b"new\n")
    assert drain(f) == [b"3", b"4", b"5", b"new"]
    assert f.copies_missed == 0


def test_copytruncate_never_takes_modelmon_state_files_or_compressed_files_for_the_copy(log, caplog):
    log.write_bytes(numbered(0, 3))
    f = LogFollower(log, from_start=True)
    assert f.poll() == [b"0", b"1", b"2"]
    append(log, numbered(3, 6))
    shutil.copyfile(log, log.with_name(log.name + ".modelmon-checkpoint"))  # the bytes, but a state file's name
    shutil.copyfile(log, log.with_name(log.name + ".1.GZ"))  # a real one would be compressed: not text
    os.truncate(log, 0)
    append(log, b"new\n")
    assert drain(f) == [b"new"]
    assert f.copies_missed == 1


def test_copytruncate_with_a_concurrent_writer_loses_and_duplicates_nothing(log):
    """Every line exactly once, in order, across 10 copytruncate rotations with the writer paused
    around copy + truncate (so copytruncate itself loses nothing). As the guarantee requires (poll
    more often than you rotate), each rotation waits until the reader has caught up: on a loaded
    machine the reader thread may otherwise sleep through two rotations, and the documented loss
    of a whole rotation period is then what the test would see."""
    total, per_cycle = 20_000, 2_000
    f = LogFollower(log, max_batch_bytes=4096)
    with polling(f) as seen:
        with open(log, "ab", buffering=0) as out:
            for i in range(total):
                if i and i % per_cycle == 0:
                    wait_until(lambda: len(seen) >= i, timeout=30, what=f"the reader at line {i}")
                    for k in range(i // per_cycle - 1, 0, -1):  # app.log.k -> app.log.k+1, as logrotate does
                        os.rename(log.with_name(f"{log.name}.{k}"), log.with_name(f"{log.name}.{k + 1}"))
                    copytruncate(log)
                line = b"%d\n" % i
                out.write(line[:2])  # two writes: the reader sees partial lines
                out.write(line[2:])
        wait_until(lambda: len(seen) >= total, timeout=30, what="all lines")
    assert seen == [b"%d" % i for i in range(total)]
    assert (f.rotations, f.copies_missed) == (total // per_cycle - 1, 0)


# -- state and restart -----------------------------------------------------------------------


def test_restart_resumes_exactly_at_the_last_commit(log, state):
    log.write_bytes(numbered(0, 3))
    f = LogFollower(log, state, from_start=True)
    assert f.poll() == [b"0", b"1", b"2"]
    f.commit()
    append(log, numbered(3, 5))
    assert f.poll() == [b"3", b"4"]  # returned but never committed: at-least-once window
    f.close()
    append(log, numbered(5, 6))
    g = LogFollower(log, state)
    assert g.poll() == [b"3", b"4", b"5"]
    assert g.rotations == 0
    g.commit()
    g.close()
    h = LogFollower(log, state)
    assert h.poll() == []  # committed: nothing is read twice


def test_start_position_is_durable_before_the_first_commit(log, state):
    log.write_bytes(numbered(0, 3))
    f = LogFollower(log, state)  # tails from the end, and persists that start
    append(log, numbered(3, 5))
    assert f.poll() == [b"3", b"4"]
    f.close()  # crash before any commit()
    append(log, numbered(5, 6))
    g = LogFollower(log, state)
    assert g.poll() == [b"3", b"4", b"5"]  # not a new end of file


def test_commit_is_atomic_and_skipped_when_nothing_changed(log, state):
    log.write_bytes(b"a\n")
    f = LogFollower(log, state, from_start=True)
    f.poll()
    f.commit()
    saved = json.loads(state.read_text())
    assert saved["file"]["offset"] == 2 and saved["file"]["ino"] == os.stat(log).st_ino
    inode = os.stat(state).st_ino
    f.poll()
    f.commit()
    assert os.stat(state).st_ino == inode  # os.replace would give a new inode
    append(log, b"b\n")
    f.poll()
    f.commit()
    assert os.stat(state).st_ino != inode
    assert json.loads(state.read_text())["file"]["offset"] == 4
    assert sorted(p.name for p in state.parent.iterdir()) == [state.name]  # no tmp left behind


def test_restart_after_rename_rotation_while_down_drains_the_rotated_file(log, state):
    log.write_bytes(numbered(0, 2))
    f = LogFollower(log, state, from_start=True)
    assert f.poll() == [b"0", b"1"]
    f.commit()
    f.close()
    append(log, numbered(2, 4))
    os.rename(log, log.with_name(log.name + "-20261123"))  # dateext naming
    log.write_bytes(numbered(4, 6))
    g = LogFollower(log, state)
    assert drain(g) == [b"2", b"3", b"4", b"5"]
    assert g.rotations == 1


def test_state_of_a_replaced_file_is_not_resumed(log, state):
    log.write_bytes(numbered(0, 3))
    f = LogFollower(log, state, from_start=True)
    f.poll()
    f.commit()
    f.close()
    log.unlink()
    log.write_bytes(numbered(100, 110))  # same name, another file, longer than the saved offset
    g = LogFollower(log, state)
    assert g.poll() == [b"%d" % i for i in range(100, 110)]
    assert g.rotations == 1


def test_state_of_a_rewritten_file_with_the_same_inode_is_not_resumed(log, state):
    log.write_bytes(b'{"ts": 1}\n')
    f = LogFollower(log, state, from_start=True)
    f.poll()
    f.commit()
    f.close()
    with open(log, "r+b") as fh:  # same (dev, ino): only the fingerprint can tell
        fh.truncate(0)
        fh.write(b'{"ts": 2}\n{"ts": 3}\n')
    g = LogFollower(log, state)
    assert g.poll() == [b'{"ts": 2}', b'{"ts": 3}']
    assert g.rotations == 1


def test_state_offset_beyond_the_file_size_is_a_truncation(log, state):
    log.write_bytes(numbered(0, 50))
    f = LogFollower(log, state, from_start=True)
    f.poll()
    f.commit()
    f.close()
    os.truncate(log, 0)
    append(log, b"0\n")  # same first bytes as before, but shorter than the saved offset
    g = LogFollower(log, state)
    assert g.poll() == [b"0"]
    assert g.rotations == 1


def test_restart_after_copytruncate_while_down_reads_the_rest_of_the_copy(log, state):
    log.write_bytes(numbered(0, 3))
    f = LogFollower(log, state, from_start=True)
    assert f.poll() == [b"0", b"1", b"2"]
    f.commit()
    append(log, numbered(3, 5))
    assert f.poll() == [b"3", b"4"]  # returned, never committed: read again from the copy
    f.close()
    append(log, numbered(5, 7))
    copytruncate(log)
    append(log, b"7\n")  # shorter than the saved offset ...
    g = LogFollower(log, state)
    assert drain(g) == [b"3", b"4", b"5", b"6", b"7"]
    assert (g.rotations, g.copies_missed) == (1, 0)
    g.commit()
    g.close()
    append(log, numbered(8, 40))  # ... and longer, with other first bytes
    h = LogFollower(log, state)
    assert drain(h) == [b"%d" % i for i in range(8, 40)]


def test_restart_after_copytruncate_with_a_longer_new_file(log, state):
    log.write_bytes(b"a-first-line\n")
    f = LogFollower(log, state, from_start=True)
    assert f.poll() == [b"a-first-line"]
    f.commit()
    f.close()
    append(log, b"unread\n")
    copytruncate(log)
    append(log, numbered(0, 20))  # past the saved offset, other first bytes
    g = LogFollower(log, state)
    assert drain(g) == [b"unread"] + [b"%d" % i for i in range(20)]


def test_restart_inside_the_copy_resumes_the_copy(log, state):
    log.write_bytes(numbered(0, 2))
    f = LogFollower(log, state, from_start=True)
    assert f.poll() == [b"0", b"1"]
    append(log, numbered(2, 4))
    copytruncate(log)
    assert f.poll() == [b"2", b"3"]  # from the copy; the truncated file is still empty
    f.commit()
    f.close()
    append(log, numbered(4, 6))
    g = LogFollower(log, state)
    assert drain(g) == [b"4", b"5"]


def test_from_start_ignores_the_state_and_replays(log, state):
    log.write_bytes(numbered(0, 3))
    f = LogFollower(log, state, from_start=True)
    f.poll()
    f.commit()
    f.close()
    g = LogFollower(log, state, from_start=True)
    assert g.poll() == [b"0", b"1", b"2"]


def test_unreadable_state_is_ignored_and_tails_from_the_end(log, state):
    log.write_bytes(numbered(0, 3))
    state.write_text("{not json")
    f = LogFollower(log, state)
    assert f.poll() == []
    append(log, b"3\n")
    assert f.poll() == [b"3"]


def test_state_committed_while_waiting_reads_the_file_from_the_start(log, state):
    f = LogFollower(log, state)
    assert f.poll() == []
    f.commit()
    f.close()
    log.write_bytes(numbered(0, 2))  # appeared while we were down
    g = LogFollower(log, state)
    assert g.poll() == [b"0", b"1"]


def test_closed_follower_refuses_to_poll_or_commit(log, state):
    log.write_bytes(b"")
    f = LogFollower(log, state)
    f.close()
    assert not f.is_open
    with pytest.raises(ValueError):
        f.poll()
    with pytest.raises(ValueError):
        f.commit()


# -- failed commits and problems opening the log ----------------------------------------------


def test_failed_commit_removes_its_temp_file_raises_and_is_retried(log, state):
    log.write_bytes(b"")
    f = LogFollower(log, state)
    state.unlink()
    state.mkdir()  # os.replace onto a directory fails, even for root
    append(log, b"a\nb\n")
    assert f.poll() == [b"a", b"b"]
    with pytest.raises(OSError):
        f.commit()
    assert sorted(p.name for p in state.parent.iterdir()) == [state.name]  # no *.tmp left
    state.rmdir()
    f.commit()  # the same position, retried
    f.close()
    assert json.loads(state.read_text())["file"]["offset"] == 4
    g = LogFollower(log, state)
    append(log, b"c\n")
    assert g.poll() == [b"c"]


def test_constructor_commit_failure_can_be_deferred(log, tmp_path):
    log.write_bytes(b"")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(NotADirectoryError):
        LogFollower(log, blocker / "state.json")
    f = LogFollower(log, blocker / "state.json", commit_at_start=False)
    append(log, b"x\n")
    assert f.poll() == [b"x"]
    with pytest.raises(OSError):
        f.commit()


def test_commit_never_creates_directories(log, tmp_path):
    log.write_bytes(b"")
    missing = tmp_path / "typo" / "deeper" / "state.json"
    f = LogFollower(log, missing, commit_at_start=False)
    with pytest.raises(FileNotFoundError):
        f.commit()
    assert not (tmp_path / "typo").exists()


def test_open_problem_says_why_the_log_cannot_be_opened(tmp_path):
    log = tmp_path / "missing-dir" / "predictions.jsonl"
    f = LogFollower(log)
    assert f.open_problem == f"no such file (its directory {log.parent} does not exist)"
    log.parent.mkdir()
    f.poll()
    assert f.open_problem == "no such file"
    log.mkdir()
    f.poll()
    assert f.open_problem == "is a directory, not a regular file"
    log.rmdir()
    log.write_bytes(b"1\n")
    assert f.poll() == [b"1"]
    assert f.open_problem is None and f.is_open


# -- concurrency -----------------------------------------------------------------------------


@contextlib.contextmanager
def polling(f: LogFollower):
    """A reader thread polling `f` until the block ends; yields the lines it has seen so far."""
    seen: list[bytes] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            batch = f.poll()
            seen.extend(batch)
            if not batch:
                time.sleep(0.0005)

    r = threading.Thread(target=reader)
    r.start()
    try:
        yield seen
    finally:
        stop.set()
        r.join(10)
    assert not r.is_alive()


def test_many_rename_rotations_with_a_concurrent_writer_lose_and_duplicate_nothing(log):
    """Every line exactly once, in order, across 40 rename rotations (at most one per poll cycle)."""
    total, per_file = 20_000, 500
    f = LogFollower(log, max_batch_bytes=8192)

    def writer() -> None:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        rotated = 0
        for i in range(total):
            if i and i % per_file == 0:
                # At most one rotation pending: wait until the reader follows the current file.
                wait_until(lambda: f.is_open and f.rotations == rotated, what=f"reader on file {rotated}")
                os.rename(log, log.with_name(f"{log.name}.{rotated + 1}"))
                rotated += 1
                os.write(fd, b"%d" % i)  # after the rename, before the reopen; left unterminated
                os.close(fd)
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
                continue
            line = b"%d\n" % i
            os.write(fd, line[:1])  # two writes: the reader sees partial lines
            os.write(fd, line[1:])
        os.close(fd)

    w = threading.Thread(target=writer)
    with polling(f) as seen:
        w.start()
        w.join(60)
        wait_until(lambda: len(seen) >= total, timeout=30, what="all lines")
    assert not w.is_alive()
    assert seen == [b"%d" % i for i in range(total)]
    assert f.rotations == total // per_file - 1


# -- SIGKILL and restart ---------------------------------------------------------------------

READER_SCRIPT = """
import os, sys, time
sys.path.insert(0, {root!r})
from modelmon.exporter.tailer import LogFollower

log, state, out, from_start = sys.argv[1:5]
f = LogFollower(log, state, from_start=from_start == "1", max_batch_bytes=2048)
fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
while True:
    lines = f.poll()
    if lines:
        os.write(fd, b"".join(line + b"\\n" for line in lines))
        f.commit()
        os.write(fd, b"#commit\\n")
    else:
        time.sleep(0.001)
"""


def _run_output(path: Path) -> tuple[list[int], int]:
    """Line numbers a reader run printed, and how many of them precede its last commit marker."""
    data = path.read_bytes() if path.exists() else b""
    complete = data[: data.rfind(b"\n") + 1]  # a kill may cut the last write
    numbers: list[int] = []
    committed = 0
    for token in complete.split(b"\n")[:-1]:
        if token == b"#commit":
            committed = len(numbers)
        else:
            numbers.append(int(token))
    return numbers, committed


def test_sigkill_and_restart_resume_from_the_last_commit(tmp_path, log, state):
    """A reader killed at arbitrary points, across rotations, re-delivers only its uncommitted batch."""
    total, rotate_at, kill_at = 24_000, {6_000, 12_000, 18_000}, {4_000, 12_000, 20_000}
    script = tmp_path / "reader.py"
    script.write_text(READER_SCRIPT.format(root=str(ROOT)))
    outs: list[Path] = []
    procs: list[subprocess.Popen] = []

    def start() -> None:
        outs.append(tmp_path / f"out{len(outs)}.txt")
        from_start = "1" if not procs else "0"
        argv = [sys.executable, str(script), str(log), str(state), str(outs[-1]), from_start]
        procs.append(subprocess.Popen(argv))

    def printed_up_to(n: int) -> bool:
        numbers, _ = _run_output(outs[-1])
        return bool(numbers) and numbers[-1] >= n - 1

    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    start()
    try:
        for i in range(0, total, 50):
            if i in rotate_at:
                # At most one rotation pending: the reader must be on the current file first.
                wait_until(lambda: printed_up_to(i), what=f"reader to reach line {i}")
                os.rename(log, log.with_name(f"{log.name}.{i}"))
                os.write(fd, numbered(i, i + 10))  # after the rename, before the reopen
                os.close(fd)
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
                os.write(fd, numbered(i + 10, i + 50))
            else:
                os.write(fd, numbered(i, i + 50))
            if i in kill_at:
                wait_until(lambda: _run_output(outs[-1])[0], what="the reader to print something")
                procs[-1].send_signal(signal.SIGKILL)
                procs[-1].wait(10)
                start()
            time.sleep(0.0005)
        wait_until(lambda: printed_up_to(total), timeout=60, what="the last line")
    finally:
        os.close(fd)
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)

    runs = [_run_output(out) for out in outs]
    assert len(runs) == len(kill_at) + 1
    expected_start = {0}
    for numbers, committed in runs:
        assert numbers, "every run printed something"
        first = numbers[0]
        # Resumed at the last commit (or after the batch, if killed between commit() and its marker).
        assert first in expected_start
        assert numbers == list(range(first, first + len(numbers)))  # in order, nothing skipped inside a run
        expected_start = {first + committed, first + len(numbers)}
    assert runs[-1][0][-1] == total - 1
    assert all(run[0][-1] < total - 1 for run in runs[:-1])  # the kills really were mid-stream
