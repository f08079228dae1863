"""alerting/alertmanager.yml: route tree by team and severity, inhibitions, receivers.

Secrets never enter the generated file. Alertmanager does not expand environment variables in
its configuration, so every secret is referenced by a *_file field:
- ``<secret>_file: PATH`` in modelmon.yaml is written as is;
- ``<secret>_env: NAME`` becomes ``<secret>_file: <secrets_dir>/NAME``, and whoever starts
  Alertmanager writes the variable's value there first (``write_env_secrets``, mode 0600;
  `modelmon stack up` does, into its work directory).

A webhook whose URL is itself the secret (``url_file``/``url_env``) becomes Alertmanager's
``webhook_configs[].url_file``, which Alertmanager reads since 0.26 (docker-compose runs 0.27).
Older Alertmanagers (Debian's 0.25) reject the field; for them `modelmon stack up` copies the URL
into its private, mode-0600 copy of the config instead (``inline_url_files``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from modelmon.alerting.alerts import CAUSED_BY_EXPORTER
from modelmon.config import Config, ConfigError, Receiver
from modelmon.files import write_atomically

SECRETS_DIR = "/etc/alertmanager/secrets"
NULL_RECEIVER = "null"  # info alerts end here: visible in Alertmanager, sent nowhere
# One incident = one alert of one model version: its warning and critical, and the windows of a
# burn-rate alert, share a group (a notification thread) whenever they share a receiver.
GROUP_BY = ["alertname", "model", "version"]
# A critical alert supersedes the warning of the *same* alert and series: not another metric of
# the family (AccuracyLow critical must not hide an F1Low warning), nor another version or feature.
SUPERSEDES_EQUAL = ["alertname", "model", "version", "feature"]

# Alertmanager reads webhook_configs[].url_file from this version on.
URL_FILE_SINCE = (0, 26, 0)

# Secret setting of each receiver kind -> the Alertmanager field that reads it from a file.
_SECRET_FIELDS = {
    "webhook": {"url": "url_file", "bearer_token": "credentials_file"},
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


def write_secret_file(path: str | os.PathLike, text: str) -> Path:
    """Write a secret atomically with mode 0600 (a temporary file in the same folder, then a rename
    over ``path``): an existing file, whatever its mode, is replaced by the new 0600 one, so a
    secret file left at 0644 is tightened the next time it is written."""
    return write_atomically(path, text.encode("utf-8"), mode=0o600)


def _env_settings(config: Config) -> list[tuple[str, str]]:
    """(key path, environment variable) of every *_env setting, in config order."""
    out = []
    for i, r in enumerate(config.alerting.receivers):
        for secret in _SECRET_FIELDS[r.kind]:
            env = r.settings.get(f"{secret}_env")
            if env:
                out.append((f"alerting.receivers[{i}].{r.kind}.{secret}_env", str(env)))
    return out


def env_secret_files(config: Config, secrets_dir: str = SECRETS_DIR) -> dict[str, str]:
    """{environment variable: file Alertmanager reads it from} for every *_env setting."""
    return {env: f"{secrets_dir.rstrip('/')}/{env}" for _, env in sorted(_env_settings(config), key=lambda x: x[1])}


def write_env_secrets(config: Config, secrets_dir: str | Path,
                      environ: Mapping[str, str] = os.environ) -> list[Path]:
    """Write each *_env secret into its file (mode 0600, folder 0700) before Alertmanager starts."""
    missing = [f"{path}: environment variable {env} is not set (the receiver reads its secret from it)"
               for path, env in _env_settings(config) if not environ.get(env)]
    if missing:
        raise ConfigError(missing)
    written = []
    for env, path in env_secret_files(config, str(secrets_dir)).items():
        p = Path(path)
        p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        written.append(write_secret_file(p, environ[env]))
    return written


def inline_url_files(document: dict[str, Any]) -> list[str]:
    """For an Alertmanager older than 0.26: replace each ``webhook_configs[].url_file`` of a
    rendered config by ``url`` holding the file's content (trimmed, as Alertmanager reads it).
    Returns the names of the receivers changed. The document then holds secrets: write it with
    ``write_secret_file``. Raises ConfigError naming the receiver when a file cannot be read."""
    changed = []
    for receiver in document.get("receivers") or []:
        for i, hook in enumerate(receiver.get("webhook_configs") or []):
            if "url_file" not in hook:
                continue
            path = hook["url_file"]
            where = f"receiver {receiver.get('name')!r}: webhook url_file {path}"
            try:
                url = Path(path).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError([f"{where}: cannot read: {getattr(e, 'strerror', None) or e}"]) from None
            if not url:
                raise ConfigError([f"{where}: the file is empty"])
            # Same position in the mapping, so the rendered file keeps its key order.
            receiver["webhook_configs"][i] = {("url" if k == "url_file" else k): (url if k == "url_file" else v)
                                              for k, v in hook.items()}
            changed.append(str(receiver.get("name")))
    return changed


def _receiver(r: Receiver, secrets_dir: str) -> dict[str, Any]:
    s = r.settings
    out: dict[str, Any] = {}
    for secret, am_field in _SECRET_FIELDS[r.kind].items():
        path = s.get(f"{secret}_file") or (f"{secrets_dir.rstrip('/')}/{s[f'{secret}_env']}"
                                           if s.get(f"{secret}_env") else None)
        if path is None:
            continue
        if r.kind == "webhook" and secret == "bearer_token":
            out["http_config"] = {"authorization": {"type": "Bearer", "credentials_file": str(path)}}
        else:
            out[am_field] = str(path)
    # url (or url_file) first, as people write it; then the plain settings; then http_config.
    out = {**{k: s[k] for k in _PASSTHROUGH[r.kind] if k in s}, **out}
    if "url_file" in out:
        out = {"url_file": out.pop("url_file"), **out}
    if r.kind == "slack":
        out.update(title=_SLACK_TITLE, text=_SLACK_TEXT)
    if r.kind == "pagerduty":
        out.setdefault("severity", _PAGERDUTY_SEVERITY)
        out["description"] = _PAGERDUTY_DESCRIPTION
    return {"name": r.name, _CONFIG_KEY[r.kind]: [out]}


def _team_route(team: str, critical: tuple[str, ...], warning: tuple[str, ...], default: str) -> dict:
    """A team's alerts to its receivers. When pages and tickets go to the same receivers, one
    child route per receiver takes both severities, so the warning and the critical of one
    incident form one Alertmanager group: one thread, the critical superseding the warning (an
    inhibition mutes the warning). Different receivers per severity need one route each (a
    pager and a ticket queue are different threads by nature)."""
    if set(critical) == set(warning):
        lanes = [("", critical)]
    else:
        lanes = [('severity="critical"', critical), ('severity="warning"', warning)]
    children = []
    for matcher, receivers in lanes:
        for i, name in enumerate(receivers):
            child: dict[str, Any] = {"receiver": name}
            if matcher:
                child["matchers"] = [matcher]
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
            # The critical of an alert supersedes its warning (same alert, model, version, feature).
            {"source_matchers": ['severity="critical"'], "target_matchers": ['severity="warning"'],
             "equal": SUPERSEDES_EQUAL},
            # A dead exporter explains missing traffic and labels of the models it serves: page for
            # the cause only, and only on that exporter (another shard's alerts stay loud).
            {"source_matchers": ['alertname="ModelmonExporterDown"'], "target_matchers": [family],
             "equal": ["job", "instance"]},
        ],
        "receivers": [{"name": NULL_RECEIVER}]
        + [_receiver(r, options.secrets_dir) for r in a.receivers],
    }
