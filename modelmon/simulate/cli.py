"""`modelmon simulate`: write a realistic prediction log, reference data and a matching config.

Batch mode (--records N, or --batch with --duration/--schedule) writes everything at once with
event times spaced 1/rate apart from --start; live mode (the default) writes in real time.
"""
from __future__ import annotations

import argparse
import signal
import sys
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import IO, TYPE_CHECKING

from modelmon.config import parse_duration
from modelmon.simulate.scenarios import CANDIDATES, SCENARIOS, Timeline, parse_schedule

if TYPE_CHECKING:
    from modelmon.simulate.simulator import Simulator


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list of names")
    return names


def _size(text: str) -> int:
    from modelmon.simulate.rotating import parse_size

    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        try:
            value = parse_duration(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, got {text!r}")
    return value


def scenarios_epilog() -> str:
    """The scenarios and what each does, for the end of `modelmon simulate --help`."""
    import textwrap

    lines = ["scenarios (--scenario NAME, or phases of --schedule):"]
    for s in SCENARIOS.values():
        lines += textwrap.wrap(s.description, 100, initial_indent=f"  {s.name:<26}", subsequent_indent=" " * 28)
    lines += ["", "estimated quality before labels (issue 13): e.g. --schedule stable:300,covariate_shift_harmful:600 "
              "(labels of the shifted phase arrive --delayed-label-delay later; --no-labels withholds them all): "
              "modelmon_estimated_* falls at once while realized quality has no labels to judge; "
              "covariate_shift_harmless drifts as clearly and the estimate stays."]
    return "\n".join(lines[:-1] + textwrap.wrap(lines[-1], 100))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = scenarios_epilog()
    out = p.add_argument_group("output")
    out.add_argument("--out", metavar="LOG", help="append JSON Lines records to LOG ('-' for stdout)")
    out.add_argument("--post", metavar="URL",
                     help="send the records to an exporter's POST /ingest (e.g. http://127.0.0.1:9188/ingest) "
                          "through modelmon.client.PredictionLogger instead of writing a file; bearer token from "
                          "--ingest-token-file or $MODELMON_INGEST_TOKEN")
    out.add_argument("--ingest-token-file", metavar="PATH",
                     help="--post: file holding the exporter's ingest token (as `modelmon serve --ingest-token-file`)")
    out.add_argument("--stream", metavar="URL",
                     help="XADD the records to a Redis Stream instead of writing a file, one entry per record with "
                          "the JSON line in field `record`: redis://HOST:PORT/DB?stream=NAME (the consumer's "
                          "group=/consumer=... parameters may stay in the URL; they are ignored here)")
    out.add_argument("--heartbeat", metavar="FILE",
                     help="--post/--stream: rewrite FILE (at most once a second) while records are being delivered, "
                          "so a health check can tell that traffic flows (the stack's, for instance)")
    out.add_argument("--stream-maxlen", metavar="N", type=int,
                     help="--stream: cap the stream at about N entries (XADD MAXLEN ~ N); entries past the cap are "
                          "trimmed whether a consumer read them or not (default: no cap)")
    out.add_argument("--rotate-bytes", metavar="SIZE", type=_size,
                     help="live mode: rename LOG to LOG.1 and start a new one once it passes SIZE (e.g. 100M), "
                          "so an endless demo stays within about twice SIZE on disk")
    out.add_argument("--reference-dir", metavar="DIR", type=Path,
                     help="write <model>.csv reference rows from the stable distribution into DIR")
    out.add_argument("--reference-rows", metavar="N", type=int, default=5000, help="rows per reference file (5000)")
    out.add_argument("--config-out", metavar="PATH", type=Path,
                     help="write a modelmon.yaml for the simulated models (reference paths relative to it)")

    traffic = p.add_argument_group("traffic")
    traffic.add_argument("--models", type=_names, default=None, metavar="A,B",
                         help="demo models to simulate (default: credit,segment,eta)")
    traffic.add_argument("--seed", metavar="N", type=int, default=0, help="random seed; same seed and arguments, same bytes (0)")
    traffic.add_argument("--scenario", choices=tuple(SCENARIOS), default="stable",
                         help="scenario to run (stable); the list below says what each does")
    traffic.add_argument("--schedule", metavar="NAME:SECONDS,...",
                         help="scenarios in sequence, e.g. stable:60,concept_drift:120,latency_regression:60")
    traffic.add_argument("--loop", action="store_true", help="repeat --schedule forever (live mode)")
    traffic.add_argument("--rate", metavar="R", type=float, default=50.0, help="records per second, all models together (50)")
    traffic.add_argument("--records", type=int, metavar="N", help="batch mode: write N records' worth of traffic")
    traffic.add_argument("--batch", action="store_true",
                         help="batch mode for --duration or --schedule: write it all at once, in event time")
    traffic.add_argument("--duration", type=_seconds, metavar="S", help="seconds (or 90s, 5m, 2h) to run")
    traffic.add_argument("--start", metavar="TIME",
                         help="batch mode: event time of the first record, RFC 3339 (default: so the log ends now)")
    traffic.add_argument("--target-models", type=_names, metavar="A,B",
                         help="models the scenario applies to (default: all; the others stay stable)")
    traffic.add_argument("--drift-features", type=_names, metavar="F,G",
                         help="features covariate_drift shifts (default per model: credit income,country; "
                              "segment monthly_spend,plan; eta distance_km,city)")
    traffic.add_argument("--candidate", choices=CANDIDATES, default="better",
                         help="shadow and canary scenarios: the candidate version is 'better' (retrained after the "
                              "concept changed; the served version is stale) or 'worse' (a shallow tree); "
                              "shadow_better, shadow_worse, canary_better, canary_worse fix it (default: better)")
    traffic.add_argument("--canary-share", metavar="P", type=_share, default=0.2,
                         help="canary scenarios: share of requests served by the candidate version (0.2)")
    traffic.add_argument("--missing-rate", metavar="P", type=_share, default=0.005, help="share of missing numeric values (0.005)")
    traffic.add_argument("--error-rate", metavar="P", type=_share, default=0.001, help="baseline share of failed requests (0.001)")

    labels = p.add_argument_group("labels")
    labels.add_argument("--label-rate", metavar="P", type=_share, default=0.9, help="share of predictions that get a label (0.9)")
    labels.add_argument("--label-delay", default="exp:30s", metavar="DIST",
                        help="delay of label records: exp:MEAN, fixed:D, uniform:LOW..HIGH, lognormal:MEDIAN[:SIGMA] "
                             "(exp:30s)")
    labels.add_argument("--inline-labels", action="store_true",
                        help="put labels on the prediction records instead (except in late_labels)")
    labels.add_argument("--late-label-rate", metavar="P", type=_share, default=0.6,
                        help="late_labels scenario: share of predictions that ever get a label (0.6)")
    labels.add_argument("--late-label-delay", default="lognormal:15m", metavar="DIST",
                        help="late_labels scenario: label delay distribution (lognormal:15m)")
    labels.add_argument("--delayed-label-delay", default="uniform:2d..5d", metavar="DIST",
                        help="covariate_shift_harmful/covariate_shift_harmless: label delay, days as a rule "
                             "(uniform:2d..5d); in batch mode pick --start far enough back, or the exporter "
                             "refuses labels stamped in the future")
    labels.add_argument("--no-labels", action="store_true",
                        help="withhold every label in every scenario (the no_labels scenario withholds those of "
                             "its own phase): quality can then only be estimated")


def _check(args: argparse.Namespace) -> str | None:
    """The first problem with this combination of options, or None."""
    batch = args.records is not None or args.batch
    outputs = [o for o in ("out", "post", "stream") if getattr(args, o)]
    if not (outputs or args.reference_dir or args.config_out):
        return "nothing to do: give --out, --post or --stream, --reference-dir and/or --config-out"
    if len(outputs) > 1:
        return f"give one of --out, --post and --stream, not {' and '.join('--' + o for o in outputs)}"
    if args.ingest_token_file and not args.post:
        return "--ingest-token-file is for --post"
    if args.heartbeat and not (args.post or args.stream):
        return "--heartbeat is for --post and --stream (a file written by --out is its own heartbeat)"
    if args.stream_maxlen is not None and not args.stream:
        return "--stream-maxlen is for --stream"
    if args.stream_maxlen is not None and args.stream_maxlen < 1:
        return "--stream-maxlen must be at least 1"
    if args.stream:
        from modelmon.simulate.sinks import parse_stream_url

        try:
            parse_stream_url(args.stream)
        except ValueError as e:
            return str(e)
    if args.rate <= 0:
        return "--rate must be positive"
    if args.records is not None and args.records < 0:
        return "--records must not be negative"
    if args.reference_rows < 1:
        return "--reference-rows must be at least 1"
    if args.records is not None and (args.schedule or args.duration):
        return "--records sets the length: drop --schedule/--duration, or use --batch with them"
    if args.loop and not args.schedule:
        return "--loop repeats a --schedule"
    if batch and args.loop:
        return "--loop runs forever: it needs live mode (drop --records/--batch)"
    if args.batch and args.records is None and not (args.duration or args.schedule):
        return "--batch needs --duration or --schedule (or use --records N)"
    if args.rotate_bytes is not None and (batch or args.out in (None, "-")):
        return "--rotate-bytes is for live mode writing to a file (--out PATH, no --records/--batch)"
    if args.start and not batch:
        return "--start is for batch mode (--records or --batch); live mode stamps records with the time now"
    return None


def run(args: argparse.Namespace) -> int:
    problem = _check(args)
    if problem:
        print(f"modelmon simulate: {problem}", file=sys.stderr)
        return 2
    from modelmon.simulate.demo_models import DEMO_MODELS
    from modelmon.simulate.simulator import Simulator, parse_start

    try:
        schedule = parse_schedule(args.schedule) if args.schedule else None
        start = parse_start(args.start) if args.start else None
        sim = Simulator(
            args.models or tuple(DEMO_MODELS), args.seed, target_models=args.target_models,
            drift_features=args.drift_features, label_rate=args.label_rate, label_delay=args.label_delay,
            inline_labels=args.inline_labels, late_label_rate=args.late_label_rate,
            late_label_delay=args.late_label_delay, delayed_label_delay=args.delayed_label_delay,
            withhold_labels=args.no_labels, missing_rate=args.missing_rate, error_rate=args.error_rate,
            candidate=args.candidate, canary_share=args.canary_share)
    except ValueError as e:
        print(f"modelmon simulate: {e}", file=sys.stderr)
        return 2

    references = None
    if args.reference_dir:
        references = sim.write_reference(args.reference_dir, args.reference_rows)
        print(f"wrote {len(references)} reference files to {args.reference_dir}", file=sys.stderr)
    if args.config_out:
        sim.write_config(args.config_out, references, args.reference_rows)
        print(f"wrote {args.config_out}", file=sys.stderr)
    if not (args.out or args.post or args.stream):
        return 0
    from modelmon.simulate.sinks import DeliveryError

    try:
        if args.records is not None or args.batch:
            return _batch(sim, args, schedule, start)
        return _live(sim, args, schedule)
    except DeliveryError as e:
        print(f"modelmon simulate: {e}", file=sys.stderr)
        return 1


def _open(out: str, buffered: bool) -> AbstractContextManager[IO[bytes]]:
    if out == "-":
        return nullcontext(sys.stdout.buffer)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    return open(out, "ab", buffering=-1 if buffered else 0)


def _sink(args: argparse.Namespace, *, strict: bool):
    """The --post or --stream sink (a binary file object fed the lines --out would write)."""
    from modelmon.simulate.sinks import PostSink, StreamSink

    if args.heartbeat:
        Path(args.heartbeat).parent.mkdir(parents=True, exist_ok=True)
    if args.post:
        # Live mode stops on a signal: a few seconds to hand the queue over, within the stack's 10 s to stop.
        return PostSink(args.post, token_file=args.ingest_token_file, strict=strict, heartbeat=args.heartbeat,
                        close_timeout=30.0 if strict else 5.0)
    return StreamSink(args.stream, maxlen=args.stream_maxlen, strict=strict, heartbeat=args.heartbeat)


def _destination(args: argparse.Namespace) -> str:
    return args.out or args.post or args.stream


def _open_live(out: str, rotate_bytes: int | None) -> AbstractContextManager[IO[bytes]]:
    if rotate_bytes is None or out == "-":
        return _open(out, buffered=False)
    from modelmon.simulate.rotating import RotatingLog

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    return RotatingLog(out, rotate_bytes)


def _batch(sim: Simulator, args: argparse.Namespace, schedule: list[tuple[str, float]] | None,
           start: float | None) -> int:
    n = args.records
    if n is None and schedule is None:
        n = round(args.duration * args.rate)
    if not args.out:
        with _sink(args, strict=True) as sink:
            lines = sim.write(sink, n, args.scenario, start=start, rate=args.rate, schedule=schedule)
        print(f"sent {lines} records: {sink.summary()}", file=sys.stderr)
        return 0
    with _open(args.out, buffered=True) as fh:
        lines = sim.write(fh, n, args.scenario, start=start, rate=args.rate, schedule=schedule)
    print(f"wrote {lines} lines to {args.out}", file=sys.stderr)
    return 0


def _live(sim: Simulator, args: argparse.Namespace, schedule: list[tuple[str, float]] | None) -> int:
    from modelmon.simulate.live import run_live

    if schedule:
        timeline = Timeline.from_schedule(schedule, args.rate, loop=args.loop)
    else:  # one scenario for --duration, or forever
        timeline = Timeline(((args.scenario, 1),), loop=True)
    stopping: list[int] = []  # SIGTERM (docker stop) ends the run as cleanly as Ctrl-C
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    print(f"writing {args.rate:g} records/s to {_destination(args)} (Ctrl-C stops)", file=sys.stderr)
    sink = None
    try:
        # Live traffic outlives a Redis or exporter restart: undelivered records are counted, not fatal.
        with (_open_live(args.out, args.rotate_bytes) if args.out else _sink(args, strict=False)) as fh:
            sink = None if args.out else fh
            lines = run_live(sim, timeline, fh, args.rate, duration=args.duration, stop=lambda: bool(stopping))
    finally:
        signal.signal(signal.SIGTERM, previous)
    if sink is None:
        print(f"stopped after {lines} lines", file=sys.stderr)
        return 0
    print(f"stopped after {lines} records: {sink.summary()}", file=sys.stderr)
    return 1 if sink.undelivered else 0
