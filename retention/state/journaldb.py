"""Where the journal's rows are stored: an SQLite file in ``state_dir``, or PostgreSQL.

This module owns the storage interface under ``retention.state.journal.Journal`` and
``retention.state.restores.RestoreLog`` (the action journal, its mbox intents, the restore
record and the restore-grace holds), and its two implementations:

* ``SqliteDb``: a connection ``retention.state.sqlite`` opened (the default; one machine).
* ``PostgresDb``: ``state_url: postgresql://...`` (SQLAlchemy + psycopg, the ``[sql]``
  extra): replicas on separate volumes share one journal, so an account's new owner
  recovers what its old owner left, and ``retention history`` lists every agent's removals.

Both run the same SQL (``?`` placeholders, translated for psycopg here) in the same
transactions: the journal decides *what* is written and when it commits; a backend only
says how. What a backend must guarantee, because the executor sends a destructive command
only after the journal's commit returned:

* ``commit()`` returns only when the transaction is durable. SQLite: WAL with
  ``synchronous=FULL``. PostgreSQL: ``synchronous_commit`` is forced ``on`` for the
  journal's connections whatever the server default (``off`` would acknowledge a commit the
  server may lose in a crash); a server running with ``fsync=off`` is reported at open.
* Statements outside ``begin()``/``commit()`` are each their own transaction (autocommit).
* Any driver failure is one of ``errors``; ``describe`` turns it into a message that never
  carries the URL's password.

PostgreSQL layout: the tables live in the schema ``retention_journal`` (``actions``, ``intents``,
``restores``, ``holds`` and ``journal_schema``, its version), with the SQLite columns and
names; integers are ``BIGINT`` (a UIDVALIDITY may exceed 2^31) and the ISO-8601 time
columns ``COLLATE "C"``, so ``since`` and ``ORDER BY done_at`` compare them byte by byte as
SQLite does, whatever the database's collation. PostgreSQL text cannot hold NUL: a NUL in
a string parameter is written, and queried, as U+FFFD. That keeps ``msg_key`` (folder,
UIDVALIDITY and UID or UIDL joined by NUL) one-to-one (its last fields are numbers, or an
ASCII UIDL) and a hostile Message-ID from stopping an account; no reader uses the raw key.
The role needs ``CREATE`` on the database the first time (or a schema ``retention_journal``
it may create tables in).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from retention.state.sqlite import NewerSchema

# Not "retention": PostgreSQL's default search_path starts with "$user", so for a role of
# that name, a schema "retention" would capture every unqualified table another part of
# the agent creates (the leases' table), and two agents could end up with two lease tables.
SCHEMA = "retention_journal"
PG_SCHEMA_VERSION = 1
"""The PostgreSQL layout's version (it started with SQLite's schema 2, ``mailbox`` and all)."""

_log = logging.getLogger("retention.state")


class Cursor(Protocol):
    """What a statement returns: rows read by column name (``row["id"]``, ``dict(row)``)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Db(Protocol):
    """The journal database (see the module docstring). One per thread."""

    where: str  # for messages: the file, or the URL without its password
    errors: tuple[type[BaseException], ...]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...

    def insert(self, sql: str, params: Sequence[Any]) -> int:
        """Run an INSERT of one row into a table with an ``id`` key; the new id."""
        ...

    def insert_many(self, table: str, sql: str, rows: Sequence[Sequence[Any]],
                    key: str) -> list[tuple[int, Any]]:
        """Insert ``rows`` (inside a write transaction) with one prepared statement;
        ``(id, key column)`` of each new row, in insertion order."""
        ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """One prepared statement for every parameter row; the rows changed in total."""
        ...

    def stored(self, value: Any) -> Any:
        """``value`` as the database keeps it (see the NUL rule in the module docstring)."""
        ...

    def begin(self) -> None:
        """Start a write transaction (SQLite: ``BEGIN IMMEDIATE``, the writer lock)."""
        ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def describe(self, error: BaseException) -> str: ...

    def close(self) -> None: ...


class SqliteDb:
    """An open SQLite connection (autocommit mode, as ``sqlite.connect`` returns it)."""

    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)

    def __init__(self, conn: sqlite3.Connection, where: str) -> None:
        conn.row_factory = sqlite3.Row
        self.conn = conn
        self.where = where

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self.conn.execute(sql, params)

    def insert(self, sql: str, params: Sequence[Any]) -> int:
        row_id = self.conn.execute(sql, params).lastrowid
        assert row_id is not None
        return row_id

    def insert_many(self, table: str, sql: str, rows: Sequence[Sequence[Any]],
                    key: str) -> list[tuple[int, Any]]:
        # The write lock is ours since BEGIN IMMEDIATE and SQLite gives a new row the
        # highest id + 1, so the new rows are exactly those above the highest id before.
        top = self.conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()[0]  # noqa: S608
        self.conn.executemany(sql, rows)
        cur = self.conn.execute(f"SELECT id, {key} FROM {table} WHERE id > ? ORDER BY id",  # noqa: S608
                                (top,))
        return [(r[0], r[1]) for r in cur.fetchall()]

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        return self.conn.executemany(sql, rows).rowcount

    def stored(self, value: Any) -> Any:
        return value

    def begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        self.conn.execute("ROLLBACK")

    def describe(self, error: BaseException) -> str:
        return str(error)

    def close(self) -> None:
        self.conn.close()


# -- PostgreSQL ----------------------------------------------------------------------------

_PG_TABLES = """
CREATE TABLE IF NOT EXISTS actions (
    id            BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    run_id        TEXT NOT NULL,
    account       TEXT NOT NULL,
    msg_key       TEXT NOT NULL,
    folder        TEXT NOT NULL,
    uidvalidity   BIGINT NOT NULL,
    uid           BIGINT,
    uidl          TEXT,
    message_id    TEXT,
    internal_date TEXT COLLATE "C",
    size          BIGINT NOT NULL,
    flags         TEXT NOT NULL DEFAULT '',
    rule          TEXT NOT NULL,
    clock         TEXT,
    reason        TEXT,
    action        TEXT NOT NULL,
    to_folder     TEXT,
    target        TEXT,
    state         TEXT NOT NULL,
    sha256        TEXT,
    copy_sha256   TEXT,
    location      TEXT,
    locator       TEXT,
    intent_id     BIGINT,
    detail        TEXT,
    created       TEXT COLLATE "C" NOT NULL,
    updated       TEXT COLLATE "C" NOT NULL,
    done_at       TEXT COLLATE "C",
    mailbox       TEXT
);
CREATE INDEX IF NOT EXISTS actions_open ON actions (account, state);
CREATE INDEX IF NOT EXISTS actions_key ON actions (account, msg_key);
CREATE INDEX IF NOT EXISTS actions_done ON actions (state, done_at);
CREATE INDEX IF NOT EXISTS actions_intent ON actions (intent_id);
CREATE TABLE IF NOT EXISTS intents (
    id       BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    account  TEXT NOT NULL,
    run_id   TEXT NOT NULL,
    target   TEXT NOT NULL,
    path     TEXT NOT NULL,
    "offset" BIGINT NOT NULL,
    created  TEXT COLLATE "C" NOT NULL
);
CREATE INDEX IF NOT EXISTS intents_path ON intents (path);
CREATE TABLE IF NOT EXISTS restores (
    id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    restore_id  TEXT NOT NULL,
    account     TEXT NOT NULL,
    source_row  BIGINT NOT NULL,
    folder      TEXT NOT NULL,
    message_id  TEXT,
    sha256      TEXT,
    size        BIGINT NOT NULL,
    state       TEXT NOT NULL,
    uidvalidity BIGINT,
    uid         BIGINT,
    detail      TEXT,
    created     TEXT COLLATE "C" NOT NULL,
    updated     TEXT COLLATE "C" NOT NULL
);
CREATE INDEX IF NOT EXISTS restores_source ON restores (account, source_row);
CREATE TABLE IF NOT EXISTS holds (
    account     TEXT NOT NULL,
    folder      TEXT NOT NULL,
    uidvalidity BIGINT NOT NULL,
    uid         BIGINT NOT NULL,
    message_id  TEXT,
    restored    TEXT COLLATE "C" NOT NULL,
    until       TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (account, folder, uidvalidity, uid)
)
"""
# Any fixed number: openers on every replica serialise their schema step on it.
_SCHEMA_LOCK = 0x726574656E74
_PLACEHOLDER = re.compile(r"\?")


def to_pyformat(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (the journal's SQL has no ``%`` or ``?N``)."""
    if "%" in sql or re.search(r"\?\d", sql):
        raise ValueError(f"SQL not portable to psycopg: {sql!r}")
    return _PLACEHOLDER.sub("%s", sql)


def _pg_param(value: Any) -> Any:
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


_engines: dict[str, Any] = {}
_engines_lock = threading.Lock()


def _engine(url: str) -> Any:
    """One engine (connection pool) per URL and process, its schema made on first use."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            try:
                import sqlalchemy
            except ImportError:
                raise ImportError("state_url needs SQLAlchemy and psycopg: "
                                  "pip install 'mailbox-retention[sql]'") from None
            from retention.state.leases import engine_url

            # pool_pre_ping: a connection the server closed (restart, idle timeout) is
            # replaced at checkout instead of failing the next account. A pass holds one
            # connection while it runs (and a second one briefly for the restore holds):
            # room for 16 concurrent passes, and a pass waits for a free one rather than
            # failing its account.
            engine = sqlalchemy.create_engine(engine_url(url), pool_pre_ping=True,
                                              pool_size=4, max_overflow=28, pool_timeout=300,
                                              connect_args={"connect_timeout": 30})
            fairy = engine.raw_connection()
            try:
                conn = _session(fairy)
                _apply_schema(conn)
            except BaseException:
                fairy.close()
                engine.dispose()
                raise
            fairy.close()
            _engines[url] = engine
        return engine


def _session(fairy: Any) -> Any:
    """The psycopg connection behind a pooled one, set up as the journal needs it."""
    conn = fairy.driver_connection
    if conn.info.transaction_status != 0:  # left in a transaction by a failed user
        conn.rollback()
    conn.autocommit = True
    # Durable commits whatever the server's default (see the module docstring).
    conn.execute("SET synchronous_commit TO on")
    conn.execute(f"SET search_path TO {SCHEMA}")
    return conn


def _found_version(conn: Any) -> int:
    if conn.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.journal_schema",)
                    ).fetchone()[0] is None:
        return 0
    row = conn.execute("SELECT max(version) FROM journal_schema").fetchone()
    return 0 if row is None or row[0] is None else int(row[0])


def _apply_schema(conn: Any) -> None:
    # A journal already at this version is only read: CREATE ... IF NOT EXISTS needs the
    # CREATE privilege even when nothing is created, and a role that may only read (an
    # auditor's `retention history`) must still open it.
    found = _found_version(conn)
    if found > PG_SCHEMA_VERSION:
        raise NewerSchema(found)
    if found < PG_SCHEMA_VERSION:
        _create_schema(conn)
    fsync = conn.execute("SHOW fsync").fetchone()
    if fsync and str(fsync[0]).lower() == "off":
        _log.warning("event=journal_not_durable reason=%r",
                     "the PostgreSQL server runs with fsync=off: a server crash can lose "
                     "journal commits")


def _create_schema(conn: Any) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        # CREATE SCHEMA IF NOT EXISTS checks the CREATE privilege even when the schema
        # exists: create it only when missing, so a role granted just the schema works.
        exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                              (SCHEMA,)).fetchone()
        if exists is None:
            conn.execute(f"CREATE SCHEMA {SCHEMA}")
        conn.execute("CREATE TABLE IF NOT EXISTS journal_schema (version BIGINT NOT NULL)")
        row = conn.execute("SELECT max(version) FROM journal_schema").fetchone()
        found = 0 if row is None or row[0] is None else int(row[0])
        if found > PG_SCHEMA_VERSION:
            raise NewerSchema(found)
        if found < PG_SCHEMA_VERSION:
            for sql in _PG_TABLES.split(";"):
                conn.execute(sql)
            conn.execute("DELETE FROM journal_schema")
            conn.execute("INSERT INTO journal_schema (version) VALUES (%s)",
                         (PG_SCHEMA_VERSION,))


class PostgresDb:
    """One pooled PostgreSQL connection in autocommit mode (explicit BEGIN/COMMIT)."""

    def __init__(self, url: str) -> None:
        from retention.state.leases import redacted_url

        self.where = redacted_url(url)
        self._url = url
        try:
            import psycopg
            from sqlalchemy.exc import SQLAlchemyError
        except ImportError:
            raise ImportError("state_url needs SQLAlchemy and psycopg: "
                              "pip install 'mailbox-retention[sql]'") from None

        self.errors: tuple[type[BaseException], ...] = (
            psycopg.Error, SQLAlchemyError, NewerSchema, RolledBack)
        self._fairy = _engine(url).raw_connection()
        try:
            self._conn = _session(self._fairy)
        except BaseException:
            self._fairy.close()
            raise
        self._cur = self._conn.cursor(row_factory=_row_factory)

    @property
    def conn(self) -> Any:
        return self._conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        self._cur.execute(to_pyformat(sql), [_pg_param(p) for p in params])
        return _Result(self._cur)

    def insert(self, sql: str, params: Sequence[Any]) -> int:
        self._cur.execute(to_pyformat(sql) + " RETURNING id", [_pg_param(p) for p in params])
        row = self._cur.fetchone()
        assert row is not None
        return int(row["id"])

    def insert_many(self, table: str, sql: str, rows: Sequence[Sequence[Any]],
                    key: str) -> list[tuple[int, Any]]:
        # RETURNING, not "the ids above the highest": other replicas insert concurrently.
        # psycopg pipelines executemany: one round trip for the batch, not one per row.
        cur = self._cur
        cur.executemany(f"{to_pyformat(sql)} RETURNING id, {key}",
                        [[_pg_param(p) for p in r] for r in rows], returning=True)
        out: list[tuple[int, Any]] = []
        while True:
            out += [(int(r[0]), r[1]) for r in cur.fetchall()]
            if not cur.nextset():
                return out

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        self._cur.executemany(to_pyformat(sql), [[_pg_param(p) for p in r] for r in rows])
        return int(self._cur.rowcount)

    def stored(self, value: Any) -> Any:
        return _pg_param(value)

    def begin(self) -> None:
        self._cur.execute("BEGIN")

    def commit(self) -> None:
        self._cur.execute("COMMIT")
        # COMMIT in a failed transaction answers ROLLBACK instead of an error.
        if self._cur.statusmessage != "COMMIT":
            raise RolledBack(f"the server rolled back ({self._cur.statusmessage})")

    def rollback(self) -> None:
        self._cur.execute("ROLLBACK")

    def describe(self, error: BaseException) -> str:
        return describe_error(error, self._url)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self._conn.info.transaction_status != 0:
                self._conn.rollback()
        self._fairy.close()  # back to the pool


class Row(tuple[Any, ...]):
    """A row as ``sqlite3.Row`` is: a tuple of the values (``r[0]``, unpacking, pairs for
    ``dict(rows)``), read by column name too (``r["id"]``), a mapping for ``dict(r)``."""

    names: tuple[str, ...] = ()

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self.names.index(key))
        return tuple.__getitem__(self, key)

    def keys(self) -> tuple[str, ...]:
        return self.names


def _row_factory(cur: Any) -> Any:
    names = tuple(c.name for c in cur.description or ())
    cls = type("Row", (Row,), {"names": names, "__slots__": ()})
    return lambda values: cls(values)


class _Result:
    """A psycopg cursor's answer, read before the next statement reuses the cursor."""

    def __init__(self, cur: Any) -> None:
        self.rowcount: int = cur.rowcount
        self._rows: list[Any] = cur.fetchall() if cur.description is not None else []

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[Any]:
        return self._rows


def describe_error(error: BaseException, url: str) -> str:
    """A driver error's first line (SQLAlchemy's wrapper adds the statement and its
    parameters: dropped), never with the URL's or ``PGPASSWORD``'s secret in it."""
    orig = getattr(error, "orig", None) or error
    text = (str(orig).strip().splitlines() or [""])[0] or type(orig).__name__
    for secret in (_password(url), os.environ.get("PGPASSWORD")):
        if secret:
            text = text.replace(secret, "***")
    return text


def _password(url: str) -> str | None:
    rest = url.partition("://")[2]
    userinfo = rest.rpartition("@")[0]
    return userinfo.split(":", 1)[1] if ":" in userinfo else None


class RolledBack(Exception):
    """COMMIT was answered ROLLBACK: nothing of the transaction was kept."""


def dispose_engines() -> None:
    """Close every pooled connection (tests; a process that forks)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


__all__ = ["Cursor", "Db", "PostgresDb", "RolledBack", "SqliteDb", "describe_error",
           "dispose_engines", "to_pyformat"]
