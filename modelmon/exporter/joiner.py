"""Join late labels to their predictions by (model, id), within a TTL and a memory bound.

Predictions that may still get a label wait here. An entry leaves when its label arrives,
when it is older than the TTL (event time of the newest record seen), or when the buffer is
full (oldest first). Every way of leaving is counted; nothing disappears silently.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, NamedTuple


class Pending(NamedTuple):
    """A prediction waiting for its label. A tuple, not a class instance: a tuple of strings and
    numbers is untracked by the cyclic garbage collector, and the buffer holds up to
    `join_buffer_max` of them -- as tracked objects they made every full collection scan them all,
    which cost ingest 3 us per waiting prediction (benchmarks/ingest.py)."""

    model: str
    version: str
    ts: float
    prediction: Any
    score: Any  # binary: float score; multiclass: scores map; regression: None


class LabelJoiner:
    def __init__(self, ttl_seconds: float, max_entries: int,
                 on_expired: Callable[[str, str, int], None]):
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._on_expired = on_expired  # (model, reason, count)
        # Insertion order approximates event-time order, so expiry pops from the front.
        self._pending: OrderedDict[tuple[str, str], Pending] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, model: str, rid: str, entry: Pending) -> None:
        key = (model, rid)
        if key in self._pending:
            # A re-sent id replaces the earlier prediction: the label answers the latest one.
            del self._pending[key]
            self._on_expired(model, "replaced", 1)
        self._pending[key] = entry
        self._evict()

    def add_many(self, model: str, rids: list[str], entries: list[Pending]) -> None:
        """`add` for a batch: the same entries end up waiting and the same ones are counted as
        replaced or evicted (the oldest first), with one eviction pass for the batch."""
        pending = self._pending
        replaced = 0
        for rid, entry in zip(rids, entries):
            key = (model, rid)
            if key in pending:
                del pending[key]
                replaced += 1
            pending[key] = entry
        if replaced:
            self._on_expired(model, "replaced", replaced)
        self._evict()

    def items(self):
        """((model, id), entry) pairs, oldest first."""
        return self._pending.items()

    def snapshot(self) -> tuple[list, list]:
        """Keys and entries, oldest first, as two lists: ~3 ms at 200k entries, for the checkpoint's
        cut under the exporter lock.

        Read from the plain-dict storage under the OrderedDict (``dict.keys``/``dict.values``), which
        iterates without the ordered dict's per-step lookups or a tuple per entry: ``list(items())``
        took 50-250 ms at 200k entries on the 2-core dev box (half of it garbage collection
        triggered by the 200k tuples). The order is the same: this class only appends new keys,
        deletes, and pops the oldest, never reorders (no ``move_to_end``), so the dict's insertion
        order is the OrderedDict's (tests/test_checkpoint.py checks it)."""
        return list(dict.keys(self._pending)), list(dict.values(self._pending))

    def restore(self, model: str, rid: str, entry: Pending) -> None:
        """Put back an entry a checkpoint saved (oldest first), still within the memory bound."""
        self._pending[(model, rid)] = entry
        self._evict()

    def _evict(self) -> None:
        while len(self._pending) > self.max_entries:
            (old_model, _), _ = self._pending.popitem(last=False)
            self._on_expired(old_model, "buffer_full", 1)

    def take(self, model: str, rid: str) -> Pending | None:
        return self._pending.pop((model, rid), None)

    def take_many(self, model: str, rids: list[str]) -> list[Pending | None]:
        pop = self._pending.pop
        return [pop((model, rid), None) for rid in rids]

    def expire(self, now: float) -> None:
        """Drop predictions whose label can no longer arrive within the TTL."""
        cutoff = now - self.ttl
        counts: dict[str, int] = {}
        while self._pending:
            key, entry = next(iter(self._pending.items()))
            if entry.ts >= cutoff:
                break
            self._pending.popitem(last=False)
            counts[key[0]] = counts.get(key[0], 0) + 1
        for model, n in counts.items():
            self._on_expired(model, "ttl", n)
