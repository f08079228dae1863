"""No single record can blind the exporter: event-time guard, per-model isolation, bounded label values."""
from __future__ import annotations

import logging

import numpy as np
import orjson
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from modelmon.exporter.checkpoint import Checkpointer
from modelmon.exporter.histogram import OTHER
from modelmon.exporter.pipeline import Exporter
from tests.exporter_helpers import T0, binary_records, make_config, multiclass_records, regression_records, rfc3339
from tests.test_exporter import has, lines, scrape, value

NOW = T0 + 100_000.0  # the exporter's wall clock in these tests: after every record's event time


class Clock:
    def __init__(self, now: float = NOW):
        self.now = now

    def __call__(self) -> float:
        return self.now


def exporter(cfg=None, clock=None, **kw) -> Exporter:
    return Exporter(cfg or make_config(**kw), clock=clock or Clock())


def labelled(records):
    return [{**r, "label": r.get("label", 1)} for r in records]


# ---------------------------------------------------------------------- event-time guard


def test_a_far_future_timestamp_is_refused_and_moves_no_clock():
    """The issue's reproduction: 50 labelled records, one waiting prediction, one record in year
    5026, 50 more labelled records. Before: the window emptied and the waiting prediction expired."""
    ex = exporter(make_config(quality_window="1h"))
    preds, _ = binary_records(100, seed=1, inline_share=1.0)
    waiting = regression_records(1, seed=2, start=T0 + 10)[0]
    waiting.pop("label")
    poisoned = {**preds[50], "id": "poison", "ts": "5026-01-01T00:00:00Z"}
    result = ex.ingest_lines(lines(preds[:50] + [waiting]), "http")
    assert result.rejected == 0
    result = ex.ingest_lines(lines([poisoned]), "http")
    assert (result.accepted, result.rejected) == (0, 1)
    assert result.errors[0].reason == "bad_timestamp" and "ahead of the exporter's clock" in result.errors[0].message
    ex.ingest_lines(lines(preds[50:]), "http")
    ex.refresh(force=True)
    text = scrape(ex)
    assert value(text, "modelmon_records_rejected_total", reason="bad_timestamp") == 1
    assert value(text, "modelmon_window_labeled", model="bin", version="v1") == 100
    assert value(text, "modelmon_last_record_timestamp_seconds", model="bin") == pytest.approx(T0 + 99)
    assert len(ex.joiner) == 1  # the regression prediction still waits for its label
    assert value(text, "modelmon_predictions_expired_total", model="reg", reason="ttl") == 0


def test_the_skew_allows_a_little_future_and_labels_are_guarded_too():
    clock = Clock()
    ex = exporter(clock=clock)
    preds, late = binary_records(3, seed=3, inline_share=0.0)
    preds[0]["ts"] = rfc3339(NOW + 200)  # within the default 5 minutes
    preds[1]["ts"] = NOW + 400  # epoch seconds beyond it
    late[2]["ts"] = rfc3339(NOW + 10_000)  # a label stamped in the future
    result = ex.ingest_lines(lines(preds + late), "file")
    assert sorted((r.index, r.reason) for r in result.errors) == [(1, "bad_timestamp"), (5, "bad_timestamp")]
    assert result.accepted == 4


def test_max_event_age_refuses_old_records_when_configured():
    ex = exporter(make_config(exporter={"max_event_age": "1d", "max_clock_skew": "1m"}))
    preds, _ = binary_records(2, seed=4, inline_share=1.0, start=NOW - 3 * 86400)
    fresh, _ = binary_records(2, seed=5, inline_share=1.0, start=NOW - 3600)
    result = ex.ingest_lines(lines(preds + fresh), "file")
    assert result.accepted == 2 and {r.reason for r in result.errors} == {"bad_timestamp"}
    assert "older than exporter.max_event_age" in result.errors[0].message


def test_a_poisoned_checkpoint_is_clamped_on_restore(tmp_path, caplog):
    """A checkpoint written before the guard (or under a wrong clock) must not bring 5026 back."""
    cfg = make_config(quality_window="1h")
    future = T0 + 3000 * 365 * 86400.0
    poisoned = exporter(cfg, clock=Clock(future + 10))
    preds, _ = binary_records(50, seed=6, inline_share=1.0)
    poisoned.ingest_lines(lines(preds), "file")
    late_preds, _ = binary_records(5, seed=7, inline_share=0.0, start=future)
    poisoned.ingest_lines(lines(late_preds), "file")  # accepted under that clock: 5 waiting, last_ts in 5026
    assert poisoned.states["bin"].last_ts == pytest.approx(future + 4)
    path = tmp_path / "ckpt"
    assert Checkpointer(poisoned, path).save()

    restored = exporter(cfg)
    with caplog.at_level(logging.WARNING):
        assert Checkpointer(restored, path).restore()
    state = restored.states["bin"]
    assert state.last_ts <= NOW + cfg.exporter.max_clock_skew_seconds
    assert len(restored.joiner) == 0 and "stamped in the future" in caplog.text
    fresh, _ = binary_records(10, seed=8, inline_share=1.0, start=T0 + 100)
    restored.ingest_lines(lines(fresh), "file")
    restored.refresh(force=True)
    # The 1h window is measured from a sane clock again: the 50 saved and 10 new rows are in it.
    assert value(scrape(restored), "modelmon_window_labeled", model="bin", version="v1") == 60


# ---------------------------------------------------------------------- per-model isolation


def test_class_overflow_is_a_real_other_class_and_breaks_nothing():
    cfg = make_config(exporter={"max_classes": 5})  # a, b, c configured + 2 learned slots
    ex = exporter(cfg)
    recs = multiclass_records(300, seed=9, start=T0)
    for i, r in enumerate(recs[:120]):
        r["prediction"] = f"junk-{i % 60}"  # 60 distinct predicted classes
    ex.ingest_lines(lines(recs), "file")
    ex.ingest_lines(lines(regression_records(50, seed=10, start=T0)), "file")
    ex.refresh(force=True)
    assert not any(ex.model_errors.values())
    text = scrape(ex)
    # Same numbers as scikit-learn on the folded classes (what the confusion counters hold).
    known = {"a", "b", "c", "junk-0", "junk-1"}
    fold = lambda v: v if v in known else OTHER  # noqa: E731
    y_true = [fold(r["label"]) for r in recs]
    y_pred = [fold(r["prediction"]) for r in recs]
    assert value(text, "modelmon_accuracy_ratio", model="multi", version="v1") == pytest.approx(
        accuracy_score(y_true, y_pred))
    assert value(text, "modelmon_f1_ratio", model="multi", version="v1") == pytest.approx(
        f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert value(text, "modelmon_precision_ratio", model="multi", version="v1") == pytest.approx(
        precision_score(y_true, y_pred, average="macro", zero_division=0))
    assert value(text, "modelmon_recall_ratio", model="multi", version="v1") == pytest.approx(
        recall_score(y_true, y_pred, average="macro", zero_division=0))
    assert value(text, "modelmon_confusion_total", model="multi", version="v1", actual="a", predicted=OTHER) > 0
    assert has(text, "modelmon_mae", model="reg", version="v2")


def test_one_models_failing_refresh_does_not_freeze_the_others(monkeypatch, caplog):
    ex = exporter()
    ex.ingest_lines(lines(binary_records(100, seed=11, inline_share=1.0)[0]), "file")
    ex.ingest_lines(lines(regression_records(50, seed=12, start=T0)), "file")

    def broken(inputs):
        raise RuntimeError("injected")

    monkeypatch.setattr(ex.states["bin"], "compute", broken)
    with caplog.at_level(logging.ERROR):
        for _ in range(5):
            ex.refresh(force=True)
    text = scrape(ex)
    assert has(text, "modelmon_mae", model="reg", version="v2")
    assert value(text, "modelmon_refresh_errors_total", model="bin", stage="refresh") == 5
    assert value(text, "modelmon_refresh_errors_total", model="reg", stage="refresh") == 0
    logged = [r for r in caplog.records if "model bin: refresh failed" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None  # once a minute, with its traceback


def test_one_models_failing_ingest_is_counted_and_the_others_go_on(monkeypatch):
    ex = exporter()

    def broken(*_a, **_k):
        raise RuntimeError("injected")

    monkeypatch.setattr(ex.states["reg"], "add_predictions", broken)
    preds, _ = binary_records(20, seed=13, inline_share=1.0)
    result = ex.ingest_lines(lines(preds + regression_records(10, seed=14, start=T0)), "file")
    text = scrape(ex)
    assert result.accepted == 20
    assert value(text, "modelmon_predictions_total", model="bin", version="v1", status="ok") == 20
    assert value(text, "modelmon_records_rejected_total", reason="internal_error") == 10
    assert value(text, "modelmon_refresh_errors_total", model="reg", stage="ingest") == 1


# ---------------------------------------------------------------------- label values


def test_long_label_values_are_shortened_distinct_and_counted():
    ex = exporter()
    preds, _ = binary_records(4, seed=15, inline_share=1.0)
    preds[0]["version"] = "a" * 65536
    preds[1]["version"] = "a" * 65535 + "b"
    ex.ingest_lines(lines(preds), "file")
    text = scrape(ex)
    limit = ex.config.exporter.max_label_value_length
    versions = {dict(k[1])["version"] for k in _samples(text) if k[0] == "modelmon_predictions_total"}
    assert len(versions) == 3 and all(len(v) <= limit for v in versions)
    assert value(text, "modelmon_label_values_shortened_total", model="bin", label="version") == 2
    assert max(map(len, text.splitlines())) < 2 * limit + 200  # before: one 64 KB value per series


def test_idle_label_values_give_their_slot_back_even_across_a_restart(tmp_path):
    cfg = make_config(exporter={"max_versions_per_model": 2, "label_idle": "1h"})
    clock = Clock()
    ex = exporter(cfg, clock=clock)
    for junk in ("attack-1", "attack-2"):
        preds, _ = binary_records(5, seed=16, inline_share=1.0, version=junk)
        ex.ingest_lines(lines(preds), "http")
    real, _ = binary_records(5, seed=17, inline_share=1.0, version="v4")
    ex.ingest_lines(lines(real), "http")
    assert not has(scrape(ex), "modelmon_predictions_total", model="bin", version="v4", status="ok")
    path = tmp_path / "ckpt"
    assert Checkpointer(ex, path).save()

    clock.now += 7200  # two hours later, a restart: the attack versions are idle past label_idle
    again = exporter(cfg, clock=clock)
    assert Checkpointer(again, path).restore()
    assert list(again.states["bin"].versions.known) == []
    again.ingest_lines(lines(real), "http")
    text = scrape(again)
    assert value(text, "modelmon_predictions_total", model="bin", version="v4", status="ok") == 5

    # And without a restart: the running exporter frees the slots and drops their series.
    clock.now += 10
    ex.refresh(force=True)
    ex.ingest_lines(lines(real), "http")
    text = scrape(ex)
    assert value(text, "modelmon_predictions_total", model="bin", version="v4", status="ok") == 5
    assert not has(text, "modelmon_predictions_total", model="bin", version="attack-1", status="ok")


def test_a_label_keeps_its_versions_slot_alive():
    cfg = make_config(exporter={"max_versions_per_model": 2, "label_idle": "1h"})
    clock = Clock()
    ex = exporter(cfg, clock=clock)
    preds, late = binary_records(10, seed=18, inline_share=0.0)
    ex.ingest_lines(lines(preds), "file")
    clock.now += 3000
    ex.ingest_lines(lines(late[:5]), "file")  # labels of v1 arrive: v1 is in use
    clock.now += 3000
    ex.refresh(force=True)
    assert "v1" in ex.states["bin"].versions.known


def _samples(text):
    from tests.test_exporter import samples
    return samples(text)


def test_checkpoint_format_1_class_codes_are_read_as_keys(tmp_path):
    """A format-1 checkpoint (codes, -1 for folded) restores as class keys with __other__."""
    import io
    import zipfile
    cfg = make_config()
    ex = exporter(cfg)
    ex.ingest_lines(lines(multiclass_records(50, seed=19, start=T0)), "file")
    path = tmp_path / "ckpt"
    assert Checkpointer(ex, path).save()
    src = zipfile.ZipFile(path)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "manifest.json":
                manifest = orjson.loads(data)
                manifest["format"] = 1
                data = orjson.dumps(manifest)
            elif info.filename.startswith("models/multi/quality/0/y_") and info.filename.endswith(".json"):
                keys = orjson.loads(data)
                codes = np.array([{"a": 0, "b": 1, "c": 2}.get(k, -1) for k in keys], dtype=np.int64)
                codes[0] = -1
                buf = io.BytesIO()
                np.save(buf, codes, allow_pickle=False)
                dst.writestr(info.filename[:-5] + ".npy", buf.getvalue())
                continue
            dst.writestr(info, data)
    path.write_bytes(out.getvalue())
    again = exporter(cfg)
    assert Checkpointer(again, path).restore()
    cols = again.states["multi"].quality_windows["v1"].columns()
    assert cols["y_true"][0] == OTHER and set(cols["y_true"][1:]) <= {"a", "b", "c"}
    again.refresh(force=True)
    assert has(scrape(again), "modelmon_accuracy_ratio", model="multi", version="v1")


def test_a_numeric_class_value_is_shortened_by_the_key_it_becomes():
    """Found by the fuzz test: 1e200 as a label is the class "1000…0", 201 characters long."""
    ex = exporter()
    preds, _ = binary_records(2, seed=20, inline_share=1.0)
    preds[0]["label"] = 1e200
    ex.ingest_lines(lines(preds), "file")
    text = scrape(ex)
    limit = ex.config.exporter.max_label_value_length
    actual = {dict(k[1]).get("actual") for k in _samples(text) if k[0] == "modelmon_confusion_total"}
    assert all(len(a) <= limit for a in actual if a) and len(actual) == 2, actual
    assert value(text, "modelmon_label_values_shortened_total", model="bin", label="class") == 1
