"""The SQL source reader on SQLite and on a real PostgreSQL (started by the fixture)."""

from __future__ import annotations

import sqlite3
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from retention.config.sources import SqlSource
from retention.errors import SourceError
from retention.sources import sql as sql_source
from retention.testing.host import HOST, free_ports
from retention.testing.postgres import Postgres
from tests.integration.sources_support import (  # noqa: F401 - fixture
    postgres_fixture,
    replace,
    sql_settings,
)

ENV = "RETENTION_TEST_DB_PASSWORD"
ROWS = 2500
QUERY = "SELECT username, host, policy FROM users ORDER BY username"


# -- SQLite -----------------------------------------------------------------------


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Path:
    path = tmp_path / "accounts.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (username TEXT, host TEXT, policy TEXT, port INTEGER)")
        db.executemany(
            "INSERT INTO users VALUES (?, ?, ?, ?)",
            [(f"u{i:05d}@example.org", None if i % 2 else "imap.example.org",
              "vip" if i % 10 == 0 else "standard", 993) for i in range(ROWS)],
        )
    return path


def test_sqlite_rows_in_batches(sqlite_db: Path) -> None:
    settings = sql_settings(url=f"sqlite:///{sqlite_db}", query=QUERY, batch_size=100)
    got = list(sql_source.entries(settings))
    assert len(got) == ROWS
    assert got[0] == {"username": "u00000@example.org", "host": "imap.example.org",
                      "policy": "vip"}
    assert got[1] == {"username": "u00001@example.org", "policy": "standard"}  # NULL: absent


def test_sqlite_values_are_text_and_columns_lower_case(sqlite_db: Path) -> None:
    settings = sql_settings(url=f"sqlite:///{sqlite_db}",
                           query="SELECT username AS USERNAME, port AS Port FROM users LIMIT 1;")
    assert list(sql_source.entries(settings)) == [{"username": "u00000@example.org",
                                                   "port": "993"}]


def test_sqlite_probe_counts(sqlite_db: Path) -> None:
    settings = sql_settings(url=f"sqlite:///{sqlite_db}", query=QUERY, batch_size=100)
    assert sql_source.probe(settings) == ROWS  # via count(*) around the query
    small = replace(settings, query="SELECT username FROM users LIMIT 7")
    assert sql_source.probe(small) == 7  # all of it in the first batch


def test_sqlite_bad_query_is_a_clear_error(sqlite_db: Path) -> None:
    for query in ("SELEC username FROM users", "SELECT username FROM nowhere"):
        settings = sql_settings(url=f"sqlite:///{sqlite_db}", query=query)
        with pytest.raises(SourceError) as info:
            list(sql_source.entries(settings))
        message = str(info.value)
        assert message.startswith("source database: sqlite:///"), message
        assert "the query failed" in message
        assert "[SQL:" not in message and "sqlalche.me" not in message
        assert "\n" not in message


def test_query_without_username_column(sqlite_db: Path) -> None:
    settings = sql_settings(url=f"sqlite:///{sqlite_db}", query="SELECT host FROM users")
    with pytest.raises(SourceError) as info:
        sql_source.probe(settings)
    assert info.value.kind == "config"
    assert "no username column (its columns: host)" in str(info.value)


def test_not_a_url_is_a_config_error_that_does_not_echo_it() -> None:
    settings = sql_settings(url="user:S3cret-url@nowhere", query=QUERY)
    with pytest.raises(SourceError) as info:
        sql_source.probe(settings)
    assert info.value.kind == "config"
    assert "S3cret-url" not in str(info.value)


def test_missing_driver_is_named() -> None:
    settings = sql_settings(url="mysql+nosuchdriver://u@localhost/db", query=QUERY)
    with pytest.raises(SourceError) as info:
        sql_source.probe(settings)
    assert info.value.kind == "config"


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch, sqlite_db: Path) -> None:
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    with pytest.raises(SourceError) as info:
        sql_source.probe(sql_settings(url=f"sqlite:///{sqlite_db}", query=QUERY))
    assert info.value.kind == "config"
    assert "retention[sql]" in str(info.value)


# -- PostgreSQL -------------------------------------------------------------------

PG_ROWS = 5000


@pytest.fixture(scope="module")
def pg_table(postgres: Postgres) -> Postgres:
    postgres.execute(
        "DROP TABLE IF EXISTS users",
        "CREATE TABLE users (username text PRIMARY KEY, host text, policy text)",
        f"INSERT INTO users SELECT 'u' || lpad(g::text, 5, '0') || '@example.org', "
        f"CASE WHEN g % 2 = 0 THEN 'imap.example.org' END, "
        f"CASE WHEN g % 10 = 0 THEN 'vip' ELSE 'standard' END "
        f"FROM generate_series(0, {PG_ROWS - 1}) g",
        f"GRANT SELECT ON users TO {postgres.reader}",
    )
    return postgres


@pytest.fixture
def pg_settings(pg_table: Postgres, monkeypatch: pytest.MonkeyPatch) -> SqlSource:
    monkeypatch.setenv(ENV, pg_table.reader_password)
    # A plain postgresql:// URL: the reader picks psycopg 3.
    url = pg_table.url().replace("postgresql+psycopg://", "postgresql://")
    return sql_settings(url=url, query=QUERY, password_env=ENV, batch_size=100)


def test_postgres_rows(pg_settings: SqlSource) -> None:
    got = list(sql_source.entries(pg_settings))
    assert len(got) == PG_ROWS
    assert got[0] == {"username": "u00000@example.org", "host": "imap.example.org",
                      "policy": "vip"}
    assert got[1] == {"username": "u00001@example.org", "policy": "standard"}
    assert len({e["username"] for e in got}) == PG_ROWS


def test_postgres_streams_through_a_server_side_cursor(
    pg_settings: SqlSource, pg_table: Postgres
) -> None:
    """Mid-iteration the reader's session is FETCHing batches from a declared cursor."""
    rows = sql_source.entries(pg_settings)
    first = next(rows)
    assert first["username"] == "u00000@example.org"
    with pg_table.connect() as admin:
        (query,) = admin.execute(
            "SELECT query FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid()",
            (pg_table.reader,),
        ).fetchone()
    # SQLAlchemy grows its buffer up to yield_per: FETCH FORWARD n, n <= batch_size.
    assert query.upper().startswith("FETCH FORWARD "), query
    assert int(query.split()[2]) <= 100
    rest = list(rows)
    assert len(rest) == PG_ROWS - 1


def test_postgres_abandoned_iteration_closes_the_session(
    pg_settings: SqlSource, pg_table: Postgres
) -> None:
    rows = sql_source.entries(pg_settings)
    next(rows)
    rows.close()  # GeneratorExit: the connection is closed, not leaked

    def sessions() -> int:
        with pg_table.connect() as admin:
            (n,) = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s",
                                 (pg_table.reader,)).fetchone()
        return int(n)

    done = threading.Event()
    for _ in range(200):  # the server notices the closed socket shortly after
        if sessions() == 0:
            done.set()
            break
        done.wait(0.05)
    assert done.is_set()


def test_postgres_probe(pg_settings: SqlSource) -> None:
    assert sql_source.probe(pg_settings) == PG_ROWS


def test_postgres_wrong_password_is_an_auth_error_without_it(
    pg_settings: SqlSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, "Wr0ng-Db-Secret")
    with pytest.raises(SourceError) as info:
        sql_source.probe(pg_settings)
    assert info.value.kind == "auth"
    assert "password authentication failed" in str(info.value)
    assert "Wr0ng-Db-Secret" not in str(info.value)


def test_postgres_password_in_the_url_is_never_shown(pg_table: Postgres) -> None:
    url = pg_table.url(password=True).replace(pg_table.reader_password, "Url-Secret-99")
    with pytest.raises(SourceError) as info:
        sql_source.probe(sql_settings(url=url, query=QUERY))
    assert info.value.kind == "auth"
    assert "Url-Secret-99" not in str(info.value)
    assert "***" in str(info.value)


def test_postgres_bad_query(pg_settings: SqlSource) -> None:
    for query, what in (("SELEC username FROM users", "syntax error"),
                        ("SELECT username FROM nowhere", 'relation "nowhere" does not exist')):
        with pytest.raises(SourceError) as info:
            list(sql_source.entries(replace(pg_settings, query=query)))
        assert info.value.kind == "config"
        assert what in str(info.value)
        assert "[SQL:" not in str(info.value)


def test_postgres_permission_denied(pg_table: Postgres, pg_settings: SqlSource) -> None:
    pg_table.execute("CREATE TABLE IF NOT EXISTS secrets (username text)")
    with pytest.raises(SourceError) as info:
        sql_source.probe(replace(pg_settings, query="SELECT username FROM secrets"))
    assert "permission denied" in str(info.value)


def test_postgres_nothing_listening_is_a_connect_error(pg_settings: SqlSource) -> None:
    (port,) = free_ports(1)
    down = replace(
        pg_settings, url=f"postgresql://reader@{HOST}:{port}/postgres")
    with pytest.raises(SourceError) as info:
        sql_source.probe(down)
    assert info.value.kind == "connect"
    assert info.value.retryable


def test_postgres_locked_table_is_a_timeout_not_a_hang(
    pg_settings: SqlSource, pg_table: Postgres
) -> None:
    with pg_table.connect() as locker:
        locker.autocommit = False
        locker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")  # as a migration would
        try:
            with pytest.raises(SourceError) as info:
                sql_source.probe(replace(pg_settings, timeout=timedelta(seconds=1)))
        finally:
            locker.rollback()
    assert info.value.kind == "query"
    assert info.value.retryable
    assert "statement timeout" in str(info.value)
