"""Atomic writes of the exporter's state files (offset, checkpoint, frozen references).

Temp file beside the target, fsync, rename, fsync of the directory: a crash leaves the old file
or the new one, never half of either. Any failure removes the temp file and raises, so a full
disk or a read-only volume leaves nothing behind; the caller counts the failure and retries.
No directory is created: a state path in a directory that does not exist is a mistake to
report, not a tree to create.
"""
from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: Path, body: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass  # never created, or already renamed into place
        raise
