"""`modelmon stack up`: the docker-compose topology from local processes, for machines without Docker.

receiver -> (Redis) -> exporter -> demo traffic -> Alertmanager -> Prometheus -> Grafana (when installed),
each started once the previous one is healthy, all on 127.0.0.1, configs and logs in one work
directory. One Ctrl-C stops everything. The services and their configs are the topology of
modelmon/stack/topology.py rendered for this machine; docker-compose.yml is the same topology
rendered for compose. ``--ingest`` picks the way the demo traffic reaches the exporter (a log file,
POST /ingest through the Python client, a Redis Stream), as docker-compose.<mode>.yml does.
"""
from __future__ import annotations

import argparse
import os
import sys

from modelmon.stack.topology import FILE, INGEST_MODES
from modelmon.stack.plan import (DEFAULT_GRAFANA_PASSWORD, DEMO_RATE, DEMO_SCHEDULE, DEMO_SEED, QUICK_FOR,
                                 QUICK_ALERT_WINDOW, QUICK_FOR_OVERRIDES, QUICK_RATE_WINDOW,
                                 QUICK_SCHEDULE)


def _port(text: str) -> tuple[str, int]:
    name, sep, port = text.partition("=")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected SERVICE=PORT such as grafana=3001, got {text!r}")
    return name, int(port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="stack_action", metavar="ACTION")
    actions.required = True
    up = actions.add_parser(
        "up", help="start the stack in the foreground; Ctrl-C stops it",
        description="Start receiver, exporter, demo traffic, Alertmanager, Prometheus and Grafana "
                    "(when installed) on 127.0.0.1, in that order, each after the previous is healthy.")
    up.add_argument("--config", default="modelmon.yaml", help="modelmon config (default: %(default)s)")
    up.add_argument("--workdir", default=".modelmon/stack",
                    help="configs, data and logs of the stack (default: %(default)s)")
    up.add_argument("--no-prometheus", action="store_true",
                    help="run only modelmon's own processes (receiver, exporter, traffic)")
    up.add_argument("--no-grafana", action="store_true", help="do not start Grafana even if installed")
    up.add_argument("--quick", action="store_true",
                    help=f"a quick tour: every alert waits {QUICK_FOR} instead of its production `for`, rates span "
                         f"{QUICK_RATE_WINDOW}, quality and drift alerts read {QUICK_ALERT_WINDOW} windows, and the schedule is {QUICK_SCHEDULE} (the committed rules are "
                         "untouched)")
    up.add_argument("--schedule", default=None,
                    help=f"demo traffic scenarios as NAME:SECONDS,... played in a loop (default: {DEMO_SCHEDULE}; "
                         "with --quick the quick schedule)")
    up.add_argument("--rate", type=float, default=DEMO_RATE, help="demo records per second (default: %(default)s)")
    up.add_argument("--seed", type=int, default=DEMO_SEED, help="demo traffic seed (default: %(default)s)")
    up.add_argument("--ingest", choices=INGEST_MODES, default=FILE,
                    help="how the demo traffic reaches the exporter: file (a log it follows), http (POST /ingest "
                         "through the Python client) or stream (a Redis Stream it consumes as a consumer group "
                         "member; starts redis-server first, which must be installed) (default: %(default)s)")
    up.add_argument("--port", type=_port, action="append", default=[], metavar="SERVICE=PORT",
                    help="listen port of a service (exporter, receiver, prometheus, alertmanager, grafana, "
                         "redis); "
                         "default: the compose port, or a free one when that is taken")
    up.add_argument("--health-timeout", type=float, default=90.0,
                    help="seconds each service has to become healthy (default: %(default)s)")


def demo_schedule(args: argparse.Namespace) -> str:
    """--schedule when given, else the quick or the full demo schedule."""
    return args.schedule or (QUICK_SCHEDULE if args.quick else DEMO_SCHEDULE)


def quick_rules():
    """RuleOptions of `--quick`: the production alerts on short clocks."""
    from modelmon.alerting.options import RuleOptions

    return RuleOptions(for_override=QUICK_FOR, rate_window=QUICK_RATE_WINDOW, for_overrides=QUICK_FOR_OVERRIDES)


def quick_config(config):
    """The config of `--quick`: quality and drift alerts (and dashboards) read a short window, so a
    phase of a few minutes moves them; the other recording windows stay."""
    import dataclasses

    from modelmon.config import RecordingConfig, format_duration, parse_duration
    from modelmon.stack.plan import QUICK_ALERT_WINDOW

    windows = sorted({parse_duration(w) for w in (*config.recording.windows, QUICK_ALERT_WINDOW)})
    recording = RecordingConfig(windows=tuple(map(format_duration, windows)), alert_window=QUICK_ALERT_WINDOW)
    return dataclasses.replace(config, recording=recording)


def run(args: argparse.Namespace) -> int:
    from modelmon.stack.errors import StackError

    try:
        return _up(args)
    except StackError as e:
        print(f"modelmon stack: {e}", file=sys.stderr)
        return 1


def _up(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    from modelmon.config import load_config
    from modelmon.stack.banner import banner_lines
    from modelmon.stack.plan import Layout, StackOptions, find_binaries, native_target, plan_stack
    from modelmon.stack.ports import choose_ports
    from modelmon.stack.supervisor import Supervisor
    from modelmon.stack.topology import DEFAULT_PORTS
    from modelmon.stack.workdir import (
        ALERTMANAGER_CONFIG, PROMETHEUS_CONFIG, alertmanager_version, prepare_data, require, stack_sources,
        write_alertmanager_secrets, write_configs,
    )

    config_path = Path(args.config).resolve()
    config = load_config(config_path)
    if args.quick:
        config = quick_config(config)
    layout = Layout(Path(args.workdir).resolve())
    ports, notes = choose_ports(dict(args.port), running=None if args.ingest == "stream" else
                                set(DEFAULT_PORTS) - {"redis"})
    schedule = demo_schedule(args)
    options = StackOptions(
        config=config_path, ports=ports, schedule=schedule, rate=args.rate, seed=args.seed,
        prometheus=not args.no_prometheus, grafana=not (args.no_grafana or args.no_prometheus),
        grafana_admin_password=os.environ.get("GRAFANA_ADMIN_PASSWORD", DEFAULT_GRAFANA_PASSWORD),
        ingest=args.ingest,
    )
    binaries = find_binaries(shutil.which, (sys.executable, "-m", "modelmon"))
    plan = plan_stack(options, layout, binaries)
    names = {svc.name for svc in plan.services}

    files = stack_sources(config, config_path.parent, native_target(options, layout),
                          rules=quick_rules() if args.quick else None)
    if "prometheus" in names:
        require(files, PROMETHEUS_CONFIG)
    if "alertmanager" in names:
        require(files, ALERTMANAGER_CONFIG)
    write_configs(files, layout)
    if "alertmanager" in names and binaries.alertmanager:
        # *_env secrets into 0600 files of the work dir; webhook URLs inlined for an Alertmanager < 0.26.
        notes = [*notes, *write_alertmanager_secrets(config, layout, alertmanager_version(binaries.alertmanager),
                                                     os.environ)]
    prepare_data(layout)

    for message in (*notes, *plan.missing):
        print(f"stack: {message}", flush=True)

    def banner() -> None:
        print("\n".join(banner_lines(plan, layout, options, quick=args.quick)), flush=True)

    return Supervisor(plan.services, health_timeout=args.health_timeout).run(on_ready=banner)
