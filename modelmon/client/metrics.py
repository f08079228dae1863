"""The client's counts as Prometheus metrics, in the model service's own registry.

One collector per registry sums every logger attached to it, so two loggers in one process do not
collide on the metric names; a closed logger's final counts stay in the sums (counters never go
down). Values are read from `stats()` at scrape time: nothing is added to the log() path.
Imported only when a registry is given, so `import modelmon.client` does not load prometheus_client.
"""
from __future__ import annotations

import threading
import weakref

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

OUTCOMES = ("queued", "sent", "dropped", "failed", "invalid")
_collectors: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


class ClientCollector:
    def __init__(self) -> None:
        self._loggers: "weakref.WeakSet" = weakref.WeakSet()
        self._retired = dict.fromkeys(OUTCOMES, 0)
        self._lock = threading.Lock()

    def add(self, logger) -> None:
        with self._lock:
            self._loggers.add(logger)

    def retire(self, logger) -> None:
        """Fold a closed logger's final counts into the sums and stop reading it."""
        with self._lock:
            if logger in self._loggers:
                self._loggers.discard(logger)
                stats = logger.stats()
                for k in OUTCOMES:
                    self._retired[k] += stats[k]

    def collect(self):
        with self._lock:
            totals = dict(self._retired)
            queue = 0
            for logger in list(self._loggers):
                stats = logger.stats()
                for k in OUTCOMES:
                    totals[k] += stats[k]
                queue += logger.queue_length()
        records = CounterMetricFamily(
            "modelmon_client_records", "Records by outcome in the modelmon client: queued by log()/label(), "
            "then sent or failed; dropped (queue full or logger closed) and invalid (refused at the call site) "
            "were never queued.", labels=["outcome"])
        for k in OUTCOMES:
            records.add_metric([k], totals[k])
        yield records
        yield GaugeMetricFamily("modelmon_client_queue_size", "Records waiting in the modelmon client's queue.",
                                value=queue)


def attach(registry, logger) -> ClientCollector:
    """The registry's collector (registered on first use), with `logger` added to it."""
    with _lock:
        collector = _collectors.get(registry)
        if collector is None:
            collector = _collectors[registry] = ClientCollector()
            registry.register(collector)
        collector.add(logger)
    return collector
