"""The POP3 adapter and the first-seen ledger against the real Dovecot POP3 service.

Proves: TLS, STARTTLS and (allowed) plaintext logins; UIDL identity and LIST sizes; RETR
bytes identical to what was stored (and to IMAP BODY[]); DELE committed only by QUIT; a
session closed without QUIT (or dropped) deletes nothing and leaves flags alone; a
read-only session changes nothing; wrong password / wrong CA fail clearly; the first-seen
ledger makes age rules work across restarts with an injected clock.
"""

from __future__ import annotations

import hashlib
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retention.adapters.pop3 import Pop3Session
from retention.config.schema import Account
from retention.errors import AuthError, ConnectError, ProtocolError, TlsError
from retention.model import FolderInfo, MessageRef
from retention.state.observations import Observations
from retention.testing.dovecot import AUTO, MailUser, SeedMessage

INBOX = FolderInfo("INBOX")
NOW = datetime.now(UTC).replace(microsecond=0)


def account(user: MailUser, security: str = "tls", **fields: object) -> Account:
    server = user.server
    port = server.pop3s_port if security == "tls" else server.pop3_port
    values: dict[str, object] = {
        "name": "pop", "protocol": "pop3", "host": server.host, "port": port,
        "security": security, "username": user.name, "password_env": "UNUSED",
        "policy": "p", "timeout": 30, "ca_file": server.ca_file,
        "allow_plaintext": security == "none",
    }
    values.update(fields)
    return Account.model_validate(values)


def connect(user: MailUser, *, readonly: bool = False, security: str = "tls") -> Pop3Session:
    return Pop3Session.connect(account(user, security), user.password, readonly=readonly)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def seed(user: MailUser, count: int, **kw: object) -> list[bytes]:
    return user.seed("INBOX", [SeedMessage(received=NOW - timedelta(days=i), **kw)  # type: ignore[arg-type]
                               for i in range(count)])


@pytest.mark.parametrize("security", ["tls", "starttls", "none"])
def test_connect_capabilities_and_usage(mail_user, security):
    raws = seed(mail_user, 3, size=4000)
    with connect(mail_user, security=security) as s:
        assert {"UIDL", "TOP"} <= s.capabilities()
        assert s.list_folders() == [INBOX]
        usage = s.usage()
    assert usage.usage_bytes == sum(len(r) for r in raws) == 12000
    assert (usage.messages, usage.limit_bytes, usage.source) == (3, None, "sum")


def test_scan_uidl_sizes_and_headers(mail_user):
    raws = mail_user.seed("INBOX", [
        SeedMessage(received=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), message_id="<a@x>"),
        SeedMessage(received=NOW, date_header=None, message_id=None),
        SeedMessage(received=NOW, date_header="the day after tomorrow"),
        SeedMessage(received=NOW, raw=b"Date: Tue, 2 Jan 2024 03:04:05 +0100\r\n"
                    b"Subject: \xff\xfe latin garbage\r\nMessage-ID: <b@x>\r\n\r\nbody\r\n"),
    ])
    with connect(mail_user, readonly=True) as s:
        snap = s.scan(INBOX, with_sent=True)
        bare = s.scan(INBOX, with_sent=False)
    msgs = snap.messages
    assert [m.size for m in msgs] == [len(r) for r in raws]
    assert all(m.ref.folder == "INBOX" and m.ref.uid is None and m.ref.uidvalidity == 0
               for m in msgs)
    assert msgs[0].sent == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert msgs[0].message_id == "<a@x>"
    assert (msgs[1].sent, msgs[1].message_id, msgs[1].date_header) == (None, None, None)
    assert msgs[2].sent is None and msgs[2].date_header == "the day after tomorrow"
    assert msgs[3].sent == datetime(2024, 1, 2, 2, 4, 5, tzinfo=UTC)
    assert msgs[3].message_id == "<b@x>"
    # Without the ledger every message is first seen now: nothing is old.
    assert all(m.received.tzinfo is not None for m in msgs)
    assert all(m.sent is None and m.message_id is None for m in bare.messages)
    assert [m.ref for m in bare.messages] == [m.ref for m in msgs]
    # Dovecot's UIDL is %08Xu%08Xv: the IMAP UID and UIDVALIDITY, so it is stable.
    imap = mail_user.imap_client()
    try:
        info = imap.select_folder("INBOX", readonly=True)
        uids = imap.search("ALL")
    finally:
        imap.logout()
    assert [m.ref.uidl for m in msgs] == [f"{u:08x}{info[b'UIDVALIDITY']:08x}" for u in uids]


def test_retr_bytes_are_identical_to_the_stored_message(mail_user):
    odd = [
        b"From: a@b\r\nSubject: dots\r\n\r\n.\r\n..\r\n.leading\r\n...three\r\nend\r\n",
        b"From: a@b\r\nSubject: long line\r\n\r\n" + b"y" * 200_000 + b"\r\n",
        b"From: a@b\r\nSubject: \xe6\x97\xa5\xe6\x9c\xac\r\n\r\n\x00\x01\xff binary-ish\r\n",
        b"From: a@b\r\nSubject: no final newline\r\n\r\nlast",
    ]
    raws = mail_user.seed("INBOX", [SeedMessage(received=NOW, raw=r) for r in odd])
    raws += seed(mail_user, 3, size=100_000)
    imap_hashes = [m.sha256 for _, m in sorted(mail_user.folder_state()["INBOX"].items())]
    with connect(mail_user) as s:
        snap = s.scan(INBOX, with_sent=False)
        got = dict(s.fetch([m.ref for m in snap.messages]))
    with connect(mail_user, readonly=True) as s:  # TOP n <all>: same bytes
        top = dict(s.fetch([m.ref for m in s.scan(INBOX, with_sent=False).messages]))
    for i, (m, raw) in enumerate(zip(snap.messages, raws, strict=True)):
        if i == 3:
            # A message stored without a final line break comes over POP3 with one
            # (RFC 1939: the terminating dot starts a line); IMAP returns it as stored.
            assert got[m.ref] == raw + b"\r\n"
            continue
        assert sha(got[m.ref]) == sha(raw), i
        assert len(got[m.ref]) == m.size
        if b"\x00" not in raw:  # IMAP BODY[] turns NUL into 0x80; POP3 sends it as stored
            assert sha(raw) == imap_hashes[i], i
        assert top[m.ref] == got[m.ref]


def test_readonly_session_changes_nothing(mail_user):
    seed(mail_user, 4)
    before = mail_user.folder_state()
    s = connect(mail_user, readonly=True)
    snap = s.scan(INBOX, with_sent=True)
    assert len(list(s.fetch([m.ref for m in snap.messages]))) == 4
    with pytest.raises(ProtocolError, match="read-only"):
        s.delete([snap.messages[0].ref])
    s.commit()  # never QUITs a read-only session
    s.close()
    assert mail_user.folder_state() == before  # flags included: no \Seen


def test_delete_commit_removes_exactly_those(mail_user):
    raws = seed(mail_user, 6)
    with connect(mail_user) as s:
        snap = s.scan(INBOX, with_sent=False)
        doomed = [snap.messages[1].ref, snap.messages[4].ref]
        assert s.delete(doomed + doomed[:1]) == set(doomed)
        assert s.delete(doomed[:1]) == set(doomed[:1])  # still pending: idempotent
        assert s.pending == frozenset(doomed)
        assert s.usage().messages == 4  # STAT leaves out the DELE'd messages
        assert len(s.scan(INBOX).messages) == 4  # and so does scan
        s.commit()
        s.close()  # idempotent after commit
    left = {m.sha256 for m in mail_user.folder_state()["INBOX"].values()}
    assert left == {sha(r) for i, r in enumerate(raws) if i not in (1, 4)}
    with connect(mail_user) as s:
        after = s.scan(INBOX, with_sent=False)
        assert {m.ref for m in after.messages} == {m.ref for m in snap.messages} - set(doomed)
        # A ref that is gone is neither fetched nor deleted.
        assert list(s.fetch(doomed)) == []
        assert s.delete(doomed) == set()


def test_close_without_commit_deletes_nothing_and_sets_no_flags(mail_user):
    seed(mail_user, 5)
    before = mail_user.folder_state()
    s = connect(mail_user)
    snap = s.scan(INBOX, with_sent=True)
    refs = [m.ref for m in snap.messages]
    assert len(dict(s.fetch(refs))) == 5  # RETR: Dovecot would set \Seen even on a drop
    s.delete(refs)
    s.close()
    with pytest.raises(ConnectError):
        s.commit()
    assert mail_user.folder_state() == before


def test_refs_are_checked(mail_user):
    seed(mail_user, 1)
    with connect(mail_user) as s:
        with pytest.raises(ProtocolError):
            s.delete([MessageRef("INBOX", 5, 7)])  # an IMAP ref
        with pytest.raises(ProtocolError, match="no folders"):
            s.move([s.scan(INBOX).messages[0].ref], "Archive")
        assert s.delete([MessageRef("INBOX", 0, None, "no-such-uidl")]) == set()
        from retention.errors import FolderSkipped

        with pytest.raises(FolderSkipped):
            s.scan(FolderInfo("Trash"))


def test_wrong_password_is_an_auth_error_without_the_password(mail_user):
    secret = "Wr0ng-Passw0rd-XYZ"
    with pytest.raises(AuthError) as info:
        Pop3Session.connect(account(mail_user), secret, readonly=True)
    assert secret not in str(info.value)
    assert "login rejected" in str(info.value)


def _other_ca(tmp_path: Path) -> Path:
    ca = tmp_path / "other-ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(tmp_path / "k.pem"), "-out", str(ca), "-days", "2",
         "-subj", "/CN=some other CA"],
        check=True, capture_output=True,
    )
    return ca


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_wrong_ca_is_a_tls_error(mail_user, tmp_path, security):
    acct = account(mail_user, security, ca_file=_other_ca(tmp_path))
    with pytest.raises(TlsError, match="certificate verification failed"):
        Pop3Session.connect(acct, mail_user.password, readonly=True)
    # Without ca_file the system store is used, which does not know the test CA either.
    with pytest.raises(TlsError):
        Pop3Session.connect(account(mail_user, security, ca_file=None), mail_user.password,
                            readonly=True)
    # Verification off (explicitly) connects.
    acct = account(mail_user, security, ca_file=None, tls_verify=False)
    Pop3Session.connect(acct, mail_user.password, readonly=True).close()


def test_refused_connection_is_a_connect_error(mail_user):
    acct = account(mail_user, "none", port=1)
    with pytest.raises(ConnectError):
        Pop3Session.connect(acct, mail_user.password, readonly=True)


def _age_pass(user: MailUser, ledger_path: Path, now: datetime, older_than: timedelta,
              *, dry_run: bool = False) -> set[str]:
    """What the runner does for a POP3 age rule: ledger times, then delete + QUIT."""
    ledger = Observations.open(ledger_path)
    try:
        with connect(user, readonly=dry_run) as s:
            snap = s.scan(INBOX, with_sent=False)
            keys = [m.ref.uidl or "" for m in snap.messages]
            seen = ledger.first_seen("pop", "INBOX", 0, keys, now)
            ledger.prune("pop", "INBOX", 0, keys)
            old = [m.ref for m in snap.messages if now - seen[m.ref.uidl or ""] > older_than]
            if dry_run:
                return {r.uidl or "" for r in old}
            removed = s.delete(old)
            s.commit()
            return {r.uidl or "" for r in removed}
    finally:
        ledger.close()


def test_first_seen_ages_messages_across_restarts(mail_user, tmp_path):
    # The messages' own dates are years old: POP3 age is the agent's first sighting.
    mail_user.seed("INBOX", [SeedMessage(received=NOW - timedelta(days=900), date_header=AUTO)
                             for _ in range(3)])
    ledger = tmp_path / "state" / "observations.sqlite3"
    t0 = NOW
    assert _age_pass(mail_user, ledger, t0, timedelta(days=14), dry_run=True) == set()
    assert _age_pass(mail_user, ledger, t0 + timedelta(days=1), timedelta(days=14)) == set()
    mail_user.seed("INBOX", [SeedMessage(received=NOW - timedelta(days=900))])  # arrives day 5
    assert _age_pass(mail_user, ledger, t0 + timedelta(days=5), timedelta(days=14)) == set()
    with connect(mail_user, readonly=True) as s:
        uidls = [m.ref.uidl for m in s.scan(INBOX, with_sent=False).messages]
    # Day 14 + 1 s: exactly the three first seen (by the dry-run) on day 0 go.
    gone = _age_pass(mail_user, ledger, t0 + timedelta(days=14, seconds=1), timedelta(days=14))
    assert gone == set(uidls[:3])
    with connect(mail_user, readonly=True) as s:
        assert [m.ref.uidl for m in s.scan(INBOX, with_sent=False).messages] == uidls[3:]
    # The next pass prunes the deleted UIDLs from the ledger and keeps the fourth.
    assert _age_pass(mail_user, ledger, t0 + timedelta(days=15), timedelta(days=14)) == set()
    with Observations.open(ledger) as led:
        later = t0 + timedelta(days=30)
        assert led.first_seen("pop", "INBOX", 0, [*uidls], later) == {
            uidls[0]: later, uidls[1]: later, uidls[2]: later,
            uidls[3]: t0 + timedelta(days=5),
        }


# --- faults a real server will not produce on demand: tests/integration/faultproxy.py ---------


@pytest.fixture(scope="module")
def _proxy(dovecot):
    from retention.testing.faultproxy import FaultProxy

    # One proxy for the module (every test user lives on the session's server): closing a
    # FaultProxy waits for its accept thread.
    with FaultProxy(dovecot.host, dovecot.pop3_port) as p:
        yield p


@pytest.fixture
def proxy(_proxy, mail_user):
    assert mail_user.server.pop3_port == _proxy.target[1]
    _proxy.reset()
    _proxy.lines.clear()
    yield _proxy
    _proxy.reset()


def via(proxy, user: MailUser, security: str = "none", **fields: object) -> Account:
    return account(user, security, port=proxy.port, **fields)


# The proxy answers an injected reply at once, possibly ahead of the server's replies to
# earlier pipelined commands: tests that inject into a pipelined stream turn PIPELINING off.
CAPA_SERIAL = b"+OK\r\nUSER\r\nUIDL\r\nTOP\r\n.\r\n"


def contents(user: MailUser) -> dict[int, str]:
    """UID -> SHA-256 of INBOX, flags aside: a dropped session keeps RETR's \\Seen (Dovecot
    stores it on disconnect; only RSET, which needs the connection, undoes it)."""
    return {uid: m.sha256 for uid, m in user.folder_state()["INBOX"].items()}


def test_uidl_refused_fails_clearly(mail_user, proxy):
    from retention.testing.faultproxy import pop3_err

    seed(mail_user, 2)
    proxy.reply_on(rb"^UIDL", pop3_err("command not implemented"))
    with Pop3Session.connect(via(proxy, mail_user), mail_user.password, readonly=True) as s:
        with pytest.raises(ProtocolError) as info:
            s.scan(INBOX)
    assert "server does not support UIDL: no safe retention without stable message ids" in str(
        info.value)


def test_connection_dropped_before_quit_deletes_nothing(mail_user, proxy):
    seed(mail_user, 4)
    before = contents(mail_user)
    proxy.drop_on(rb"^QUIT")  # the QUIT never reaches the server
    s = Pop3Session.connect(via(proxy, mail_user), mail_user.password, readonly=False)
    snap = s.scan(INBOX, with_sent=False)
    assert len(dict(s.fetch([m.ref for m in snap.messages]))) == 4
    s.delete([m.ref for m in snap.messages])
    with pytest.raises(ConnectError, match="not confirmed"):
        s.commit()
    s.close()
    assert contents(mail_user) == before


def test_connection_dropped_mid_retr_and_after_dele_deletes_nothing(mail_user, proxy):
    seed(mail_user, 4, size=50_000)
    before = contents(mail_user)
    proxy.drop_on(rb"^RETR 2", after_reply_bytes=20_000)
    s = Pop3Session.connect(via(proxy, mail_user), mail_user.password, readonly=False)
    refs = [m.ref for m in s.scan(INBOX, with_sent=False).messages]
    s.delete(refs[:1])
    with pytest.raises(ConnectError, match="connection lost"):
        dict(s.fetch(refs))
    with pytest.raises(ConnectError, match="none of the 1 deletion"):
        s.commit()
    proxy.drop_on(rb"^DELE 3")
    s = Pop3Session.connect(via(proxy, mail_user), mail_user.password, readonly=False)
    refs = [m.ref for m in s.scan(INBOX, with_sent=False).messages]
    with pytest.raises(ConnectError):
        s.delete(refs)
    s.close()
    assert contents(mail_user) == before


def test_reply_cut_during_quit_is_not_confirmed(mail_user, proxy):
    """QUIT reached the server but its answer did not reach us: outcome unknown."""
    seed(mail_user, 3)
    proxy.drop_on(rb"^QUIT", after_reply_bytes=1)
    s = Pop3Session.connect(via(proxy, mail_user), mail_user.password, readonly=False)
    refs = [m.ref for m in s.scan(INBOX, with_sent=False).messages]
    s.delete(refs[:2])
    with pytest.raises(ConnectError, match="not confirmed"):
        s.commit()
    # The next session's listing tells what happened (here: the server did commit).
    with connect(mail_user, readonly=True) as s2:
        assert [m.ref for m in s2.scan(INBOX, with_sent=False).messages] == refs[2:]


def test_dele_or_quit_refused_commits_nothing(mail_user, proxy):
    from retention.testing.faultproxy import pop3_err

    seed(mail_user, 3)
    before = mail_user.folder_state()
    proxy.reply_on(rb"^CAPA", CAPA_SERIAL, times=2)
    proxy.reply_on(rb"^DELE 2", pop3_err("no"))
    s = Pop3Session.connect(via(proxy, mail_user), mail_user.password, readonly=False)
    refs = [m.ref for m in s.scan(INBOX, with_sent=False).messages]
    with pytest.raises(ProtocolError, match="nothing committed"):
        s.delete(refs)
    s.close()
    proxy.reply_on(rb"^QUIT", pop3_err("some deleted messages not removed"))
    s = Pop3Session.connect(via(proxy, mail_user), mail_user.password, readonly=False)
    s.delete([m.ref for m in s.scan(INBOX, with_sent=False).messages])
    with pytest.raises(ProtocolError, match="not confirmed"):
        s.commit()
    assert mail_user.folder_state() == before
    assert proxy.sent(rb"^RSET")  # close() un-marked before dropping


def test_starttls_never_falls_back_to_plaintext(mail_user, proxy):
    from retention.testing.faultproxy import pop3_err

    proxy.reply_on(rb"^CAPA", b"+OK\r\nUSER\r\nUIDL\r\nTOP\r\n.\r\n")  # STLS not offered
    with pytest.raises(TlsError, match="STLS"):
        Pop3Session.connect(via(proxy, mail_user, "starttls"), mail_user.password, readonly=True)
    proxy.reply_on(rb"^STLS", pop3_err("not now"))  # offered, then refused
    with pytest.raises(TlsError, match="STLS"):
        Pop3Session.connect(via(proxy, mail_user, "starttls"), mail_user.password, readonly=True)
    proxy.reply_on(rb"^CAPA", pop3_err("unknown command"))  # no CAPA at all
    with pytest.raises(TlsError):
        Pop3Session.connect(via(proxy, mail_user, "starttls"), mail_user.password, readonly=True)
    assert proxy.sent(rb"^(USER|PASS|AUTH)") == []


def test_starttls_through_the_proxy_verifies(mail_user, proxy):
    seed(mail_user, 1)
    acct = via(proxy, mail_user, "starttls")
    with Pop3Session.connect(acct, mail_user.password, readonly=True) as s:
        assert len(s.scan(INBOX).messages) == 1
    assert proxy.sent(rb"^STLS")
    assert proxy.sent(rb"^(USER|PASS)") == []  # credentials only inside TLS


def test_login_without_user_command_uses_sasl_plain(mail_user, proxy):
    seed(mail_user, 1)
    proxy.reply_on(rb"^CAPA", b"+OK\r\nSASL PLAIN\r\nUIDL\r\nTOP\r\n.\r\n", times=None)
    with Pop3Session.connect(via(proxy, mail_user), mail_user.password, readonly=True) as s:
        assert len(s.scan(INBOX).messages) == 1
    assert proxy.sent(rb"^AUTH PLAIN ") and proxy.sent(rb"^USER") == []
    with pytest.raises(AuthError):
        Pop3Session.connect(via(proxy, mail_user), "wrong", readonly=True)


def test_mailbox_in_use_is_retryable(mail_user, proxy):
    proxy.reply_on(rb"^PASS", b"-ERR [IN-USE] Mailbox locked by another session\r\n")
    with pytest.raises(ConnectError, match="IN-USE") as info:
        Pop3Session.connect(via(proxy, mail_user), mail_user.password, readonly=True)
    assert info.value.retryable
    assert mail_user.password not in str(info.value)


def test_a_server_echoing_the_password_does_not_leak_it(mail_user, proxy):
    echo = b"-ERR [AUTH] bad password " + mail_user.password.encode() + b"\r\n"
    proxy.reply_on(rb"^PASS", echo)
    with pytest.raises(AuthError) as info:
        Pop3Session.connect(via(proxy, mail_user), mail_user.password, readonly=True)
    assert mail_user.password not in str(info.value) and "***" in str(info.value)


def test_pipelined_retr_is_bounded_by_bytes_and_exact(mail_user, proxy, monkeypatch):
    import retention.adapters.pop3 as pop3

    # two 20 kB messages per batch
    monkeypatch.setattr(pop3.Limits, "batch_bytes", classmethod(lambda _cls: 45_000))
    raws = seed(mail_user, 7, size=20_000)
    with Pop3Session.connect(via(proxy, mail_user), mail_user.password, readonly=False) as s:
        assert "PIPELINING" in s.capabilities()
        refs = [m.ref for m in s.scan(INBOX, with_sent=False).messages]
        got = list(s.fetch(list(reversed(refs))))
    assert [ref for ref, _ in got] == list(reversed(refs))
    assert [sha(b) for _, b in got] == [sha(r) for r in reversed(raws)]
    assert len(proxy.sent(rb"^RETR")) == 7


def test_message_ids_read_with_top_for_the_given_refs_only(mail_user, proxy):
    mail_user.seed("INBOX", [
        SeedMessage(received=NOW, message_id="<a@x>"),
        SeedMessage(received=NOW, message_id=None),
        SeedMessage(received=NOW, message_id="<c@x>"),
    ])
    before = mail_user.folder_state()
    with Pop3Session.connect(via(proxy, mail_user), mail_user.password, readonly=True) as s:
        refs = [m.ref for m in s.scan(INBOX, with_sent=False).messages]
        assert proxy.sent(rb"^TOP") == []
        unknown = MessageRef("INBOX", 0, None, "no-such-uidl")
        ids = s.message_ids([refs[2], refs[1], unknown])
        assert ids == {refs[2]: "<c@x>", refs[1]: None, unknown: None}
        assert s.message_ids([]) == {}
    assert [bytes(line).strip() for line in proxy.sent(rb"^TOP")] == [b"TOP 2 0", b"TOP 3 0"]
    assert mail_user.folder_state() == before


def test_without_top_sent_is_none(mail_user, proxy):
    from retention.testing.faultproxy import pop3_err

    seed(mail_user, 3)
    proxy.reply_on(rb"^CAPA", CAPA_SERIAL, times=2)
    proxy.reply_on(rb"^TOP 2 0", pop3_err("no"))
    with Pop3Session.connect(via(proxy, mail_user), mail_user.password, readonly=True) as s:
        sent = [m.sent for m in s.scan(INBOX, with_sent=True).messages]
    assert sent[0] is not None and sent[1] is None and sent[2] is not None
    proxy.reply_on(rb"^CAPA", b"+OK\r\nUSER\r\nUIDL\r\n.\r\n", times=None)  # no TOP
    proxy.lines.clear()
    with Pop3Session.connect(via(proxy, mail_user), mail_user.password, readonly=True) as s:
        assert all(m.sent is None for m in s.scan(INBOX, with_sent=True).messages)
        with pytest.raises(ProtocolError, match="no TOP"):
            list(s.fetch([m.ref for m in s.scan(INBOX).messages]))  # read-only needs TOP
    assert proxy.sent(rb"^TOP") == []


def test_expire_zero_server_is_read_with_top_not_retr(mail_user, proxy):
    """EXPIRE 0 (RFC 2449): a RETR'd message may be expired at QUIT, archived or not."""
    raws = seed(mail_user, 2)
    proxy.reply_on(rb"^CAPA", b"+OK\r\nUSER\r\nUIDL\r\nTOP\r\nEXPIRE 0\r\n.\r\n", times=None)
    with Pop3Session.connect(via(proxy, mail_user), mail_user.password, readonly=False) as s:
        got = [b for _, b in s.fetch([m.ref for m in s.scan(INBOX).messages])]
    assert [sha(b) for b in got] == [sha(r) for r in raws]
    assert proxy.sent(rb"^RETR") == [] and len(proxy.sent(rb"^TOP \d+ 999999999")) == 2
