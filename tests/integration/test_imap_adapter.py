"""ImapSession against a real Dovecot (and, for faults, through tests/integration/faultproxy).

Covers the IMAP behaviour that must hold at the adapter level: TLS modes and
failures, login errors without the password anywhere, quota and summed usage, special-use
and Japanese folder names, scan metadata with broken headers, read-only sessions, exact
deletes next to another client's \\Deleted, UIDVALIDITY changes, UID MOVE and the
COPY+COPYUID fallback, batching of a 20,000-message folder, APPEND for the archive
target, and dropped connections / BAD replies.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from retention.adapters.imap.session import SCAN_BATCH, ImapSession
from retention.config.schema import Connection
from retention.errors import (
    AuthError,
    ConnectError,
    FolderSkipped,
    ProtocolError,
    TlsError,
    UidValidityChanged,
)
from retention.model import DELETED, FLAGGED, SEEN
from retention.testing.dovecot import MailUser, SeedMessage
from retention.testing.faultproxy import FaultProxy, imap_bad

NOW = datetime.now(UTC).replace(microsecond=0)


def conn_for(user: MailUser, security: str = "none", **fields) -> Connection:
    server = user.server
    values = {
        "host": server.host,
        "port": server.imaps_port if security == "tls" else server.imap_port,
        "security": security,
        "username": user.name,
        "password_env": "UNUSED_IN_ADAPTER_TESTS",
        "timeout": timedelta(seconds=20),
    }
    if security == "none":
        values["allow_plaintext"] = True
    else:
        values["ca_file"] = server.ca_file
    values.update(fields)
    return Connection(**values)


def open_session(user: MailUser, *, readonly: bool = False, security: str = "none",
                 **fields) -> ImapSession:
    return ImapSession.connect(conn_for(user, security, **fields), user.password,
                               readonly=readonly)


def folder(session: ImapSession, name: str):
    return next(f for f in session.list_folders() if f.name == name)


def other_ca(tmp_path):
    """A CA that did not sign the server's certificate."""
    key, crt = tmp_path / "other.key", tmp_path / "other.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "2", "-subj", "/CN=other CA"],
        check=True, capture_output=True,
    )
    return crt


# -- connecting ----------------------------------------------------------------------


@pytest.mark.parametrize("security", ["none", "tls", "starttls"])
def test_connect_in_every_security_mode(mail_user, security):
    with open_session(mail_user, security=security) as session:
        assert "IMAP4REV1" in session.capabilities()
        assert "INBOX" in {f.name for f in session.list_folders()}
    session.close()  # idempotent


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_wrong_ca_is_a_tls_error(mail_user, tmp_path, security):
    with pytest.raises(TlsError, match="certificate verification failed") as err:
        open_session(mail_user, security=security, ca_file=other_ca(tmp_path))
    assert err.value.kind == "tls" and not err.value.retryable
    # tls_verify: false is the one way to accept it (with a warning).
    with open_session(mail_user, security=security, ca_file=other_ca(tmp_path),
                      tls_verify=False) as session:
        assert session.list_folders()


def test_system_trust_store_rejects_the_private_ca(mail_user):
    with pytest.raises(TlsError):
        open_session(mail_user, security="tls", ca_file=None)


def test_implicit_tls_on_the_plaintext_port_is_a_tls_error(mail_user):
    with pytest.raises(TlsError, match="TLS handshake failed"):
        open_session(mail_user, security="tls", port=mail_user.server.imap_port)


def test_starttls_missing_never_falls_back_to_plaintext(mail_user):
    with FaultProxy(mail_user.server.host, mail_user.server.imap_port) as proxy:
        proxy.replace_down(b" STARTTLS", b"")
        with pytest.raises(TlsError, match="STARTTLS"):
            open_session(mail_user, security="starttls", port=proxy.port)
        assert proxy.sent(rb"(?i)LOGIN|AUTHENTICATE") == []


def test_security_none_needs_allow_plaintext(mail_user):
    conn = conn_for(mail_user, "none").model_copy(update={"allow_plaintext": False})
    with pytest.raises(TlsError, match="allow_plaintext"):
        ImapSession.connect(conn, mail_user.password, readonly=True)


def test_wrong_password_is_auth_error_without_the_password(mail_user, caplog):
    caplog.set_level(logging.DEBUG)
    secret = "Wr0ng-Pa55word-7f3a9"
    for security in ("none", "tls"):
        with pytest.raises(AuthError) as err:
            ImapSession.connect(conn_for(mail_user, security), secret, readonly=True)
        assert err.value.kind == "auth" and not err.value.retryable
        text = str(err.value)
        assert secret not in text and "\n" not in text
        assert "rejected" in text and "AUTHENTICATIONFAILED" in text
    # Nothing logged anywhere (imapclient, imaplib, ours) carries it either, and neither
    # does a successful login's trace.
    with open_session(mail_user):
        pass
    assert secret not in caplog.text and mail_user.password not in caplog.text


def test_non_ascii_password_logs_in_with_sasl_plain(make_user):
    # imaplib's LOGIN cannot send non-ASCII; the adapter switches to AUTHENTICATE PLAIN.
    # (The rig's own login helper uses LOGIN, so set the password behind its back.)
    user = make_user()
    user.password = "pässwörd-ゴミ-1"
    user.server._write_passwd(user)
    deadline = time.monotonic() + 10
    while True:
        try:
            session = open_session(user)
            break
        except AuthError:  # Dovecot re-reads a changed passwd-file at most once a second
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    with session:
        assert session.list_folders()


def test_refused_port_is_connect_error(mail_user):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens once closed
    with pytest.raises(ConnectError, match="refused") as err:
        open_session(mail_user, port=port)
    assert err.value.retryable


def test_silent_server_times_out(mail_user):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepts (backlog) but never greets
        started = time.monotonic()
        with pytest.raises(ConnectError, match="timed out"):
            open_session(mail_user, port=listener.getsockname()[1],
                         timeout=timedelta(seconds=1))
        assert time.monotonic() - started < 10


# -- usage and folders ---------------------------------------------------------------


def test_usage_from_getquotaroot_equals_doveadm(make_user):
    user = make_user(20 * 1024 * 1024)
    user.seed("INBOX", [SeedMessage(received=NOW, size=5000 + i) for i in range(30)])
    user.seed("Junk", [SeedMessage(received=NOW, size=70_000)])
    with open_session(user, readonly=True) as session:
        usage = session.usage()
    used, limit = user.usage()
    assert usage.source == "quota"
    assert (usage.usage_bytes, usage.limit_bytes) == (used, limit) == (used, 20 * 1024 * 1024)


def test_quota_off_falls_back_to_summed_sizes(make_user):
    user = make_user(quota=False)
    user.seed("INBOX", [SeedMessage(received=NOW, size=3000) for _ in range(7)])
    user.seed("Lists/python", [SeedMessage(received=NOW, size=1234)])
    with open_session(user, readonly=True) as session:
        assert "QUOTA" not in session.capabilities()
        usage = session.usage()
        assert (usage.source, usage.limit_bytes, usage.messages) == ("sum", None, 8)
        assert usage.usage_bytes == 7 * 3000 + 1234 == user.usage()[0]
        # Without STATUS=SIZE the same sum comes from RFC822.SIZE fetches.
        session._caps = session.capabilities() - {"STATUS=SIZE"}
        assert session.usage().usage_bytes == usage.usage_bytes
        assert session.commands["UID FETCH"] >= 2


def test_special_use_and_japanese_names(dovecot_factory, make_user):
    server = dovecot_factory(trash_name="ゴミ箱")
    user = make_user(server=server)
    user.seed("ゴミ箱", [SeedMessage(received=NOW - timedelta(days=40))])
    user.seed("プロジェクト/二〇二四", [SeedMessage(received=NOW, size=900) for _ in range(3)])
    with open_session(user) as session:
        folders = {f.name: f for f in session.list_folders()}
        assert folders["ゴミ箱"].special_use == {"\\Trash"}
        for name, use in [("Junk", "\\Junk"), ("Sent", "\\Sent"), ("Drafts", "\\Drafts"),
                          ("Archive", "\\Archive")]:
            assert folders[name].special_use == {use}
        assert folders["INBOX"].special_use == frozenset()
        # Servers that give the attributes only on request: LIST ... RETURN (SPECIAL-USE).
        session._caps = session.capabilities()
        plain_list = session._client.list_folders
        session._client.list_folders = lambda *a: [((b"\\HasNoChildren",), d, n)
                                                   for _f, d, n in plain_list(*a)]
        again = {f.name: f.special_use for f in session.list_folders()}
        assert again == {name: f.special_use for name, f in folders.items()}
        assert session.commands["LIST RETURN (SPECIAL-USE)"] == 1
        session._client.list_folders = plain_list
        project = folders["プロジェクト/二〇二四"]
        snap = session.scan(project)
        assert [m.size for m in snap.messages] == [900, 900, 900]
        assert session.move([snap.messages[0].ref], "\\Trash") == {snap.messages[0].ref}
        assert session.move([snap.messages[1].ref], "保存/古い") == {snap.messages[1].ref}
        assert len(session.scan(folder(session, "ゴミ箱")).messages) == 2
        assert len(session.scan(folder(session, "保存/古い")).messages) == 1
    state = user.folder_state()
    assert len(state["保存/古い"]) == 1 and len(state["プロジェクト/二〇二四"]) == 1


# -- scanning ------------------------------------------------------------------------


def test_scan_reads_metadata_and_survives_broken_headers(mail_user):
    received = datetime(2023, 5, 6, 7, 8, 9, tzinfo=UTC)
    raw_8bit = (b"From: x@example.com\r\nDate: \xff\xfe\x80 not a date\r\n"
                b"Message-ID: <8bit-\xe9@example.com>\r\nSubject: \xc3\x28\r\n\r\nbody\r\n")
    user = mail_user
    user.seed("INBOX", [
        SeedMessage(received=received, size=4321, flags={SEEN, FLAGGED},
                    message_id="  <good@example.com>  "),
        SeedMessage(received=received, date_header="garbage, 99 Foo 2024"),
        SeedMessage(received=received, date_header=None, message_id=None),
        SeedMessage(received=received, raw=raw_8bit),
        SeedMessage(received=received, date_header="Mon, 1 Jan 2024 10:00:00",
                    flags={DELETED}),
    ])
    with open_session(user, readonly=True) as session:
        snap = session.scan(folder(session, "INBOX"))
    good, garbage, missing, eight_bit, naive = snap.messages
    assert snap.has_savedate and snap.uidvalidity > 0
    assert [m.ref.uid for m in snap.messages] == [1, 2, 3, 4, 5]
    assert good.size == 4321 and good.received == received
    assert good.received.tzinfo is not None and good.flags == {SEEN, FLAGGED}
    assert good.message_id == "<good@example.com>" and good.sent == received
    assert good.saved is not None and good.saved.tzinfo is not None
    assert garbage.sent is None and garbage.date_header == "garbage, 99 Foo 2024"
    assert missing.sent is None and missing.date_header is None and missing.message_id is None
    assert eight_bit.sent is None and eight_bit.date_header and eight_bit.size == len(raw_8bit)
    assert eight_bit.message_id and eight_bit.message_id.startswith("<8bit-")
    assert naive.sent == datetime(2024, 1, 1, 10, tzinfo=UTC) and naive.deleted


def test_lean_scan_reads_no_header_and_message_ids_reads_only_what_is_asked(mail_user):
    user = mail_user
    user.seed("INBOX", [
        SeedMessage(received=NOW - timedelta(days=3), message_id="  <one@example.com>  ",
                    flags={FLAGGED}),
        SeedMessage(received=NOW - timedelta(days=2), message_id=None),
        SeedMessage(received=NOW - timedelta(days=1), message_id="<three@example.com>"),
        SeedMessage(received=NOW, raw=b"Message-ID:\r\n <folded@example.com>\r\n\r\nx\r\n"),
    ])
    before = user.folder_state()
    with open_session(user) as session:  # a writable session reads read-only all the same
        sent: list[bytes] = []
        real_send = session._client._imap.send

        def recording(data):  # every command line, imaplib's and scanread.stream's
            sent.append(bytes(data))
            return real_send(data)

        session._client._imap.send = recording
        snap = session.scan(folder(session, "INBOX"), with_sent=False)
        assert [m.ref.uid for m in snap.messages] == [1, 2, 3, 4]
        assert all(m.message_id is None and m.sent is None for m in snap.messages)
        assert snap.messages[0].flags == {FLAGGED} and snap.messages[0].size > 0
        assert not any(b"BODY" in line.upper() for line in sent)
        refs = [m.ref for m in snap.messages]
        # Another client removes the third meanwhile: it maps to None.
        with user.imap_client() as other:
            other.select_folder("INBOX")
            other.delete_messages([3])
            other.expunge()
        sent.clear()
        ids = session.message_ids([refs[0], refs[1], refs[2], refs[3]])
        assert ids == {refs[0]: "<one@example.com>", refs[1]: None, refs[2]: None,
                       refs[3]: "<folded@example.com>"}
        assert session.message_ids([]) == {}
        fetches = [line for line in sent if b"FETCH" in line.upper()]
        assert len(fetches) == 1 and b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]" in fetches[0]
        assert session.commands["SELECT"] == 0
        stale = type(refs[0])(refs[0].folder, refs[0].uidvalidity + 1, refs[0].uid)
        with pytest.raises(UidValidityChanged):
            session.message_ids([stale])
    after = user.folder_state()
    assert after["INBOX"] == {u: v for u, v in before["INBOX"].items() if u != 3}


def test_readonly_session_refuses_changes_and_scanning_changes_nothing(mail_user):
    user = mail_user
    user.seed("INBOX", [SeedMessage(received=NOW - timedelta(days=d)) for d in range(5)])
    before = user.folder_state()
    with open_session(user, readonly=True) as session:
        inbox = folder(session, "INBOX")
        snap = session.scan(inbox)
        refs = [m.ref for m in snap.messages]
        assert all(SEEN not in m.flags for m in snap.messages)
        assert len(dict(session.fetch(refs))) == 5
        for call in (lambda: session.delete(refs[:1]), lambda: session.move(refs[:1], "\\Trash"),
                     lambda: session.append("New", b"Subject: x\r\n\r\nx\r\n", [], NOW)):
            with pytest.raises(ProtocolError, match="read-only"):
                call()
        assert session.commands["SELECT"] == 0  # only EXAMINE, ever
    assert user.folder_state() == before  # flags included: \Seen stays unset
    assert "New" not in before


def test_scanning_in_a_writable_session_is_still_read_only(mail_user):
    mail_user.seed("INBOX", [SeedMessage(received=NOW) for _ in range(3)])
    before = mail_user.folder_state()
    with open_session(mail_user) as session:
        snap = session.scan(folder(session, "INBOX"))
        list(session.fetch([m.ref for m in snap.messages]))
        assert session.commands["SELECT"] == 0 and session.commands["EXAMINE"] >= 2
    assert mail_user.folder_state() == before


# -- acting --------------------------------------------------------------------------


def test_delete_is_exact_and_spares_another_clients_deleted(mail_user, imap):
    user = mail_user
    user.seed("INBOX", [SeedMessage(received=NOW - timedelta(days=d)) for d in range(6)])
    with FaultProxy(user.server.host, user.server.imap_port) as proxy:
        with open_session(user, port=proxy.port) as session:
            refs = [m.ref for m in session.scan(folder(session, "INBOX")).messages]
            # Another client marks UID 4 \Deleted but does not expunge it.
            imap.select_folder("INBOX")
            imap.add_flags([4], [DELETED])
            removed = session.delete([refs[0], refs[1], refs[4]])
            assert removed == {refs[0], refs[1], refs[4]}
            assert session.delete([refs[0]]) == set()  # gone already: nothing to do
            assert session.delete([]) == set()
        expunges = proxy.sent(rb"(?i)EXPUNGE")
        assert expunges and all(b" UID EXPUNGE " in line for line in expunges)
        assert proxy.sent(rb"(?i)^\S+ (CLOSE|EXPUNGE)\r\n") == []
    state = user.folder_state()["INBOX"]
    assert sorted(state) == [3, 4, 6]
    assert DELETED in state[4].flags and DELETED not in state[3].flags


def test_delete_and_move_need_uidplus(mail_user):
    mail_user.seed("INBOX", [SeedMessage(received=NOW)])
    with open_session(mail_user) as session:
        ref = session.scan(folder(session, "INBOX")).messages[0].ref
        session._caps = session.capabilities() - {"UIDPLUS", "MOVE"}
        with pytest.raises(ProtocolError, match="lacks UIDPLUS"):
            session.delete([ref])
        with pytest.raises(ProtocolError, match="lacks UIDPLUS"):
            session.move([ref], "\\Trash")
        assert session.commands["UID STORE"] == 0
    assert len(mail_user.folder_state()["INBOX"]) == 1


def test_uidvalidity_change_skips_the_folder(mail_user, imap):
    mail_user.seed("Lists", [SeedMessage(received=NOW) for _ in range(3)])
    with open_session(mail_user) as session:
        refs = [m.ref for m in session.scan(folder(session, "Lists")).messages]
        # Another client deletes and recreates the folder: same UIDs, other messages.
        imap.delete_folder("Lists")
        mail_user.seed("Lists", [SeedMessage(received=NOW) for _ in range(3)])
        for call in (lambda: session.delete(refs), lambda: session.move(refs, "\\Trash"),
                     lambda: list(session.fetch(refs))):
            with pytest.raises(UidValidityChanged) as err:
                call()
            assert err.value.folder == "Lists" and "UIDVALIDITY" in err.value.reason
    assert len(mail_user.folder_state()["Lists"]) == 3


def test_acting_on_a_vanished_folder_skips_it(mail_user, imap):
    mail_user.seed("Gone", [SeedMessage(received=NOW)])
    with open_session(mail_user) as session:
        info = folder(session, "Gone")
        refs = [m.ref for m in session.scan(info).messages]
        imap.delete_folder("Gone")
        with pytest.raises(FolderSkipped, match="no longer exists"):
            session.delete(refs)
        with pytest.raises(FolderSkipped):
            session.scan(info)


def test_move_with_uid_move_keeps_flags(mail_user):
    mail_user.seed("INBOX", [SeedMessage(received=NOW - timedelta(days=500), flags={SEEN}),
                             SeedMessage(received=NOW), SeedMessage(received=NOW)])
    with open_session(mail_user) as session:
        refs = [m.ref for m in session.scan(folder(session, "INBOX")).messages]
        assert session.move(refs[:2], "\\Trash") == set(refs[:2])
        assert session.move(refs[2:], "Archive/2024") == {refs[2]}
        assert session.commands["UID MOVE"] == 2 and session.commands["UID COPY"] == 0
        trash = session.scan(folder(session, "Trash")).messages
        assert [m.received for m in trash][0] == NOW - timedelta(days=500)
        assert trash[0].flags == {SEEN}
        # SAVEDATE is the move, not the reception: what the `saved` clock needs.
        assert trash[0].saved is not None and trash[0].saved > NOW - timedelta(days=1)
        with pytest.raises(ProtocolError, match="into itself"):
            session.move([trash[0].ref], "\\Trash")
    state = mail_user.folder_state()
    assert state["INBOX"] == {} and len(state["Trash"]) == 2 and len(state["Archive/2024"]) == 1


def test_a_minimal_server_copy_copyuid_no_esearch_no_unselect(mail_user, imap):
    # A server with UIDPLUS but without MOVE, ESEARCH and UNSELECT (RFC 3501 + 4315 only).
    mail_user.seed("INBOX", [SeedMessage(received=NOW) for _ in range(4)])
    with open_session(mail_user) as session:
        session._caps = session.capabilities() - {"MOVE", "ESEARCH", "UNSELECT"}
        refs = [m.ref for m in session.scan(folder(session, "INBOX")).messages]
        assert len(refs) == 4
        imap.select_folder("INBOX")
        imap.add_flags([4], [DELETED])  # someone else's, must survive
        assert session.move(refs[:2], "\\Junk") == set(refs[:2])
        assert session.commands["UID COPY"] == 1 and session.commands["UID EXPUNGE"] == 1
        assert session.commands["UID MOVE"] == 0 and session.commands["UNSELECT"] == 0
        assert session.delete([refs[2]]) == {refs[2]}
    state = mail_user.folder_state()
    assert sorted(state["INBOX"]) == [4] and len(state["Junk"]) == 2


def test_move_to_a_missing_special_use_folder_fails(mail_user, imap):
    mail_user.seed("INBOX", [SeedMessage(received=NOW)])
    with open_session(mail_user) as session:
        ref = session.scan(folder(session, "INBOX")).messages[0].ref
        with pytest.raises(ProtocolError, match="no \\\\All folder"):
            session.move([ref], "\\All")


# -- batching ------------------------------------------------------------------------


@pytest.mark.slow
def test_twenty_thousand_messages_are_scanned_in_batches(make_user, capsys):
    user = make_user(None)
    count = 20_000
    t0 = time.monotonic()
    user.seed("Big", [SeedMessage(received=NOW - timedelta(minutes=i), size=300)
                      for i in range(count)])
    seeded = time.monotonic() - t0
    with open_session(user, readonly=True) as session:
        sent = Counter()
        real_command = session._client._imap._command

        def counting(name, *args):  # every command imaplib sends goes through here
            sent[f"{name} {args[0]}" if name == "UID" else name] += 1
            return real_command(name, *args)

        session._client._imap._command = counting
        info = folder(session, "Big")
        t1 = time.monotonic()
        snap = session.scan(info)
        scanned = time.monotonic() - t1
        t2 = time.monotonic()
        bodies = sum(1 for _ in session.fetch([m.ref for m in snap.messages[:2000]]))
        fetched = time.monotonic() - t2
    assert len(snap.messages) == count and bodies == 2000
    assert [m.ref.uid for m in snap.messages] == list(range(1, count + 1))
    assert sent["UID FETCH"] == session.commands["UID FETCH"]
    scan_fetches = -(-count // SCAN_BATCH)
    # + one size pass for the 2000 bodies + the body batches
    assert sent["UID FETCH"] == scan_fetches + 1 + 2000 // 200
    assert sum(sent.values()) <= scan_fetches + 20
    with capsys.disabled():
        print(f"\n[20k] seed {seeded:.1f}s, scan {scanned:.2f}s with {scan_fetches} UID FETCH "
              f"({sum(sent.values())} commands in all incl. fetch of 2000 bodies in "
              f"{fetched:.2f}s)")


def test_command_lines_stay_short_for_sparse_uids(mail_user):
    mail_user.seed("Sparse", [SeedMessage(received=NOW, size=200) for _ in range(3000)])
    with open_session(mail_user) as session:
        refs = [m.ref for m in session.scan(folder(session, "Sparse")).messages]
    with FaultProxy(mail_user.server.host, mail_user.server.imap_port) as proxy:
        with open_session(mail_user, port=proxy.port) as session:
            every_other = refs[::2]
            assert session.delete(every_other) == set(every_other)
        assert max(len(line) for line in proxy.lines) < 8192
        assert len(proxy.sent(rb" UID EXPUNGE ")) >= 2
    assert len(mail_user.folder_state()["Sparse"]) == 1500


# -- the IMAP archive target ---------------------------------------------------------


def test_append_returns_appenduid_and_keeps_flags_and_internaldate(mail_user):
    when = datetime(2021, 3, 4, 5, 6, 7, tzinfo=UTC)
    message = b"From: a@example.com\r\nMessage-ID: <arch-1@example.com>\r\n\r\nhello\r\n"
    with open_session(mail_user) as session:
        uid = session.append("Archive/alice/INBOX", message,
                             [SEEN, FLAGGED, DELETED, "\\Recent", "$Label1"], when)
        assert uid == 1 and session.folder_exists("Archive/alice/INBOX")
        assert session.append("Archive/alice/INBOX", message, [], when) == 2
        assert session.find_by_message_id("Archive/alice/INBOX", "<arch-1@example.com>") == [1, 2]
        assert session.find_by_message_id("Archive/alice/INBOX", "<arch-1@example.co>") == []
        assert session.find_by_message_id("No/Such", "<arch-1@example.com>") == []
        assert session.fetch_uids("Archive/alice/INBOX", [1, 99]) == {1: message}
        validity = session.folder_uidvalidity("Archive/alice/INBOX")
        snap = session.scan(folder(session, "Archive/alice/INBOX"))
    first = snap.messages[0]
    assert snap.uidvalidity == validity
    assert first.received == when and first.flags == {SEEN, FLAGGED, "$Label1"}


def test_append_over_quota_is_a_protocol_error_with_the_server_text(make_user):
    user = make_user(20_000)
    with open_session(user) as session:
        with pytest.raises(ProtocolError, match="(?i)quota") as err:
            session.append("Vault", b"Subject: big\r\n\r\n" + b"x" * 60_000 + b"\r\n", [], NOW)
        assert "\n" not in str(err.value)


# -- faults --------------------------------------------------------------------------


def test_connection_dropped_mid_fetch_is_connect_error(mail_user):
    mail_user.seed("INBOX", [SeedMessage(received=NOW, size=50_000) for _ in range(5)])
    with FaultProxy(mail_user.server.host, mail_user.server.imap_port) as proxy:
        session = open_session(mail_user, port=proxy.port)
        refs = [m.ref for m in session.scan(folder(session, "INBOX")).messages]
        proxy.drop_on(rb"UID FETCH .*BODY\.PEEK\[\]", after_reply_bytes=70_000)
        got = []
        with pytest.raises(ConnectError, match="connection lost during UID FETCH") as err:
            for ref, _body in session.fetch(refs):
                got.append(ref)
        assert err.value.retryable and len(got) < 5
        with pytest.raises(ConnectError):  # the session knows it is dead
            session.list_folders()
        session.close()
        session.close()


def test_connection_dropped_mid_scan_is_connect_error(mail_user):
    mail_user.seed("INBOX", [SeedMessage(received=NOW) for _ in range(50)])
    with FaultProxy(mail_user.server.host, mail_user.server.imap_port) as proxy:
        with open_session(mail_user, port=proxy.port) as session:
            info = folder(session, "INBOX")
            proxy.drop_after_bytes(500)
            with pytest.raises(ConnectError):
                session.scan(info)


def test_bad_reply_is_protocol_error(mail_user):
    mail_user.seed("INBOX", [SeedMessage(received=NOW) for _ in range(3)])
    with FaultProxy(mail_user.server.host, mail_user.server.imap_port) as proxy:
        with open_session(mail_user, port=proxy.port) as session:
            info = folder(session, "INBOX")
            proxy.reply_on(rb"UID FETCH", imap_bad("Internal error occurred"))
            with pytest.raises(ProtocolError, match="UID FETCH failed: BAD Internal error") as err:
                session.scan(info)
            assert err.value.kind == "protocol" and "\n" not in str(err.value)
            # A BAD leaves the connection usable.
            assert len(session.scan(info).messages) == 3
            proxy.reply_on(rb"UID EXPUNGE", imap_bad("nope"))
            refs = [m.ref for m in session.scan(info).messages]
            with pytest.raises(ProtocolError, match="UID EXPUNGE failed"):
                session.delete(refs[:1])
    # The failed expunge took its \Deleted back: nothing is left for another EXPUNGE.
    state = mail_user.folder_state()["INBOX"]
    assert len(state) == 3 and all(DELETED not in m.flags for m in state.values())


def test_another_clients_flag_change_during_a_scan_never_lands_on_the_wrong_message(
        mail_user, imap):
    # UID 1 is gone, so sequence numbers and UIDs differ by one: seq 2 = UID 3 (flagged),
    # seq 3 = UID 4. While we scan, another client sets \Seen on UID 4; Dovecot tells us
    # with "* 3 FETCH (FLAGS (\Seen))" (no UID) inside our UID FETCH. imapclient's own
    # parser would file that under UID 3 and lose its \Flagged: a protected message would
    # look deletable.
    mail_user.seed("INBOX", [SeedMessage(received=NOW, flags={FLAGGED} if i == 2 else set())
                             for i in range(6)])
    imap.select_folder("INBOX")
    imap.add_flags([1], [DELETED])
    imap.uid_expunge([1])
    with open_session(mail_user, readonly=True) as session:
        search_all = session.search_all

        def racing():
            uids = search_all()
            imap.add_flags([4], [SEEN])
            return uids

        session.search_all = racing
        snap = session.scan(folder(session, "INBOX"))
    flags = {m.ref.uid: m.flags for m in snap.messages}
    assert flags[3] == {FLAGGED}
    assert flags[4] == {SEEN} and flags[2] == flags[5] == flags[6] == frozenset()


def test_faults_during_login_are_classified_and_never_carry_the_password(mail_user):
    password = mail_user.password
    with FaultProxy(mail_user.server.host, mail_user.server.imap_port) as proxy:
        proxy.drop_on(rb"(?i)LOGIN")  # the connection dies with our LOGIN in flight
        with pytest.raises(ConnectError, match="during login") as err:
            open_session(mail_user, port=proxy.port)
        assert password not in str(err.value) and err.value.retryable
        proxy.reply_on(rb"(?i)LOGIN", imap_bad("Invalid characters in argument"))
        with pytest.raises(AuthError, match="BAD Invalid characters") as auth:
            open_session(mail_user, port=proxy.port)
        assert password not in str(auth.value)
        with open_session(mail_user, port=proxy.port) as session:  # faults used up
            assert session.list_folders()
