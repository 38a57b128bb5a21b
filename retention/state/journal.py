"""The crash-safe journal: one SQLite database in ``state_dir``, written before every step.

This module owns the record of everything the agent does to a message, in the order
it does it, so that a run killed at any instant can be finished or rolled back by the
next run, and so that ``retention history`` can list what was removed (the compliance
record). Nothing destructive may happen without a committed journal row: every failure to
read or write the journal raises ``JournalError``.

One row per (run, message, action). Its ``state`` follows this machine (enforced by
``mark``; anything else raises ``JournalError``)::

    planned -> archived -> verified -> deleting -> deleted      (archive)
    planned -> deleting -> deleted                                (delete; POP3 until QUIT)
    planned -> deleted | moved                                    (IMAP delete, move/trash)
    any open state -> failed | skipped | dropped | abandoned

``deleting`` means the removal was sent but is committed only later (POP3 ``DELE`` is
committed by ``QUIT``). ``dropped`` means an interrupted run had planned the row but never
acted on it; recovery found the message untouched. ``abandoned`` means an operator gave up
on a row recovery could not finish (``retention recover --abandon``, review M9): nothing was
done to the mailbox for it. Rows in ``deleted``/``moved`` are the
audit history: each removal appears exactly once.

Archive rows carry ``sha256`` (of the exact source bytes), ``copy_sha256`` (of what the
target promises to keep: the same for Maildir and IMAP, the LF-normalised bytes for mbox),
``location`` (human-readable) and ``locator`` (JSON the archive writer needs to find and
re-verify the copy). mbox appends also record an *intent* (file, offset) before writing, so
recovery can truncate a torn append (see ``retention.archive.mbox``).

Durability: WAL mode with ``synchronous=FULL``: a commit is on disk when it returns.

Storage: the SQLite file ``state_dir/journal.sqlite3`` (``open``), or, with ``state_url:
postgresql://...``, a PostgreSQL shared by every replica (``open_url``): the same rows, the
same statements and the same transactions; ``retention.state.journaldb`` owns the
difference and the durability each backend promises.

Crash injection for tests: every commit, and every external side effect the executor
announces with ``step()``, is a numbered *step*. With ``RETENTION_TEST_CRASH_AFTER=N`` in
the environment (or ``crash_after=N``) the process SIGKILLs itself right after step N;
with ``RETENTION_TEST_STEP_LOG=PATH`` each step's number and name is appended to PATH.
Both variables are ignored (with a warning) unless ``RETENTION_TEST_HOOKS=1`` is set too:
a stray variable in production must never make the agent kill itself (review M16).

The state folder is created 0700; an existing one that anyone may write to (``o+w``
without the sticky bit) is refused, and the journal file is opened ``O_NOFOLLOW``, so
another local user cannot redirect the audit log through a symlink.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from retention.errors import JournalError
from retention.model import MessageRef
from retention.plan import Action
from retention.state import sqlite
from retention.state.journaldb import Cursor, Db, PostgresDb, SqliteDb, describe_error

PLANNED = "planned"
ARCHIVED = "archived"
VERIFIED = "verified"
DELETING = "deleting"
DELETED = "deleted"
MOVED = "moved"
FAILED = "failed"
SKIPPED = "skipped"
DROPPED = "dropped"
ABANDONED = "abandoned"  # given up by the operator (retention recover --abandon)

OPEN_STATES = frozenset({PLANNED, ARCHIVED, VERIFIED, DELETING})
TERMINAL_STATES = frozenset({DELETED, MOVED, FAILED, SKIPPED, DROPPED, ABANDONED})
REMOVED_STATES = frozenset({DELETED, MOVED})
# new state -> the states it may follow
_ALLOWED: dict[str, frozenset[str]] = {
    ARCHIVED: frozenset({PLANNED}),
    VERIFIED: frozenset({ARCHIVED}),
    DELETING: frozenset({PLANNED, VERIFIED}),
    DELETED: frozenset({PLANNED, VERIFIED, DELETING}),
    MOVED: frozenset({PLANNED}),
    FAILED: OPEN_STATES,
    SKIPPED: OPEN_STATES,
    DROPPED: OPEN_STATES,
    ABANDONED: OPEN_STATES,
}

CRASH_ENV = "RETENTION_TEST_CRASH_AFTER"
STEP_LOG_ENV = "RETENTION_TEST_STEP_LOG"
HOOKS_ENV = "RETENTION_TEST_HOOKS"  # must be "1" for the two above to be honoured


def _test_hooks_allowed() -> bool:
    if os.environ.get(HOOKS_ENV) == "1":
        return True
    stray = [v for v in (CRASH_ENV, STEP_LOG_ENV) if os.environ.get(v, "").strip()]
    if stray:
        logging.getLogger("retention.state").warning(
            "event=test_hooks_ignored variables=%s note=%r", ",".join(stray),
            f"test-only; set {HOOKS_ENV}=1 in a test to use them")
    return False


def check_private_dir(path: Path) -> None:
    """Refuse a state folder any local user may write to (files could be swapped)."""
    st = os.stat(path)
    if st.st_mode & 0o002 and not st.st_mode & 0o1000:
        raise JournalError(f"state folder {path} is writable by every user; "
                           f"make it private (chmod 700 {path})")
SCHEMA_VERSION = 2
# Schema 2 (review F4): ``actions.mailbox``, the identity of the mailbox a row is about
# (``mailbox_identity``). Rows written before it are NULL and are claimed by the first run
# that binds the account (``bind_mailbox``).
_MIGRATIONS = {2: "ALTER TABLE actions ADD COLUMN mailbox TEXT"}


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    """Bring a journal from ``version`` up (inside the schema transaction)."""
    columns = {r[1] for r in conn.execute("PRAGMA table_info(actions)")}
    for target, sql in sorted(_MIGRATIONS.items()):
        if version < target and "mailbox" not in columns:
            conn.execute(sql)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS actions (
    id            INTEGER PRIMARY KEY,
    run_id        TEXT NOT NULL,
    account       TEXT NOT NULL,
    msg_key       TEXT NOT NULL,
    folder        TEXT NOT NULL,
    uidvalidity   INTEGER NOT NULL,
    uid           INTEGER,
    uidl          TEXT,
    message_id    TEXT,
    internal_date TEXT,
    size          INTEGER NOT NULL,
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
    intent_id     INTEGER,
    detail        TEXT,
    created       TEXT NOT NULL,
    updated       TEXT NOT NULL,
    done_at       TEXT
);
CREATE INDEX IF NOT EXISTS actions_open ON actions (account, state);
CREATE INDEX IF NOT EXISTS actions_key ON actions (account, msg_key);
CREATE INDEX IF NOT EXISTS actions_done ON actions (state, done_at);
CREATE TABLE IF NOT EXISTS intents (
    id       INTEGER PRIMARY KEY,
    account  TEXT NOT NULL,
    run_id   TEXT NOT NULL,
    target   TEXT NOT NULL,
    path     TEXT NOT NULL,
    offset   INTEGER NOT NULL,
    created  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS intents_path ON intents (path);
"""


@dataclass(frozen=True, slots=True)
class JournalRow:
    """One journalled action on one message."""

    id: int
    run_id: str
    account: str
    folder: str
    uidvalidity: int
    uid: int | None
    uidl: str | None
    message_id: str | None
    internal_date: datetime | None
    size: int
    flags: frozenset[str]
    rule: str
    clock: str | None
    reason: str | None
    action: str
    to_folder: str | None
    target: str | None
    state: str
    sha256: str | None
    copy_sha256: str | None
    location: str | None
    locator: dict[str, Any]
    intent_id: int | None
    detail: str | None
    created: datetime
    updated: datetime
    done_at: datetime | None

    @property
    def ref(self) -> MessageRef:
        return MessageRef(self.folder, self.uidvalidity, self.uid, self.uidl)


@dataclass(frozen=True, slots=True)
class Intent:
    """An mbox append in progress: the file is truncated back to ``offset`` if it died."""

    id: int
    account: str
    run_id: str
    target: str
    path: str
    offset: int


@dataclass(slots=True)
class NewRow:
    """What the executor journals for one action before acting on it."""

    action: Action
    sha256: str | None = None
    copy_sha256: str | None = None
    location: str | None = None
    locator: dict[str, Any] = field(default_factory=dict)
    intent_id: int | None = None


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat()


def _dt(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


class Journal:
    """The journal. One instance per thread (connections are not shared)."""

    def __init__(
        self,
        db: Db,
        path: Path | None,
        *,
        crash_after: int | None = None,
        step_log: Path | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self._db = db
        # SQLite: the sqlite3 connection (tests read its PRAGMAs); PostgreSQL: psycopg's.
        self._conn: Any = getattr(db, "conn", None)
        self.path = path  # the SQLite file; None for PostgreSQL
        self.where = db.where
        self._mailboxes: dict[str, str] = {}  # account -> bound mailbox identity (F4)
        self.crash_after = crash_after
        self.step_log = step_log
        self.steps = 0
        # Called after every step with (number, name); tests raise from it to simulate
        # a crash in-process. It must not touch the journal.
        self.hook: Callable[[int, str], None] | None = None
        self._now = now or (lambda: datetime.now(UTC))
        self._depth = 0
        self._tx_name = ""
        self._lock = threading.RLock()

    # -- opening -----------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        crash_after: int | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> Journal:
        """Open (creating when missing) the journal at ``path``; its folder is made 0700."""
        path = Path(path)
        crash_after, step_log = _hooks(crash_after)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            check_private_dir(path.parent)
            # SQLite gives its -wal and -shm files the main file's mode: create it private
            # first, so no copy of the audit data is ever world-readable.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600))
            os.chmod(path, 0o600)
            # FULL: every commit is fsynced before it returns; the executor relies on it.
            conn = sqlite.connect(str(path), _SCHEMA, version=SCHEMA_VERSION,
                                  migrate=_migrate, synchronous="FULL")
            for suffix in ("-wal", "-shm"):  # journals created by an earlier version
                # Another thread's last connection may delete them between the two calls
                # (serve: one account's pass ends while another's opens the journal).
                with contextlib.suppress(FileNotFoundError):
                    os.chmod(path.with_name(path.name + suffix), 0o600)
        except sqlite.NewerSchema as e:
            raise JournalError(f"journal {path} was {e}") from None
        except sqlite3.Error as e:
            raise JournalError(f"cannot open journal {path}: {e}") from None
        except OSError as e:
            raise JournalError(f"cannot open journal {path}: {e.strerror}") from None
        return cls(SqliteDb(conn, str(path)), path, crash_after=crash_after,
                   step_log=step_log, now=now)

    @classmethod
    def open_url(
        cls,
        url: str,
        *,
        crash_after: int | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> Journal:
        """Open the journal in the PostgreSQL at ``url`` (tables created when missing).

        Raises:
            JournalError: unreachable, refused, or a newer schema; never with the password.
        """
        from retention.state.leases import redacted_url

        crash_after, step_log = _hooks(crash_after)
        where = redacted_url(url)
        try:
            db = PostgresDb(url)
        except sqlite.NewerSchema as e:
            raise JournalError(f"journal {where} was {e}") from None
        except ImportError as e:
            raise JournalError(f"journal {where}: {e}") from None
        except Exception as e:  # noqa: BLE001 - driver errors: only their first line
            raise JournalError(f"cannot open journal {where}: "
                               f"{describe_error(e, url)}") from None
        return cls(db, None, crash_after=crash_after, step_log=step_log, now=now)

    def close(self) -> None:
        with contextlib.suppress(*self._db.errors):
            self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- steps and transactions --------------------------------------------------------

    def step(self, name: str) -> None:
        """Count one step (a commit or an external side effect); the crash hook fires here."""
        self.steps += 1
        if self.step_log is not None:
            with open(self.step_log, "a", encoding="utf-8") as fh:
                fh.write(f"{self.steps} {name}\n")
                fh.flush()
                os.fsync(fh.fileno())
        if self.hook is not None:
            self.hook(self.steps, name)
        if self.crash_after is not None and self.steps == self.crash_after:
            # A real crash: no cleanup, no flush, no finally blocks.
            os.kill(os.getpid(), signal.SIGKILL)

    @contextlib.contextmanager
    def transaction(self, name: str) -> Iterator[None]:
        """One atomic, durable journal write (nested calls join the outer one)."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            db = self._db
            try:
                db.begin()
            except db.errors as e:
                raise JournalError(f"journal {self.where}: {db.describe(e)}") from None
            self._depth = 1
            try:
                yield
            except BaseException:
                self._depth = 0
                with contextlib.suppress(*db.errors):
                    db.rollback()
                raise
            self._depth = 0
            try:
                db.commit()
            except db.errors as e:
                with contextlib.suppress(*db.errors):
                    db.rollback()
                raise JournalError(
                    f"journal {self.where}: commit failed: {db.describe(e)}") from None
        self.step(f"journal:{name}")

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        try:
            return self._db.execute(sql, params)
        except self._db.errors as e:
            raise JournalError(f"journal {self.where}: {self._db.describe(e)}") from None

    def _insert(self, sql: str, params: Sequence[Any]) -> int:
        try:
            return self._db.insert(sql, params)
        except self._db.errors as e:
            raise JournalError(f"journal {self.where}: {self._db.describe(e)}") from None

    # -- writing -----------------------------------------------------------------------

    def bind_mailbox(self, account: str, mailbox: str) -> None:
        """This connection's rows of ``account`` are about ``mailbox`` (review F4).

        Rows written by an older version (no mailbox) are claimed for it. From now on
        ``add_planned`` stamps ``mailbox`` on new rows, ``open_rows`` returns only rows of
        this mailbox, and ``foreign_rows`` those an account entry pointed elsewhere left.
        """
        # One autocommitted statement, not a counted step: binding changes no outcome.
        self._exec("UPDATE actions SET mailbox=? WHERE account=? AND mailbox IS NULL",
                   (mailbox, account))
        self._mailboxes[account] = mailbox

    def foreign_rows(self, account: str) -> list[JournalRow]:
        """Open rows of ``account`` about another mailbox than the bound one."""
        mailbox = self._mailboxes.get(account)
        if mailbox is None:
            return []
        cur = self._exec(
            "SELECT * FROM actions WHERE account=? AND mailbox IS NOT NULL AND mailbox!=?"
            " AND state IN (?,?,?,?) ORDER BY id",
            (account, mailbox, *sorted(OPEN_STATES)),
        )
        return [_row(r) for r in cur.fetchall()]

    def add_planned(self, run_id: str, account: str, rows: Sequence[NewRow]) -> list[int]:
        """Insert one ``planned`` row per action; returns their ids in order."""
        now = _iso(self._now())
        mailbox = self._mailboxes.get(account)
        keys = [r.action.message.ref.key() for r in rows]
        with self.transaction("planned"):
            # One prepared statement for the whole batch (10,000 rows: ~0.2 s less CPU than
            # one execute() each). The backend returns (id, msg_key) of the new rows in
            # insertion order (SQLite: the rows above the highest id before the batch, its
            # write lock being ours since BEGIN IMMEDIATE; PostgreSQL: RETURNING).
            try:
                added = self._db.insert_many(
                    "actions", _INSERT, [_insert_params(r, key, run_id, account, now, mailbox)
                                         for r, key in zip(rows, keys, strict=True)],
                    key="msg_key")
            except self._db.errors as e:
                raise JournalError(f"journal {self.where}: {self._db.describe(e)}") from None
            # Checked, since every later step trusts that row i is action i.
            if [r[1] for r in added] != [self._db.stored(k) for k in keys]:
                raise JournalError(f"journal {self.where}: inserted rows do not match the batch")
        return [r[0] for r in added]

    def _many(self, sql: str, params: Iterable[Sequence[Any]]) -> int:
        try:
            return self._db.executemany(sql, params)
        except self._db.errors as e:
            raise JournalError(f"journal {self.where}: {self._db.describe(e)}") from None

    def mark(
        self,
        ids: Iterable[int],
        state: str,
        *,
        detail: str | None = None,
        location: str | None = None,
        locator: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        """Move rows to ``state`` (one transaction); illegal transitions raise JournalError."""
        ids = list(ids)
        if not ids:
            return
        allowed = _ALLOWED.get(state)
        if allowed is None:
            raise JournalError(f"unknown journal state {state!r}")
        now = _iso(self._now())
        done = now if state in TERMINAL_STATES else None
        sets = ["state=?", "updated=?", "done_at=COALESCE(?, done_at)"]
        params: list[Any] = [state, now, done]
        if detail is not None:
            sets.append("detail=?")
            params.append(detail)
        if location is not None:
            sets.append("location=?")
            params.append(location)
        if locator is not None:
            sets.append("locator=?")
            params.append(json.dumps(locator, sort_keys=True))
        marks = ",".join("?" * len(allowed))
        sql = f"UPDATE actions SET {', '.join(sets)} WHERE id=? AND state IN ({marks})"  # noqa: S608
        tail = sorted(allowed)
        with self.transaction(name or state):
            # Every transition is checked first (the error names the row), then the whole
            # batch is one prepared statement; a row counted short (an id given twice) still
            # fails the transaction.
            for chunk in _chunks(ids, _IN_CHUNK):
                found = dict(self._exec(
                    f"SELECT id, state FROM actions WHERE id IN ({','.join('?' * len(chunk))})",  # noqa: S608
                    chunk,
                ).fetchall())
                for row_id in chunk:
                    if found.get(row_id) not in allowed:
                        was = found.get(row_id, "missing")
                        raise JournalError(
                            f"journal row {row_id}: cannot go from {was} to {state}")
            changed = self._many(sql, ((*params, row_id, *tail) for row_id in ids))
            if changed != len(ids):
                raise JournalError(f"journal: {len(ids) - changed} row(s) of the batch cannot "
                                   f"go to {state}")

    def add_intent(self, account: str, run_id: str, target: str, path: str, offset: int) -> int:
        with self.transaction("intent"):
            # "offset" quoted: a reserved word in PostgreSQL (the same column in SQLite).
            row_id = self._insert(
                'INSERT INTO intents (account, run_id, target, path, "offset", created)'
                " VALUES (?,?,?,?,?,?)",
                (account, run_id, target, path, offset, _iso(self._now())),
            )
        return row_id

    def clear_intents(self, ids: Iterable[int]) -> None:
        with self.transaction("intent-cleared"):
            for i in ids:
                self._exec("DELETE FROM intents WHERE id=?", (i,))

    # -- reading -----------------------------------------------------------------------

    def row(self, row_id: int) -> JournalRow | None:
        r = self._exec("SELECT * FROM actions WHERE id=?", (row_id,)).fetchone()
        return _row(r) if r is not None else None

    def rows(self, ids: Iterable[int]) -> list[JournalRow]:
        out = [self.row(i) for i in ids]
        return [r for r in out if r is not None]

    def open_rows(self, account: str) -> list[JournalRow]:
        """Rows of ``account`` an interrupted run left unfinished, oldest first (only those
        of the bound mailbox, once ``bind_mailbox`` was called)."""
        mailbox = self._mailboxes.get(account)
        sql = "SELECT * FROM actions WHERE account=? AND state IN (?,?,?,?)"
        params: list[Any] = [account, *sorted(OPEN_STATES)]
        if mailbox is not None:  # bound: rows of this mailbox or from before binding
            sql += " AND (mailbox IS NULL OR mailbox=?)"
            params.append(mailbox)
        cur = self._exec(sql + " ORDER BY id", params)
        return [_row(r) for r in cur.fetchall()]

    def all_open_rows(self, account: str) -> list[JournalRow]:
        """Every open row of ``account``, whichever mailbox it is about, oldest first."""
        cur = self._exec(
            "SELECT * FROM actions WHERE account=? AND state IN (?,?,?,?) ORDER BY id",
            (account, *sorted(OPEN_STATES)),
        )
        return [_row(r) for r in cur.fetchall()]

    def abandoned(
        self, *, account: str | None = None, since: datetime | None = None
    ) -> list[JournalRow]:
        """Rows an operator abandoned, oldest first (listed by ``retention history``)."""
        return self._closed_in({ABANDONED}, account, since)

    def latest_by_key(self, account: str, keys: Iterable[str]) -> dict[str, JournalRow]:
        """The newest row per message key (``MessageRef.key()``) among ``keys``."""
        out: dict[str, JournalRow] = {}
        # A few hundred keys per query (10,000 single-key queries cost ~0.1 s); rows in id
        # order, so the last one seen per key is its newest.
        for chunk in _chunks(list(dict.fromkeys(keys)), _IN_CHUNK):
            cur = self._exec(
                "SELECT * FROM actions WHERE account=? AND msg_key IN"  # noqa: S608
                f" ({','.join('?' * len(chunk))}) ORDER BY id",
                (account, *chunk),
            )
            # The key as stored (PostgreSQL: NUL as U+FFFD) back to the caller's.
            asked = {self._db.stored(k): k for k in chunk}
            for r in cur.fetchall():
                out[asked[r["msg_key"]]] = _row(r)
        return out

    def intents(self, *, path: str | None = None, account: str | None = None) -> list[Intent]:
        sql = "SELECT * FROM intents WHERE 1=1"
        params: list[Any] = []
        if path is not None:
            sql += " AND path=?"
            params.append(path)
        if account is not None:
            sql += " AND account=?"
            params.append(account)
        cur = self._exec(sql + " ORDER BY id", params)
        return [
            Intent(r["id"], r["account"], r["run_id"], r["target"], r["path"], r["offset"])
            for r in cur.fetchall()
        ]

    def rows_of_intent(self, intent_id: int) -> list[JournalRow]:
        cur = self._exec("SELECT * FROM actions WHERE intent_id=? ORDER BY id", (intent_id,))
        return [_row(r) for r in cur.fetchall()]

    def removals(
        self, *, account: str | None = None, since: datetime | None = None
    ) -> list[JournalRow]:
        """Completed removals (``deleted``/``moved``), oldest first: the audit history."""
        return self._closed_in(REMOVED_STATES, account, since)

    def _closed_in(self, states: Iterable[str], account: str | None,
                   since: datetime | None) -> list[JournalRow]:
        states = sorted(states)
        sql = f"SELECT * FROM actions WHERE state IN ({','.join('?' * len(states))})"  # noqa: S608
        params: list[Any] = list(states)
        if account is not None:
            sql += " AND account=?"
            params.append(account)
        if since is not None:
            sql += " AND done_at >= ?"
            params.append(_iso(since))
        cur = self._exec(sql + " ORDER BY done_at, id", params)
        return [_row(r) for r in cur.fetchall()]


_IN_CHUNK = 500  # ids or keys per ``IN (...)`` (well under SQLite's variable limit)

_INSERT = (
    "INSERT INTO actions (run_id, account, msg_key, folder, uidvalidity, uid,"
    " uidl, message_id, internal_date, size, flags, rule, clock, reason, action,"
    " to_folder, target, state, sha256, copy_sha256, location, locator,"
    " intent_id, created, updated, mailbox)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


def _insert_params(r: NewRow, key: str, run_id: str, account: str, now: str,
                   mailbox: str | None) -> tuple[Any, ...]:
    a = r.action
    m = a.message
    ref = m.ref
    return (
        run_id, account, key, ref.folder, ref.uidvalidity, ref.uid, ref.uidl, m.message_id,
        _iso(m.received), m.size, " ".join(sorted(m.flags)), a.rule, a.clock.value, a.reason,
        a.kind.value, a.to_folder, a.archive, PLANNED, r.sha256, r.copy_sha256, r.location,
        json.dumps(r.locator, sort_keys=True) if r.locator else "{}", r.intent_id, now, now,
        mailbox,
    )


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _hooks(crash_after: int | None) -> tuple[int | None, Path | None]:
    """The test hooks the environment asks for (only with RETENTION_TEST_HOOKS=1)."""
    hooks = _test_hooks_allowed()
    if hooks and crash_after is None and os.environ.get(CRASH_ENV, "").strip():
        crash_after = int(os.environ[CRASH_ENV])
    step_log = (Path(os.environ[STEP_LOG_ENV])
                if hooks and os.environ.get(STEP_LOG_ENV) else None)
    return crash_after, step_log


def _row(r: Any) -> JournalRow:
    created = _dt(r["created"])
    updated = _dt(r["updated"])
    assert created is not None and updated is not None
    return JournalRow(
        id=r["id"], run_id=r["run_id"], account=r["account"], folder=r["folder"],
        uidvalidity=r["uidvalidity"], uid=r["uid"], uidl=r["uidl"],
        message_id=r["message_id"], internal_date=_dt(r["internal_date"]), size=r["size"],
        flags=frozenset(r["flags"].split()), rule=r["rule"], clock=r["clock"],
        reason=r["reason"], action=r["action"], to_folder=r["to_folder"], target=r["target"],
        state=r["state"], sha256=r["sha256"], copy_sha256=r["copy_sha256"],
        location=r["location"], locator=json.loads(r["locator"] or "{}"),
        intent_id=r["intent_id"], detail=r["detail"], created=created, updated=updated,
        done_at=_dt(r["done_at"]),
    )
