"""A usage measurement counts the account's messages in one round trip (issue 10).

Dovecot's quota here has no MESSAGE resource, so the count comes from ``LIST ... RETURN
(STATUS (MESSAGES))`` (RFC 5819) instead of a LIST and a STATUS per folder; it must be
the same number.
"""

from __future__ import annotations

import imaplib
from datetime import UTC, datetime

import pytest

from retention.testing.dovecot import MailUser, SeedMessage
from tests.integration.test_imap_adapter import open_session


def test_usage_counts_every_folder_with_one_list_status(mail_user: MailUser) -> None:
    now = datetime.now(UTC)
    mail_user.seed("INBOX", [SeedMessage(received=now)] * 3)
    mail_user.seed("Lists/rust", [SeedMessage(received=now)] * 2)
    mail_user.seed("Trash", [SeedMessage(received=now)])
    with open_session(mail_user, readonly=True) as s:
        usage = s.usage(None)
        assert usage.source == "quota"
        assert usage.messages == 6
        assert s.commands["LIST-STATUS"] == 1
        assert s.commands["STATUS"] == 0 and s.commands["LIST"] == 0
    with open_session(mail_user, readonly=True) as s:  # the folder-by-folder count agrees
        assert s._message_count(s.list_folders()) == 6


def test_a_usage_session_is_three_round_trips_after_the_greeting(
        mail_user: MailUser, monkeypatch: pytest.MonkeyPatch) -> None:
    """No CAPABILITY (the greeting and LOGIN's completion carry it), and the three
    read-only commands of a usage measurement go in one write (RFC 3501 5.5)."""
    writes: list[list[bytes]] = []  # the command names of each write (not the password)
    send = imaplib.IMAP4.send

    def recording(self: imaplib.IMAP4, data: bytes) -> None:
        writes.append([line.split(b" ")[1] for line in bytes(data).split(b"\r\n") if line])
        send(self, data)

    mail_user.seed("INBOX", [SeedMessage(received=datetime.now(UTC))] * 2)
    monkeypatch.setattr(imaplib.IMAP4, "send", recording)
    with open_session(mail_user, readonly=True) as s:
        logged_in = len(writes)
        assert s.usage(None).messages == 2
        assert len(writes) == logged_in + 1
    assert writes == [[b"LOGIN"], [b"GETQUOTAROOT", b"NAMESPACE", b"LIST"], [b"LOGOUT"]]


def test_folders_the_caller_counted_get_no_status(mail_user: MailUser) -> None:
    """An account pass scans before it measures: a folder read in full is counted from
    the scan, not by a STATUS that costs a big maildir as much as its EXAMINE."""
    now = datetime.now(UTC)
    mail_user.seed("INBOX", [SeedMessage(received=now)] * 3)
    mail_user.seed("Lists/rust", [SeedMessage(received=now)] * 2)
    with open_session(mail_user, readonly=True) as s:
        folders = s.list_folders()
        before = s.commands["STATUS"]
        usage = s.usage(folders, counted={"INBOX": 3})
        assert usage.messages == 5
        # Lists and Lists/rust (selectable, uncounted) are asked; INBOX is not.
        asked = s.commands["STATUS"] - before
        assert asked == sum(1 for f in folders if f.selectable and f.name != "INBOX")
        everything = s.usage(folders)
        assert everything.messages == 5
        assert s.commands["STATUS"] - before - asked == asked + 1
