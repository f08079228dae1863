"""The receiver's SQLite inbox: one row per alert fingerprint, its firing/resolved history, and incidents.

Alertmanager repeats notifications (repeat_interval) and retries failed ones, so the same alert
arrives many times: the row keeps the current state and a count, and an event is written only
when something happened (first seen, fired again, resolved). A notification is committed with
synchronous=FULL before the receiver answers 200, so an accepted alert survives a crash.

Reading pages through the inbox with a keyset cursor (never OFFSET): the order is firing first,
then severity (critical, warning, other), then most recently received, then fingerprint, and a
cursor is the sort key of the last alert of a page. Three virtual generated columns spell that
order as plain columns so that one index serves both the order and the "after this key" seek.

Incidents (see incidents.py for the grouping key): every alert episode (a fingerprint from one
startsAt on) is a row of `episodes` pointing at its incident, assigned in the transaction that
stores the notification. `incidents` keeps what the inbox sorts and filters on (status, highest
severity, team, model, first start, last end, last notification) and pages like the alerts, with
the incident id as the last part of the key.
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

from modelmon.receiver.incidents import incident_key, labels_of_key, severity_history, \
    severity_rank, window_of
from modelmon.receiver.payload import AlertNotice, Notification, epoch, rfc3339

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
CREATE TABLE IF NOT EXISTS incidents (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    key              TEXT NOT NULL,     -- incidents.incident_key(): canonical JSON of the grouping labels
    alertname        TEXT NOT NULL,
    model            TEXT NOT NULL,
    team             TEXT NOT NULL,
    status           TEXT NOT NULL,     -- firing while any episode fires
    severity         TEXT NOT NULL,     -- the highest severity any episode had
    started          REAL NOT NULL,     -- earliest startsAt (epoch seconds)
    ended            REAL,              -- latest endsAt once nothing fires, else NULL
    last_received_at REAL NOT NULL,
    status_rank      INTEGER GENERATED ALWAYS AS (CASE status WHEN 'firing' THEN 0 ELSE 1 END) VIRTUAL,
    severity_rank    INTEGER GENERATED ALWAYS AS
                     (CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END) VIRTUAL,
    received_desc    REAL GENERATED ALWAYS AS (-last_received_at) VIRTUAL
);
CREATE INDEX IF NOT EXISTS incidents_by_key ON incidents (key, started);
CREATE INDEX IF NOT EXISTS incidents_in_order ON incidents (status_rank, severity_rank, received_desc, id);
CREATE INDEX IF NOT EXISTS incidents_by_model_in_order
    ON incidents (model, status_rank, severity_rank, received_desc, id);
CREATE INDEX IF NOT EXISTS incidents_by_team_in_order
    ON incidents (team, status_rank, severity_rank, received_desc, id);
CREATE TABLE IF NOT EXISTS episodes (
    fingerprint TEXT NOT NULL REFERENCES alerts (fingerprint),
    starts_at   TEXT NOT NULL,
    started     REAL NOT NULL,
    ends_at     TEXT NOT NULL,              -- '' while firing
    ended       REAL,                       -- NULL while firing
    status      TEXT NOT NULL,
    severity    TEXT NOT NULL,
    incident_id INTEGER NOT NULL REFERENCES incidents (id),
    PRIMARY KEY (fingerprint, starts_at)
);
CREATE INDEX IF NOT EXISTS episodes_by_incident ON episodes (incident_id, started);
"""

# The sort key as columns (added to databases created before them: ALTER TABLE can add VIRTUAL ones).
_KEY_COLUMNS = {
    "status_rank": "INTEGER GENERATED ALWAYS AS (CASE status WHEN 'firing' THEN 0 ELSE 1 END) VIRTUAL",
    "severity_rank": "INTEGER GENERATED ALWAYS AS "
                     "(CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END) VIRTUAL",
    "received_desc": "REAL GENERATED ALWAYS AS (-last_received_at) VIRTUAL",  # most recent first, ascending
}
# Columns added after the first release (to older databases too, then backfilled).
_ADDED_COLUMNS = {
    "team": "TEXT NOT NULL DEFAULT ''",
    "external_url": "TEXT NOT NULL DEFAULT ''",   # Alertmanager's externalURL from the last notification
    "incident_id": "INTEGER",                      # the incident of the current episode
}
_KEY = ("status_rank", "severity_rank", "received_desc", "fingerprint")
_ORDER = f"ORDER BY {', '.join(_KEY)}"
_INDEXES = f"""
CREATE INDEX IF NOT EXISTS alerts_in_order ON alerts ({', '.join(_KEY)});
CREATE INDEX IF NOT EXISTS alerts_by_model_in_order ON alerts (model, {', '.join(_KEY)});
CREATE INDEX IF NOT EXISTS alerts_by_team_in_order ON alerts (team, {', '.join(_KEY)});
"""
_COLUMNS = ("fingerprint", "alertname", "status", "severity", "model", "labels", "annotations", "starts_at",
            "ends_at", "generator_url", "receiver", "first_received_at", "last_received_at", "notifications",
            *_ADDED_COLUMNS)
_SELECT = f"SELECT {', '.join(_COLUMNS)}, {', '.join(_KEY[:3])} FROM alerts"
_INCIDENT_KEY = ("status_rank", "severity_rank", "received_desc", "id")
_INCIDENT_COLUMNS = ("id", "key", "alertname", "model", "team", "status", "severity", "started", "ended",
                     "last_received_at")
_SELECT_INCIDENTS = f"SELECT {', '.join(_INCIDENT_COLUMNS)}, {', '.join(_INCIDENT_KEY[:3])} FROM incidents"
_STATUS_RANK = {"firing": 0, "resolved": 1}
FILTERS = ("model", "team", "severity")  # equality filters besides status, for alerts and incidents


class StoreError(ValueError):
    """The alert database cannot be used at this path (message names the path)."""


class CursorError(ValueError):
    """A `before` cursor that this store did not hand out."""


@dataclass(frozen=True)
class Page:
    alerts: list[dict[str, Any]]  # the rows: alerts, or incidents for incidents_page()
    next: str | None            # cursor of the page after this one; None on the last page
    total: int                  # alerts matching the filter, whatever the page
    counts: dict[str, int]      # the same by status: {"firing": n, "resolved": m}
    start: int                  # matching alerts ordered before this page (0 on the first page)


def encode_cursor(key: tuple) -> str:
    """Opaque cursor for the sort key of an alert (URL-safe, no padding)."""
    raw = json.dumps(list(key), separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str, last: type = str) -> tuple[int, int, float, Any]:
    """The sort key inside a cursor; CursorError for anything encode_cursor did not produce.

    `last` is the type of the key's tie-breaker: str (alert fingerprint) or int (incident id).
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (ValueError, binascii.Error, UnicodeError, RecursionError):
        raise CursorError("not a cursor of this receiver") from None
    ok = (isinstance(key, list) and len(key) == 4
          and type(key[0]) is int and key[0] in (0, 1)
          and type(key[1]) is int and key[1] in (0, 1, 2)
          and type(key[2]) in (int, float) and math.isfinite(key[2])
          and type(key[3]) is last)
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
                    for name, decl in {**_KEY_COLUMNS, **_ADDED_COLUMNS}.items():
                        if name not in have:
                            db.execute(f"ALTER TABLE alerts ADD COLUMN {name} {decl}")
                    if "team" not in have:
                        db.execute("UPDATE alerts SET team = coalesce(json_extract(labels, '$.team'), '')")
                    self._backfill_incidents(db)
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

    @classmethod
    def _upsert(cls, db: sqlite3.Connection, a: AlertNotice, n: Notification, now: float) -> int:
        row = db.execute("SELECT status, starts_at FROM alerts WHERE fingerprint = ?", (a.fingerprint,)).fetchone()
        if row is not None and row["status"] == "resolved" and a.status == "firing" \
                and row["starts_at"] == a.starts_at:
            # A retried firing notification of an episode already resolved: resolution is final
            # (a new episode comes with a new startsAt).
            db.execute("UPDATE alerts SET last_received_at = ?, notifications = notifications + 1 "
                       "WHERE fingerprint = ?", (now, a.fingerprint))
            return 0
        if row is not None and epoch(a.starts_at) < epoch(row["starts_at"]):
            # A late notification of an episode older than the one we show: counted, never shown over
            # the newer one; its resolution still closes that episode in its incident.
            db.execute("UPDATE alerts SET last_received_at = ?, notifications = notifications + 1 "
                       "WHERE fingerprint = ?", (now, a.fingerprint))
            if a.status == "resolved":
                cls._episode(db, a.fingerprint, a.labels, a.starts_at, epoch(a.ends_at) if a.ends_at else now, now)
            return 0
        values = dict(
            fingerprint=a.fingerprint, alertname=a.alertname, status=a.status,
            severity=a.labels.get("severity", ""), model=a.labels.get("model", ""),
            team=a.labels.get("team", ""), external_url=n.external_url,
            labels=json.dumps(a.labels, sort_keys=True), annotations=json.dumps(a.annotations, sort_keys=True),
            starts_at=a.starts_at, ends_at=a.ends_at, generator_url=a.generator_url, receiver=n.receiver, now=now)
        if row is None:
            db.execute(
                "INSERT INTO alerts (fingerprint, alertname, status, severity, model, team, labels, annotations, "
                "starts_at, ends_at, generator_url, receiver, external_url, first_received_at, last_received_at, "
                "notifications) VALUES (:fingerprint, :alertname, :status, :severity, :model, :team, :labels, "
                ":annotations, :starts_at, :ends_at, :generator_url, :receiver, :external_url, :now, :now, 1)",
                values)
        else:
            db.execute(
                "UPDATE alerts SET alertname = :alertname, status = :status, severity = :severity, model = :model, "
                "team = :team, labels = :labels, annotations = :annotations, starts_at = :starts_at, "
                "ends_at = :ends_at, generator_url = :generator_url, receiver = :receiver, "
                "external_url = :external_url, last_received_at = :now, "
                "notifications = notifications + 1 WHERE fingerprint = :fingerprint", values)
        ended = (epoch(a.ends_at) if a.ends_at else now) if a.status == "resolved" else None
        cls._episode(db, a.fingerprint, a.labels, a.starts_at, ended, now)
        if row is not None and row["status"] == a.status and row["starts_at"] == a.starts_at:
            return 0  # a repeat of what we know
        db.execute("INSERT INTO events (fingerprint, status, starts_at, ends_at, received_at, group_key) "
                   "VALUES (?, ?, ?, ?, ?, ?)", (a.fingerprint, a.status, a.starts_at, a.ends_at, now, n.group_key))
        return 1

    @classmethod
    def _episode(cls, db: sqlite3.Connection, fingerprint: str, labels: dict[str, str], starts_at: str,
                 ended: float | None, now: float) -> None:
        """Record one episode of an alert (`ended` None while firing) in its incident (see incidents.py)."""
        started = epoch(starts_at)
        severity = labels.get("severity", "")
        touched: set[int] = set()
        ep = db.execute("SELECT status, incident_id FROM episodes WHERE fingerprint = ? AND starts_at = ?",
                        (fingerprint, starts_at)).fetchone()
        if ep is not None:
            incident = ep["incident_id"]
            if ep["status"] == "firing" and ended is not None:
                db.execute("UPDATE episodes SET status = 'resolved', ends_at = ?, ended = ? "
                           "WHERE fingerprint = ? AND starts_at = ?",
                           (rfc3339(ended), max(ended, started), fingerprint, starts_at))
        else:
            # Alertmanager tracks one episode per fingerprint: a later startsAt ends the earlier ones
            # still open (their resolve notification will not come).
            for old in db.execute("SELECT starts_at, started, incident_id FROM episodes WHERE fingerprint = ? "
                                  "AND status = 'firing' AND started < ?", (fingerprint, started)).fetchall():
                db.execute("UPDATE episodes SET status = 'resolved', ends_at = ?, ended = ? "
                           "WHERE fingerprint = ? AND starts_at = ?",
                           (starts_at, started, fingerprint, old["starts_at"]))
                touched.add(old["incident_id"])
            key = incident_key(labels)
            if ended is None:
                ids = [r[0] for r in db.execute(
                    "SELECT id FROM incidents WHERE key = ? AND (ended IS NULL OR ended >= ?) ORDER BY id",
                    (key, started))]
            else:
                ids = [r[0] for r in db.execute(
                    "SELECT id FROM incidents WHERE key = ? AND started <= ? AND (ended IS NULL OR ended >= ?) "
                    "ORDER BY id", (key, max(ended, started), started))]
            if ids:
                incident, merged = ids[0], ids[1:]
                for other in merged:  # this episode bridges them: one incident from now on
                    db.execute("UPDATE episodes SET incident_id = ? WHERE incident_id = ?", (incident, other))
                    db.execute("UPDATE alerts SET incident_id = ? WHERE incident_id = ?", (incident, other))
                    db.execute("DELETE FROM incidents WHERE id = ?", (other,))
                    touched.discard(other)
            else:
                incident = db.execute(
                    "INSERT INTO incidents (key, alertname, model, team, status, severity, started, ended, "
                    "last_received_at) VALUES (?, ?, ?, ?, 'firing', ?, ?, NULL, ?)",
                    (key, labels.get("alertname", ""), labels.get("model", ""), labels.get("team", ""), severity,
                     started, now)).lastrowid
            db.execute("INSERT INTO episodes (fingerprint, starts_at, started, ends_at, ended, status, severity, "
                       "incident_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (fingerprint, starts_at, started, "" if ended is None else rfc3339(ended),
                        None if ended is None else max(ended, started),
                        "firing" if ended is None else "resolved", severity, incident))
        db.execute("UPDATE alerts SET incident_id = ? WHERE fingerprint = ? AND starts_at = ?",
                   (incident, fingerprint, starts_at))
        for i in touched | {incident}:
            cls._refresh_incident(db, i, now)

    @staticmethod
    def _refresh_incident(db: sqlite3.Connection, incident: int, now: float) -> None:
        rows = db.execute("SELECT started, ended, status, severity FROM episodes WHERE incident_id = ?",
                          (incident,)).fetchall()
        firing = any(r["status"] == "firing" for r in rows)
        db.execute("UPDATE incidents SET status = ?, severity = ?, started = ?, ended = ?, "
                   "last_received_at = max(last_received_at, ?) WHERE id = ?",
                   ("firing" if firing else "resolved",
                    min((r["severity"] for r in rows), key=lambda s: (severity_rank(s), s)),
                    min(r["started"] for r in rows),
                    None if firing else max(r["ended"] for r in rows), now, incident))

    @classmethod
    def _backfill_incidents(cls, db: sqlite3.Connection) -> None:
        """Give the alerts of a database from before incidents their episode and incident (oldest first)."""
        rows = db.execute("SELECT fingerprint, labels, status, starts_at, ends_at, last_received_at FROM alerts "
                          "WHERE incident_id IS NULL").fetchall()
        def start(r) -> float:
            try:
                return epoch(r["starts_at"])
            except ValueError:
                return 0.0
        for r in sorted(rows, key=start):
            try:
                epoch(r["starts_at"])
                ended = None if r["status"] == "firing" else (
                    epoch(r["ends_at"]) if r["ends_at"] else r["last_received_at"])
            except ValueError:
                continue  # not written by this receiver: stays an alert without incident
            cls._episode(db, r["fingerprint"], json.loads(r["labels"]), r["starts_at"], ended,
                         r["last_received_at"])

    def page(self, *, status: str | None = None, model: str | None = None, team: str | None = None,
             severity: str | None = None, before: str | None = None, limit: int = 100) -> Page:
        """One page of alerts in inbox order, after the cursor `before`, with the filter's true totals.

        Keyset pagination: a page starts right after the sort key in the cursor, so alerts that arrive
        between two pages neither shift nor repeat the ones not read yet. An alert whose own key changes
        meanwhile (notified again: it moves up; resolved: it moves down) may be skipped or seen twice in
        that pass. Page and totals are read in one transaction (one snapshot). Raises CursorError for a
        cursor this store did not produce. `model`, `team`, `severity`: equality filters (None: any).
        """
        return self._page(_ALERTS, status, dict(model=model, team=team, severity=severity), before, limit)

    def incidents_page(self, *, status: str | None = None, model: str | None = None, team: str | None = None,
                       severity: str | None = None, before: str | None = None, limit: int = 100) -> Page:
        """One page of incidents, in the alerts' order and with the same cursor rules; each incident
        with its episodes (`alerts`), severity history and windows. `severity` is the highest reached."""
        page = self._page(_INCIDENTS, status, dict(model=model, team=team, severity=severity), before, limit)
        return Page(alerts=self._with_episodes(page.alerts), next=page.next, total=page.total,
                    counts=page.counts, start=page.start)

    def _page(self, table: "_Table", status: str | None, filters: dict[str, str | None], before: str | None,
              limit: int) -> Page:
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        if status is not None and status not in _STATUS_RANK:
            raise ValueError(f"status must be one of {', '.join(_STATUS_RANK)}, got {status!r}")
        key = decode_cursor(before, table.last) if before is not None else None
        (where_sql, args), (after_sql, after_args) = _page_filters(table, status, filters, key)
        with self._connect() as db:
            db.execute("BEGIN")  # one read snapshot for the page and its counts
            try:
                rows = db.execute(f"{table.select}{after_sql} {table.order} LIMIT ?",
                                  (*after_args, limit + 1)).fetchall()
                # By status, through status_rank: the same groups (statuses are validated on the way in),
                # counted off the order index instead of the table rows with their JSON.
                by_rank = dict(db.execute(
                    f"SELECT status_rank, COUNT(*) FROM {table.name}{where_sql} GROUP BY status_rank",
                    args).fetchall())
                remaining = (db.execute(f"SELECT COUNT(*) FROM {table.name}{after_sql}", after_args).fetchone()[0]
                             if key is not None else None)
            finally:
                db.execute("COMMIT")
        counts = {s: by_rank.get(r, 0) for s, r in _STATUS_RANK.items()}
        total = sum(counts.values())
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if rows else None
        return Page(
            alerts=[table.to_dict(r) for r in rows],
            next=encode_cursor(tuple(last[k] for k in table.key)) if more and last is not None else None,
            total=total, counts=counts, start=0 if remaining is None else total - remaining)

    def page_plan(self, *, status: str | None = None, model: str | None = None, team: str | None = None,
                  severity: str | None = None, before: str | None = None, incidents: bool = False) -> str:
        """EXPLAIN QUERY PLAN of the page query, one line (diagnostics; tests check it seeks an index)."""
        table = _INCIDENTS if incidents else _ALERTS
        key = decode_cursor(before, table.last) if before is not None else None
        _, (after_sql, after_args) = _page_filters(table, status, dict(model=model, team=team, severity=severity),
                                                   key)
        with self._connect() as db:
            rows = db.execute(f"EXPLAIN QUERY PLAN {table.select}{after_sql} {table.order} LIMIT 1",
                              after_args).fetchall()
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

    def incident(self, incident_id: int) -> dict | None:
        """One incident with its episodes, or None."""
        with self._connect() as db:
            row = db.execute(f"{_SELECT_INCIDENTS} WHERE id = ?", (incident_id,)).fetchone()
        return None if row is None else self._with_episodes([_incident_dict(row)])[0]

    def distinct(self, column: str) -> list[str]:
        """The values of an incident filter column present in the store (for the inbox's filter form)."""
        if column not in FILTERS:
            raise ValueError(f"not a filter column: {column!r}")
        with self._connect() as db:
            return [r[0] for r in db.execute(f"SELECT DISTINCT {column} FROM incidents ORDER BY {column}")]

    def _with_episodes(self, incidents: list[dict]) -> list[dict]:
        """Add each incident's episodes (oldest first, with their alert's labels and annotations),
        severity history and windows."""
        if not incidents:
            return incidents
        by_id = {i["id"]: i for i in incidents}
        marks = ", ".join("?" * len(by_id))
        with self._connect() as db:
            rows = db.execute(
                "SELECT e.incident_id, e.fingerprint, e.status, e.severity, e.starts_at, e.ends_at, e.started, "
                "e.ended, a.labels, a.annotations, a.generator_url, a.external_url FROM episodes e "
                f"JOIN alerts a USING (fingerprint) WHERE e.incident_id IN ({marks}) ORDER BY e.started, e.fingerprint",
                tuple(by_id)).fetchall()
        for i in incidents:
            i["alerts"] = []
        for r in rows:
            labels = json.loads(r["labels"])
            by_id[r["incident_id"]]["alerts"].append({
                "fingerprint": r["fingerprint"], "status": r["status"], "severity": r["severity"],
                "window": window_of(labels), "starts_at": r["starts_at"], "ends_at": r["ends_at"],
                "started": r["started"], "ended": r["ended"], "labels": labels,
                "annotations": json.loads(r["annotations"]), "generator_url": r["generator_url"],
                "external_url": r["external_url"]})
        for i in incidents:
            members = i["alerts"]
            i["severity_history"] = severity_history((m["started"], m["ended"], m["severity"]) for m in members)
            i["windows"] = list(dict.fromkeys(m["window"] for m in members if m["window"]))
        return incidents

    def check(self) -> None:
        """Raise if the database cannot be read (health check)."""
        with self._connect() as db:
            db.execute("SELECT count(*) FROM alerts").fetchone()


@dataclass(frozen=True)
class _Table:
    name: str
    key: tuple[str, ...]       # the sort key, as columns
    last: type                 # type of its last part (the tie-breaker)
    select: str
    to_dict: Any

    @property
    def order(self) -> str:
        return f"ORDER BY {', '.join(self.key)}"


def _alert_dict(row: sqlite3.Row) -> dict[str, Any]:
    out = {k: row[k] for k in _COLUMNS}
    out["labels"] = json.loads(out["labels"])
    out["annotations"] = json.loads(out["annotations"])
    return out


def _incident_dict(row: sqlite3.Row) -> dict[str, Any]:
    out = {k: row[k] for k in _INCIDENT_COLUMNS}
    out["labels"] = labels_of_key(out.pop("key"))
    out["version"] = out["labels"].get("version", "")
    out["starts_at"] = rfc3339(out["started"])
    out["ends_at"] = "" if out["ended"] is None else rfc3339(out["ended"])
    return out


_ALERTS = _Table("alerts", _KEY, str, _SELECT, _alert_dict)
_INCIDENTS = _Table("incidents", _INCIDENT_KEY, int, _SELECT_INCIDENTS, _incident_dict)


def _page_filters(table: _Table, status: str | None, filters: dict[str, str | None],
                  key: tuple | None) -> tuple[tuple[str, list], tuple[str, list]]:
    """(WHERE of the filter, args), (WHERE of the filter and "after the cursor key", args)."""
    where: list[str] = []
    args: list[Any] = []
    for column in FILTERS:
        if filters.get(column) is not None:
            where.append(f"{column} = ?")
            args.append(filters[column])
    # The status as an equality on the leading index column, so that the seek stays an index range.
    rank = None if status is None else _STATUS_RANK[status]
    if rank is not None:
        where.append("status_rank = ?")
        args.append(rank)
    after, after_args = list(where), list(args)
    if key is not None:
        if rank is None:
            after.append(f"({', '.join(table.key)}) > (?, ?, ?, ?)")
            after_args += key
        elif key[0] == rank:
            after.append(f"({', '.join(table.key[1:])}) > (?, ?, ?)")
            after_args += key[1:]
        elif key[0] > rank:
            after.append("0")  # the cursor is past every row of this status
        # key[0] < rank: the cursor is before every row of this status, the filter alone says it

    def sql(clauses: list[str]) -> str:
        return f" WHERE {' AND '.join(clauses)}" if clauses else ""
    return (sql(where), args), (sql(after), after_args)
