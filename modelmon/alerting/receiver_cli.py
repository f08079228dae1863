"""`modelmon receiver`: run the on-call webhook inbox for Alertmanager."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Mapping

DEFAULT_PORT = 9095
TOKEN_ENV = "MODELMON_RECEIVER_TOKEN"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="listen port (default: %(default)s)")
    p.add_argument("--db", type=Path, default=Path("modelmon-alerts.db"),
                   help="SQLite file that keeps the alerts (default: %(default)s)")
    secret = p.add_mutually_exclusive_group()
    secret.add_argument("--token", help=f"bearer token POST /webhook requires (or env {TOKEN_ENV})")
    secret.add_argument("--token-file", type=Path, help="read the bearer token from this file")
    p.add_argument("--log-level", default="INFO")


def token_from(token: str | None, token_file: Path | None, environ: Mapping[str, str]) -> str | None:
    """The shared secret: --token, else --token-file, else the environment; None means no auth."""
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as e:
            raise SystemExit(f"modelmon receiver: cannot read --token-file {token_file}: {e.strerror}") from None
        if not token:
            raise SystemExit(f"modelmon receiver: --token-file {token_file} is empty")
    return token or environ.get(TOKEN_ENV) or None


def run(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading

    from werkzeug.serving import make_server

    from modelmon.alerting.receiver import create_app
    from modelmon.alerting.store import AlertStore

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("modelmon.receiver")
    token = token_from(args.token, args.token_file, os.environ)
    store = AlertStore(args.db)
    server = make_server(args.host, args.port, create_app(store, token), threaded=True)

    def shutdown(signum, _frame):
        log.info("signal %d: shutting down", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    log.info("receiving Alertmanager webhooks on http://%s:%d/webhook (db %s, %s)", args.host, server.port,
             args.db, "bearer token required" if token else "no auth")
    server.serve_forever()
    return 0
