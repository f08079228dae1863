"""The README's metric table is the exporter's metric list: nothing undocumented, nothing stale."""
from __future__ import annotations

import re
from pathlib import Path

from modelmon.exporter.pipeline import Exporter
from tests.exporter_helpers import T0, binary_records, make_config, multiclass_records, regression_records
from tests.test_exporter import lines, scrape

README = Path(__file__).resolve().parent.parent / "README.md"


def documented_metrics() -> set[str]:
    """Names in the first column of the README's metric table; `_x` shorthands extend `modelmon`."""
    names = set()
    for row in README.read_text().splitlines():
        if not row.startswith("| `modelmon_"):
            continue
        first_cell = row.split("|")[1]
        for name in re.findall(r"`([a-z0-9_]+)`", first_cell):
            names.add(name if name.startswith("modelmon_") else "modelmon" + name)
    return names


def exported_metrics() -> set[str]:
    ex = Exporter(make_config(exporter={"multivariate": {"enabled": True}}))
    preds, late = binary_records(400, seed=90, inline_share=0.5)
    ex.ingest_lines(lines(preds + late), "file")
    ex.ingest_lines(lines(multiclass_records(300, 91, T0) + regression_records(300, 92, T0)), "file")
    ex.refresh(force=True)
    ex.run_multivariate()
    return set(re.findall(r"^# TYPE (\S+) ", scrape(ex), flags=re.M))


def test_readme_documents_exactly_the_exported_metrics():
    documented, exported = documented_metrics(), exported_metrics()
    assert exported - documented == set(), "exported but not in the README's metric table"
    assert documented - exported == set(), "in the README's metric table but not exported"
