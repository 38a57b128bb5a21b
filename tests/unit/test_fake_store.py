"""The in-memory FakeServer/FakeSession keeps the MailSession contract (no server needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from retention.adapters.fake import FailAfter, FakeServer
from retention.errors import ConnectError, FolderSkipped, ProtocolError, UidValidityChanged
from retention.model import DELETED, SEEN, FolderInfo

NOW = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)


def _folder(session, name):
    return next(f for f in session.list_folders() if f.name == name)


def test_scan_reports_what_was_added():
    server = FakeServer.standard(now=lambda: NOW)
    old = NOW - timedelta(days=400)
    ref = server.add("Trash", size=1234, received=old, flags=[SEEN])
    garbage = server.add("INBOX", sent=None, date_header="not a date")
    session = server.session(readonly=True)
    trash = _folder(session, "Trash")
    assert trash.special_use == {"\\Trash"}
    snap = session.scan(trash)
    (msg,) = snap.messages
    assert msg.ref == ref and msg.size == 1234 and msg.received == old
    assert msg.flags == {SEEN} and msg.sent == old and msg.message_id
    assert snap.uidvalidity == ref.uidvalidity and snap.has_savedate
    (g,) = session.scan(_folder(session, "INBOX")).messages
    assert g.ref == garbage and g.sent is None and g.date_header == "not a date"


def test_message_ids_are_read_with_the_date_header_or_on_request():
    server = FakeServer(now=lambda: NOW)
    a = server.add(message_id="<a@x>")
    b = server.add(message_id=None)
    session = server.session(readonly=True)
    inbox = _folder(session, "INBOX")
    assert [m.message_id for m in session.scan(inbox).messages] == ["<a@x>", None]
    lean = session.scan(inbox, with_sent=False).messages
    assert [(m.message_id, m.sent) for m in lean] == [(None, None), (None, None)]
    gone = server.add()
    server.folders["INBOX"].messages.pop(gone.uid or 0)
    assert session.message_ids([a, b, gone]) == {a: "<a@x>", b: None, gone: None}
    assert session.message_ids([]) == {}
    server.recreate("INBOX")
    with pytest.raises(UidValidityChanged):
        session.message_ids([a])


def test_generated_bodies_have_the_declared_size_and_fetch_returns_them():
    server = FakeServer()
    refs = [server.add(size=s) for s in (300, 5000)]
    session = server.session(readonly=True)
    got = dict(session.fetch(refs))
    assert [len(got[r]) for r in refs] == [300, 5000]
    assert b"Message-ID: " in got[refs[0]]


def test_delete_removes_exactly_the_named_messages_and_spares_foreign_deleted():
    server = FakeServer()
    a, b, c = (server.add() for _ in range(3))
    server.flag("INBOX", c.uid, DELETED)  # another client, not expunged
    session = server.session()
    assert session.delete([a]) == {a}
    assert server.uids("INBOX") == [b.uid, c.uid]
    assert session.delete([a]) == set()  # already gone: not "removed" again
    assert server.log == [("delete", "INBOX", (a.uid,))]


def test_readonly_session_refuses_changes_and_reading_changes_nothing():
    server = FakeServer.standard()
    ref = server.add()
    before = server.state()
    session = server.session(readonly=True)
    session.scan(_folder(session, "INBOX"))
    list(session.fetch([ref]))
    for call in (lambda: session.delete([ref]), lambda: session.move([ref], "\\Trash"),
                 lambda: session.append("X", b"m", [], NOW)):
        with pytest.raises(ProtocolError, match="read-only"):
            call()
    assert server.state() == before


def test_uidvalidity_change_is_detected_before_acting():
    server = FakeServer()
    ref = server.add()
    session = server.session()
    new = server.recreate("INBOX")
    assert new != ref.uidvalidity
    for call in (lambda: session.delete([ref]), lambda: list(session.fetch([ref])),
                 lambda: session.move([ref], "Elsewhere")):
        with pytest.raises(UidValidityChanged) as err:
            call()
        assert isinstance(err.value, FolderSkipped) and err.value.folder == "INBOX"
    assert server.uids("INBOX") == [1]


def test_delete_without_uidplus_fails_like_the_imap_adapter():
    server = FakeServer(capabilities={"IMAP4REV1", "MOVE"})
    ref = server.add()
    with pytest.raises(ProtocolError, match="UIDPLUS"):
        server.session().delete([ref])
    assert server.uids("INBOX") == [ref.uid]


def test_move_to_special_use_and_to_a_new_named_folder():
    server = FakeServer.standard(now=lambda: NOW)
    a, b = server.add(received=NOW - timedelta(days=900)), server.add()
    session = server.session()
    assert session.move([a], "\\Trash") == {a}
    assert len(server.uids("Trash")) == 1
    assert session.move([b], "Lists/2024") == {b}
    assert "Lists/2024" in server.folders and server.uids("INBOX") == []
    empty = FakeServer()
    ref = empty.add()
    with pytest.raises(ProtocolError, match="no \\\\Junk"):
        empty.session().move([ref], "\\Junk")


def test_move_resets_the_saved_clock():
    server = FakeServer.standard(now=lambda: NOW)
    ref = server.add(received=NOW - timedelta(days=900))
    session = server.session()
    session.move([ref], "\\Trash")
    (msg,) = session.scan(_folder(session, "Trash")).messages
    assert msg.saved == NOW
    assert msg.received == NOW - timedelta(days=900)


def test_usage_quota_and_sum():
    server = FakeServer(quota_bytes=10_000)
    server.add(size=1000)
    server.add("Lists", size=500)
    usage = server.session().usage()
    assert (usage.usage_bytes, usage.limit_bytes, usage.source) == (1500, 10_000, "quota")
    plain = FakeServer()
    plain.add(size=1000)
    plain.add("Lists", size=500)
    s = plain.session()
    assert s.usage().source == "sum" and s.usage().usage_bytes == 1500
    assert s.usage([FolderInfo("Lists")]).usage_bytes == 500


def test_fault_injection():
    server = FakeServer()
    ref = server.add()
    session = server.session(fail_on={"delete": ConnectError("boom"),
                                      "fetch": FailAfter(1, ConnectError("late"))})
    with pytest.raises(ConnectError, match="boom"):
        session.delete([ref])
    assert server.uids("INBOX") == [ref.uid]  # nothing happened
    assert list(session.fetch([ref]))
    with pytest.raises(ConnectError, match="late"):
        session.fetch([ref])
    assert session.calls["fetch"] == 2


def test_closed_session_and_context_manager():
    server = FakeServer()
    with server.session() as session:
        pass
    session.close()  # idempotent
    with pytest.raises(ConnectError):
        session.list_folders()


def test_pop3_deletes_only_on_commit():
    server = FakeServer(protocol="pop3")
    a, b = server.add(), server.add()
    assert a.uid is None and a.uidl and a.uidvalidity == 0
    s1 = server.session()
    assert s1.delete([a]) == {a}
    s1.close()  # no QUIT: nothing deleted
    assert len(server.uids("INBOX")) == 2
    s2 = server.session()
    s2.delete([a])
    assert [m.ref for m in s2.scan(_folder(s2, "INBOX")).messages] == [b]
    s2.commit()
    assert len(server.uids("INBOX")) == 1
    with pytest.raises(ValueError):
        server.folder("Trash")


def test_archive_target_extras():
    server = FakeServer()
    session = server.session()
    msg = b"Message-ID: <x@y>\r\nSubject: a\r\n\r\nbody\r\n"
    uid = session.append("Archive/alice", msg, [SEEN, DELETED, "\\Recent"], NOW)
    assert uid == 1 and session.folder_exists("Archive/alice")
    stored = server.folders["Archive/alice"].messages[1]
    assert stored.flags == {SEEN} and stored.received == NOW
    assert session.find_by_message_id("Archive/alice", "<x@y>") == [1]
    assert session.find_by_message_id("Nowhere", "<x@y>") == []
    assert session.fetch_uids("Archive/alice", [1, 2]) == {1: msg}
    validity = server.folders["Archive/alice"].uidvalidity
    assert session.folder_uidvalidity("Archive/alice") == validity


def test_connect_has_the_runner_connector_signature():
    server = FakeServer()
    session = server.connect(object(), "pw", True)
    assert session.readonly and server.sessions == [session]
