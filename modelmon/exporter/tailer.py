"""Follow a JSON Lines prediction log like ``tail -F``, with a position that survives restarts.

`LogFollower` is the exporter's file source. One thread calls `poll()` to get the complete lines
written since the last call, processes them, then calls `commit()` to persist the position.

Guarantees and limits (tests/test_tailer.py checks every guarantee):

* **Start.** A state file that matches the file (same ``(st_dev, st_ino)`` and the same first
  bytes up to the saved offset, at most 256) resumes exactly at the committed offset. If the
  committed file was renamed away while we were down (logrotate ``create``), it is found among
  the log's siblings (``app.log*``) by identity, drained, and then the new file is read from 0.
  If it was copytruncated while we were down (``path`` is still the committed inode, but shorter
  than the offset or with other first bytes), its rotated copy is looked for among the siblings
  as described under *Copytruncate* (by the saved fingerprint and size only), drained from the
  committed offset, and then ``path`` is read from 0.
  A state that matches nothing (file replaced, recycled inode with other content, truncated below
  the offset with no copy found) starts the current file at 0 and counts a rotation.
  ``from_start=True`` ignores the state and reads from 0. No state: start at the END of the
  current file (tail semantics: only lines completed after start are delivered; a line being
  written at start is delivered whole), or at 0 if the file does not exist yet. A missing file
  is waited for, never an error; while ``path`` cannot be opened (missing, not a regular file,
  no permission), `open_problem` says why.
* **Rename rotation** (``app.log`` -> ``app.log.1``, new ``app.log``): when ``path`` names another
  file *that has data*, the old descriptor is drained to EOF (lines the writer appended after the
  rename are kept), its unterminated last line is delivered, and the new file is read from 0.
  While the new file is still empty the old one keeps being followed, so a writer that reopens
  late (logrotate ``create`` + a postrotate signal) loses nothing. Lost: lines written to the old
  file after we switched, and a whole intermediate file if the log was rotated *twice* between
  two polls or while we were down (poll far more often than you rotate).
* **Copytruncate / truncation**: the file shrinking below the read offset, or its first bytes
  changing (truncated and rewritten past our offset), is a truncation. The rotated copy is then
  looked for among the log's siblings (``app.log*``: ``app.log.1``, ``app.log-20261130``, ...;
  compressed ``.gz``/``.bz2``/``.xz``/``.zst``/... files and modelmon's own ``*.modelmon-*``
  state files are not considered): a regular file, not the log itself, at least as long as our
  read offset, whose first bytes equal the first bytes we read (up to 256) and whose bytes just
  before our read offset equal the last bytes we read (up to 256); the most recently modified
  one if several match. Its unread tail (from our read offset to its end; a buffered partial line
  continues there) is delivered first, exactly as for a rename rotation (including its
  unterminated last line, delivered as it is: its end may have been lost between copy and
  truncate, so it is never joined to the truncated file's first bytes), then the truncated file
  is read from 0. One rotation is counted. **What is lost**: only the lines written between the
  copy and the truncate (copytruncate itself loses them; no reader can see them), plus the unread
  tail if the copy was compressed, removed or rotated out of ``app.log*`` before the poll that
  saw the truncation (poll far more often than you rotate, and use ``delaycompress``), and the
  whole content of one rotation period if the file was copytruncated again before we got back to
  it (twice between two polls, or while we were still draining the previous copy).
  When no copy is found, the truncated file is read from 0, the buffered partial line is dropped,
  a warning is logged and the truncation is counted in `rotations` and in `copies_missed`.
* **Lines**: split on ``\\n``; one trailing ``\\r`` is stripped; empty and whitespace-only lines
  are skipped; a final line without ``\\n`` is held back until completed (or its file is
  abandoned by a rename rotation or a drained copy). A line longer than ``max_line_bytes``
  (16 MiB) is skipped without buffering it whole and counted in `oversized_lines`.
* **Memory**: at most ``max_batch_bytes`` are read per poll (in 1 MiB chunks); the only carried
  buffer is one partial line (< ``max_line_bytes`` + 1 MiB).
* **Restart**: `commit()` writes the offset just past the last line returned (or skipped) to the
  state file atomically (tmp file, fsync, ``os.replace``, directory fsync). Delivery is
  at-least-once: a crash after `poll()` and before `commit()` re-delivers exactly the lines
  returned since the last commit; a crash after `commit()` re-delivers nothing and loses nothing.
  The constructor commits the start position (unless ``commit_at_start=False``: then the caller
  must commit before polling), so a crash before the first `commit()` resumes where this
  instance started, not at a later end of file. The state also records being inside
  an oversized line, so a restart keeps skipping it. Without a state file nothing is persisted.
* **Failed commits**: a `commit()` that fails (read-only or full disk, missing directory, the
  state path being a directory) removes its temp file and raises the `OSError`; the state file
  keeps the last committed position and the follower's position is unchanged, so the next
  `commit()` retries; a restart in between resumes at the last successful commit (re-delivering,
  as above, the lines returned since). `commit()` never creates directories: a mistyped state path fails visibly.

Not thread-safe: call `poll`/`commit`/`close` from one thread. The counters, `lag_bytes`
(measured at the end of each poll) and `open_problem` may be read from any thread.
"""
from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from modelmon.files import write_atomically

log = logging.getLogger(__name__)

FINGERPRINT_BYTES = 256
READ_CHUNK = 1 << 20
DEFAULT_MAX_LINE_BYTES = 16 << 20
STATE_VERSION = 1
# Rotated copies in these formats cannot be read as text: never taken for a copytruncate copy.
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".lzma", ".lzo", ".z", ".zip", ".br", ".7z")
# modelmon's own files beside the log (offset, checkpoint, references): never a rotated copy.
OWN_FILES_MARKER = ".modelmon-"


@dataclass(frozen=True)
class _SavedPosition:
    """The committed position in one file, as read from the state file."""
    dev: int
    ino: int
    offset: int
    fingerprint_len: int
    fingerprint_sha256: str
    skipping: bool  # the offset is inside an oversized line


# State written while no file is open yet: start the file at 0 whenever it appears.
_WAITING = "waiting"


class _OpenFile:
    """An open descriptor, its identity, and the first and last bytes we read from it."""

    def __init__(self, fd: int, st: os.stat_result, read_offset: int):
        self.fd = fd
        self.identity = (st.st_dev, st.st_ino)
        self.read_offset = read_offset
        # Invariant: prefix == the file's first min(FINGERPRINT_BYTES, read_offset) bytes.
        self.prefix = os.pread(fd, min(FINGERPRINT_BYTES, read_offset), 0)
        # Invariant: tail == the min(FINGERPRINT_BYTES, read_offset) bytes just before read_offset.
        n = min(FINGERPRINT_BYTES, read_offset)
        self.tail = os.pread(fd, n, read_offset - n) if n else b""

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def close(self) -> None:
        os.close(self.fd)


class LogFollower:
    """Complete lines of a growing, rotating log file, with a committable position."""

    def __init__(self, path: str | Path, state_path: str | Path | None = None, from_start: bool = False,
                 max_batch_bytes: int = 4 << 20, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                 commit_at_start: bool = True):
        if max_batch_bytes <= 0 or max_line_bytes <= 0:
            raise ValueError("max_batch_bytes and max_line_bytes must be positive")
        self.path = Path(path)
        self.state_path = Path(state_path) if state_path is not None else None
        self.max_batch_bytes = max_batch_bytes
        self.max_line_bytes = max_line_bytes
        self._file: _OpenFile | None = None
        self._pending = bytearray()  # the unterminated last line read so far
        self._skipping = False  # inside an oversized line: drop bytes up to the next newline
        self._consumed = 0  # offset just past the last line returned or skipped
        self._rotations = 0
        self._copies_missed = 0
        self._oversized = 0
        self._lag = 0
        self._closed = False
        self._last_state: dict | None = None
        self._open_problem: str | None = None
        self._start(from_start)
        self._lag = self._measure_lag()
        # Make the start position durable now: a crash before the first commit() must not make
        # the next start tail from a later end of file (losing the lines in between). A caller
        # that must survive a failing state write passes commit_at_start=False and commits itself.
        if commit_at_start:
            self.commit()

    # -- public API --------------------------------------------------------------------------

    def poll(self) -> list[bytes]:
        """Complete lines available now, oldest first; [] when there is nothing new."""
        if self._closed:
            raise ValueError("poll() on a closed LogFollower")
        out: list[bytes] = []
        if self._file is None:
            self._open_path(at_end=False)
        if self._file is not None:
            self._check_truncation()
            budget, at_eof = self._read(self.max_batch_bytes, out)
            if at_eof and self._successor_has_data():
                # The writer may have appended to the old file between our read and the stat.
                budget, at_eof = self._read(budget, out)
                if at_eof:
                    self._switch_to_successor(out)
                    if self._file is not None:
                        self._read(budget, out)
        self._lag = self._measure_lag()
        return out

    def position(self) -> dict:
        """The position after every line returned so far, to `commit` later (once those lines, and
        only those, are applied: the caller may poll further meanwhile)."""
        return self._state()

    def commit(self, position: dict | None = None) -> None:
        """Persist `position` (default: the position after every line returned so far); a no-op
        without a state file."""
        if self._closed:
            raise ValueError("commit() on a closed LogFollower")
        if self.state_path is None:
            return
        state = self._state() if position is None else position
        if state == self._last_state:
            return
        write_atomically(self.state_path, json.dumps(state, sort_keys=True).encode() + b"\n")
        self._last_state = state

    def close(self) -> None:
        """Release the file descriptor. Commit first if the position should be kept."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._closed = True

    def __enter__(self) -> LogFollower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def lag_bytes(self) -> int:
        """Bytes written but not yet returned (old file rest + a pending new file), as of the last poll."""
        return self._lag

    @property
    def rotations(self) -> int:
        """Rename rotations, truncations and unresumable state files seen by this instance."""
        return self._rotations

    @property
    def copies_missed(self) -> int:
        """Truncations after which no rotated copy was found (its unread tail, if any, is lost)."""
        return self._copies_missed

    @property
    def open_problem(self) -> str | None:
        """Why `path` could not be opened on the last try (e.g. "no such file"); None once open."""
        return None if self._file is not None else self._open_problem

    @property
    def oversized_lines(self) -> int:
        """Lines longer than max_line_bytes that were skipped."""
        return self._oversized

    @property
    def is_open(self) -> bool:
        return self._file is not None

    # -- start -------------------------------------------------------------------------------

    def _start(self, from_start: bool) -> None:
        saved = None if from_start else self._load_state()
        if from_start or saved == _WAITING:
            self._open_path(at_end=False)
        elif saved is None:
            self._open_path(at_end=True)
        elif not self._resume(saved):
            log.info("log %s: saved position does not match any file, reading from the start", self.path)
            self._rotations += 1
            self._open_path(at_end=False)

    def _load_state(self) -> _SavedPosition | str | None:
        if self.state_path is None or not self.state_path.exists():
            return None
        try:
            data = json.loads(self.state_path.read_bytes())
            if data["version"] != STATE_VERSION:
                raise ValueError(f"unsupported version {data['version']!r}")
            if data["file"] is None:
                return _WAITING
            f = data["file"]
            return _SavedPosition(int(f["dev"]), int(f["ino"]), int(f["offset"]), int(f["fingerprint_len"]),
                                  str(f["fingerprint_sha256"]), bool(f["skipping"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("ignoring unreadable state file %s (%s); tailing %s from its end",
                        self.state_path, e, self.path)
            return None

    def _resume(self, saved: _SavedPosition) -> bool:
        """Open the saved file at the saved offset: `path` itself, a renamed sibling of it, or the
        rotated copy of `path` if `path` was copytruncated since."""
        copytruncated = False
        for candidate in [str(self.path), *self._siblings()]:
            try:
                fd = os.open(candidate, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
            except OSError:
                continue
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) == (saved.dev, saved.ino):
                if stat.S_ISREG(st.st_mode) and self._content_matches(fd, st, saved):
                    self._resume_at(fd, st, saved)
                    if candidate != str(self.path):
                        log.info("log %s: resuming rotated file %s before the new one", self.path, candidate)
                    return True
                copytruncated = copytruncated or candidate == str(self.path)
            os.close(fd)
        if copytruncated:  # same inode, other content: the committed bytes went to a rotated copy
            found = self._find_copy((saved.dev, saved.ino), saved.offset,
                                    lambda fd, st: self._content_matches(fd, st, saved))
            if found is None:
                self._copy_missed(f"it was truncated while modelmon was down and no rotated copy holds the "
                                  f"{saved.offset} bytes read before", partial=False)
                return False
            fd, st, name = found
            self._resume_at(fd, st, saved)
            log.info("log %s: truncated while modelmon was down; reading the rest of its rotated copy %s "
                     "from offset %d first", self.path, name, saved.offset)
            return True
        return False

    def _resume_at(self, fd: int, st: os.stat_result, saved: _SavedPosition) -> None:
        self._file = _OpenFile(fd, st, saved.offset)
        self._consumed = saved.offset
        self._skipping = saved.skipping

    @staticmethod
    def _content_matches(fd: int, st: os.stat_result, saved: _SavedPosition) -> bool:
        if st.st_size < saved.offset:
            return False
        head = os.pread(fd, saved.fingerprint_len, 0)
        digest = hashlib.sha256(head).hexdigest()
        return len(head) == saved.fingerprint_len and digest == saved.fingerprint_sha256

    def _open_path(self, at_end: bool) -> None:
        """Open `path` at 0, or at the start of its last incomplete line; stay closed if absent."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO must not block us
        except OSError as e:
            self._report_open_problem(self._describe_open_error(e))
            return
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            self._report_open_problem("is a directory, not a regular file" if stat.S_ISDIR(st.st_mode)
                                      else "not a regular file")
            return
        self._open_problem = None
        offset = self._last_line_start(fd, st.st_size) if at_end else 0
        self._file = _OpenFile(fd, st, offset)
        self._consumed = offset

    def _describe_open_error(self, e: OSError) -> str:
        if isinstance(e, FileNotFoundError):
            if not self.path.parent.is_dir():
                return f"no such file (its directory {self.path.parent} does not exist)"
            return "no such file"
        return (e.strerror or str(e)).lower()

    def _report_open_problem(self, problem: str) -> None:
        """Remember why `path` cannot be opened; the caller (FileSource) reports it, once."""
        if problem != self._open_problem:
            log.debug("cannot open log %s: %s (will retry)", self.path, problem)
            self._open_problem = problem

    def _last_line_start(self, fd: int, size: int) -> int:
        """Offset just after the last newline, so a line being written now is delivered whole."""
        pos = size
        while pos > 0 and size - pos <= self.max_line_bytes:
            n = min(64 << 10, pos)
            pos -= n
            nl = os.pread(fd, n, pos).rfind(b"\n")
            if nl >= 0:
                return pos + nl + 1
        if pos == 0:
            return 0
        self._start_oversized_skip()  # the last line is too long already: skip what remains of it
        return size

    # -- reading -----------------------------------------------------------------------------

    def _read(self, budget: int, out: list[bytes]) -> tuple[int, bool]:
        """Read up to `budget` bytes into `out`; return the budget left and whether EOF was reached."""
        f = self._file
        assert f is not None
        while budget > 0:
            chunk = os.pread(f.fd, min(READ_CHUNK, budget), f.read_offset)
            if not chunk:
                return budget, True
            if f.read_offset < FINGERPRINT_BYTES:
                f.prefix += chunk[:FINGERPRINT_BYTES - f.read_offset]
            f.tail = (f.tail + chunk[-FINGERPRINT_BYTES:])[-FINGERPRINT_BYTES:]
            self._feed(chunk, f.read_offset, out)
            f.read_offset += len(chunk)
            budget -= len(chunk)
        return 0, False

    def _feed(self, chunk: bytes, chunk_offset: int, out: list[bytes]) -> None:
        start = 0
        if self._skipping:
            nl = chunk.find(b"\n")
            if nl < 0:
                self._consumed = chunk_offset + len(chunk)
                return
            self._skipping = False
            start = nl + 1
            self._consumed = chunk_offset + start
        last_nl = chunk.rfind(b"\n", start)
        if last_nl < 0:
            self._pending += chunk[start:]
        else:
            block = bytes(self._pending) + chunk[start:last_nl] if self._pending else chunk[start:last_nl]
            self._pending = bytearray(chunk[last_nl + 1:])
            self._consumed = chunk_offset + last_nl + 1
            self._emit(block, out)
        if len(self._pending) > self.max_line_bytes:
            self._start_oversized_skip()
            self._consumed = chunk_offset + len(chunk)

    def _emit(self, block: bytes, out: list[bytes]) -> None:
        """Append the lines of `block` (newline-separated, no trailing newline) to `out`."""
        parts = block.split(b"\n")
        if b"\r" in block:
            parts = [p[:-1] if p.endswith(b"\r") else p for p in parts]
        if len(block) > self.max_line_bytes:
            kept = [p for p in parts if len(p) <= self.max_line_bytes]
            self._count_oversized(len(parts) - len(kept))
            parts = kept
        if all(parts) and not any(map(bytes.isspace, parts)):  # the common case, at C speed
            out += parts
        else:
            out += [p for p in parts if p and not p.isspace()]

    def _start_oversized_skip(self) -> None:
        self._pending = bytearray()
        self._skipping = True
        self._count_oversized(1)

    def _count_oversized(self, n: int) -> None:
        if n:
            self._oversized += n
            log.warning("log %s: skipped %d line(s) longer than %d bytes", self.path, n, self.max_line_bytes)

    # -- rotation ----------------------------------------------------------------------------

    def _check_truncation(self) -> None:
        """On a truncation (the file shrank below our offset or its first bytes changed), continue
        in its rotated copy if there is one (then the truncated file from 0), else restart at 0."""
        f = self._file
        assert f is not None
        shrank = f.size() < f.read_offset
        if not (shrank or (f.prefix and os.pread(f.fd, len(f.prefix), 0) != f.prefix)):
            return

        def is_our_copy(fd: int, st: os.stat_result) -> bool:
            return (os.pread(fd, len(f.prefix), 0) == f.prefix
                    and os.pread(fd, len(f.tail), f.read_offset - len(f.tail)) == f.tail)

        found = self._find_copy(f.identity, f.read_offset, is_our_copy)
        if found is not None:
            fd, st, name = found
            log.info("log %s: truncated (copytruncate); reading the rest of its rotated copy %s from offset %d "
                     "first", self.path, name, f.read_offset)
            copy = _OpenFile(fd, st, f.read_offset)  # the buffered partial line continues there
            f.close()
            self._file = copy
            return  # drained like a rename rotation's old file; the switch to `path` counts the rotation
        self._copy_missed(f"it was truncated below offset {f.read_offset} and no rotated copy was found",
                          partial=bool(self._pending))
        f.read_offset = 0
        f.prefix = b""
        f.tail = b""
        self._pending = bytearray()  # its beginning is gone
        self._skipping = False
        self._consumed = 0
        self._rotations += 1

    def _copy_missed(self, why: str, partial: bool) -> None:
        self._copies_missed += 1
        log.warning("log %s: %s; reading it from the start. Lines written after the last one read and before "
                    "the truncation, if any, are lost%s (keep the rotated copy uncompressed beside the log until "
                    "read, e.g. logrotate delaycompress)", self.path, why, ", with a partial line" if partial else "")

    def _siblings(self) -> list[str]:
        return sorted(glob.glob(glob.escape(str(self.path)) + "?*"))

    def _find_copy(self, identity: tuple[int, int], min_size: int, matches) -> tuple[int, os.stat_result, str] | None:
        """The rotated copy among the log's siblings: an open (fd, stat, name), or None.

        A regular uncompressed file other than `identity`, at least `min_size` bytes long, for which
        `matches(fd, st)` holds; the most recently modified if several do (then the first by name).
        """
        best: tuple[int, os.stat_result, str] | None = None
        for name in self._siblings():
            suffix = name[len(str(self.path)):]
            if OWN_FILES_MARKER in suffix or suffix.lower().endswith(COMPRESSED_SUFFIXES):
                continue
            if self.state_path is not None and name == str(self.state_path):
                continue
            try:
                fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
            except OSError:
                continue
            try:
                st = os.fstat(fd)
                ok = (stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) != identity
                      and st.st_size >= min_size and matches(fd, st))
            except OSError:
                ok = False
            if ok and (best is None or st.st_mtime_ns > best[1].st_mtime_ns):
                if best is not None:
                    os.close(best[0])
                best = (fd, st, name)
            else:
                os.close(fd)
        return best

    def _path_stat(self) -> os.stat_result | None:
        try:
            return os.stat(self.path)
        except OSError:
            return None

    def _successor_has_data(self) -> bool:
        """`path` now names another file, and its writer has started writing to it."""
        st = self._path_stat()
        assert self._file is not None
        return st is not None and (st.st_dev, st.st_ino) != self._file.identity and st.st_size > 0

    def _switch_to_successor(self, out: list[bytes]) -> None:
        """Abandon the drained old file (delivering its unterminated last line), open the new one at 0."""
        assert self._file is not None
        if self._pending and not self._skipping:
            self._emit(bytes(self._pending), out)
        self._pending = bytearray()
        self._skipping = False
        self._file.close()
        self._file = None
        self._consumed = 0
        self._rotations += 1
        log.info("log %s: rotated, following the new file", self.path)
        self._open_path(at_end=False)

    # -- bookkeeping -------------------------------------------------------------------------

    def _measure_lag(self) -> int:
        if self._file is None:
            return 0
        lag = max(0, self._file.size() - self._consumed)
        st = self._path_stat()
        if st is not None and (st.st_dev, st.st_ino) != self._file.identity:
            lag += st.st_size
        return lag

    def _state(self) -> dict:
        f = self._file
        if f is None:
            return {"version": STATE_VERSION, "path": str(self.path), "file": None}
        n = min(FINGERPRINT_BYTES, self._consumed)
        return {
            "version": STATE_VERSION,
            "path": str(self.path),
            "file": {
                "dev": f.identity[0],
                "ino": f.identity[1],
                "offset": self._consumed,
                "fingerprint_len": n,
                "fingerprint_sha256": hashlib.sha256(f.prefix[:n]).hexdigest(),
                "skipping": self._skipping,
            },
        }
