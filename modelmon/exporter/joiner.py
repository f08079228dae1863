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
    """Predictions waiting for their label, by (model, request id).

    Every prediction of a request waits: the served one and each shadow (or other) version with the
    same id, so one label evaluates them all on the same outcome. A request's entry is one
    `Pending`, or a tuple of them once a second version arrives (the common single-version case
    stays one object). A re-sent prediction of the same version and id replaces the earlier one
    (counted `replaced`) and moves the request to the end, as if it were new; another version of a
    waiting request joins it where it is. `max_entries` and every count are in predictions.
    """

    def __init__(self, ttl_seconds: float, max_entries: int,
                 on_expired: Callable[[str, str, int], None]):
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._on_expired = on_expired  # (model, reason, count)
        # Insertion order approximates event-time order, so expiry pops from the front.
        self._pending: OrderedDict[tuple[str, str], Pending | tuple[Pending, ...]] = OrderedDict()
        self._count = 0  # predictions waiting (a request with k versions holds k)

    def __len__(self) -> int:
        return self._count

    def add(self, model: str, rid: str, entry: Pending) -> None:
        self.add_many(model, [rid], [entry])

    def add_many(self, model: str, rids: list[str], entries: list[Pending]) -> None:
        """Add predictions of `model`; one eviction pass for the batch (the oldest first)."""
        pending = self._pending
        replaced = 0
        for rid, entry in zip(rids, entries):
            key = (model, rid)
            old = pending.get(key)
            if old is None:
                pending[key] = entry
                self._count += 1
            elif type(old) is Pending:
                if old.version == entry.version:  # a re-send: the label answers the latest one
                    del pending[key]
                    pending[key] = entry
                    replaced += 1
                else:
                    pending[key] = (old, entry)
                    self._count += 1
            else:
                others = tuple(p for p in old if p.version != entry.version)
                if len(others) < len(old):
                    del pending[key]
                    pending[key] = (*others, entry)
                    replaced += 1
                else:
                    pending[key] = (*old, entry)
                    self._count += 1
        if replaced:
            self._on_expired(model, "replaced", replaced)
        self._evict()

    def items(self):
        """((model, id), entry) pairs, oldest request first, one pair per waiting prediction."""
        for key, value in self._pending.items():
            if type(value) is Pending:
                yield key, value
            else:
                for entry in value:
                    yield key, entry

    def snapshot(self) -> tuple[list, list]:
        """Keys and entries as two aligned lists, one pair per waiting prediction in `items()`
        order: ~3 ms at 200k entries, for the checkpoint's cut under the exporter lock.

        Read from the plain-dict storage under the OrderedDict (``dict.keys``/``dict.values``), which
        iterates without the ordered dict's per-step lookups or a tuple per entry: ``list(items())``
        took 50-250 ms at 200k entries on the 2-core dev box (half of it garbage collection
        triggered by the 200k tuples). The order is the same: this class only appends new keys,
        deletes, pops the oldest and replaces values in place, never reorders (no ``move_to_end``),
        so the dict's insertion order is the OrderedDict's (tests/test_checkpoint.py checks it)."""
        keys, values = list(dict.keys(self._pending)), list(dict.values(self._pending))
        if self._count == len(keys):  # one version per request: nothing to flatten
            return keys, values
        flat_keys, flat = [], []
        for key, value in zip(keys, values):
            if type(value) is Pending:
                flat_keys.append(key)
                flat.append(value)
            else:
                flat_keys.extend([key] * len(value))
                flat.extend(value)
        return flat_keys, flat

    def restore(self, model: str, rid: str, entry: Pending) -> None:
        """Put back an entry a checkpoint saved (`items()` order), still within the memory bound."""
        key = (model, rid)
        old = self._pending.get(key)
        if old is None:
            self._pending[key] = entry
        else:
            self._pending[key] = (old, entry) if type(old) is Pending else (*old, entry)
        self._count += 1
        self._evict()

    def _evict(self) -> None:
        while self._count > self.max_entries:
            (old_model, _), value = self._pending.popitem(last=False)
            n = 1 if type(value) is Pending else len(value)
            self._count -= n
            self._on_expired(old_model, "buffer_full", n)

    def take(self, model: str, rid: str) -> list[Pending]:
        """Every waiting prediction of the request (empty when none waits)."""
        return self.take_many(model, [rid])[0]

    def take_many(self, model: str, rids: list[str]) -> list[list[Pending]]:
        pop = self._pending.pop
        out = []
        for rid in rids:
            value = pop((model, rid), None)
            if value is None:
                out.append([])
            elif type(value) is Pending:
                self._count -= 1
                out.append([value])
            else:
                self._count -= len(value)
                out.append(list(value))
        return out

    def expire(self, now: float) -> None:
        """Drop predictions whose label can no longer arrive within the TTL (a request goes when its
        first prediction is too old: the versions of one request are logged together)."""
        cutoff = now - self.ttl
        counts: dict[str, int] = {}
        while self._pending:
            key, value = next(iter(self._pending.items()))
            first = value if type(value) is Pending else value[0]
            if first.ts >= cutoff:
                break
            self._pending.popitem(last=False)
            n = 1 if type(value) is Pending else len(value)
            self._count -= n
            counts[key[0]] = counts.get(key[0], 0) + n
        for model, n in counts.items():
            self._on_expired(model, "ttl", n)
