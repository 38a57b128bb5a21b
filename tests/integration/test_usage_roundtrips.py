"""A usage measurement counts the account's messages in one round trip (issue 10).

Dovecot's quota here has no MESSAGE resource, so the count comes from ``LIST ... RETURN
(STATUS (MESSAGES))`` (RFC 5819) instead of a LIST and a STATUS per folder; it must be
the same number.
"""

from __future__ import annotations

from datetime import UTC, datetime

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
