"""Proof that the Dovecot test rig (tests/dovecot.py) is what the other tests assume."""

from __future__ import annotations

import hashlib
import poplib
import re
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from retention.testing.dovecot import Dovecot, MailUser, SeedMessage

MiB = 1024 * 1024
T0 = datetime(2021, 3, 4, 5, 6, 7, tzinfo=UTC)


def test_plaintext_login_and_capabilities(imap: IMAPClient) -> None:
    caps = set(imap.capabilities())
    for cap in (b"UIDPLUS", b"MOVE", b"QUOTA", b"SPECIAL-USE", b"LIST-STATUS", b"STATUS=SIZE"):
        assert cap in caps
    assert imap.normalise_times is False


def test_imaps_verifies_against_generated_ca(dovecot: Dovecot, mail_user: MailUser) -> None:
    client = mail_user.imap_client(ssl=True)
    try:
        assert client.socket().version() in ("TLSv1.2", "TLSv1.3")
        assert client.noop()
    finally:
        client.logout()
    # The system trust store does not know our CA: verification really happens.
    with pytest.raises(ssl.SSLCertVerificationError):
        IMAPClient(dovecot.host, port=dovecot.imaps_port, ssl=True,
                   ssl_context=ssl.create_default_context(), timeout=10)


def test_certificate_matches_localhost_name(dovecot: Dovecot, mail_user: MailUser) -> None:
    client = IMAPClient("localhost", port=dovecot.imaps_port, ssl=True,
                        ssl_context=dovecot.ssl_context(), timeout=10)
    try:
        client.login(mail_user.name, mail_user.password)
    finally:
        client.logout()


def test_starttls(dovecot: Dovecot, mail_user: MailUser) -> None:
    plain = IMAPClient(dovecot.host, port=dovecot.imap_port, ssl=False, timeout=10)
    try:
        assert b"STARTTLS" in plain.capabilities()
    finally:
        plain.shutdown()
    client = mail_user.imap_client(starttls=True)
    try:
        assert isinstance(client.socket(), ssl.SSLSocket)
        assert client.noop()
    finally:
        client.logout()


def test_wrong_password_fails_fast_repeatedly(mail_user: MailUser) -> None:
    # Dovecot's auth penalty would make later failures take seconds; it is off.
    for _ in range(4):
        started = time.monotonic()
        with pytest.raises(LoginError):
            mail_user.server.imap_client(mail_user.name, "wrong-password")
        assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("mail_user", [7 * MiB], indirect=True)
def test_getquotaroot_reports_per_user_limit(mail_user: MailUser, imap: IMAPClient) -> None:
    roots, quotas = imap.get_quota_root("INBOX")
    assert roots.quota_roots
    storage = [q for q in quotas if q.resource == "STORAGE"]
    assert len(storage) == 1
    assert storage[0].limit == 7 * 1024  # KiB
    assert storage[0].usage == 0
    assert mail_user.usage() == (0, 7 * MiB)


@pytest.mark.parametrize("mail_user", [None], indirect=True)
def test_user_without_limit(mail_user: MailUser, imap: IMAPClient) -> None:
    # Dovecot answers "OK No quota" with no untagged QUOTAROOT at all, which
    # imapclient 3.1's get_quota_root() cannot parse (IndexError): use imaplib.
    typ, data = imap._imap.getquotaroot("INBOX")
    assert typ == "OK"
    assert data == [[None], [None]]
    assert mail_user.usage()[1] is None


def test_set_quota_changes_limit_for_new_sessions(mail_user: MailUser) -> None:
    mail_user.set_quota(3 * MiB)
    client = mail_user.imap_client()
    try:
        _roots, quotas = client.get_quota_root("INBOX")
    finally:
        client.logout()
    assert [q.limit for q in quotas if q.resource == "STORAGE"] == [3 * 1024]


def test_over_quota_append_is_refused(make_user: Callable[..., MailUser]) -> None:
    user = make_user(64 * 1024, server=None)
    user.seed("INBOX", [SeedMessage(received=T0, size=60 * 1024)])
    with pytest.raises(Exception, match=r"(?i)quota"):
        user.seed_via_imap("INBOX", [SeedMessage(received=T0, size=30 * 1024)])


def test_special_use_folders_in_list(imap: IMAPClient) -> None:
    found = {}
    for flags, delimiter, name in imap.list_folders():
        assert delimiter == b"/"
        for flag in flags:
            if flag in (b"\\Trash", b"\\Junk", b"\\Sent", b"\\Archive", b"\\Drafts"):
                found[flag] = name
    assert found == {
        b"\\Trash": "Trash",
        b"\\Junk": "Junk",
        b"\\Sent": "Sent",
        b"\\Archive": "Archive",
        b"\\Drafts": "Drafts",
    }
    # auto = subscribe
    assert {name for _f, _d, name in imap.list_sub_folders()} >= set(found.values())


def test_japanese_trash_folder(dovecot_factory: Callable[..., Dovecot]) -> None:
    server = dovecot_factory(trash_name="ゴミ箱")
    user = server.add_user("taro", quota_bytes=10 * MiB)
    raws = user.seed("ゴミ箱", [SeedMessage(received=T0, subject="件名テスト")] * 3)
    # On disk the name is modified UTF-7, as maildir++ stores it.
    assert server.folder_path("taro", "ゴミ箱").name == ".&MLQw33ux-"
    client = user.imap_client()
    try:
        trash = [name for flags, _d, name in client.list_folders() if b"\\Trash" in flags]
        assert trash == ["ゴミ箱"]
        assert client.select_folder("ゴミ箱", readonly=True)[b"EXISTS"] == 3
        client.create_folder("アーカイブ/2020年")
    finally:
        client.logout()
    user.seed("アーカイブ/2020年", [SeedMessage(received=T0)])
    state = user.folder_state()
    assert len(state["ゴミ箱"]) == 3
    assert len(state["アーカイブ/2020年"]) == 1
    assert {m.sha256 for m in state["ゴミ箱"].values()} == {
        hashlib.sha256(raw).hexdigest() for raw in raws
    }


def fetch_all(imap: IMAPClient, items: list[str]) -> dict[int, dict[bytes, Any]]:
    """Every message of the selected folder. imapclient 4 keeps only the ids it was given
    (a range such as "1:*" is refused), so the UIDs are searched first, then fetched in
    batches short enough for any server's command-line limit."""
    uids = imap.search("ALL")
    fetched: dict[int, dict[bytes, Any]] = {}
    for start in range(0, len(uids), 2000):
        fetched.update(imap.fetch(uids[start:start + 2000], items))
    return fetched


def test_seed_20000_messages(mail_user: MailUser, imap: IMAPClient) -> None:
    messages = [
        SeedMessage(
            received=T0 + timedelta(minutes=7 * i),
            size=512 + i % 700,
            flags={"\\Seen"} if i % 3 else set(),
        )
        for i in range(20_000)
    ]
    raws = mail_user.seed("Archive/2021", messages)  # its speed: bench/, never a test

    imap.select_folder("Archive/2021", readonly=True)
    fetched = fetch_all(imap, ["INTERNALDATE", "FLAGS", "RFC822.SIZE"])
    assert len(fetched) == 20_000
    for index, uid in enumerate(sorted(fetched)):  # UIDs follow the seeding order
        data, msg = fetched[uid], messages[index]
        assert data[b"INTERNALDATE"] == msg.received
        assert data[b"RFC822.SIZE"] == len(raws[index]) == msg.size
        assert (b"\\Seen" in data[b"FLAGS"]) == bool(msg.flags)
    used, limit = mail_user.usage()
    assert limit == 50 * MiB
    assert abs(used - sum(len(r) for r in raws)) < 1024


def test_seed_message_variants(mail_user: MailUser, imap: IMAPClient) -> None:
    jst = timezone(timedelta(hours=9))
    messages = [
        SeedMessage(received=T0, date_header=None, message_id=None),
        SeedMessage(received=T0, date_header="not a date at all"),
        SeedMessage(received=datetime(2019, 1, 1, 12, 0, tzinfo=jst),
                    flags={"F", "\\Answered", "\\Draft", "\\Deleted"}),
        SeedMessage(received=T0, raw=b"Subject: \xff\xfe latin-1 \xe9\r\n\r\nbody\r\n"),
        SeedMessage(received=T0, body="日本語の本文\n".encode(), subject="件名"),
        SeedMessage(received=T0, size=100_000, extra_headers=[("List-Id", "<x.example>")]),
    ]
    raws = mail_user.seed("INBOX", messages)
    assert b"\r\nDate:" not in raws[0] and b"Message-ID" not in raws[0]
    assert b"Date: not a date at all\r\n" in raws[1]
    assert len(raws[5]) == 100_000
    assert all(b"\n" not in r.replace(b"\r\n", b"") for r in raws)

    imap.select_folder("INBOX", readonly=True)
    fetched = fetch_all(imap, ["BODY.PEEK[]", "INTERNALDATE", "FLAGS"])
    bodies = [fetched[uid][b"BODY[]"] for uid in sorted(fetched)]
    assert bodies == raws
    third = fetched[sorted(fetched)[2]]
    assert third[b"INTERNALDATE"] == messages[2].received
    assert set(third[b"FLAGS"]) >= {b"\\Flagged", b"\\Answered", b"\\Draft", b"\\Deleted"}


def test_seed_via_imap_and_folder_state(mail_user: MailUser) -> None:
    messages = [
        SeedMessage(received=T0 - timedelta(days=400), flags={"\\Seen", "$Important"}),
        SeedMessage(received=T0, flags={"\\Flagged"}),
    ]
    raws = mail_user.seed_via_imap("Projects/Old", messages)
    state = mail_user.folder_state()
    folder = state["Projects/Old"]
    assert [m.sha256 for _uid, m in sorted(folder.items())] == [
        hashlib.sha256(r).hexdigest() for r in raws
    ]
    assert [m.internaldate for _uid, m in sorted(folder.items())] == [
        m.received for m in messages
    ]
    assert folder[min(folder)].flags == {"\\Seen", "$Important"}
    # folder_state is read-only: \Seen was not set, \Recent is not reported.
    assert mail_user.folder_state() == state
    assert folder[max(folder)].flags == {"\\Flagged"}


def test_pop3_login_stat_uidl(dovecot: Dovecot, mail_user: MailUser) -> None:
    raws = mail_user.seed("INBOX", [SeedMessage(received=T0, size=1000 + i) for i in range(3)])
    for pop in (
        poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=10),
        poplib.POP3_SSL(dovecot.host, dovecot.pop3s_port, context=dovecot.ssl_context(),
                        timeout=10),
    ):
        try:
            pop.user(mail_user.name)
            pop.pass_(mail_user.password)
            count, size = pop.stat()
            assert count == 3
            assert size == sum(len(r) for r in raws)
            _resp, lines, _octets = pop.uidl()
            uidls = [line.split()[1].decode() for line in lines]
            # %08Xu%08Xv: UID then UIDVALIDITY, 8 hex digits each (Dovecot's are lower case)
            assert all(re.fullmatch(r"[0-9a-f]{16}", u) for u in uidls)
            assert len(set(uidls)) == 3
        finally:
            pop.quit()
    stls = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=10)
    try:
        stls.stls(dovecot.ssl_context())
        stls.user(mail_user.name)
        stls.pass_(mail_user.password)
        assert stls.stat()[0] == 3
    finally:
        stls.quit()


def test_quota_off_instance(dovecot_noquota: Dovecot, make_user: Callable[..., MailUser]) -> None:
    user = make_user(quota=False)
    assert user.server is dovecot_noquota
    raws = user.seed("INBOX", [SeedMessage(received=T0, size=5000)] * 2)
    client = user.imap_client()
    try:
        caps = set(client.capabilities())
        assert b"QUOTA" not in caps
        assert b"UIDPLUS" in caps and b"MOVE" in caps
    finally:
        client.logout()
    assert user.usage() == (sum(len(r) for r in raws), None)


def test_instances_are_independent(dovecot: Dovecot, dovecot_noquota: Dovecot) -> None:
    ports = {dovecot.imap_port, dovecot.imaps_port, dovecot.pop3_port, dovecot.pop3s_port,
             dovecot_noquota.imap_port, dovecot_noquota.imaps_port,
             dovecot_noquota.pop3_port, dovecot_noquota.pop3s_port}
    assert len(ports) == 8 and min(ports) > 1024
    assert dovecot.directory != dovecot_noquota.directory
    assert dovecot.log_path.exists()
    assert "starting up" in dovecot.log_path.read_text()


@pytest.mark.usefixtures("require_dovecot")
def test_stop_cleans_up() -> None:
    server = Dovecot()
    with server:
        directory = server.directory
        assert server.running
        user = server.add_user("short-lived")
        assert user.imap_client().noop()
    assert not server.running
    assert not directory.exists()
