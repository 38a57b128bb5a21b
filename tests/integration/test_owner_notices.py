"""Notices to the mailbox owner on a real Dovecot (and a real SMTP server, aiosmtpd).

* A warning notice appears in INBOX once when usage crosses ``warn_above``, not again on
  the next run, and again after usage dropped below and crossed again.
* A mailbox over quota refuses the APPEND (``NO [OVERQUOTA]``): the notice goes by SMTP
  (STARTTLS, verified against the test CA) and the report says so.
* The archive summary after a run lists exactly what the run's report lists.
* A dry-run sends nothing and shows what it would send.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from typing import Any

import pytest

from retention.testing.dovecot import MailUser, SeedMessage
from retention.testing.smtp import SmtpSink
from tests.integration.helpers import PolicyFile, ago

KiB = 1024


def notices_in_inbox(user: MailUser) -> list[email.message.EmailMessage]:
    client = user.imap_client()
    try:
        client.select_folder("INBOX", readonly=True)
        uids = client.search(["HEADER", "X-Retention-Notice", ""])
        fetched = client.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
    finally:
        client.logout()
    return [email.message_from_bytes(d[b"BODY[]"], policy=email.policy.default)  # type: ignore[misc]
            for _, d in sorted(fetched.items())]


def policy(**notify: Any) -> dict[str, Any]:
    return {"p": {"protect": [], "quota": {"warn_above": "80%", "clean_above": "95%",
                                           "clean_to": "90%"},
                  "rules": [], "notify": {"delivery": "append", **notify}}}


@pytest.fixture
def smtp(mail_user: MailUser) -> Iterator[SmtpSink]:
    d = mail_user.server.directory
    with SmtpSink(tls_cert=d / "server.crt", tls_key=d / "server.key",
                  require_starttls=True) as sink:
        yield sink


def smtp_settings(sink: SmtpSink, user: MailUser) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": sink.port, "security": "starttls",
            "ca_file": str(user.server.ca_file), "from": "Postmaster <postmaster@example.org>",
            "to": "$username@example.org"}


def fill(user: MailUser, tag: str, count: int, size: int) -> list[bytes]:
    return user.seed_via_imap("INBOX", [SeedMessage(received=ago(days=3), size=size,
                                                    subject=f"{tag}{i}") for i in range(count)])


def delete_subject(user: MailUser, prefix: str) -> None:
    client = user.imap_client()
    try:
        client.select_folder("INBOX")
        uids = client.search(["SUBJECT", prefix])
        client.delete_messages(uids)
        client.uid_expunge(uids)
    finally:
        client.logout()


@pytest.mark.parametrize("mail_user", [200 * KiB], indirect=True)
def test_warning_once_per_crossing(tmp_path: Any, mail_user: MailUser) -> None:
    pf = PolicyFile(tmp_path, policy())
    pf.add_imap(mail_user)
    fill(mail_user, "fill-a", 10, 17 * KiB)  # 170 KiB of 200: 85%

    dry = pf.run(dry_run=True)
    assert dry.code == 0, dry
    (shown,) = dry.report["accounts"][0]["notices"]
    assert shown["kind"] == "warning" and shown["status"] == "would_send"
    assert "85%" in shown["subject"]
    assert notices_in_inbox(mail_user) == []  # a dry-run sends nothing

    first = pf.run()
    assert first.code == 0, first
    (sent,) = first.report["accounts"][0]["notices"]
    assert (sent["status"], sent["channel"]) == ("sent", "append"), sent
    (notice,) = notices_in_inbox(mail_user)
    assert "is 85% full" in str(notice["Subject"])
    assert "80%" in notice.get_content()

    again = pf.run()
    assert again.code == 0 and again.report["accounts"][0]["notices"] == [], again
    assert len(notices_in_inbox(mail_user)) == 1

    delete_subject(mail_user, "fill-a")  # well below 80% now
    below = pf.run()
    assert below.report["accounts"][0]["notices"] == [], below
    fill(mail_user, "fill-b", 10, 17 * KiB)  # and above again
    crossed = pf.run()
    (sent,) = crossed.report["accounts"][0]["notices"]
    assert sent["status"] == "sent", crossed
    assert len(notices_in_inbox(mail_user)) == 2


@pytest.mark.parametrize("mail_user", [200 * KiB], indirect=True)
def test_over_quota_falls_back_to_smtp(tmp_path: Any, mail_user: MailUser,
                                       smtp: SmtpSink) -> None:
    pf = PolicyFile(tmp_path, policy(language="ja", smtp=smtp_settings(smtp, mail_user)))
    pf.add_imap(mail_user)
    mail_user.seed("INBOX", [SeedMessage(received=ago(days=3), size=25 * KiB)
                             for _ in range(9)], recalc_quota=True)  # 225 KiB of 200
    result = pf.run()
    assert result.code == 0, result
    (sent,) = result.report["accounts"][0]["notices"]
    assert sent["status"] == "sent" and sent["channel"] == "smtp-fallback", sent
    assert "OVERQUOTA" in sent["detail"], sent
    assert notices_in_inbox(mail_user) == []
    (got,) = smtp.messages
    assert got.recipients == (f"{mail_user.name}@example.org",)
    msg = email.message_from_bytes(got.data, policy=email.policy.default)
    assert "使用量" in str(msg["Subject"])  # the account's language
    assert msg["Message-ID"] and msg["Auto-Submitted"] == "auto-generated"

    assert pf.run().report["accounts"][0]["notices"] == []  # once per crossing
    assert len(smtp.messages) == 1


@pytest.mark.parametrize("mail_user", [10 * 1024 * KiB], indirect=True)
def test_archive_summary_lists_what_the_report_lists(tmp_path: Any, mail_user: MailUser) -> None:
    pol = {"p": {"protect": [], "rules": [
        {"name": "old-inbox", "folders": ["INBOX"], "older_than": "365d",
         "action": {"archive": "vault"}},
        {"name": "old-trash", "folders": ["\\Trash"], "older_than": "30d", "age_by": "received",
         "action": "delete"}],
        "notify": {"warn": False, "restore_contact": "help@example.org"}}}
    pf = PolicyFile(tmp_path, pol, extra={"archives": {"vault": {
        "type": "mbox", "path": str(tmp_path / "arch/{account}/{folder}.mbox")}}})
    pf.add_imap(mail_user)
    mail_user.seed("INBOX", [SeedMessage(received=ago(days=400 + i), size=3000)
                             for i in range(3)])
    mail_user.seed("INBOX", [SeedMessage(received=ago(days=2))])
    mail_user.seed("Trash", [SeedMessage(received=ago(days=90), size=2000) for _ in range(2)])
    dry = pf.run(dry_run=True)
    (would,) = dry.report["accounts"][0]["notices"]
    assert would["status"] == "would_send"
    result = pf.run()
    assert result.code == 0, result
    acct = result.report["accounts"][0]
    (sent,) = acct["notices"]
    assert sent["status"] == "sent" and sent["kind"] == "archived", sent
    # The dry-run showed the same lines (only where the copies are is known after a run).
    items = [line for line in sent["body"].splitlines() if line.startswith("  - ")]
    assert items and items == [line for line in would["body"].splitlines()
                               if line.startswith("  - ")]
    done = [a for a in acct["actions"] if a["result"] == "done"]
    assert len(done) == 5
    (notice,) = notices_in_inbox(mail_user)
    body = notice.get_content().replace("\r\n", "\n")
    assert f"removed\n{len(done)} messages" in body
    for rule in {a["rule"] for a in done}:
        rows = [a for a in done if a["rule"] == rule]
        folder = rows[0]["folder"]
        assert f'{len(rows)} messages' in body and f'rule "{rule}"' in body
        assert f"from {folder}" in body
    for where in {a["detail"] for a in done if a["action"] == "archive"}:
        assert where in body
    assert acct["run_id"] in body and "help@example.org" in body
    assert "retention restore" in body


class Crash(BaseException):
    """Stands for the process dying: nothing of the agent catches it."""


@pytest.mark.parametrize("mail_user", [200 * KiB], indirect=True)
def test_a_crash_after_the_append_never_sends_the_notice_twice(
    tmp_path: Any, mail_user: MailUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retention.adapters.imap.session import ImapSession
    from retention.run.account import run_account
    from tests.integration.helpers import patched_env

    pf = PolicyFile(tmp_path, policy())
    name = pf.add_imap(mail_user)
    fill(mail_user, "fill-a", 10, 17 * KiB)
    real_append = ImapSession.append

    def append_then_die(self: Any, *args: Any, **kw: Any) -> Any:
        real_append(self, *args, **kw)
        raise Crash

    monkeypatch.setattr(ImapSession, "append", append_then_die)
    config = pf.load()
    with patched_env(pf.env), pytest.raises(Crash):
        run_account(config, config.account(name), dry_run=False)
    monkeypatch.setattr(ImapSession, "append", real_append)
    assert len(notices_in_inbox(mail_user)) == 1  # appended, but never journalled as sent

    after = pf.run()
    assert after.code == 0, after
    (finished,) = after.account(name)["notices"]
    assert finished["status"] == "sent" and "already in INBOX" in finished["detail"], finished
    assert len(notices_in_inbox(mail_user)) == 1
    assert pf.run().account(name)["notices"] == []


@pytest.mark.parametrize("mail_user", [200 * KiB], indirect=True)
def test_a_relay_that_refuses_for_now_gets_the_notice_on_a_later_run(
    tmp_path: Any, mail_user: MailUser, smtp: SmtpSink
) -> None:
    """Over quota (APPEND refused) and the relay answers 451: nothing can have arrived, so
    the notice is kept for the next run, which delivers it once."""
    pf = PolicyFile(tmp_path, policy(smtp=smtp_settings(smtp, mail_user)))
    pf.add_imap(mail_user)
    mail_user.seed("INBOX", [SeedMessage(received=ago(days=3), size=25 * KiB)
                             for _ in range(9)], recalc_quota=True)
    smtp.refuse = "451 4.3.0 try again later"
    first = pf.run()
    assert first.code == 0, first
    (held,) = first.report["accounts"][0]["notices"]
    assert held["status"] == "will_retry" and "451" in held["detail"], held
    assert smtp.messages == []

    smtp.refuse = None
    second = pf.run()
    (sent,) = second.report["accounts"][0]["notices"]
    assert sent["status"] == "sent" and sent["channel"] == "smtp-fallback", sent
    assert len(smtp.messages) == 1
    assert pf.run().report["accounts"][0]["notices"] == []
    assert len(smtp.messages) == 1


@pytest.mark.parametrize("mail_user", [200 * KiB], indirect=True)
def test_a_connection_lost_during_data_is_never_sent_again(
    tmp_path: Any, mail_user: MailUser, smtp: SmtpSink
) -> None:
    pf = PolicyFile(tmp_path, policy(smtp=smtp_settings(smtp, mail_user)))
    pf.add_imap(mail_user)
    mail_user.seed("INBOX", [SeedMessage(received=ago(days=3), size=25 * KiB)
                             for _ in range(9)], recalc_quota=True)
    smtp.drop_in_data = True
    first = pf.run()
    (lost,) = first.report["accounts"][0]["notices"]
    assert lost["status"] == "unknown" and "may have been delivered" in lost["detail"], lost
    smtp.drop_in_data = False
    assert pf.run().report["accounts"][0]["notices"] == []
    assert len(smtp.messages) == 1  # the relay's copy, never a second one


@pytest.mark.parametrize("mail_user", [200 * KiB], indirect=True)
def test_smtp_with_implicit_tls(tmp_path: Any, mail_user: MailUser) -> None:
    """``security: tls`` (port 465 style), verified against the test CA."""
    d = mail_user.server.directory
    with SmtpSink(tls_cert=d / "server.crt", tls_key=d / "server.key",
                  implicit_tls=True) as sink:
        settings = {**smtp_settings(sink, mail_user), "security": "tls"}
        pf = PolicyFile(tmp_path, policy(delivery="smtp", smtp=settings))
        pf.add_imap(mail_user)
        mail_user.seed("INBOX", [SeedMessage(received=ago(days=3), size=25 * KiB)
                                 for _ in range(7)], recalc_quota=True)
        result = pf.run()
        (sent,) = result.report["accounts"][0]["notices"]
        assert sent["status"] == "sent" and sent["channel"] == "smtp", sent
        assert len(sink.messages) == 1
