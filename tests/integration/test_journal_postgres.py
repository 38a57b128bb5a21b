"""The journal on a real PostgreSQL (``state_url``) keeps the SQLite journal's semantics.

The backend-independent tests of ``tests/unit/test_journal.py`` run here again over a
``journal`` fixture parametrised by backend (``sqlite``, ``postgresql``); then what only
PostgreSQL can get wrong: the very same rows as SQLite for the same calls, 32-bit unsigned
UIDVALIDITYs, NUL bytes, durable commits whatever the server's default, concurrent first
opens, a newer schema, errors without the password, the restore record, history, and a
process SIGKILLed right after a commit.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from retention.errors import JournalError
from retention.model import Message, MessageRef
from retention.plan import Action, ActionKind, Clock
from retention.state import StateDir
from retention.state import history as hist
from retention.state.journal import (
    ARCHIVED,
    DELETED,
    DELETING,
    DROPPED,
    MOVED,
    PLANNED,
    VERIFIED,
    Journal,
    NewRow,
)
from retention.state.journaldb import _pg_param, dispose_engines
from retention.state.restores import RESTORED, Hold
from retention.testing.postgres import Postgres
from tests.integration.helpers import REPO
from tests.integration.sources_support import postgres_fixture  # noqa: F401 - fixture
from tests.unit import test_journal as base
from tests.unit.test_journal import T0, Clockwork, _action, _fill

# The unit tests that hold for any backend (the others are about the SQLite file itself).
test_archive_path_through_the_states = base.test_archive_path_through_the_states
test_illegal_transitions = base.test_illegal_transitions
test_pop3_deleting_then_deleted = base.test_pop3_deleting_then_deleted
test_failed_transaction_rolls_back = base.test_failed_transaction_rolls_back
test_steps_and_crash_hook = base.test_steps_and_crash_hook
test_latest_by_key_and_intents = base.test_latest_by_key_and_intents
test_history_query_and_formats = base.test_history_query_and_formats

TABLES = "actions, intents, restores, holds"


def pg_url(pg: Postgres, database: str = "journal_tests") -> str:
    """What an agent is given: no password (libpq reads PGPASSWORD)."""
    return f"postgresql://{pg.superuser}@127.0.0.1:{pg.port}/{database}"


def fresh_database(pg: Postgres, name: str) -> str:
    pg.execute(f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}")
    return pg_url(pg, name)


@pytest.fixture
def pg_journal_url(postgres: Postgres, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An empty journal database (tables emptied, ids from 1 again, like a new file)."""
    monkeypatch.setenv("PGPASSWORD", postgres.superuser_password)
    with postgres.connect() as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = 'journal_tests'"
                        ).fetchone() is None:
            conn.execute("CREATE DATABASE journal_tests")
    url = pg_url(postgres)
    with Journal.open_url(url) as j:  # the tables exist from here
        j._conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY")
    yield url
    dispose_engines()


@pytest.fixture(params=["sqlite", "postgresql"])
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Journal]:
    if request.param == "sqlite":
        j = Journal.open(tmp_path / "state" / "journal.sqlite3", now=Clockwork())
    else:
        j = Journal.open_url(request.getfixturevalue("pg_journal_url"), now=Clockwork())
    yield j
    j.close()


def _all_rows(j: Journal, table: str) -> list[dict[str, Any]]:
    return [dict(r) for r in j._db.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()]  # noqa: S608


def _workload(j: Journal) -> None:
    """Every write the executor and recovery make, archive intents and mailbox binding too."""
    j.bind_mailbox("alice", "imap://alice@mail")
    _fill(j)
    iid = j.add_intent("alice", "run-3", "cold", "/arch/a.mbox", 4096)
    [r] = j.add_planned("run-3", "alice", [
        NewRow(_action(7, ActionKind.ARCHIVE, archive="cold"), sha256="1" * 64,
               copy_sha256="2" * 64, location="/arch/a.mbox", locator={"o": 4096, "t": "m"},
               intent_id=iid)])
    j.mark([r], ARCHIVED, detail="copied", locator={"o": 4096, "t": "m", "n": 1})
    j.clear_intents([iid])
    j.mark([r], VERIFIED)
    j.mark([r], DELETING)
    [p] = j.add_planned("run-3", "alice", [NewRow(_action(8, ActionKind.MOVE,
                                                          to_folder="Old"))])
    j.mark([p], MOVED, name="removed")
    j.add_planned("run-3", "alice", [NewRow(_action(9))])  # left open


def test_postgres_stores_the_very_rows_sqlite_stores(tmp_path: Path,
                                                     pg_journal_url: str) -> None:
    lite = Journal.open(tmp_path / "journal.sqlite3", now=Clockwork())
    pg = Journal.open_url(pg_journal_url, now=Clockwork())
    try:
        for j in (lite, pg):
            _workload(j)
        for table in ("actions", "intents"):
            # msg_key separates its fields with NUL, which PostgreSQL text cannot hold:
            # the backend writes (and queries) it as U+FFFD. Everything else is identical.
            lite_rows = [{k: _pg_param(v) for k, v in r.items()} for r in _all_rows(lite, table)]
            assert _all_rows(pg, table) == lite_rows, table
        assert len(_all_rows(pg, "actions")) == 7
        for j in (lite, pg):
            assert [r.id for r in j.open_rows("alice")] == [5, 7]
            assert [(r.id, r.state) for r in j.removals()] == [
                (1, DELETED), (2, MOVED), (4, DELETED), (6, MOVED)]
        assert pg.steps == lite.steps  # the same transactions, so the same crash points
        assert [r.ref for r in pg.open_rows("alice")] == [r.ref for r in lite.open_rows("alice")]
        assert hist.query(pg, now=T0 + timedelta(days=41)) == hist.query(
            lite, now=T0 + timedelta(days=41))
    finally:
        lite.close()
        pg.close()


def test_values_sqlite_takes_and_postgres_must_too(pg_journal_url: str) -> None:
    """UIDVALIDITY is 32-bit unsigned (> INTEGER's 2^31); a hostile NUL in a Message-ID
    must not make the account's every pass fail."""
    with Journal.open_url(pg_journal_url, now=Clockwork()) as j:
        m = Message(MessageRef("INBOX", 4_294_967_295, 4_294_967_294), 5 * 2**31,
                    T0 - timedelta(days=400), frozenset(), message_id="<a\x00b@x>")
        [rid] = j.add_planned("r1", "alice", [NewRow(Action(m, ActionKind.DELETE, "old",
                                                            Clock.RECEIVED, "r"))])
        j.mark([rid], DELETED)
        row = j.row(rid)
        assert row is not None
        assert (row.uidvalidity, row.uid, row.size) == (4_294_967_295, 4_294_967_294, 5 * 2**31)
        assert row.message_id == "<a\ufffdb@x>"


def test_commits_are_durable_whatever_the_server_default(postgres: Postgres,
                                                         pg_journal_url: str) -> None:
    with postgres.connect() as conn:  # the test cluster runs with synchronous_commit=off
        assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "off"
    with Journal.open_url(pg_journal_url) as j:
        assert j._conn.execute("SHOW synchronous_commit").fetchone()[0] == "on"
        assert j._conn.execute("SHOW search_path").fetchone()[0] == "retention_journal"


def test_first_opens_race_and_a_newer_schema_is_refused(postgres: Postgres,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", postgres.superuser_password)
    url = fresh_database(postgres, "journal_race")
    errors: list[BaseException] = []

    def opener(n: int) -> None:
        try:
            # Each its own engine, as separate processes would be: all create the schema.
            with Journal.open_url(url + f"?application_name=race{n}") as j:
                j.add_planned(f"r{n}", f"acct{n}", [NewRow(_action(n + 1))])
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=opener, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    with Journal.open_url(url) as j:
        assert len(_all_rows(j, "actions")) == 6
        j._conn.execute("UPDATE journal_schema SET version = 99")
    dispose_engines()
    with pytest.raises(JournalError, match="newer version"):
        Journal.open_url(url)
    dispose_engines()


def test_errors_never_carry_the_password(postgres: Postgres,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    url = f"postgresql://{postgres.superuser}:wrong-secret-9@127.0.0.1:{postgres.port}/x"
    with pytest.raises(JournalError) as got:
        Journal.open_url(url)
    assert "wrong-secret-9" not in str(got.value) and "***" in str(got.value)
    monkeypatch.setenv("PGPASSWORD", "env-secret-7")
    with pytest.raises(JournalError) as got:
        Journal.open_url(pg_url(postgres))
    assert "env-secret-7" not in str(got.value)
    with pytest.raises(JournalError, match="cannot open journal"):
        Journal.open_url("postgresql://u@127.0.0.1:1/x")
    dispose_engines()


def test_restore_record_and_history_in_postgres(tmp_path: Path,
                                                pg_journal_url: str) -> None:
    class Cfg:
        state_dir = tmp_path / "state-of-another-agent"
        state_url = pg_journal_url

    with StateDir(Cfg.state_dir, Cfg.state_url).journal() as j:
        j._now = Clockwork()
        _fill(j)
    with StateDir(Cfg.state_dir, Cfg.state_url).restore_log() as log:
        rid = log.plan("restore-1", "alice", 1, "INBOX", "<m1@x>", "f" * 64, 1001)
        hold = Hold("alice", "INBOX", 4_000_000_000, 77, "<m1@x>", T0, T0 + timedelta(days=30))
        log.finish(rid, RESTORED, uidvalidity=4_000_000_000, uid=77, hold=hold)
        log.finish(rid, RESTORED, uidvalidity=4_000_000_000, uid=77, hold=hold)  # upsert
        assert log.restored_sources("alice") == {1}
        assert [h.uid for h in log.holds("alice", T0 + timedelta(days=1))] == [77]
        assert log.holds("alice", T0 + timedelta(days=31)) == []
        assert [e["state"] for e in log.entries()] == [RESTORED]
    assert not (Cfg.state_dir / "journal.sqlite3").exists()  # nothing went to the folder
    out = json.loads(hist.history(Cfg(), fmt="json"))
    assert [e["action"] for e in out["entries"]] == ["archive", "trash", "delete", "restore"]
    assert json.loads(hist.history(Cfg(), accounts=["bob"], fmt="json"))["entries"][0][
        "folder"] == "Junk"


def test_killed_right_after_a_commit_keeps_it(postgres: Postgres, pg_journal_url: str,
                                              tmp_path: Path) -> None:
    code = (
        "from retention.state.journal import Journal, NewRow\n"
        "from tests.unit.test_journal import _action\n"
        f"j = Journal.open_url({pg_journal_url!r})\n"
        "ids = j.add_planned('r1', 'alice', [NewRow(_action(1)), NewRow(_action(2))])\n"
        "j.step('source-removed')\n"
        "j.mark(ids, 'deleted')\n"  # step 3: SIGKILL right after the commit
        "j.add_planned('r1', 'alice', [NewRow(_action(3))])\n"
        "print('survived')\n"
    )
    env = {"RETENTION_TEST_CRASH_AFTER": "3", "RETENTION_TEST_HOOKS": "1",
           "PGPASSWORD": postgres.superuser_password, "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.returncode == -9 and "survived" not in proc.stdout, proc.stderr
    with Journal.open_url(pg_journal_url) as j:
        assert [(r.id, r.state) for r in j.removals()] == [(1, DELETED), (2, DELETED)]
        assert len(_all_rows(j, "actions")) == 2  # nothing of after the kill
        assert j.open_rows("alice") == []
        assert {PLANNED, DROPPED} & {r.state for r in j.removals()} == set()


def test_restore_from_another_replica_through_the_shared_journal(
        tmp_path: Path, make_user: Any, postgres: Postgres) -> None:
    """Replica a archives (to an IMAP vault both reach) and deletes; replica b, with its
    own state_dir, restores from the shared journal; a's next pass keeps the restored
    messages (the holds are shared too) and both histories list the restores."""
    from tests.integration.helpers import PolicyFile
    from tests.integration.test_restore import POLICY, content, seed_old, target_for

    user, vault = make_user(), make_user()
    seed_old(user)
    before = content(user.folder_state())
    url = fresh_database(postgres, "restore_replicas")
    agents = []
    for side in ("a", "b"):
        pf = PolicyFile(tmp_path / side, POLICY)
        pf.extra = {"archives": {"vault": target_for("imap", pf, vault)}, "state_url": url}
        pf.env["PGPASSWORD"] = postgres.superuser_password
        name = pf.add_imap(user)
        agents.append(pf)
    a, b = agents
    run = a.run()
    assert run.code == 0, run
    assert len([x for x in run.account(name)["actions"] if x["result"] == "done"]) == 12
    restored = b.cli("restore", "--account", name, "--format", "json")
    assert restored.code == 0, restored
    assert Counter(m["status"] for m in json.loads(restored.stdout)["messages"]) == {
        "restored": 12}
    assert content(user.folder_state()) == before
    nxt = a.run()
    assert nxt.code == 0, nxt
    assert nxt.account(name)["actions"] == [] and len(nxt.account(name)["exempted"]) == 12
    for pf in agents:
        hist = json.loads(pf.cli("history", "--format", "json").stdout)["entries"]
        assert Counter(e["action"] for e in hist) == {"archive": 12, "restore": 12}
        assert not (pf.directory / pf.state_dir / "journal.sqlite3").exists()


def test_recover_lists_and_abandons_rows_of_the_shared_journal(
        tmp_path: Path, make_user: Any, postgres: Postgres,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``retention recover`` on a replica that never ran the account: the stuck rows are
    the shared journal's; it waits for no local file, and a pass's lease elsewhere stops it."""
    from retention.state.leases import Lease, LeaseStore
    from tests.integration.helpers import PolicyFile

    monkeypatch.setenv("PGPASSWORD", postgres.superuser_password)
    url = fresh_database(postgres, "recover_replicas")
    pf = PolicyFile(tmp_path, {"p": {"rules": [{"name": "old", "older_than": "30d",
                                                "action": "delete"}]}},
                    extra={"state_url": url})
    pf.env["PGPASSWORD"] = postgres.superuser_password
    name = pf.add_imap(make_user())
    with Journal.open_url(url) as j:  # what another replica's killed pass left
        [rid] = j.add_planned("run-elsewhere", name, [NewRow(_action(5))])
    listed = pf.cli("recover", "--account", name, "--format", "json")
    assert listed.code == 0, listed
    assert [r["id"] for r in json.loads(listed.stdout)["open"]] == [rid]

    mailbox = pf.load().accounts[0].mailbox_identity()
    store = LeaseStore.open(tmp_path, url)
    try:
        lease = store.acquire(mailbox, "a-pass-on-another-pod", ttl=600)
        assert isinstance(lease, Lease)
        busy = pf.cli("recover", "--account", name, "--abandon", "--yes")
        assert busy.code == 1 and "lease" in busy.stderr, busy
        assert store.release(lease, done=False)
    finally:
        store.close()
    gave_up = pf.cli("recover", "--account", name, "--abandon", "--yes", "--format", "json")
    assert gave_up.code == 0, gave_up
    hist_out = json.loads(pf.cli("history", "--format", "json").stdout)["entries"]
    assert [(e["action"], e["run_id"]) for e in hist_out] == [("abandoned", "run-elsewhere")]
    assert not (pf.directory / pf.state_dir / "journal.sqlite3").exists()


def test_a_role_that_may_only_read_gets_the_history(tmp_path: Path, postgres: Postgres,
                                                    pg_journal_url: str) -> None:
    """An auditor's role with SELECT only: opening the journal creates nothing, so it works
    (CREATE ... IF NOT EXISTS would need the CREATE privilege even when nothing is made)."""
    with Journal.open_url(pg_journal_url, now=Clockwork()) as j:
        _fill(j)
    with Journal.open_url(pg_journal_url) as j:
        j._conn.execute(f"GRANT CONNECT ON DATABASE journal_tests TO {postgres.reader}")
        j._conn.execute(f"GRANT USAGE ON SCHEMA retention_journal TO {postgres.reader}")
        j._conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA retention_journal"
                        f" TO {postgres.reader}")
    dispose_engines()

    class Auditor:
        state_dir = tmp_path / "auditor"
        state_url = (f"postgresql://{postgres.reader}:{postgres.reader_password}"
                     f"@127.0.0.1:{postgres.port}/journal_tests")

    out = json.loads(hist.history(Auditor(), fmt="json"))
    assert [e["action"] for e in out["entries"]] == ["archive", "trash", "delete"]
    with Journal.open_url(Auditor.state_url) as j, pytest.raises(JournalError) as denied:
        j.add_planned("r9", "mallory", [NewRow(_action(9))])
    assert "permission denied" in str(denied.value)
    assert postgres.reader_password not in str(denied.value)
