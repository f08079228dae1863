"""alerting/alertmanager.yml: route tree by team and severity, inhibitions, receivers.

Secrets never enter the generated file. Alertmanager does not expand environment variables in
its configuration, so every secret is referenced by a *_file field:
- ``<secret>_file: PATH`` in modelmon.yaml is written as is;
- ``<secret>_env: NAME`` becomes ``<secret>_file: <secrets_dir>/NAME``, and whoever starts
  Alertmanager writes the variable's value there first (``write_env_secrets``; `modelmon stack`
  can call it, docker-compose mounts a secrets folder at the same path).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from modelmon.alerting.alerts import CAUSED_BY_EXPORTER
from modelmon.config import Config, ConfigError, Receiver

SECRETS_DIR = "/etc/alertmanager/secrets"
NULL_RECEIVER = "null"  # info alerts end here: visible in Alertmanager, sent nowhere
GROUP_BY = ["alertname", "model"]

# Secret setting of each receiver kind -> the Alertmanager field that reads it from a file.
_SECRET_FIELDS = {
    "webhook": {"bearer_token": "credentials_file"},
    "email": {"auth_password": "auth_password_file"},
    "slack": {"api_url": "api_url_file"},
    "pagerduty": {"routing_key": "routing_key_file"},
}
_PASSTHROUGH = {
    "webhook": ("url", "send_resolved", "max_alerts"),
    "email": ("to", "from", "smarthost", "auth_username", "require_tls", "send_resolved"),
    "slack": ("channel", "send_resolved"),
    "pagerduty": ("send_resolved", "severity"),
}
_CONFIG_KEY = {"webhook": "webhook_configs", "email": "email_configs", "slack": "slack_configs",
               "pagerduty": "pagerduty_configs"}

# Readable notifications for chat and paging tools (webhooks get the raw payload).
_SLACK_TITLE = '[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }} {{ .CommonLabels.model }}'
_SLACK_TEXT = ('{{ range .Alerts }}*{{ .Annotations.summary }}* ({{ .Labels.severity }})\n'
               '{{ .Annotations.description }}\n<{{ .Annotations.runbook_url }}|runbook> · '
               '<{{ .Annotations.dashboard_url }}|dashboard>\n{{ end }}')
_PAGERDUTY_SEVERITY = '{{ if .CommonLabels.severity }}{{ .CommonLabels.severity }}{{ else }}critical{{ end }}'
_PAGERDUTY_DESCRIPTION = '{{ .CommonLabels.alertname }} {{ .CommonLabels.model }}: {{ .CommonAnnotations.summary }}'


@dataclass(frozen=True)
class AlertmanagerOptions:
    secrets_dir: str = SECRETS_DIR  # where *_env secrets are expected as files


def env_secret_files(config: Config, secrets_dir: str = SECRETS_DIR) -> dict[str, str]:
    """{environment variable: file Alertmanager reads it from} for every *_env setting."""
    out = {}
    for r in config.alerting.receivers:
        for secret in _SECRET_FIELDS[r.kind]:
            env = r.settings.get(f"{secret}_env")
            if env:
                out[str(env)] = f"{secrets_dir.rstrip('/')}/{env}"
    return dict(sorted(out.items()))


def write_env_secrets(config: Config, secrets_dir: str | Path,
                      environ: Mapping[str, str] = os.environ) -> list[Path]:
    """Write each *_env secret into its file (mode 0600) before Alertmanager starts."""
    written = []
    for env, path in env_secret_files(config, str(secrets_dir)).items():
        if not environ.get(env):
            raise ConfigError([f"alerting.receivers: environment variable {env} is not set "
                               f"(a receiver reads its secret from it)"])
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(environ[env])
        written.append(p)
    return written


def _receiver(r: Receiver, secrets_dir: str) -> dict[str, Any]:
    s = r.settings
    out: dict[str, Any] = {k: s[k] for k in _PASSTHROUGH[r.kind] if k in s}
    for secret, am_field in _SECRET_FIELDS[r.kind].items():
        path = s.get(f"{secret}_file") or (f"{secrets_dir.rstrip('/')}/{s[f'{secret}_env']}"
                                           if s.get(f"{secret}_env") else None)
        if path is None:
            continue
        if r.kind == "webhook":
            out["http_config"] = {"authorization": {"type": "Bearer", "credentials_file": str(path)}}
        else:
            out[am_field] = str(path)
    if r.kind == "slack":
        out.update(title=_SLACK_TITLE, text=_SLACK_TEXT)
    if r.kind == "pagerduty":
        out.setdefault("severity", _PAGERDUTY_SEVERITY)
        out["description"] = _PAGERDUTY_DESCRIPTION
    return {"name": r.name, _CONFIG_KEY[r.kind]: [out]}


def _team_route(team: str, critical: tuple[str, ...], warning: tuple[str, ...], default: str) -> dict:
    children = []
    for severity, receivers in (("critical", critical), ("warning", warning)):
        for i, name in enumerate(receivers):
            child: dict[str, Any] = {"receiver": name, "matchers": [f'severity="{severity}"']}
            if i < len(receivers) - 1:
                child["continue"] = True  # every listed receiver gets the alert
            children.append(child)
    # Anything else of the team (no receiver listed for its severity) goes to the default receiver.
    return {"receiver": default, "matchers": [f'team="{team}"'], "routes": children}


def alertmanager_config(config: Config, options: AlertmanagerOptions = AlertmanagerOptions()) -> dict:
    a = config.alerting
    if any(r.name == NULL_RECEIVER for r in a.receivers):
        raise ConfigError([f"alerting.receivers: the name {NULL_RECEIVER!r} is reserved for info alerts"])
    routes: list[dict[str, Any]] = [{"receiver": NULL_RECEIVER, "matchers": ['severity="info"']}]
    for team in sorted(a.teams):
        t = a.teams[team]
        routes.append(_team_route(team, t.critical, t.warning, a.default_receiver))
    family = 'family=~"' + "|".join(CAUSED_BY_EXPORTER) + '"'
    return {
        "route": {
            "receiver": a.default_receiver,
            "group_by": GROUP_BY,
            "group_wait": a.group_wait,
            "group_interval": a.group_interval,
            "repeat_interval": a.repeat_interval,
            "routes": routes,
        },
        "inhibit_rules": [
            # A critical alert silences the warning and info alerts of its model and family
            # (accuracy critical silences accuracy and F1 warnings of the same model).
            {"source_matchers": ['severity="critical"'], "target_matchers": ['severity=~"warning|info"'],
             "equal": ["model", "family"]},
            {"source_matchers": ['severity="warning"'], "target_matchers": ['severity="info"'],
             "equal": ["model", "family"]},
            # A dead exporter explains missing traffic and labels: page for the cause only.
            {"source_matchers": ['alertname=~"ModelmonExporterDown|ModelmonExporterAbsent"'],
             "target_matchers": [family]},
        ],
        "receivers": [{"name": NULL_RECEIVER}]
        + [_receiver(r, options.secrets_dir) for r in a.receivers],
    }
