"""Atomic file writes: the exporter's state files (offset, checkpoint, frozen references) and the
secrets the stack writes for Alertmanager.

A temporary file beside the target (a name no other writer uses), fsync, rename, fsync of the
directory: a crash leaves the old file or the new one, never half of either. Any failure removes
the temporary file and raises, so a full disk or a read-only volume leaves nothing behind; the
caller counts or reports the failure. No directory is created: a path in a directory that does
not exist is a mistake to report, not a tree to create.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_atomically(path: str | os.PathLike, body: bytes, mode: int | None = None) -> Path:
    """Replace `path` with `body`. `mode` (e.g. 0o600 for a secret): the file's exact permissions,
    whatever the umask, and an existing file with a looser mode is replaced by a tighter one;
    None: a new file's usual permissions (0o666 less the umask)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if mode is not None else 0o666)
        with os.fdopen(fd, "wb") as fh:
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
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
    return path


def read_secret_file(path: Path, flag: str) -> str:
    """The secret a `--...-file` option names, stripped. ValueError with a one-line message naming
    `flag` and the path when it cannot be read, is not UTF-8, or is empty."""
    try:
        secret = Path(path).read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ValueError(f"cannot read {flag} {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{flag} {path} is not UTF-8 text") from None
    if not secret:
        raise ValueError(f"{flag} {path} is empty")
    return secret
