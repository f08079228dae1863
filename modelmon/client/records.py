"""Build prediction and label records at the call site, checked against the log schema (v1).

The client does not know the model's config (its task, features, classes), so it checks what
every model shares: the types and ranges `modelmon.exporter.records` would refuse whatever the
task. What only the config decides (a class prediction for a regression model, a feature the
model does not have) is still the exporter's to refuse, and is counted there.

A broken record raises `InvalidRecord` (a `ValueError`, or a `TypeError` subclass for a wrong
type) with the field named. The returned dict holds only plain JSON values (numpy scalars are
converted) and never shares a mutable object with the caller, who may reuse its dicts.
"""
from __future__ import annotations

import datetime as _dt
import math
import time
from typing import Any

_now = time.time

MAX_ID_LENGTH = 1024  # = modelmon.exporter.records.MAX_ID_LENGTH (not imported: this module stays light)
STATUSES = ("ok", "error")
_SCALARS = frozenset({str, int, float, bool, type(None)})  # feature values kept as they are
_NUMBERS = (int, float)
_INF = math.inf


class InvalidRecord(ValueError):
    """A record the exporter would refuse, found before it left the process."""


class InvalidType(InvalidRecord, TypeError):
    """A field of the wrong type (also a TypeError, as Python would raise)."""


def _plain(v: Any) -> Any:
    """numpy scalars (np.float32, np.int64, np.bool_, np.str_) as the Python value they hold.
    Arrays stay arrays (and are refused by the caller): `prediction=model.predict(X)` is a bug to
    report, not a value to guess at."""
    if type(v).__module__ == "numpy" and getattr(v, "shape", None) == ():
        v = v.item()
    return v


def _number(name: str, v: Any) -> float | int:
    t = type(v)
    if t is not int and t is not float:
        v = _plain(v)
        t = type(v)
        if t is not int and t is not float:  # bool is refused too: True is not a latency
            raise InvalidType(f"{name!r} must be a number, got {t.__name__}")
    if t is float and not -_INF < v < _INF:
        raise InvalidRecord(f"{name!r} must be finite, got {v!r}")
    return v


def _class_value(name: str, v: Any) -> Any:
    """A class (str, int, bool) or, for regression, a finite number."""
    t = type(v)
    if t is str or t is int or t is bool:
        return v
    if t is float:
        if not -_INF < v < _INF:
            raise InvalidRecord(f"{name!r} must be finite, got {v!r}")
        return v
    v = _plain(v)
    if type(v) in _SCALARS and v is not None:
        return _class_value(name, v)
    raise InvalidType(f"{name!r} must be a class (string, integer, boolean) or a number, got {t.__name__}")


def _class_key(v: Any) -> str:
    """The class name the exporter keys scores by (modelmon.contract.class_key: 1, 1.0, True -> "1")."""
    t = type(v)
    if t is str:
        return v
    if t is bool:
        return "1" if v else "0"
    if t is float and v.is_integer():
        return str(int(v))
    return str(v)


def _timestamp(v: Any) -> float:
    """Epoch seconds from epoch seconds, an aware datetime (naive: UTC, as the exporter reads a
    string without an offset) or an RFC 3339 string."""
    if v is None:
        return _now()
    t = type(v)
    if t is float or t is int:
        if t is float and not -_INF < v < _INF:
            raise InvalidRecord(f"'ts' must be finite, got {v!r}")
        return v
    if isinstance(v, _dt.datetime):
        return (v if v.tzinfo is not None else v.replace(tzinfo=_dt.timezone.utc)).timestamp()
    if t is str:
        try:  # (Python 3.10's fromisoformat does not read a "Z" suffix)
            d = _dt.datetime.fromisoformat(v[:-1] + "+00:00" if v[-1:] in ("Z", "z") else v)
        except ValueError:
            raise InvalidRecord(f"'ts' must be RFC 3339 or epoch seconds, got {v[:60]!r}") from None
        return (d if d.tzinfo is not None else d.replace(tzinfo=_dt.timezone.utc)).timestamp()
    v = _plain(v)
    if type(v) in (int, float):
        return _timestamp(v)
    raise InvalidType(f"'ts' must be epoch seconds, a datetime or an RFC 3339 string, got {t.__name__}")


def _id(v: Any) -> str | int:
    t = type(v)
    if t is str:
        if len(v) > MAX_ID_LENGTH:
            raise InvalidRecord(f"'id' must be at most {MAX_ID_LENGTH} characters, got {len(v)}")
        return v
    if t is int:
        return v
    v = _plain(v)
    if type(v) in (str, int) and type(v) is not bool:
        return _id(v)
    raise InvalidType(f"'id' must be a string or an integer, got {t.__name__}")


def _model(v: Any) -> str:
    if type(v) is not str:
        raise InvalidType(f"'model' must be a string, got {type(v).__name__}")
    if not v:
        raise InvalidRecord("'model' must not be empty")
    return v


def _features(v: Any) -> dict:
    if type(v) is not dict:
        if v is None:
            return {}
        if not isinstance(v, dict):  # a Mapping that is not a dict (or a pandas row) is copied below
            try:
                v = dict(v)
            except (TypeError, ValueError):
                raise InvalidType(f"'features' must be a dict, got {type(v).__name__}") from None
    for k, x in v.items():  # the common case: one pass of identity checks, then a C-level copy
        t = type(x)
        if t is float:
            if x - x:  # NaN or an infinity (x - x is NaN, which is true); 0.0 for every finite x
                break
        elif t is not str and t is not int and t is not bool and x is not None:
            break
        if type(k) is not str:
            break
    else:
        return dict(v)
    out = {}
    for k, x in v.items():
        if type(k) is not str:
            if not isinstance(k, str):  # (np.str_ and other str subclasses are fine)
                raise InvalidType(f"'features' keys must be strings, got {type(k).__name__}")
            k = str(k)
        if type(x) not in _SCALARS:
            x = _plain(x)
            if type(x) not in _SCALARS:
                raise InvalidType(f"feature {k[:100]!r} must be a number, string, boolean or None, "
                                  f"got {type(x).__name__}")
        if type(x) is float and not -_INF < x < _INF:
            if x != x:
                x = None  # NaN is pandas' "missing": the exporter's null
            else:
                raise InvalidRecord(f"feature {k[:100]!r} must be finite, got {x!r}")
        out[k] = x
    return out


def _scores(v: Any) -> dict:
    if not isinstance(v, dict):
        raise InvalidType(f"'scores' must be a dict of class -> probability, got {type(v).__name__}")
    out = {}
    for k, p in v.items():
        p = _number("scores", p)
        if not 0 <= p <= 1:
            raise InvalidRecord(f"'scores' must hold probabilities in [0, 1], got {p!r} for {k!r}")
        out[_class_key(_class_value("scores", k))] = p
    return out


def prediction(model: Any, features: Any, prediction: Any, score: Any, scores: Any, id: Any, version: Any,
               latency_ms: Any, status: Any, shadow: Any, ts: Any, label: Any) -> dict:
    """A prediction record (schema v1), or InvalidRecord naming the field.

    Each field's common case is checked inline (identity tests on its type); anything else goes
    through the field's function, which converts numpy scalars or raises."""
    if type(model) is not str or not model:
        _model(model)
    rec: dict[str, Any] = {"ts": _now() if ts is None else _timestamp(ts), "model": model}
    if prediction is None:
        if status == "ok":
            raise InvalidRecord("an 'ok' record needs a prediction (send status='error' for a failed request)")
    else:
        t = type(prediction)
        rec["prediction"] = prediction if (t is int or t is str or t is bool) else _class_value("prediction",
                                                                                                 prediction)
    if status != "ok" and status != "error":
        raise InvalidRecord(f"'status' must be 'ok' or 'error', got {str(status)[:40]!r}")
    rec["status"] = status
    rec["features"] = _features(features)
    if id is not None:
        rec["id"] = id if type(id) is str and len(id) <= MAX_ID_LENGTH else _id(id)
    if version is not None:
        if type(version) is not str:
            version = _plain(version)
            if type(version) not in (str, int, float):
                raise InvalidType(f"'version' must be a string, got {type(version).__name__}")
            version = str(version)
        rec["version"] = version
    if score is not None:
        if type(score) is not float or not 0.0 <= score <= 1.0:  # (NaN fails the comparison)
            score = _number("score", score)
            if not 0 <= score <= 1:
                raise InvalidRecord(f"'score' must be a probability in [0, 1], got {score!r}")
        rec["score"] = score
    if scores is not None:
        rec["scores"] = _scores(scores)
    if latency_ms is not None:
        if type(latency_ms) is not float or not 0.0 <= latency_ms < _INF:
            latency_ms = _number("latency_ms", latency_ms)
            if latency_ms < 0:
                raise InvalidRecord(f"'latency_ms' must not be negative, got {latency_ms!r}")
        rec["latency_ms"] = latency_ms
    if shadow is not False and shadow is not None:
        flag = shadow if shadow is True else _plain(shadow)  # np.bool_ too
        if flag is True:
            rec["shadow"] = True
        elif flag is not False:
            raise InvalidType(f"'shadow' must be True or False, got {type(shadow).__name__}")
    if label is not None:
        rec["label"] = _class_value("label", label)
    return rec


def late_label(model: Any, id: Any, label: Any, ts: Any) -> dict:
    """A late-label record: joined by the exporter to the prediction with the same model and id."""
    if id is None:
        raise InvalidRecord("a late label needs the 'id' of its prediction")
    if label is None:
        raise InvalidRecord("a late label needs a 'label'")
    return {"ts": _timestamp(ts), "model": _model(model), "id": _id(id), "label": _class_value("label", label)}
