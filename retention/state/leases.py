"""Per-account leases: two agents never act on one mailbox at once, across machines.

This module owns the ``retention_leases`` table and the rules for taking, renewing and
giving back a lease. A lease is a row (account, owner, token, expires, last_done): an agent
may act on the account only while it holds an unexpired lease; it renews the lease while
it works (every third of the TTL, on a thread) and stops at the next batch boundary when a
renewal fails; the lease is given back at the end, with ``last_done`` set when the pass
succeeded. Kubernetes may run one Indexed-Job index twice and a shard count may change
mid-day, so shards alone cannot promise one agent per mailbox; the lease can.

Two backends with the same SQL (named ``:param`` style suits both):

* SQLite (``state_dir/leases.sqlite3``, the stdlib driver): agents sharing one state_dir;
* PostgreSQL (``state_url: postgresql://...``, SQLAlchemy + psycopg, the ``[sql]`` extra):
  agents on different machines, e.g. a StatefulSet's pods with one PVC each.

Every change is one conditional UPDATE (compare-and-set on ``expires``/``owner``/``token``),
so no transaction isolation level beyond the default is relied on: PostgreSQL re-checks an
UPDATE's WHERE on the row it locked, SQLite serialises writers. ``token`` grows at each
acquisition (a fencing token): a renewal or release by a holder whose lease expired and was
taken over changes nothing. Times are the agents' clocks in Unix seconds: keep them in
NTP sync well within the TTL (default 5 minutes).

``once_within``: an acquisition is refused as *done* when the account's last successful pass
(by any agent) finished less than that long ago, so two agents with overlapping shards
process each mailbox once per sweep rather than once each.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from retention.errors import RetentionError
from retention.state import sqlite

DEFAULT_TTL = 300.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS retention_leases (
    account   TEXT PRIMARY KEY,
    owner     TEXT NOT NULL,
    token     BIGINT NOT NULL,
    expires   DOUBLE PRECISION NOT NULL,
    last_done DOUBLE PRECISION,
    done_by   TEXT
)
"""
_CREATE_ROW = (
    "INSERT INTO retention_leases (account, owner, token, expires) "
    "VALUES (:account, '', 0, 0) ON CONFLICT (account) DO NOTHING"
)
_TAKE = (
    "UPDATE retention_leases SET owner = :owner, token = token + 1, expires = :expires "
    "WHERE account = :account AND expires <= :now "
    "AND (last_done IS NULL OR last_done < :fresh_after)"
)
_READ = "SELECT owner, token, expires, last_done FROM retention_leases WHERE account = :account"
_RENEW = (
    "UPDATE retention_leases SET expires = :expires "
    "WHERE account = :account AND owner = :owner AND token = :token AND expires > :now"
)
_RELEASE = (
    "UPDATE retention_leases SET expires = 0 "
    "WHERE account = :account AND owner = :owner AND token = :token"
)
_RELEASE_DONE = (
    "UPDATE retention_leases SET expires = 0, last_done = :now, done_by = :owner "
    "WHERE account = :account AND owner = :owner AND token = :token"
)


class LeaseError(RetentionError):
    """The lease store cannot be read or written: the account is not acted on."""


@dataclass(frozen=True, slots=True)
class Lease:
    account: str
    owner: str
    token: int
    expires: float


@dataclass(frozen=True, slots=True)
class Refused:
    """Why a lease was not granted: ``held`` by another owner, or ``done`` recently."""

    account: str
    reason: Literal["held", "done"]
    owner: str
    until: float  # held: when the lease expires; done: when the last pass finished


class _Db(Protocol):
    """One statement in its own transaction (all the store needs)."""

    def run(self, sql: str, params: Mapping[str, Any]) -> tuple[int, tuple[Any, ...] | None]:
        """Rows changed, and the first row of a SELECT."""
        ...

    def close(self) -> None: ...


class _Sqlite:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Autocommit mode: each statement is its own transaction; writers wait up to 30 s.
        self._conn = sqlite.connect(str(path), _SCHEMA)
        self._lock = threading.Lock()

    def run(self, sql: str, params: Mapping[str, Any]) -> tuple[int, tuple[Any, ...] | None]:
        with self._lock:
            cur = self._conn.execute(sql, dict(params))
            return cur.rowcount, cur.fetchone()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class _SqlAlchemy:
    def __init__(self, url: str) -> None:
        try:
            import sqlalchemy
        except ImportError:
            raise LeaseError(
                "state_url needs SQLAlchemy and psycopg: pip install 'mailbox-retention[sql]'"
            ) from None
        self._sa = sqlalchemy
        # pool_pre_ping: a connection the database closed (restart, idle timeout) is
        # replaced instead of failing the next account.
        self._engine = sqlalchemy.create_engine(engine_url(url), pool_pre_ping=True,
                                                pool_size=2, max_overflow=8)
        self.run(_SCHEMA, {})

    def run(self, sql: str, params: Mapping[str, Any]) -> tuple[int, tuple[Any, ...] | None]:
        with self._engine.begin() as conn:
            result = conn.execute(self._sa.text(sql), dict(params))
            row = result.fetchone() if result.returns_rows else None
            return result.rowcount, tuple(row) if row is not None else None

    def close(self) -> None:
        self._engine.dispose()


def engine_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (SQLAlchemy's default would be psycopg2)."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain):]
    return url


def redacted_url(url: str) -> str:
    """The URL without its password, for logs and errors."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}{':***' if ':' in userinfo else ''}@{host}"


def default_owner() -> str:
    """Unique per process: host (the pod name in Kubernetes), pid, and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class LeaseStore:
    """Take, renew and give back per-account leases; thread-safe."""

    def __init__(self, db: _Db, *, where: str, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self.where = where
        self.clock = clock

    @classmethod
    def open(cls, state_dir: Path, state_url: str | None = None, *,
             clock: Callable[[], float] = time.time) -> LeaseStore:
        """PostgreSQL (or any SQLAlchemy URL) when ``state_url`` is set, else SQLite.

        Raises:
            LeaseError: the database cannot be reached or the table created.
        """
        try:
            if state_url:
                return cls(_SqlAlchemy(state_url), where=redacted_url(state_url), clock=clock)
            path = state_dir / "leases.sqlite3"
            return cls(_Sqlite(path), where=str(path), clock=clock)
        except LeaseError:
            raise
        except Exception as e:  # noqa: BLE001 - driver errors may carry the URL: rebuild
            target = redacted_url(state_url) if state_url else str(state_dir)
            raise LeaseError(f"lease store {target}: {type(e).__name__}") from None

    def _run(self, sql: str, **params: Any) -> tuple[int, tuple[Any, ...] | None]:
        try:
            return self._db.run(sql, params)
        except Exception as e:  # noqa: BLE001 - see open(): never echo a driver message
            raise LeaseError(f"lease store {self.where}: {type(e).__name__}") from None

    def acquire(self, account: str, owner: str, *, ttl: float = DEFAULT_TTL,
                once_within: float | None = None) -> Lease | Refused:
        """Take the account's lease for ``ttl`` seconds, unless another owner holds it or
        (with ``once_within``) a pass finished less than ``once_within`` seconds ago."""
        now = self.clock()
        fresh_after = now - once_within if once_within else float("inf")
        self._run(_CREATE_ROW, account=account)
        changed, _ = self._run(_TAKE, account=account, owner=owner, expires=now + ttl,
                               now=now, fresh_after=fresh_after)
        _, row = self._run(_READ, account=account)
        assert row is not None
        holder, token, expires, last_done = row
        if changed == 1 and holder == owner:
            return Lease(account, owner, int(token), float(expires))
        if last_done is not None and float(last_done) >= fresh_after:
            return Refused(account, "done", "", float(last_done))
        return Refused(account, "held", str(holder), float(expires))

    def renew(self, lease: Lease, *, ttl: float = DEFAULT_TTL) -> Lease | None:
        """Extend a lease still held; None when it expired or was taken over."""
        now = self.clock()
        changed, _ = self._run(_RENEW, account=lease.account, owner=lease.owner,
                               token=lease.token, expires=now + ttl, now=now)
        return Lease(lease.account, lease.owner, lease.token, now + ttl) if changed else None

    def release(self, lease: Lease, *, done: bool) -> bool:
        """Give the lease back (``done``: the pass succeeded; record when). False if lost."""
        sql = _RELEASE_DONE if done else _RELEASE
        changed, _ = self._run(sql, account=lease.account, owner=lease.owner,
                               token=lease.token, now=self.clock())
        return changed == 1

    def last_done(self, account: str) -> float | None:
        _, row = self._run(_READ, account=account)
        return None if row is None or row[3] is None else float(row[3])

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._db.close()


class Held:
    """A lease being renewed on a thread; ``stop`` is set when it is lost (or ``outer`` is)."""

    def __init__(self, store: LeaseStore, lease: Lease, ttl: float,
                 outer: threading.Event | None) -> None:
        self.store, self.lease, self.ttl = store, lease, ttl
        self.stop = threading.Event()
        self.lost = False
        self.succeeded = False
        self._outer = outer
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True,
                                        name=f"lease-{lease.account}")

    def _renew(self) -> None:
        every = max(0.05, self.ttl / 3)
        next_renewal = time.monotonic() + every
        while not self._done.wait(min(1.0, every)):
            if self._outer is not None and self._outer.is_set():
                self.stop.set()  # the service is stopping: pass it on to the run
            if time.monotonic() < next_renewal:
                continue
            next_renewal = time.monotonic() + every
            try:
                renewed = self.store.renew(self.lease, ttl=self.ttl)
            except LeaseError:
                renewed = None  # cannot prove we still hold it: stop at the next batch
            if renewed is None:
                self.lost = True
                self.stop.set()
                return
            self.lease = renewed

    def __enter__(self) -> Held:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(5)
        if not self.lost:
            with contextlib.suppress(LeaseError):
                self.store.release(self.lease, done=self.succeeded)


@contextlib.contextmanager
def held(store: LeaseStore, account: str, owner: str, *, ttl: float = DEFAULT_TTL,
         once_within: float | None = None,
         outer: threading.Event | None = None) -> Iterator[Held | Refused]:
    """Hold the account's lease for the block (renewed), or yield why it was refused.

    Set ``.succeeded`` on the yielded ``Held`` before the block ends to record the pass.
    """
    got = store.acquire(account, owner, ttl=ttl, once_within=once_within)
    if isinstance(got, Refused):
        yield got
        return
    with Held(store, got, ttl, outer) as h:
        yield h
