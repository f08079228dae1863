"""Alertmanager's webhook payload (version "4"): validate it into typed notifications.

Reference: https://prometheus.io/docs/alerting/latest/configuration/#webhook_config
Every problem is reported with the path of the offending field (``alerts[2].labels: ...``).
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

PAYLOAD_VERSION = "4"
STATUSES = ("firing", "resolved")
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_PARTS = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}):?(\d{2})?$")


class PayloadError(ValueError):
    """The body is not a valid Alertmanager webhook notification."""


@dataclass(frozen=True)
class AlertNotice:
    fingerprint: str
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str
    ends_at: str
    generator_url: str

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")


@dataclass(frozen=True)
class Notification:
    receiver: str
    status: str
    group_key: str
    external_url: str
    alerts: tuple[AlertNotice, ...]
    truncated_alerts: int


def fingerprint_of(labels: dict[str, str]) -> str:
    """Stable id for alerts sent without one (Alertmanager >= 0.19 always sends its own)."""
    canonical = json.dumps(sorted(labels.items()), separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def epoch(timestamp: str) -> float:
    """Seconds since the epoch of an RFC 3339 timestamp as validated here (nanoseconds are cut to
    microseconds; Alertmanager's zero time 0001-01-01T00:00:00Z is a large negative number)."""
    m = _PARTS.match(timestamp)
    if m is None:
        raise ValueError(f"not an RFC 3339 timestamp: {timestamp!r}")
    whole, fraction, hours, minutes = m.groups()
    try:
        offset = timezone.utc if hours == "Z" else timezone(
            timedelta(hours=int(hours), minutes=int(minutes or 0) * (-1 if hours[0] == "-" else 1)))
        t = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=offset)
        return t.timestamp() + (int(fraction[:6].ljust(6, "0")) / 1e6 if fraction else 0.0)
    except (ValueError, OverflowError):
        raise ValueError(f"not a valid date and time: {timestamp!r}") from None


_FIRST = datetime(1, 1, 1, tzinfo=timezone.utc).timestamp()
_LAST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp()


def utc_datetime(seconds: float) -> datetime:
    """The UTC time of epoch seconds, held within years 1 to 9999 (a payload may say anything in between
    and a little beyond, with offsets; the inbox must still render)."""
    return datetime.fromtimestamp(min(max(seconds, _FIRST), _LAST), timezone.utc)


def rfc3339(seconds: float) -> str:
    """UTC RFC 3339 text of epoch seconds, to the second (what the inbox shows)."""
    return utc_datetime(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


def _string(value: Any, path: str, *, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise PayloadError(f"{path}: expected a string, got {type(value).__name__}")
    return value


def _string_map(value: Any, path: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"{path}: expected an object of strings, got {type(value).__name__}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise PayloadError(f"{path}.{key}: expected a string, got {type(item).__name__}")
    return dict(value)


def _timestamp(value: Any, path: str, *, required: bool) -> str:
    text = _string(value, path, required=required)
    if text:
        if not _TIMESTAMP.match(text):
            raise PayloadError(f"{path}: expected an RFC 3339 timestamp, got {text!r}")
        try:
            epoch(text)  # a day or an hour out of range, or before year 1
        except ValueError:
            raise PayloadError(f"{path}: not a valid date and time: {text!r}") from None
    return text


def _status(value: Any, path: str) -> str:
    if value not in STATUSES:
        raise PayloadError(f"{path}: expected one of {', '.join(STATUSES)}, got {value!r}")
    return value


def _alert(raw: Any, path: str) -> AlertNotice:
    if not isinstance(raw, dict):
        raise PayloadError(f"{path}: expected an object, got {type(raw).__name__}")
    labels = _string_map(raw.get("labels"), f"{path}.labels")
    if not labels:
        raise PayloadError(f"{path}.labels: required and must not be empty")
    fingerprint = _string(raw.get("fingerprint"), f"{path}.fingerprint", required=False) or fingerprint_of(labels)
    return AlertNotice(
        fingerprint=fingerprint,
        status=_status(raw.get("status"), f"{path}.status"),
        labels=labels,
        annotations=_string_map(raw.get("annotations"), f"{path}.annotations"),
        starts_at=_timestamp(raw.get("startsAt"), f"{path}.startsAt", required=True),
        ends_at=_timestamp(raw.get("endsAt"), f"{path}.endsAt", required=False),
        generator_url=_string(raw.get("generatorURL"), f"{path}.generatorURL", required=False),
    )


def parse_notification(body: bytes) -> Notification:
    """Parse and validate a request body; raises PayloadError with a message for the sender."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PayloadError(f"body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise PayloadError(f"expected a JSON object, got {type(data).__name__}")
    if data.get("version") != PAYLOAD_VERSION:
        raise PayloadError(f'version: expected "{PAYLOAD_VERSION}" (Alertmanager webhook payload), '
                           f"got {data.get('version')!r}")
    alerts = data.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        raise PayloadError("alerts: expected a non-empty list")
    truncated = data.get("truncatedAlerts", 0)
    if isinstance(truncated, bool) or not isinstance(truncated, int) or truncated < 0:
        raise PayloadError(f"truncatedAlerts: expected a non-negative integer, got {truncated!r}")
    return Notification(
        receiver=_string(data.get("receiver"), "receiver"),
        status=_status(data.get("status"), "status"),
        group_key=_string(data.get("groupKey"), "groupKey", required=False),
        external_url=_string(data.get("externalURL"), "externalURL", required=False),
        alerts=tuple(_alert(a, f"alerts[{i}]") for i, a in enumerate(alerts)),
        truncated_alerts=truncated,
    )
