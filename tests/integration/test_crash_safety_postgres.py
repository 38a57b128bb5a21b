"""Crash safety with the journal in PostgreSQL (``state_url``): killed at every step, lose nothing.

The scenario of ``test_crash_safety.py`` (the real CLI archiving to gzipped mbox and
deleting, SIGKILLed right after its N-th step, then run again) with ``state_url`` pointing
at a real PostgreSQL, one fresh database per kill: the journal's commits, the mbox intents
and the audit history all go through PostgreSQL, and nothing is written to
``state_dir/journal.sqlite3``. The end state must be the same as with SQLite.

A SIGKILLed agent leaves its account lease held until ``leases.ttl`` runs out; the test
expires it at once instead of waiting (lease expiry has its own tests).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from retention.testing.dovecot import MailUser
from retention.testing.postgres import Postgres
from tests.integration.helpers import CliResult
from tests.integration.sources_support import postgres_fixture  # noqa: F401 - fixture
from tests.integration.test_crash_safety import World

pytestmark = pytest.mark.slow


class PgWorld(World):
    """A ``World`` whose journal and leases are in its own PostgreSQL database."""

    def __init__(self, root: Path, user: MailUser, pg: Postgres, database: str) -> None:
        super().__init__(root, user, "mbox-gzip", None)
        self.pg, self.database = pg, database
        pg.execute(f"DROP DATABASE IF EXISTS {database}", f"CREATE DATABASE {database}")
        self.pf.extra = {**self.pf.extra, "state_url":
                         f"postgresql://{pg.superuser}@127.0.0.1:{pg.port}/{database}"}
        self.pf.env["PGPASSWORD"] = pg.superuser_password
        self.pf.write()

    def sql(self, statement: str) -> list[Any]:
        with psycopg.connect(host="127.0.0.1", port=self.pg.port, user=self.pg.superuser,
                             password=self.pg.superuser_password, dbname=self.database,
                             autocommit=True) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    def run(self, crash_after: int | None = None, step_log: Path | None = None) -> CliResult:
        result = super().run(crash_after, step_log)
        if result.code == -9:
            self.sql("UPDATE retention_leases SET expires = 0")
        return result

    def check(self, *, finished: bool) -> None:
        super().check(finished=finished)
        assert not (self.pf.directory / self.pf.state_dir / "journal.sqlite3").exists()
        if finished:  # the journal the history came from is PostgreSQL's
            removed = self.sql("SELECT count(*) FROM retention_journal.actions"
                               " WHERE state IN ('deleted', 'moved')")
            assert removed == [(len(self.archived) + len(self.trashed),)]


def test_killed_at_every_step_with_the_journal_in_postgres(tmp_path: Path, make_user: Any,
                                                           postgres: Postgres) -> None:
    count = PgWorld(tmp_path / "count", make_user(), postgres, "crash_count")
    log = tmp_path / "steps.log"
    result = count.run(step_log=log)
    assert result.code == 0, result
    count.check(finished=True)
    steps = [line.split(" ", 1)[1] for line in log.read_text().splitlines()]
    assert len(steps) >= 20, steps
    assert {"archive-written", "source-removed", "journal:planned", "journal:archived",
            "journal:verified", "journal:removed"} <= set(steps)
    for n in range(1, len(steps) + 1):
        world = PgWorld(tmp_path / f"crash-{n}", make_user(), postgres, f"crash_{n}")
        killed = world.run(crash_after=n)
        assert killed.code == -9, f"step {n} ({steps[n - 1]}): {killed}"
        world.check(finished=False)
        again = world.run()
        assert again.code == 0, f"after a kill at step {n} ({steps[n - 1]}): {again}"
        world.check(finished=True)
        postgres.execute(f"DROP DATABASE crash_{n}")


def test_killed_again_while_recovering_with_the_journal_in_postgres(
        tmp_path: Path, make_user: Any, postgres: Postgres) -> None:
    for first, second in ((9, 1), (16, 2), (22, 3)):
        world = PgWorld(tmp_path / f"c-{first}-{second}", make_user(), postgres,
                        f"again_{first}_{second}")
        assert world.run(crash_after=first).code == -9
        again = world.run(crash_after=second)
        assert again.code in (-9, 0), again
        world.check(finished=False)
        final = world.run()
        assert final.code == 0, final
        world.check(finished=True)
