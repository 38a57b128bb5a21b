"""A body is archived only when it is whole (review F6).

The fault proxy cuts ten bytes out of one message on its way from a real Dovecot (IMAP:
the ``BODY[]`` literal, announced shorter to match; POP3: the ``RETR`` reply). The copy
would verify against itself, so before this fix the short body was archived and the
original deleted. Now that message is skipped with the reason and stays in the mailbox;
the others are archived and removed as usual.
"""

from __future__ import annotations

import mailbox
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from retention.run.account import run_account
from retention.testing.dovecot import MailUser, SeedMessage
from retention.testing.faultproxy import FaultProxy
from tests.integration.helpers import PolicyFile, ago, patched_env

NOW = datetime.now(UTC).replace(microsecond=0)
CUT = b"0123456789"
MARK = b"MARKER-" + CUT + b"-END"
ARCHIVE = {"p": {"protect": [], "rules": [
    {"name": "old", "folders": ["INBOX"], "older_than": "30d", "age_by": "received",
     "allow_empty_folder": True, "action": {"archive": "vault"}},
]}}
VAULT = {"archives": {"vault": {"type": "mbox", "path": "./archive/a.mbox", "compress": "none"}}}


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_body_shorter_than_announced_is_not_archived_nor_deleted(
    protocol: str, mail_user: MailUser, tmp_path: Path
) -> None:
    raws = mail_user.seed("INBOX", [
        SeedMessage(received=ago(days=100)),
        SeedMessage(received=ago(days=101), body=b"Hello\r\n" + MARK + b"\r\n"),
        SeedMessage(received=ago(days=102)),
    ])
    size = len(raws[1])
    server = mail_user.server
    port = server.imap_port if protocol == "imap" else server.pop3_port
    with FaultProxy(server.host, port) as proxy:
        proxy.replace_down(MARK, MARK.replace(CUT, b""))
        if protocol == "imap":
            proxy.replace_down(b"{%d}" % size, b"{%d}" % (size - len(CUT)))
        pf = PolicyFile(tmp_path, ARCHIVE, extra=VAULT)
        add = pf.add_imap if protocol == "imap" else pf.add_pop3
        add(mail_user, security="none", port=proxy.port, host="127.0.0.1")
        config = pf.load()
        with patched_env(pf.env):
            if protocol == "pop3":  # POP3 ages by first sight: be seen 100 days ago first
                run_account(config, config.accounts[0], dry_run=True,
                            now=NOW - timedelta(days=100), sleep=lambda _s: None)
            result: Any = run_account(config, config.accounts[0], dry_run=False, now=NOW,
                                      sleep=lambda _s: None)
    assert result.status == "ok", result.error
    outcome = sorted((r.result, r.detail or "") for r in result.results)
    assert [o for o, _ in outcome] == ["done", "done", "skipped"], outcome
    assert "not whole" in outcome[-1][1], outcome
    left = mail_user.folder_state()["INBOX"]
    assert len(left) == 1, "only the damaged message stays"
    assert (tmp_path / "archive" / "a.mbox").exists()
    archived = [m.as_bytes() for m in mailbox.mbox(str(tmp_path / "archive" / "a.mbox"))]
    assert len(archived) == 2 and not any(b"MARKER" in m for m in archived)
