"""The incremental scan (scan cache + QRESYNC) gives exactly what a full scan gives (issue 10).

Each test scans a folder of a real Dovecot once through ``run.scanning.scan_folder`` (a
full scan that fills the cache), changes the folder behind the agent's back (new mail,
another client's expunge or flag change, a new UIDVALIDITY, the folder deleted and
recreated, the cache file truncated), then scans again through the cache and compares
with a plain full ``ImapSession.scan``: same messages (UID, size, dates, flags) and the
same plan. Where the cache must be used, the test also checks that no full scan ran.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from retention.adapters.imap.session import ImapSession
from retention.model import FolderInfo, FolderSnapshot, Snapshot, Usage
from retention.planner import plan
from retention.run.scanning import scan_folder
from retention.state.scancache import ScanCache
from retention.testing.dovecot import MailUser, SeedMessage
from tests.integration.test_imap_adapter import folder, open_session
from tests.strategies import policy

NOW = datetime.now(UTC).replace(microsecond=0)
POLICY = policy(
    {"name": "old", "folders": ["*"], "older_than": "30d", "action": "delete"},
    protect=["flagged"], keep_within="0d",
)


def seed(user: MailUser, name: str, n: int, *, start: int = 0) -> None:
    user.seed(name, [
        SeedMessage(received=NOW - timedelta(days=90 - (start + i) % 80, seconds=start + i),
                    size=600 + 7 * i, flags={"\\Seen"} if i % 3 else set(),
                    subject=f"m{start + i}")
        for i in range(n)
    ])


class Counting:
    """An ImapSession whose full scans are counted."""

    def __init__(self, session: ImapSession) -> None:
        self.session = session
        self.full_scans = 0

    def scan(self, info: FolderInfo, *, with_sent: bool = True) -> FolderSnapshot:
        self.full_scans += 1
        return self.session.scan(info, with_sent=with_sent)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


def same_as_full(session: ImapSession, cache: ScanCache, name: str) -> Counting:
    """Scan through the cache and in full; assert equal snapshots and plans."""
    counting = Counting(session)
    info = folder(session, name)
    cached = scan_folder(counting, info, with_sent=False, cache=cache)  # type: ignore[arg-type]
    full = session.scan(info, with_sent=False)
    assert cached.uidvalidity == full.uidvalidity
    assert cached.messages == full.messages
    usage = Usage(10**9, None, "sum")
    plans = [plan(POLICY, Snapshot("a", "imap", usage, (snap,), tuple(session.folders())), NOW)
             for snap in (cached, full)]
    assert plans[0] == plans[1]
    return counting


@pytest.fixture
def cache(tmp_path: Path) -> ScanCache:
    return ScanCache(tmp_path / "scancache", "test-mailbox")


def first_scan(user: MailUser, cache: ScanCache, name: str = "INBOX") -> None:
    with open_session(user, readonly=True) as s:
        assert same_as_full(s, cache, name).full_scans == 1
        assert cache.path(name).exists()


def test_unchanged_folder_reads_no_message(mail_user: MailUser, cache: ScanCache) -> None:
    seed(mail_user, "INBOX", 40)
    first_scan(mail_user, cache)
    with open_session(mail_user, readonly=True) as s:
        before = s.commands["UID FETCH"]
        info = folder(s, "INBOX")
        snap = scan_folder(s, info, with_sent=False, cache=cache)
        assert s.commands["UID FETCH"] == before  # EXAMINE said HIGHESTMODSEQ is the same
        assert len(snap.messages) == 40
        assert same_as_full(s, cache, "INBOX").full_scans == 0


def test_new_mail(mail_user: MailUser, cache: ScanCache) -> None:
    seed(mail_user, "INBOX", 30)
    first_scan(mail_user, cache)
    seed(mail_user, "INBOX", 5, start=30)
    with open_session(mail_user, readonly=True) as s:
        assert same_as_full(s, cache, "INBOX").full_scans == 0
        assert len(s.scan(folder(s, "INBOX"), with_sent=False).messages) == 35


def test_expunge_by_another_client(mail_user: MailUser, cache: ScanCache) -> None:
    seed(mail_user, "INBOX", 30)
    first_scan(mail_user, cache)
    other = mail_user.imap_client()
    other.select_folder("INBOX")
    uids = other.search(["ALL"])
    other.add_flags(uids[3:9], ["\\Deleted"])
    other.uid_expunge(uids[3:9])
    other.add_flags(uids[20:21], ["\\Deleted"])  # flagged, not expunged: still there
    other.logout()
    with open_session(mail_user, readonly=True) as s:
        assert same_as_full(s, cache, "INBOX").full_scans == 0


def test_flag_changes(mail_user: MailUser, cache: ScanCache) -> None:
    seed(mail_user, "INBOX", 30)
    first_scan(mail_user, cache)
    other = mail_user.imap_client()
    other.select_folder("INBOX")
    uids = other.search(["ALL"])
    other.add_flags(uids[:10], ["\\Flagged"])  # now protected: leaves the plan
    other.remove_flags(uids[10:20], ["\\Seen"])
    other.add_flags(uids[25:], ["$Custom"])
    other.logout()
    with open_session(mail_user, readonly=True) as s:
        assert same_as_full(s, cache, "INBOX").full_scans == 0


def test_uidvalidity_change_falls_back(mail_user: MailUser, cache: ScanCache) -> None:
    seed(mail_user, "INBOX", 20)
    first_scan(mail_user, cache)
    with open_session(mail_user, readonly=True) as s:
        validity = s.select("INBOX", readonly=True)[0]
        s.leave()
    mail_user.server.doveadm("mailbox", "update", "-u", mail_user.name,
                             "--uid-validity", str(validity + 7), "INBOX")
    with open_session(mail_user, readonly=True) as s:
        assert same_as_full(s, cache, "INBOX").full_scans == 1


def test_deleted_and_recreated_folder_falls_back(mail_user: MailUser,
                                                 cache: ScanCache) -> None:
    seed(mail_user, "Lists", 20)
    first_scan(mail_user, cache, "Lists")
    other = mail_user.imap_client()
    other.delete_folder("Lists")
    other.create_folder("Lists")
    other.logout()
    seed(mail_user, "Lists", 12, start=100)
    with open_session(mail_user, readonly=True) as s:
        assert same_as_full(s, cache, "Lists").full_scans == 1


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_damaged_cache_file_falls_back(mail_user: MailUser, cache: ScanCache,
                                       damage: str) -> None:
    seed(mail_user, "INBOX", 25)
    first_scan(mail_user, cache)
    seed(mail_user, "INBOX", 3, start=25)
    path = cache.path("INBOX")
    data = path.read_bytes()
    damaged = {
        "truncate": data[: len(data) - 37],
        "flip": data[:-5] + bytes([data[-5] ^ 0x40]) + data[-4:],
        "garbage": b"RSC2\n{not json\n" + data[40:],
        "empty": b"",
    }[damage]
    path.write_bytes(damaged)
    with open_session(mail_user, readonly=True) as s:
        assert same_as_full(s, cache, "INBOX").full_scans == 1
    with open_session(mail_user, readonly=True) as s:  # rewritten whole: usable again
        assert same_as_full(s, cache, "INBOX").full_scans == 0


def test_history_of_changes(mail_user: MailUser, cache: ScanCache) -> None:
    """Several rounds of mixed changes, each checked against a full scan."""
    seed(mail_user, "INBOX", 20)
    first_scan(mail_user, cache)
    for round_ in range(3):
        other = mail_user.imap_client()
        other.select_folder("INBOX")
        uids = other.search(["ALL"])
        other.add_flags(uids[round_::4], ["\\Flagged"])
        other.add_flags(uids[1 + round_:3 + round_], ["\\Deleted"])
        other.uid_expunge(uids[1 + round_:3 + round_])
        other.logout()
        seed(mail_user, "INBOX", 4, start=200 + 10 * round_)
        with open_session(mail_user, readonly=True) as s:
            assert same_as_full(s, cache, "INBOX").full_scans == 0
