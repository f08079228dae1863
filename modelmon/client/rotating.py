"""A log file that rotates itself by rename, like logrotate's `create` mode.

Shared by the client's file transport and the simulator's live mode. When the file would pass
`max_bytes`, it is renamed to `PATH.1` (replacing the previous one) and a new file is started,
so the log takes at most about twice `max_bytes` (a single write larger than `max_bytes` goes
whole into a fresh file). The exporter's follower drains the renamed file before switching, so
rotation loses no line — as long as it polls at least once per rotation: a `.1` replaced before
the follower came back to it is gone (size `max_bytes` for minutes of traffic, not seconds).
"""
from __future__ import annotations

import os
from pathlib import Path


class RotatingLog:
    """Binary append-only file object (write/flush/close) that rotates past `max_bytes`.

    One writer per file: a second process rotating the same path would keep writing into the
    renamed file, whose later lines the follower does not read.
    """

    def __init__(self, path: str | Path, max_bytes: int):
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.rotations = 0
        self._fh = open(self.path, "ab", buffering=0)
        self._size = self._fh.tell()

    def write(self, data: bytes) -> int:
        if self._size and self._size + len(data) > self.max_bytes:
            self._rotate()
        view = memoryview(data)
        while view:  # a raw write may take only part of the bytes (signal, nearly full disk)
            n = self._fh.write(view)
            self._size += n
            view = view[n:]
        return len(data)

    def _rotate(self) -> None:
        self._fh.close()
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._fh = open(self.path, "ab", buffering=0)
        self._size = 0
        self.rotations += 1

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "RotatingLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_size(text: str) -> int:
    """'100M' -> 104857600; plain digits are bytes; K, M, G are binary multiples."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("B")
    factor = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    if not number.isdigit() or int(number) == 0:
        raise ValueError(f"expected a size such as 100M, 512K or 1G, got {text!r}")
    return int(number) * factor
