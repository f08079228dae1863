"""The file source reads its next batch while it applies the current one (issue 12): when `step()`
returns every line it read is applied, and the saved offset never runs ahead of what is in state,
even when an apply fails with the next batch already read."""
from __future__ import annotations

import json

import orjson
import pytest

from modelmon.exporter import source as source_module
from modelmon.exporter.pipeline import Exporter
from modelmon.exporter.source import FileSource
from tests.exporter_helpers import binary_records, make_config


def lines_of(records) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def saved_offset(state) -> int:
    return json.loads(state.read_text())["file"]["offset"]


def test_a_step_applies_every_line_it_read_and_saves_the_offset_after_them(tmp_path):
    log, state = tmp_path / "app.log", tmp_path / "offset"
    records, _ = binary_records(900, seed=2, inline_share=1.0)
    log.write_bytes(lines_of(records))
    ex = Exporter(make_config())
    src = FileSource(ex, log, state, from_start=True)
    src.follower.max_batch_bytes = 20_000  # many small reads: several batches per step, read ahead
    done = 0
    while (n := src.step()):
        done += n
        assert sum(ex.ingested.values()) == done  # nothing read is left unapplied
        assert saved_offset(state) == sum(len(line) for line in log.read_bytes().splitlines(keepends=True)[:done])
    assert done == 900 and ex.columnar.stats["fast"] + ex.columnar.stats["slow"] == 900
    assert src.stop() is True


def test_a_step_reads_at_most_its_share_of_a_backlog(tmp_path, monkeypatch):
    monkeypatch.setattr(source_module, "MAX_POLLS_PER_STEP", 3)
    log = tmp_path / "app.log"
    records, _ = binary_records(600, seed=3, inline_share=1.0)
    log.write_bytes(lines_of(records))
    src = FileSource(Exporter(make_config()), log, tmp_path / "offset", from_start=True)
    src.follower.max_batch_bytes = 10_000
    first = src.step()
    assert 0 < first < 600  # returns after three reads, so a stop and the gauges are looked at in between
    assert src.step() > 0
    src.stop()


def test_a_failed_apply_with_the_next_batch_read_ahead_loses_and_repeats_nothing(tmp_path):
    """The second batch's apply fails while the third is already read: the saved offset stays after
    the first, so a restart reads the second and third again, and nothing is counted twice."""
    log, state = tmp_path / "app.log", tmp_path / "offset"
    records, _ = binary_records(600, seed=4, inline_share=1.0)
    log.write_bytes(lines_of(records))
    ex = Exporter(make_config())
    src = FileSource(ex, log, state, from_start=True)
    src.follower.max_batch_bytes = 30_000
    real, calls = ex.ingest_lines, []

    def failing(lines, *args, **kwargs):
        calls.append(len(lines))
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real(lines, *args, **kwargs)

    ex.ingest_lines = failing
    with pytest.raises(RuntimeError):
        src.step()
    applied = calls[0]
    assert sum(ex.ingested.values()) == applied
    lines = log.read_bytes().splitlines(keepends=True)
    assert saved_offset(state) == sum(len(line) for line in lines[:applied])  # not past the failed batch
    src.follower.close()  # a crash: no final commit

    again = Exporter(make_config())
    restarted = FileSource(again, log, state)
    while restarted.step():
        pass
    assert sum(again.ingested.values()) == 600 - applied  # the rest, once
    restarted.stop()


def test_a_batch_read_ahead_of_a_failed_apply_is_applied_next_and_stop_saves_only_what_was(tmp_path):
    """In the same process: the step after a failed apply starts with the batch that was read ahead
    (it is not dropped), and a stop right after the failure saves the offset of what was applied."""
    log, state = tmp_path / "app.log", tmp_path / "offset"
    records, _ = binary_records(600, seed=5, inline_share=1.0)
    log.write_bytes(lines_of(records))
    lines = log.read_bytes().splitlines(keepends=True)

    def failing_source(fail_at: int):
        ex = Exporter(make_config())
        src = FileSource(ex, log, state, from_start=True)
        src.follower.max_batch_bytes = 30_000
        real, calls = ex.ingest_lines, []

        def failing(batch, *args, **kwargs):
            calls.append(len(batch))
            if len(calls) == fail_at:
                raise RuntimeError("boom")
            return real(batch, *args, **kwargs)

        ex.ingest_lines = failing
        return ex, src, calls

    ex, src, calls = failing_source(2)
    with pytest.raises(RuntimeError):
        src.step()
    while src.step():
        pass
    assert sum(ex.ingested.values()) == 600 - calls[1]  # only the failed batch is missing
    assert src.stop() is True
    state.unlink()

    ex, src, calls = failing_source(2)
    with pytest.raises(RuntimeError):
        src.step()
    assert src.stop() is True  # with the third batch read ahead and never applied
    assert saved_offset(state) == sum(len(line) for line in lines[:calls[0]])
