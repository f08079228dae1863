"""The receiver's SQLite inbox: one row per alert fingerprint, plus its firing/resolved history.

Alertmanager repeats notifications (repeat_interval) and retries failed ones, so the same alert
arrives many times: the row keeps the current state and a count, and an event is written only
when something happened (first seen, fired again, resolved). A notification is committed with
synchronous=FULL before the receiver answers 200, so an accepted alert survives a crash.
"""
from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from modelmon.alerting.payload import AlertNotice, Notification

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

_ORDER = """ORDER BY CASE status WHEN 'firing' THEN 0 ELSE 1 END,
                  CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END,
                  last_received_at DESC, fingerprint"""


class AlertStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")  # readers never block the webhook writer
            db.executescript(_SCHEMA)

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
                "INSERT INTO alerts VALUES (:fingerprint, :alertname, :status, :severity, :model, :labels, "
                ":annotations, :starts_at, :ends_at, :generator_url, :receiver, :now, :now, 1)", values)
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

    def alerts(self, *, status: str | None = None, model: str | None = None, limit: int = 500) -> list[dict]:
        where, args = [], []
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if model is not None:
            where.append("model = ?")
            args.append(model)
        sql = "SELECT * FROM alerts" + (f" WHERE {' AND '.join(where)}" if where else "") + f" {_ORDER} LIMIT ?"
        with self._connect() as db:
            return [_alert_dict(r) for r in db.execute(sql, (*args, limit))]

    def alert(self, fingerprint: str) -> dict | None:
        """One alert with its history, oldest event first."""
        with self._connect() as db:
            row = db.execute("SELECT * FROM alerts WHERE fingerprint = ?", (fingerprint,)).fetchone()
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


def _alert_dict(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    out["labels"] = json.loads(out["labels"])
    out["annotations"] = json.loads(out["annotations"])
    return out
