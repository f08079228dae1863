"""Incidents: the alerts an on-call engineer handles as one thing.

Grouping key: the alert's labels without the ones that only say *how bad* or *over which window*
(``severity``, and the burn-rate window labels ``window``, ``long_window``, ``short_window``,
``long``, ``short``). So alertname + model + version + every other identifying label (team,
family, instance, job, feature, ...) must be equal; the warning and the critical of
``ModelmonErrorBudgetBurn`` for ``credit``, and its 1h, 6h, 1d and 3d windows, share one key.

Incident: alert *episodes* (one fingerprint from one startsAt to its endsAt, or still firing)
with the same key whose time ranges overlap (touching counts). An episode that arrives joins the
incident of its key it overlaps; if it overlaps two, they merge into the older; if none, it opens
a new one. Membership is decided when an episode arrives and incidents never split: an incident
is firing while any member fires, its severity is the highest any member reached, and its
severity history is the sequence of the highest severity firing at each moment
(``warning → critical → warning``).
"""
from __future__ import annotations

import json
import math
from typing import Iterable, Mapping

# Labels that vary between the alerts of one incident (and are left out of its key).
NON_IDENTIFYING = frozenset({"severity", "window", "long_window", "short_window", "long", "short"})
SEVERITY_ORDER = ("critical", "warning", "info")  # highest first; anything else ranks below info


def severity_rank(severity: str) -> int:
    """0 for critical, 1 warning, 2 info, 3 anything else: lower is more severe."""
    return SEVERITY_ORDER.index(severity) if severity in SEVERITY_ORDER else len(SEVERITY_ORDER)


def key_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """The labels that identify an alert's incident, alertname first then sorted by name."""
    kept = {k: v for k, v in labels.items() if k not in NON_IDENTIFYING}
    return dict(sorted(kept.items(), key=lambda kv: (kv[0] != "alertname", kv[0])))


def incident_key(labels: Mapping[str, str]) -> str:
    """The grouping key as canonical text (stored and compared as is)."""
    return json.dumps(sorted(key_labels(labels).items()), separators=(",", ":"), ensure_ascii=False)


def labels_of_key(key: str) -> dict[str, str]:
    return key_labels(dict(json.loads(key)))


def window_of(labels: Mapping[str, str]) -> str:
    """What tells a fast burn-rate page from a slow one: the `window` label (or long/short pair)."""
    if labels.get("window"):
        return labels["window"]
    long_, short = (labels.get("long_window") or labels.get("long"), labels.get("short_window") or labels.get("short"))
    return "/".join(w for w in (long_, short) if w)


def severity_history(episodes: Iterable[tuple[float, float | None, str]]) -> list[str]:
    """The highest firing severity over time, consecutive repeats collapsed.

    `episodes` are (start, end or None while firing, severity). Moments when nothing fires inside
    the incident cannot happen (members overlap) and are skipped.
    """
    episodes = list(episodes)
    points: dict[float, list[tuple[int, str]]] = {}
    for start, end, severity in episodes:
        points.setdefault(start, []).append((+1, severity))
        if end is not None and math.isfinite(end):
            points.setdefault(max(end, start), []).append((-1, severity))
    active: dict[str, int] = {}
    history: list[str] = []
    for t in sorted(points):
        for delta, severity in points[t]:  # all changes at one instant before looking
            active[severity] = active.get(severity, 0) + delta
        firing = [s for s, n in active.items() if n > 0]
        if firing:
            top = min(firing, key=lambda s: (severity_rank(s), s))
            if not history or history[-1] != top:
                history.append(top)
    if not history and episodes:  # only zero-length episodes: their highest severity
        history.append(min((e[2] for e in episodes), key=lambda s: (severity_rank(s), s)))
    return history
