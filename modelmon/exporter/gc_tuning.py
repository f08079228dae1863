"""Cyclic garbage-collector settings for the exporter process (`modelmon serve` and the benchmarks).

Ingest allocates many short-lived containers per batch (the per-record lists of ids, versions and
values, the join buffer's entries) while the process holds a large long-lived heap (windows with
object arrays of category values, the join buffer, the references). With CPython's defaults a
young collection runs every 700 net allocations and a full one every 100 young ones, and every
full collection traverses that whole heap again, element by element for object arrays: measured
as about a third of the apply step of ingest at a 200k-entry join buffer (benchmarks/ingest.py).
Almost nothing the exporter allocates forms reference cycles, so collecting ~70x less often
costs little memory; the references and everything loaded before serving are frozen out of the
collector's sight for good.
"""
from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000  # net allocations between young collections (CPython's default: 700)


def tune() -> None:
    """Collect rarely, and never traverse what exists now again (call once everything long-lived is loaded)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
