"""The `modelmon` command table: every subcommand lives in ``modelmon/<package>/cli.py``."""
from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from modelmon.cli import COMMANDS

ROOT = Path(__file__).resolve().parent.parent
# Commands whose module is not <package>.cli, as {command: why}. Empty: add one only with a reason.
EXCEPTIONS: dict[str, str] = {}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_module_is_its_package_cli(command):
    module, _help = COMMANDS[command]
    if command in EXCEPTIONS:
        pytest.skip(EXCEPTIONS[command])
    package, _, leaf = module.rpartition(".")
    assert leaf == "cli" and package.startswith("modelmon."), \
        f"`modelmon {command}` lives in {module}; command modules are modelmon/<package>/cli.py"
    path = ROOT / Path(*module.split(".")).with_suffix(".py")
    assert path.is_file(), f"{module} is not a file at {path.relative_to(ROOT)}"
    assert (path.parent / "__init__.py").is_file(), f"{package} is not a package"
    mod = importlib.import_module(module)
    assert callable(mod.add_arguments) and callable(mod.run), f"{module} needs add_arguments(parser) and run(args)"


def test_no_stale_exception():
    assert set(EXCEPTIONS) <= set(COMMANDS)


def test_help_lists_every_command_without_heavy_imports():
    """`modelmon --help` imports every command module; none may pull in the heavy libraries."""
    code = ("import sys\nfrom modelmon.cli import build_parser\nbuild_parser().format_help()\n"
            "heavy = sorted(m for m in ('sklearn', 'scipy', 'flask', 'grafanalib', 'numpy') if m in sys.modules)\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "", f"`modelmon --help` imports {out.stdout.strip()}"
