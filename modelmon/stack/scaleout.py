"""Prometheus configs for the scale-out topology: edge servers that scrape exporter replicas and
remote-write, and a central server that receives every replica's series and runs the rules.

    exporter replica 1 ─┐                                   ┌──────────────────────────────┐
    exporter replica 2 ─┼─ scrape ─ edge Prometheus (a) ─┐  │ central Prometheus           │
                        │                                ├─►│ --web.enable-remote-write-   │
    exporter replica 3 ─┴─ scrape ─ edge Prometheus (b) ─┘  │ receiver; modelmon's rules   │──► Alertmanager
                                                            └──────────────────────────────┘

The rules sum the additive families (counters, histograms) ``by (model, ...)``, so they must run
where every replica's series meet: the central server (or Thanos Ruler / Mimir ruler). An edge
server runs no modelmon rules: rules evaluated there would see only its own replicas and
remote-write half-truths under the same recorded names. Each edge server stamps its series
with an external label (``cluster``), so the central store keeps one series per replica and the
rules' ``sum by`` adds them. Two edge servers scraping the *same* exporters (an HA pair) must
carry a replica label that the store deduplicates on (Thanos ``--query.replica-label``, Mimir's
HA tracker ``__replica__``); a plain Prometheus receiver does not deduplicate, so send it one
copy only. See README "Scale out".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from modelmon.contract import EXPORTER_JOB

REMOTE_WRITE_PATH = "/api/v1/write"  # the receiver's endpoint (Prometheus, VictoriaMetrics, Mimir push)


@dataclass(frozen=True)
class RemoteWriteOptions:
    """How fast an edge server ships samples. Prometheus' defaults (5 s batch deadline) suit
    production; tests shorten them so the central server sees a scrape within about a second."""

    batch_send_deadline: str = "5s"
    min_backoff: str = "30ms"
    max_backoff: str = "5s"


def edge_prometheus_config(*, cluster: str, exporters: Sequence[str], remote_write_url: str,
                           scrape_interval: str = "15s", replica: str | None = None,
                           remote_write: RemoteWriteOptions = RemoteWriteOptions()) -> dict:
    """An edge server: scrape ``exporters`` (host:port) as the modelmon job and remote-write
    everything to ``remote_write_url``. ``cluster`` tells this server's series apart at the
    centre; ``replica`` names this member of an HA pair (the label a deduplicating store drops)."""
    external = {"cluster": cluster}
    if replica is not None:
        external["replica"] = replica
    return {
        "global": {"scrape_interval": scrape_interval, "external_labels": external},
        "scrape_configs": [{"job_name": EXPORTER_JOB, "static_configs": [{"targets": list(exporters)}]}],
        "remote_write": [{
            "url": remote_write_url,
            "queue_config": {"batch_send_deadline": remote_write.batch_send_deadline,
                             "min_backoff": remote_write.min_backoff, "max_backoff": remote_write.max_backoff},
        }],
    }


def central_prometheus_config(*, rule_files: Sequence[str], alertmanagers: Sequence[str] = (),
                              evaluation_interval: str = "15s") -> dict:
    """The central server: started with ``--web.enable-remote-write-receiver``, it scrapes
    nothing of modelmon's itself and evaluates the generated rules over every replica's series."""
    config: dict = {"global": {"evaluation_interval": evaluation_interval}, "rule_files": list(rule_files)}
    if alertmanagers:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]}
    return config
