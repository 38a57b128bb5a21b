"""The executor on the in-memory fake server: order of steps, failures, recovery, crashes."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from retention.adapters.fake import FakeServer
from retention.archive import ArchiveSet
from retention.archive.mbox import normalise, read_all, unescape
from retention.config.schema import ImapTarget, MaildirTarget, MboxTarget
from retention.errors import ArchiveError, ConnectError, ProtocolError
from retention.plan import Action, ActionKind, Clock, Plan
from retention.run.executor import Executor
from retention.state.history import query
from retention.state.journal import PLANNED, VERIFIED, Journal

OLD = datetime(2020, 6, 1, 10, 0, tzinfo=UTC)


class Crash(BaseException):
    """A simulated kill: not an Exception, so no handler in the code under test sees it."""


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def seed(server: FakeServer, folders=("INBOX", "Lists/py"), per_folder=5) -> dict[str, bytes]:
    """Messages with mbox-hostile bodies; returns {message-id: bytes}."""
    out = {}
    for f in folders:
        for i in range(per_folder):
            mid = f"<{f.replace('/', '.')}-{i}@test>"
            body = (f"Message-ID: {mid}\r\nSubject: {i}\r\n\r\nFrom the start\r\n>From quoted"
                    f"\r\n{'x' * (50 * i)}").encode()
            server.add(f, body=body, received=OLD + timedelta(days=30 * i), message_id=mid,
                       flags={"\\Seen"} if i % 2 else set())
            out[mid] = body
    return out


def plan_for(server: FakeServer, kind=ActionKind.ARCHIVE, archive="cold", to_folder=None,
             folders=None) -> Plan:
    session = server.session(readonly=True)
    actions = []
    for info in session.list_folders():
        if folders is not None and info.name not in folders:
            continue
        if folders is None and info.name in ("Trash",):
            continue
        for m in session.scan(info).messages:
            actions.append(Action(m, kind, "old", Clock.RECEIVED, "old enough",
                                  archive=archive if kind is ActionKind.ARCHIVE else None,
                                  to_folder=to_folder))
    return Plan(account="alice", actions=tuple(actions))


def mbox_messages(root) -> list[bytes]:
    out = []
    for path in sorted(root.rglob("*.mbox*")):
        text = read_all(path)
        for part in re.split(rb"(?m)^From MAILER-DAEMON [^\n]*\n", text)[1:]:
            assert part.endswith(b"\n")
            out.append(unescape(part[:-1]))
    return out


def new_executor(server, journal, archives, run="r1", **kw):
    return Executor(server.session(), journal, archives=archives, run_id=run, account="alice",
                    **kw)


@pytest.fixture
def journal(tmp_path):
    j = Journal.open(tmp_path / "state" / "journal.sqlite3")
    yield j
    j.close()


def mbox_set(tmp_path, compress="gzip"):
    t = MboxTarget(type="mbox", path=str(tmp_path / "arch/{account}/{folder}/{year}.mbox"),
                   compress=compress)
    return ArchiveSet({"cold": t}, account="alice")


# -- delete / move ---------------------------------------------------------------------------


def test_delete_and_trash_exactly_the_planned(journal):
    server = FakeServer.standard()
    originals = seed(server)
    server.flag("INBOX", 1, "\\Deleted")  # another client's: not in our plan, must stay
    plan = plan_for(server, ActionKind.DELETE, folders={"Lists/py"})
    results = new_executor(server, journal, None).execute(plan)
    assert [r.result for r in results] == ["done"] * 5
    assert server.uids("Lists/py") == [] and len(server.uids("INBOX")) == 5
    assert len(query(journal)) == 5
    trash = plan_for(server, ActionKind.TRASH, to_folder="Trash", folders={"INBOX"})
    results = new_executor(server, journal, None, run="r2").execute(trash)
    assert {r.result for r in results} == {"done"} and results[0].detail == "moved to Trash"
    assert len(server.uids("Trash")) == 5
    assert [e["action"] for e in query(journal)].count("trash") == 5
    assert len(originals) == 10


def test_move_without_target_fails_with_reason(journal):
    server = FakeServer()
    seed(server, folders=("INBOX",), per_folder=2)
    plan = plan_for(server, ActionKind.TRASH, to_folder=None)
    results = new_executor(server, journal, None).execute(plan)
    assert {r.result for r in results} == {"failed"}
    assert "Trash" in results[0].detail and len(server.uids("INBOX")) == 2


def test_uidvalidity_change_skips_only_that_folder(journal):
    server = FakeServer()
    seed(server)
    plan = plan_for(server, ActionKind.DELETE)
    server.recreate("INBOX")
    results = new_executor(server, journal, None).execute(plan)
    by_folder = Counter((r.action.message.ref.folder, r.result) for r in results)
    assert by_folder == {("INBOX", "skipped"): 5, ("Lists/py", "done"): 5}
    assert "UIDVALIDITY" in next(r.detail for r in results if r.result == "skipped")
    assert len(server.uids("INBOX")) == 5


def test_connection_lost_mid_delete_fails_rest_and_recovery_sorts_it_out(journal):
    server = FakeServer()
    seed(server)
    plan = plan_for(server, ActionKind.DELETE)
    session = server.session(fail_on={"delete": _after_delete(server, 1)})
    ex = Executor(session, journal, archives=None, run_id="r1", account="alice")
    with pytest.raises(ConnectError):
        ex.execute(plan)
    assert [r.result for r in ex.results] == ["done"] * 5 + ["failed"] * 5
    assert server.uids("Lists/py") == []  # the server did delete before the line dropped
    assert {r.state for r in journal.open_rows("alice")} == {PLANNED}
    report = new_executor(server, journal, None, run="r2").recover()
    assert report.completed == 5 and journal.open_rows("alice") == []
    assert len(query(journal)) == 10


def _after_delete(server, ok_calls):
    """Let ``ok_calls`` deletes through; the next one deletes, then the connection drops."""
    state = {"n": 0}

    def fault(refs):
        state["n"] += 1
        if state["n"] > ok_calls:
            box = server.folders[refs[0].folder]
            for r in refs:
                box.messages.pop(r.uid, None)
            raise ConnectError("fake: connection lost during UID EXPUNGE")

    return fault


# -- archive ---------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", ["gzip", "none", "zstd"])
def test_archive_mbox_verified_before_delete(tmp_path, journal, compress):
    server = FakeServer()
    originals = seed(server)
    plan = plan_for(server)
    archives = mbox_set(tmp_path, compress)
    session = server.session()
    real_delete = session.delete
    deleted_states = []

    def checked_delete(refs, **kw):
        keys = [r.key() for r in refs]
        rows = journal.latest_by_key("alice", keys)
        deleted_states.extend(rows[k].state for k in keys)
        return real_delete(refs, **kw)

    session.delete = checked_delete
    ex = Executor(session, journal, archives=archives, run_id="r1", account="alice",
                  batch_size=3)
    results = ex.execute(plan)
    assert {r.result for r in results} == {"done"}
    assert set(deleted_states) == {VERIFIED} and len(deleted_states) == 10
    assert all(server.uids(f) == [] for f in ("INBOX", "Lists/py"))
    stored = sorted(mbox_messages(tmp_path / "arch"))
    assert stored == sorted(normalise(b) for b in originals.values())
    assert results[0].detail.startswith(str(tmp_path / "arch/alice/INBOX/2020.mbox"))
    hist = query(journal)
    assert len(hist) == 10 and all(e["archive_location"] for e in hist)
    assert {e["sha256"] for e in hist} == {sha(b) for b in originals.values()}


def test_archive_maildir_byte_exact(tmp_path, journal):
    server = FakeServer()
    originals = seed(server)
    archives = ArchiveSet(
        {"cold": MaildirTarget(type="maildir", path=str(tmp_path / "md/{account}"))},
        account="alice")
    results = new_executor(server, journal, archives).execute(plan_for(server))
    assert {r.result for r in results} == {"done"}
    files = [p for p in (tmp_path / "md").rglob("*") if p.is_file()]
    assert sorted(sha(p.read_bytes()) for p in files) == sorted(map(sha, originals.values()))
    assert any(p.name.endswith(":2,S") for p in files)


def imap_set(target_server, **kw):
    t = ImapTarget(type="imap", host="vault.example", username="archiver", password_env="X",
                   folder="Archive/{account}/{folder}")
    return ArchiveSet({"cold": t}, account="alice", secrets=lambda c: "pw",
                      imap_connect=lambda target, pw: target_server.session(**kw))


def test_archive_imap_flags_and_dates(journal):
    server, vault = FakeServer(), FakeServer()
    originals = seed(server)
    server.flag("INBOX", 2, "\\Flagged")
    results = new_executor(server, journal, imap_set(vault)).execute(plan_for(server))
    assert {r.result for r in results} == {"done"}
    box = vault.folders["Archive/alice/INBOX"]
    assert sorted(sha(m.body) for m in box.messages.values()) == sorted(
        sha(b) for mid, b in originals.items() if "INBOX" in mid)
    m2 = next(m for m in box.messages.values() if b"Subject: 1\r\n" in m.body)
    assert m2.flags == {"\\Seen", "\\Flagged"} and m2.received == OLD + timedelta(days=30)
    assert ";UID=" in results[0].detail


def test_target_over_quota_stops_archiving_deletes_go_on(journal):
    server, vault = FakeServer(), FakeServer()
    seed(server)
    archive = plan_for(server, folders={"INBOX"})
    delete = plan_for(server, ActionKind.DELETE, folders={"Lists/py"})
    plan = Plan(account="alice", actions=archive.actions + delete.actions)
    refused = ProtocolError("vault: APPEND failed: [OVERQUOTA] Quota exceeded")
    from retention.adapters.fake import FailAfter

    archives = imap_set(vault, fail_on={"append": FailAfter(2, refused)})
    ex = new_executor(server, journal, archives, batch_size=4)
    with pytest.raises(ArchiveError, match="OVERQUOTA"):
        ex.execute(plan)
    outcome = Counter((r.action.kind.value, r.result) for r in ex.results)
    assert outcome == {("archive", "done"): 2, ("archive", "failed"): 3, ("delete", "done"): 5}
    # Exactly the two archived (and verified) messages left the source.
    assert len(server.uids("INBOX")) == 3
    assert len(vault.folders["Archive/alice/INBOX"].messages) == 2
    assert journal.open_rows("alice") == []


def test_disk_error_nothing_unverified_deleted(tmp_path, journal, monkeypatch):
    import errno

    import retention.archive.mbox as mbox_mod

    server = FakeServer()
    seed(server)
    calls = {"n": 0}
    real = mbox_mod.write_all

    def full(fd, data):
        calls["n"] += 1
        if calls["n"] >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)

    monkeypatch.setattr(mbox_mod, "write_all", full)
    ex = new_executor(server, journal, mbox_set(tmp_path), batch_size=3)
    with pytest.raises(ArchiveError, match="no space left"):
        ex.execute(plan_for(server))
    done = [r for r in ex.results if r.result == "done"]
    assert len(done) == 3 and len(server.uids("INBOX")) + len(server.uids("Lists/py")) == 7
    assert len(mbox_messages(tmp_path / "arch")) == 3


def test_verification_mismatch_keeps_source(tmp_path, journal, monkeypatch):
    server = FakeServer()
    seed(server, folders=("INBOX",), per_folder=3)
    archives = mbox_set(tmp_path, "none")
    w = archives.writer("cold", journal, "r1")
    monkeypatch.setattr(w, "verify", lambda copies: [True, False, True])
    ex = new_executor(server, journal, archives)
    with pytest.raises(ArchiveError, match="verification"):
        ex.execute(plan_for(server))
    assert [r.result for r in ex.results] == ["done", "failed", "done"]
    assert server.uids("INBOX") == [2]


def test_imap_copies_that_fail_verification_are_removed_from_the_target(journal):
    """M11: a target that rewrites what it stores keeps no unusable copies."""
    server, vault = FakeServer(), FakeServer()
    seed(server, folders=("INBOX",), per_folder=3)
    archives = imap_set(vault)
    w = archives.writer("cold", journal, "r1")
    real = w.verify
    w.verify = lambda copies: [ok and k != 1 for k, ok in enumerate(real(copies))]
    ex = new_executor(server, journal, archives)
    with pytest.raises(ArchiveError, match="verification"):
        ex.execute(plan_for(server))
    assert [r.result for r in ex.results] == ["done", "failed", "done"]
    assert server.uids("INBOX") == [2]  # the source of the bad copy is kept
    assert sum(len(b.messages) for b in vault.folders.values()) == 2  # its copy is gone
    failed = [r for r in journal.rows(range(1, 10)) if r.state == "failed"]
    assert [r.detail for r in failed] == [
        "verification failed: the archived copy differs (removed from the target)"]


def test_append_timeout_is_reconciled_not_duplicated(journal):
    server, vault = FakeServer(), FakeServer()
    seed(server)
    sessions = []

    def connect(target, pw):
        s = vault.session()
        if not sessions:  # the first connection stores the 3rd message, then times out
            n = {"c": 0}
            real = s.append

            def append(folder, message, flags, internal_date):
                n["c"] += 1
                uid = real(folder, message, flags, internal_date)
                if n["c"] == 3:
                    raise ConnectError("vault: no answer within 30s to APPEND")
                return uid

            s.append = append
        sessions.append(s)
        return s

    t = ImapTarget(type="imap", host="v", username="a", password_env="X",
                   folder="Archive/{account}/{folder}")
    archives = ArchiveSet({"cold": t}, account="alice", secrets=lambda c: "pw",
                          imap_connect=connect)
    results = new_executor(server, journal, archives).execute(plan_for(server))
    assert {r.result for r in results} == {"done"} and len(sessions) == 2
    total = sum(len(vault.folders[f].messages) for f in vault.folders if f.startswith("Archive"))
    assert total == 10


def test_no_archive_twice_when_pending_rows_exist(tmp_path, journal):
    server = FakeServer()
    seed(server, folders=("INBOX",), per_folder=2)
    plan = plan_for(server)
    archives = mbox_set(tmp_path)

    def crash(n, name):
        if name == "journal:verified":
            raise Crash

    with pytest.raises(Crash):
        new_executor(server, journal, archives, crash_hook=crash).execute(plan)
    archives.close()
    journal.hook = None
    # A run that skips recovery must still not archive those messages again.
    results = new_executor(server, journal, mbox_set(tmp_path), run="r2").execute(plan)
    assert {r.result for r in results} == {"skipped"}
    assert len(mbox_messages(tmp_path / "arch")) == 2


# -- POP3 ---------------------------------------------------------------------------------


def test_pop3_archive_then_commit(tmp_path, journal):
    server = FakeServer(protocol="pop3")
    originals = seed(server, folders=("INBOX",), per_folder=4)
    plan = plan_for(server)
    session = server.session()
    ex = Executor(session, journal, archives=mbox_set(tmp_path), run_id="r1", account="alice")
    results = ex.execute(plan)
    assert {r.result for r in results} == {"done"} and session.committed
    assert server.uids("INBOX") == [] and len(query(journal)) == 4
    assert len(mbox_messages(tmp_path / "arch")) == len(originals)


def test_pop3_quit_failure_retried_next_run(tmp_path, journal):
    server = FakeServer(protocol="pop3")
    seed(server, folders=("INBOX",), per_folder=3)
    plan = plan_for(server, ActionKind.DELETE)
    session = server.session(fail_on={"commit": ConnectError("fake: connection lost in QUIT")})
    ex = Executor(session, journal, archives=None, run_id="r1", account="alice")
    with pytest.raises(ConnectError):
        ex.execute(plan)
    assert {r.result for r in ex.results} == {"failed"}
    assert len(server.uids("INBOX")) == 3 and len(journal.open_rows("alice")) == 3
    # Next run: recover() re-sends DELE; execute() (nothing new planned) commits with QUIT.
    s2 = server.session()
    ex2 = Executor(s2, journal, archives=None, run_id="r2", account="alice")
    ex2.recover()
    ex2.execute(Plan("alice"))
    assert server.uids("INBOX") == [] and journal.open_rows("alice") == []
    assert len(query(journal)) == 3


# -- crashes at every step -------------------------------------------------------------------


def _archive_run_with_crash(tmp_path, target_kind, crash_at, then_at=()):
    """Seed, run with a crash at step ``crash_at``; rerun (recover + execute) crashing at
    each step of ``then_at``; a last clean rerun; return the final world."""
    server, vault = FakeServer(), FakeServer()
    originals = seed(server, per_folder=4)
    tag = "-".join(map(str, (crash_at, *then_at)))
    journal = Journal.open(tmp_path / f"j-{tag}.sqlite3")
    root = tmp_path / f"arch-{tag}"

    def archives():
        if target_kind == "imap":
            return imap_set(vault)
        if target_kind == "maildir":
            t = MaildirTarget(type="maildir", path=str(root / "{account}"))
        else:
            t = MboxTarget(type="mbox", path=str(root / "{folder}.mbox"), compress="gzip")
        return ArchiveSet({"cold": t}, account="alice")

    crashed = []

    def hook(n, name):
        if n == crash_at:
            crashed.append(name)
            raise Crash

    a1 = archives()
    try:
        new_executor(server, journal, a1, crash_hook=hook, batch_size=3).execute(
            plan_for(server))
    except Crash:
        pass
    a1.close()
    journal.hook = None
    for at in then_at:
        journal.steps = 0
        again = archives()
        try:
            ex = new_executor(server, journal, again, run=f"r-{at}", batch_size=3,
                              crash_hook=lambda n, name, at=at: _raise_at(n, at))
            ex.recover()
            ex.execute(plan_for(server))
        except Crash:
            pass
        again.close()
        journal.hook = None
    a2 = archives()
    ex = new_executor(server, journal, a2, run="r2", batch_size=3)
    ex.recover()
    results = ex.execute(plan_for(server))
    a2.close()
    assert {r.result for r in results} <= {"done"}
    if target_kind == "imap":
        copies = [m.body for b in vault.folders.values() for m in b.messages.values()]
    elif target_kind == "maildir":
        copies = [p.read_bytes() for p in root.rglob("*") if p.is_file()]
    else:
        copies = mbox_messages(root) if root.exists() else []
    left = [m.body for b in server.folders.values() for m in b.messages.values()]
    history = query(journal)
    journal.close()
    return originals, copies, left, history, crashed


def _raise_at(n, at):
    if n == at:
        raise Crash


@pytest.mark.parametrize("target_kind", ["mbox", "maildir", "imap"])
def test_crash_at_every_step_loses_nothing_and_copies_once(tmp_path, target_kind):
    n = 1
    points = set()
    while True:
        originals, copies, left, history, crashed = _archive_run_with_crash(
            tmp_path, target_kind, n)
        if not crashed:
            break
        points.add((n, crashed[0]))
        norm = normalise if target_kind == "mbox" else (lambda b: b)
        expected = Counter(norm(b) for b in originals.values())
        # Every original exactly once in source + archive; all archived by now.
        assert Counter(copies) == expected, f"crash at step {n} ({crashed[0]})"
        assert left == []
        assert len(history) == len(originals)
        assert Counter(e["message_id"] for e in history) == Counter(list(originals))
        n += 1
    assert len(points) >= 20, points
    print(target_kind, len(points), sorted({name for _, name in points}))


@pytest.mark.parametrize("target_kind", ["mbox", "imap"])
def test_crash_again_during_recovery(tmp_path, target_kind):
    """A second crash while the next run recovers (steps 1-4) still loses nothing."""
    for first in range(1, 19, 2):
        for second in range(1, 5):
            originals, copies, left, history, crashed = _archive_run_with_crash(
                tmp_path, target_kind, first, (second,))
            norm = normalise if target_kind == "mbox" else (lambda b: b)
            assert Counter(copies) == Counter(norm(b) for b in originals.values()), (first, second)
            assert left == [] and len(history) == len(originals)


def test_archived_message_that_survives_the_delete_is_finished_not_archived_again(
    tmp_path, journal
):
    """A verified copy whose source the delete did not remove stays open for recovery."""
    server = FakeServer()
    seed(server, folders=("INBOX",), per_folder=3)
    plan = plan_for(server)
    archives = mbox_set(tmp_path)
    session = server.session()
    session.delete = lambda refs, **_kw: set()  # e.g. the server answered UID EXPUNGE but kept them
    results = Executor(session, journal, archives=archives, run_id="r1",
                       account="alice").execute(plan)
    assert {r.result for r in results} == {"skipped"}
    assert all("next run" in (r.detail or "") for r in results)
    assert len(server.uids("INBOX")) == 3 and len(mbox_messages(tmp_path / "arch")) == 3

    nxt = Executor(server.session(), journal, archives=archives, run_id="r2", account="alice")
    nxt.recover()
    assert server.uids("INBOX") == []
    assert len(mbox_messages(tmp_path / "arch")) == 3  # finished, not archived twice
    assert len(query(journal)) == 3


# -- protection re-checked at the moment of acting (review F3) -------------------------------


@pytest.mark.parametrize("kind", [ActionKind.DELETE, ActionKind.ARCHIVE, ActionKind.MOVE])
def test_message_flagged_after_the_plan_is_skipped_with_the_reason(tmp_path, journal, kind):
    from dataclasses import replace

    from retention.model import Protection

    server = FakeServer()
    seed(server, folders=("INBOX",), per_folder=3)
    server.folder("Old")
    plan = plan_for(server, kind=kind, folders={"INBOX"},
                    to_folder="Old" if kind is ActionKind.MOVE else None)
    guarded = Protection.of({"flagged"})
    plan = replace(plan, actions=tuple(replace(a, protect=guarded) for a in plan.actions))
    server.flag("INBOX", 2, "\\Flagged")  # the user stars UID 2 while the run goes on
    results = new_executor(server, journal, mbox_set(tmp_path)).execute(plan)
    outcome = {r.action.message.ref.uid: (r.result, r.detail or "") for r in results}
    assert outcome[2][0] == "skipped" and "flagged since the scan" in outcome[2][1]
    assert outcome[1][0] == outcome[3][0] == "done"
    assert server.uids("INBOX") == [2]
    rows = journal.latest_by_key("alice", [plan.actions[1].message.ref.key()])
    assert {r.state for r in rows.values()} == {"skipped"}  # recovery never removes it
