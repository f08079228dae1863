"""The alerting policy that is the same for every model (policy.yml), as typed objects."""
from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any


from modelmon.config import format_duration, load_yaml, parse_duration

POLICY_FILE = Path(__file__).with_name("policy.yml")
SEVERITIES = ("critical", "warning", "info")
# Alerts on estimated quality: an estimate rests on assumptions, so it never pages.
TICKETS_ONLY = ("estimated", "ModelmonEstimateDisagrees")


@dataclass(frozen=True)
class BurnWindow:
    """One multiwindow pair: fire while both windows burn budget faster than ``factor``."""

    severity: str
    long: str
    short: str
    factor: Fraction  # for the policy's reference period
    pending: str  # the alert's `for`

    def factor_for(self, period_days: int, reference_days: int) -> Fraction:
        """Scale the factor so the same share of the budget is spent for any SLO period."""
        return self.factor * Fraction(period_days, reference_days)

    def budget_share(self, reference_days: int) -> Fraction:
        """Share of the period's error budget spent when this pair starts firing."""
        return self.factor * Fraction(int(parse_duration(self.long)), reference_days * 86400)


@dataclass(frozen=True)
class AlertPolicy:
    pending: str
    severity: str | None = None  # None: severity comes from the model's thresholds
    keep_firing_for: str | None = None  # hysteresis: keep firing this long after the condition clears


@dataclass(frozen=True)
class Rollout:
    """Version comparison (shadow, canary, A/B): when a difference to the baseline counts."""

    alpha: float  # two-sided p-value below which a delta is significant
    min_samples: int  # pairs (paired) or labelled records of the smaller window (unpaired)
    windows: tuple[str, ...]  # agreement / prediction-difference recording rules, shortest first


@dataclass(frozen=True)
class WaysIn:
    """Thresholds of the alerts on the stream source and the KServe join (issue 14)."""

    stream_lag_entries: int  # the group's undelivered entries before ModelmonStreamLagHigh
    kserve_unmatched_ratio: float  # share of halves left without their other half
    kserve_window: str  # ... over this window


@dataclass(frozen=True)
class Policy:
    burn_reference_days: int
    burn_windows: tuple[BurnWindow, ...]
    min_requests: int
    labels_window: str
    overflow_window: str
    stale_after: str
    max_rejected_ratio: float
    state_write_failures: int
    state_write_window: str
    refresh_error_window: str
    alerts: dict[str, AlertPolicy]
    rollout: Rollout
    ways_in: WaysIn

    def alert(self, key: str) -> AlertPolicy:
        try:
            return self.alerts[key]
        except KeyError:
            raise KeyError(f"{POLICY_FILE.name}: alerts.{key} is missing") from None

    @property
    def burn_durations(self) -> tuple[str, ...]:
        """Every window the burn-rate alerts read, shortest first."""
        names = {w for b in self.burn_windows for w in (b.long, b.short)}
        return tuple(sorted(names, key=parse_duration))


def _duration(value: Any, where: str) -> str:
    try:
        parse_duration(value)
    except ValueError as e:
        raise ValueError(f"{POLICY_FILE.name}: {where}: {e}") from None
    return str(value)


def _section(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise ValueError(f"{POLICY_FILE.name}: {key}: expected a mapping, got {value!r}")
    return value


def parse_rollout(data: dict[str, Any]) -> Rollout:
    """The `rollout:` section, every value checked: a typo must not silently loosen a test."""
    where = f"{POLICY_FILE.name}: rollout"
    unknown = set(data) - {"alpha", "min_samples", "windows"}
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; expected alpha, min_samples, windows")
    alpha = data.get("alpha")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(f"{where}.alpha: expected a number between 0 and 1 (exclusive), got {alpha!r}")
    samples = data.get("min_samples")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"{where}.min_samples: expected a whole number >= 1, got {samples!r}")
    windows = data.get("windows")
    if not isinstance(windows, list) or not windows:
        raise ValueError(f"{where}.windows: expected a non-empty list of durations such as [1h, 1d], "
                         f"got {windows!r}")
    names = []
    for i, w in enumerate(windows):
        # A window names a recording rule (`...:1h`), so it is written with its unit: '1h', not 3600.
        if not isinstance(w, str) or parse_duration(_duration(w, f"rollout.windows[{i}]")) <= 0:
            raise ValueError(f"{where}.windows[{i}]: expected a positive duration such as 1h, got {w!r}")
        # As written ('7d' stays '7d'); '1.5h', which PromQL cannot read, becomes '90m'.
        names.append(w if re.fullmatch(r"\d+(ms|s|m|h|d|w)", w) else format_duration(parse_duration(w)))
    if len({parse_duration(w) for w in names}) != len(names):
        raise ValueError(f"{where}.windows: the same window is listed twice in {names}")
    return Rollout(alpha=float(alpha), min_samples=samples, windows=tuple(sorted(names, key=parse_duration)))


def parse_ways_in(data: dict[str, Any]) -> WaysIn:
    """The `ways_in:` section, every value checked like `rollout:`."""
    where = f"{POLICY_FILE.name}: ways_in"
    keys = {"stream_lag_entries", "kserve_unmatched_ratio", "kserve_window"}
    unknown, missing = set(data) - keys, keys - set(data)
    if unknown or missing:
        raise ValueError(f"{where}: expected exactly the keys {sorted(keys)}; unknown {sorted(unknown)}, "
                         f"missing {sorted(missing)}")
    lag = data["stream_lag_entries"]
    if isinstance(lag, bool) or not isinstance(lag, int) or lag < 1:
        raise ValueError(f"{where}.stream_lag_entries: expected a whole number >= 1, got {lag!r}")
    ratio = data["kserve_unmatched_ratio"]
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio < 1:
        raise ValueError(f"{where}.kserve_unmatched_ratio: expected a share between 0 and 1 (exclusive), "
                         f"got {ratio!r}")
    window = data["kserve_window"]
    if not isinstance(window, str) or not re.fullmatch(r"\d+(s|m|h|d)", window) or parse_duration(window) <= 0:
        raise ValueError(f"{where}.kserve_window: expected a positive duration such as 15m, got {window!r}")
    return WaysIn(stream_lag_entries=lag, kserve_unmatched_ratio=float(ratio), kserve_window=window)


def parse_policy(data: dict[str, Any]) -> Policy:
    burn = data["burn_rates"]
    reference = parse_duration(burn["reference_period"])
    if reference % 86400:
        raise ValueError(f"{POLICY_FILE.name}: burn_rates.reference_period must be whole days")
    windows = []
    for i, w in enumerate(burn["windows"]):
        where = f"burn_rates.windows[{i}]"
        if w["severity"] not in SEVERITIES:
            raise ValueError(f"{POLICY_FILE.name}: {where}.severity: expected one of {SEVERITIES}")
        if parse_duration(w["short"]) >= parse_duration(w["long"]):
            raise ValueError(f"{POLICY_FILE.name}: {where}: short window must be shorter than long")
        windows.append(BurnWindow(
            severity=w["severity"], long=_duration(w["long"], f"{where}.long"),
            short=_duration(w["short"], f"{where}.short"),
            factor=Fraction(str(w["factor"])), pending=_duration(w["for"], f"{where}.for")))
    guards = data["guards"]
    alerts = {}
    for key, spec in data["alerts"].items():
        severity = spec.get("severity")
        if severity is not None and severity not in SEVERITIES:
            raise ValueError(f"{POLICY_FILE.name}: alerts.{key}.severity: expected one of {SEVERITIES}")
        if key in TICKETS_ONLY and severity == "critical":
            raise ValueError(f"{POLICY_FILE.name}: alerts.{key}.severity: estimated quality opens tickets, never "
                             f"pages (warning or info); the realized-quality alerts page once labels arrive")
        keep = spec.get("keep_firing_for")
        alerts[key] = AlertPolicy(pending=_duration(spec["for"], f"alerts.{key}.for"), severity=severity,
                                  keep_firing_for=_duration(keep, f"alerts.{key}.keep_firing_for") if keep else None)
    return Policy(
        burn_reference_days=int(reference // 86400),
        burn_windows=tuple(windows),
        min_requests=int(guards["min_requests"]),
        labels_window=_duration(guards["labels_window"], "guards.labels_window"),
        overflow_window=_duration(guards["overflow_window"], "guards.overflow_window"),
        stale_after=_duration(guards["stale_after"], "guards.stale_after"),
        max_rejected_ratio=float(guards["max_rejected_ratio"]),
        state_write_failures=int(guards["state_write_failures"]),
        state_write_window=_duration(guards["state_write_window"], "guards.state_write_window"),
        refresh_error_window=_duration(guards["refresh_error_window"], "guards.refresh_error_window"),
        alerts=alerts,
        rollout=parse_rollout(_section(data, "rollout")),
        ways_in=parse_ways_in(_section(data, "ways_in")),
    )


@cache
def load_policy(path: Path = POLICY_FILE) -> Policy:
    return parse_policy(load_yaml(path.read_text(), str(path)))
