"""KServe payloads: the feature values of a request body and the outputs of a response body, KServe v1
(`instances` / `predictions`) or the Open Inference Protocol v2 (`inputs` / `outputs` tensors), read
through a model's `kserve:` binding. A body that is not what the binding expects is `Refused`
(`bad_body`), with a message naming the part at fault. The CloudEvent around it, and the join of the
two halves, are modelmon.exporter.kserve's."""
from __future__ import annotations

from math import prod
from typing import Any, NamedTuple

import orjson

from modelmon.config import KServeBinding, ModelConfig
from modelmon.contract import class_key

_CLASS_VALUE = (str, int, bool, float)


class Refused(Exception):
    """An event refused before the join: `reason` is one of REJECT_REASONS."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


def load_body(body: bytes | bytearray) -> dict:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise Refused("bad_body", f"body is not JSON: {e}") from None
    if type(doc) is not dict:
        raise Refused("bad_body", "body must be a JSON object (KServe v1 or Open Inference Protocol v2)")
    return doc


def _is_v2(value: Any) -> bool:
    return type(value) is list and bool(value) and all(type(t) is dict and "name" in t and "data" in t
                                                        for t in value)


def _flatten(data: Any) -> list:
    """v2 `data` is flat row-major; nested lists (which servers also accept) are flattened."""
    if type(data) is not list:
        return [data]
    if not any(type(x) is list for x in data):
        return data
    out: list = []
    for x in data:
        out.extend(_flatten(x))
    return out


class _Tensor(NamedTuple):
    name: str
    rows: int
    width: int  # values per row (the product of the shape past the first axis)
    data: list

    def row(self, i: int) -> Any:
        return self.data[i] if self.width == 1 else self.data[i * self.width:(i + 1) * self.width]


def _tensors(items: list, where: str) -> dict[str, _Tensor]:
    out: dict[str, _Tensor] = {}
    for k, t in enumerate(items):
        name, shape = t.get("name"), t.get("shape")
        if type(name) is not str or not name:
            raise Refused("bad_body", f"{where}[{k}].name must be a non-empty string")
        if type(shape) is not list or not shape or any(type(s) is not int or s < 0 for s in shape):
            raise Refused("bad_body", f"{where} {name!r}: shape must be a non-empty list of sizes")
        data = _flatten(t["data"])
        if len(data) != prod(shape):
            raise Refused("bad_body", f"{where} {name!r}: shape {shape} holds {prod(shape)} values, data has "
                                      f"{len(data)}")
        if name in out:
            raise Refused("bad_body", f"{where}: {name!r} appears twice")
        out[name] = _Tensor(name, shape[0], prod(shape[1:]), data)
    return out


def request_features(doc: dict, b: KServeBinding, m: ModelConfig) -> list[dict]:
    """The feature values of each instance of a request body (v1 `instances` or v2 `inputs`)."""
    if _is_v2(doc.get("inputs")):
        return _v2_features(_tensors(doc["inputs"], "inputs"), b, m)
    instances = doc.get("instances")
    if type(instances) is not list:
        raise Refused("bad_body", "request body has neither v1 'instances' (a list) nor v2 'inputs' "
                                  "(a list of {name, shape, datatype, data})")
    if not instances:
        raise Refused("bad_body", "request body has no instances")
    order = b.features
    known = set(m.features)
    rows = []
    for i, inst in enumerate(instances):
        if type(inst) is dict:
            rows.append({f: v for f, v in inst.items() if f in known})
            continue
        values = inst if type(inst) is list else [inst]
        if len(values) != len(order):
            raise Refused("bad_body", f"instances[{i}] has {len(values)} values; kserve.features lists {len(order)} "
                                      f"positions")
        rows.append({f: v for f, v in zip(order, values) if f is not None})
    return rows


def _v2_features(tensors: dict[str, _Tensor], b: KServeBinding, m: ModelConfig) -> list[dict]:
    named = [t for name, t in tensors.items() if name in m.features]
    if b.input is not None:
        if b.input not in tensors:
            raise Refused("bad_body", f"inputs: no tensor {b.input!r} (kserve.input); got {', '.join(tensors)}")
        positional: _Tensor | None = tensors[b.input]
    elif named:
        positional = None  # one tensor per feature, by name
    elif len(tensors) == 1:
        positional = next(iter(tensors.values()))
    else:
        raise Refused("bad_body", f"inputs {', '.join(tensors)}: none is named after a feature; set kserve.input "
                                  f"to the tensor holding the features by position")
    used = named + ([positional] if positional is not None else [])
    n = used[0].rows
    if any(t.rows != n for t in used):
        raise Refused("bad_body", "inputs disagree on the number of instances (the first axis of their shapes)")
    if n == 0:
        raise Refused("bad_body", "request body has no instances")
    for t in named:
        if t.width != 1 and t is not positional:
            raise Refused("bad_body", f"input {t.name!r}: one value per instance expected, got {t.width}")
    rows: list[dict] = [{} for _ in range(n)]
    if positional is not None:
        order = b.features
        if positional.width != len(order):
            raise Refused("bad_body", f"input {positional.name!r} has {positional.width} values per instance; "
                                      f"kserve.features lists {len(order)} positions")
        for i in range(n):
            row = positional.row(i)
            rows[i].update((f, v) for f, v in zip(order, row if positional.width > 1 else [row]) if f is not None)
    for t in named:
        if t is not positional:
            for i in range(n):
                rows[i][t.name] = t.data[i]
    return rows


class Outputs(NamedTuple):
    values: list[dict]  # per instance: prediction and score / scores
    model_version: str | None


def response_outputs(doc: dict, b: KServeBinding, m: ModelConfig) -> Outputs:
    """Each instance's prediction (and score) of a response body (v1 `predictions` or v2 `outputs`)."""
    if _is_v2(doc.get("outputs")):
        mv = doc.get("model_version")
        mv = str(mv) if type(mv) in (str, int) and str(mv) else None
        return Outputs(_v2_outputs(_tensors(doc["outputs"], "outputs"), b, m), mv)
    preds = doc.get("predictions")
    if type(preds) is not list:
        raise Refused("bad_body", "response body has neither v1 'predictions' (a list) nor v2 'outputs' "
                                  "(a list of {name, shape, datatype, data})")
    out = []
    for i, p in enumerate(preds):
        if type(p) is dict:
            if b.prediction is None and b.score is None:
                raise Refused("bad_body", f"predictions[{i}] is an object: set kserve.prediction (and kserve.score) "
                                          f"to its keys")
            value = {}
            if b.prediction is not None:
                if b.prediction not in p:
                    raise Refused("bad_body", f"predictions[{i}] has no key {b.prediction!r} (kserve.prediction)")
                value = _output(p[b.prediction], m, b, f"predictions[{i}].{b.prediction}", scalar_is="prediction")
            if b.score is not None:
                if b.score not in p:
                    raise Refused("bad_body", f"predictions[{i}] has no key {b.score!r} (kserve.score)")
                scored = _output(p[b.score], m, b, f"predictions[{i}].{b.score}", scalar_is="score")
                value = {**scored, **value}  # an explicit prediction wins over a probability vector's argmax
            if "prediction" not in value:
                raise Refused("bad_body", f"predictions[{i}]: kserve.score is a single score; set kserve.prediction")
            out.append(value)
        else:
            out.append(_output(p, m, b, f"predictions[{i}]", scalar_is="prediction"))
    return Outputs(out, None)


def _v2_outputs(tensors: dict[str, _Tensor], b: KServeBinding, m: ModelConfig) -> list[dict]:
    def get(name: str, key: str) -> _Tensor:
        if name not in tensors:
            raise Refused("bad_body", f"outputs: no tensor {name!r} (kserve.{key}); got {', '.join(tensors)}")
        return tensors[name]

    pred = get(b.prediction, "prediction") if b.prediction is not None else None
    score = get(b.score, "score") if b.score is not None else None
    if pred is None and score is None:
        if len(tensors) != 1:
            raise Refused("bad_body", f"outputs {', '.join(tensors)}: set kserve.prediction to the one holding the "
                                      f"prediction")
        pred = next(iter(tensors.values()))
    if pred is not None and score is not None and pred.rows != score.rows:
        raise Refused("bad_body", f"outputs {pred.name!r} and {score.name!r} disagree on the number of instances")
    n = (pred or score).rows
    out = []
    for i in range(n):
        value = {}
        if score is not None:
            value = _output(score.row(i), m, b, f"output {score.name!r}[{i}]", scalar_is="score")
        if pred is not None:
            value.update(_output(pred.row(i), m, b, f"output {pred.name!r}[{i}]", scalar_is="prediction"))
        if "prediction" not in value:
            raise Refused("bad_body", f"output {score.name!r} holds one score per instance; set kserve.prediction")
        out.append(value)
    return out


def _output(value: Any, m: ModelConfig, b: KServeBinding, where: str, scalar_is: str) -> dict:
    """One instance's output: a scalar (the prediction, or with scalar_is="score" a binary model's
    score) or a probability vector (the prediction is its most likely class)."""
    if type(value) is list:
        return _probabilities(value, m, b, where)
    if type(value) not in _CLASS_VALUE and value is not None:
        raise Refused("bad_body", f"{where}: expected a value or a list of class probabilities")
    if scalar_is == "score":
        if m.task != "binary":
            raise Refused("bad_body", f"{where}: a single score per instance fits a binary model only; a "
                                      f"{m.task} model needs class probabilities")
        return {"score": value}
    return {"prediction": value}


def _probabilities(p: list, m: ModelConfig, b: KServeBinding, where: str) -> dict:
    if m.task == "regression":
        raise Refused("bad_body", f"{where}: a list where a regression model predicts one number")
    classes = b.classes or m.classes
    if classes is None and m.task == "binary" and class_key(m.positive_class) == "1":
        classes = (0, 1)  # scikit-learn's order for 0/1 labels
    if classes is None:
        raise Refused("bad_body", f"{where}: class probabilities, but the class of each position is unknown; set "
                                  f"kserve.classes")
    if len(p) != len(classes) or any(type(x) not in (int, float) for x in p):
        raise Refused("bad_body", f"{where}: expected {len(classes)} probabilities (kserve.classes: "
                                  f"{', '.join(map(str, classes))}), got {str(p)[:80]}")
    best = max(range(len(p)), key=p.__getitem__)
    if m.task == "binary":
        keys = [class_key(c) for c in classes]
        positive = class_key(m.positive_class)
        if positive not in keys:
            raise Refused("bad_body", f"{where}: the positive class {m.positive_class!r} is not in kserve.classes")
        return {"prediction": classes[best], "score": p[keys.index(positive)]}
    return {"prediction": classes[best], "scores": {class_key(c): x for c, x in zip(classes, p)}}
