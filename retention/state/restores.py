"""The restore record and the restore-grace exemptions, in the journal's database.

This module owns two tables next to the action journal (same file, so the audit history
and its restores live together):

* ``restores``: one row per message a ``retention restore`` put back (or found already
  there, or could not restore), journalled ``planned`` *before* the APPEND and
  ``restored`` with the new UID after it. A crash in between leaves ``planned``; the next
  restore finds the message by Message-ID + SHA-256 and never appends it twice.
* ``holds``: restored messages exempt from every rule until ``until`` (``restore_grace``):
  (account, folder, UIDVALIDITY, UID) and the Message-ID. The account pass reads the live
  ones and passes them to the planner in the snapshot (the planner stays pure).

With ``state_url`` both tables are in the journal's PostgreSQL (``RestoreLog.open_url``),
through the same storage interface as the journal (``retention.state.journaldb``).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from retention.errors import JournalError
from retention.state import sqlite
from retention.state.journaldb import Cursor, Db, PostgresDb, SqliteDb, describe_error

PLANNED, RESTORED, PRESENT, FAILED = "planned", "restored", "present", "failed"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS restores (
    id          INTEGER PRIMARY KEY,
    restore_id  TEXT NOT NULL,
    account     TEXT NOT NULL,
    source_row  INTEGER NOT NULL,
    folder      TEXT NOT NULL,
    message_id  TEXT,
    sha256      TEXT,
    size        INTEGER NOT NULL,
    state       TEXT NOT NULL,
    uidvalidity INTEGER,
    uid         INTEGER,
    detail      TEXT,
    created     TEXT NOT NULL,
    updated     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS restores_source ON restores (account, source_row);
CREATE TABLE IF NOT EXISTS holds (
    account     TEXT NOT NULL,
    folder      TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uid         INTEGER NOT NULL,
    message_id  TEXT,
    restored    TEXT NOT NULL,
    until       TEXT NOT NULL,
    PRIMARY KEY (account, folder, uidvalidity, uid)
);
"""


@dataclass(frozen=True, slots=True)
class Hold:
    account: str
    folder: str
    uidvalidity: int
    uid: int
    message_id: str | None
    restored: datetime
    until: datetime

    def reason(self) -> str:
        return (f"restored from the archive on {self.restored:%Y-%m-%d}: exempt from every "
                f"rule until {self.until:%Y-%m-%d} (restore_grace)")


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat()


class RestoreLog:
    def __init__(self, db: Db, path: Path | None) -> None:
        self._db = db
        self.path = path  # the SQLite file; None for PostgreSQL
        self.where = db.where

    @classmethod
    def open(cls, journal_path: Path) -> RestoreLog:
        try:
            journal_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            conn = sqlite.connect(str(journal_path), _SCHEMA)
        except sqlite3.Error as e:
            raise JournalError(f"journal {journal_path}: {e}") from None
        return cls(SqliteDb(conn, str(journal_path)), journal_path)

    @classmethod
    def open_url(cls, url: str) -> RestoreLog:
        """The tables in the journal's PostgreSQL (created with the journal's)."""
        from retention.state.leases import redacted_url

        try:
            return cls(PostgresDb(url), None)
        except Exception as e:  # noqa: BLE001 - driver errors: only their first line
            raise JournalError(f"journal {redacted_url(url)}: "
                               f"{describe_error(e, url)}") from None

    def close(self) -> None:
        with contextlib.suppress(*self._db.errors):
            self._db.close()

    def __enter__(self) -> RestoreLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        db = self._db
        try:
            db.begin()
            try:
                yield
            except BaseException:
                db.rollback()
                raise
            db.commit()
        except db.errors as e:
            raise JournalError(f"journal {self.where}: {db.describe(e)}") from None

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        try:
            return self._db.execute(sql, params)
        except self._db.errors as e:
            raise JournalError(f"journal {self.where}: {self._db.describe(e)}") from None

    def plan(self, restore_id: str, account: str, source_row: int, folder: str,
             message_id: str | None, digest: str | None, size: int) -> int:
        now = _iso(datetime.now(UTC))
        with self._tx():
            row_id = self._db.insert(
                "INSERT INTO restores (restore_id, account, source_row, folder, message_id,"
                " sha256, size, state, created, updated) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (restore_id, account, source_row, folder, message_id, digest, size, PLANNED,
                 now, now),
            )
        return row_id

    def finish(self, row_id: int, state: str, *, uidvalidity: int | None = None,
               uid: int | None = None, detail: str | None = None,
               hold: Hold | None = None) -> None:
        """Record the outcome (and the hold, in the same transaction)."""
        with self._tx():
            self._db.execute(
                "UPDATE restores SET state=?, uidvalidity=?, uid=?, detail=?, updated=?"
                " WHERE id=?",
                (state, uidvalidity, uid, detail, _iso(datetime.now(UTC)), row_id),
            )
            if hold is not None:
                # An upsert (PostgreSQL has no INSERT OR REPLACE): the same row results.
                self._db.execute(
                    "INSERT INTO holds (account, folder, uidvalidity, uid,"
                    " message_id, restored, until) VALUES (?,?,?,?,?,?,?)"
                    " ON CONFLICT (account, folder, uidvalidity, uid) DO UPDATE SET"
                    " message_id=excluded.message_id, restored=excluded.restored,"
                    " until=excluded.until",
                    (hold.account, hold.folder, hold.uidvalidity, hold.uid, hold.message_id,
                     _iso(hold.restored), _iso(hold.until)),
                )

    def restored_sources(self, account: str) -> set[int]:
        cur = self._exec(
            "SELECT source_row FROM restores WHERE account=? AND state IN (?,?)",
            (account, RESTORED, PRESENT),
        )
        return {int(r[0]) for r in cur.fetchall()}

    def entries(self, account: str | None = None) -> list[dict[str, object]]:
        sql, params = "SELECT * FROM restores", []
        if account is not None:
            sql += " WHERE account=?"
            params.append(account)
        return [dict(r) for r in self._exec(sql + " ORDER BY id", params).fetchall()]

    def holds(self, account: str, now: datetime) -> list[Hold]:
        """The live exemptions of ``account`` (``until`` after ``now``)."""
        cur = self._exec(
            "SELECT * FROM holds WHERE account=? AND until > ?", (account, _iso(now))
        )
        return [
            Hold(r["account"], r["folder"], r["uidvalidity"], r["uid"], r["message_id"],
                 datetime.fromisoformat(r["restored"]), datetime.fromisoformat(r["until"]))
            for r in cur.fetchall()
        ]


def live_holds(journal_path: Path, account: str, now: datetime,
               state_url: str | None = None) -> list[Hold]:
    """The exemptions for a pass (none when the journal does not exist yet)."""
    if state_url:
        with RestoreLog.open_url(state_url) as log:
            return log.holds(account, now)
    if not journal_path.exists():
        return []
    with RestoreLog.open(journal_path) as log:
        return log.holds(account, now)
