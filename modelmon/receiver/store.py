"""The receiver's SQLite inbox: one row per alert fingerprint, plus its firing/resolved history.

Alertmanager repeats notifications (repeat_interval) and retries failed ones, so the same alert
arrives many times: the row keeps the current state and a count, and an event is written only
when something happened (first seen, fired again, resolved). A notification is committed with
synchronous=FULL before the receiver answers 200, so an accepted alert survives a crash.

Reading pages through the inbox with a keyset cursor (never OFFSET): the order is firing first,
then severity (critical, warning, other), then most recently received, then fingerprint, and a
cursor is the sort key of the last alert of a page. Three virtual generated columns spell that
order as plain columns so that one index serves both the order and the "after this key" seek.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from modelmon.receiver.payload import AlertNotice, Notification

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    fingerprint       TEXT PRIMARY KEY,
    alertname         TEXT NOT NULL,
    status            TEXT NOT NULL,
    severity          TEXT NOT NULL,
    model             TEXT NOT NULL,
    labels            TEXT NOT NULL,
    annotations       TEXT NOT NULL,
    starts_at         TEXT NOT NULL,
    ends_at           TEXT NOT NULL,
    generator_url     TEXT NOT NULL,
    receiver          TEXT NOT NULL,
    first_received_at REAL NOT NULL,
    last_received_at  REAL NOT NULL,
    notifications     INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint TEXT NOT NULL REFERENCES alerts (fingerprint),
    status      TEXT NOT NULL,
    starts_at   TEXT NOT NULL,
    ends_at     TEXT NOT NULL,
    received_at REAL NOT NULL,
    group_key   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_fingerprint ON events (fingerprint, id);
"""

# The sort key as columns (added to databases created before them: ALTER TABLE can add VIRTUAL ones).
_KEY_COLUMNS = {
    "status_rank": "INTEGER GENERATED ALWAYS AS (CASE status WHEN 'firing' THEN 0 ELSE 1 END) VIRTUAL",
    "severity_rank": "INTEGER GENERATED ALWAYS AS "
                     "(CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END) VIRTUAL",
    "received_desc": "REAL GENERATED ALWAYS AS (-last_received_at) VIRTUAL",  # most recent first, ascending
}
_KEY = ("status_rank", "severity_rank", "received_desc", "fingerprint")
_ORDER = f"ORDER BY {', '.join(_KEY)}"
_INDEXES = f"""
CREATE INDEX IF NOT EXISTS alerts_in_order ON alerts ({', '.join(_KEY)});
CREATE INDEX IF NOT EXISTS alerts_by_model_in_order ON alerts (model, {', '.join(_KEY)});
"""
_COLUMNS = ("fingerprint", "alertname", "status", "severity", "model", "labels", "annotations", "starts_at",
            "ends_at", "generator_url", "receiver", "first_received_at", "last_received_at", "notifications")
_SELECT = f"SELECT {', '.join(_COLUMNS)}, {', '.join(_KEY[:3])} FROM alerts"
_STATUS_RANK = {"firing": 0, "resolved": 1}


class StoreError(ValueError):
    """The alert database cannot be used at this path (message names the path)."""


class CursorError(ValueError):
    """A `before` cursor that this store did not hand out."""


@dataclass(frozen=True)
class Page:
    alerts: list[dict[str, Any]]
    next: str | None            # cursor of the page after this one; None on the last page
    total: int                  # alerts matching the filter, whatever the page
    counts: dict[str, int]      # the same by status: {"firing": n, "resolved": m}
    start: int                  # matching alerts ordered before this page (0 on the first page)


def encode_cursor(key: tuple) -> str:
    """Opaque cursor for the sort key of an alert (URL-safe, no padding)."""
    raw = json.dumps(list(key), separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> tuple[int, int, float, str]:
    """The sort key inside a cursor; CursorError for anything encode_cursor did not produce."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (ValueError, binascii.Error, UnicodeError, RecursionError):
        raise CursorError("not a cursor of this receiver") from None
    ok = (isinstance(key, list) and len(key) == 4
          and type(key[0]) is int and key[0] in (0, 1)
          and type(key[1]) is int and key[1] in (0, 1, 2)
          and type(key[2]) in (int, float) and math.isfinite(key[2])
          and isinstance(key[3], str))
    if not ok:
        raise CursorError("not a cursor of this receiver")
    return key[0], key[1], float(key[2]), key[3]


class AlertStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        # Never create directories: a mistyped --db must be an error, not a new empty inbox elsewhere.
        if self.path.is_dir():
            raise StoreError(f"alert database {self.path}: is a directory (expected the path of a SQLite file)")
        parent = self.path.parent
        if not parent.is_dir():
            what = "is not a directory" if parent.exists() else "does not exist"
            raise StoreError(f"alert database {self.path}: its directory {parent} {what} (create it first)")
        try:
            with self._connect() as db:
                db.execute("PRAGMA journal_mode=WAL")  # readers never block the webhook writer
                db.executescript(_SCHEMA)
                db.execute("BEGIN IMMEDIATE")
                try:
                    have = {r["name"] for r in db.execute("PRAGMA table_xinfo(alerts)")}
                    for name, decl in _KEY_COLUMNS.items():
                        if name not in have:
                            db.execute(f"ALTER TABLE alerts ADD COLUMN {name} {decl}")
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.executescript(_INDEXES)
        except sqlite3.Error as e:
            raise StoreError(f"alert database {self.path}: cannot be opened as SQLite: {e}") from None

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # A connection per operation: cheap for SQLite, and safe under a threaded server.
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            yield db
        finally:
            db.close()

    def record(self, n: Notification, received_at: float | None = None) -> int:
        """Store every alert of a notification in one transaction; returns the events written."""
        now = time.time() if received_at is None else received_at
        events = 0
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                for alert in n.alerts:
                    events += self._upsert(db, alert, n, now)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return events

    @staticmethod
    def _upsert(db: sqlite3.Connection, a: AlertNotice, n: Notification, now: float) -> int:
        row = db.execute("SELECT status, starts_at FROM alerts WHERE fingerprint = ?", (a.fingerprint,)).fetchone()
        if row is not None and row["status"] == "resolved" and a.status == "firing" \
                and row["starts_at"] == a.starts_at:
            # A retried firing notification of an episode already resolved: resolution is final
            # (a new episode comes with a new startsAt).
            db.execute("UPDATE alerts SET last_received_at = ?, notifications = notifications + 1 "
                       "WHERE fingerprint = ?", (now, a.fingerprint))
            return 0
        values = dict(
            fingerprint=a.fingerprint, alertname=a.alertname, status=a.status,
            severity=a.labels.get("severity", ""), model=a.labels.get("model", ""),
            labels=json.dumps(a.labels, sort_keys=True), annotations=json.dumps(a.annotations, sort_keys=True),
            starts_at=a.starts_at, ends_at=a.ends_at, generator_url=a.generator_url, receiver=n.receiver, now=now)
        if row is None:
            db.execute(
                f"INSERT INTO alerts ({', '.join(_COLUMNS)}) VALUES (:fingerprint, :alertname, :status, :severity, "
                ":model, :labels, :annotations, :starts_at, :ends_at, :generator_url, :receiver, :now, :now, 1)",
                values)
        else:
            db.execute(
                "UPDATE alerts SET alertname = :alertname, status = :status, severity = :severity, model = :model, "
                "labels = :labels, annotations = :annotations, starts_at = :starts_at, ends_at = :ends_at, "
                "generator_url = :generator_url, receiver = :receiver, last_received_at = :now, "
                "notifications = notifications + 1 WHERE fingerprint = :fingerprint", values)
        if row is not None and row["status"] == a.status and row["starts_at"] == a.starts_at:
            return 0  # a repeat of what we know
        db.execute("INSERT INTO events (fingerprint, status, starts_at, ends_at, received_at, group_key) "
                   "VALUES (?, ?, ?, ?, ?, ?)", (a.fingerprint, a.status, a.starts_at, a.ends_at, now, n.group_key))
        return 1

    def page(self, *, status: str | None = None, model: str | None = None, before: str | None = None,
             limit: int = 100) -> Page:
        """One page of alerts in inbox order, after the cursor `before`, with the filter's true totals.

        Keyset pagination: a page starts right after the sort key in the cursor, so alerts that arrive
        between two pages neither shift nor repeat the ones not read yet. An alert whose own key changes
        meanwhile (notified again: it moves up; resolved: it moves down) may be skipped or seen twice in
        that pass. Page and totals are read in one transaction (one snapshot). Raises CursorError for a
        cursor this store did not produce.
        """
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        if status is not None and status not in _STATUS_RANK:
            raise ValueError(f"status must be one of {', '.join(_STATUS_RANK)}, got {status!r}")
        key = decode_cursor(before) if before is not None else None
        (where_sql, args), (after_sql, after_args) = _page_filters(status, model, key)
        with self._connect() as db:
            db.execute("BEGIN")  # one read snapshot for the page and its counts
            try:
                rows = db.execute(f"{_SELECT}{after_sql} {_ORDER} LIMIT ?", (*after_args, limit + 1)).fetchall()
                # By status, through status_rank: the same groups (statuses are validated on the way in),
                # counted off the order index instead of the table rows with their JSON.
                by_rank = dict(db.execute(
                    f"SELECT status_rank, COUNT(*) FROM alerts{where_sql} GROUP BY status_rank", args).fetchall())
                remaining = (db.execute(f"SELECT COUNT(*) FROM alerts{after_sql}", after_args).fetchone()[0]
                             if key is not None else None)
            finally:
                db.execute("COMMIT")
        counts = {s: by_rank.get(r, 0) for s, r in _STATUS_RANK.items()}
        total = sum(counts.values())
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if rows else None
        return Page(
            alerts=[_alert_dict(r) for r in rows],
            next=encode_cursor(tuple(last[k] for k in _KEY)) if more and last is not None else None,
            total=total, counts=counts, start=0 if remaining is None else total - remaining)

    def page_plan(self, *, status: str | None = None, model: str | None = None, before: str | None = None) -> str:
        """EXPLAIN QUERY PLAN of the page query, one line (diagnostics; tests check it seeks an index)."""
        key = decode_cursor(before) if before is not None else None
        _, (after_sql, after_args) = _page_filters(status, model, key)
        with self._connect() as db:
            rows = db.execute(f"EXPLAIN QUERY PLAN {_SELECT}{after_sql} {_ORDER} LIMIT 1", after_args).fetchall()
        return "; ".join(r["detail"] for r in rows)

    def alerts(self, *, status: str | None = None, model: str | None = None) -> list[dict]:
        """Every matching alert in inbox order (page by page)."""
        out, before = [], None
        while True:
            page = self.page(status=status, model=model, before=before, limit=1000)
            out += page.alerts
            if page.next is None:
                return out
            before = page.next

    def alert(self, fingerprint: str) -> dict | None:
        """One alert with its history, oldest event first."""
        with self._connect() as db:
            row = db.execute(f"{_SELECT} WHERE fingerprint = ?", (fingerprint,)).fetchone()
            if row is None:
                return None
            events = db.execute("SELECT status, starts_at, ends_at, received_at, group_key FROM events "
                                "WHERE fingerprint = ? ORDER BY id", (fingerprint,)).fetchall()
        out = _alert_dict(row)
        out["events"] = [dict(e) for e in events]
        return out

    def check(self) -> None:
        """Raise if the database cannot be read (health check)."""
        with self._connect() as db:
            db.execute("SELECT count(*) FROM alerts").fetchone()


def _page_filters(status: str | None, model: str | None,
                  key: tuple | None) -> tuple[tuple[str, list], tuple[str, list]]:
    """(WHERE of the filter, args), (WHERE of the filter and "after the cursor key", args)."""
    where: list[str] = []
    args: list[Any] = []
    if model is not None:
        where.append("model = ?")
        args.append(model)
    # The status as an equality on the leading index column, so that the seek stays an index range.
    rank = None if status is None else _STATUS_RANK[status]
    if rank is not None:
        where.append("status_rank = ?")
        args.append(rank)
    after, after_args = list(where), list(args)
    if key is not None:
        if rank is None:
            after.append(f"({', '.join(_KEY)}) > (?, ?, ?, ?)")
            after_args += key
        elif key[0] == rank:
            after.append(f"({', '.join(_KEY[1:])}) > (?, ?, ?)")
            after_args += key[1:]
        elif key[0] > rank:
            after.append("0")  # the cursor is past every alert of this status
        # key[0] < rank: the cursor is before every alert of this status, the filter alone says it

    def sql(clauses: list[str]) -> str:
        return f" WHERE {' AND '.join(clauses)}" if clauses else ""
    return (sql(where), args), (sql(after), after_args)


def _alert_dict(row: sqlite3.Row) -> dict[str, Any]:
    out = {k: row[k] for k in _COLUMNS}
    out["labels"] = json.loads(out["labels"])
    out["annotations"] = json.loads(out["annotations"])
    return out
