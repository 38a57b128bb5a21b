"""Opening the state files from many threads at once (``retention.state.sqlite``).

CI once failed with ``cannot open the observation store: database is locked``: account
threads of one run opened a fresh ``observations.sqlite3`` together, and SQLite answers a
contended ``PRAGMA journal_mode=WAL`` at once instead of waiting. The journal's schema
migration raced the same way ("duplicate column name").
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from retention.errors import JournalError, ObservationsError
from retention.state import StateDir, sqlite
from retention.state.journal import Journal
from retention.state.leases import _Sqlite as SqliteLeases
from retention.state.observations import Observations
from retention.state.restores import RestoreLog

ROUNDS, THREADS = 40, 6


def _race(open_one: Callable[[Path], Any], tmp_path: Path, prepare: Callable[[Path], None]
          | None = None) -> None:
    for i in range(ROUNDS):
        path = tmp_path / f"r{i}" / "store.sqlite3"
        path.parent.mkdir(mode=0o700, parents=True)
        if prepare is not None:
            prepare(path)
        errors: list[BaseException] = []
        barrier = threading.Barrier(THREADS)

        def go(path: Path = path, barrier: threading.Barrier = barrier,
               errors: list[BaseException] = errors) -> None:
            try:
                barrier.wait()
                open_one(path).close()
            except BaseException as e:  # noqa: BLE001 - collected and asserted below
                errors.append(e)

        threads = [threading.Thread(target=go) for _ in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors


def test_observations_open_together(tmp_path: Path) -> None:
    _race(Observations.open, tmp_path)


def test_journal_open_together(tmp_path: Path) -> None:
    _race(Journal.open, tmp_path)


def _journal_v1(path: Path) -> None:
    """A journal as version 1 wrote it: no ``mailbox`` column."""
    Journal.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE actions DROP COLUMN mailbox")
    conn.commit()
    conn.close()
    _stamp_version(path, 1)


def test_journal_migration_runs_once_when_opened_together(tmp_path: Path) -> None:
    _race(Journal.open, tmp_path, prepare=_journal_v1)
    journal = Journal.open(tmp_path / "r0" / "store.sqlite3")
    journal.close()
    conn = sqlite3.connect(tmp_path / "r0" / "store.sqlite3")
    assert "mailbox" in {r[1] for r in conn.execute("PRAGMA table_info(actions)")}
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()


def test_notices_and_restores_open_together(tmp_path: Path) -> None:
    _race(lambda p: StateDir(p.parent).notices(), tmp_path)
    _race(RestoreLog.open, tmp_path / "restores")


def test_sqlite_leases_open_together(tmp_path: Path) -> None:
    _race(SqliteLeases, tmp_path)


def _stamp_version(path: Path, version: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={version}")
    conn.commit()
    conn.close()


@pytest.mark.parametrize(("store", "error"), [(Observations, ObservationsError),
                                              (Journal, JournalError)])
def test_newer_schema_is_refused_and_left_alone(tmp_path: Path, store: Any,
                                                error: type[Exception]) -> None:
    path = tmp_path / "store.sqlite3"
    store.open(path).close()
    _stamp_version(path, 99)
    with pytest.raises(error, match="newer version"):
        store.open(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 99
    conn.close()


def test_statements_split_on_complete_statements_only() -> None:
    script = """
    CREATE TABLE a (x);
    CREATE TRIGGER t AFTER INSERT ON a BEGIN UPDATE a SET x = 1; END;
    ;
    """
    got = [s.strip() for s in sqlite.statements(script)]
    assert len(got) == 2
    assert got[1].startswith("CREATE TRIGGER") and got[1].endswith("END;")
