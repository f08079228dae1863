"""modelmon.exporter.quality against scikit-learn, on many random windows and on edge cases."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from sklearn import metrics as skm

from modelmon.exporter.quality import (
    average_ranks,
    binary_quality,
    confusion_counts,
    multiclass_quality,
    regression_quality,
    roc_auc,
)

TOL = dict(rtol=1e-9, atol=1e-12)
SIZES = (1, 2, 3, 5, 8, 20, 101, 1000)


def sklearn_binary(y, pred, score=None):
    out = {
        "accuracy": skm.accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred, zero_division=0),
        "recall": skm.recall_score(y, pred, zero_division=0),
        "f1": skm.f1_score(y, pred, zero_division=0),
    }
    if score is not None:
        out["log_loss"] = skm.log_loss(y, score, labels=[False, True])
        out["brier_score"] = skm.brier_score_loss(y, score, pos_label=True)
        if 0 < y.sum() < y.size:
            out["roc_auc"] = skm.roc_auc_score(y, score)
    return out


def assert_same(ours: dict, theirs: dict) -> None:
    assert set(ours) == set(theirs)
    for key in theirs:
        assert_allclose(ours[key], theirs[key], err_msg=key, **TOL)


def random_binary(rng, n, ties: bool):
    y = rng.random(n) < rng.uniform(0.05, 0.95)
    score = np.clip(0.5 + (y - 0.5) * rng.uniform(0, 1) + rng.normal(0, 0.3, n), 0, 1)
    if ties:
        score = np.round(score, 1)  # few distinct values: heavy ties
    pred = score >= 0.5
    return y, pred, score


@pytest.mark.parametrize("ties", [False, True])
def test_binary_matches_sklearn_on_random_windows(ties):
    rng = np.random.default_rng(1)
    for n in SIZES:
        for _ in range(6):
            y, pred, score = random_binary(rng, n, ties)
            assert_same(binary_quality(y, pred, score), sklearn_binary(y, pred, score))
            assert_same(binary_quality(y, pred), sklearn_binary(y, pred))


@settings(max_examples=80, derandomize=True, database=None, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0])),
                min_size=1, max_size=30))
def test_binary_matches_sklearn_hypothesis(rows):
    y, pred, score = (np.array(c) for c in zip(*rows))
    assert_same(binary_quality(y, pred, score), sklearn_binary(y, pred, score))


@pytest.mark.parametrize("y, pred", [
    ([1, 1, 1], [1, 1, 1]),        # single class, all correct
    ([0, 0, 0], [0, 0, 0]),        # no positives at all: precision/recall/f1 are 0 (zero_division)
    ([0, 0, 0], [1, 1, 1]),        # all wrong, no true positive
    ([1, 0, 1, 0], [0, 1, 0, 1]),  # all wrong, both classes
    ([1, 0, 1, 0], [1, 0, 1, 0]),  # all correct, both classes
    ([1], [0]),
])
def test_binary_edge_cases(y, pred):
    y, pred = np.array(y, bool), np.array(pred, bool)
    for score in (pred.astype(float), np.full(y.size, 0.5), np.where(pred, 0.999, 0.001)):
        assert_same(binary_quality(y, pred, score), sklearn_binary(y, pred, score))


def test_binary_roc_auc_absent_with_one_class_and_known_values():
    q = binary_quality(np.array([True, True]), np.array([True, False]), np.array([0.9, 0.2]))
    assert "roc_auc" not in q and q["accuracy"] == 0.5 and q["recall"] == 0.5
    q = binary_quality(np.array([False, True]), np.array([False, True]), np.array([0.1, 0.8]))
    assert q["roc_auc"] == 1.0 and q["f1"] == 1.0
    q = binary_quality(np.array([False, True]), np.array([True, False]), np.array([0.8, 0.1]))
    assert q["roc_auc"] == 0.0
    assert binary_quality(np.array([], bool), np.array([], bool), np.array([])) == {}


def test_binary_extreme_scores_are_clipped_like_sklearn():
    y = np.array([True, False, True])
    score = np.array([0.0, 1.0, 1.0])  # two confidently wrong answers: log(0) without the clip
    q = binary_quality(y, score >= 0.5, score)
    assert np.isfinite(q["log_loss"]) and q["log_loss"] > 20
    assert_allclose(q["log_loss"], skm.log_loss(y, score, labels=[False, True]), **TOL)


def test_binary_nan_score_means_no_score_for_that_record():
    y = np.array([True, False, True, False, True])
    pred = np.array([True, False, False, False, True])
    score = np.array([0.9, np.nan, 0.4, 0.3, np.nan])
    q = binary_quality(y, pred, score)
    has = ~np.isnan(score)
    ref = sklearn_binary(y[has], pred[has], score[has])
    assert_allclose(q["accuracy"], skm.accuracy_score(y, pred))  # over all records
    for key in ("roc_auc", "log_loss", "brier_score"):
        assert_allclose(q[key], ref[key], **TOL)
    q = binary_quality(y, pred, np.full(5, np.nan))
    assert set(q) == {"accuracy", "precision", "recall", "f1"}


def test_binary_rejects_scores_outside_unit_interval():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        binary_quality(np.array([True]), np.array([True]), np.array([1.5]))


def test_average_ranks_match_scipy():
    from scipy.stats import rankdata
    rng = np.random.default_rng(2)
    x = rng.integers(0, 5, 200).astype(float)
    assert_allclose(average_ranks(x), rankdata(x))
    assert roc_auc(np.array([True, True]), np.array([0.1, 0.2])) is None


def sklearn_multiclass(y, pred, n, proba=None):
    out = {
        "accuracy": skm.accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred, average="macro", zero_division=0),
        "recall": skm.recall_score(y, pred, average="macro", zero_division=0),
        "f1": skm.f1_score(y, pred, average="macro", zero_division=0),
    }
    if proba is not None:
        out["log_loss"] = skm.log_loss(y, proba, labels=list(range(n)))
        if len(np.unique(y)) == n:
            if n == 2:  # sklearn treats two classes as binary: AUC of the class-1 column
                out["roc_auc"] = skm.roc_auc_score(y, proba[:, 1])
            else:
                out["roc_auc"] = skm.roc_auc_score(y, proba, multi_class="ovr", average="macro",
                                                   labels=list(range(n)))
    return out


def random_multiclass(rng, n, k, ties: bool):
    n_present = k if rng.random() < 0.6 else rng.integers(1, k + 1)  # some classes may be absent
    present = rng.choice(k, size=n_present, replace=False)
    y = rng.choice(present, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), y] += rng.uniform(0, 3)
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    if ties:
        proba = np.round(proba, 1) + 1e-3  # few distinct values
        proba /= proba.sum(axis=1, keepdims=True)
    pred = np.where(rng.random(n) < 0.2, rng.integers(0, k, n), proba.argmax(axis=1))
    return y, pred, proba


@pytest.mark.parametrize("ties", [False, True])
def test_multiclass_matches_sklearn_on_random_windows(ties):
    rng = np.random.default_rng(3)
    seen_auc = 0
    for n in SIZES:
        for k in (2, 3, 5):
            for _ in range(4):
                y, pred, proba = random_multiclass(rng, n, k, ties)
                ours = multiclass_quality(y, pred, k, proba)
                assert_same(ours, sklearn_multiclass(y, pred, k, proba))
                assert_same(multiclass_quality(y, pred, k), sklearn_multiclass(y, pred, k))
                seen_auc += "roc_auc" in ours
    assert seen_auc > 30  # the AUC comparison really ran


def test_multiclass_edge_cases():
    k = 3
    for y, pred in (([0, 0, 0], [0, 0, 0]), ([2, 2], [0, 1]), ([0, 1, 2], [0, 1, 2]), ([1], [2])):
        y, pred = np.array(y), np.array(pred)
        proba = np.eye(k)[pred] * 0.98 + 0.02 / k
        assert_same(multiclass_quality(y, pred, k, proba), sklearn_multiclass(y, pred, k, proba))
    assert "roc_auc" not in multiclass_quality(np.array([0, 1]), np.array([0, 1]), 3, np.full((2, 3), 1 / 3))
    assert multiclass_quality(np.array([], int), np.array([], int), 3) == {}


def test_multiclass_unnormalised_rows_are_renormalised():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 200)
    proba = rng.random((200, 3))
    proba[:5] = np.nan  # rows without scores drop out of log_loss/roc_auc only
    ours = multiclass_quality(y, y, 3, proba)
    assert ours["accuracy"] == 1.0
    norm = proba[5:] / proba[5:].sum(axis=1, keepdims=True)
    assert_allclose(ours["log_loss"], skm.log_loss(y[5:], norm, labels=[0, 1, 2]), **TOL)
    assert_allclose(ours["roc_auc"], skm.roc_auc_score(y[5:], norm, multi_class="ovr"), **TOL)


def test_confusion_counts_match_sklearn_and_reject_bad_codes():
    rng = np.random.default_rng(5)
    for n in (2, 3, 7):
        a, p = rng.integers(0, n, 300), rng.integers(0, n, 300)
        assert_allclose(confusion_counts(a, p, n), skm.confusion_matrix(a, p, labels=list(range(n))))
    assert confusion_counts(np.array([], int), np.array([], int), 2).tolist() == [[0, 0], [0, 0]]
    with pytest.raises(ValueError, match="0..1"):
        confusion_counts(np.array([0, 2]), np.array([0, 1]), 2)


def test_regression_matches_sklearn():
    rng = np.random.default_rng(6)
    for n in SIZES[1:]:
        for _ in range(10):
            y = rng.normal(30, 10, n)
            pred = y + rng.normal(rng.uniform(-3, 3), rng.uniform(0.1, 8), n)
            q = regression_quality(y, pred)
            assert_allclose(q["mae"], skm.mean_absolute_error(y, pred), **TOL)
            assert_allclose(q["rmse"], skm.root_mean_squared_error(y, pred), **TOL)
            assert_allclose(q["r2"], skm.r2_score(y, pred), **TOL)


def test_regression_r2_omitted_where_sklearn_is_ill_defined():
    assert set(regression_quality(np.array([3.0]), np.array([1.0]))) == {"mae", "rmse"}
    q = regression_quality(np.full(4, 0.1), np.array([0.1, 0.2, 0.3, 0.0]))
    assert "r2" not in q and q["mae"] == pytest.approx(0.1)
    assert regression_quality(np.array([]), np.array([])) == {}
