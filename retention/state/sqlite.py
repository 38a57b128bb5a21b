"""Opening the agent's SQLite files: WAL mode and schema, safe when many open at once.

Every store in ``state_dir`` (journal, observations, notices, restores, SQLite leases) is
opened here. Opening is the one moment two connections race with no transaction to wait
in: account threads of one ``run --jobs``, a ``serve`` and a timer's ``run``, all finding
a fresh file. Two things go wrong without care, both seen on a loaded 2-core machine:

* ``PRAGMA journal_mode=WAL`` needs an exclusive lock and SQLite answers ``database is
  locked`` at once, without calling the busy handler. We read the mode first (a database
  already in WAL needs no switch) and retry the switch until a deadline.
* Creating or migrating the schema as separate autocommit statements lets two openers
  interleave (both see version 1, both ``ALTER TABLE``: "duplicate column"). The schema
  is written in one ``BEGIN IMMEDIATE`` transaction (which does wait on the busy handler)
  that reads ``user_version`` again inside it; a file already at the current version is
  not written at all.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator

BUSY_SECONDS = 30.0
"""How long an open waits for another agent's lock before giving up."""


class NewerSchema(Exception):
    """The file was written by a newer version of retention (its ``user_version``)."""

    def __init__(self, version: int) -> None:
        super().__init__(f"written by a newer version of retention (schema {version})")
        self.version = version


def statements(script: str) -> Iterator[str]:
    """The complete SQL statements of ``script`` (a ``;`` inside a trigger body does not
    end one: ``sqlite3.complete_statement`` decides)."""
    buf = ""
    for part in script.split(";"):
        buf += part + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \t\r\n;"):
                yield buf
            buf = ""


def connect(
    path: str,
    script: str,
    *,
    version: int | None = None,
    migrate: Callable[[sqlite3.Connection, int], None] | None = None,
    synchronous: str = "FULL",
    busy_seconds: float = BUSY_SECONDS,
) -> sqlite3.Connection:
    """An autocommit connection to ``path`` in WAL mode with ``script`` applied.

    ``version`` (the ``user_version`` this code writes) makes the schema step a no-op on
    a file already at that version and raises ``NewerSchema`` on a newer one;
    ``migrate(conn, found_version)`` runs inside the schema transaction, after
    ``script``. Raises ``sqlite3.Error`` (the caller names the file) or ``NewerSchema``.
    """
    conn = sqlite3.connect(
        path, timeout=busy_seconds, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute(f"PRAGMA busy_timeout={int(busy_seconds * 1000)}")
        _wal(conn, busy_seconds)
        conn.execute(f"PRAGMA synchronous={synchronous}")
        if version is None or _version(conn) != version:
            _apply(conn, script, version, migrate)
    except BaseException:
        conn.close()
        raise
    return conn


def _version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _wal(conn: sqlite3.Connection, busy_seconds: float) -> None:
    deadline = time.monotonic() + busy_seconds
    pause = 0.005
    while True:
        if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
            return
        try:
            # A file system without shared memory keeps the old mode: accept it.
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


def _apply(
    conn: sqlite3.Connection,
    script: str,
    version: int | None,
    migrate: Callable[[sqlite3.Connection, int], None] | None,
) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = _version(conn)  # again: another opener may have done it meanwhile
        if version is not None and found > version:
            raise NewerSchema(found)
        if version is None or found < version:
            for sql in statements(script):
                conn.execute(sql)
            if migrate is not None:
                migrate(conn, found)
            if version is not None:
                conn.execute(f"PRAGMA user_version={int(version)}")
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


__all__ = ["BUSY_SECONDS", "NewerSchema", "connect", "statements"]
