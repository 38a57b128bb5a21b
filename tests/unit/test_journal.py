"""The journal's state machine, durability settings, crash hook, and history rendering."""

import csv
import io
import json
import os
import stat
from datetime import UTC, datetime, timedelta

import pytest

from retention.errors import ConfigError, JournalError
from retention.model import Message, MessageRef
from retention.plan import Action, ActionKind, Clock
from retention.state import history as hist
from retention.state.journal import (
    ARCHIVED,
    DELETED,
    DELETING,
    DROPPED,
    FAILED,
    MOVED,
    PLANNED,
    SKIPPED,
    VERIFIED,
    Journal,
    NewRow,
)

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


class Clockwork:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


def _action(uid, kind=ActionKind.DELETE, folder="INBOX", **kw):
    m = Message(MessageRef(folder, 42, uid), 1000 + uid, T0 - timedelta(days=400),
                frozenset({"\\Seen"}), message_id=f"<m{uid}@x>")
    return Action(m, kind, "old", Clock.RECEIVED, f"received {uid}", **kw)


@pytest.fixture
def journal(tmp_path):
    j = Journal.open(tmp_path / "state" / "journal.sqlite3", now=Clockwork())
    yield j
    j.close()


def test_open_settings(tmp_path, journal):
    assert journal._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert journal._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "state" / "journal.sqlite3").stat().st_mode) == 0o600


def test_archive_path_through_the_states(journal):
    [rid] = journal.add_planned("r1", "alice", [
        NewRow(_action(1, ActionKind.ARCHIVE, archive="cold"), sha256="ab", copy_sha256="cd",
               location="/x.mbox", locator={"type": "mbox"})])
    row = journal.row(rid)
    assert (row.state, row.sha256, row.locator, row.ref) == (
        PLANNED, "ab", {"type": "mbox"}, MessageRef("INBOX", 42, 1))
    journal.mark([rid], ARCHIVED, location="/x.mbox", locator={"type": "mbox", "o": 1})
    journal.mark([rid], VERIFIED)
    assert journal.open_rows("alice")[0].state == VERIFIED
    journal.mark([rid], DELETED)
    assert journal.open_rows("alice") == []
    row = journal.row(rid)
    assert row.done_at is not None and row.locator == {"type": "mbox", "o": 1}
    assert [r.id for r in journal.removals()] == [rid]


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ([], VERIFIED),  # planned -> verified skips the copy
        ([], ARCHIVED + "x"),
        ([ARCHIVED], DELETED),  # never delete an unverified copy's source
        ([ARCHIVED], DELETING),
        ([DELETED], FAILED),  # terminal
        ([MOVED], DELETED),
        ([DROPPED], PLANNED),
        ([ARCHIVED, VERIFIED], MOVED),
    ],
)
def test_illegal_transitions(journal, path, bad):
    [rid] = journal.add_planned("r1", "alice", [NewRow(_action(1))])
    for state in path:
        journal.mark([rid], state)
    with pytest.raises(JournalError):
        journal.mark([rid], bad)
    assert journal.row(rid).state == (path[-1] if path else PLANNED)


def test_pop3_deleting_then_deleted(journal):
    [rid] = journal.add_planned("r1", "alice", [NewRow(_action(1))])
    journal.mark([rid], DELETING)
    assert [r.id for r in journal.open_rows("alice")] == [rid]
    assert journal.removals() == []
    journal.mark([rid], DELETED)
    assert len(journal.removals()) == 1


def test_failed_transaction_rolls_back(journal):
    ids = journal.add_planned("r1", "alice", [NewRow(_action(1)), NewRow(_action(2))])
    journal.mark([ids[1]], SKIPPED)
    with pytest.raises(JournalError):
        journal.mark(ids, DELETED)  # the second is terminal: the first must not change
    assert journal.row(ids[0]).state == PLANNED


def test_steps_and_crash_hook(journal):
    seen = []

    class Crash(BaseException):
        pass

    def hook(n, name):
        seen.append((n, name))
        if n == 3:
            raise Crash

    journal.hook = hook
    ids = journal.add_planned("r1", "alice", [NewRow(_action(1))])
    journal.step("source-removed")
    with pytest.raises(Crash):
        journal.mark(ids, DELETED)
    # The commit happened before the "crash": a later run sees the row done.
    assert journal.row(ids[0]).state == DELETED
    assert seen == [(1, "journal:planned"), (2, "source-removed"), (3, "journal:deleted")]


def test_crash_after_env_kills_the_process(tmp_path):
    import subprocess
    import sys

    code = (
        "from retention.state.journal import Journal\n"
        "j = Journal.open(r'%s')\n"
        "for i in range(5):\n"
        "    j.step('s')\n"
        "print('survived')\n" % (tmp_path / "j.sqlite3")
    )
    env = {"RETENTION_TEST_CRASH_AFTER": "3", "RETENTION_TEST_STEP_LOG": str(tmp_path / "log"),
           "PATH": "/usr/bin:/bin"}
    # Without the explicit test-only switch a stray variable does nothing (review M16).
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and "survived" in proc.stdout, proc.stderr
    assert "event=test_hooks_ignored" in proc.stderr and not (tmp_path / "log").exists()
    env["RETENTION_TEST_HOOKS"] = "1"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == -9 and "survived" not in proc.stdout
    assert (tmp_path / "log").read_text().splitlines() == ["1 s", "2 s", "3 s"]


def test_state_folder_open_to_everyone_and_symlinked_journal_are_refused(tmp_path):
    """M16: another local user must not be able to swap or redirect the journal."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(JournalError, match="writable by every user"):
        Journal.open(shared / "journal.sqlite3")
    os.chmod(shared, 0o1777)  # sticky (like /tmp): others cannot replace our files
    Journal.open(shared / "journal.sqlite3").close()
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "journal.sqlite3").symlink_to(tmp_path / "elsewhere.sqlite3")
    with pytest.raises(JournalError, match="cannot open journal"):
        Journal.open(private / "journal.sqlite3")
    assert not (tmp_path / "elsewhere.sqlite3").exists()


def test_latest_by_key_and_intents(journal):
    a = _action(1)
    journal.add_planned("r1", "alice", [NewRow(a)])
    [second] = journal.add_planned("r2", "alice", [NewRow(a)])
    got = journal.latest_by_key("alice", [a.message.ref.key(), "nope"])
    assert list(got) == [a.message.ref.key()] and got[a.message.ref.key()].id == second
    iid = journal.add_intent("alice", "r1", "cold", "/a.mbox", 10)
    assert [i.offset for i in journal.intents(path="/a.mbox")] == [10]
    journal.clear_intents([iid])
    assert journal.intents() == []


# -- history ---------------------------------------------------------------------------


def _fill(journal):
    clock = journal._now
    ids = journal.add_planned("run-1", "alice", [
        NewRow(_action(1, ActionKind.ARCHIVE, archive="cold"), sha256="f" * 64,
               location="/arch/INBOX/2023.mbox.gz"),
        NewRow(_action(2, ActionKind.TRASH, to_folder="Trash")),
        NewRow(_action(3)),
    ])
    journal.mark([ids[0]], ARCHIVED, location="/arch/INBOX/2023.mbox.gz")
    journal.mark([ids[0]], VERIFIED)
    journal.mark([ids[0]], DELETED)
    journal.mark([ids[1]], MOVED)
    journal.mark([ids[2]], DROPPED)  # never acted on: not a removal
    clock.now = T0 + timedelta(days=40)
    [bob] = journal.add_planned("run-2", "bob", [NewRow(_action(9, folder="Junk"))])
    journal.mark([bob], DELETED)


def test_history_query_and_formats(journal):
    _fill(journal)
    now = T0 + timedelta(days=41)
    entries = hist.query(journal, now=now)
    assert [(e["account"], e["action"]) for e in entries] == [
        ("alice", "archive"), ("alice", "trash"), ("bob", "delete")]
    e = entries[0]
    assert e["archive_location"] == "/arch/INBOX/2023.mbox.gz" and e["archive"] == "cold"
    assert e["message_id"] == "<m1@x>" and e["size"] == 1001 and e["run_id"] == "run-1"
    assert e["date"] == (T0 - timedelta(days=400)).isoformat()
    assert e["when"] == T0.isoformat()
    assert entries[1]["to_folder"] == "Trash" and entries[1]["archive_location"] is None
    assert hist.query(journal, accounts=["bob"], now=now)[0]["folder"] == "Junk"
    assert len(hist.query(journal, since=timedelta(days=30), now=now)) == 1

    data = json.loads(hist.render(entries, "json"))
    assert data["entries"] == entries
    rows = list(csv.DictReader(io.StringIO(hist.render(entries, "csv"))))
    assert len(rows) == 3 and rows[1]["archive_location"] == "" and rows[0]["size"] == "1001"
    assert tuple(rows[0]) == hist.FIELDS
    text = hist.render(entries, "text")
    assert "3 removals" in text and "/arch/INBOX/2023.mbox.gz" in text and "<m1@x>" in text
    assert hist.render([], "text") == "no removals recorded\n"


def test_history_entry_point(tmp_path):
    class Cfg:
        state_dir = tmp_path

    assert json.loads(hist.history(Cfg(), fmt="json")) == {"entries": []}
    j = Journal.open(tmp_path / "journal.sqlite3", now=Clockwork())
    _fill(j)
    j.close()
    out = json.loads(hist.history(Cfg(), accounts=["alice"], since="3650d", fmt="json"))
    assert len(out["entries"]) == 2
    with pytest.raises(ConfigError):
        hist.history(Cfg(), since="30x")


def test_open_survives_the_wal_file_vanishing_under_it(tmp_path, monkeypatch):
    """serve: one pass's last connection deletes -wal/-shm while another pass opens the
    journal (between its exists() and chmod before): the open must not fail the account."""
    path = tmp_path / "state" / "journal.sqlite3"
    first = Journal.open(path)
    first.bind_mailbox("alice", "imap:alice@h:993")  # a write: the -wal file exists now
    assert path.with_name(path.name + "-wal").exists()
    real = os.chmod

    def chmod(target, mode, *args, **kwargs):
        if str(target).endswith(("-wal", "-shm")):
            raise FileNotFoundError(2, "No such file or directory", str(target))
        return real(target, mode, *args, **kwargs)

    monkeypatch.setattr(os, "chmod", chmod)
    second = Journal.open(path)
    assert second.open_rows("alice") == []
    second.close()
    first.close()
