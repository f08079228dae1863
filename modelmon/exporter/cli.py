"""`modelmon serve`: the exporter on a prediction log and/or POST /ingest."""
from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

DEFAULT_PORT = 9188

# What `modelmon serve` keeps next to the log it follows, by default (LOG + suffix).
OFFSET_SUFFIX = ".modelmon-offset"
REFERENCES_SUFFIX = ".modelmon-references"
CHECKPOINT_SUFFIX = ".modelmon-checkpoint"
STATE_SUFFIXES = (OFFSET_SUFFIX, REFERENCES_SUFFIX, CHECKPOINT_SUFFIX)


def beside(log: Path, suffix: str) -> Path:
    """The state file `suffix` of the log `log`."""
    return log.with_name(log.name + suffix)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="modelmon.yaml", help="modelmon.yaml (default: %(default)s)")
    p.add_argument("--log", type=Path, help="prediction log (JSON Lines) to follow like tail -F")
    p.add_argument("--from-start", action="store_true",
                   help="replay the whole log instead of resuming (or, without a state file, starting at its end)")
    p.add_argument("--state-file", type=Path,
                   help=f"where the read offset is kept across restarts (default: LOG{OFFSET_SUFFIX})")
    p.add_argument("--reference-store", type=Path,
                   help="where references frozen from traffic ({first: N}, or outputs missing from a reference "
                        f"file) are kept across restarts (default: LOG{REFERENCES_SUFFIX}/; none without --log)")
    p.add_argument("--checkpoint", type=Path,
                   help="where the windows and the predictions waiting for late labels are saved, so a restart "
                        f"keeps them (default: LOG{CHECKPOINT_SUFFIX}; none without --log)")
    p.add_argument("--checkpoint-interval", type=float, default=60.0,
                   help="seconds between checkpoints, besides the one at shutdown; 0 saves only at shutdown "
                        "(default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="listen port (default: %(default)s)")
    p.add_argument("--ingest-token", help="bearer token required by POST /ingest (or env MODELMON_INGEST_TOKEN)")
    p.add_argument("--ingest-max-bytes", type=int, default=10 << 20, help="POST /ingest body limit (413 above)")
    p.add_argument("--refresh-interval", type=float, default=1.0,
                   help="seconds between recomputations of windowed gauges (default: %(default)s)")
    p.add_argument("--poll-interval", type=float, default=0.2, help="seconds between log polls when idle")
    p.add_argument("--log-level", default="INFO")


def run(args: argparse.Namespace) -> int:
    from werkzeug.serving import make_server

    from modelmon.config import load_config
    from modelmon.exporter.checkpoint import Checkpointer
    from modelmon.exporter.pipeline import Exporter
    from modelmon.exporter.server import create_app, ingest_token_from
    from modelmon.exporter.source import FileSource

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("modelmon.serve")
    config = load_config(args.config)
    store = args.reference_store
    if store is None and args.log is not None:
        store = beside(args.log, REFERENCES_SUFFIX)
    exporter = Exporter(config, refresh_interval=args.refresh_interval, reference_store=store)
    exporter.load_references()
    checkpoint_path = args.checkpoint
    if checkpoint_path is None and args.log is not None:
        checkpoint_path = beside(args.log, CHECKPOINT_SUFFIX)
    checkpointer = Checkpointer(exporter, checkpoint_path, args.checkpoint_interval) if checkpoint_path else None
    if checkpointer is not None:
        if args.from_start:  # the replay rebuilds the windows; the checkpoint would count them twice
            log.info("--from-start: not restoring the checkpoint %s", checkpoint_path)
        else:
            checkpointer.restore()
    exporter.start_background()

    source = None
    if args.log is not None:
        state_file = args.state_file or beside(args.log, OFFSET_SUFFIX)
        source = FileSource(exporter, args.log, state_file, from_start=args.from_start,
                            poll_interval=args.poll_interval,
                            after_commit=checkpointer.maybe_save if checkpointer else None)
        source.start()
        log.info("following %s (offset kept in %s)", args.log, state_file)

    app = create_app(exporter, ingest_token=ingest_token_from(args.ingest_token),
                     ingest_max_bytes=args.ingest_max_bytes)
    server = make_server(args.host, args.port, app, threaded=True)
    log.info("serving http://%s:%d/metrics", args.host, server.port)

    def shutdown(signum, _frame):
        log.info("signal %d: shutting down", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    if checkpointer is not None and source is None and args.checkpoint_interval > 0:  # HTTP only: on a timer
        exporter.run_every("modelmon-checkpoint", args.checkpoint_interval, checkpointer.save_if_changed)
    try:
        server.serve_forever()
    finally:
        stopped_cleanly = source.stop() if source is not None else True  # commits the offset of everything ingested
        exporter.stop()
        # Saved after the final commit so the two agree; a reader that did not stop may still
        # hold an uncommitted batch, and then the last periodic checkpoint is the consistent one.
        if checkpointer is not None and stopped_cleanly:
            checkpointer.save()
    return 0
