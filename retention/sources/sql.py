"""Reading account entries from an SQL database: one query, streamed in batches.

This module owns the SQL I/O of a source: building the engine from an SQLAlchemy URL
(the password, if any, comes from ``password_env``/``password_file`` and is set on the URL
object, never written in the policy file), running the admin's query (typically the one
already written for Dovecot's ``iterate_query``) and streaming its rows. The rows come
through a server-side cursor (``stream_results``) in batches of ``batch_size``
(``yield_per``), so a table of a million accounts is never held in memory; SQLite's
cursor steps through the result by itself.

Each row becomes a mapping of lower-cased column name to text (``NULL`` columns left
out): a ``username`` column is required, other columns named like account keys
(``host``, ``port``, ``policy``...) or read by ``policy_by`` are the caller's business.

Libraries: SQLAlchemy 2 (any database it has a dialect for) and psycopg 3 for
PostgreSQL; a plain ``postgresql://`` URL means psycopg 3, the driver the ``[sql]`` extra
installs. On PostgreSQL each statement (the cursor's DECLARE, each batch's FETCH) must
finish within ``timeout`` (``statement_timeout``). Errors are ``SourceError`` naming the
URL without its password, with the database's own message (never the password, which is
also scrubbed from it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from retention.config.secrets import read_secret
from retention.errors import SecretError, SourceError, SourceErrorKind
from retention.sources.extras import require

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Connection, CursorResult, Engine


class SqlSettings(Protocol):
    """What the reader needs of an ``sql`` source (``config.sources.SqlSource``)."""

    @property
    def name(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def password_env(self) -> str | None: ...
    @property
    def password_file(self) -> Path | None: ...
    @property
    def query(self) -> str: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def timeout(self) -> timedelta: ...


def entries(settings: SqlSettings) -> Iterator[Mapping[str, str]]:
    """Every row of the query as ``{column: text}``, ``batch_size`` rows in memory at a time.

    Raises:
        SourceError: the URL, the connection, the login or the query failed, or the
            query has no ``username`` column (also while iterating).
    """
    with _connection(settings) as (conn, secret):
        with _guard(settings, secret, "query"):
            result = _execute(conn, settings)
            keys = _keys(settings, result.keys())
        while True:
            with _guard(settings, secret, "query"):
                rows = result.fetchmany(settings.batch_size)
            if not rows:
                break
            for row in rows:
                yield _row(keys, row)


def probe(settings: SqlSettings) -> int | None:
    """Connect, run the query and read the first batch; the row count when it is cheap.

    The count is exact when the first batch was all there is; otherwise it comes from
    ``SELECT count(*)`` around the query (the database counts, we do not stream), and is
    None if the database refuses that form.
    """
    with _connection(settings) as (conn, secret):
        with _guard(settings, secret, "query"):
            result = _execute(conn, settings)
            _keys(settings, result.keys())
            first = result.fetchmany(settings.batch_size)
            result.close()
        if len(first) < settings.batch_size:
            return len(first)
        return _count(conn, settings)


@contextlib.contextmanager
def _connection(settings: SqlSettings) -> Iterator[tuple[Connection, str | None]]:
    """An open connection (and the password, to scrub it from messages); closed after."""
    engine, secret = _engine(settings)
    try:
        with _guard(settings, secret, "connect"):
            conn = engine.connect()
        try:
            yield conn, secret
        finally:
            # Best effort: closing rolls back, which fails if the server already went
            # away; an exception from a garbage-collected generator would only be printed.
            with contextlib.suppress(Exception):
                conn.close()
    finally:
        engine.dispose()


# -- engine -----------------------------------------------------------------------


def _engine(settings: SqlSettings) -> tuple[Engine, str | None]:
    require("sqlalchemy", "sql", settings.name)
    from sqlalchemy import create_engine
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError
    from sqlalchemy.pool import NullPool

    url, secret = _url(settings)
    seconds = max(1, round(settings.timeout.total_seconds()))
    backend = url.get_backend_name()
    connect_args: dict[str, Any] = {}
    if backend in ("postgresql", "mysql", "mariadb"):
        connect_args["connect_timeout"] = seconds
    if backend == "postgresql":
        # Each statement (the DECLARE, then each FETCH of a batch) within the timeout: a
        # table locked by a migration fails the refresh instead of hanging it for ever.
        connect_args["options"] = f"-c statement_timeout={seconds * 1000}"
    elif backend == "sqlite":
        connect_args["timeout"] = seconds  # waiting for a writer's lock
    try:
        # NullPool: a source is read once per refresh; a pool would only hold idle
        # connections (and their server slots) between refreshes.
        engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise SourceError(settings.name, "config",
                          f"bad url {_shown(url)}: {_first_line(exc, secret)}") from None
    except ImportError as exc:
        raise SourceError(settings.name, "config", (
            f"url {_shown(url)} needs the Python module {exc.name or 'of its driver'}, "
            "which is not installed")) from None
    return engine, secret


def _url(settings: SqlSettings) -> tuple[URL, str | None]:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(settings.url)
    except (ArgumentError, ValueError):
        # Not echoed: an unparsable URL may still hold a password.
        raise SourceError(settings.name, "config",
                          "url is not an SQLAlchemy URL (dialect+driver://user@host/db)") from None
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")  # the driver mailbox-retention[sql] installs
    secret = url.password if isinstance(url.password, str) else None
    if settings.password_env is not None or settings.password_file is not None:
        try:
            secret = read_secret(settings.password_env, settings.password_file)
        except SecretError as exc:
            raise SourceError(settings.name, "config", f"database password: {exc}") from None
        url = url.set(password=secret)
    return url, secret


def _execute(conn: Connection, settings: SqlSettings) -> CursorResult[Any]:
    from sqlalchemy import text

    # stream_results: a server-side cursor where the dialect has one (PostgreSQL, MySQL);
    # yield_per: fetch batch_size rows per round trip instead of the whole result.
    streaming = conn.execution_options(stream_results=True, yield_per=settings.batch_size)
    return streaming.execute(text(_strip(settings.query)))


def _count(conn: Connection, settings: SqlSettings) -> int | None:
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    try:
        conn.rollback()  # end the first query's transaction (and its server-side cursor)
        counted = conn.execute(
            text(f"SELECT count(*) FROM ({_strip(settings.query)}) AS retention_probe")  # noqa: S608 - the admin's own query
        ).scalar()
    except SQLAlchemyError:
        return None
    return int(counted) if counted is not None else None


def _strip(query: str) -> str:
    return query.strip().rstrip(";").strip()


# -- rows -------------------------------------------------------------------------


def _keys(settings: SqlSettings, keys: Iterable[str]) -> list[str]:
    lowered = [k.lower() for k in keys]
    if "username" not in lowered:
        shown = ", ".join(lowered) or "none"
        raise SourceError(settings.name, "config",
                          f"the query returns no username column (its columns: {shown})")
    return lowered


def _row(keys: Sequence[str], row: Sequence[Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in zip(keys, row, strict=True):
        if value is None or key in out:
            continue
        out[key] = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return out


# -- errors -----------------------------------------------------------------------


class _guard:  # noqa: N801 - used as a lower-case context manager, like contextlib's
    """Turns SQLAlchemy and driver errors in its block into ``SourceError``."""

    def __init__(self, settings: SqlSettings, secret: str | None, during: str) -> None:
        self.settings = settings
        self.secret = secret
        self.during = during

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        from sqlalchemy.exc import DBAPIError, SQLAlchemyError

        if exc is None or not isinstance(exc, SQLAlchemyError):
            return
        name = self.settings.name
        url = _shown_str(self.settings.url)
        orig: BaseException = exc
        if isinstance(exc, DBAPIError) and exc.orig is not None:
            orig = exc.orig  # the driver's own message, without SQLAlchemy's [SQL: ...]
        message = _first_line(orig, self.secret)
        if self.during == "connect":
            low = message.lower()
            if "password" in low or "authentication" in low or "access denied" in low:
                raise SourceError(name, "auth", f"{url}: login refused: {message}") from None
            if "ssl" in low or "certificate" in low:
                raise SourceError(name, "tls", f"{url}: TLS failed: {message}") from None
            raise SourceError(name, "connect", f"{url}: cannot connect: {message}") from None
        # A syntax error or an unknown table needs the policy fixed; anything else (the
        # server went away, a lock timeout) may pass by the next refresh.
        kind: SourceErrorKind = "config" if _is_programming(exc) else "query"
        raise SourceError(name, kind, f"{url}: the query failed: {message}") from None


def _is_programming(exc: BaseException) -> bool:
    from sqlalchemy.exc import ProgrammingError

    return isinstance(exc, ProgrammingError)


def _first_line(exc: BaseException, secret: str | None) -> str:
    text = str(exc).strip().splitlines()
    line = text[0].strip() if text else type(exc).__name__
    if secret:
        line = line.replace(secret, "***")
    return line


def _shown(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _shown_str(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return _shown(make_url(url))
    except Exception:  # noqa: BLE001 - never echo an unparsable URL: it may hold a password
        return "(url)"
