"""`modelmon dashboards push|list`: send the generated dashboards to a Grafana, or list them.

Credentials, in order: --token-file, GRAFANA_TOKEN (a service-account token, sent as a Bearer
header), then GRAFANA_USER/GRAFANA_PASSWORD (basic auth). ``--url https://user:password@host`` is
basic auth too, and only allowed alone: with a token or GRAFANA_USER it is an error (exit 2), since
one of the two would have to win silently. Credentials are never printed; a URL is shown with
``***@`` in place of its user:password.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from typing import Callable
from urllib.parse import urlsplit

DEFAULT_MESSAGE = "modelmon dashboards push"


class CredentialsError(Exception):
    """The credentials named on the command line cannot be used."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dashboards_command", metavar="ACTION")
    sub.required = True
    push = sub.add_parser("push", help="create or update the dashboards through the Grafana HTTP API",
                          description="Create or update the folder, the Prometheus datasource (by uid) and "
                                      "every generated dashboard; report created/updated/unchanged.")
    push.add_argument("--config", default="modelmon.yaml", help="modelmon config (default: %(default)s)")
    push.add_argument("--url", help="Grafana base URL (default: grafana.url from the config)")
    push.add_argument("--folder", help="folder title (default: grafana.folder from the config)")
    push.add_argument("--token-file", help="file holding a Grafana service-account token "
                                           "(default: env GRAFANA_TOKEN, then GRAFANA_USER/GRAFANA_PASSWORD)")
    push.add_argument("--prometheus-url", default="http://localhost:9090",
                      help="Prometheus URL as seen from Grafana, used only when the datasource must be "
                           "created (default: %(default)s)")
    push.add_argument("--message", default=DEFAULT_MESSAGE, help="version-history message (default: %(default)s)")
    push.add_argument("--dry-run", action="store_true",
                      help="write nothing; show what would change (created/updated/unchanged) when Grafana can be "
                           "read, else (unreachable, or no credentials and it asks for some) list what would be "
                           "pushed, without comparing")
    push.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP request (default: %(default)s)")
    push.add_argument("--retries", type=int, default=4,
                      help="retries on connection errors and 5xx, with exponential backoff (default: %(default)s)")
    lst = sub.add_parser("list", help="list the generated dashboards (uid, title, panels, file)")
    lst.add_argument("--config", default="modelmon.yaml", help="modelmon config (default: %(default)s)")


def _credentials(args: argparse.Namespace, environ: dict[str, str]):
    from modelmon.dashboards.client import Credentials

    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as fh:
                token = fh.read().strip()
        except OSError as e:
            raise CredentialsError(f"cannot read --token-file {args.token_file}: {e.strerror}") from None
        if not token:
            raise CredentialsError(f"--token-file {args.token_file} is empty")
        return Credentials(token=token)
    if environ.get("GRAFANA_TOKEN"):
        return Credentials(token=environ["GRAFANA_TOKEN"].strip())
    if environ.get("GRAFANA_USER"):
        return Credentials(user=environ["GRAFANA_USER"], password=environ.get("GRAFANA_PASSWORD", ""))
    return Credentials()


def _masked(url: str) -> str:
    """The URL for a message, with any user:password@ shown as ``***@`` (works on any text)."""
    return re.sub(r"(?<=//)[^/?#]*@", "***@", url)


def _url_and_credentials(url: str, args: argparse.Namespace, environ: dict[str, str]):
    """(URL without user:password@, Credentials). Credentials in the URL are basic auth, allowed
    only when no other credentials are given. Messages show the URL masked."""
    from modelmon.dashboards.client import split_credentials

    if _masked(args.prometheus_url) != args.prometheus_url:
        # It would be stored in the datasource's plain settings, readable by every Grafana user.
        raise CredentialsError(f"--prometheus-url {_masked(args.prometheus_url)}: credentials inline in a URL "
                               "are refused (Grafana would store them in the datasource's URL); set the "
                               "datasource's basic auth in Grafana instead")
    if "://" not in url:
        # "127.0.0.1:3000" or "grafana.example.com" would otherwise parse as a scheme or a path.
        raise CredentialsError(f"--url {_masked(url) if '@' not in url else '***@' + url.rpartition('@')[2]} has no "
                               f"scheme; use {_masked('http://' + url)} (or https://)")
    try:
        clean, in_url = split_credentials(url)
        parts = urlsplit(clean)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as e:
        raise CredentialsError(f"--url {_masked(url)} is not a valid URL: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CredentialsError(f"--url {_masked(url)}: expected an http(s) URL such as https://grafana.example.com")
    if in_url is None:
        return clean, _credentials(args, environ)
    others = [name for name, given in (("--token-file", bool(args.token_file)),
                                       ("GRAFANA_TOKEN", bool(environ.get("GRAFANA_TOKEN"))),
                                       ("GRAFANA_USER", bool(environ.get("GRAFANA_USER")))) if given]
    if others:
        raise CredentialsError(
            f"--url {_masked(url)} carries credentials (user:password@) and {' and '.join(others)} "
            f"{'is' if len(others) == 1 else 'are'} set too; use one: drop user:password@ from --url, "
            f"or the other credentials")
    return clean, in_url


def _push(args: argparse.Namespace, sleep: Callable[[float], None], environ: dict[str, str]) -> int:
    from modelmon.config import load_config
    from modelmon.dashboards.client import GrafanaClient, GrafanaError
    from modelmon.dashboards.generate import dashboards
    from modelmon.dashboards.provisioning import DEFAULT_SCRAPE_INTERVAL, datasource_definition, folder_uid
    from modelmon.dashboards.push import planned, push

    config = load_config(args.config)
    folder = args.folder or config.grafana.folder
    try:
        url, credentials = _url_and_credentials(args.url or config.grafana.url, args, environ)
    except CredentialsError as e:
        print(f"modelmon dashboards push: {e}", file=sys.stderr)
        return 2
    if credentials.kind == "no credentials" and not args.dry_run:
        print("modelmon dashboards push: no credentials: set GRAFANA_TOKEN (or --token-file) to a service-account "
              "token with the Editor role, or GRAFANA_USER and GRAFANA_PASSWORD", file=sys.stderr)
        return 2
    client = GrafanaClient(url, credentials, timeout=args.timeout, retries=args.retries, sleep=sleep)
    datasource = datasource_definition(config, args.prometheus_url, DEFAULT_SCRAPE_INTERVAL)
    print(f"{'dry run: ' if args.dry_run else ''}pushing to {client.display_url} "
          f"(folder {folder!r}, {credentials.kind})")
    counts: dict[str, int] = {}
    reported: list[object] = []

    def report(outcome) -> None:
        print("  " + outcome.line(args.dry_run))
        reported.append(outcome)
        if outcome.kind == "dashboard":
            counts[outcome.action] = counts.get(outcome.action, 0) + 1

    offline_because = None
    try:
        if args.dry_run:
            offline_because = _unreadable(client, credentials)
        if offline_because is None:
            push(client, dashboards(config), folder_uid=folder_uid(folder), folder_title=folder,
                 datasource=datasource, message=args.message, dry_run=args.dry_run, report=report)
    except GrafanaError as e:
        if args.dry_run and not reported and _offline_worthy(e, credentials):
            offline_because = str(e)
        else:
            print(f"modelmon dashboards push: {e}", file=sys.stderr)
            return 1
    finally:
        client.close()
    if offline_because is not None:
        print(f"  (cannot read Grafana: {offline_because}; listing what would be pushed, without comparing)")
        for outcome in planned(dashboards(config), folder_uid=folder_uid(folder), folder_title=folder,
                               datasource=datasource):
            report(outcome)
        n = counts.get("pushed", 0)
        print(f"dashboards: {n} would be created or updated (dry run, offline: nothing compared, nothing written)")
        return 0
    would = "would be " if args.dry_run else ""
    summary = ", ".join(f"{n} {would if action in ('created', 'updated') else ''}{action}"
                        for action, n in sorted(counts.items()))
    print(f"dashboards: {summary}{' (dry run, nothing written)' if args.dry_run else ''}")
    return 0


def _unreadable(client, credentials) -> str | None:
    """For --dry-run: why Grafana cannot be compared with (nothing answers at its URL), or None.
    One attempt, no retries: a dry run against a Grafana that is not there need not wait."""
    import requests

    try:
        client.session.get(client.base + "/api/health", timeout=client.timeout).close()
    except (requests.ConnectionError, requests.Timeout) as e:
        return f"nothing answers at {client.display_url} ({type(e).__name__})"
    return None


def _offline_worthy(e, credentials) -> bool:
    """Grafana asks for credentials and none were given: a dry run can still list."""
    return e.status in (401, 403) and credentials.kind == "no credentials"


def _list(args: argparse.Namespace) -> int:
    from modelmon.config import load_config
    from modelmon.dashboards.generate import dashboard_path, dashboards
    from modelmon.dashboards.queries import iter_panels

    for d in dashboards(load_config(args.config)):
        panels = [p for p in iter_panels(d) if p["type"] != "row"]
        print(f"{d['uid']:<20} {d['title']:<36} {len(panels):>3} panels  {dashboard_path(d)}")
    return 0


def run(args: argparse.Namespace, *, sleep: Callable[[float], None] = time.sleep,
        environ: dict[str, str] | None = None) -> int:
    if args.dashboards_command == "list":
        return _list(args)
    return _push(args, sleep, dict(os.environ) if environ is None else environ)
