"""Protection is re-checked at the moment of acting (review F3).

The plan is made from the scan; the user may star or mark unread a planned message before
the agent acts on it. Here a second client (a real IMAP session on the same Dovecot)
changes UID 2's flags at the worst moments, through the fault proxy's ``call_on`` hook:
right before the agent's ``SELECT`` (between plan and act: the flag re-read must see it,
with and without CONDSTORE) and right before its ``UID STORE`` reaches the server (after
the re-read: only ``UNCHANGEDSINCE`` can see it). In every case UID 2 stays, the others
go, and the report says why UID 2 was skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from retention.run.account import run_account
from retention.testing.dovecot import MailUser, SeedMessage
from retention.testing.faultproxy import FaultProxy
from tests.integration.helpers import PolicyFile, ago, patched_env

NOW = datetime.now(UTC).replace(microsecond=0)
SELECT = rb"^\S+ SELECT "
STORE = rb"^\S+ UID STORE "


def _policy(protect: list[str], action: Any) -> dict[str, Any]:
    return {"p": {"protect": protect, "rules": [
        {"name": "old", "folders": ["INBOX"], "older_than": "30d", "age_by": "received",
         "allow_empty_folder": True, "action": action},
    ]}}


def _change(user: MailUser, add: list[bytes], remove: list[bytes]) -> Callable[[bytes], None]:
    def change(_line: bytes) -> None:
        client = user.imap_client()
        try:
            client.select_folder("INBOX")
            if add:
                client.add_flags([2], add)
            if remove:
                client.remove_flags([2], remove)
        finally:
            client.logout()
    return change


FLAG = {"add": [b"\\Flagged"], "remove": []}
UNREAD = {"add": [], "remove": [b"\\Seen"]}
VAULT = {"archives": {"vault": {"type": "mbox", "path": "./archive/{folder}.mbox",
                                "compress": "none"}}}

CASES: dict[str, tuple[list[str], Any, bytes, dict[str, list[bytes]], bool]] = {
    # name: (protect, action, when, change, strip CONDSTORE)
    "delete-flagged-before-select": (["flagged"], "delete", SELECT, FLAG, False),
    "delete-flagged-before-select-no-condstore": (["flagged"], "delete", SELECT, FLAG, True),
    "delete-flagged-before-store": (["flagged"], "delete", STORE, FLAG, False),
    "delete-unread-before-store": (["unread"], "delete", STORE, UNREAD, False),
    "trash-flagged-before-select": (["flagged"], "trash", SELECT, FLAG, False),
    "move-unread-before-select-no-condstore": (["unread"], {"move_to": "Old"}, SELECT, UNREAD,
                                               True),
    "archive-flagged-before-store": (["flagged"], {"archive": "vault"}, STORE, FLAG, False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_message_protected_during_the_run_is_not_removed(
    case: str, mail_user: MailUser, tmp_path: Path
) -> None:
    protect, action, when, change, no_condstore = CASES[case]
    mail_user.seed("INBOX", [SeedMessage(received=ago(days=100 + i), flags={"\\Seen"})
                             for i in range(3)])
    with FaultProxy(mail_user.server.host, mail_user.server.imap_port) as proxy:
        if no_condstore:
            proxy.replace_down(b" CONDSTORE", b"")
            proxy.replace_down(b" QRESYNC", b"")
        proxy.call_on(when, _change(mail_user, change["add"], change["remove"]))
        pf = PolicyFile(tmp_path, _policy(protect, action),
                        extra=VAULT if "archive" in case else {})
        pf.add_imap(mail_user, security="none", port=proxy.port, host="127.0.0.1")
        config = pf.load()
        with patched_env(pf.env):
            result = run_account(config, config.accounts[0], dry_run=False, now=NOW,
                                 sleep=lambda _s: None)
        conditional = proxy.sent(rb"UNCHANGEDSINCE")
    assert result.status == "ok", result.error
    outcome = {r.action.message.ref.uid: (r.result, r.detail) for r in result.results}
    assert outcome[1][0] == outcome[3][0] == "done", outcome
    assert outcome[2][0] == "skipped", outcome
    assert "another client" in (outcome[2][1] or ""), outcome
    inbox = mail_user.folder_state()["INBOX"]
    assert list(inbox) == [2], f"UID 2 must stay (and only it): {sorted(inbox)}"
    assert "\\Deleted" not in inbox[2].flags
    # Deletes go through a conditional STORE when the server has CONDSTORE; IMAP has no
    # conditional MOVE (moves rely on the flag re-read alone).
    removes = action == "delete" or "archive" in case
    assert bool(conditional) == (removes and not no_condstore)
