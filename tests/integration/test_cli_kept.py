"""``retention run --dry-run --list-kept`` on a real Dovecot: what stays, and why.

The report counts kept messages per folder and reason and, with ``--list-kept``, lists
each one; the dry-run stays read-only (no flag, no message changes).
"""

from __future__ import annotations

import re
from pathlib import Path

from retention.testing.dovecot import MailUser, SeedMessage
from tests.integration.helpers import PolicyFile, ago, uid_of

SEEN = frozenset({"\\Seen"})
POLICY = {"p": {"keep_within": "3d", "protect": ["flagged", "unread"], "rules": [
    {"name": "old", "folders": ["INBOX"], "older_than": "1y", "action": "delete"}]}}


def test_dry_run_list_kept_says_why_each_message_stays(
        tmp_path: Path, mail_user: MailUser) -> None:
    raws = mail_user.seed("INBOX", [
        SeedMessage(received=ago(days=800), flags=SEEN, size=3000),  # goes
        SeedMessage(received=ago(days=800), size=3000),  # unread: protected
        SeedMessage(received=ago(days=800), flags={"\\Seen", "\\Flagged"}, size=4000),
        SeedMessage(received=ago(days=30), flags=SEEN, size=2000),  # no rule matches
        SeedMessage(received=ago(hours=5), flags=SEEN, size=1000),  # keep_within
    ])
    mail_user.seed("Junk", [SeedMessage(received=ago(days=800), flags=SEEN, size=1500)])
    before = mail_user.folder_state()
    pf = PolicyFile(tmp_path, POLICY)
    name = pf.add_imap(mail_user)

    counted = pf.run(dry_run=True)
    listed = pf.cli("run", "--dry-run", "--list-kept", "--format", "json")
    text = pf.cli("run", "--dry-run", "--list-kept")

    assert mail_user.folder_state() == before  # read-only: nothing moved, no flag set
    for r in (counted, listed, text):
        assert r.code == 0, str(r)
    acct = listed.account(name)
    uid = {i: uid_of(before, "INBOX", raw) for i, raw in enumerate(raws)}
    assert [(a["uid"], a["rule"]) for a in acct["actions"]] == [(uid[0], "old")]
    by_uid = {(k["folder"], k["uid"]): (k["reason"], k["rule"], k["size"])
              for k in acct["kept_messages"]}
    # Junk is never scanned (no rule covers it), so it is neither counted nor listed.
    assert by_uid == {
        ("INBOX", uid[1]): ("protected_unread", "old", 3000),
        ("INBOX", uid[2]): ("protected_flagged", "old", 4000),
        ("INBOX", uid[3]): ("no_rule", None, 2000),
        ("INBOX", uid[4]): ("keep_within", None, 1000),
    }
    assert acct["kept"] == counted.account(name)["kept"] == [
        {"folder": "INBOX", "reason": "keep_within", "messages": 1, "bytes": 1000},
        {"folder": "INBOX", "reason": "protected_flagged", "messages": 1, "bytes": 4000},
        {"folder": "INBOX", "reason": "protected_unread", "messages": 1, "bytes": 3000},
        {"folder": "INBOX", "reason": "no_rule", "messages": 1, "bytes": 2000},
    ]
    assert counted.account(name)["kept_messages"] is None
    assert "kept: 4 messages" in text.stdout
    assert re.search(r"INBOX\s+protected: unread\s+1\s+2\.9 KiB", text.stdout), str(text)
    kept_lines = [line for line in text.stdout.splitlines() if line.startswith("   kept  ")]
    assert len(kept_lines) == 4 and any(f"  {uid[2]}  " in line and "flagged" in line
                                        for line in kept_lines), str(text)
