"""The `kserve:` binding of a model and the `exporter.kserve` bounds: values and errors with key paths."""
from __future__ import annotations

import pytest

from modelmon.config import ConfigError, KServeBinding, parse_config


def model(**over):
    base = {"name": "m", "task": "binary", "features": {"numeric": ["x", "y"], "categorical": ["c"]},
            "reference": {"first": 100}}
    return {**base, **over}


def errors_of(data) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    return e.value.errors


def test_defaults_and_values():
    cfg = parse_config({"models": [model(kserve={"inference_service": "isvc"}), model(name="n")]})
    b = cfg.model("m").kserve
    assert b == KServeBinding(inference_service="isvc", features=("x", "y", "c"))  # the model's order
    assert b.version_from == ("model_version", "endpoint") and b.version is None
    assert cfg.model("n").kserve is None
    assert (cfg.exporter.kserve_join_ttl_seconds, cfg.exporter.kserve_join_buffer_max,
            cfg.exporter.kserve_join_buffer_max_bytes) == (300.0, 10_000, 64 << 20)
    cfg = parse_config({"models": [model(kserve={
        "inference_service": "isvc", "namespace": "prod", "component": "predictor", "features": ["y", None, "x"],
        "input": "input-0", "prediction": "label", "score": "proba", "classes": [0, 1], "version_from": "endpoint",
        "version": 3})], "exporter": {"kserve": {"join_ttl": "2m", "join_buffer_max": 50,
                                                 "join_buffer_max_bytes": "8Mi"}}})
    b = cfg.model("m").kserve
    assert b.features == ("y", None, "x") and b.version_from == ("endpoint",) and b.version == "3"
    assert (b.namespace, b.component, b.input, b.prediction, b.score, b.classes) == \
        ("prod", "predictor", "input-0", "label", "proba", (0, 1))
    assert (cfg.exporter.kserve_join_ttl_seconds, cfg.exporter.kserve_join_buffer_max,
            cfg.exporter.kserve_join_buffer_max_bytes) == (120.0, 50, 8 << 20)
    assert parse_config({"models": [model(kserve={"inference_service": "i", "version_from": []})]}) \
        .model("m").kserve.version_from == ()


@pytest.mark.parametrize("kserve, message", [
    ("isvc", "models[0].kserve: expected a mapping, got str"),
    ({}, "models[0].kserve.inference_service: required (the InferenceService name KServe sends as "
         "ce-inferenceservicename)"),
    ({"inference_service": "i", "port": 1},
     "models[0].kserve.port: unknown key (allowed: classes, component, features, inference_service, input, "
     "namespace, prediction, score, version, version_from)"),
    ({"inference_service": ""}, "models[0].kserve.inference_service: expected a non-empty string, got ''"),
    ({"inference_service": " i"}, "models[0].kserve.inference_service: expected a name without surrounding "
                                  "spaces or control characters, got ' i'"),
    ({"inference_service": "i", "features": ["x", "z"]},
     "models[0].kserve.features[1]: 'z' is not a feature of the model (features: x, y, c; null skips a position)"),
    ({"inference_service": "i", "features": ["x", "x"]}, "models[0].kserve.features[1]: 'x' is listed twice"),
    ({"inference_service": "i", "features": [None]},
     "models[0].kserve.features: every position is null: name at least one model feature"),
    ({"inference_service": "i", "features": []},
     "models[0].kserve.features: expected a non-empty list: the model feature at each position of a positional "
     "instance (null skips a position)"),
    ({"inference_service": "i", "classes": [1]},
     "models[0].kserve.classes: expected the class of each position of a probability vector (at least two)"),
    ({"inference_service": "i", "classes": [1, "1"]}, "models[0].kserve.classes: a class is listed twice"),
    ({"inference_service": "i", "version_from": ["header"]},
     "models[0].kserve.version_from: expected a list of model_version, endpoint (each at most once, tried in "
     "order; [] for the fixed `version`), got ['header']"),
    ({"inference_service": "i", "version": ""}, "models[0].kserve.version: expected a version string, got ''"),
])
def test_binding_errors_name_the_key_path(kserve, message):
    assert message in errors_of({"models": [model(kserve=kserve)]})


def test_regression_has_no_classes_and_bindings_are_unique():
    errs = errors_of({"models": [
        model(task="regression", kserve={"inference_service": "i", "classes": [0, 1]}),
        model(name="a", kserve={"inference_service": "s"}),
        model(name="b", kserve={"inference_service": "s"}),
        model(name="c", kserve={"inference_service": "s", "namespace": "other"}),  # another binding: fine
    ]})
    assert errs == ["models[0].kserve.classes: a regression model has no classes",
                    "models[2].kserve: model 'a' already binds InferenceService 's' (same namespace and component): "
                    "one model per binding"]


@pytest.mark.parametrize("bounds, message", [
    ({"join_ttl": "0s"}, "exporter.kserve.join_ttl: must be a positive duration, got '0s'"),
    ({"join_ttl": "soon"}, "exporter.kserve.join_ttl: expected a duration like '90s', '5m', '6h' or '7d', got 'soon'"),
    ({"join_buffer_max": 0}, "exporter.kserve.join_buffer_max: must be >= 1, got 0"),
    ({"join_buffer_max_bytes": "64MB"},
     "exporter.kserve.join_buffer_max_bytes: expected a size in bytes such as 67108864 or 64Mi, got '64MB'"),
    ({"join_buffer_max_bytes": 100}, "exporter.kserve.join_buffer_max_bytes: must be at least 1024 bytes, got 100"),
    ({"ttl": "1m"}, "exporter.kserve.ttl: unknown key (allowed: join_buffer_max, join_buffer_max_bytes, join_ttl)"),
])
def test_bounds_errors_name_the_key_path(bounds, message):
    assert errors_of({"models": [model()], "exporter": {"kserve": bounds}}) == [message]
