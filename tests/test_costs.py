"""The exporter's own costs: modelmon_refresh_duration_seconds, modelmon_ingest_batch_duration_seconds and
modelmon_lock_hold_seconds exist after an ingest and a refresh, count every call and hold, and measure on
the exporter's timer (a fake one here, so values are exact; no timed assertions on the real clock).

Decided and tested: a refresh that raises still records its duration (up to the raise; the
failure itself is counted by modelmon_refresh_errors_total{stage="refresh"}), and a pass that refreshes
nothing (model not dirty) keeps the last refresh's value.
"""
from __future__ import annotations

import pytest

from modelmon.exporter.checkpoint import Checkpointer
from modelmon.exporter.pipeline import LOCK_OPERATIONS, Exporter
from tests.exporter_helpers import binary_records, make_config
from tests.test_exporter import lines, samples, scrape, value


class FakeTimer:
    """A perf_counter that moves only when told to."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def counts(text: str, name: str, key: str) -> dict[str, float]:
    """{label value: _count} of histogram ``name`` by label ``key``."""
    return {dict(labels)[key]: v for (n, labels), v in samples(text).items() if n == f"{name}_count"}


def test_after_an_ingest_and_a_refresh_the_families_exist_with_sane_values():
    ex = Exporter(make_config())
    preds, late = binary_records(300, seed=1)
    ex.ingest_lines(lines(preds), "file")
    ex.ingest_objects(late, "http")
    ex.refresh(force=True)
    text = scrape(ex)
    for model in ("bin", "multi", "reg"):
        assert value(text, "modelmon_refresh_duration_seconds", model=model) >= 0
    assert counts(text, "modelmon_ingest_batch_duration_seconds", "source") == {"file": 1, "http": 1}
    # Every operation is exposed from the start; the scrape's own hold shows from the next scrape.
    assert counts(text, "modelmon_lock_hold_seconds", "operation") == {
        "checkpoint": 0, "exposition": 0, "ingest": 2, "refresh": 6}  # per model: capture + publish
    for source in ("file", "http"):
        assert value(text, "modelmon_ingest_batch_duration_seconds_sum", source=source) >= 0
    for op in LOCK_OPERATIONS:
        assert value(text, "modelmon_lock_hold_seconds_sum", operation=op) >= 0
        assert value(text, "modelmon_lock_hold_seconds_bucket", operation=op, le="+Inf") == \
            value(text, "modelmon_lock_hold_seconds_count", operation=op)

    ex.ingest_lines(lines(preds[:10]), "file")
    ex.refresh()
    again = scrape(ex)
    assert counts(again, "modelmon_ingest_batch_duration_seconds", "source") == {"file": 2, "http": 1}
    assert counts(again, "modelmon_lock_hold_seconds", "operation") == {
        "checkpoint": 0, "exposition": 1, "ingest": 3, "refresh": 10}  # + 3 captures, 1 publish (bin)


def test_refresh_duration_is_absent_before_the_first_refresh():
    text = scrape(Exporter(make_config()))
    assert "# TYPE modelmon_refresh_duration_seconds gauge" in text
    assert not [k for k in samples(text) if k[0] == "modelmon_refresh_duration_seconds"]


def test_durations_are_measured_on_the_timer_and_holds_exclude_nothing_else():
    timer = FakeTimer()
    ex = Exporter(make_config(), timer=timer)
    ex.ingest_lines(lines(binary_records(50, seed=2)[0]), "file")
    state = ex.states["bin"]
    real = state.compute

    def slow_compute(inputs):
        timer.advance(0.3)  # outside the lock: a refresh cost, not a lock hold
        return real(inputs)

    state.compute = slow_compute
    ex.refresh(force=True)
    assert ex.refresh_seconds == {"bin": pytest.approx(0.3), "multi": 0.0, "reg": 0.0}
    hold = ex.lock_hold["refresh"]
    assert hold.count == 6 and hold.sum == 0.0

    # A pass with nothing dirty is no refresh: the gauge keeps the last refresh's value.
    ex.refresh()
    assert ex.refresh_seconds["bin"] == pytest.approx(0.3)
    assert ex.lock_hold["refresh"].count == 9


def test_a_refresh_that_raises_still_records_its_duration():
    timer = FakeTimer()
    ex = Exporter(make_config(), timer=timer)
    ex.ingest_lines(lines(binary_records(50, seed=3)[0]), "file")
    ex.refresh(force=True)

    def broken(inputs):
        timer.advance(0.05)
        raise RuntimeError("boom")

    ex.states["bin"].compute = broken
    ex.refresh(force=True)
    text = scrape(ex)
    assert value(text, "modelmon_refresh_duration_seconds", model="bin") == pytest.approx(0.05)
    assert value(text, "modelmon_refresh_errors_total", model="bin", stage="refresh") == 1
    assert value(text, "modelmon_refresh_duration_seconds", model="reg") == 0.0  # the others go on


def test_ingest_duration_covers_parse_and_apply():
    timer = FakeTimer()
    ex = Exporter(make_config(), timer=timer)
    parse = ex.parser.parse_lines

    def slow_parse(batch):
        timer.advance(0.02)  # outside the lock: an ingest cost, not a lock hold
        return parse(batch)

    ex.parser.parse_lines = slow_parse
    ex.ingest_lines(lines(binary_records(20, seed=4)[0]), "file")
    assert ex.ingest_seconds["file"].sum == pytest.approx(0.02)
    assert ex.lock_hold["ingest"].sum == 0.0


def test_checkpoint_and_exposition_holds_are_counted(tmp_path):
    ex = Exporter(make_config())
    ex.ingest_lines(lines(binary_records(50, seed=5)[0]), "file")
    assert Checkpointer(ex, tmp_path / "ckpt").save()
    scrape(ex)
    text = scrape(ex)
    got = counts(text, "modelmon_lock_hold_seconds", "operation")
    assert got["checkpoint"] == 1 and got["exposition"] == 1
