"""``retention recover``: stuck recovery names its way out; abandoning deletes nothing (M9)."""

from __future__ import annotations

import pytest

from retention.adapters.fake import FakeServer
from retention.archive import ArchiveSet
from retention.config.schema import MboxTarget
from retention.errors import ArchiveError
from retention.state import history as hist
from retention.state.journal import ABANDONED, PLANNED, VERIFIED, Journal
from retention.state.stuck import abandon, stuck
from tests.unit.test_executor import Crash, imap_set, new_executor, plan_for, seed


def _crash_at(name: str):
    def hook(_n: int, step: str) -> None:
        if step == name:
            raise Crash
    return hook


def _interrupted(journal: Journal, server: FakeServer, archives: ArchiveSet, step: str) -> None:
    try:
        new_executor(server, journal, archives, crash_hook=_crash_at(step)).execute(
            plan_for(server))
    except Crash:
        pass
    archives.close()
    journal.hook = None


def _bodies(server: FakeServer) -> list[bytes]:
    return sorted(m.body for b in server.folders.values() for m in b.messages.values())


def test_target_removed_blocks_recovery_with_the_command_and_abandon_frees_it(tmp_path):
    server, vault = FakeServer(), FakeServer()
    seed(server)
    before = _bodies(server)
    journal = Journal.open(tmp_path / "state" / "journal.sqlite3")
    # Cut right after the first batch's copies were verified, before their sources go.
    _interrupted(journal, server, imap_set(vault), "journal:verified")
    open_rows = journal.open_rows("alice")
    assert open_rows and {r.state for r in open_rows} == {VERIFIED}

    # The IMAP target is gone from the policy: recovery cannot verify, deletes nothing, and
    # the account error says how to get out (on every run).
    for _ in range(2):
        with pytest.raises(ArchiveError) as err:
            new_executor(server, journal, ArchiveSet({}, account="alice")).recover()
        assert "no longer configured" in str(err.value)
        assert "retention recover --account alice --list" in str(err.value)
        assert "--abandon --yes" in str(err.value)
    assert _bodies(server) == before

    found = stuck(journal, "alice")
    assert [s.row.id for s in found] == [r.id for r in open_rows]
    assert all("was verified" in s.left_as and "stays in" in s.left_as for s in found)
    done = abandon(journal, "alice", found)
    assert {r.state for r in done} == {ABANDONED}
    assert all("nothing was deleted" in (r.detail or "") for r in done)

    # Unblocked; still nothing deleted; the copies stay in the vault.
    report = new_executor(server, journal, ArchiveSet({}, account="alice"), run="r2").recover()
    assert report.completed == 0 and report.finished == []
    assert _bodies(server) == before
    assert sum(len(b.messages) for b in vault.folders.values()) == len(open_rows)
    # The audit history lists them as abandoned, not as removals.
    entries = hist.abandoned_entries(journal, accounts=["alice"])
    assert len(entries) == len(open_rows) and {e["action"] for e in entries} == {"abandoned"}
    assert all(e["reason"].startswith("archive: abandoned by the operator") for e in entries)
    assert hist.query(journal) == []
    journal.close()


def test_abandoning_a_torn_mbox_append_clears_its_intent_and_the_file_is_repaired(tmp_path):
    server = FakeServer()
    seed(server)
    before = _bodies(server)
    target = MboxTarget(type="mbox", path=str(tmp_path / "arch/{folder}.mbox"), compress="none")
    journal = Journal.open(tmp_path / "state" / "journal.sqlite3")
    # Cut after the rows and the intent were journalled, before anything was written.
    _interrupted(journal, server, ArchiveSet({"cold": target}, account="alice"),
                 "journal:planned")
    assert journal.intents(account="alice")
    found = stuck(journal, "alice")
    assert found and {s.row.state for s in found} == {PLANNED}
    assert all("may be incomplete" in s.left_as for s in found)
    abandon(journal, "alice", found)
    assert journal.intents(account="alice") == []
    assert _bodies(server) == before

    # The next pass recovers nothing and archives every message once.
    archives = ArchiveSet({"cold": target}, account="alice")
    ex = new_executor(server, journal, archives, run="r2")
    ex.recover()
    results = ex.execute(plan_for(server))
    archives.close()
    assert {r.result for r in results} == {"done"}
    assert _bodies(server) == []
    journal.close()


def test_abandon_only_some_rows_keeps_the_intent_of_the_others(tmp_path):
    server = FakeServer()
    seed(server)
    target = MboxTarget(type="mbox", path=str(tmp_path / "arch/{folder}.mbox"), compress="none")
    journal = Journal.open(tmp_path / "state" / "journal.sqlite3")
    _interrupted(journal, server, ArchiveSet({"cold": target}, account="alice"),
                 "journal:planned")
    found = stuck(journal, "alice")
    abandon(journal, "alice", found[:1])
    assert journal.intents(account="alice")  # the other rows of that append still need it
    assert [s.row.id for s in stuck(journal, "alice")] == [s.row.id for s in found[1:]]
    journal.close()
