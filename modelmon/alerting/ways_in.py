"""Alerts on the ways in besides the log file: the Redis Stream source and KServe's inference logger.

No model label: like the exporter's own alerts they go to the default receiver. Their series are
always exposed (empty) by every exporter, so these rules match nothing until a source fills them.

- ModelmonStreamDown: a stream source that cannot reach Redis (``modelmon_stream_up == 0``). An
  exporter that is gone takes its ``modelmon_stream_up`` with it: ModelmonExporterDown covers that.
- ModelmonStreamLagHigh: the consumer group's undelivered entries. Lag is a property of the group,
  the same on every member (replica), so it is read ``max by (stream, group)``, never summed.
- ModelmonKServeUnmatched: the share of request/response halves that never met their other half,
  summed over every replica (behind a load balancer the two halves of one ``ce-id`` can land on
  different replicas, which shows here).
"""
from __future__ import annotations

from modelmon.alerting.alerts import DASHBOARD_SELF, EXPORTER, INPUT, Alert
from modelmon.alerting.options import RuleOptions
from modelmon.alerting.policy import Policy
from modelmon.promql import number, seconds

STREAM_DOWN, STREAM_LAG_HIGH, KSERVE_UNMATCHED = "ModelmonStreamDown", "ModelmonStreamLagHigh", "ModelmonKServeUnmatched"


def ways_in_alerts(policy: Policy, options: RuleOptions) -> list[Alert]:
    w = policy.ways_in
    min_requests = options.min_requests or policy.min_requests

    # Families as for the exporter's own alerts: a source that cannot read, or reads late, is the
    # monitor going blind (exporter); halves that never join are input lost before the metrics (input).
    def alert(name: str, expr: str, family: str, summary: str, description: str) -> Alert:
        p = policy.alert(name)
        return Alert(name=name, expr=expr, severity=p.severity or "warning", pending=options.pending(name, p.pending),
                     family=family, summary=summary, description=description, dashboard=DASHBOARD_SELF,
                     keep_firing_for=options.keep(p.keep_firing_for))

    down = "modelmon_stream_up == 0"
    lag = f"max by (stream, group) (modelmon_stream_lag_entries) > {w.stream_lag_entries}"
    kw = w.kserve_window
    events = f"sum by (inference_service) (rate(modelmon_kserve_events_total[{kw}]))"
    unmatched = (f"sum by (inference_service) (rate(modelmon_kserve_unmatched_total[{kw}]))\n/\n{events}\n"
                 f"> {number(w.kserve_unmatched_ratio)}\nand on (inference_service)\n"
                 f"{events} * {seconds(kw)} >= {min_requests}")
    stream = "stream {{ $labels.stream }} (group {{ $labels.group }})"
    return [
        alert(STREAM_DOWN, down, EXPORTER, "The stream source cannot reach Redis",
              f"The exporter {{{{ $labels.instance }}}} cannot read {stream} from Redis: no record of that "
              f"stream reaches modelmon, and producers writing to the same Redis are failing too."),
        alert(STREAM_LAG_HIGH, lag, EXPORTER, "A stream's consumer group is falling behind",
              f"{{{{ $value | printf \"%.0f\" }}}} entries of {stream} are not yet delivered to the group "
              f"(more than {w.stream_lag_entries}): every metric of the models it feeds is late, and a "
              f"capped stream (MAXLEN) drops entries before they are read."),
        alert(KSERVE_UNMATCHED, unmatched, INPUT, "KServe request and response events are not joined",
              f"{{{{ $value | humanizePercentage }}}} of the KServe events of InferenceService "
              f"{{{{ $labels.inference_service }}}} over the last {kw} left the join buffer without their "
              f"other half (more than {number(w.kserve_unmatched_ratio * 100)}%): those predictions are "
              f"missing from every metric."),
    ]
