"""The observation store: when the agent first saw each message, and usage over time.

This module owns ``state_dir/observations.sqlite3`` (SQLite, WAL mode). It keeps:

* First sightings, keyed by (account, folder, UIDVALIDITY, key). POP3 has no server dates,
  so a POP3 message's age is measured from the first time the agent saw its UIDL (folder
  ``INBOX``, UIDVALIDITY 0, key = the UIDL): Thunderbird's "leave messages on the server for
  at most N days". IMAP servers without SAVEDATE (RFC 8514) give the ``saved`` clock the
  first time the agent saw a UID in a folder (key = ``str(uid)`` under that folder's
  UIDVALIDITY). Recording first sightings is the one state a dry-run writes.
* Usage samples per account (the service's forecast reads them), kept for 30 days.

Losing this file is safe by construction: every message then counts as first seen now, so
nothing becomes old enough to be removed by a first-seen or saved rule until it has really
been on the server that long. Times are stored as UTC epoch seconds and returned as
timezone-aware datetimes.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from retention.errors import ObservationsError
from retention.state import sqlite

SCHEMA_VERSION = 1
USAGE_KEEP = timedelta(days=30)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS first_seen (
    account     TEXT    NOT NULL,
    folder      TEXT    NOT NULL,
    uidvalidity INTEGER NOT NULL,
    key         TEXT    NOT NULL,
    seen        REAL    NOT NULL,          -- UTC epoch seconds
    PRIMARY KEY (account, folder, uidvalidity, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mailboxes (
    account     TEXT    NOT NULL PRIMARY KEY,
    mailbox     TEXT    NOT NULL           -- whose first-seen rows these are (review F4)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage_samples (
    account     TEXT    NOT NULL,
    at          REAL    NOT NULL,          -- UTC epoch seconds
    usage_bytes INTEGER NOT NULL,
    limit_bytes INTEGER,
    PRIMARY KEY (account, at)
) WITHOUT ROWID;
"""


def _epoch(when: datetime) -> float:
    if when.tzinfo is None:
        # A naive datetime would silently mean "local time": refuse, never guess.
        raise ValueError("the observation store only takes timezone-aware datetimes")
    return when.timestamp()


def _aware(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


class Observations:
    """One open observation store; safe to share between threads (one lock, one connection)."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self._lock = threading.Lock()
        self.path = path

    @classmethod
    def open(cls, path: Path | str) -> Observations:
        """Open (creating when missing) the store at ``path``; parent folders are made 0700."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not path.exists():
                # Create it 0600 ourselves: sqlite3 would use the umask (often 0644).
                os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            # WAL + NORMAL: durable, not slow (observations can be lost safely).
            db = sqlite.connect(str(path), _SCHEMA, version=SCHEMA_VERSION,
                                synchronous="NORMAL")
        except sqlite.NewerSchema as e:
            raise ObservationsError(
                f"{path}: {e} > {SCHEMA_VERSION}"
            ) from None
        except sqlite3.Error as e:
            raise ObservationsError(f"{path}: cannot open the observation store: {e}") from None
        except OSError as e:
            raise ObservationsError(
                f"{path}: cannot open the observation store: {e.strerror}"
            ) from None
        return cls(db, path)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Observations:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: no lock upgrade deadlock between agents)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                raise ObservationsError(f"{self.path}: {e}") from None

    # -- first sightings ---------------------------------------------------------------

    def first_seen(
        self, account: str, folder: str, uidvalidity: int, keys: Iterable[str], now: datetime
    ) -> dict[str, datetime]:
        """The first-seen time of each key, recording ``now`` for keys never seen before.

        One transaction however many keys (50,000 keys take well under a second).
        """
        wanted = list(dict.fromkeys(keys))
        stamp = _epoch(now)
        with self._tx() as db:
            db.executemany(
                "INSERT OR IGNORE INTO first_seen VALUES (?, ?, ?, ?, ?)",
                ((account, folder, uidvalidity, k, stamp) for k in wanted),
            )
            # One range scan of the primary key beats 50,000 point lookups.
            rows = db.execute(
                "SELECT key, seen FROM first_seen WHERE account=? AND folder=? AND uidvalidity=?",
                (account, folder, uidvalidity),
            )
            stored = dict(rows.fetchall())
        return {k: _aware(stored[k]) for k in wanted}

    def bind_mailbox(self, account: str, mailbox: str) -> bool:
        """The account's first-seen times belong to ``mailbox`` (``Account.mailbox_identity``).

        Rows recorded before (or by an older version) are claimed by the first call; when
        the entry now reaches another mailbox, the old sightings are forgotten, so a
        repointed POP3 account never inherits another mailbox's ages (its messages start
        as first seen now: the safe direction). Returns whether anything was forgotten.
        """
        # Almost always already bound: read first, outside a write transaction, so that
        # concurrent passes (run --jobs, serve) do not queue for SQLite's write lock.
        try:
            with self._lock:
                bound = self._db.execute("SELECT mailbox FROM mailboxes WHERE account=?",
                                         (account,)).fetchone()
        except sqlite3.Error as e:
            raise ObservationsError(f"{self.path}: {e}") from None
        if bound is not None and bound[0] == mailbox:
            return False
        with self._tx() as db:
            row = db.execute("SELECT mailbox FROM mailboxes WHERE account=?",
                             (account,)).fetchone()
            if row is not None and row[0] == mailbox:
                return False
            forgot = row is not None
            if forgot:
                db.execute("DELETE FROM first_seen WHERE account=?", (account,))
            db.execute("INSERT OR REPLACE INTO mailboxes VALUES (?, ?)", (account, mailbox))
        return forgot

    def prune(
        self, account: str, folder: str, uidvalidity: int, present_keys: Iterable[str]
    ) -> int:
        """Forget keys no longer on the server, and every row of the folder's older UIDVALIDITYs.

        ``present_keys`` must be the folder's complete listing. Returns the rows removed.
        """
        present = set(present_keys)
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM first_seen WHERE account=? AND folder=? AND uidvalidity<>?",
                (account, folder, uidvalidity),
            )
            removed = cur.rowcount
            rows = db.execute(
                "SELECT key FROM first_seen WHERE account=? AND folder=? AND uidvalidity=?",
                (account, folder, uidvalidity),
            )
            gone = [(account, folder, uidvalidity, k) for (k,) in rows.fetchall()
                    if k not in present]
            db.executemany(
                "DELETE FROM first_seen WHERE account=? AND folder=? AND uidvalidity=? AND key=?",
                gone,
            )
        return removed + len(gone)

    def prune_folders(self, account: str, present_folders: Iterable[str]) -> int:
        """Forget folders that no longer exist. ``present_folders``: every folder listed."""
        present = set(present_folders)
        with self._tx() as db:
            rows = db.execute("SELECT DISTINCT folder FROM first_seen WHERE account=?", (account,))
            gone = [f for (f,) in rows.fetchall() if f not in present]
            removed = 0
            for f in gone:
                removed += db.execute(
                    "DELETE FROM first_seen WHERE account=? AND folder=?", (account, f)
                ).rowcount
        return removed

    def forget_account(self, account: str) -> None:
        """Drop everything recorded for an account (it was removed from the policy file)."""
        with self._tx() as db:
            db.execute("DELETE FROM first_seen WHERE account=?", (account,))
            db.execute("DELETE FROM mailboxes WHERE account=?", (account,))
            db.execute("DELETE FROM usage_samples WHERE account=?", (account,))

    # -- usage samples -----------------------------------------------------------------

    def record_usage(
        self, account: str, at: datetime, usage_bytes: int, limit_bytes: int | None
    ) -> None:
        """Add one usage sample; samples older than 30 days before ``at`` are dropped."""
        stamp = _epoch(at)
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO usage_samples VALUES (?, ?, ?, ?)",
                (account, stamp, usage_bytes, limit_bytes),
            )
            db.execute(
                "DELETE FROM usage_samples WHERE account=? AND at<?",
                (account, stamp - USAGE_KEEP.total_seconds()),
            )

    def usage_samples(
        self, account: str, since: datetime
    ) -> list[tuple[datetime, int, int | None]]:
        """(time, usage bytes, limit bytes or None) since ``since``, oldest first."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT at, usage_bytes, limit_bytes FROM usage_samples "
                    "WHERE account=? AND at>=? ORDER BY at",
                    (account, _epoch(since)),
                ).fetchall()
            except sqlite3.Error as e:
                raise ObservationsError(f"{self.path}: {e}") from None
        return [(_aware(at), int(u), None if lim is None else int(lim)) for at, u, lim in rows]
