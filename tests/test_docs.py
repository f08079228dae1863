"""The README's metric table is the contract's: regenerated from modelmon.contract and compared.

Run `MODELMON_UPDATE_DOCS=1 pytest tests/test_docs.py` after changing the contract to rewrite the
table (only the table rows under `## Metrics`; the prose around it is left alone).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from modelmon.contract import README_TABLE_HEADER, SERIES, readme_table

README = Path(__file__).resolve().parent.parent / "README.md"


def metrics_table_span(text: str) -> tuple[int, int]:
    """(start, end) offsets of the metric table: its header line under `## Metrics` through its last row."""
    section = text.index("\n## Metrics\n")
    start = text.index(README_TABLE_HEADER[0] + "\n", section)
    end = start
    for line in text[start:].splitlines(keepends=True):
        if not line.startswith("|"):
            break
        end += len(line)
    return start, end


def documented_metrics() -> set[str]:
    """Names in the first column of the README's metric table."""
    text = README.read_text()
    start, end = metrics_table_span(text)
    names = set()
    for row in text[start:end].splitlines()[2:]:
        names.update(re.findall(r"`([a-z0-9_]+)`", row.split("|")[1]))
    return names


def test_readme_metric_table_is_generated_from_the_contract():
    text = README.read_text()
    start, end = metrics_table_span(text)
    expected = readme_table()
    if os.environ.get("MODELMON_UPDATE_DOCS") and text[start:end] != expected:
        README.write_text(text[:start] + expected + text[end:])
        text = README.read_text()
        start, end = metrics_table_span(text)
    assert text[start:end] == expected, (
        "README.md's metric table differs from modelmon.contract: run "
        "`MODELMON_UPDATE_DOCS=1 .venv/bin/python -m pytest tests/test_docs.py`")


def test_readme_documents_every_series_once():
    assert documented_metrics() == {s.name for s in SERIES}
