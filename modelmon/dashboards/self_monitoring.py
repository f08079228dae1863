"""modelmon itself: is the exporter keeping up with the log, and is its input healthy?"""
from __future__ import annotations

import re
from typing import Any

from modelmon.contract import SELF_UID
from modelmon.dashboards import thresholds as th
from modelmon.dashboards.base import build_dashboard, factory
from modelmon.dashboards.panels import Cell, PanelFactory, Query
from modelmon.generation import GenerationContext
from modelmon.promql import Regex, rate, selector

RATE = "$__rate_interval"
# Prometheus' own jobs in modelmon's prometheus.yml, shown beside the exporters in "Targets up".
STACK_JOBS = ("prometheus", "alertmanager")


def _ingest_row(f: PanelFactory) -> list[Cell]:
    return [
        f.timeseries(
            "Lines by parser",
            "Log lines parsed by the columnar fast path and per line. Rejects, multiclass records, small "
            "batches and batches that mix JSON types for one field (say `ts` as a string and as a number) go "
            "per line, several times slower: a large per-line share on clean traffic points at the producer.",
            [Query(f"sum by (parser) ({rate(f.sel('modelmon_ingest_lines_parsed_total'), RATE)})",
                   legend="{{parser}}")],
            unit="reqps", stack=True, w=8),
        f.timeseries(
            "Rejected records by reason",
            "Lines skipped as invalid (bad JSON, missing field, unknown model...). The exporter never stops "
            "on bad input, so this is where a broken producer shows up.",
            [Query(f"sum by (reason) ({rate(f.sel('modelmon_records_rejected_total'), RATE)})", legend="{{reason}}")],
            unit="reqps", bars=True, w=8, empty_until="the log contains an invalid record"),
        f.timeseries(
            "Log lag",
            "Bytes written to the prediction log that the exporter has not read yet. Growing lag means "
            "parsing cannot keep up with the writer.",
            [Query(f"sum by (instance) ({f.sel('modelmon_log_lag_bytes')})", legend="{{instance}}")],
            unit="bytes", w=8),
    ]


STREAM_EMPTY = "a stream source runs (modelmon serve --stream)"
KSERVE_EMPTY = "KServe's inference logger posts to /ingest"


def _ways_in_row(f: PanelFactory) -> list[Cell]:
    """The four ways in (file, POST /ingest, KServe, Redis Stream): how much comes by each, and the
    health of the two that have their own machinery (the consumer group, the request/response join).
    Lag and pending are properties of the consumer group, equal on every member: max, never sum."""
    return [
        f.timeseries(
            "Records ingested by source",
            "Records per second the exporters accepted, by way in: the tailed log (file), POST /ingest (http), "
            "KServe's inference logger (kserve) and a Redis Stream (stream).",
            [Query(f"sum by (source) ({rate(f.sel('modelmon_records_ingested_total'), RATE)})", legend="{{source}}")],
            unit="reqps", w=8),
        f.timeseries(
            "Stream lag and pending",
            "Entries of each stream not yet delivered to its consumer group (lag), and delivered to a member "
            "but not acknowledged (pending: a dead member's stay until claimed). Group properties, the same "
            "on every replica: the maximum over them. Lag that keeps growing: ModelmonStreamLagHigh.",
            [Query(f"max by (stream, group) ({f.sel('modelmon_stream_lag_entries')})", legend="{{stream}}/{{group}} lag"),
             Query(f"max by (stream, group) ({f.sel('modelmon_stream_pending_entries')})",
                   legend="{{stream}}/{{group}} pending")],
            unit="short", w=8, empty_until=STREAM_EMPTY),
        f.timeseries(
            "Stream entries acknowledged by member",
            "Entries per second each member acknowledged after applying them, pending entries it took over "
            "(its own after a restart, an idle member's), and failed Redis calls by operation (each retried).",
            [Query(f"sum by (instance) ({rate(f.sel('modelmon_stream_acked_total'), RATE)})",
                   legend="{{instance}} acked"),
             Query(f"sum by (instance, owner) ({rate(f.sel('modelmon_stream_claimed_total'), RATE)})",
                   legend="{{instance}} claimed ({{owner}})"),
             Query(f"sum by (instance, operation) ({rate(f.sel('modelmon_stream_errors_total'), RATE)})",
                   legend="{{instance}} {{operation}} errors")],
            unit="reqps", w=8, empty_until=STREAM_EMPTY),
        f.stat(
            "Stream source up",
            "1 while an exporter's stream source reaches Redis, 0 while it retries (ModelmonStreamDown "
            "pages after 5 minutes of 0).",
            [Query(f"min by (instance, stream, group) ({f.sel('modelmon_stream_up')})",
                   legend="{{instance}} {{stream}}/{{group}}")],
            unit="short", steps=[th.step(th.RED, None), th.step(th.GREEN, 1)], w=8, h=8, empty_until=STREAM_EMPTY),
        f.timeseries(
            "KServe events by InferenceService",
            "CloudEvents per second from KServe's inference logger, by InferenceService and half (request, "
            "response); each joined pair becomes one prediction record per instance.",
            [Query(f"sum by (inference_service, type) ({rate(f.sel('modelmon_kserve_events_total'), RATE)})",
                   legend="{{inference_service}} {{type}}")],
            unit="reqps", w=8, empty_until=KSERVE_EMPTY),
        f.timeseries(
            "KServe halves unmatched or refused",
            "Halves that left the join buffer without their other half, by reason (ttl, buffer_full, "
            "duplicate; ModelmonKServeUnmatched), and events refused before the join (bad_event, "
            "unknown_service, bad_body). Each is a prediction missing from the metrics.",
            [Query(f"sum by (inference_service, reason) ({rate(f.sel('modelmon_kserve_unmatched_total'), RATE)})",
                   legend="{{inference_service}} unmatched ({{reason}})"),
             Query(f"sum by (reason) ({rate(f.sel('modelmon_kserve_events_rejected_total'), RATE)})",
                   legend="refused ({{reason}})")],
            unit="reqps", bars=True, w=8, empty_until="a KServe event is unmatched or refused"),
    ]


def _freshness_row(f: PanelFactory) -> list[Cell]:
    return [
        f.timeseries(
            "Age of the newest record",
            "Now minus the event time of each model's newest record. A model whose line climbs has stopped "
            "logging (or its producer's clock is off).",
            [Query(f"time() - max by (model) ({f.sel('modelmon_last_record_timestamp_seconds')})", legend="{{model}}")],
            unit="s", w=8),
        f.timeseries(
            "Join losses by model",
            "Labels that found no prediction and predictions dropped before their label (ttl, full buffer).",
            [Query(f"sum by (model) ({rate(f.sel('modelmon_labels_unmatched_total'), RATE)})",
                   legend="{{model}} unmatched labels"),
             Query(f"sum by (model, reason) ({rate(f.sel('modelmon_predictions_expired_total'), RATE)})",
                   legend="{{model}} expired ({{reason}})")],
            unit="reqps", w=8, empty_until="a label cannot be joined or a prediction expires"),
        f.timeseries(
            "Cardinality overflow",
            "Label values folded into __other__ because a model exceeded its budget (versions, classes, "
            "categories). Non-zero: raise the budget in modelmon.yaml or fix the producer.",
            [Query(f"sum by (model, label) ({rate(f.sel('modelmon_cardinality_overflow_total'), RATE)})",
                   legend="{{model}} {{label}}")],
            unit="reqps", w=8, empty_until="a label exceeds its cardinality budget"),
    ]


def _faults_row(f: PanelFactory) -> list[Cell]:
    return [
        f.timeseries(
            "Failed passes by model",
            "Ingest, refresh (quality, drift) or multivariate passes of one model that raised. The other "
            "models go on; a model that keeps failing has frozen or missing metrics (ModelmonRefreshFailing).",
            [Query(f"sum by (model, stage) ({rate(f.sel('modelmon_refresh_errors_total'), RATE)})",
                   legend="{{model}} {{stage}}")],
            unit="short", bars=True, w=12, empty_until="a model's pass fails"),
        f.timeseries(
            "State write failures by file",
            "Failed writes of the offset, checkpoint or frozen-reference files (disk full, read-only volume). "
            "Ingest goes on; a restart would re-read or lose state (ModelmonStateWriteFailing).",
            [Query(f"sum by (instance, file) ({rate(f.sel('modelmon_state_write_errors_total'), RATE)})",
                   legend="{{instance}} {{file}}")],
            unit="short", bars=True, w=12, empty_until="a state file cannot be written"),
    ]


# The performance target for the exporter lock (issue 12): no refresh, checkpoint or exposition holds it longer.
LOCK_HOLD_TARGET_SECONDS = 0.01


def _costs_row(f: PanelFactory) -> list[Cell]:
    def quantile(q: float, metric: str, by: str) -> str:
        return f"histogram_quantile({q}, sum by ({by}, le) ({rate(f.sel(metric + '_bucket'), RATE)}))"

    return [
        f.timeseries(
            "Refresh duration by model",
            "Wall time of each model's last refresh (quality and drift recomputed from its windows), held "
            "under the exporter lock that ingest and /metrics also need. A refresh longer than the refresh "
            "interval (1 s by default) means windows too large for the machine.",
            [Query(f"max by (model) ({f.sel('modelmon_refresh_duration_seconds')})", legend="{{model}}")],
            unit="s", w=6),
        f.timeseries(
            "Ingest batch duration by source",
            "Median and 99th percentile of one ingest call (parse, wait for the lock, apply a batch) from "
            "the tailed file or POST /ingest. A source without traffic has no line.",
            [Query(quantile(q, "modelmon_ingest_batch_duration_seconds", "source"),
                   legend=f"{{{{source}}}} p{int(q * 100)}") for q in (0.5, 0.99)],
            unit="s", w=6),
        f.timeseries(
            "Lock hold p99 by operation",
            "99th percentile of how long one ingest, refresh (all models), checkpoint or /metrics render held "
            "the exporter lock, while everything else waited. Dashed red: the 10 ms target. The checkpoint "
            "has a line only while checkpoints are written (--checkpoint, records arriving).",
            [Query(quantile(0.99, "modelmon_lock_hold_seconds", "operation"), legend="{{operation}}")],
            unit="s", steps=[th.step(th.GREEN, None), th.step(th.RED, LOCK_HOLD_TARGET_SECONDS)], w=6),
        f.timeseries(
            "Lock held, share of time",
            "Share of wall time each exporter held its lock, by operation (rate of the hold histogram's sum). "
            "Near 1 in total, ingest and scrapes queue behind the lock.",
            [Query(f"sum by (instance, operation) ({rate(f.sel('modelmon_lock_hold_seconds_sum'), RATE)})",
                   legend="{{instance}} {{operation}}")],
            unit="percentunit", stack=True, w=6),
    ]


def _scrape_row(f: PanelFactory) -> list[Cell]:
    return [
        f.timeseries(
            "Scrape duration",
            "How long Prometheus takes to scrape each exporter. Scrapes only read state, so this should "
            "stay far below the scrape interval.",
            [Query(f.sel("scrape_duration_seconds"), legend="{{instance}}")], unit="s", w=8),
        f.timeseries(
            "Samples per scrape",
            "Series each exporter exposes. A jump means a new label value set (version, feature, class).",
            [Query(f.sel("scrape_samples_scraped"), legend="{{instance}}")], unit="short", w=8),
        f.stat(
            "Targets up",
            "1 when Prometheus reached the target at its last scrape: exporters, Prometheus, Alertmanager.",
            [Query(selector("up", job=Regex("|".join(re.escape(j) for j in (f.job, *STACK_JOBS)))),
                   legend="{{job}} {{instance}}")],
            unit="short", steps=[th.step(th.RED, None), th.step(th.GREEN, 1)], w=8, h=8),
        f.stat(
            "Log rotations",
            "Times the exporter followed a rotated or truncated log during the dashboard's time range.",
            [Query(f"sum(increase({f.sel('modelmon_log_rotations_total')}[$__range])) or vector(0)")],
            unit="short", color_mode="value", w=4, h=6),
        f.stat(
            "Checkpoint age",
            "Seconds since each exporter's saved windows and pending label joins were last current "
            "(checked every 60 s, written when records arrived, and at shutdown). "
            "Orange after 5 minutes, red after 15: "
            "a restart now would start with empty windows (see ModelmonStateWriteFailing).",
            [Query(f"time() - max by (instance) ({f.sel('modelmon_checkpoint_last_success_timestamp_seconds')})",
                   legend="{{instance}}")],
            unit="s", steps=[th.step(th.GREEN, None), th.step(th.ORANGE, 300), th.step(th.RED, 900)],
            w=4, h=6,
            empty_until="the first checkpoint, a minute after records arrive (never without --log or --checkpoint)"),
        f.table(
            "Exporter build",
            "modelmon version each exporter instance runs.",
            [Query(f.sel("modelmon_build_info"), instant=True, format="table")],
            transformations=[{"id": "organize", "options": {
                "excludeByName": {"Time": True, "Value": True, "__name__": True}, "indexByName": {},
                "renameByName": {}}}],
            w=4, h=6),
        f.table(
            "Firing alerts without a model",
            "Firing alerts about the pipeline itself (exporter down, log stalled, rejected records).",
            [Query(selector("ALERTS", alertstate="firing", model=""), instant=True, format="table")],
            transformations=[{"id": "organize", "options": {
                "excludeByName": {"Time": True, "Value": True, "__name__": True, "alertstate": True},
                "indexByName": {}, "renameByName": {}}}],
            w=12, h=6, empty_until="a pipeline alert fires"),
    ]


def build(ctx: GenerationContext) -> dict[str, Any]:
    config = ctx.config
    f = factory(config)
    sections = [
        ("Ingest", _ingest_row(f)),
        ("Ways in", _ways_in_row(f)),
        ("Freshness and joins", _freshness_row(f)),
        ("Faults", _faults_row(f)),
        ("Exporter costs", _costs_row(f)),
        ("Scrapes", _scrape_row(f)),
    ]
    return build_dashboard(
        config, uid=SELF_UID, title="modelmon · modelmon itself", kind="self",
        description="Health of the monitoring pipeline: ingest, rejected input, log lag, the ways in (file, HTTP, "
                    "KServe, Redis Stream), joins, the exporter's own costs, scrapes.",
        sections=sections, variables=[], annotation_expr=selector("ALERTS", alertstate="firing", model=""))
