"""Checkpoints: windows, budgets and predictions waiting for late labels survive a restart."""
from __future__ import annotations

import io
import threading
import zipfile

import numpy as np
import orjson
import pytest

from modelmon.exporter import checkpoint
from modelmon.exporter.checkpoint import Checkpointer
from modelmon.exporter.joiner import LabelJoiner, Pending
from modelmon.exporter.windows import concat
from modelmon.exporter.pipeline import Exporter
from tests.exporter_helpers import T0, binary_records, make_config, multiclass_records, regression_records
from tests.test_exporter import has, lines, scrape, value


def loaded_exporter(cfg, store, late_delivered=0.5):
    """An exporter that has seen all three models, with some late labels still outstanding.

    References are frozen from traffic and kept in `store`, as `modelmon serve` does next to the log.
    """
    ex = Exporter(cfg, reference_store=store)
    ex.load_references()
    preds, late = binary_records(600, seed=70, inline_share=0.4)
    ex.ingest_lines(lines(preds), "file")
    cut = int(len(late) * late_delivered)
    ex.ingest_lines(lines(late[:cut]), "file")
    ex.ingest_lines(lines(multiclass_records(400, 71, T0)), "file")
    ex.ingest_lines(lines(regression_records(400, 72, T0)), "file")
    ex.refresh(force=True)
    return ex, late[cut:]


def snapshot_of(ex):
    return {name: (s.snapshot.quality, s.snapshot.window_labeled, s.snapshot.feature_drift,
                   s.snapshot.prediction_psi, s.snapshot.drift_window_records, s.last_ts,
                   list(s.classes.known), list(s.versions.known))
            for name, s in ex.states.items()}


def restarted(cfg, path):
    ex = Exporter(cfg, reference_store=path.parent / "refs")
    ex.load_references()
    restored = Checkpointer(ex, path).restore()
    ex.refresh(force=True)
    return ex, restored


def test_restart_keeps_windows_gauges_and_pending_joins(tmp_path):
    cfg = make_config()
    first, outstanding = loaded_exporter(cfg, tmp_path / "refs")
    path = tmp_path / "ckpt"
    assert Checkpointer(first, path).save()
    assert first.checkpoint_saved_at is not None

    second, restored = restarted(cfg, path)
    assert restored
    assert snapshot_of(second) == snapshot_of(first)
    assert [(k, p.version, p.ts, p.prediction, p.score) for k, p in second.joiner.items()] == \
           [(k, p.version, p.ts, p.prediction, p.score) for k, p in first.joiner.items()]
    # The gauges are back before any new record arrives.
    text = scrape(second)
    assert value(text, "modelmon_accuracy_ratio", model="bin", version="v1") == \
        value(scrape(first), "modelmon_accuracy_ratio", model="bin", version="v1")

    # Labels for predictions made before the restart still join, exactly as without the restart.
    for ex in (first, second):
        ex.ingest_lines(lines(outstanding), "file")
        ex.refresh(force=True)
    assert second.states["bin"].labels_unmatched == 0
    assert snapshot_of(second) == snapshot_of(first)


def test_multiclass_class_codes_keep_their_meaning(tmp_path):
    cfg = make_config(extra_models=())
    first = Exporter(cfg)
    first.load_references()
    # A class outside the configured ones gets the next code; the restored budget must keep it.
    recs = multiclass_records(300, 73, T0)
    for r in recs[::10]:
        r["label"] = "zz"
    first.ingest_lines(lines(recs), "file")
    first.refresh(force=True)
    Checkpointer(first, tmp_path / "ckpt").save()
    second, _ = restarted(cfg, tmp_path / "ckpt")
    assert list(second.states["multi"].classes.known) == ["a", "b", "c", "zz"]
    more = multiclass_records(100, 74, T0 + 1000)
    for ex in (first, second):
        ex.ingest_lines(lines(more), "file")
        ex.refresh(force=True)
    assert second.states["multi"].snapshot.quality == first.states["multi"].snapshot.quality


def test_a_smaller_window_trims_the_restored_one(tmp_path):
    first, _ = loaded_exporter(make_config(quality_window=500, drift_window=300), tmp_path / "refs")
    Checkpointer(first, tmp_path / "ckpt").save()
    second, _ = restarted(make_config(quality_window=100, drift_window=80), tmp_path / "ckpt")
    assert second.states["reg"].snapshot.window_labeled == {"v2": 100}
    assert second.states["reg"].snapshot.drift_window_records == 80
    kept = second.states["reg"].quality_windows["v2"].columns()["y_true"]
    assert np.array_equal(kept, first.states["reg"].quality_windows["v2"].columns()["y_true"][-100:])


def test_a_changed_model_starts_cold_and_the_others_are_restored(tmp_path, caplog):
    first, _ = loaded_exporter(make_config(), tmp_path / "refs")
    Checkpointer(first, tmp_path / "ckpt").save()
    changed = make_config(features={"numeric": ["x1"], "categorical": ["c"]})  # bin lost x2
    second, restored = restarted(changed, tmp_path / "ckpt")
    assert restored
    assert second.states["bin"].snapshot.window_labeled == {}
    assert all(model != "bin" for (model, _), _ in second.joiner.items())
    assert second.states["reg"].snapshot.window_labeled == first.states["reg"].snapshot.window_labeled
    assert "model bin changed since the checkpoint" in caplog.text


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other_format"])
def test_an_unusable_checkpoint_is_ignored_with_a_message(tmp_path, caplog, damage):
    cfg = make_config()
    first, _ = loaded_exporter(cfg, tmp_path / "refs")
    path = tmp_path / "ckpt"
    Checkpointer(first, path).save()
    if damage == "garbage":
        path.write_bytes(b"not a zip file")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    else:
        with zipfile.ZipFile(path, "a") as zf:
            manifest = orjson.loads(zf.read("manifest.json"))
        manifest["format"] = 99
        body = path.read_bytes()
        with zipfile.ZipFile(path, "w") as out, zipfile.ZipFile(io.BytesIO(body)) as src:
            for item in src.infolist():
                out.writestr(item, orjson.dumps(manifest) if item.filename == "manifest.json" else src.read(item))
    second, restored = restarted(cfg, path)
    assert not restored
    assert "ignoring the checkpoint" in caplog.text
    assert second.states["bin"].snapshot.window_labeled == {}
    # It still works normally.
    preds, _ = binary_records(50, seed=75, inline_share=1.0)
    second.ingest_lines(lines(preds), "file")
    second.refresh(force=True)
    assert second.states["bin"].snapshot.window_labeled == {"v1": 50}


def test_no_checkpoint_yet_is_not_an_error(tmp_path):
    ex = Exporter(make_config())
    assert Checkpointer(ex, tmp_path / "absent").restore() is False


def test_a_failed_save_is_counted_and_exported(tmp_path):
    ex, _ = loaded_exporter(make_config(), tmp_path / "refs")
    (tmp_path / "file").write_text("")
    assert not Checkpointer(ex, tmp_path / "file" / "ckpt").save()  # its directory is a file
    text = scrape(ex)
    assert value(text, "modelmon_state_write_errors_total", file="checkpoint") == 1
    assert not has(text, "modelmon_checkpoint_last_success_timestamp_seconds")
    assert Checkpointer(ex, tmp_path / "ok").save()
    assert value(scrape(ex), "modelmon_checkpoint_last_success_timestamp_seconds") > 0


def test_a_reference_being_collected_resumes_where_it_stopped(tmp_path):
    cfg = make_config(reference={"first": 300})
    preds, _ = binary_records(400, seed=76, inline_share=1.0)
    whole = Exporter(cfg)
    whole.ingest_lines(lines(preds), "file")

    first = Exporter(cfg)
    first.ingest_lines(lines(preds[:200]), "file")
    assert first.states["bin"].reference is None
    Checkpointer(first, tmp_path / "ckpt").save()
    second, _ = restarted(cfg, tmp_path / "ckpt")
    second.ingest_lines(lines(preds[200:]), "file")
    ref, expected = second.states["bin"].reference, whole.states["bin"].reference
    assert ref is not None and ref.size == 300
    for f in ("x1", "x2", "c"):
        assert np.array_equal(ref.profiles[f].ref_counts, expected.profiles[f].ref_counts), f


def test_periodic_saves_follow_the_interval(tmp_path, monkeypatch):
    ex = Exporter(make_config())
    clock = [1000.0]
    monkeypatch.setattr("modelmon.exporter.checkpoint.time.monotonic", lambda: clock[0])
    ckpt = Checkpointer(ex, tmp_path / "ckpt", interval=60)
    ckpt.maybe_save()
    assert not (tmp_path / "ckpt").exists()
    clock[0] += 61
    ckpt.maybe_save()
    assert (tmp_path / "ckpt").exists()


def test_an_idle_exporter_does_not_rewrite_its_checkpoint(tmp_path, monkeypatch):
    ex, _ = loaded_exporter(make_config(), tmp_path / "refs")
    clock = [1000.0]
    monkeypatch.setattr("modelmon.exporter.checkpoint.time.monotonic", lambda: clock[0])
    ckpt = Checkpointer(ex, tmp_path / "ckpt", interval=60)
    assert ckpt.save()
    (tmp_path / "ckpt").unlink()
    ex.checkpoint_saved_at = 0.0
    clock[0] += 61
    ckpt.maybe_save()
    assert not (tmp_path / "ckpt").exists()  # nothing new since the last save
    assert ex.checkpoint_saved_at > 0  # but the saved state is current: the age gauge stays low
    preds, _ = binary_records(10, seed=77, start=T0 + 9000, inline_share=1.0)
    ex.ingest_lines(lines(preds), "file")
    clock[0] += 61
    ckpt.maybe_save()
    assert (tmp_path / "ckpt").exists()


def test_a_checkpoint_with_missing_columns_is_refused_before_anything_is_applied(tmp_path, caplog):
    cfg = make_config()
    first, _ = loaded_exporter(cfg, tmp_path / "refs")
    path = tmp_path / "ckpt"
    Checkpointer(first, path).save()
    body = path.read_bytes()
    with zipfile.ZipFile(path, "w") as out, zipfile.ZipFile(io.BytesIO(body)) as src:
        for item in src.infolist():
            if item.filename == "models/reg/drift/columns.json":  # the last model: the others read fine
                out.writestr(item, orjson.dumps([c for c in orjson.loads(src.read(item)) if c != "x2"]))
            else:
                out.writestr(item, src.read(item))
    second, restored = restarted(cfg, path)
    assert not restored and "expected" in caplog.text
    assert all(s.snapshot.window_labeled == {} for s in second.states.values())
    assert len(second.joiner) == 0


# ---------------------------------------------------------------------- saving off the exporter lock


def window_sizes(ex):
    """What a restore must give back: per model, the drift window's and each quality window's size."""
    return {name: (len(s.drift_window), {v: len(w) for v, w in s.quality_windows.items() if len(w)})
            for name, s in ex.states.items()}


def record_captures(monkeypatch, ex):
    """Wrap the capture (run under the exporter lock) to note the state it cut, for the restore to match."""
    seen = []
    capture = checkpoint._capture

    def noting(exporter):
        assert exporter.lock._is_owned()  # the cut is taken under the lock
        seen.append((window_sizes(exporter), len(exporter.joiner),
                     {name: s.drift_window.view() for name, s in exporter.states.items()}))
        return capture(exporter)

    monkeypatch.setattr(checkpoint, "_capture", noting)
    return seen


def test_save_holds_the_lock_only_for_the_capture(tmp_path, monkeypatch):
    cfg = make_config()
    ex, outstanding = loaded_exporter(cfg, tmp_path / "refs")
    seen = record_captures(monkeypatch, ex)
    building, release = threading.Event(), threading.Event()
    archive = checkpoint._archive

    def slow_archive(captured):
        building.set()
        assert release.wait(60)
        return archive(captured)

    monkeypatch.setattr(checkpoint, "_archive", slow_archive)
    saved = []
    saver = threading.Thread(target=lambda: saved.append(Checkpointer(ex, tmp_path / "ckpt").save()))
    saver.start()
    try:
        assert building.wait(60)
        # While the archive is being built, ingest (which takes the exporter lock) goes ahead.
        more, _ = binary_records(120, seed=80, start=T0 + 5000, inline_share=0.5)
        ingest = threading.Thread(target=lambda: (ex.ingest_lines(lines(more), "file"),
                                                  ex.ingest_lines(lines(outstanding), "file")))
        ingest.start()
        ingest.join(60)
        assert not ingest.is_alive(), "ingest waited for the archive to be built"
    finally:
        release.set()
        saver.join(60)
    assert saved == [True]
    assert window_sizes(ex) != seen[0][0]  # the ingest moved the windows after the cut...
    second, restored = restarted(cfg, tmp_path / "ckpt")
    assert restored
    assert window_sizes(second) == seen[0][0]  # ...and the checkpoint holds the cut, not the later state
    assert len(second.joiner) == seen[0][1]


def test_a_checkpoint_taken_during_concurrent_ingest_restores_the_state_at_its_cut(tmp_path, monkeypatch):
    cfg = make_config(quality_window=2000, drift_window=1500)
    ex, _ = loaded_exporter(cfg, tmp_path / "refs")
    seen = record_captures(monkeypatch, ex)
    stop = threading.Event()
    batches = [binary_records(60, seed=100 + i, start=T0 + 10_000 + 100 * i, inline_share=0.5)
               for i in range(40)]
    errors = []

    def ingest():
        try:
            for preds, late in batches:
                if stop.is_set():
                    return
                ex.ingest_lines(lines(preds), "file")
                ex.ingest_lines(lines(late[: len(late) // 2]), "file")
        except Exception as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    feeder = threading.Thread(target=ingest)
    feeder.start()
    paths = []
    try:
        for i in range(4):
            paths.append(tmp_path / f"ckpt{i}")
            assert Checkpointer(ex, paths[-1]).save()
    finally:
        stop.set()
        feeder.join(120)
    assert not feeder.is_alive() and not errors
    assert len(seen) == len(paths)
    for path, (sizes, pending, views) in zip(paths, seen):
        second, restored = restarted(cfg, path)
        assert restored
        assert window_sizes(second) == sizes
        assert len(second.joiner) == pending
        for name, view in views.items():  # the very records of the cut, oldest first
            if view.size:
                assert np.array_equal(second.states[name].drift_window.columns()["ts"], concat(view.chunks)["ts"])


def test_the_join_buffer_capture_keeps_its_order():
    """The capture reads the join buffer's plain-dict storage; its order must be the OrderedDict's."""
    expired = []
    joiner = LabelJoiner(ttl_seconds=50, max_entries=40, on_expired=lambda *a: expired.append(a))
    for i in range(60):  # evicts the oldest 20
        joiner.add("m", f"id{i}", Pending("m", "v", float(i), 1, 0.5))
    joiner.add("m", "id30", Pending("m", "v", 60.0, 1, 0.5))  # a re-sent id moves to the end
    joiner.take("m", "id45")
    joiner.expire(80.0)  # drops ts < 30
    joiner.restore("n", "x", Pending("n", "v", 61.0, 0, None))
    keys, entries = joiner.snapshot()
    assert list(zip(keys, entries)) == list(joiner.items())
    assert keys[-2:] == [("m", "id30"), ("n", "x")] and ("m", "id45") not in keys
