"""A repeat pass through the scan cache (issue 10): INBOX first, its cache decoded while
the server measures usage, and exactly the plan a fresh state gives.

On Dovecot with its mailbox list index (the default), the first mailbox a session opens
opens cheaply and every open after a LIST re-reads a big INBOX: a repeat pass therefore
asks for INBOX's changes before the folder list. These tests show the order on the wire
and that nothing about the result changes: the plan equals one made from a full scan, for
an unchanged mailbox, after new mail and another client's expunge, when the policy does
not take INBOX at all, and with the cached scan decoded in the background.
"""

from __future__ import annotations

import imaplib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from retention.run import scanning
from retention.run.account import run_account
from retention.testing.dovecot import MailUser, SeedMessage
from tests.integration.helpers import PolicyFile, patched_env

NOW = datetime.now(UTC).replace(microsecond=0)
RULES = [{"name": "old", "folders": ["INBOX", "Lists/*"], "older_than": "30d",
          "action": "delete"}]


def _seed(user: MailUser, folder: str, n: int, start: int = 0) -> None:
    user.seed(folder, [SeedMessage(received=NOW - timedelta(days=5 + (start + i) % 60),
                                   size=500 + i, flags={"\\Seen"} if i % 4 else set(),
                                   subject=f"{folder} {start + i}")
                       for i in range(n)])


def _pass(pf: PolicyFile, state: str) -> Any:
    pf.state_dir = state
    pf.write()
    config = pf.load()
    with patched_env(pf.env):
        result = run_account(config, config.accounts[0], dry_run=True, now=NOW,
                             sleep=lambda _s: None)
    assert result.status == "ok", result.error
    return result


def _planned(result: Any) -> list[tuple[str, int | None, str, str]]:
    return [(a.message.folder, a.message.uid, a.rule, a.reason) for a in result.plan.actions]


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The name of every command sent, in order (not their arguments: no password)."""
    sent: list[bytes] = []
    send = imaplib.IMAP4.send

    def recording(self: imaplib.IMAP4, data: bytes) -> None:
        sent.extend(line.split(b" ")[1] for line in bytes(data).split(b"\r\n") if line)
        send(self, data)

    monkeypatch.setattr(imaplib.IMAP4, "send", recording)
    return sent


@pytest.mark.parametrize("background", [False, True], ids=["inline", "background"])
def test_repeat_pass_examines_inbox_first_and_plans_as_a_fresh_one(
        tmp_path: Path, mail_user: MailUser, wire: list[bytes], background: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    if background:  # every cached scan decoded in the thread, however small
        monkeypatch.setattr(scanning, "BACKGROUND_DECODE", 0)
    _seed(mail_user, "INBOX", 40)
    _seed(mail_user, "Lists/rust", 12)
    pf = PolicyFile(tmp_path, {"p": {"protect": ["unread"], "keep_within": "0d",
                                     "rules": RULES}})
    pf.add_imap(mail_user, security="none")
    first = _pass(pf, str(tmp_path / "kept"))
    assert _planned(first)
    del wire[:]
    again = _pass(pf, str(tmp_path / "kept"))
    # The repeat opens INBOX before any LIST: LOGIN, ENABLE QRESYNC, EXAMINE.
    assert wire[:3] == [b"LOGIN", b"ENABLE", b"EXAMINE"], wire
    assert wire.index(b"EXAMINE") < wire.index(b"LIST")
    assert b"FETCH" not in wire  # nothing changed: no message read
    assert _planned(again) == _planned(first)
    assert again.plan == first.plan

    # New mail and another client's expunge: the cached repeat still plans as a fresh
    # state_dir does (a full scan).
    _seed(mail_user, "INBOX", 6, start=40)
    other = mail_user.imap_client()
    other.select_folder("INBOX")
    uids = other.search(["ALL"])
    other.add_flags(uids[2:5], ["\\Deleted"])
    other.uid_expunge(uids[2:5])
    other.logout()
    cached = _pass(pf, str(tmp_path / "kept"))
    fresh = _pass(pf, str(tmp_path / "fresh"))
    assert _planned(cached) == _planned(fresh)
    assert cached.plan == fresh.plan
    assert cached.messages == fresh.messages == 40 + 6 - 3 + 12


def test_no_early_examine_when_no_rule_takes_inbox(
        tmp_path: Path, mail_user: MailUser, wire: list[bytes]) -> None:
    _seed(mail_user, "INBOX", 10)
    _seed(mail_user, "Lists/rust", 10)
    rules = [{"name": "lists", "folders": ["Lists/*"], "older_than": "30d",
              "action": "delete"}]
    pf = PolicyFile(tmp_path, {"p": {"protect": [], "keep_within": "0d", "rules": rules}})
    pf.add_imap(mail_user, security="none")
    first = _pass(pf, str(tmp_path / "kept"))
    del wire[:]
    again = _pass(pf, str(tmp_path / "kept"))
    assert wire.index(b"LIST") < wire.index(b"EXAMINE")
    assert wire.count(b"EXAMINE") == 1  # Lists/rust only
    assert again.plan == first.plan
