"""A small Grafana HTTP API client: health, folders, datasources, dashboards.

Only documented endpoints (Grafana 9-11 ``/api``) are used. Connection errors and 5xx answers
are retried with bounded exponential backoff; 4xx answers raise ``GrafanaError`` at once with
Grafana's own message. Credentials live only in the session headers: they are never part of a
message, a log record or ``repr``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import requests

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({500, 502, 503, 504})
MAX_BACKOFF_SECONDS = 10.0

HINTS = {
    401: "check the credentials: GRAFANA_TOKEN or --token-file (a service-account token), "
         "or GRAFANA_USER/GRAFANA_PASSWORD for basic auth",
    403: "the credentials are valid but lack a permission: pushing dashboards needs the Editor role, "
         "creating the datasource needs Admin",
}
STATUS_HINTS = {
    "version-mismatch": "the dashboard was changed in Grafana since it was read; push again to overwrite it",
    "name-exists": "another dashboard in the folder has the same title or uid; rename or delete it in Grafana",
    "plugin-dashboard": "the dashboard belongs to a Grafana plugin and cannot be overwritten",
}


class GrafanaError(Exception):
    """An API call failed; ``status`` is the HTTP status (None when Grafana never answered)."""

    def __init__(self, message: str, status: int | None = None, grafana_status: str | None = None):
        super().__init__(message)
        self.status = status
        self.grafana_status = grafana_status


@dataclass(frozen=True)
class Credentials:
    token: str | None = None
    user: str | None = None
    password: str | None = None

    def __repr__(self) -> str:  # never show a secret, even in a traceback
        kind = "token" if self.token else "basic" if self.user else "anonymous"
        return f"Credentials({kind})"

    @property
    def kind(self) -> str:
        return "token" if self.token else "basic auth" if self.user else "no credentials"


def redact_url(url: str) -> str:
    """The URL for messages: any user:password@ part shown as ``***@``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def split_credentials(url: str) -> tuple[str, Credentials | None]:
    """(the URL without ``user:password@``, basic-auth Credentials from it or None)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    clean = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return clean, Credentials(user=unquote(user), password=unquote(password))


class ConflictingCredentials(ValueError):
    """The URL carries user:password@ and other credentials are given too."""


class GrafanaClient:
    def __init__(self, url: str, credentials: Credentials, *, timeout: float = 10.0, retries: int = 4,
                 backoff: float = 0.5, sleep: Callable[[float], None] = time.sleep):
        # Credentials in the URL become explicit basic auth and leave the URL, so requests never
        # sees them (it would let them replace a bearer token silently, and could echo them).
        url, in_url = split_credentials(url)
        if in_url is not None:
            if (credentials.token or credentials.user) and credentials != in_url:
                raise ConflictingCredentials(
                    f"the Grafana URL {redact_url(url)} carries credentials (user:password@) and "
                    f"{credentials.kind} credentials are given too; use one")
            credentials = in_url
        self.base = url.rstrip("/")
        self.display_url = redact_url(self.base)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.sleep = sleep
        self.session = requests.Session()
        self.session.headers.update({"Accept": "application/json", "User-Agent": "modelmon"})
        if credentials.token:
            self.session.headers["Authorization"] = f"Bearer {credentials.token}"
        elif credentials.user:
            self.session.auth = (credentials.user, credentials.password or "")

    def close(self) -> None:
        self.session.close()

    # ------------------------------------------------------------------ transport

    def _delay(self, attempt: int) -> float:
        return min(self.backoff * 2 ** attempt, MAX_BACKOFF_SECONDS)

    def request(self, method: str, path: str, *, what: str, body: Any = None,
                ok: tuple[int, ...] = (200,)) -> tuple[int, Any]:
        """Send one API call, retrying transient failures; return (status, parsed body) for a
        status in ``ok``, raise GrafanaError for anything else."""
        url = self.base + path
        last_problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                delay = self._delay(attempt - 1)
                log.info("retrying %s %s in %.1fs (%s)", method, path, delay, last_problem)
                self.sleep(delay)
            try:
                resp = self.session.request(method, url, json=body, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as e:
                last_problem = f"{type(e).__name__}"
                continue
            log.debug("%s %s -> %d", method, path, resp.status_code)
            if resp.status_code in RETRYABLE_STATUS:
                last_problem = f"HTTP {resp.status_code}"
                continue
            payload = _json_or_text(resp)
            if resp.status_code in ok:
                return resp.status_code, payload
            raise self._error(resp.status_code, payload, what)
        raise GrafanaError(f"{what}: Grafana at {self.display_url} did not answer successfully after "
                           f"{self.retries + 1} attempts (last: {last_problem})")

    def _error(self, status: int, payload: Any, what: str) -> GrafanaError:
        message = payload.get("message", "") if isinstance(payload, dict) else str(payload)[:200]
        grafana_status = payload.get("status") if isinstance(payload, dict) else None
        text = f"{what}: Grafana at {self.display_url} answered HTTP {status}"
        if grafana_status:
            text += f" ({grafana_status})"
        if message:
            text += f": {message}"
        hint = STATUS_HINTS.get(grafana_status or "") or HINTS.get(status)
        if status == 400 and "provisioned" in message.lower():
            hint = ("that Grafana loads this dashboard from provisioning files; update the files "
                    "(modelmon generate) or remove the provider instead of pushing")
        if hint:
            text += f" — {hint}"
        return GrafanaError(text, status=status, grafana_status=grafana_status)

    # ------------------------------------------------------------------ endpoints

    def health(self) -> dict[str, Any]:
        _, body = self.request("GET", "/api/health", what="health check")
        if not isinstance(body, dict) or body.get("database") != "ok":
            raise GrafanaError(f"health check: Grafana at {self.display_url} reports its database as "
                               f"{body.get('database') if isinstance(body, dict) else body!r}")
        return body

    def get_folder(self, uid: str) -> dict[str, Any] | None:
        status, body = self.request("GET", f"/api/folders/{quote(uid)}", what=f"read folder {uid}", ok=(200, 404))
        return body if status == 200 else None

    def create_folder(self, uid: str, title: str) -> dict[str, Any]:
        _, body = self.request("POST", "/api/folders", body={"uid": uid, "title": title},
                               what=f"create folder {title!r}")
        return body

    def get_datasource(self, uid: str) -> dict[str, Any] | None:
        status, body = self.request("GET", f"/api/datasources/uid/{quote(uid)}", what=f"read datasource {uid}",
                                    ok=(200, 404))
        return body if status == 200 else None

    def create_datasource(self, definition: dict[str, Any]) -> dict[str, Any]:
        _, body = self.request("POST", "/api/datasources", body=definition,
                               what=f"create datasource {definition['uid']}")
        return body

    def get_dashboard(self, uid: str) -> dict[str, Any] | None:
        """{"dashboard": ..., "meta": ...} or None when Grafana has no dashboard with this uid."""
        status, body = self.request("GET", f"/api/dashboards/uid/{quote(uid)}", what=f"read dashboard {uid}",
                                    ok=(200, 404))
        return body if status == 200 else None

    def save_dashboard(self, dashboard: dict[str, Any], *, folder_uid: str, message: str,
                       overwrite: bool = True) -> dict[str, Any]:
        payload = {"dashboard": dashboard, "folderUid": folder_uid, "overwrite": overwrite, "message": message}
        _, body = self.request("POST", "/api/dashboards/db", body=payload,
                               what=f"save dashboard {dashboard.get('uid')}")
        return body


def _json_or_text(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return resp.text
