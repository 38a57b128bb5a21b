"""STARTTLS is a clean start (review F1): nothing said before TLS is used after it.

An on-path attacker cannot read or change the TLS session, but it can add lines to the
plaintext greeting. The fault proxy adds a ``\\Junk`` INBOX, an absurd QUOTA and a fake
CAPABILITY right after Dovecot's greeting; the run must plan exactly what it plans
without them (nothing here), see the real quota and the real capabilities.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from retention.adapters.imap import ImapSession
from retention.run.account import run_account
from retention.testing.dovecot import MailUser, SeedMessage
from retention.testing.faultproxy import FaultProxy
from tests.integration.helpers import PolicyFile, ago, patched_env

NOW = datetime.now(UTC).replace(microsecond=0)

INJECTED = (
    b'* LIST (\\HasNoChildren \\Junk) "/" INBOX\r\n'
    b'* LIST (\\HasNoChildren \\Trash) "/" INBOX\r\n'
    b'* QUOTA "" (STORAGE 999999 1000 MESSAGE 1000000 2000000)\r\n'
    b"* CAPABILITY IMAP4rev1 STARTTLS X-INJECTED QUOTA UIDPLUS MOVE\r\n"
)

# isp.yaml-style rules: Junk and Trash emptied after a while, clean-up when full.
ISP = {"p": {"protect": ["flagged"], "rules": [
    {"name": "junk-30d", "folders": ["\\Junk", "\\Trash"], "older_than": "2d",
     "action": "delete"},
    {"name": "junk-when-full", "folders": ["\\Junk"], "when": "over_quota",
     "action": "delete"},
]}}


def _starttls_via(pf: PolicyFile, user: MailUser, proxy: FaultProxy) -> None:
    pf.add_imap(user, security="starttls", port=proxy.port, host="127.0.0.1")


def test_lines_injected_before_starttls_change_nothing(
    mail_user: MailUser, tmp_path: Path
) -> None:
    mail_user.seed("INBOX", [SeedMessage(received=ago(days=40 + i), flags={"\\Seen"})
                             for i in range(5)])
    with FaultProxy(mail_user.server.host, mail_user.server.imap_port) as proxy:
        proxy.replace_down(b" ready.\r\n", b" ready.\r\n" + INJECTED)
        pf = PolicyFile(tmp_path, ISP)
        _starttls_via(pf, mail_user, proxy)
        config = pf.load()
        with patched_env(pf.env):
            result: Any = run_account(config, config.accounts[0], dry_run=False, now=NOW,
                                      sleep=lambda _s: None)
        assert proxy.sent(rb"STARTTLS"), "the proxy did not see a STARTTLS session"
    assert result.status == "ok", result.error
    assert not result.results, [(r.action.rule, r.result) for r in result.results]
    assert len(mail_user.folder_state()["INBOX"]) == 5
    assert result.limit_bytes == mail_user.quota_bytes, "the injected QUOTA was believed"


def test_capabilities_and_folders_after_starttls_are_the_servers(
    mail_user: MailUser, tmp_path: Path
) -> None:
    with FaultProxy(mail_user.server.host, mail_user.server.imap_port) as proxy:
        proxy.replace_down(b" ready.\r\n", b" ready.\r\n" + INJECTED)
        pf = PolicyFile(tmp_path, ISP)
        _starttls_via(pf, mail_user, proxy)
        account = pf.load().accounts[0]
        with ImapSession.connect(account, mail_user.password, readonly=True) as session:
            caps = session.capabilities()
            folders = session.list_folders()
            usage = session.usage()
    assert "X-INJECTED" not in caps and "STATUS=SIZE" in caps
    inbox = [f for f in folders if f.name == "INBOX"]
    assert len(inbox) == 1 and not inbox[0].special_use
    assert usage.limit_bytes == mail_user.quota_bytes
