"""`modelmon receiver`: run the on-call webhook inbox for Alertmanager."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Mapping

from modelmon.files import read_secret_file
from modelmon.serving import add_http_arguments

DEFAULT_PORT = 9095
TOKEN_ENV = "MODELMON_RECEIVER_TOKEN"
NO_GRAFANA = "none"  # = modelmon.receiver.links.NO_GRAFANA (not imported: --help stays fast)


def grafana_url(value: str) -> str:
    """--grafana-url: `none`, or an http(s) URL (argparse turns the ValueError into a usage error)."""
    if value == NO_GRAFANA:
        return value
    if not value.startswith(("http://", "https://")) or len(value.split("://", 1)[1].strip("/")) == 0:
        raise argparse.ArgumentTypeError(f"expected an http(s) URL or 'none', got {value!r}")
    return value.rstrip("/")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="listen port (default: %(default)s)")
    p.add_argument("--db", type=Path, default=Path("modelmon-alerts.db"),
                   help="SQLite file that keeps the alerts (default: %(default)s)")
    secret = p.add_mutually_exclusive_group()
    secret.add_argument("--token", help=f"bearer token POST /webhook requires (or env {TOKEN_ENV})")
    secret.add_argument("--token-file", type=Path, help="read the bearer token from this file")
    p.add_argument("--grafana-url", type=grafana_url, metavar="URL|none",
                   help="Grafana that dashboard links open (the dashboard_url annotations' path from /d/ on, "
                        "at the alert's time range); 'none' when there is no Grafana: the inbox says so instead "
                        "of linking (default: the dashboard_url annotations as they are)")
    p.add_argument("--runbook", type=Path, metavar="PATH",
                   help="Markdown runbook served at /runbook, a heading anchor per alert (default: the copy "
                        "packaged with modelmon, else the source checkout's alerting/RUNBOOK.md)")
    p.add_argument("--log-level", default="INFO")
    add_http_arguments(p)


def token_from(token: str | None, token_file: Path | None, environ: Mapping[str, str]) -> str | None:
    """The shared secret: --token, else --token-file, else the environment; None means no auth."""
    if token_file is not None:
        try:
            token = read_secret_file(token_file, "--token-file")
        except ValueError as e:
            raise SystemExit(f"modelmon receiver: {e}") from None
    return token or environ.get(TOKEN_ENV) or None


def run(args: argparse.Namespace) -> int:
    import logging
    import signal

    from modelmon.receiver.app import MAX_BODY_BYTES, create_app
    from modelmon.receiver.runbook import Runbook, default_path
    from modelmon.receiver.store import AlertStore, StoreError
    from modelmon.serving import Server, limits_from_args

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("modelmon.receiver")
    token = token_from(args.token, args.token_file, os.environ)
    runbook_path = args.runbook
    if runbook_path is not None:
        try:
            runbook_path.read_bytes()
        except OSError as e:
            print(f"modelmon receiver: cannot read --runbook {runbook_path}: {e.strerror or e}", file=sys.stderr)
            return 2
    else:
        runbook_path = default_path()
        if runbook_path is None:
            log.warning("no runbook found (pass --runbook PATH): /runbook answers 404")
    try:
        store = AlertStore(args.db)  # refuses a directory, or a file in a directory that does not exist
    except StoreError as e:
        print(f"modelmon receiver: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - sqlite3.Error, OSError: a file that is not a database, no permission
        print(f"modelmon receiver: cannot open the alert database {args.db}: {e}", file=sys.stderr)
        return 2
    try:
        app = create_app(store, token, grafana_url=args.grafana_url, runbook=Runbook(runbook_path))
        server = Server(app, args.host, args.port, limits_from_args(args, MAX_BODY_BYTES),
                        name="modelmon-receiver")
    except OSError as e:
        print(f"modelmon receiver: cannot listen on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr)
        return 2

    def shutdown(signum, _frame):
        log.info("signal %d: shutting down", signum)
        server.shutdown()  # non-blocking, lock-free

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    log.info("receiving Alertmanager webhooks on http://%s:%d/webhook (db %s, %s; runbook %s; dashboards %s)",
             args.host, server.port, args.db, "bearer token required" if token else "no auth",
             runbook_path or "none", {None: "as annotated", NO_GRAFANA: "none"}.get(args.grafana_url, args.grafana_url))
    server.serve_forever()
    return 0
