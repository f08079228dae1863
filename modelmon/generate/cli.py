"""`modelmon generate`: write every artefact derived from modelmon.yaml; `--check` finds stale ones."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from modelmon.generate import artefacts, stale_files


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="modelmon.yaml", help="modelmon.yaml (default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("."), help="project root to write into (default: .)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if any file is stale or missing")


def run(args: argparse.Namespace) -> int:
    from modelmon.config import load_config

    config = load_config(args.config)
    expected = artefacts(config)
    root = args.out
    if args.check:
        problems = stale_files(expected, root)
        for rel, why in problems:
            print(f"{rel}: {why}", file=sys.stderr)
        if problems:
            print(f"modelmon generate --check: {len(problems)} file(s) out of date; run `modelmon generate`",
                  file=sys.stderr)
            return 1
        print(f"modelmon generate --check: {len(expected)} files up to date")
        return 0
    written = 0
    for rel, text in expected.items():
        path = root / rel
        if path.exists() and path.read_text() == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written += 1
        print(f"wrote {rel}")
    for rel, why in stale_files(expected, root):
        if why.startswith("orphan"):
            (root / rel).unlink()
            print(f"removed {rel} (no longer generated)")
    print(f"{len(expected)} files generated, {written} changed")
    return 0
