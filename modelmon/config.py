"""modelmon.yaml: load, validate, and expose as typed objects.

One file drives everything (exporter, rules, Alertmanager config, dashboards), so every
consumer reads the same dataclasses. Validation collects errors with their key path
(``models[1].thresholds.accuracy.warning: expected a number``) and raises them together.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Tasks and the thresholdable quantities (which task has which, and their direction) come
# from the metric contract, like everything else that names a metric.
from modelmon.contract import EXPORTER_JOB, QUANTITIES, TASKS

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.-]*$")


class ConfigError(ValueError):
    """Raised with every problem found, one per line, each prefixed by its key path."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("invalid config:\n  " + "\n  ".join(errors))


def parse_duration(text: str | int | float) -> float:
    """'90s', '5m', '6h', '7d' -> seconds. Bare numbers are seconds."""
    if isinstance(text, bool):
        raise ValueError(f"expected a duration like '5m', got {text!r}")
    if isinstance(text, (int, float)):
        return float(text)
    m = _DURATION_RE.match(str(text).strip())
    if not m:
        raise ValueError(f"expected a duration like '90s', '5m', '6h' or '7d', got {text!r}")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def format_duration(seconds: float) -> str:
    """Seconds -> the shortest Prometheus duration string ('1h', '90s')."""
    for unit in ("w", "d", "h", "m", "s"):
        size = _DURATION_UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds * 1000)}ms"


@dataclass(frozen=True)
class Window:
    """A sliding window: the last ``count`` records, or the last ``seconds`` of event time."""

    count: int | None = None
    seconds: float | None = None

    @property
    def is_time(self) -> bool:
        return self.seconds is not None

    def describe(self) -> str:
        return f"{self.count} records" if self.count is not None else format_duration(self.seconds or 0)


@dataclass(frozen=True)
class Threshold:
    warning: float | None
    critical: float | None
    direction: str  # "above" or "below"


@dataclass(frozen=True)
class Reference:
    """Reference data: a file of feature rows, or the first N records of the log."""

    path: Path | None = None
    first: int | None = None


@dataclass(frozen=True)
class SLO:
    latency_p99_seconds: float | None = None
    availability: float | None = None  # percent, e.g. 99.9
    period_days: int = 30


@dataclass(frozen=True)
class KServeBinding:
    """How KServe inference-logger events of one InferenceService become this model's records
    (exporter/kserve.py). ``features``: the model feature at each position of a positional instance
    (v1 list, or a v2 tensor of shape [n, k]); None skips that position. ``prediction``/``score``:
    the v2 output tensor (or the key of a v1 prediction object) holding the predicted value / the
    score or class probabilities; None: the single output (v1: the prediction element itself).
    ``classes``: the class order of a probability vector. ``version_from``: where the version comes
    from, tried in order (``model_version`` of a v2 response, ``endpoint`` = ce-endpoint), then
    ``version``; none of them: the record has no version (``unknown``)."""

    inference_service: str
    features: tuple[str | None, ...]
    namespace: str | None = None  # events of another namespace do not match
    component: str | None = None  # e.g. predictor: events of other components do not match
    input: str | None = None  # v2: the tensor holding positional features (None: the only non-feature input)
    prediction: str | None = None
    score: str | None = None
    classes: tuple[Any, ...] | None = None
    version_from: tuple[str, ...] = ("model_version", "endpoint")
    version: str | None = None


KSERVE_VERSION_SOURCES = ("model_version", "endpoint")


@dataclass(frozen=True)
class ModelConfig:
    name: str
    task: str
    numeric_features: tuple[str, ...]
    categorical_features: tuple[str, ...]
    reference: Reference
    quality_window: Window
    drift_window: Window
    thresholds: dict[str, Threshold]
    slo: SLO
    team: str
    positive_class: Any = 1
    classes: tuple[Any, ...] | None = None  # multiclass: known classes (else learned, bounded)
    min_labeled: int = 100  # quality alerts need at least this many labelled predictions
    drift_min_features: int = 1  # feature-drift alert fires when this many features drift
    min_drift_samples: int = 200  # drift gauges are exported once the window holds this many
    # The version other versions are compared with; None: the served version with the most traffic
    baseline_version: str | None = None
    kserve: KServeBinding | None = None  # records from KServe's inference logger (exporter/kserve.py)

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric_features + self.categorical_features

    @property
    def is_classification(self) -> bool:
        return self.task in ("binary", "multiclass")


@dataclass(frozen=True)
class ExporterConfig:
    label_ttl_seconds: float = 7 * 86400
    join_buffer_max: int = 200_000  # pending predictions awaiting a label, across models
    max_versions_per_model: int = 10
    max_classes: int = 50
    top_k_categories: int = 20
    reference_sample_max: int = 20_000  # raw reference values kept per feature (KS test)
    multivariate_interval_seconds: float = 60.0
    multivariate_sample_size: int = 2000
    multivariate_enabled: bool = True
    estimation_enabled: bool = True  # estimated performance (needs a labelled reference)
    estimation_interval_seconds: float | None = None  # None: the multivariate interval
    # Event-time guard: a record stamped further ahead of the exporter's wall clock than this is
    # refused (`bad_timestamp`), so no single record can move the join or window clocks.
    max_clock_skew_seconds: float = 300.0
    max_event_age_seconds: float | None = None  # older records refused too; None: no age limit
    # Cardinality: label values (version, class) longer than this are shortened (prefix + hash);
    # a version or learned class unseen for `label_idle_seconds` gives its budget slot back.
    max_label_value_length: int = 128
    label_idle_seconds: float = 86400.0
    # KServe's inference logger: request and response events wait for their other half this long
    # (exporter wall clock, from arrival), at most this many halves and this many body bytes.
    kserve_join_ttl_seconds: float = 300.0
    kserve_join_buffer_max: int = 10_000
    kserve_join_buffer_max_bytes: int = 64 << 20


@dataclass(frozen=True)
class Receiver:
    name: str
    kind: str  # webhook | email | slack | pagerduty
    settings: dict[str, Any]


@dataclass(frozen=True)
class TeamRoute:
    team: str
    critical: tuple[str, ...]
    warning: tuple[str, ...]


@dataclass(frozen=True)
class AlertingConfig:
    receivers: tuple[Receiver, ...]
    default_receiver: str
    teams: dict[str, TeamRoute]
    runbook_url: str
    dashboard_url: str
    group_wait: str = "30s"
    group_interval: str = "1m"  # resolve notifications within about a minute of Prometheus resolving
    repeat_interval: str = "4h"


@dataclass(frozen=True)
class GrafanaConfig:
    url: str = "http://localhost:3000"
    datasource_uid: str = "modelmon-prometheus"
    folder: str = "modelmon"
    # The Prometheus job that scrapes the exporters: every dashboard query on an exporter series
    # selects it (`job="..."`), so one Prometheus can hold several modelmon deployments.
    job: str = EXPORTER_JOB


@dataclass(frozen=True)
class RecordingConfig:
    """Windows of the recording rules that compute quality and drift from the additive counters
    (summed over every exporter replica): each additive quantity is recorded over every window
    (`model_version:modelmon_accuracy_ratio:1h`), and alerts and dashboards read `alert_window`."""

    windows: tuple[str, ...] = ("1h", "1d")
    alert_window: str = "1h"


@dataclass(frozen=True)
class KubernetesConfig:
    """What `modelmon generate` writes under kubernetes/: the exporter's workload and the
    prometheus-operator and Grafana-sidecar resources carrying the generated rules and dashboards."""

    namespace: str = "monitoring"
    image: str = "ghcr.io/modelmon/modelmon:latest"
    log_path: str = "/var/log/modelmon/predictions.jsonl"  # inside the pod: the shared log volume's file
    log_claim: str = "modelmon-predictions"  # PersistentVolumeClaim holding the prediction log (shared with the model)
    state_size: str = "1Gi"  # the state volume (offsets, checkpoints, frozen references)
    cpu_request: str = "500m"
    memory_request: str = "512Mi"
    cpu_limit: str = "2"
    memory_limit: str = "2Gi"
    rule_labels: dict[str, str] = field(default_factory=lambda: {"release": "prometheus"})  # the operator's ruleSelector
    monitor_labels: dict[str, str] = field(default_factory=lambda: {"release": "prometheus"})  # serviceMonitorSelector
    dashboard_label: str = "grafana_dashboard"  # the Grafana sidecar's label (value "1")


@dataclass(frozen=True)
class Config:
    models: tuple[ModelConfig, ...]
    exporter: ExporterConfig
    alerting: AlertingConfig
    grafana: GrafanaConfig
    path: Path | None = None
    recording: RecordingConfig = field(default_factory=RecordingConfig)
    kubernetes: KubernetesConfig = field(default_factory=KubernetesConfig)

    def model(self, name: str) -> ModelConfig:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)


# --------------------------------------------------------------------------- validation


class _Validator:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def err(self, path: str, msg: str) -> None:
        self.errors.append(f"{path}: {msg}")

    def boolean(self, value: Any, path: str) -> bool | None:
        if not isinstance(value, bool):
            self.err(path, f"expected true or false, got {value!r}")
            return None
        return value

    def mapping(self, value: Any, path: str, allowed: set[str]) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.err(path, f"expected a mapping, got {type(value).__name__}")
            return {}
        for key in value:
            if key not in allowed:
                self.err(f"{path}.{key}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
        return value

    def number(self, value: Any, path: str, *, lo: float | None = None, hi: float | None = None,
               integer: bool = False) -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.err(path, f"expected {'an integer' if integer else 'a number'}, got {value!r}")
            return None
        if integer and not float(value).is_integer():
            self.err(path, f"expected an integer, got {value!r}")
            return None
        if lo is not None and value < lo:
            self.err(path, f"must be >= {lo}, got {value!r}")
            return None
        if hi is not None and value > hi:
            self.err(path, f"must be <= {hi}, got {value!r}")
            return None
        return int(value) if integer else float(value)

    def string(self, value: Any, path: str, *, pattern: re.Pattern | None = None) -> str | None:
        if not isinstance(value, str) or not value:
            self.err(path, f"expected a non-empty string, got {value!r}")
            return None
        if pattern is not None and not pattern.match(value):
            self.err(path, f"invalid name {value!r} (letters, digits, '_', '-', '.')")
            return None
        return value

    def string_list(self, value: Any, path: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.err(path, f"expected a list of strings, got {type(value).__name__}")
            return ()
        out = []
        for i, item in enumerate(value):
            s = self.string(item, f"{path}[{i}]", pattern=_NAME_RE)
            if s is not None:
                out.append(s)
        return tuple(out)

    def window(self, value: Any, path: str) -> Window:
        if isinstance(value, bool):
            self.err(path, f"expected a record count or a duration like '1h', got {value!r}")
        elif isinstance(value, int):
            if value < 10:
                self.err(path, f"a record window needs at least 10 records, got {value}")
            else:
                return Window(count=value)
        elif isinstance(value, str):
            try:
                return Window(seconds=parse_duration(value))
            except ValueError as e:
                self.err(path, str(e))
        else:
            self.err(path, f"expected a record count or a duration like '1h', got {value!r}")
        return Window(count=1000)

    def duration(self, value: Any, path: str) -> float | None:
        try:
            return parse_duration(value)
        except ValueError as e:
            self.err(path, str(e))
            return None

    def positive_duration(self, value: Any, path: str) -> float | None:
        """Seconds of a duration that must be above zero (a zero TTL, skew or interval means nothing)."""
        secs = self.duration(value, path)
        if secs is not None and secs <= 0:
            self.err(path, f"must be a positive duration, got {value!r}")
            return None
        return secs


def _validate_thresholds(v: _Validator, raw: Any, path: str, task: str | None) -> dict[str, Threshold]:
    """Threshold keys are the contract's quantities; a model may only set those its task computes
    (``task`` None: the task itself was invalid, and that error is enough)."""
    raw = v.mapping(raw, path, set(QUANTITIES))
    out: dict[str, Threshold] = {}
    for name, spec in raw.items():
        if name not in QUANTITIES:
            continue
        p = f"{path}.{name}"
        quantity = QUANTITIES[name]
        if task is not None and not quantity.applies_to(task):
            v.err(p, f"not computed for a {task} model (only for {' and '.join(quantity.tasks)} models)")
            continue
        spec = v.mapping(spec, p, {"warning", "critical"})
        if not spec:
            v.err(p, "expected at least one of warning, critical")
            continue
        warn = v.number(spec["warning"], f"{p}.warning") if "warning" in spec else None
        crit = v.number(spec["critical"], f"{p}.critical") if "critical" in spec else None
        if "critical" in spec and not quantity.pages:
            v.err(f"{p}.critical", "drift opens tickets and never pages (pages are for harm to users: quality, "
                                   "errors, latency, traffic); give only a warning threshold")
            continue
        direction = quantity.direction
        if warn is not None and crit is not None:
            worse = crit < warn if direction == "below" else crit > warn
            if not worse and crit != warn:
                v.err(p, f"critical ({crit}) must be {'below' if direction == 'below' else 'above'} "
                         f"warning ({warn}) for a metric where {direction} is bad")
        out[name] = Threshold(warning=warn, critical=crit, direction=direction)
    return out


def _validate_model(v: _Validator, raw: Any, path: str, base_dir: Path) -> ModelConfig | None:
    allowed = {"name", "task", "positive_class", "classes", "features", "reference", "quality_window",
               "drift_window", "thresholds", "slo", "team", "min_labeled", "drift_min_features",
               "min_drift_samples", "baseline_version", "kserve"}
    if not isinstance(raw, dict):
        v.err(path, f"expected a mapping, got {type(raw).__name__}")
        return None
    raw = v.mapping(raw, path, allowed)
    for key in ("name", "task", "features", "reference"):
        if key not in raw:
            v.err(f"{path}.{key}", "required")
    name = v.string(raw.get("name"), f"{path}.name", pattern=_NAME_RE) if "name" in raw else None
    task = raw.get("task")
    if "task" in raw and task not in TASKS:
        v.err(f"{path}.task", f"expected one of {', '.join(TASKS)}, got {task!r}")
        task = None
    feats = v.mapping(raw.get("features"), f"{path}.features", {"numeric", "categorical"})
    numeric = v.string_list(feats.get("numeric"), f"{path}.features.numeric")
    categorical = v.string_list(feats.get("categorical"), f"{path}.features.categorical")
    if "features" in raw and not numeric and not categorical:
        v.err(f"{path}.features", "declare at least one numeric or categorical feature")
    dup = set(numeric) & set(categorical)
    if dup:
        v.err(f"{path}.features", f"feature(s) both numeric and categorical: {', '.join(sorted(dup))}")

    ref_raw = raw.get("reference")
    reference = Reference()
    if isinstance(ref_raw, str):
        p = Path(ref_raw)
        reference = Reference(path=p if p.is_absolute() else (base_dir / p))
        if reference.path.suffix.lower() not in (".csv", ".jsonl", ".json", ".ndjson", ".parquet"):
            v.err(f"{path}.reference", "expected a .csv, .jsonl/.ndjson or .parquet file")
    elif isinstance(ref_raw, dict):
        ref_map = v.mapping(ref_raw, f"{path}.reference", {"first"})
        n = v.number(ref_map.get("first"), f"{path}.reference.first", lo=10, integer=True)
        reference = Reference(first=int(n) if n is not None else 1000)
    elif "reference" in raw:
        v.err(f"{path}.reference", "expected a file path or {first: N}")

    qwin = v.window(raw.get("quality_window", 10000), f"{path}.quality_window")
    dwin = v.window(raw.get("drift_window", 5000), f"{path}.drift_window")
    thresholds = _validate_thresholds(v, raw.get("thresholds"), f"{path}.thresholds", task)

    slo_raw = v.mapping(raw.get("slo"), f"{path}.slo", {"latency_p99_seconds", "availability", "period"})
    lat = v.number(slo_raw["latency_p99_seconds"], f"{path}.slo.latency_p99_seconds", lo=0) \
        if "latency_p99_seconds" in slo_raw else None
    avail = v.number(slo_raw["availability"], f"{path}.slo.availability", lo=50, hi=99.9999) \
        if "availability" in slo_raw else None
    period_days = 30
    if "period" in slo_raw:
        secs = v.duration(slo_raw["period"], f"{path}.slo.period")
        if secs is not None:
            if secs % 86400:
                v.err(f"{path}.slo.period", "must be a whole number of days, e.g. 30d")
            else:
                period_days = int(secs // 86400)

    team = raw.get("team", "default")
    team = v.string(team, f"{path}.team", pattern=_NAME_RE) or "default"

    classes = None
    if "classes" in raw:
        if not isinstance(raw["classes"], list) or len(raw["classes"]) < 2:
            v.err(f"{path}.classes", "expected a list of at least two class values")
        else:
            classes = tuple(raw["classes"])
    if task == "regression" and ("positive_class" in raw or classes):
        v.err(f"{path}", "positive_class/classes make no sense for a regression model")
    positive = raw.get("positive_class", 1)
    if isinstance(positive, (dict, list)):
        v.err(f"{path}.positive_class", f"expected a class value, got {positive!r}")

    def _int(key: str, default: int, lo: int) -> int:
        if key not in raw:
            return default
        n = v.number(raw[key], f"{path}.{key}", lo=lo, integer=True)
        return int(n) if n is not None else default

    baseline = raw.get("baseline_version")
    if baseline is not None:
        if isinstance(baseline, bool) or not isinstance(baseline, (str, int, float)) or str(baseline) == "":
            v.err(f"{path}.baseline_version", f"expected a version string, got {baseline!r}")
            baseline = None
        else:
            baseline = str(baseline)

    kserve = _validate_kserve_binding(v, raw["kserve"], f"{path}.kserve", numeric + categorical, task) \
        if raw.get("kserve") is not None else None

    if name is None or task is None:
        return None
    return ModelConfig(
        name=name, task=task, numeric_features=numeric, categorical_features=categorical,
        reference=reference, quality_window=qwin, drift_window=dwin, thresholds=thresholds,
        slo=SLO(latency_p99_seconds=lat, availability=avail, period_days=period_days), team=team,
        positive_class=positive, classes=classes,
        min_labeled=_int("min_labeled", 100, 1),
        drift_min_features=_int("drift_min_features", 1, 1),
        min_drift_samples=_int("min_drift_samples", 200, 10),
        baseline_version=baseline, kserve=kserve,
    )


def _validate_kserve_binding(v: _Validator, raw: Any, path: str, features: tuple[str, ...],
                             task: str | None) -> KServeBinding | None:
    keys = {"inference_service", "namespace", "component", "features", "input", "prediction", "score",
            "classes", "version_from", "version"}
    if not isinstance(raw, dict):
        v.err(path, f"expected a mapping, got {type(raw).__name__}")
        return None
    raw = v.mapping(raw, path, keys)
    kw: dict[str, Any] = {}
    if "inference_service" not in raw:
        v.err(f"{path}.inference_service", "required (the InferenceService name KServe sends as ce-inferenceservicename)")
    ok = True
    for key in ("inference_service", "namespace", "component", "input", "prediction", "score"):
        if key in raw:
            s = v.string(raw[key], f"{path}.{key}")
            if s is None:
                ok = False
            elif s != s.strip() or any(ord(c) < 32 for c in s):
                v.err(f"{path}.{key}", f"expected a name without surrounding spaces or control characters, got {s!r}")
                ok = False
            else:
                kw[key] = s
    order: list[str | None] = list(features)
    if "features" in raw:
        lst = raw["features"]
        if not isinstance(lst, list) or not lst:
            v.err(f"{path}.features", "expected a non-empty list: the model feature at each position of a "
                                      "positional instance (null skips a position)")
            ok = False
        else:
            order = []
            for i, f in enumerate(lst):
                if f is not None and f not in features:
                    v.err(f"{path}.features[{i}]", f"{f!r} is not a feature of the model (features: "
                                                   f"{', '.join(features) or 'none'}; null skips a position)")
                    ok = False
                elif f is not None and f in order:
                    v.err(f"{path}.features[{i}]", f"{f!r} is listed twice")
                    ok = False
                order.append(f)
            if all(f is None for f in order):
                v.err(f"{path}.features", "every position is null: name at least one model feature")
                ok = False
    if "classes" in raw:
        classes = raw["classes"]
        if task == "regression":
            v.err(f"{path}.classes", "a regression model has no classes")
            ok = False
        elif not isinstance(classes, list) or len(classes) < 2 or any(
                isinstance(c, (dict, list)) or c is None for c in classes):
            v.err(f"{path}.classes", "expected the class of each position of a probability vector (at least two)")
            ok = False
        elif len(set(map(str, classes))) < len(classes):
            v.err(f"{path}.classes", "a class is listed twice")
            ok = False
        else:
            kw["classes"] = tuple(classes)
    if "version_from" in raw:
        src = raw["version_from"]
        src = [src] if isinstance(src, str) else src
        if not isinstance(src, list) or any(s not in KSERVE_VERSION_SOURCES for s in src) or len(set(src)) < len(src):
            v.err(f"{path}.version_from", f"expected a list of {', '.join(KSERVE_VERSION_SOURCES)} (each at most "
                                          f"once, tried in order; [] for the fixed `version`), got {raw['version_from']!r}")
            ok = False
        else:
            kw["version_from"] = tuple(src)
    if "version" in raw:
        ver = raw["version"]
        if isinstance(ver, bool) or not isinstance(ver, (str, int, float)) or str(ver) == "":
            v.err(f"{path}.version", f"expected a version string, got {ver!r}")
            ok = False
        else:
            kw["version"] = str(ver)
    if not ok or "inference_service" not in kw:
        return None
    return KServeBinding(features=tuple(order), **kw)


def _validate_exporter(v: _Validator, raw: Any) -> ExporterConfig:
    p = "exporter"
    keys = {"label_ttl", "join_buffer_max", "max_versions_per_model", "max_classes", "top_k_categories",
            "reference_sample_max", "multivariate", "max_clock_skew", "max_event_age", "max_label_value_length",
            "label_idle", "estimation", "kserve"}
    raw = v.mapping(raw, p, keys)
    d = ExporterConfig()
    kw: dict[str, Any] = {}
    if "label_ttl" in raw:
        secs = v.duration(raw["label_ttl"], f"{p}.label_ttl")
        if secs is not None:
            kw["label_ttl_seconds"] = secs
    for key, field_name in (("max_clock_skew", "max_clock_skew_seconds"), ("max_event_age", "max_event_age_seconds"),
                            ("label_idle", "label_idle_seconds")):
        if key in raw and not (key == "max_event_age" and raw[key] is None):
            secs = v.positive_duration(raw[key], f"{p}.{key}")
            if secs is not None:
                kw[field_name] = secs
    if "max_label_value_length" in raw:
        n = v.number(raw["max_label_value_length"], f"{p}.max_label_value_length", lo=16, integer=True)
        if n is not None:
            kw["max_label_value_length"] = int(n)
    for key in ("join_buffer_max", "max_versions_per_model", "max_classes", "top_k_categories",
                "reference_sample_max"):
        if key in raw:
            n = v.number(raw[key], f"{p}.{key}", lo=1, integer=True)
            if n is not None:
                kw[key] = int(n)
    mv = v.mapping(raw.get("multivariate"), f"{p}.multivariate", {"enabled", "interval", "sample_size"})
    if "enabled" in mv and (flag := v.boolean(mv["enabled"], f"{p}.multivariate.enabled")) is not None:
        kw["multivariate_enabled"] = flag
    if "interval" in mv:
        secs = v.duration(mv["interval"], f"{p}.multivariate.interval")
        if secs is not None:
            kw["multivariate_interval_seconds"] = secs
    if "sample_size" in mv:
        n = v.number(mv["sample_size"], f"{p}.multivariate.sample_size", lo=50, integer=True)
        if n is not None:
            kw["multivariate_sample_size"] = int(n)
    est = v.mapping(raw.get("estimation"), f"{p}.estimation", {"enabled", "interval"})
    if "enabled" in est and (flag := v.boolean(est["enabled"], f"{p}.estimation.enabled")) is not None:
        kw["estimation_enabled"] = flag
    if "interval" in est:
        secs = v.positive_duration(est["interval"], f"{p}.estimation.interval")
        if secs is not None:
            kw["estimation_interval_seconds"] = secs
    ks = v.mapping(raw.get("kserve"), f"{p}.kserve", {"join_ttl", "join_buffer_max", "join_buffer_max_bytes"})
    if "join_ttl" in ks:
        secs = v.positive_duration(ks["join_ttl"], f"{p}.kserve.join_ttl")
        if secs is not None:
            kw["kserve_join_ttl_seconds"] = secs
    if "join_buffer_max" in ks:
        n = v.number(ks["join_buffer_max"], f"{p}.kserve.join_buffer_max", lo=1, integer=True)
        if n is not None:
            kw["kserve_join_buffer_max"] = int(n)
    if "join_buffer_max_bytes" in ks:
        n = _byte_size(v, ks["join_buffer_max_bytes"], f"{p}.kserve.join_buffer_max_bytes")
        if n is not None:
            kw["kserve_join_buffer_max_bytes"] = n
    return ExporterConfig(**{**d.__dict__, **kw})


_BYTE_SIZE_RE = re.compile(r"^(\d+)(Ki|Mi|Gi)?$")
_BYTE_UNITS = {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}


def _byte_size(v: _Validator, value: Any, path: str, lo: int = 1024) -> int | None:
    """A size in bytes: an integer, or a string such as 64Mi (Ki, Mi, Gi: powers of 1024)."""
    m = _BYTE_SIZE_RE.match(value) if isinstance(value, str) else None
    if m is not None:
        n = int(m.group(1)) * _BYTE_UNITS[m.group(2)]
    elif isinstance(value, int) and not isinstance(value, bool):
        n = value
    else:
        v.err(path, f"expected a size in bytes such as 67108864 or 64Mi, got {value!r}")
        return None
    if n < lo:
        v.err(path, f"must be at least {lo} bytes, got {value!r}")
        return None
    return n


RECEIVER_KINDS = {
    # kind: (required keys, optional keys). Secrets are *_file or *_env, never inline values.
    # A webhook's URL is `url`, or `url_file`/`url_env` when the URL itself is a secret.
    "webhook": (set(), {"url", "url_file", "url_env", "send_resolved", "bearer_token_file", "bearer_token_env",
                        "max_alerts"}),
    # from and smarthost are per receiver: the generated Alertmanager config has no global SMTP block.
    "email": ({"to", "from", "smarthost"}, {"auth_username", "auth_password_file", "auth_password_env",
                       "require_tls", "send_resolved"}),
    "slack": ({"channel"}, {"api_url_file", "api_url_env", "send_resolved"}),
    "pagerduty": (set(), {"routing_key_file", "routing_key_env", "send_resolved", "severity"}),
}
# Secrets a receiver kind cannot work without: one of <secret>_file, <secret>_env.
_SECRET_SOURCES = {"slack": "api_url", "pagerduty": "routing_key"}
# Where a webhook's URL comes from: exactly one of these.
_WEBHOOK_URL_SOURCES = ("url", "url_file", "url_env")
# An *_env value names an environment variable; it also becomes a file name in the secrets folder.
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INLINE_CREDENTIALS = "credentials inline in a URL are refused"


def _mask_userinfo(value: Any) -> Any:
    """A URL for an error message: any ``user:password@`` shown as ``***@``."""
    return re.sub(r"(?<=//)[^/?#]*@", "***@", value) if isinstance(value, str) else value


def _http_url(v: _Validator, value: Any, path: str, hint: str) -> str | None:
    """An absolute http(s) URL without ``user:password@``; errors carry the key path and ``hint``
    and never the credentials themselves."""
    from urllib.parse import urlsplit

    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        v.err(path, f"expected an http(s) URL, got {_mask_userinfo(value)!r}")
        return None
    try:
        parts = urlsplit(value)
    except ValueError as e:
        v.err(path, f"not a valid URL ({e}): {_mask_userinfo(value)!r}")
        return None
    if "@" in parts.netloc:
        v.err(path, f"{_INLINE_CREDENTIALS}; {hint}")
        return None
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as e:
        v.err(path, f"not a valid URL ({e}): {value!r}")
        return None
    if not parts.hostname:
        v.err(path, f"expected an http(s) URL with a host, got {value!r}")
        return None
    return value


def _validate_secret_settings(v: _Validator, kind: str, settings: dict, path: str) -> None:
    """*_env must name an environment variable, *_file must be a path, and one source per secret."""
    for key, value in settings.items():
        if key.endswith("_env") and (not isinstance(value, str) or not _ENV_NAME_RE.match(value)):
            v.err(f"{path}.{key}", f"expected an environment variable name (letters, digits, '_'), got {value!r}")
        elif key.endswith("_file") and (not isinstance(value, str) or not value.strip()):
            v.err(f"{path}.{key}", f"expected a file path, got {value!r}")
    for key in settings:
        if key.endswith("_file") and f"{key[:-5]}_env" in settings and not (kind == "webhook" and key == "url_file"):
            v.err(path, f"give one of {key}, {key[:-5]}_env, not both")
    if kind == "webhook":
        given = [k for k in _WEBHOOK_URL_SOURCES if k in settings]
        if len(given) != 1:
            v.err(path, f"expected exactly one of {', '.join(_WEBHOOK_URL_SOURCES)}"
                        + (f" (got {', '.join(given)})" if given else ""))
        if "url" in settings:
            _http_url(v, settings["url"], f"{path}.url", "use url_file or url_env")
        return
    secret = _SECRET_SOURCES.get(kind)
    if secret and not ({f"{secret}_file", f"{secret}_env"} & set(settings)):
        v.err(path, f"needs {secret}_file or {secret}_env (secrets are never written inline)")


def _validate_alerting(v: _Validator, raw: Any, models: list[ModelConfig]) -> AlertingConfig:
    p = "alerting"
    raw = v.mapping(raw, p, {"receivers", "default_receiver", "teams", "runbook_url", "dashboard_url",
                             "group_wait", "group_interval", "repeat_interval"})
    receivers: list[Receiver] = []
    rec_raw = raw.get("receivers", [{"name": "modelmon-inbox", "webhook": {"url": "http://127.0.0.1:9095/webhook"}}])
    if not isinstance(rec_raw, list) or not rec_raw:
        v.err(f"{p}.receivers", "expected a non-empty list of receivers")
        rec_raw = []
    for i, r in enumerate(rec_raw):
        rp = f"{p}.receivers[{i}]"
        r = v.mapping(r, rp, {"name", *RECEIVER_KINDS})
        name = v.string(r.get("name"), f"{rp}.name", pattern=_NAME_RE)
        kinds = [k for k in RECEIVER_KINDS if k in r]
        if len(kinds) != 1:
            v.err(rp, f"expected exactly one of {', '.join(RECEIVER_KINDS)}")
            continue
        kind = kinds[0]
        required, optional = RECEIVER_KINDS[kind]
        settings = v.mapping(r[kind], f"{rp}.{kind}", required | optional)
        for key in sorted(required - set(settings)):
            v.err(f"{rp}.{kind}.{key}", "required")
        _validate_secret_settings(v, kind, settings, f"{rp}.{kind}")
        if name:
            if any(x.name == name for x in receivers):
                v.err(f"{rp}.name", f"duplicate receiver name {name!r}")
            receivers.append(Receiver(name=name, kind=kind, settings=dict(settings)))
    names = {r.name for r in receivers}
    default = raw.get("default_receiver", receivers[0].name if receivers else "modelmon-inbox")
    if receivers and default not in names:
        v.err(f"{p}.default_receiver", f"unknown receiver {default!r} (known: {', '.join(sorted(names))})")
    teams: dict[str, TeamRoute] = {}
    teams_raw = v.mapping(raw.get("teams"), f"{p}.teams", set(raw.get("teams") or {}))
    for team, spec in teams_raw.items():
        tp = f"{p}.teams.{team}"
        spec = v.mapping(spec, tp, {"critical", "warning"})
        routes = {}
        for sev in ("critical", "warning"):
            lst = spec.get(sev, [default])
            if isinstance(lst, str):
                lst = [lst]
            got = v.string_list(lst, f"{tp}.{sev}")
            if isinstance(lst, list) and not lst:  # would silently fall back to the default receiver
                v.err(f"{tp}.{sev}", "expected at least one receiver (leave the key out to use "
                                     "alerting.default_receiver)")
            for j, rn in enumerate(got):
                if receivers and rn not in names:
                    v.err(f"{tp}.{sev}[{j}]", f"unknown receiver {rn!r}")
            routes[sev] = got
        teams[str(team)] = TeamRoute(team=str(team), critical=routes["critical"], warning=routes["warning"])
    kw = {}
    for key in ("group_wait", "group_interval", "repeat_interval"):
        if key in raw:
            if v.duration(raw[key], f"{p}.{key}") is not None:
                kw[key] = str(raw[key])
    runbook = raw.get("runbook_url", "https://github.com/modelmon/modelmon/blob/main/alerting/RUNBOOK.md")
    dashboard = raw.get("dashboard_url", "http://localhost:3000")
    for key, val in (("runbook_url", runbook), ("dashboard_url", dashboard)):
        # Both links are copied into every alert's annotations, so into every notification.
        _http_url(v, val, f"{p}.{key}", "the link is copied into every notification")
    return AlertingConfig(receivers=tuple(receivers), default_receiver=str(default), teams=teams,
                          runbook_url=str(runbook), dashboard_url=str(dashboard).rstrip("/"), **kw)


def _validate_grafana(v: _Validator, raw: Any) -> GrafanaConfig:
    raw = v.mapping(raw, "grafana", {"url", "datasource_uid", "folder", "job"})
    kw = {}
    for key in ("url", "datasource_uid", "folder", "job"):
        if key in raw:
            s = v.string(raw[key], f"grafana.{key}")
            if s and key == "url":
                s = _http_url(v, s, "grafana.url", "use GRAFANA_TOKEN or --token-file (or GRAFANA_USER and "
                                                    "GRAFANA_PASSWORD) with `modelmon dashboards push`")
            if s and key == "job" and (s != s.strip() or any(ord(c) < 32 for c in s)):
                v.err("grafana.job", f"expected the scrape job's name as Prometheus stores it in the `job` "
                                     f"label, without surrounding spaces or control characters, got {s!r}")
                s = None
            if s:
                kw[key] = s
    return GrafanaConfig(**kw)


_K8S_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_K8S_QUANTITY_RE = re.compile(r"^\d+(\.\d+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")


def _validate_recording(v: _Validator, raw: Any) -> RecordingConfig:
    p = "recording"
    raw = v.mapping(raw, p, {"windows", "alert_window"})
    d = RecordingConfig()
    windows = d.windows
    if "windows" in raw:
        w = raw["windows"]
        if not isinstance(w, list) or not w:
            v.err(f"{p}.windows", f"expected a non-empty list of durations such as [1h, 1d], got {w!r}")
        else:
            parsed = [v.duration(x, f"{p}.windows[{i}]") for i, x in enumerate(w)]
            if all(x is not None for x in parsed):
                if any(x <= 0 for x in parsed):
                    v.err(f"{p}.windows", "every window must be a positive duration")
                # by length, each once, spelt as Prometheus spells it (record names carry it)
                windows = tuple(format_duration(x) for x in sorted(set(parsed)))
    alert = raw.get("alert_window", windows[0] if "windows" in raw else d.alert_window)
    secs = v.duration(alert, f"{p}.alert_window")
    if secs is not None:
        alert = format_duration(secs)
        if alert not in windows:
            v.err(f"{p}.alert_window", f"{alert} is not one of recording.windows ({', '.join(windows)})")
    return RecordingConfig(windows=windows, alert_window=alert)


def _validate_kubernetes(v: _Validator, raw: Any) -> KubernetesConfig:
    p = "kubernetes"
    d = KubernetesConfig()
    scalars = {"namespace", "image", "log_path", "log_claim", "state_size", "cpu_request", "memory_request",
               "cpu_limit", "memory_limit", "dashboard_label"}
    raw = v.mapping(raw, p, scalars | {"rule_labels", "monitor_labels"})
    kw: dict[str, Any] = {}
    for key in sorted(scalars & set(raw)):
        s = v.string(raw[key], f"{p}.{key}")
        if s is None:
            continue
        if key in ("namespace", "log_claim") and not _K8S_NAME_RE.match(s):
            v.err(f"{p}.{key}", f"expected a Kubernetes name (lower-case letters, digits, '-'), got {s!r}")
        elif key in ("state_size", "cpu_request", "memory_request", "cpu_limit", "memory_limit") \
                and not _K8S_QUANTITY_RE.match(s):
            v.err(f"{p}.{key}", f"expected a Kubernetes quantity such as 500m, 512Mi or 2, got {s!r}")
        elif key == "log_path" and not s.startswith("/"):
            v.err(f"{p}.{key}", f"expected an absolute path inside the pod, got {s!r}")
        else:
            kw[key] = s
    for key in ("rule_labels", "monitor_labels"):
        if key in raw:
            labels = raw[key]
            if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(x, str)
                                                       for k, x in labels.items()):
                v.err(f"{p}.{key}", f"expected a mapping of label names to string values, got {labels!r}")
            else:
                kw[key] = dict(labels)
    return KubernetesConfig(**{**d.__dict__, **kw})


def parse_config(data: Any, base_dir: Path | str = ".", path: Path | None = None) -> Config:
    """Validate a parsed YAML document. Raises ConfigError listing every problem."""
    v = _Validator()
    data = v.mapping(data, "(root)", {"models", "exporter", "alerting", "grafana", "recording", "kubernetes"})
    models_raw = data.get("models")
    models: list[ModelConfig] = []
    if not isinstance(models_raw, list) or not models_raw:
        v.err("models", "expected a non-empty list of models")
        models_raw = []
    for i, raw in enumerate(models_raw):
        m = _validate_model(v, raw, f"models[{i}]", Path(base_dir))
        if m is not None:
            if any(x.name == m.name for x in models):
                v.err(f"models[{i}].name", f"duplicate model name {m.name!r}")
            models.append(m)
    bound: dict[tuple, str] = {}
    for i, m in enumerate(models):
        if m.kserve is not None:
            key = (m.kserve.inference_service, m.kserve.namespace, m.kserve.component)
            if key in bound:
                v.err(f"models[{i}].kserve", f"model {bound[key]!r} already binds InferenceService "
                                             f"{key[0]!r} (same namespace and component): one model per binding")
            bound.setdefault(key, m.name)
    exporter = _validate_exporter(v, data.get("exporter"))
    alerting = _validate_alerting(v, data.get("alerting"), models)
    grafana = _validate_grafana(v, data.get("grafana"))
    recording = _validate_recording(v, data.get("recording"))
    kubernetes = _validate_kubernetes(v, data.get("kubernetes"))
    if v.errors:
        raise ConfigError(v.errors)
    return Config(models=tuple(models), exporter=exporter, alerting=alerting, grafana=grafana, path=path,
                  recording=recording, kubernetes=kubernetes)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that records every key repeated within one mapping, at any depth.

    YAML requires the keys of a mapping to be unique; PyYAML keeps the last value silently, so
    ``name:`` written twice in a model would quietly replace the first. Merge keys (``<<: *base``)
    are not duplicates: explicit keys are meant to override merged ones.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[Any, int, int]] = []  # (key, line, first line), 1-based
        self._checked: set[int] = set()

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # Called for every mapping before its merge keys are expanded into node.value (and for a
        # merged mapping before its parent copies it), so node.value still holds the keys as written.
        if id(node) not in self._checked:
            self._checked.add(id(node))
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in first:
                        self.duplicates.append((key, line, first[key]))
                    else:
                        first[key] = line
                except TypeError:  # an unhashable key: the constructor reports it
                    continue
        super().flatten_mapping(node)


def load_yaml(text: str, source: str) -> Any:
    """Parse one YAML document of a user's file; a duplicate key at any level is a ConfigError
    ``<source>:<line>: duplicate key 'name' (first at line <n>)``, every one of them listed."""
    loader = _UniqueKeyLoader(text)
    loader.name = source  # syntax errors say `in "modelmon.yaml", line 3`, not "<unicode string>"
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as e:
        raise ConfigError([f"{source}: not valid YAML: {e}"]) from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise ConfigError([f"{source}:{line}: duplicate key {key!r} (first at line {first})"
                           for key, line, first in sorted(loader.duplicates, key=lambda d: d[1])])
    return data


def load_config(path: str | os.PathLike) -> Config:
    """Read and validate a modelmon.yaml. Relative reference paths resolve against its folder."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError([f"{p}: cannot read: {e.strerror}"]) from None
    except UnicodeDecodeError as e:
        raise ConfigError([f"{p}: cannot read: not UTF-8 text ({e.reason} at byte {e.start})"]) from None
    return parse_config(load_yaml(text, str(p)), base_dir=p.parent, path=p)
