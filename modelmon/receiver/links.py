"""Links out of the inbox: silence in Alertmanager, dashboards at the alert's time, only http(s).

Silence: ``<externalURL>/#/silences/new?filter=<{alertname="…",model="…",…} URL-encoded>``, the
form Alertmanager's own UI opens for its "Silence" button, prefilled with equality matchers. The
Debian package of Alertmanager ships no web UI, so the same silence is also given as an ``amtool``
command line.

Dashboard: the alert's ``dashboard_url`` annotation with ``from=<start − 30 min>`` and
``to=<end + 10 min>`` (epoch milliseconds; ``to=now`` while firing), its other query parameters
(``var-model=…``) kept. With ``--grafana-url URL`` the link is rebased onto that Grafana (the part
of the annotation from ``/d/`` on is kept); with ``--grafana-url none`` there is no link at all.
"""
from __future__ import annotations

from typing import Mapping
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

BEFORE_S = 30 * 60   # dashboard range starts this long before the alert started
AFTER_S = 10 * 60    # ... and ends this long after it ended
NO_GRAFANA = "none"


def safe_url(url: str | None) -> str | None:
    """Only http(s) links: an annotation or payload field must not smuggle javascript: into the page."""
    return url if url and url.startswith(("http://", "https://")) else None


def matchers(labels: Mapping[str, str]) -> str:
    """`{alertname="X",model="y"}`: equality matchers, values escaped as in PromQL strings."""
    def value(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return "{" + ",".join(f'{k}="{value(v)}"' for k, v in labels.items()) + "}"


def silence_url(external_url: str | None, labels: Mapping[str, str]) -> str | None:
    """Alertmanager's new-silence form for these labels; None without a usable externalURL."""
    base = safe_url(external_url)
    if base is None or not labels:
        return None
    return f"{base.rstrip('/')}/#/silences/new?filter={quote(matchers(labels), safe='')}"


def amtool_silence(external_url: str | None, labels: Mapping[str, str]) -> str | None:
    """`amtool --alertmanager.url=… silence add 'alertname="X"' … --duration=2h --comment=…`, shell-quoted."""
    base = safe_url(external_url)
    if base is None or not labels:
        return None

    def sh(word: str) -> str:
        return "'" + word.replace("'", "'\\''") + "'"
    matchers_ = " ".join(sh(matchers({k: v})[1:-1]) for k, v in labels.items())
    return (f"amtool --alertmanager.url={sh(base.rstrip('/'))} silence add {matchers_} "
            "--duration=2h --comment='INCIDENT: what you are doing (you)'")


def dashboard_url(annotation: str | None, start: float, end: float | None, grafana_url: str | None) -> str | None:
    """The dashboard at the alert's time range, or None (no annotation, not http(s), or no Grafana).

    `start`/`end` are epoch seconds (`end` None while firing); `grafana_url` None keeps the
    annotation's Grafana, NO_GRAFANA disables links, a URL rebases them.
    """
    if grafana_url == NO_GRAFANA:
        return None
    url = safe_url(annotation)
    if url is None:
        return None
    parts = urlsplit(url)
    if grafana_url is not None:
        base = urlsplit(grafana_url.rstrip("/"))
        at = parts.path.find("/d/")
        path = parts.path[at:] if at >= 0 else parts.path
        parts = parts._replace(scheme=base.scheme, netloc=base.netloc, path=base.path + path)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("from", "to")]
    query += [("from", str(int((start - BEFORE_S) * 1000))),
              ("to", "now" if end is None else str(int((end + AFTER_S) * 1000)))]
    return urlunsplit(parts._replace(query=urlencode(query), fragment=parts.fragment))
