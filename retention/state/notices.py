"""The notice journal and the warning-level state (``StateDir.notices_path``).

This module owns two records:

* ``levels``: per account, whether usage was above ``warn_above`` at the last real run and
  how many upward crossings there have been. A warning fires on the way up only; the
  next one only after usage dropped below the level and crossed it again.
* ``notices``: one row per notice *event* (``warning:<account>:<n>``,
  ``archived:<account>:<run>``), written ``pending`` (with the exact message bytes) in
  the same transaction as the level change, *before* anything is delivered, then
  ``sent`` / ``failed`` / ``unknown``, or ``retry`` when delivery failed in a way known
  not to have delivered it (the relay was down, APPEND refused): the next runs try again
  until ``RETRY_FOR`` after the event, then give up (``failed``). An event is never
  delivered twice: a ``pending`` row left by a crash is finished by the next run (the
  delivery code looks for the notice's Message-ID in the INBOX before sending it again)
  and an SMTP hand-off whose outcome is unknown becomes ``unknown``, not a second copy.

Durability as the action journal: WAL, ``synchronous=FULL``, file mode 0600.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from retention.errors import JournalError
from retention.state import sqlite

PENDING, SENT, FAILED, UNKNOWN = "pending", "sent", "failed", "unknown"
RETRY = "retry"  # not delivered, and known not to be: the next run tries again
RETRY_FOR = timedelta(days=7)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS levels (
    account   TEXT PRIMARY KEY,
    above     INTEGER NOT NULL,
    crossings INTEGER NOT NULL,
    updated   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS notices (
    event      TEXT PRIMARY KEY,
    account    TEXT NOT NULL,
    kind       TEXT NOT NULL,
    state      TEXT NOT NULL,
    channel    TEXT NOT NULL,
    message_id TEXT NOT NULL,
    sender     TEXT NOT NULL,
    recipient  TEXT NOT NULL,
    message    BLOB NOT NULL,
    detail     TEXT,
    created    TEXT NOT NULL,
    updated    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS notices_open ON notices (account, state);
"""


@dataclass(frozen=True, slots=True)
class NoticeRow:
    event: str
    account: str
    kind: str
    state: str
    channel: str
    message_id: str
    sender: str
    recipient: str
    message: bytes
    detail: str | None


def _now() -> str:
    return datetime.now(UTC).isoformat()


class NoticeStore:
    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    def open(cls, path: Path) -> NoticeStore:
        """Open (creating when missing) the store at ``path`` (``StateDir.notices_path``)."""
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            conn = sqlite.connect(str(path), _SCHEMA)
            conn.row_factory = sqlite3.Row
        except sqlite3.Error as e:
            raise JournalError(f"cannot open notice journal {path}: {e}") from None
        except OSError as e:
            raise JournalError(f"cannot open notice journal {path}: {e.strerror}") from None
        return cls(conn, path)

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()

    def __enter__(self) -> NoticeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        except sqlite3.Error as e:
            raise JournalError(f"notice journal {self.path}: {e}") from None

    # -- levels ------------------------------------------------------------------------

    def level(self, account: str) -> tuple[bool, int]:
        """(above warn_above at the last real run, upward crossings so far)."""
        r = self._conn.execute(
            "SELECT above, crossings FROM levels WHERE account=?", (account,)
        ).fetchone()
        return (bool(r["above"]), int(r["crossings"])) if r else (False, 0)

    def _set_level(self, account: str, above: bool, crossings: int) -> None:
        self._conn.execute(
            "INSERT INTO levels (account, above, crossings, updated) VALUES (?,?,?,?)"
            " ON CONFLICT(account) DO UPDATE SET above=excluded.above,"
            " crossings=excluded.crossings, updated=excluded.updated",
            (account, int(above), crossings, _now()),
        )

    def set_level(self, account: str, above: bool, crossings: int) -> None:
        with self._tx():
            self._set_level(account, above, crossings)

    # -- notices -----------------------------------------------------------------------

    def get(self, event: str) -> NoticeRow | None:
        r = self._conn.execute("SELECT * FROM notices WHERE event=?", (event,)).fetchone()
        return _row(r) if r else None

    def add_pending(
        self,
        row: NoticeRow,
        *,
        level: tuple[bool, int] | None = None,
    ) -> bool:
        """Journal ``row`` as pending (and the level change, atomically).

        False when the event is already journalled: it is never delivered again.
        """
        with self._tx():
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO notices (event, account, kind, state, channel,"
                " message_id, sender, recipient, message, detail, created, updated)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (row.event, row.account, row.kind, PENDING, row.channel, row.message_id,
                 row.sender, row.recipient, row.message, row.detail, _now(), _now()),
            )
            fresh = cur.rowcount == 1
            if fresh and level is not None:
                self._set_level(row.account, *level)
        return fresh

    def mark(self, event: str, state: str, *, channel: str | None = None,
             detail: str | None = None) -> None:
        with self._tx():
            self._conn.execute(
                "UPDATE notices SET state=?, channel=COALESCE(?, channel),"
                " detail=COALESCE(?, detail), updated=? WHERE event=?",
                (state, channel, detail, _now(), event),
            )

    def pending(self, account: str) -> list[NoticeRow]:
        cur = self._conn.execute(
            "SELECT * FROM notices WHERE account=? AND state=? ORDER BY created",
            (account, PENDING),
        )
        return [_row(r) for r in cur.fetchall()]

    def to_retry(self, account: str, *, now: datetime) -> list[NoticeRow]:
        """Rows to deliver again; those older than ``RETRY_FOR`` become ``failed``."""
        cutoff = (now - RETRY_FOR).astimezone(UTC).isoformat()
        with self._tx():
            self._conn.execute(
                "UPDATE notices SET state=?, detail=COALESCE(detail, '') || ?, updated=?"
                " WHERE account=? AND state=? AND created<?",
                (FAILED, f" (gave up after {RETRY_FOR.days} days)", _now(), account, RETRY,
                 cutoff),
            )
        cur = self._conn.execute(
            "SELECT * FROM notices WHERE account=? AND state=? ORDER BY created",
            (account, RETRY),
        )
        return [_row(r) for r in cur.fetchall()]

    def all(self, account: str | None = None) -> list[NoticeRow]:
        sql, params = "SELECT * FROM notices", ()
        if account is not None:
            sql, params = sql + " WHERE account=?", (account,)  # type: ignore[assignment]
        return [_row(r) for r in self._conn.execute(sql + " ORDER BY created", params)]


def _row(r: sqlite3.Row) -> NoticeRow:
    return NoticeRow(
        event=r["event"], account=r["account"], kind=r["kind"], state=r["state"],
        channel=r["channel"], message_id=r["message_id"], sender=r["sender"],
        recipient=r["recipient"], message=bytes(r["message"]), detail=r["detail"],
    )
