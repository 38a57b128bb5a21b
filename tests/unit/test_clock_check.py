"""The clock check (review M10): pure decision, evidence gathering, POP3 Received stamps."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from retention.adapters.pop3 import received_stamp
from retention.config.schema import Policy
from retention.model import FolderInfo, FolderSnapshot, Message, MessageRef, Snapshot, Usage
from retention.planner import _newest_in, _newest_walk, clock_refusal, newest_server_date
from retention.run.clock import server_time

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def _snap(*received: datetime, protocol: str = "imap", saved: datetime | None = None,
          has_savedate: bool = False) -> Snapshot:
    msgs = tuple(Message(MessageRef("INBOX", 7, i + 1), 100, r, frozenset(), saved=saved)
                 for i, r in enumerate(received))
    folder = FolderSnapshot(info=FolderInfo("INBOX"), uidvalidity=7, messages=msgs,
                            has_savedate=has_savedate)
    return Snapshot("alice", protocol, Usage(0, None, "sum"), folders=(folder,))  # type: ignore[arg-type]


def test_refused_unless_now_is_within_the_limit_of_the_servers_time() -> None:
    pol = Policy()
    assert pol.clock_skew_limit == 30 * DAY
    snap = _snap(NOW - 100 * DAY)
    assert clock_refusal(pol, replace(snap, server_time=NOW - 29 * DAY), NOW) is None
    why = clock_refusal(pol, replace(snap, server_time=NOW - 31 * DAY), NOW)
    assert why is not None and "31.0 days earlier" in why and "clock_skew_limit 30d" in why
    assert "nothing removed" in (clock_refusal(pol, snap, NOW) or "")  # no evidence: IMAP
    assert clock_refusal(pol, _snap(protocol="pop3"), NOW) is None  # POP3: cannot check
    assert clock_refusal(Policy(clock_skew_limit=timedelta(0)), snap, NOW) is None  # off


def test_newest_server_date_ignores_the_future_and_agent_sightings() -> None:
    snap = _snap(NOW - 5 * DAY, NOW + 300 * DAY, NOW - 9 * DAY)
    found = newest_server_date(snap, NOW)
    assert found is not None and found[1] == NOW - 5 * DAY
    # ``saved`` counts only when the server stamps it (SAVEDATE), not a first sighting.
    sighted = _snap(NOW - 50 * DAY, saved=NOW - DAY)
    assert newest_server_date(sighted, NOW)[1] == NOW - 50 * DAY  # type: ignore[index]
    stamped = _snap(NOW - 50 * DAY, saved=NOW - DAY, has_savedate=True)
    assert newest_server_date(stamped, NOW)[1] == NOW - DAY  # type: ignore[index]
    assert newest_server_date(_snap(NOW - DAY, protocol="pop3"), NOW) is None


class _Server:
    """A session whose server clock runs at ``clock`` (WITHIN's OLDER by that clock)."""

    def __init__(self, clock: datetime, within: bool = True) -> None:
        self.clock = clock
        self.asked: list[int] = []
        if not within:
            self.older_than = None  # type: ignore[assignment]

    def older_than(self, ref: MessageRef, seconds: int) -> bool | None:
        self.asked.append(seconds)
        received = NOW - 100 * DAY  # the one message of the idle snapshot below
        return (self.clock - received).total_seconds() > seconds


def test_server_time_asks_the_server_only_for_an_idle_mailbox() -> None:
    busy = _snap(NOW - DAY)
    server = _Server(NOW)
    assert server_time(server, busy, NOW, 30 * DAY) == NOW - DAY  # type: ignore[arg-type]
    assert server.asked == []
    idle = _snap(NOW - 100 * DAY)
    # The server's clock agrees: confirmed up to now - limit, so no refusal.
    floor = server_time(server, idle, NOW, 30 * DAY)  # type: ignore[arg-type]
    assert floor == NOW - 30 * DAY and len(server.asked) == 1
    assert clock_refusal(Policy(), replace(idle, server_time=floor), NOW) is None
    # The agent's clock is 400 days ahead of the server's: not confirmed.
    ahead = _Server(NOW - 400 * DAY)
    floor = server_time(ahead, idle, NOW, 30 * DAY)  # type: ignore[arg-type]
    assert floor == NOW - 100 * DAY
    assert clock_refusal(Policy(), replace(idle, server_time=floor), NOW) is not None
    # No WITHIN: the newest date is all there is.
    assert server_time(_Server(NOW, within=False), idle, NOW, 30 * DAY) == NOW - 100 * DAY  # type: ignore[arg-type]


def test_received_stamp_is_the_topmost_received_field() -> None:
    raw = (b"Received: from a by b;\r\n\tTue, 01 Dec 2026 10:00:00 +0100\r\n"
           b"Received: from c by d; Mon, 30 Nov 2026 10:00:00 +0000\r\n"
           b"Date: Mon, 1 Jan 2001 00:00:00 +0000\r\n\r\nReceived: body; no\r\n")
    assert received_stamp(raw) == datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    assert received_stamp(b"Date: Mon, 1 Jan 2001 00:00:00 +0000\r\n\r\n") is None
    assert received_stamp(b"Received: from a; not a date\r\n\r\n") is None
    assert received_stamp(b"\xff\xfe garbage") is None


class _Inbox:
    """A server without WITHIN whose INBOX got mail at ``delivered``."""

    def __init__(self, delivered: datetime | None) -> None:
        self.delivered = delivered

    def newest_internaldate(self) -> datetime | None:
        return self.delivered


def test_inbox_delivery_proves_the_clock_when_the_scanned_folders_are_idle() -> None:
    trash = _snap(NOW - 100 * DAY)  # a Trash-only policy: nothing new in Trash
    assert server_time(_Inbox(NOW - DAY), trash, NOW, 30 * DAY) == NOW - DAY  # type: ignore[arg-type]
    # A stale INBOX, or a future date (forged or a slow agent clock) prove nothing more.
    assert server_time(_Inbox(NOW - 90 * DAY), trash, NOW, 30 * DAY) == NOW - 90 * DAY  # type: ignore[arg-type]
    assert server_time(_Inbox(NOW + DAY), trash, NOW, 30 * DAY) == NOW - 100 * DAY  # type: ignore[arg-type]
    assert server_time(_Inbox(None), trash, NOW, 30 * DAY) == NOW - 100 * DAY  # type: ignore[arg-type]


@given(st.lists(st.tuples(st.integers(-5, 5), st.one_of(st.none(), st.integers(-5, 5))),
                max_size=12),
       st.booleans())
def test_newest_in_a_folder_is_the_first_newest_pair_in_scan_order(
        dates: list[tuple[int, int | None]], has_savedate: bool) -> None:
    """The fast path (``max`` and ``index``) picks exactly the message and date the walk
    over every (INTERNALDATE, SAVEDATE) pair picks, ties and future dates included."""
    msgs = tuple(Message(MessageRef("INBOX", 7, i + 1), 100, NOW + r * DAY, frozenset(),
                         saved=None if s is None else NOW + s * DAY)
                 for i, (r, s) in enumerate(dates))
    folder = FolderSnapshot(info=FolderInfo("INBOX"), uidvalidity=7, messages=msgs,
                            has_savedate=has_savedate)
    fast, walk = _newest_in(folder, NOW), _newest_walk(folder, NOW)
    assert fast == walk
    assert fast is None or walk is None or fast[0] is walk[0]
