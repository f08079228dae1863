"""Exact exporter-lock holds for the benchmarks (the exporter's own histogram only has buckets)."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def recording_holds(ex) -> Iterator[list[float]]:
    """While active, every hold of `ex`'s lock through `Exporter.held` is appended (seconds) to the
    yielded list; the exporter's own accounting goes on as usual."""
    holds: list[float] = []
    held = ex.held

    @contextmanager
    def timed(operation):
        with held(operation):
            t0 = time.perf_counter()
            try:
                yield
            finally:
                holds.append(time.perf_counter() - t0)

    ex.held = timed
    try:
        yield holds
    finally:
        ex.held = held
