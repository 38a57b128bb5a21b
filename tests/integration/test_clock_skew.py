"""The clock check on a real Dovecot (review M10): a clock that jumped ahead removes nothing.

``now`` is passed to the account pass as the agent's clock; Dovecot keeps its own (the
machine's real time). A jump of 400 days ages every message past a 30-day rule; the pass
then refuses with a clear account error (dry-run: a warning) and nothing is removed. A
mailbox that got no mail for 100 days is not refused: Dovecot confirms with its own clock
(``UID SEARCH ... OLDER``, RFC 5032) that the agent's ``now`` is not ahead. POP3 uses the
newest message's ``Received:`` stamp.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from retention.run.account import run_account
from retention.testing.dovecot import MailUser, SeedMessage
from tests.integration.helpers import PolicyFile, ago, patched_env

NOW = datetime.now(UTC).replace(microsecond=0)
JUMP = NOW + timedelta(days=400)
RULE = {"name": "old", "folders": ["INBOX"], "older_than": "30d", "action": "delete",
        "allow_empty_folder": True}


def _run(pf: PolicyFile, now: datetime, *, dry_run: bool = False) -> Any:
    config = pf.load()
    with patched_env(pf.env):
        return run_account(config, config.accounts[0], dry_run=dry_run, now=now,
                           sleep=lambda _s: None)


def _seed(user: MailUser, *ages: int) -> None:
    user.seed("INBOX", [SeedMessage(received=ago(days=d), flags={"\\Seen"}) for d in ages])


def test_imap_forward_jump_refuses_and_dry_run_warns(make_user: Any, tmp_path: Path) -> None:
    user = make_user()
    _seed(user, 100, 100, 1)
    pf = PolicyFile(tmp_path, {"p": {"rules": [RULE]}})
    pf.add_imap(user)

    dry = _run(pf, JUMP, dry_run=True)
    assert dry.status == "ok", dry.error
    assert len(dry.plan.actions) == 3  # everything looks old to the jumped clock...
    assert any("clock check" in w and "clock_skew_limit 30d" in w for w in dry.warnings)

    real = _run(pf, JUMP)
    assert real.status == "error", real
    assert "clock check: nothing removed" in (real.error or "")
    assert "clock_skew_limit" in (real.error or "")
    assert len(user.folder_state()["INBOX"]) == 3  # ...and nothing was removed

    # With the clock back, the two old ones go; the young one stays.
    fixed = _run(pf, NOW)
    assert fixed.status == "ok", fixed.error
    assert not any("clock check" in w for w in fixed.warnings)
    assert len(user.folder_state()["INBOX"]) == 1


def test_imap_idle_mailbox_is_confirmed_by_the_servers_clock(make_user: Any,
                                                             tmp_path: Path) -> None:
    user = make_user()
    _seed(user, 200, 100)  # no mail for 100 days: more than the 30-day limit
    pf = PolicyFile(tmp_path, {"p": {"rules": [RULE]}})
    pf.add_imap(user)
    result = _run(pf, NOW)
    assert result.status == "ok", result.error
    assert not any("clock check" in w for w in result.warnings)
    assert user.folder_state().get("INBOX", {}) == {}
    # The same idle mailbox under a clock 400 days ahead: Dovecot's OLDER says no.
    _seed(user, 200, 100)
    jumped = _run(pf, JUMP)
    assert jumped.status == "error" and "clock check" in (jumped.error or ""), jumped
    assert len(user.folder_state()["INBOX"]) == 2


def _delivered(days: int, n: int) -> SeedMessage:
    """A message as an MTA delivers it: a Received: stamp of its delivery time."""
    when = ago(days=days)
    raw = (f"Received: from mx.example by mail.example with ESMTP id {n};\r\n"
           f"\t{format_datetime(when)}\r\nDate: Mon, 1 Jan 2001 00:00:00 +0000\r\n"
           f"Message-ID: <d{n}@clock>\r\nSubject: delivered\r\n\r\nbody {n}\r\n").encode()
    return SeedMessage(received=when, raw=raw)


def test_pop3_forward_jump_refuses(make_user: Any, tmp_path: Path) -> None:
    user = make_user()
    user.seed("INBOX", [_delivered(5, 1), _delivered(3, 2)])
    pf = PolicyFile(tmp_path, {"p": {"rules": [{**RULE, "age_by": "first_seen"}]}})
    pf.add_pop3(user)
    # First seen 100 days ago (POP3 ages by first sight).
    assert _run(pf, NOW - timedelta(days=100), dry_run=True).status == "ok"
    jumped = _run(pf, JUMP)
    assert jumped.status == "error" and "clock check" in (jumped.error or ""), jumped
    assert len(user.folder_state()["INBOX"]) == 2
    fixed = _run(pf, NOW)
    assert fixed.status == "ok", fixed.error
    assert user.folder_state().get("INBOX", {}) == {}


def test_trash_only_policy_is_confirmed_by_the_inbox(make_user: Any, tmp_path: Path) -> None:
    """The rules scan only Trash, where nothing new arrived for 100 days; INBOX got mail
    yesterday: its newest INTERNALDATE proves the clock, no WITHIN needed."""
    user = make_user()
    user.seed("Trash", [SeedMessage(received=ago(days=100), flags={"\\Seen"})])
    _seed(user, 1)
    rule = {**RULE, "folders": ["\\Trash"], "age_by": "received"}
    pf = PolicyFile(tmp_path, {"p": {"rules": [rule]}})
    pf.add_imap(user)
    result = _run(pf, NOW)
    assert result.status == "ok", result.error
    assert user.folder_state().get("Trash", {}) == {}
    jumped = _run(pf, JUMP)  # nothing left to remove: no refusal needed
    assert jumped.status == "ok", jumped.error


def test_clock_check_off(make_user: Any, tmp_path: Path) -> None:
    user = make_user()
    _seed(user, 100, 1)
    pf = PolicyFile(tmp_path, {"p": {"rules": [RULE], "clock_skew_limit": "0d"}})
    pf.add_imap(user)
    result = _run(pf, JUMP)
    assert result.status == "ok", result.error
    assert user.folder_state().get("INBOX", {}) == {}


def test_adapter_reads_the_servers_evidence(make_user: Any) -> None:
    """The two IMAP reads the check relies on, against Dovecot's own clock."""
    from tests.integration.test_imap_adapter import open_session

    user = make_user()
    with open_session(user, readonly=True) as empty:
        assert empty.newest_internaldate() is None  # an empty INBOX proves nothing
    _seed(user, 300, 2)
    with open_session(user, readonly=True) as s:
        newest = s.newest_internaldate()
        assert newest is not None and abs(newest - ago(days=2)) < timedelta(minutes=5)
        info = next(f for f in s.list_folders() if f.name == "INBOX")
        old = min(s.scan(info, with_sent=False).messages, key=lambda m: m.received)
        day = 86400
        assert s.older_than(old.ref, 299 * day) is True  # Dovecot's now: 300 days later
        assert s.older_than(old.ref, 301 * day) is False
