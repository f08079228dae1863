"""The exporter end to end in-process: records in, metrics out, checked against scikit-learn."""
from __future__ import annotations

import subprocess

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sklearn import metrics as skm

from modelmon.exporter.collector import ExporterCollector
from modelmon.exporter.pipeline import Exporter
from tests.exporter_helpers import T0, binary_records, make_config, rfc3339


def lines(records):
    return [orjson.dumps(r) for r in records]


def scrape(exporter: Exporter) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExporterCollector(exporter))
    return generate_latest(registry).decode()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels) -> float:
    """The sample of `name` with exactly `labels`; without one, the sum of the samples whose labels
    include them (`modelmon_confusion_total` by actual and predicted, whatever its `correct`);
    KeyError when none matches."""
    got = samples(text)
    key = (name, tuple(sorted(labels.items())))
    if key in got:
        return got[key]
    want = set(labels.items())
    matching = [v for (n, ls), v in got.items() if n == name and want <= set(ls)]
    if not matching:
        raise KeyError(key)
    return sum(matching)


def has(text: str, name: str, **labels) -> bool:
    return (name, tuple(sorted(labels.items()))) in samples(text)


def labelled_in_order(preds, late):
    """(y_true, y_pred, score) in the order the exporter learns them: inline first, then late labels."""
    by_id = {p["id"]: p for p in preds}
    rows = [(p["label"], p["prediction"], p["score"]) for p in preds if "label" in p]
    rows += [(l["label"], by_id[l["id"]]["prediction"], by_id[l["id"]]["score"]) for l in late]
    return [np.array(c) for c in zip(*rows)]


def test_binary_quality_matches_sklearn_with_late_labels_and_sliding_window():
    cfg = make_config(quality_window=500)
    ex = Exporter(cfg)
    preds, late = binary_records(900, seed=1, inline_share=0.4)
    ex.ingest_lines(lines(preds), "file")
    ex.ingest_lines(lines(late), "file")
    ex.refresh(force=True)
    text = scrape(ex)
    y, p, s = labelled_in_order(preds, late)
    y, p, s = y[-500:], p[-500:], s[-500:]
    assert value(text, "modelmon_window_labeled", model="bin", version="v1") == 500
    expect = {
        "modelmon_accuracy_ratio": skm.accuracy_score(y, p),
        "modelmon_precision_ratio": skm.precision_score(y, p, zero_division=0),
        "modelmon_recall_ratio": skm.recall_score(y, p, zero_division=0),
        "modelmon_f1_ratio": skm.f1_score(y, p, zero_division=0),
        "modelmon_roc_auc_ratio": skm.roc_auc_score(y, s),
        "modelmon_log_loss": skm.log_loss(y, s, labels=[0, 1]),
        "modelmon_brier_score": skm.brier_score_loss(y, s),
    }
    for name, want in expect.items():
        assert value(text, name, model="bin", version="v1") == pytest.approx(want, rel=1e-9, abs=1e-12), name
    # Counters cover every labelled prediction, not just the window.
    y_all, p_all, _ = labelled_in_order(preds, late)
    cm = skm.confusion_matrix(y_all, p_all, labels=[0, 1])
    for a in (0, 1):
        for q in (0, 1):
            assert value(text, "modelmon_confusion_total", model="bin", version="v1",
                         actual=str(a), predicted=str(q)) == cm[a, q]
    assert value(text, "modelmon_labels_total", model="bin", version="v1") == 900
    assert value(text, "modelmon_predictions_total", model="bin", version="v1", status="ok") == 900


def test_label_delay_histogram_counts_late_labels():
    ex = Exporter(make_config())
    preds, late = binary_records(300, seed=2, inline_share=0.0)
    ex.ingest_lines(lines(preds), "file")
    ex.ingest_lines(lines(late), "file")
    text = scrape(ex)
    delays = np.array([30 + i % 50 for i in range(300)], dtype=float)
    assert value(text, "modelmon_label_delay_seconds_count", model="bin") == 300
    assert value(text, "modelmon_label_delay_seconds_sum", model="bin") == pytest.approx(delays.sum())
    assert value(text, "modelmon_label_delay_seconds_bucket", model="bin", le="60.0") == (delays <= 60).sum()


def test_multiclass_quality_matches_sklearn():
    rng = np.random.default_rng(3)
    classes = np.array(["a", "b", "c"])
    recs = []
    for i in range(700):
        y = int(rng.integers(3))
        logits = rng.normal(0, 1, 3)
        logits[y] += 1.2
        prob = np.exp(logits) / np.exp(logits).sum()
        recs.append({"ts": T0 + i, "id": f"m{i}", "model": "multi", "version": "v2",
                     "features": {"x1": float(rng.normal()), "c": "x"},
                     "prediction": str(classes[prob.argmax()]), "label": str(classes[y]),
                     "scores": {str(c): float(v) for c, v in zip(classes, prob)}})
    ex = Exporter(make_config(quality_window=400))
    for chunk in range(0, 700, 128):  # several batches: the window slides across chunk boundaries
        ex.ingest_lines(lines(recs[chunk:chunk + 128]), "http")
    ex.refresh(force=True)
    text = scrape(ex)
    window = recs[-400:]
    y = [r["label"] for r in window]
    p = [r["prediction"] for r in window]
    proba = np.array([[r["scores"][c] for c in classes] for r in window])
    got = lambda n: value(text, n, model="multi", version="v2")  # noqa: E731
    assert got("modelmon_accuracy_ratio") == pytest.approx(skm.accuracy_score(y, p))
    assert got("modelmon_precision_ratio") == pytest.approx(skm.precision_score(y, p, average="macro", zero_division=0))
    assert got("modelmon_recall_ratio") == pytest.approx(skm.recall_score(y, p, average="macro", zero_division=0))
    assert got("modelmon_f1_ratio") == pytest.approx(skm.f1_score(y, p, average="macro", zero_division=0))
    assert got("modelmon_roc_auc_ratio") == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr", labels=classes))
    assert got("modelmon_log_loss") == pytest.approx(skm.log_loss(y, proba, labels=classes))


def test_regression_quality_over_a_time_window_matches_sklearn():
    cfg = make_config(tmp_path=None)
    # Replace the regression model's window by 10 minutes of event time.
    from dataclasses import replace
    from modelmon.config import Window
    reg = replace(cfg.model("reg"), quality_window=Window(seconds=600))
    cfg = replace(cfg, models=(cfg.model("bin"), cfg.model("multi"), reg))
    rng = np.random.default_rng(4)
    recs = []
    for i in range(2000):  # one record every 0.5 s: the window holds the last 1201
        truth = float(rng.normal(30, 8))
        recs.append({"ts": T0 + i * 0.5, "model": "reg", "features": {"x1": 1.0, "x2": 2.0},
                     "prediction": truth + float(rng.normal(0, 3)), "label": truth})
    ex = Exporter(cfg)
    ex.ingest_lines(lines(recs), "file")
    ex.refresh(force=True)
    text = scrape(ex)
    newest = T0 + 1999 * 0.5
    window = [r for r in recs if r["ts"] >= newest - 600]
    y = [r["label"] for r in window]
    p = [r["prediction"] for r in window]
    assert value(text, "modelmon_window_labeled", model="reg", version="unknown") == len(window)
    assert value(text, "modelmon_mae", model="reg", version="unknown") == pytest.approx(skm.mean_absolute_error(y, p))
    assert value(text, "modelmon_rmse", model="reg", version="unknown") == pytest.approx(
        np.sqrt(skm.mean_squared_error(y, p)))
    assert value(text, "modelmon_r2", model="reg", version="unknown") == pytest.approx(skm.r2_score(y, p))


def test_rejects_are_counted_by_reason_and_valid_records_survive():
    ex = Exporter(make_config())
    good = {"ts": rfc3339(T0), "model": "bin", "prediction": 1, "score": 0.7, "features": {"x1": 1.0}}
    batch = [
        b"{not json",
        b"[1, 2]",
        orjson.dumps({"ts": rfc3339(T0), "prediction": 1}),  # no model
        orjson.dumps({**good, "model": "nope"}),
        orjson.dumps({**good, "score": "high"}),
        orjson.dumps({**good, "score": 1.5}),
        orjson.dumps({**good, "ts": "yesterday"}),
        orjson.dumps({**good, "features": {"x1": "big"}}),
        orjson.dumps({"model": "bin", "label": 1}),  # late label without id
        orjson.dumps(good),
        orjson.dumps({**good, "status": "error", "prediction": None}),
    ]
    result = ex.ingest_lines(batch, "file")
    assert result.accepted == 2
    reasons = [r.reason for r in result.errors]
    assert reasons == ["invalid_json", "not_object", "missing_field", "unknown_model", "bad_type",
                       "bad_value", "bad_value", "bad_type", "missing_field"]
    assert [r.index for r in result.errors] == list(range(9))
    text = scrape(ex)
    assert value(text, "modelmon_records_rejected_total", reason="bad_type") == 2
    assert value(text, "modelmon_records_ingested_total", source="file") == 2
    assert value(text, "modelmon_predictions_total", model="bin", version="unknown", status="error") == 1


def test_unmatched_labels_ttl_and_buffer_are_counted():
    cfg = make_config(exporter={"label_ttl": "100s", "join_buffer_max": 50})
    ex = Exporter(cfg)
    preds, late = binary_records(80, seed=5, inline_share=0.0)  # 80 waiting > buffer of 50
    ex.ingest_lines(lines(preds), "file")
    text = scrape(ex)
    assert value(text, "modelmon_predictions_expired_total", model="bin", reason="buffer_full") == 30
    # Predictions 0..29 were evicted; 30..80 wait. A label for an evicted one is unmatched.
    ex.ingest_lines(lines(late[:40]), "file")
    text = scrape(ex)
    assert value(text, "modelmon_labels_unmatched_total", model="bin") == 30
    assert value(text, "modelmon_labels_total", model="bin", version="v1") == 10
    # 1000 s later, the rest are past the 100 s TTL.
    later, _ = binary_records(1, seed=6, start=T0 + 1000, inline_share=1.0)
    ex.ingest_lines(lines(later), "file")
    text = scrape(ex)
    assert value(text, "modelmon_predictions_expired_total", model="bin", reason="ttl") == 40


def test_feature_drift_flags_only_the_shifted_feature():
    ex = Exporter(make_config(drift_window=400, reference={"first": 1000}))
    base, _ = binary_records(1000, seed=7, inline_share=1.0)
    ex.ingest_lines(lines(base), "file")  # these 1000 become the reference
    rng = np.random.default_rng(8)
    drifted, _ = binary_records(400, seed=9, start=T0 + 1000, inline_share=1.0)
    for r in drifted:
        r["features"]["x2"] = float(rng.normal(2.0, 1.0))  # x2 shifts by two standard deviations
    ex.ingest_lines(lines(drifted), "file")
    ex.refresh(force=True)
    text = scrape(ex)
    assert value(text, "modelmon_feature_psi", model="bin", feature="x2") > 0.25
    assert value(text, "modelmon_feature_ks_pvalue", model="bin", feature="x2") < 1e-6
    assert value(text, "modelmon_feature_psi", model="bin", feature="x1") < 0.1
    assert value(text, "modelmon_feature_ks_pvalue", model="bin", feature="x1") > 0.01
    assert value(text, "modelmon_feature_chi2_pvalue", model="bin", feature="c") > 0.01
    assert value(text, "modelmon_drift_window_records", model="bin") == 400


def test_drift_gauges_wait_for_enough_samples():
    ex = Exporter(make_config())
    base, _ = binary_records(220, seed=10, inline_share=1.0)
    ex.ingest_lines(lines(base[:210]), "file")  # reference complete (200), window holds 210 >= 50
    ex.refresh(force=True)
    assert has(scrape(ex), "modelmon_feature_psi", model="bin", feature="x1")
    ex2 = Exporter(make_config())
    ex2.ingest_lines(lines(base[:40]), "file")  # reference still collecting
    ex2.refresh(force=True)
    assert not has(scrape(ex2), "modelmon_feature_psi", model="bin", feature="x1")


def test_version_cardinality_budget_folds_into_other():
    ex = Exporter(make_config(exporter={"max_versions_per_model": 2}))
    recs = [{"ts": T0 + i, "model": "bin", "version": f"v{i}", "prediction": 0} for i in range(5)]
    ex.ingest_lines(lines(recs), "http")
    text = scrape(ex)
    assert value(text, "modelmon_predictions_total", model="bin", version="__other__", status="ok") == 3
    assert value(text, "modelmon_cardinality_overflow_total", model="bin", label="version") == 3


def test_promtool_check_metrics_is_clean(promtool):
    ex = Exporter(make_config())
    preds, late = binary_records(400, seed=11, inline_share=0.5)
    ex.ingest_lines(lines(preds) + lines(late) + [b"garbage"], "file")
    ex.refresh(force=True)
    text = scrape(ex)
    proc = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert proc.stdout.decode().strip() == "" and proc.stderr.decode().strip() == ""


def write_reference_csv(path, records, with_score: bool):
    cols = ["x1", "x2", "c"] + (["score"] if with_score else [])
    rows = [",".join(cols)]
    for r in records:
        f = r["features"]
        rows.append(",".join([repr(f["x1"]), repr(f["x2"]), f["c"]] + ([repr(r["score"])] if with_score else [])))
    path.write_text("\n".join(rows) + "\n")


@pytest.mark.parametrize("with_score", [True, False])
def test_file_reference_and_prediction_drift(tmp_path, with_score):
    ref_records, _ = binary_records(2000, seed=30, inline_share=1.0)
    ref = tmp_path / "ref.csv"
    write_reference_csv(ref, ref_records, with_score)
    ex = Exporter(make_config(tmp_path, reference="ref.csv", drift_window=1000))
    ex.load_references()
    assert ex.readiness()[0]
    state = ex.states["bin"]
    assert state.reference.size == 2000
    assert (state.reference.prediction is not None) == with_score
    # Stable traffic first (freezes the output reference when the file has none), then a shift in
    # x1 that moves the scores: prediction PSI must see it.
    stable, _ = binary_records(5000, seed=31, inline_share=1.0)
    ex.ingest_lines(lines(stable), "file")
    assert state.reference.prediction is not None
    ex.refresh(force=True)
    calm = value(scrape(ex), "modelmon_prediction_psi", model="bin", version="v1")
    shifted, _ = binary_records(1000, seed=32, start=T0 + 10_000, inline_share=1.0, shift=1.5)
    ex.ingest_lines(lines(shifted), "file")
    ex.refresh(force=True)
    text = scrape(ex)
    assert calm < 0.1
    assert value(text, "modelmon_prediction_psi", model="bin", version="v1") > 0.25
    assert value(text, "modelmon_feature_psi", model="bin", feature="x1") > 0.25


def test_multivariate_worker_sees_joint_drift_and_exports_it():
    ex = Exporter(make_config(reference={"first": 1000}, drift_window=800))
    base, _ = binary_records(1800, seed=40, inline_share=1.0)
    ex.ingest_lines(lines(base), "file")
    ex.run_multivariate()
    calm = ex.states["bin"].multivariate
    shifted, _ = binary_records(800, seed=41, start=T0 + 5000, inline_share=1.0, shift=1.5)
    ex.ingest_lines(lines(shifted), "file")
    ex.run_multivariate()
    text = scrape(ex)
    assert calm["drift_classifier_auc"] < 0.6
    assert value(text, "modelmon_drift_classifier_auc", model="bin") > 0.75
    assert value(text, "modelmon_outlier_ratio", model="bin") > calm["outlier_ratio"]
    assert has(text, "modelmon_multivariate_last_run_timestamp_seconds", model="bin")
    assert not has(text, "modelmon_drift_classifier_auc", model="reg")  # no traffic, no value


def test_reference_frozen_from_traffic_survives_a_restart(tmp_path):
    store = tmp_path / "refs"
    cfg = make_config(reference={"first": 300})
    first = Exporter(cfg, reference_store=store)
    first.load_references()
    base, _ = binary_records(400, seed=60, inline_share=1.0)
    first.ingest_lines(lines(base), "file")
    assert (store / "bin.jsonl").exists()
    frozen = first.states["bin"].reference
    # After a restart during drift, the baseline must still be the first 300 records, not the drift.
    second = Exporter(cfg, reference_store=store)
    second.load_references()
    again = second.states["bin"].reference
    assert again is not None and again.size == 300
    for f in ("x1", "x2", "c"):
        assert np.array_equal(again.profiles[f].ref_counts, frozen.profiles[f].ref_counts), f
    assert np.array_equal(again.prediction.ref_counts, frozen.prediction.ref_counts)
    drifted, _ = binary_records(400, seed=61, start=T0 + 5000, inline_share=1.0, shift=1.5)
    second.ingest_lines(lines(drifted), "file")
    second.refresh(force=True)
    assert value(scrape(second), "modelmon_feature_psi", model="bin", feature="x1") > 0.25
    # A saved file that no longer fits the config is ignored, and a new baseline is taken.
    (store / "bin.jsonl").write_text('{"other": 1}\n')
    third = Exporter(cfg, reference_store=store)
    third.load_references()
    assert third.states["bin"].reference is None


def test_output_reference_frozen_from_traffic_survives_a_restart(tmp_path):
    ref_records, _ = binary_records(1000, seed=62, inline_share=1.0)
    write_reference_csv(tmp_path / "ref.csv", ref_records, with_score=False)
    cfg = make_config(tmp_path, reference="ref.csv")
    first = Exporter(cfg, reference_store=tmp_path / "refs")
    first.load_references()
    stable, _ = binary_records(5000, seed=63, inline_share=1.0)
    first.ingest_lines(lines(stable), "file")  # the first 5000 outputs become the output reference
    second = Exporter(cfg, reference_store=tmp_path / "refs")
    second.load_references()
    assert second.states["bin"].reference.prediction is not None
    assert np.array_equal(second.states["bin"].reference.prediction.ref_counts,
                          first.states["bin"].reference.prediction.ref_counts)


def test_a_failing_background_pass_is_logged_and_retried(caplog):
    import threading

    ex = Exporter(make_config())
    calls = []
    done = threading.Event()

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("boom")
        done.set()

    ex.run_every("modelmon-test", 0.01, flaky)
    try:
        assert done.wait(5), "the loop died with its first failure"
    finally:
        ex.stop()
    assert "modelmon-test failed" in caplog.text and "boom" in caplog.text
