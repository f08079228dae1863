"""What `modelmon stack up` prints once everything is healthy: where each service answers.

Prometheus' alerts page is not at the same path everywhere: upstream builds (the compose image,
release tarballs) serve their UI at ``/alerts``; Debian's ``prometheus`` package ships only the
classic UI, at ``/classic/alerts`` (its ``/alerts`` is a 404). The banner asks the running
Prometheus and prints the page that answers.
"""
from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any, Sequence

from modelmon.stack.plan import DEFAULT_GRAFANA_PASSWORD, QUICK_ALERT_WINDOW, QUICK_FOR, QUICK_RATE_WINDOW

LABELS = {  # the banner's URLs, in this order
    "grafana": "Grafana",
    "prometheus": "Prometheus",
    "alertmanager": "Alertmanager",
    "receiver": "Alert inbox",
    "exporter": "Exporter",
}
# Prometheus' alerts page: upstream UI first, then the classic UI of Debian's package.
PROMETHEUS_ALERTS_PAGES = ("/alerts", "/classic/alerts")
ALERTMANAGER_ALERTS_PAGE = "/#/alerts"  # the same in Alertmanager 0.25 (Debian) and 0.27 (compose)


def first_page(base: str, paths: Sequence[str], timeout: float = 2.0) -> str | None:
    """base + the first of ``paths`` that answers 2xx (redirects followed), or None."""
    for path in paths:
        try:
            with urllib.request.urlopen(base.rstrip("/") + path, timeout=timeout) as resp:
                if 200 <= resp.status < 300:
                    return base.rstrip("/") + path
        except (urllib.error.URLError, OSError, ValueError):
            continue
    return None


def traffic_destination(plan: Any, layout: Any) -> str:
    """Where the demo traffic goes: the log, POST /ingest, or the stream (from its --out/--post/--stream)."""
    traffic = next((svc for svc in plan.services if svc.name == "traffic"), None)
    for arg in traffic.argv if traffic else ():
        for option, shown in (("--out=", "{}"), ("--post=", "POST {}"), ("--stream=", "Redis Stream {}")):
            if arg.startswith(option):
                return shown.format(arg[len(option):])
    return str(layout.predictions_log)


def banner_lines(plan: Any, layout: Any, options: Any, *, quick: bool = False,
                 find_page=first_page) -> list[str]:
    urls = {svc.name: svc.url for svc in plan.services if svc.url}
    lines = ["", "modelmon stack is up:"]
    for name, label in LABELS.items():
        if name not in urls:
            continue
        line = f"  {label:<13} {urls[name]}"
        if name == "prometheus":
            alerts = find_page(urls[name], PROMETHEUS_ALERTS_PAGES)
            if alerts:
                line += f"   (alerts: {alerts})"
        elif name == "alertmanager":
            line += f"   (alerts: {urls[name]}{ALERTMANAGER_ALERTS_PAGE})"
        lines.append(line)
    if "grafana" in urls:
        lines.append("  Grafana: anonymous viewer; admin password from $GRAFANA_ADMIN_PASSWORD "
                     f"(default {DEFAULT_GRAFANA_PASSWORD})")
    if quick:
        lines.append(f"  quick tour    alerts wait {QUICK_FOR} (not their production `for`), rates span "
                     f"{QUICK_RATE_WINDOW}, quality and drift alerts read {QUICK_ALERT_WINDOW} windows")
    lines += [f"  demo traffic  {options.schedule} (looping, {options.rate:g}/s) -> {traffic_destination(plan, layout)}",
              f"  logs          {layout.logs}/ (kept across runs, one start line per run)",
              f"  configs       {layout.etc}/",
              "Press Ctrl-C to stop everything.", ""]
    return lines
