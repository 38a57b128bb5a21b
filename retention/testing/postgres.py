"""A throw-away real PostgreSQL for tests and benchmarks.

This module owns a private PostgreSQL cluster: ``initdb`` into a temp dir, a
``postgresql.conf`` that listens on an unprivileged port of 127.0.0.1 only (its unix socket
in the temp dir, not /var/run), password (SCRAM) logins, durability off (``fsync``,
``synchronous_commit``: a test cluster is thrown away), started and stopped with ``pg_ctl``.
PostgreSQL refuses to run as root, so as root the cluster belongs to the system user
``retention-pg`` (created on demand); otherwise to the current user.

Roles: the superuser ``retention`` (``superuser_password``) and ``reader``
(``reader_password``), who may read the tables the tests create. No pytest dependency;
``execute`` needs psycopg (the ``[sql]`` extra)::

    with Postgres() as pg:
        pg.execute("CREATE TABLE users (username text)")
        pg.url("reader")   # postgresql+psycopg://reader@127.0.0.1:PORT/postgres (no password)
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from retention.testing.host import HOST, free_ports, system_user, tail, user_exists, which

__all__ = ["PG_USER", "Postgres", "PostgresError", "postgres_unavailable_reason"]

#: The system account that owns the cluster when we run as root.
PG_USER = "retention-pg"


class PostgresError(RuntimeError):
    """initdb, pg_ctl or a setup statement failed."""


def _bin_dirs() -> list[str]:
    # Debian keeps the server binaries per major version, newest last after sorting.
    found = glob.glob("/usr/lib/postgresql/*/bin")
    return sorted(found, key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit()
                  else 0, reverse=True)


def _tool(name: str) -> str | None:
    for d in _bin_dirs():
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    return which(name)


def postgres_unavailable_reason() -> str | None:
    """Why a PostgreSQL can't be started here, or None if it can."""
    missing = [n for n in ("initdb", "pg_ctl", "postgres") if _tool(n) is None]
    if missing:
        return (f"not installed: {', '.join(missing)} (run `make deps`, or "
                "apt-get install postgresql)")
    if os.geteuid() == 0 and which("useradd") is None and not user_exists(PG_USER):
        return f"system user {PG_USER!r} is missing and there is no useradd to create it"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'mailbox-retention[sql]')"
    return None


class Postgres:
    """A private PostgreSQL cluster; see the module docstring."""

    superuser = "retention"
    superuser_password = "pg-super-secret-0"
    reader = "reader"
    reader_password = "pg-reader-secret-0"
    database = "postgres"

    def __init__(self, *, parent: str | None = None) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="retention-pg-", dir=parent))
        self.port = 0
        self._owner: pwd.struct_passwd | None = None
        self._running = False

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        return self.directory / "postgres.log"

    def url(self, role: str | None = None, *, password: bool = False) -> str:
        """An SQLAlchemy URL for ``role`` (default the reader), with its password if asked."""
        role = role or self.reader
        secret = ""
        if password:
            secret = ":" + (self.superuser_password if role == self.superuser
                            else self.reader_password)
        return f"postgresql+psycopg://{role}{secret}@{HOST}:{self.port}/{self.database}"

    def __enter__(self) -> Postgres:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- lifecycle --------------------------------------------------------------

    def _run(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        assert self._owner is not None
        as_other = self._owner.pw_uid != os.geteuid()
        return subprocess.run(
            list(args), capture_output=True, text=True, check=False, timeout=timeout,
            cwd=self.directory,
            user=self._owner.pw_uid if as_other else None,
            group=self._owner.pw_gid if as_other else None,
            extra_groups=[] if as_other else None,
        )

    def start(self, timeout: float = 120.0) -> None:
        reason = postgres_unavailable_reason()
        if reason is not None:
            raise PostgresError(reason)
        try:
            self._owner = system_user(PG_USER)
        except RuntimeError as exc:
            raise PostgresError(str(exc)) from None
        os.chown(self.directory, self._owner.pw_uid, self._owner.pw_gid)
        self.directory.chmod(0o700)
        pwfile = self.directory / "pwfile"
        pwfile.write_text(self.superuser_password + "\n")
        os.chown(pwfile, self._owner.pw_uid, self._owner.pw_gid)
        initdb, pg_ctl = _tool("initdb"), _tool("pg_ctl")
        assert initdb is not None and pg_ctl is not None
        proc = self._run(initdb, "-D", str(self.data_dir), "-U", self.superuser,
                         "--pwfile", str(pwfile), "--auth", "scram-sha-256",
                         "-E", "UTF8", "--locale", "C", "--no-sync")
        pwfile.unlink()
        if proc.returncode != 0:
            raise PostgresError(f"initdb failed: {proc.stderr.strip()[-2000:]}")
        atexit.register(self.stop)
        for _attempt in range(5):  # a port taken between free_ports() and bind: retry
            self.port = free_ports(1)[0]
            self._write_config()
            proc = self._run(pg_ctl, "-D", str(self.data_dir), "-l", str(self.log_path),
                             "-w", "-t", str(int(timeout)), "start", timeout=timeout + 10)
            if proc.returncode == 0:
                self._running = True
                break
            if "already in use" not in self.log_tail():
                raise PostgresError(f"pg_ctl start failed: {proc.stderr.strip()}\n"
                                    f"{self.log_tail()}")
        else:
            raise PostgresError(f"PostgreSQL did not start:\n{self.log_tail()}")
        self.execute(f"CREATE ROLE {self.reader} LOGIN PASSWORD '{self.reader_password}'")

    def _write_config(self) -> None:
        conf = self.data_dir / "postgresql.auto.conf"
        conf.write_text(
            f"listen_addresses = '{HOST}'\n"
            f"port = {self.port}\n"
            f"unix_socket_directories = '{self.directory}'\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            "max_connections = 30\nshared_buffers = 64MB\n"
        )
        assert self._owner is not None
        os.chown(conf, self._owner.pw_uid, self._owner.pw_gid)

    def stop(self) -> None:
        atexit.unregister(self.stop)
        pg_ctl = _tool("pg_ctl")
        if self._running and pg_ctl is not None:
            self._running = False
            self._run(pg_ctl, "-D", str(self.data_dir), "-m", "fast", "-w", "stop",
                      timeout=60)
        if os.environ.get("RETENTION_KEEP_POSTGRES") != "1":
            shutil.rmtree(self.directory, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    # -- data -------------------------------------------------------------------

    def connect(self) -> Any:
        """A psycopg connection as the superuser (autocommit), for setting up tables."""
        import psycopg

        return psycopg.connect(host=HOST, port=self.port, user=self.superuser,
                               password=self.superuser_password, dbname=self.database,
                               autocommit=True, connect_timeout=30)

    def execute(self, *statements: str) -> None:
        """Run setup statements as the superuser."""
        with self.connect() as conn:
            for sql in statements:
                conn.execute(sql)
