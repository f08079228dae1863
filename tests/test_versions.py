"""Versions side by side (issue 10): shadow predictions, labels that join every version of a request,
agreement before labels, and paired/unpaired comparisons against the baseline, checked against
scikit-learn, SciPy-backed tests (modelmon.exporter.comparison) and direct computations."""
from __future__ import annotations

import numpy as np
import orjson
import pytest
from sklearn.metrics import accuracy_score, mean_absolute_error

from modelmon.config import parse_config
from modelmon.exporter import comparison
from modelmon.exporter.checkpoint import Checkpointer
from modelmon.exporter.model_state import feature_drift
from modelmon.exporter.pipeline import Exporter
from tests.exporter_helpers import T0, rfc3339
from tests.test_exporter import samples, scrape

NOW = T0 + 86400.0


def config(task: str = "binary", **model_over):
    m = {"name": "m", "task": task, "features": {"numeric": ["x"], "categorical": ["c"]},
         "reference": {"first": 50}, "quality_window": 5000, "drift_window": 1000, "min_drift_samples": 20,
         **model_over}
    return parse_config({"models": [m], "exporter": {"multivariate": {"enabled": False}}})


def exporter(task: str = "binary", **model_over) -> Exporter:
    return Exporter(config(task, **model_over), clock=lambda: NOW)


def requests(n: int, seed: int = 0):
    """(features, label, served prediction, shadow prediction) per request: the shadow is right more often."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = (x + rng.normal(scale=0.8, size=n) > 0).astype(int)
    served = (x + rng.normal(scale=1.0, size=n) > 0).astype(int)
    shadow = (x + rng.normal(scale=0.3, size=n) > 0).astype(int)
    return x, y, served, shadow


def record(i, version, pred, *, x=0.0, shadow=None, label=None, latency=10.0):
    rec = {"ts": rfc3339(T0 + i), "id": f"r{i}", "model": "m", "version": version,
           "features": {"x": float(x), "c": "a"}, "prediction": int(pred), "latency_ms": latency}
    if shadow is not None:
        rec["shadow"] = shadow
    if label is not None:
        rec["label"] = int(label)
    return orjson.dumps(rec)


def late_label(i, label):
    return orjson.dumps({"ts": rfc3339(T0 + i + 60), "id": f"r{i}", "model": "m", "label": int(label)})


def ingest(ex, lines, size=100):
    for k in range(0, len(lines), size):
        ex.ingest_lines(lines[k:k + size], "file")


def test_the_issue_reproduction_every_version_of_a_request_gets_its_label():
    """400 requests under v3, the same ids as shadow predictions of v4-shadow, then labels by id."""
    x, y, served, shadow = requests(400)
    ex = exporter()
    ingest(ex, [record(i, "v3", served[i], x=x[i]) for i in range(400)])
    ingest(ex, [record(i, "v4-shadow", shadow[i], x=x[i], shadow=True) for i in range(400)])
    ingest(ex, [late_label(i, y[i]) for i in range(400)])
    ex.refresh(force=True)
    s = ex.states["m"]
    assert s.labels_total == {"v3": 400, "v4-shadow": 400}
    assert s.expired.get("replaced", 0) == 0 and s.labels_unmatched == 0 and len(ex.joiner) == 0
    assert dict(s.predictions_total) == {("v3", "ok"): 400}  # shadow traffic is not service traffic
    assert dict(s.shadow_total) == {("v4-shadow", "ok"): 400}
    assert s.latency["v3"].count == 400 and "v4-shadow" not in s.latency
    assert s.label_delay.count == 400  # one label, one delay: not one per version
    q = s.snapshot.quality
    assert q["v3"]["accuracy"] == pytest.approx(accuracy_score(y, served), abs=1e-12)
    assert q["v4-shadow"]["accuracy"] == pytest.approx(accuracy_score(y, shadow), abs=1e-12)


def test_a_shadow_leaves_the_served_numbers_exactly_as_without_it():
    x, y, served, shadow = requests(600, seed=1)
    alone, both = exporter(), exporter()
    served_lines = [record(i, "v1", served[i], x=x[i], label=y[i] if i % 2 else None) for i in range(600)]
    shadow_lines = [record(i, "v2", shadow[i], x=x[i], shadow=True, latency=99.0) for i in range(600)]
    labels = [late_label(i, y[i]) for i in range(0, 600, 2)]
    ingest(alone, served_lines + labels)
    ingest(both, [line for pair in zip(served_lines, shadow_lines) for line in pair] + labels)
    for ex in (alone, both):
        ex.refresh(force=True)
    a, b = alone.states["m"], both.states["m"]
    assert b.snapshot.quality["v1"] == a.snapshot.quality["v1"]
    assert b.snapshot.feature_drift == a.snapshot.feature_drift
    assert b.snapshot.prediction_psi["v1"] == a.snapshot.prediction_psi["v1"]
    assert set(b.snapshot.prediction_psi) == {"v1", "v2"}  # the shadow's outputs drift on their own
    assert dict(b.predictions_total) == dict(a.predictions_total)
    assert b.latency["v1"].buckets() == a.latency["v1"].buckets()
    assert b.score_hist["v1"].buckets() == a.score_hist["v1"].buckets() and len(b.drift_window) == len(a.drift_window)
    text_a, text_b = scrape(alone), scrape(both)
    for name in ("modelmon_predictions_total", "modelmon_prediction_latency_seconds_count"):
        assert {k: v for k, v in samples(text_a).items() if k[0] == name} == \
               {k: v for k, v in samples(text_b).items() if k[0] == name}


def test_agreement_and_comparisons_equal_direct_computations():
    x, y, served, shadow = requests(3000, seed=2)
    ex = exporter()
    lines = []
    for i in range(3000):
        lines.append(record(i, "v1", served[i], x=x[i], label=y[i]))
        lines.append(record(i, "v2", shadow[i], x=x[i], shadow=True, label=y[i]))
    ingest(ex, lines, size=500)
    ex.refresh(force=True)
    s = ex.states["m"]
    assert s.baseline() == "v1"  # the served version with the most traffic
    assert s.version_pairs[("v2", "v1")] == 3000
    assert s.version_agreements[("v2", "v1")] == int((served == shadow).sum())
    comps = s.snapshot.comparisons
    paired = comparison.paired_accuracy(served == y, shadow == y)
    assert comps[("v2", "accuracy", "paired")] == paired
    assert paired.delta == pytest.approx(accuracy_score(y, shadow) - accuracy_score(y, served), abs=1e-12)
    assert paired.pvalue < 1e-6  # the shadow is clearly better here
    assert comps[("v2", "accuracy", "unpaired")] == comparison.unpaired_accuracy(served == y, shadow == y)
    text = samples(scrape(ex))
    key = ("modelmon_version_quality_delta",
           (("baseline", "v1"), ("model", "m"), ("pairing", "paired"), ("quantity", "accuracy"), ("version", "v2")))
    assert text[key] == pytest.approx(paired.delta)
    assert text[("modelmon_version_baseline_info", (("model", "m"), ("source", "traffic"), ("version", "v1")))] == 1


def test_regression_versions_compare_on_absolute_errors():
    rng = np.random.default_rng(3)
    n = 800
    x = rng.normal(size=n)
    y = 2 * x + rng.normal(scale=0.5, size=n)
    base, cand = 2 * x + rng.normal(scale=0.3, size=n), 2 * x + rng.normal(scale=0.6, size=n)
    ex = exporter("regression")

    def rec(i, version, pred, shadow=None):
        r = {"ts": rfc3339(T0 + i), "id": f"r{i}", "model": "m", "version": version,
             "features": {"x": float(x[i]), "c": "a"}, "prediction": float(pred), "label": float(y[i])}
        if shadow:
            r["shadow"] = True
        return orjson.dumps(r)

    ingest(ex, [line for i in range(n) for line in (rec(i, "v1", base[i]), rec(i, "v2", cand[i], True))])
    ex.refresh(force=True)
    s = ex.states["m"]
    assert s.version_abs_difference[("v2", "v1")] == pytest.approx(np.abs(cand - base).sum(), rel=1e-12)
    paired = s.snapshot.comparisons[("v2", "mae", "paired")]
    assert paired == comparison.paired_mae(np.abs(base - y), np.abs(cand - y))
    assert paired.delta == pytest.approx(mean_absolute_error(y, cand) - mean_absolute_error(y, base), abs=1e-12)
    assert s.snapshot.quality["v2"]["mae"] == pytest.approx(mean_absolute_error(y, cand), abs=1e-12)


def test_a_canary_on_other_requests_compares_unpaired_and_the_configured_baseline_wins():
    x, y, served, shadow = requests(2000, seed=4)
    ex = exporter(baseline_version="v1")
    lines = [record(i, "v2" if i % 5 == 0 else "v1", (shadow if i % 5 == 0 else served)[i], x=x[i], label=y[i])
             for i in range(2000)]
    ingest(ex, lines, size=250)
    ex.refresh(force=True)
    s = ex.states["m"]
    assert s.baseline() == "v1" and not s.version_pairs  # distinct ids: nothing to pair
    canary = np.arange(2000) % 5 == 0
    expected = comparison.unpaired_accuracy(served[~canary] == y[~canary], shadow[canary] == y[canary])
    assert s.snapshot.comparisons == {("v2", "accuracy", "unpaired"): expected}
    text = samples(scrape(ex))
    assert text[("modelmon_version_baseline_info", (("model", "m"), ("source", "config"), ("version", "v1")))] == 1


def test_a_resent_prediction_replaces_its_own_version_only():
    ex = exporter()
    ingest(ex, [record(1, "v1", 0), record(1, "v2", 1, shadow=True), record(1, "v1", 1)])
    assert len(ex.joiner) == 2 and ex.states["m"].expired["replaced"] == 1
    ingest(ex, [late_label(1, 1)])
    s = ex.states["m"]
    assert s.labels_total == {"v1": 1, "v2": 1}
    assert s.confusion[("v1", "1", "1")] == 1  # the label answered the re-sent v1 prediction
    assert s.version_pairs[("v2", "v1")] == 1  # paired once, however often v1 was re-sent


def test_shadow_must_be_a_boolean():
    ex = exporter()
    bad = orjson.dumps({"ts": rfc3339(T0), "model": "m", "prediction": 1, "shadow": "yes"})
    result = ex.ingest_lines([bad, record(2, "v1", 1, shadow=False), record(3, "v1", 1, shadow=None)], "http")
    assert result.accepted == 2 and [(e.index, e.reason) for e in result.errors] == [(0, "bad_type")]
    assert "shadow" in result.errors[0].message


def test_pending_predictions_of_every_version_survive_a_checkpoint(tmp_path):
    ex = exporter()
    ingest(ex, [line for i in range(50) for line in (record(i, "v1", 1), record(i, "v2", 0, shadow=True))])
    assert len(ex.joiner) == 100
    assert Checkpointer(ex, tmp_path / "ckpt").save()
    fresh = exporter()
    Checkpointer(fresh, tmp_path / "ckpt").restore()
    def waiting(j):  # (a missing score is saved as null, restored as None: the join reads both as NaN)
        return [(key, p.version, p.ts, p.prediction) for key, p in j.items()]

    assert waiting(fresh.joiner) == waiting(ex.joiner)
    ingest(fresh, [late_label(i, 1) for i in range(50)])
    assert fresh.states["m"].labels_total == {"v1": 50, "v2": 50}


def test_while_a_canary_serves_each_version_has_its_own_feature_drift():
    """A canary on a third of the requests, its inputs shifted: per-version feature drift equals the
    direct computation over each version's own records; shadows never get a window of their own."""
    rng = np.random.default_rng(5)
    ex = exporter(reference={"first": 300})
    ref = [record(i, "v1", 1, x=rng.normal()) for i in range(300)]
    ingest(ex, ref)
    xs = {"v1": [], "v2": []}
    lines = []
    for i in range(300, 1200):
        version = "v2" if i % 3 == 0 else "v1"
        x = rng.normal(1.0 if version == "v2" else 0.0)
        xs[version].append(x)
        lines.append(record(i, version, 1, x=x))
        lines.append(record(i, "v9-shadow", 0, x=x, shadow=True))
    ingest(ex, lines)
    ex.refresh(force=True)
    s = ex.states["m"]
    got = s.snapshot.version_feature_drift
    assert set(got) == {"v1", "v2"}  # the served versions; not the shadow
    profile = s.reference.profiles["x"]
    for version in ("v1", "v2"):
        expected = feature_drift(profile, np.asarray(xs[version][-1000:], dtype=np.float64))  # drift_window 1000
        assert got[version]["x"] == expected
    assert got["v2"]["x"]["psi"] > 0.25 > got["v1"]["x"]["psi"]
    text = samples(scrape(ex))
    key = ("modelmon_version_feature_drift",
           (("feature", "x"), ("model", "m"), ("statistic", "psi"), ("version", "v2")))
    assert text[key] == pytest.approx(got["v2"]["x"]["psi"])
