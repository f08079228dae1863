"""`modelmon serve`: the exporter on a prediction log, a Redis Stream and/or POST /ingest."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from modelmon.files import read_secret_file
from modelmon.serving import add_http_arguments

DEFAULT_PORT = 9188
DEFAULT_INGEST_MAX_BYTES = 10 << 20  # = modelmon.exporter.server.DEFAULT_INGEST_MAX_BYTES (not imported: --help stays fast)

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
    p.add_argument("--stream", metavar="URL",
                   help="also consume a Redis Stream as a member of a consumer group: "
                        "redis://[:PASSWORD@]HOST[:PORT][/DB]?stream=NAME&group=GROUP[&consumer=NAME]"
                        "[&claim_idle=60s][&batch=500][&block=1s] (one record per entry, JSON text in the field "
                        "`record`; consumer defaults to the host name; a password in the URL is visible in ps: "
                        "prefer --stream-password-file)")
    p.add_argument("--stream-password-file", type=Path, metavar="PATH",
                   help="read the Redis password from this file (else the URL's, else env MODELMON_REDIS_PASSWORD)")
    p.add_argument("--from-start", action="store_true",
                   help="replay the whole log instead of resuming (or, without a state file, starting at its end)")
    p.add_argument("--state-file", type=Path,
                   help=f"where the read offset is kept across restarts (default: LOG{OFFSET_SUFFIX})")
    p.add_argument("--reference-store", type=Path,
                   help="where references frozen from traffic ({first: N}, or outputs missing from a reference "
                        f"file) are kept across restarts (default: LOG{REFERENCES_SUFFIX}/; none without --log)")
    p.add_argument("--checkpoint", type=Path,
                   help="where the windows and the predictions waiting for late labels are saved, so a restart "
                        f"keeps them (default: LOG{CHECKPOINT_SUFFIX}; none without --log); with --stream alone it "
                        "is saved after acknowledgements")
    p.add_argument("--checkpoint-interval", type=float, default=60.0,
                   help="seconds between checkpoints, besides the one at shutdown; 0 saves only at shutdown "
                        "(default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="listen port (default: %(default)s)")
    token = p.add_mutually_exclusive_group()
    token.add_argument("--ingest-token",
                       help="bearer token required by POST /ingest (or env MODELMON_INGEST_TOKEN); "
                            "visible in ps: prefer --ingest-token-file")
    token.add_argument("--ingest-token-file", type=Path, metavar="PATH",
                       help="read the POST /ingest bearer token from this file (surrounding whitespace stripped)")
    p.add_argument("--ingest-max-bytes", type=_positive_int, default=DEFAULT_INGEST_MAX_BYTES, metavar="BYTES",
                   help="POST /ingest body limit, on the bytes actually received whatever the framing "
                        "(413 above, nothing applied; default: %(default)s)")
    p.add_argument("--ingest-max-decompressed-bytes", type=_positive_int, metavar="BYTES",
                   help="limit of a Content-Encoding: gzip body once decompressed (413 above, nothing applied; "
                        "default: 4 x --ingest-max-bytes)")
    p.add_argument("--refresh-interval", type=float, default=1.0,
                   help="seconds between recomputations of windowed gauges (default: %(default)s)")
    p.add_argument("--poll-interval", type=float, default=0.2, help="seconds between log polls when idle")
    p.add_argument("--log-level", default="INFO")
    add_http_arguments(p)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


class StartupError(Exception):
    """A mistake in the command line found before anything was created: one line, exit 2."""


def check_paths(args: argparse.Namespace) -> None:
    """Refuse paths in directories that do not exist, before anything is created."""
    if args.log is not None:
        if args.log.is_dir():
            raise StartupError(f"--log {args.log} is a directory, not a file")
        if not args.log.parent.is_dir():
            raise StartupError(f"--log {args.log}: the directory {args.log.parent} does not exist "
                               "(a missing log file is waited for; a missing directory is a mistake)")
    for flag, path in (("--state-file", args.state_file), ("--checkpoint", args.checkpoint),
                       ("--reference-store", args.reference_store)):
        if path is not None and not path.parent.is_dir():
            raise StartupError(f"{flag} {path}: the directory {path.parent} does not exist")


def stream_url(args: argparse.Namespace):
    """The parsed --stream URL (None without one); StartupError naming the URL without its password."""
    if args.stream is None:
        if args.stream_password_file is not None:
            raise StartupError("--stream-password-file without --stream")
        return None
    from modelmon.exporter.stream import parse_url, redact
    password = read_secret_file(args.stream_password_file, "--stream-password-file") \
        if args.stream_password_file is not None else None
    try:
        return parse_url(args.stream, password, os.environ.get("MODELMON_REDIS_PASSWORD") or None)
    except ValueError as e:
        raise StartupError(f"--stream {redact(args.stream)}: {e}") from None


def run(args: argparse.Namespace) -> int:
    try:
        check_paths(args)
        token = read_secret_file(args.ingest_token_file, "--ingest-token-file") \
            if args.ingest_token_file is not None else None
        stream = stream_url(args)
    except (StartupError, ValueError) as e:
        print(f"modelmon serve: {e}", file=sys.stderr)
        return 2

    from modelmon.config import load_config
    from modelmon.exporter import gc_tuning
    from modelmon.exporter.checkpoint import Checkpointer
    from modelmon.exporter.pipeline import Exporter
    from modelmon.exporter.server import create_app, ingest_token_from
    from modelmon.exporter.source import FileSource
    from modelmon.serving import Server, limits_from_args

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
        elif checkpointer.restore():
            exporter.refresh(force=True)  # the first scrape shows the restored gauges, not blanks

    app = create_app(exporter, ingest_token=token or ingest_token_from(args.ingest_token),
                     ingest_max_bytes=args.ingest_max_bytes,
                     ingest_max_decompressed_bytes=args.ingest_max_decompressed_bytes)
    try:  # bound before any thread starts: a port in use is one line, not a traceback
        server = Server(app, args.host, args.port, limits_from_args(args, args.ingest_max_bytes), name="modelmon")
    except OSError as e:
        print(f"modelmon serve: cannot listen on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr)
        return 2

    gc_tuning.tune()  # after the references and the checkpoint: they are long-lived
    exporter.start_background()
    source = streamer = None
    save = checkpointer.maybe_save if checkpointer else None
    if stream is not None:
        from modelmon.exporter.stream import StreamSource
        # Alone, it saves the checkpoint after its acks; beside a log, the file source does (see _gated).
        streamer = StreamSource(exporter, stream, after_commit=save if args.log is None else None)
    if args.log is not None:
        state_file = args.state_file or beside(args.log, OFFSET_SUFFIX)
        source = FileSource(exporter, args.log, state_file, from_start=args.from_start,
                            poll_interval=args.poll_interval,
                            after_commit=_gated(streamer.gate, save) if streamer and save else save)
        source.start()
        log.info("following %s (offset kept in %s)", args.log, state_file)
    if streamer is not None:
        streamer.start()
        log.info("consuming %s as consumer %r", stream.safe(), stream.consumer)
    log.info("serving http://%s:%d/metrics", args.host, server.port)

    def shutdown(signum, _frame):
        log.info("signal %d: shutting down", signum)
        server.shutdown()  # non-blocking, lock-free

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    if checkpointer is not None and source is None and streamer is None and args.checkpoint_interval > 0:  # HTTP only
        exporter.run_every("modelmon-checkpoint", args.checkpoint_interval, checkpointer.save_if_changed)
    try:
        server.serve_forever()
    finally:
        failures = final_writes(exporter, source, checkpointer, streamer)
    if failures:
        print(f"modelmon serve: could not save state at shutdown: {'; '.join(failures)}", file=sys.stderr)
        return 1
    return 0


def _gated(gate, save):
    """The checkpoint of a log and a stream together: taken by the file source right after its
    offset commit, and skipped (till its next commit) while the stream has a batch applied and not
    yet acknowledged, which Redis would deliver again after a crash."""
    def run() -> None:
        if gate.acquire(blocking=False):
            try:
                save()
            finally:
                gate.release()
    return run


def final_writes(exporter, source, checkpointer, stream=None) -> list[str]:
    """Commit the offset, ack the stream's batch in hand and save the checkpoint at shutdown; what
    failed, as short phrases."""
    failures: list[str] = []
    consistent = True  # the state in memory matches the offset on disk: a checkpoint of it may be written
    if stream is not None:
        if not stream.stop():  # finishes the batch in hand and acks it; never raises
            consistent = False
            failures.append("the stream reader did not stop in time (checkpoint not saved)")
        elif stream.unacked:
            consistent = False
            failures.append(f"{stream.unacked} stream entries applied but not acknowledged (Redis unreachable): "
                            "they are delivered again after a restart, so the checkpoint is not saved")
    if source is not None:
        stopped = source.stop()  # commits the offset of everything ingested; never raises
        commit_error = source.final_commit_error  # set by stop() when the final offset save failed
        if not stopped:
            consistent = False
            failures.append("the log reader did not stop within 10 s (offset and checkpoint not saved)")
        elif commit_error is not None:
            consistent = False
            failures.append(f"offset not committed ({_describe(commit_error)}); the last checkpoint, written "
                            f"with the last saved offset, is kept")
    exporter.stop()
    # The checkpoint must agree with the saved offset. When the offset could not be saved, the
    # last periodic checkpoint (written only right after a successful commit) is the one that
    # agrees: a restart restores it and re-reads the lines since that offset, so the windows come
    # back exact. A newer checkpoint would hold those lines, and the re-read would count them twice.
    if checkpointer is not None and consistent and not checkpointer.save():
        failures.append(f"checkpoint {checkpointer.path} not written (see the log above)")
    return failures


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
