"""Recording rules (`level:metric:operation`) that alerts and dashboards reuse.

Per model: request and error rates, latency quantiles from the histogram, labels joined, the
version comparison ratios, and (modelmon.alerting.additive) quality and drift from the additive
counters over every window of ``recording.windows``, summed over exporter replicas. Ratios whose
numerator may not exist yet (no error ever seen) use ``(numerator or denominator * 0)`` so they
read 0, not "no data".
"""
from __future__ import annotations

from modelmon.alerting.policy import Policy
from modelmon.alerting.additive import additive_recording_rules
from modelmon.config import ModelConfig, RecordingConfig, parse_duration
from modelmon.promql import Regex, le_regex, match, rate, selector

PREDICTIONS = "modelmon_predictions_total"
LATENCY_BUCKETS = "modelmon_prediction_latency_seconds_bucket"
LATENCY_QUANTILES = (0.5, 0.9, 0.99)


def predictions_rate(level: str, window: str) -> str:
    return f"{level}:modelmon_predictions:rate{window}"


def error_ratio(level: str, window: str) -> str:
    return f"{level}:modelmon_prediction_errors:ratio_rate{window}"


def latency_quantile(level: str, q: float, window: str) -> str:
    return f"{level}:modelmon_prediction_latency_seconds:p{round(q * 100)}_{window}"


def slow_ratio(level: str, window: str) -> str:
    """Share of predictions slower than the model's latency SLO (the latency SLI's bad events)."""
    return f"{level}:modelmon_prediction_latency_seconds:slow_ratio_rate{window}"


def labels_rate(window: str) -> str:
    return f"model:modelmon_labels:rate{window}"


# Version comparison (shadow, canary, A/B): counters of predictions paired by request id with the
# baseline version's, and the gauges of the exporter's significance test per (version, baseline).
VERSION_PAIRS = "modelmon_version_pairs_total"
VERSION_AGREEMENTS = "modelmon_version_agreements_total"
VERSION_ABS_DIFFERENCE = "modelmon_version_abs_difference_total"
VERSION_DELTA = "modelmon_version_quality_delta"
VERSION_PVALUE = "modelmon_version_quality_pvalue"
VERSION_SAMPLES = "modelmon_version_comparison_samples"
COMPARISON_LABELS = "model, version, baseline"


def shadow_agreement_ratio(window: str) -> str:
    """Share of paired predictions on which a version predicts the baseline's class."""
    return f"model_version:modelmon_shadow_agreement_ratio:{window}"


def shadow_prediction_difference(window: str) -> str:
    """Mean absolute difference between a version's and the baseline's paired predictions."""
    return f"model_version:modelmon_shadow_prediction_difference:{window}"


RECORDS_RATE = "job:modelmon_records:rate{window}"
REJECTED_RATIO = "job:modelmon_records_rejected:ratio_rate{window}"

_LEVEL_LABELS = {"model": "model", "model_version": "model, version"}


def _windows(*windows: str) -> list[str]:
    return sorted(set(windows), key=parse_duration)


def _rate(metric: str, window: str, *matchers: str, **labels: str) -> str:
    return rate(selector(metric, *matchers, **labels), window)


def _record(name: str, expr: str) -> dict[str, str]:
    return {"record": name, "expr": expr}


def model_recording_rules(m: ModelConfig, policy: Policy, rate_window: str,
                          recording: RecordingConfig = RecordingConfig()) -> list[dict[str, str]]:
    name = m.name
    rules: list[dict[str, str]] = []

    prediction_windows = [rate_window, policy.labels_window]
    error_windows = [rate_window]
    if m.slo.availability is not None:
        prediction_windows += policy.burn_durations
        error_windows += policy.burn_durations
    for level in ("model_version", "model"):
        by = _LEVEL_LABELS[level]
        windows = _windows(*prediction_windows) if level == "model" else [rate_window]
        for w in windows:
            rules.append(_record(predictions_rate(level, w),
                                 f"sum by ({by}) ({_rate(PREDICTIONS, w, model=name)})"))
    for level in ("model_version", "model"):
        by = _LEVEL_LABELS[level]
        windows = _windows(*error_windows) if level == "model" else [rate_window]
        for w in windows:
            errors = f"sum by ({by}) ({_rate(PREDICTIONS, w, model=name, status='error')})"
            total = f"sum by ({by}) ({_rate(PREDICTIONS, w, model=name)})"
            rules.append(_record(error_ratio(level, w), f"(\n  {errors}\n  or\n  {total} * 0\n)\n/\n{total}"))
    slo = m.slo.latency_p99_seconds
    if slo is not None:  # the latency SLI over every burn window: requests slower than the SLO bound
        for w in policy.burn_durations:
            fast = f"sum by (model) ({_rate(LATENCY_BUCKETS, w, model=name, le=le_regex(slo))})"
            total = f"sum by (model) ({_rate('modelmon_prediction_latency_seconds_count', w, model=name)})"
            rules.append(_record(slow_ratio("model", w), f"1 - {fast}\n/\n{total}"))
    for level in ("model_version", "model"):
        by = _LEVEL_LABELS[level]
        for q in LATENCY_QUANTILES:
            buckets = f"sum by ({by}, le) ({_rate(LATENCY_BUCKETS, rate_window, model=name)})"
            rules.append(_record(latency_quantile(level, q, rate_window), f"histogram_quantile({q}, {buckets})"))

    w = policy.labels_window
    joined = f"sum by (model) ({_rate('modelmon_labels_total', w, model=name)})"
    fallback = f"sum by (model) ({_rate(PREDICTIONS, w, model=name)}) * 0"
    rules.append(_record(labels_rate(w), f"{joined}\nor\n{fallback}"))

    rules.extend(_comparison_rules(m, policy))
    rules.extend(additive_recording_rules(m, recording.windows))
    return rules


def _comparison_rules(m: ModelConfig, policy: Policy) -> list[dict[str, str]]:
    """Agreement (classification) or mean absolute prediction difference (regression) of each
    version with its baseline over every `rollout.windows` window, from counters summed over
    exporter replicas: a ratio of sums adds up where a per-process gauge would not. No pair in
    the window reads as no data, not as 0% agreement."""
    out = []
    for w in policy.rollout.windows:
        pairs = f"sum by ({COMPARISON_LABELS}) ({rate(selector(VERSION_PAIRS, model=m.name), w, 'increase')})"
        if m.is_classification:
            agreed = rate(selector(VERSION_AGREEMENTS, model=m.name), w, "increase")
            # Agreements may not exist yet while pairs do (no agreement at all): read 0, not nothing.
            out.append(_record(shadow_agreement_ratio(w),
                               f"(\n  sum by ({COMPARISON_LABELS}) ({agreed})\n  or\n  {pairs} * 0\n)\n/\n"
                               f"({pairs} > 0)"))
        else:
            diff = rate(selector(VERSION_ABS_DIFFERENCE, model=m.name), w, "increase")
            out.append(_record(shadow_prediction_difference(w),
                               f"sum by ({COMPARISON_LABELS}) ({diff})\n/\n({pairs} > 0)"))
    return out


def exporter_recording_rules(rate_window: str) -> list[dict[str, str]]:
    w = rate_window
    records = RECORDS_RATE.format(window=w)
    read = Regex("modelmon_records_ingested_total|modelmon_records_rejected_total")
    total = f"sum by (job) ({rate(selector('', match('__name__', read)), w)})"
    rejected = f"sum by (job) ({rate('modelmon_records_rejected_total', w)})"
    return [
        _record(records, total),
        _record(REJECTED_RATIO.format(window=w), f"(\n  {rejected}\n  or\n  {records} * 0\n)\n/\n{records}"),
    ]
