"""A log file that rotates itself by rename, like logrotate's `create` mode.

Live demo traffic runs for days; without a bound its log fills the disk. When the file passes
`max_bytes`, it is renamed to `PATH.1` (replacing the previous one) and a new file is started,
so the log takes at most about twice `max_bytes`. The exporter's follower drains the renamed
file before switching, so rotation loses no line.
"""
from __future__ import annotations

import os
from pathlib import Path


class RotatingLog:
    """Binary append-only file object (write/flush/close) that rotates past `max_bytes`."""

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
        n = self._fh.write(data)
        self._size += n
        return n

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
