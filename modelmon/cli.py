"""The `modelmon` command. Each subcommand lives in the module that owns its job.

That module is the ``cli.py`` of the package doing the job (``modelmon/<package>/cli.py``, held
by tests/test_cli.py). It exposes ``add_arguments(parser)`` and ``run(args) -> int``; heavy
imports happen inside ``run`` so that ``modelmon --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from modelmon import __version__
from modelmon.config import ConfigError

# name -> (command module, one-line help); tests/test_cli.py holds every module to <package>.cli
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("modelmon.exporter.cli", "run the exporter on a prediction log, a Redis Stream and/or POST /ingest"),
    "simulate": ("modelmon.simulate.cli", "write a realistic prediction log from a real scikit-learn model"),
    "generate": ("modelmon.generate.cli", "write rules, Alertmanager config, dashboards and provisioning"),
    "dashboards": ("modelmon.dashboards.cli", "push dashboards to a Grafana through its HTTP API"),
    "receiver": ("modelmon.receiver.cli", "run the on-call webhook inbox for Alertmanager"),
    "stack": ("modelmon.stack.cli", "run the whole stack from local binaries (no Docker)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelmon", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"modelmon {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except ConfigError as e:
        print(f"modelmon: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
