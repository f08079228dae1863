"""References frozen from traffic survive a restart.

`reference: {first: N}` freezes the first N records, and a reference file without the model's
outputs makes the exporter freeze the first predictions as the output reference. Re-freezing
after a restart would take whatever traffic comes then, perhaps already drifted, as the new
normal and hide the drift. So the frozen rows are written once, as JSON Lines, and read back at
start. Delete a model's file to take a new baseline.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import orjson

from modelmon.config import ModelConfig
from modelmon.exporter.reference import ReferenceDataError, load_reference
from modelmon.files import write_atomically

log = logging.getLogger("modelmon.reference_store")
PREDICTION = "prediction"


class ReferenceStore:
    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def path(self, model: str) -> Path:
        return self.directory / f"{model}.jsonl"

    def save(self, model: ModelConfig, features: dict[str, np.ndarray] | None, prediction: np.ndarray) -> None:
        """Write the frozen rows atomically: features (when frozen from traffic) and model outputs."""
        columns = {**(features or {}), PREDICTION: prediction}
        names = list(columns)
        values = [[_plain(v) for v in columns[n].tolist()] for n in names]
        body = b"".join(orjson.dumps(dict(zip(names, row))) + b"\n" for row in zip(*values))
        self._make_directory()
        write_atomically(self.path(model.name), body)
        log.info("model %s: frozen reference saved to %s", model.name, self.path(model.name))

    def _make_directory(self) -> None:
        """Create the store's own directory, never a missing tree above it.

        The store is modelmon's directory (by default ``LOG.modelmon-references/`` beside the log),
        so creating it is expected; a missing parent means a mistyped path, which must fail
        visibly (the caller counts it in ``modelmon_state_write_errors_total{file="references"}``).
        """
        try:
            self.directory.mkdir(exist_ok=True)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{self.directory}: its parent directory {self.directory.parent} does not exist "
                "(it is not created automatically)") from None

    def load(self, model: ModelConfig, with_features: bool) -> tuple[dict[str, np.ndarray] | None, np.ndarray] | None:
        """(features or None, outputs) saved earlier, or None when there is nothing usable."""
        path = self.path(model.name)
        if not path.exists():
            return None
        numeric = list(model.numeric_features) if with_features else []
        categorical = list(model.categorical_features) if with_features else []
        if model.task == "multiclass":
            categorical.append(PREDICTION)
        else:
            numeric.append(PREDICTION)
        try:
            cols = load_reference(path, numeric, categorical)
        except ReferenceDataError as e:  # the config changed since: collect a new baseline
            log.warning("model %s: ignoring saved reference (%s); freezing a new one from traffic", model.name, e)
            return None
        features = {f: cols[f] for f in model.features} if with_features else None
        return features, cols[PREDICTION]


def _plain(v):
    """JSON-ready value: NaN (a missing numeric value) becomes null."""
    return None if isinstance(v, float) and math.isnan(v) else v
