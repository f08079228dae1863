"""Files the simulator writes besides the log: reference CSVs and a matching modelmon.yaml."""
from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import orjson
import yaml

from modelmon.simulate.spec import Columns, ModelSpec

CONFIG_HEADER = ("# modelmon.yaml written by `modelmon simulate --config-out`: the models it simulates,\n"
                 "# with reference data it wrote from their stable distribution.\n")


def encode_lines(records: Iterable[dict]) -> bytes:
    """JSON Lines, one record a line (keys in insertion order, so the bytes are deterministic)."""
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def _significant(x: float, digits: int = 4) -> str:
    """A float with about ``digits`` significant digits and never an exponent: 5123.4 -> '5123'."""
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    text = f"{x:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def reference_csv(spec: ModelSpec, cols: Columns, outputs: list[dict] | None = None,
                  labels: list[Any] | None = None) -> str:
    """Feature rows as CSV: the config's feature order, categorical values as text.

    With ``outputs`` (the model's predictions on these rows) a ``prediction`` column, for a
    binary model a ``score`` column and for a multiclass model one ``score_<class>`` column per
    class (in the config's class order) follow: the exporter's reference for prediction drift and
    for calibrating its estimators. With ``labels`` (the true label of each row) a ``label``
    column comes last: reference quality and the fit of estimated performance.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    output_names = [k for k in ("prediction", "score") if outputs and k in outputs[0]]
    class_scores = list(outputs[0]["scores"]) if outputs and "scores" in outputs[0] else []
    writer.writerow([*spec.feature_names, *output_names, *(f"score_{c}" for c in class_scores),
                     *(["label"] if labels is not None else [])])
    cells: list[list[str]] = []
    for f in spec.numeric:
        values = cols[f.name].tolist()
        cells.append([str(int(v)) for v in values] if f.decimals == 0 else [_significant(v) for v in values])
    for c in spec.categorical:
        cells.append([c.values[k] for k in cols[c.name].tolist()])
    for name in output_names:
        cells.append([v if isinstance(v, str) else _significant(float(v)) for v in (o[name] for o in outputs)])
    for c in class_scores:
        cells.append([_significant(float(o["scores"][c])) for o in outputs])
    if labels is not None:
        cells.append([_cell(v) for v in labels])
    writer.writerows(zip(*cells))
    return buf.getvalue()


def _cell(value: Any) -> str:
    """A label as a CSV cell: class names and integer classes as they are, numbers in full."""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def model_entry(spec: ModelSpec, reference: Any) -> dict[str, Any]:
    """One ``models[]`` entry of modelmon.yaml."""
    entry: dict[str, Any] = {"name": spec.name, "task": spec.task}
    if spec.task == "binary":
        entry["positive_class"] = spec.positive_class
    elif spec.task == "multiclass":
        entry["classes"] = list(spec.classes)
    entry["features"] = {"numeric": list(spec.numeric_names), "categorical": list(spec.categorical_names)}
    entry["reference"] = reference
    entry.update(_plain(spec.config))
    return entry


def _plain(value: Any) -> Any:
    """Mappings and tuples as plain dicts and lists, so YAML has no Python tags."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def config_yaml(specs: Iterable[ModelSpec], references: Mapping[str, Any]) -> str:
    """A complete modelmon.yaml for these models; alerts go to the local modelmon receiver."""
    specs = list(specs)
    teams = sorted({str(s.config.get("team", "default")) for s in specs})
    inbox = "modelmon-inbox"
    doc = {
        "models": [model_entry(s, references[s.name]) for s in specs],
        "alerting": {
            "default_receiver": inbox,
            "receivers": [{"name": inbox, "webhook": {"url": "http://127.0.0.1:9095/webhook", "send_resolved": True}}],
            "teams": {t: {"critical": [inbox], "warning": [inbox]} for t in teams},
        },
    }
    return CONFIG_HEADER + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=120)


def relative_reference(config_path: Path, reference_path: Path) -> str:
    """A reference path as modelmon.yaml should hold it: relative to the config's folder."""
    return Path(os.path.relpath(reference_path.resolve(), config_path.resolve().parent)).as_posix()
