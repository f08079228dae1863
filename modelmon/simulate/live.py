"""Live mode: write records in real time, one line at a time, until the timeline or duration ends.

Traffic slot i happens at start + i / rate (wall clock); each tick writes the slots that are due
and the pending labels whose time has come, so a tailing exporter sees a steady, ordered stream.
"""
from __future__ import annotations

import math
import time
from typing import IO, Callable

import numpy as np
import orjson

from modelmon.simulate.scenarios import Timeline
from modelmon.simulate.simulator import Simulator

TICK_SECONDS = 0.1


def run_live(sim: Simulator, timeline: Timeline, out: IO[bytes], rate: float, *,
             duration: float | None = None, clock: Callable[[], float] = time.time,
             sleep: Callable[[float], None] = time.sleep, stop: Callable[[], bool] = lambda: False) -> int:
    """Write until the (non-looping) timeline or ``duration`` seconds end, ``stop()`` says so,
    or Ctrl-C. Returns the number of lines written. Labels not yet due at the end are dropped."""
    sim.prepare(name for name, _ in timeline.phases)  # train candidate versions before the clock starts
    t0 = clock()
    start_ms = round(t0 * 1000)
    stream = sim.stream(start_ms / 1000)
    limit = timeline.total
    if duration is not None:
        within = math.ceil(duration * rate)  # slots strictly before t0 + duration
        limit = within if limit is None else min(limit, within)
    end = None if limit is None else t0 + (duration if duration is not None else limit / rate)
    next_slot = written = 0
    try:
        while not stop():
            now = clock()
            due = math.floor((now - t0) * rate) + 1
            hi = due if limit is None else min(due, limit)
            for name, lo, seg_end in timeline.segments(next_slot, hi):
                slots = np.arange(lo, seg_end)
                written += _write(out, stream.emit(name, start_ms + np.round(slots * 1000 / rate).astype(np.int64)))
            next_slot = max(next_slot, hi)
            written += _write(out, stream.due_labels(now * 1000))
            if end is not None and now >= end:
                break
            sleep(max(0.0, min(TICK_SECONDS, (end if end is not None else math.inf) - clock())))
    except KeyboardInterrupt:  # Ctrl-C is the normal way to end an endless run
        pass
    return written


def _write(out: IO[bytes], records: list[dict]) -> int:
    """One write and flush per line: a reader never sees half a record."""
    for rec in records:
        out.write(orjson.dumps(rec) + b"\n")
        out.flush()
    return len(records)
