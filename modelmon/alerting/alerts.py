"""Alert rules: what to page or ticket on, per model from its thresholds and SLOs, and for the exporter.

Every alert carries `severity` (critical pages, warning tickets, info is routed nowhere),
`family` (critical inhibits warning/info of the same model and family), `team` when it belongs
to a model, a static `summary`, a `description` templated with the value and model/version,
a `runbook_url` anchor in alerting/RUNBOOK.md and a `dashboard_url`.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from modelmon import contract
from modelmon.alerting import recording as rec
from modelmon.alerting.options import RuleOptions
from modelmon.alerting.policy import Policy
from modelmon.alerting import additive
from modelmon.config import AlertingConfig, ModelConfig, RecordingConfig, Threshold, format_duration, parse_duration
from modelmon.contract import EXPORTER_JOB, QUANTITIES, ROLLOUT_UID
from modelmon.generation import burns
from modelmon.promql import number, seconds, selector

# Grafana dashboard uids (modelmon.contract); alerts link to the one that explains them.
DASHBOARD_DRIFT = contract.DRIFT_UID
DASHBOARD_SERVICE = contract.SERVICE_UID
DASHBOARD_SELF = contract.SELF_UID

# Families: the unit of inhibition (a critical alert silences warning and info of its family).
QUALITY, DRIFT, LATENCY, AVAILABILITY, TRAFFIC, LABELS, CARDINALITY, VERSIONS, EXPORTER, INPUT, ESTIMATION = (
    "quality", "drift", "latency", "availability", "traffic", "labels", "cardinality", "versions",
    "exporter", "input", "estimation")
# Families whose alerts a dead exporter causes; ModelmonExporterDown/Absent inhibit them.
CAUSED_BY_EXPORTER = (TRAFFIC, LABELS)


def camel(key: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in key.split("_"))


def threshold_alert_name(key: str, direction: str) -> str:
    prefix = "Feature" if QUANTITIES[key].per_feature else ""
    return f"Modelmon{prefix}{camel(key)}{'Low' if direction == 'below' else 'High'}"


def estimated_alert_name(key: str) -> str:
    """``ModelmonEstimatedAccuracyLow``, ``ModelmonEstimatedMaeHigh``: estimated quality past its threshold."""
    return f"ModelmonEstimated{camel(key)}{'Low' if QUANTITIES[key].direction == 'below' else 'High'}"


ESTIMATE_DISAGREES = "ModelmonEstimateDisagrees"
# policy.yml key of the ModelmonEstimated<Quantity>Low/High alerts (one entry for all quantities).
ESTIMATED_POLICY = "estimated"
# How many standard errors realized and estimated quality may differ on the same labelled
# predictions before the estimator's assumptions count as broken (ModelmonEstimateDisagrees).
DISAGREEMENT_SE = 3


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    severity: str
    pending: str
    family: str
    summary: str
    description: str
    dashboard: str
    model: ModelConfig | None = None
    extra_labels: tuple[tuple[str, str], ...] = ()  # tell apart rules of one alert, e.g. burn windows
    keep_firing_for: str | None = None  # hysteresis (policy.yml)

    def render(self, alerting: AlertingConfig) -> dict:
        labels = {"severity": self.severity}
        if self.model is not None:
            labels["team"] = self.model.team
        labels["family"] = self.family
        labels.update(self.extra_labels)
        dashboard_url = f"{alerting.dashboard_url}/d/{self.dashboard}"
        if self.model is not None:
            dashboard_url += f"?var-model={self.model.name}"
        rule = {"alert": self.name, "expr": self.expr, "for": self.pending}
        if self.keep_firing_for:
            rule["keep_firing_for"] = self.keep_firing_for
        return {
            **rule,
            "labels": labels,
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": f"{alerting.runbook_url}#{self.name.lower()}",
                "dashboard_url": dashboard_url,
            },
        }


def _value(stage: str) -> str:
    return "{{ $value | " + stage + " }}" if stage else "{{ $value }}"


_MODEL = "{{ $labels.model }}"
_INTEGER = _value('printf "%.0f"')
_NUMBER = _value('printf "%.3g"')
_VERSION = "{{ $labels.version }}"
_SIGNED = _value('printf "%+.3g"')


class ModelAlerts:
    """Builds the alerts of one model."""

    def __init__(self, m: ModelConfig, policy: Policy, options: RuleOptions,
                 recording: RecordingConfig = RecordingConfig()):
        self.m = m
        self.window = recording.alert_window  # recorded quality and drift are read over this window
        self.policy = policy
        self.options = options
        self.sel = {"model": m.name}
        self.model_dashboard = contract.model_uid(m.task)  # the model detail of its task
        self.min_requests = options.min_requests or policy.min_requests

    def all(self) -> list[Alert]:
        alerts: list[Alert] = []
        for key, threshold in self.m.thresholds.items():
            alerts.extend(self.threshold(key, threshold))
        alerts.extend(self.latency())
        alerts.extend(self.error_budget())
        alerts.extend(self.traffic())
        alerts.extend(self.versions())
        alerts.extend(self.estimation())
        return alerts

    def _alert(self, name: str, expr: str, *, severity: str | None = None, policy_key: str | None = None,
               family: str, summary: str, description: str, dashboard: str) -> Alert:
        p = self.policy.alert(policy_key or name)
        return Alert(name=name, expr=expr, severity=severity or p.severity or "warning",
                     pending=self.options.pending(name, p.pending), family=family, summary=summary,
                     description=description, dashboard=dashboard, model=self.m,
                     keep_firing_for=self.options.keep(p.keep_firing_for))

    def _requests_in(self, window: str) -> str:
        rate = selector(rec.predictions_rate("model", window), **self.sel)
        return f"{rate} * {seconds(window)} >= {self.min_requests}"

    # ---------------------------------------------------------------- thresholds (quality, drift)

    def threshold(self, key: str, t: Threshold) -> list[Alert]:
        q = QUANTITIES[key]  # the metric contract: which metric, its title and value format, its tasks
        if not q.applies_to(self.m.task):
            raise ValueError(f"model {self.m.name}: the exporter never computes {key} for a {self.m.task} model")
        op = "<" if t.direction == "below" else ">"
        side = "below" if t.direction == "below" else "above"
        name = threshold_alert_name(key, t.direction)
        out = []
        recorded = q.is_recorded(self.m.task)
        for severity, limit in (("warning", t.warning), ("critical", t.critical)):
            if limit is None:
                continue
            value = number(limit)
            if recorded:
                expr, description = self._recorded_threshold(q, op, value, side, severity)
            else:
                expr, description = self._gauge_threshold(q, op, value, side, severity)
            if q.kind == "quality":
                family, dashboard = QUALITY, self.model_dashboard
                summary = f"Model quality ({q.title}) is {side} its threshold"
            elif q.per_feature:
                family, dashboard = DRIFT, DASHBOARD_DRIFT
                summary = f"Input features drifted ({q.title} {side} threshold)"
            else:
                family, dashboard = DRIFT, DASHBOARD_DRIFT
                summary = f"{q.title} is {side} its threshold"
            out.append(self._alert(name, expr, severity=severity, policy_key=q.kind, family=family,
                                   summary=summary, description=description, dashboard=dashboard))
        return out

    def _drifting_features(self, series: str, op: str, value: str) -> str:
        """A Go template naming the features of ``series`` beyond ``value`` (a raw-string query)."""
        drifting = f"{series} {op} {value}"
        return ("{{ range $i, $s := query `" + drifting + "` | sortByLabel \"feature\" }}"
                "{{ if $i }}, {{ end }}{{ $s.Labels.feature }} ({{ $s.Value | printf \"%.3g\" }})"
                "{{ end }}")

    def _recorded_threshold(self, q, op: str, value: str, side: str, severity: str) -> tuple[str, str]:
        """A quantity with an additive form: its recorded series over the alert window, summed over
        every exporter replica, guarded by the labelled predictions (quality) or the records
        (drift) the same window holds."""
        w = self.window
        series = selector(q.recorded(w), **self.sel)
        over = f"over the last {w} (all exporter replicas"
        if q.kind == "quality":
            guard = f"{selector(additive.labeled_predictions(w), **self.sel)} >= {self.m.min_labeled}"
            expr = f"{series} {op} {value}\nand on (model, version)\n{guard}"
            return expr, (f"{q.title} of model {_MODEL} version {_VERSION} is {_value(q.value_format)} "
                          f"{over}, at least {self.m.min_labeled} labelled), {side} the {severity} "
                          f"threshold {value}.")
        need = self.m.min_drift_samples
        if q.per_feature:
            guard = f"{selector(additive.feature_values(w), **self.sel)} >= {need}"
            count = self.m.drift_min_features
            expr = (f"count by (model) (\n  {series} {op} {value}\n  and on (model, feature)\n  {guard}\n)"
                    f" >= {count}")
            features = self._drifting_features(series, op, value)
            return expr, (f"{_INTEGER} feature(s) of model {_MODEL} have a {q.title} {side} the {severity} "
                          f"threshold {value} {over}, at least {need} records); the alert needs at least "
                          f"{count}. Drifting: {features}.")
        guard = f"{selector(additive.prediction_values(w), **self.sel)} >= {need}"
        expr = f"{series} {op} {value}\nand on (model, version)\n{guard}"
        return expr, (f"{q.title} of model {_MODEL} version {_VERSION} is {_value(q.value_format)} {over}, "
                      f"at least {need} records), {side} the {severity} threshold {value}.")

    def _gauge_threshold(self, q, op: str, value: str, side: str, severity: str) -> tuple[str, str]:
        """A quantity without an additive form: the exporter's gauge over its own window (per
        exporter process), guarded by that window's labelled predictions or records."""
        if q.kind == "quality":
            gauge, labelled = selector(q.metric, **self.sel), selector("modelmon_window_labeled", **self.sel)
            dead = f"{selector('up', job=EXPORTER_JOB)} == 0"
            expr = (f"(\n  {gauge} {op} {value}\n  and on (model, version)\n"
                    f"  {labelled} >= {self.m.min_labeled}\n)\n"
                    # A dead exporter's gauges vanish: keep the last known verdict for up to
                    # an hour instead of a false "resolved" (ModelmonExporterDown pages meanwhile).
                    f"or\n(\n  last_over_time({gauge}[1h]) {op} {value}\n  and on (model, version)\n"
                    f"  last_over_time({labelled}[1h]) >= {self.m.min_labeled}\n"
                    f"  and on (job, instance)\n  {dead}\n)")
            return expr, (f"{q.title} of model {_MODEL} version {_VERSION} is {_value(q.value_format)} "
                          f"over its quality window ({self.m.quality_window.describe()}, at least "
                          f"{self.m.min_labeled} labelled), {side} the {severity} threshold {value}.")
        if q.per_feature:
            # Each exporter's gauge counts only with its own drift window full (a replica that just
            # started must not alert on a few records), and a feature drifting on several replicas
            # counts once.
            need = self.m.drift_min_features
            expr = (f"count by (model) (\n  group by (model, feature) (\n    {selector(q.metric, **self.sel)} {op} {value}\n"
                    f"    and on (job, instance, model)\n    {self._drift_guard()}\n  )\n) >= {need}")
            features = self._drifting_features(selector(q.metric, **self.sel), op, value)
            return expr, (f"{_INTEGER} feature(s) of model {_MODEL} have a {q.title} {side} "
                          f"the {severity} threshold {value} over the drift window "
                          f"({self.m.drift_window.describe()}); the alert needs at least {need}. "
                          f"Drifting: {features}.")
        expr = f"{selector(q.metric, **self.sel)} {op} {value}\nand on (job, instance, model)\n{self._drift_guard()}"
        return expr, (f"{q.title} of model {_MODEL} is {_value(q.value_format)} over the drift window "
                      f"({self.m.drift_window.describe()}), {side} the {severity} threshold {value}.")

    def _drift_guard(self) -> str:
        return f"{selector('modelmon_drift_window_records', **self.sel)} >= {self.m.min_drift_samples}"

    # ---------------------------------------------------------------- estimated quality (no labels yet)

    def estimation(self) -> list[Alert]:
        """Estimated quality past the model's threshold while labels are missing (a ticket), and
        estimate and realized quality disagreeing on the same labelled predictions (a ticket).

        The estimated gauges (``modelmon_estimated_<quantity>``) only exist for a model whose
        reference carries labels; until then these rules match nothing."""
        out = [a for key, t in self.m.thresholds.items() if key in contract.ESTIMATED_KEYS
               and QUANTITIES[key].applies_to(self.m.task) for a in self.estimated(key, t)]
        if any(QUANTITIES[k].applies_to(self.m.task) for k in contract.ESTIMATED_KEYS):
            out.append(self.estimate_disagrees())
        return out

    def estimated(self, key: str, t: Threshold) -> list[Alert]:
        """The estimate past the warning threshold (the critical one when there is no warning),
        while the labelled predictions over the alert window, summed over every replica, are
        fewer than min_labeled: realized quality cannot judge yet, so the estimate opens a ticket.
        Once min_labeled labels are in, the realized-quality alert (which may page) takes over."""
        q = QUANTITIES[key]
        limit = t.warning if t.warning is not None else t.critical
        if limit is None:
            return []
        op, side = ("<", "below") if t.direction == "below" else (">", "above")
        which = "warning" if t.warning is not None else "critical"
        title = q.title if q.title.split()[0].isupper() else q.title[0].lower() + q.title[1:]  # ROC AUC, F1 score
        value = number(limit)
        w = self.window
        estimate = selector(contract.estimated_name(key), **self.sel)
        labelled = selector(additive.labeled_predictions(w), **self.sel)
        # `unless`: no labelled-predictions series at all (no label ever joined) also counts as missing.
        expr = f"{estimate} {op} {value}\nunless on (model, version)\n{labelled} >= {self.m.min_labeled}"
        stderr = _instance_lookup("modelmon_estimated_stderr", key, fmt="%.2g")
        count = (f'{{{{ with printf "{additive.labeled_predictions(w)}{{model=%q, version=%q}}" $labels.model '
                 f'$labels.version | query }}}}{{{{ . | first | value | printf "%.0f" }}}}{{{{ else }}}}0{{{{ end }}}}')
        name = estimated_alert_name(key)
        p = self.policy.alert(ESTIMATED_POLICY)
        return [Alert(
            name=name, expr=expr, severity=p.severity or "warning", pending=self.options.pending(name, p.pending),
            family=ESTIMATION, dashboard=self.model_dashboard, model=self.m,
            keep_firing_for=self.options.keep(p.keep_firing_for),
            summary=f"Estimated {title} is {side} its threshold while labels are missing",
            description=(f"Estimated {title} of model {_MODEL} version {_VERSION} is {_value(q.value_format)} "
                         f"(standard error {stderr}) over its last quality window of predictions, {side} the "
                         f"{which} threshold {value}; only {count} labelled predictions over the last {w} "
                         f"(fewer than min_labeled {self.m.min_labeled}), so realized quality cannot judge yet. "
                         f"An estimate, not a measurement: it assumes the calibration on the labelled reference "
                         f"still holds (no concept drift)."))]

    def estimate_disagrees(self) -> Alert:
        """Realized minus estimated quality on the same labelled predictions beyond DISAGREEMENT_SE
        standard errors, with at least min_labeled labelled predictions in the exporter's quality
        window (the window the delta is computed on, same process): the estimator's assumptions
        broke (concept drift, a stale reference), so its estimates cannot be trusted."""
        delta = selector("modelmon_estimation_labeled_delta", **self.sel)
        se = selector("modelmon_estimation_labeled_stderr", **self.sel)
        labelled = selector("modelmon_window_labeled", **self.sel)
        k = DISAGREEMENT_SE
        expr = (f"(\n  {delta} > {k} * {se}\n  or\n  {delta} < -{k} * {se}\n)\n"
                f"and on (job, instance, model, version)\n{labelled} >= {self.m.min_labeled}")
        return self._alert(
            ESTIMATE_DISAGREES, expr, family=ESTIMATION, dashboard=self.model_dashboard,
            summary="Estimated and realized quality disagree beyond their uncertainty",
            description=(f"On the labelled predictions of model {_MODEL} version {_VERSION}, realized minus "
                         f"estimated {{{{ $labels.quantity }}}} is {_SIGNED}, more than {k} "
                         f"standard errors ({_instance_lookup('modelmon_estimation_labeled_stderr', None, fmt='%.2g')}) "
                         f"from zero, with at least {self.m.min_labeled} labelled: the estimator's assumptions "
                         f"broke (concept drift, or a reference that no longer describes the model), so the "
                         f"estimated quality of this model is not to be trusted until it is refitted."))

    # ---------------------------------------------------------------- service level

    def latency(self) -> list[Alert]:
        slo = self.m.slo.latency_p99_seconds
        if slo is None:
            return []
        w = self.options.rate_window
        expr = (f"{selector(rec.latency_quantile('model', 0.99, w), **self.sel)} > {number(slo)}\n"
                f"and on (model)\n{self._requests_in(w)}")
        p99 = self._alert(
            "ModelmonLatencyP99High", expr, family=LATENCY, dashboard=DASHBOARD_SERVICE,
            summary="Prediction latency p99 is above its SLO",
            description=(f"p99 latency of model {_MODEL} is {_value('humanizeDuration')} over the last {w}, "
                         f"above its SLO of {format_duration(slo)}."))
        return [p99, *self.latency_budget()]

    def _burn_expr(self, ratio, b, limit: Fraction) -> str:
        """Multi-window burn: the bad-event ratio (``ratio(level, window)`` names its recording rule)
        above ``limit`` over both the long and the short window, with enough requests to matter."""
        value = number(limit)
        long_ratio = selector(ratio("model", b.long), **self.sel)
        short_ratio = selector(ratio("model", b.short), **self.sel)
        return (f"{long_ratio} > {value}\nand on (model)\n{short_ratio} > {value}\n"
                f"and on (model)\n{self._requests_in(b.short)}")

    def latency_budget(self) -> list[Alert]:
        """The latency SLO as an error budget: 1% of requests may be slower than the p99 bound.
        Burned with the same multi-window policy as availability: fast burns page, slow ones ticket."""
        slo = self.m.slo.latency_p99_seconds
        budget = Fraction(1, 100)
        out = []
        for burn in burns(self.policy, self.m):
            b, factor = burn.window, burn.factor
            expr = self._burn_expr(rec.slow_ratio, b, factor * budget)
            name = "ModelmonLatencyBudgetBurn"
            out.append(Alert(
                name=name, expr=expr, severity=b.severity, pending=self.options.pending(name, b.pending),
                family=LATENCY, dashboard=DASHBOARD_SERVICE, model=self.m, extra_labels=(("window", b.long),),
                summary="Slow predictions are burning the latency error budget",
                description=(f"{_value('humanizePercentage')} of the predictions of model {_MODEL} over the last "
                             f"{b.long} (and more than {number(factor * budget * 100)}% over the last {b.short}) "
                             f"took longer than its p99 SLO of {format_duration(slo)}: {number(factor)}x the 1% "
                             f"the SLO allows.")))
        return out

    def error_budget(self) -> list[Alert]:
        availability = self.m.slo.availability
        if availability is None:
            return []
        budget = 1 - Fraction(str(availability)) / 100
        period = self.m.slo.period_days
        reference = self.policy.burn_reference_days
        out = []
        for burn in burns(self.policy, self.m):  # the same scaled factors the dashboards colour by
            b, factor = burn.window, burn.factor
            expr = self._burn_expr(rec.error_ratio, b, factor * budget)
            share = number(b.budget_share(reference) * 100)
            name = "ModelmonErrorBudgetBurn"
            alert = Alert(
                name=name, expr=expr, severity=b.severity, pending=self.options.pending(name, b.pending),
                family=AVAILABILITY, dashboard=DASHBOARD_SERVICE, model=self.m,
                extra_labels=(("window", b.long),),  # one alert per window pair, not one merged series
                summary="Prediction errors are burning the availability error budget",
                description=(f"Model {_MODEL} failed {_value('humanizePercentage')} of its predictions over the "
                             f"last {b.long} and more than {number(factor * budget * 100)}% over the last {b.short}: "
                             f"{number(factor)}x "
                             f"the error budget of its {number(availability)}% availability SLO, which spends "
                             f"{share}% of the {period}-day budget within {b.long}."))
            out.append(alert)
        return out

    def traffic(self) -> list[Alert]:
        w = self.options.rate_window
        # Per exporter instance, so that ModelmonExporterDown inhibits the traffic alert of the
        # models *it* serves, and a dead exporter (whose series go stale) raises none at all:
        # traffic that stopped, or a model the exporter watches (model_info) that never logged.
        predictions = selector(rec.PREDICTIONS, **self.sel)
        rate_now = f"sum by (job, instance, model) (rate({predictions}[{w}]))"
        watched = f"group by (job, instance, model) ({selector('modelmon_model_info', **self.sel)})"
        no_predictions = (f"{rate_now} == 0\nor\n(\n  {watched} * 0\n"
                          f"  unless on (job, instance, model)\n  {predictions}\n)")
        lw = self.policy.labels_window
        labels = (f"{selector(rec.predictions_rate('model', lw), **self.sel)} > 0\n"
                  f"and on (model)\n{selector(rec.labels_rate(lw), **self.sel)} == 0")
        stale = format_duration(parse_duration(self.policy.stale_after))
        log_stale = (f"time() - {selector('modelmon_last_record_timestamp_seconds', **self.sel)}"
                     f" > {seconds(self.policy.stale_after)}")
        ow = self.policy.overflow_window
        overflow = (f"sum by (model, label) (increase({selector('modelmon_cardinality_overflow_total', **self.sel)}"
                    f"[{ow}])) > 0")
        versions = f"count by (model) ({selector(rec.predictions_rate('model_version', w), **self.sel)} > 0) > 1"
        return [
            self._alert(
                "ModelmonNoPredictions", no_predictions, family=TRAFFIC, dashboard=DASHBOARD_SERVICE,
                summary="The model receives no predictions",
                description=(f"Model {_MODEL} logged {_NUMBER} predictions per second over the "
                             f"last {w}: traffic has stopped, or the model never logged since the exporter "
                             f"started.")),
            self._alert(
                "ModelmonLogStale", log_stale, family=TRAFFIC, dashboard=DASHBOARD_SELF,
                summary="The newest prediction record is old",
                description=(f"The newest record of model {_MODEL} is {_value('humanizeDuration')} old "
                             f"(event time); records older than {stale} mean the log is stale or delayed.")),
            self._alert(
                "ModelmonLabelsNotArriving", labels, family=LABELS, dashboard=self.model_dashboard,
                summary="Ground-truth labels stopped arriving",
                description=(f"No label was joined to a prediction of model {_MODEL} in the last {lw}, while "
                             f"predictions kept arriving ({_NUMBER} per second): quality "
                             f"metrics are frozen.")),
            self._alert(
                "ModelmonCardinalityBudgetExhausted", overflow, family=CARDINALITY, dashboard=DASHBOARD_SELF,
                summary="Label values are folded into __other__",
                description=(f"{_INTEGER} values of label {{{{ $labels.label }}}} of model "
                             f"{_MODEL} were folded into \"__other__\" in the last {ow}: its cardinality "
                             f"budget is exhausted.")),
            self._alert(
                "ModelmonMultipleVersionsServing", versions, family=VERSIONS, dashboard=self.model_dashboard,
                summary="More than one model version serves traffic",
                description=(f"Model {_MODEL} served {_INTEGER} versions at once over the last "
                             f"{w} (canary or A/B test): compare them on the model dashboard.")),
        ]

    # ---------------------------------------------------------------- version comparison

    def versions(self) -> list[Alert]:
        """A version significantly worse (ticket) or better (info) than the model's baseline.

        Built for every model: the exporter's comparison gauges only exist while a second
        version (served or shadow) has predictions to compare, so until then nothing matches.
        One alert per (version, baseline, pairing), from the task's quality quantity:
        accuracy (higher is better) or MAE (lower is better)."""
        r = self.policy.rollout
        quantity = "accuracy" if self.m.is_classification else "mae"
        title = "accuracy" if self.m.is_classification else "MAE"
        delta = selector(rec.VERSION_DELTA, **self.sel, quantity=quantity)
        pvalue = selector(rec.VERSION_PVALUE, **self.sel, quantity=quantity)
        samples = selector(rec.VERSION_SAMPLES, **self.sel)
        higher_is_better = quantity == "accuracy"
        # Accuracy deltas are differences of proportions (-4.2%); MAE deltas are in the target's unit.
        shown = "{{ $value | humanizePercentage }}" if higher_is_better else '{{ $value | printf "%+.3g" }}'
        out = []
        for name, better in (("ModelmonVersionWorse", False), ("ModelmonVersionBetter", True)):
            op = ">" if better == higher_is_better else "<"
            # The delta is the alert's value; the test's p-value and samples guard it.
            expr = (f"{delta} {op} 0\n"
                    f"and on (model, version, baseline, quantity, pairing)\n"
                    f"{pvalue} < {number(r.alpha)}\n"
                    f"and on (model, version, baseline, pairing)\n"
                    f"{samples} >= {r.min_samples}")
            word = "better" if better else "worse"
            description = (
                f"Version {_VERSION} of model {_MODEL} is {word} than baseline {{{{ $labels.baseline }}}} "
                f"on {title} ({{{{ $labels.pairing }}}}): delta {shown} (candidate minus baseline), "
                f"p = {_lookup(rec.VERSION_PVALUE, 'quantity', 'pairing', fmt='%.2g')} "
                f"over {_lookup(rec.VERSION_SAMPLES, 'pairing', fmt='%.0f')} samples "
                f"(significant below {number(r.alpha)}, with at least {r.min_samples} samples). "
                + ("Stop the rollout or roll this version back." if not better
                   else "It can be promoted once the rollout has run its planned course."))
            out.append(self._alert(
                name, expr, family=VERSIONS, dashboard=ROLLOUT_UID, description=description,
                summary=(f"A model version is significantly {word} than its baseline")))
        return out


def _lookup(metric: str, *labels: str, fmt: str) -> str:
    """Go template reading ``metric`` for the alert's model, version, baseline and ``labels``
    (the first series when several exporter replicas report it), printed with ``fmt``."""
    names = ("model", "version", "baseline", *labels)
    matchers = ", ".join(f"{n}=%q" for n in names)
    args = " ".join(f"$labels.{n}" for n in names)
    return (f'{{{{ with printf "{metric}{{{matchers}}}" {args} | query }}}}'
            f'{{{{ . | first | value | printf "{fmt}" }}}}{{{{ end }}}}')


def _instance_lookup(metric: str, quantity: str | None, *, fmt: str) -> str:
    """Go template reading ``metric`` of the alert's exporter (job, instance), model, version and
    quantity (``quantity`` given: that value; None: the alert's own ``quantity`` label)."""
    names = ("job", "instance", "model", "version", "quantity")
    matchers = ", ".join(f"{n}=%q" for n in names)
    args = " ".join(f"$labels.{n}" for n in names[:-1]) + (f' "{quantity}"' if quantity else " $labels.quantity")
    return (f'{{{{ with printf "{metric}{{{matchers}}}" {args} | query }}}}'
            f'{{{{ . | first | value | printf "{fmt}" }}}}{{{{ end }}}}')


def exporter_alerts(policy: Policy, options: RuleOptions) -> list[Alert]:
    """Alerts about modelmon itself: no model label, routed to the default receiver."""
    w = options.rate_window
    min_requests = options.min_requests or policy.min_requests
    up = selector("up", job=EXPORTER_JOB)
    rejected = (f"{rec.REJECTED_RATIO.format(window=w)} > {number(policy.max_rejected_ratio)}\n"
                f"and on (job)\n{rec.RECORDS_RATE.format(window=w)} * {seconds(w)} >= {min_requests}")

    sw = policy.state_write_window
    state_write = (f"sum by (job, instance, file) (increase(modelmon_state_write_errors_total[{sw}])) "
                   f">= {policy.state_write_failures}")
    rw = policy.refresh_error_window
    refresh = f"sum by (job, instance, model, stage) (increase(modelmon_refresh_errors_total[{rw}])) > 0"

    def alert(name: str, expr: str, family: str, summary: str, description: str) -> Alert:
        p = policy.alert(name)
        return Alert(name=name, expr=expr, severity=p.severity or "warning", pending=options.pending(name, p.pending),
                     family=family, summary=summary, description=description, dashboard=DASHBOARD_SELF)

    return [
        alert("ModelmonExporterDown", f"{up} == 0", EXPORTER, "The modelmon exporter cannot be scraped",
              "Prometheus failed to scrape the modelmon exporter at {{ $labels.instance }}: every model's "
              "metrics are frozen and model alerts cannot fire."),
        alert("ModelmonExporterAbsent", f"absent({up})", EXPORTER, "No modelmon exporter is being scraped",
              f"Prometheus has no target for job \"{EXPORTER_JOB}\": the exporter is missing from its "
              f"scrape configuration or service discovery."),
        alert("ModelmonRecordsRejected", rejected, INPUT, "Prediction records are rejected as bad input",
              f"{{{{ $value | humanizePercentage }}}} of the records read by {{{{ $labels.job }}}} over the last "
              f"{w} were rejected as bad input (more than {number(policy.max_rejected_ratio * 100)}%)."),
        alert("ModelmonStateWriteFailing", state_write, EXPORTER, "The exporter cannot save its state",
              f"{{{{ $labels.instance }}}} failed to write its {{{{ $labels.file }}}} state file "
              f"{{{{ $value | printf \"%.0f\" }}}} times in the last {sw}: a restart now would re-read or lose "
              f"log lines (offset), empty the windows and pending joins (checkpoint) or forget frozen "
              f"references (references)."),
        alert("ModelmonRefreshFailing", refresh, EXPORTER, "The exporter keeps failing on one model",
              f"The {{{{ $labels.stage }}}} pass of model {{{{ $labels.model }}}} on {{{{ $labels.instance }}}} "
              f"failed {{{{ $value | printf \"%.0f\" }}}} times in the last {rw}: that model's metrics are "
              f"frozen or missing and its alerts cannot fire (the other models are unaffected)."),
    ]
