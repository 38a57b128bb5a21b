"""scanread (issue 10): the one-pattern-per-line scan parser keeps parse_fetch's safety rules.

Every line the fast pattern reads must give what the general parser gives; a response
without a UID is dropped, items are attached only to the UID inside their own response,
same-UID responses merge in arrival order, and dates are sliced exactly as
``fetch.parse_imap_datetime`` + UTC would read them.
"""

from __future__ import annotations

import imaplib
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retention.adapters.imap.fetch import parse_imap_datetime
from retention.adapters.imap.scanread import HeaderLines, ScanLines, imap_utc, stream
from retention.adapters.imap.session import _general
from retention.model import FLAGGED, SEEN, Message

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def messages(*lines: bytes) -> tuple[list, ScanLines]:  # type: ignore[type-arg]
    scan = ScanLines("INBOX", 9)
    for line in lines:
        scan.feed([line])
    return scan.messages(_general(False)), scan


def line(seq: int, uid: int, flags: str = "\\Seen", size: int = 100,
         date: str = "05-Jan-2020 13:04:05 +0100") -> bytes:
    return (f'* {seq} FETCH (UID {uid} FLAGS ({flags}) INTERNALDATE "{date}" '
            f"RFC822.SIZE {size})").encode()


def test_fast_lines() -> None:
    msgs, scan = messages(line(1, 4), line(2, 7, "\\Flagged \\Recent", 5))
    assert not scan.slow
    assert [(m.ref.uid, m.size, m.flags) for m in msgs] == [
        (4, 100, frozenset({SEEN})), (7, 5, frozenset({FLAGGED}))]
    assert msgs[0].received == datetime(2020, 1, 5, 12, 4, 5, tzinfo=UTC)
    assert msgs[0].ref.uidvalidity == 9


def test_response_without_uid_is_dropped_and_never_changes_another_message() -> None:
    msgs, _ = messages(line(1, 5, ""), b"* 5 FETCH (FLAGS (\\Flagged))", line(2, 6, ""))
    assert [(m.ref.uid, m.flags) for m in msgs] == [(5, frozenset()), (6, frozenset())]


def test_unsolicited_response_with_uid_merges_in_arrival_order() -> None:
    msgs, _ = messages(line(1, 5, ""), b"* 1 FETCH (UID 5 FLAGS (\\Flagged))", line(2, 6))
    assert {m.ref.uid: m.flags for m in msgs} == {5: frozenset({FLAGGED}), 6: {SEEN}}
    msgs, _ = messages(b"* 1 FETCH (UID 5 FLAGS (\\Flagged))", line(1, 5, ""))
    assert msgs[0].flags == frozenset()  # the later response wins


def test_unusual_lines_go_to_the_general_parser() -> None:
    odd = (b'* 1 FETCH (FLAGS (\\Seen) UID 3 RFC822.SIZE 10 '
           b'INTERNALDATE "05-Jan-2020 13:04:05 +0100")')
    msgs, scan = messages(odd, line(2, 4, size=0))
    assert scan.slow and [m.ref.uid for m in msgs] == [3, 4]
    nil, scan = messages(b'* 1 FETCH (UID 3 FLAGS () INTERNALDATE "05-Jan-2020 13:04:05 +0100" '
                         b"RFC822.SIZE NIL)")
    assert nil == [] and scan.left_out == ["UID 3: no RFC822.SIZE (NIL or missing)"]
    far, scan = messages(line(1, 3, date="01-Jan-0001 00:00:00 +0100"))
    assert far == [] and scan.left_out and "out of range" in scan.left_out[0]


def test_out_of_order_and_duplicate_uids() -> None:
    msgs, _ = messages(line(1, 9), line(2, 3), line(3, 9, "\\Flagged"))
    assert [(m.ref.uid, m.flags) for m in msgs] == [(3, {SEEN}), (9, {FLAGGED})]


def test_vanished_and_exists() -> None:
    _, scan = messages(b"* VANISHED (EARLIER) 3:5,9", b"* 12 EXISTS", b"* 3 EXPUNGE")
    assert scan.vanished == ["(EARLIER) 3:5,9"] and scan.exists == 12


def test_header_lines() -> None:
    h = HeaderLines()
    h.feed([(b"* 1 FETCH (UID 4 BODY[HEADER.FIELDS (MESSAGE-ID)] {12}", b"Message-ID: x"), b")"])
    h.feed([(b"* 2 FETCH (UID 5 BODY[HEADER.FIELDS (MESSAGE-ID)] {3}", b"abc"), b" MODSEQ (7))"])
    h.feed([b"* 3 FETCH (FLAGS (\\Seen))"])
    h.feed([(b"* 3 FETCH (BODY[HEADER.FIELDS (MESSAGE-ID)] {3}", b"xyz"), b" UID 6)"])
    assert h.headers == {4: b"Message-ID: x", 5: b"abc", 6: b"xyz"}


@settings(max_examples=300, deadline=None)
@given(day=st.integers(1, 31), month=st.integers(0, 11), year=st.integers(1, 9999),
       h=st.integers(0, 23), mi=st.integers(0, 59), s=st.integers(0, 59),
       sign=st.sampled_from("+-"), zh=st.integers(0, 23), zm=st.integers(0, 59),
       pad=st.booleans())
def test_dates_by_slicing_agree_with_the_general_parser(day, month, year, h, mi, s, sign,
                                                        zh, zm, pad) -> None:  # type: ignore[no-untyped-def]
    text = (f"{day:2d}" if pad else f"{day:02d}") + \
        f"-{MONTHS[month]}-{year:04d} {h:02d}:{mi:02d}:{s:02d} {sign}{zh:02d}{zm:02d}"
    sliced = imap_utc(text.encode())
    general = parse_imap_datetime(text.encode())
    try:
        expected = general.astimezone(UTC) if general is not None else None
    except OverflowError:
        expected = None
    assert sliced == expected


class _Wire:
    """What ``stream`` uses of imaplib's connection, over canned bytes."""

    def __init__(self, data: bytes) -> None:
        import io

        self.file = io.BytesIO(data)
        self.sent: list[bytes] = []
        self.tagged_commands: dict[bytes, object] = {}

    def _new_tag(self) -> bytes:
        return b"A1"

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def readline(self) -> bytes:
        return self.file.readline()

    def read(self, size: int) -> bytes:
        return self.file.read(size)


REPLY = (
    b'* 1 FETCH (UID 5 FLAGS (\\Seen) INTERNALDATE "05-Jan-2020 13:04:05 +0100" '
    b"RFC822.SIZE 10)\r\n"
    b"* 2 FETCH (FLAGS (\\Flagged))\r\n"  # no UID: never attached to anything
    b'* 2 FETCH (UID 6 FLAGS () INTERNALDATE {26}\r\n05-Jan-2020 13:04:06 +0100'
    b" RFC822.SIZE 11)\r\n"
    b'* 3 FETCH (UID 7 FLAGS () INTERNALDATE "31-Feb-2020 13:04:06 +0100" RFC822.SIZE 1)\r\n'
    b"* 9 EXISTS\r\n"
    b"A1 OK done\r\n"
)


@pytest.mark.parametrize("by_line", [False, True])
def test_stream_gives_the_same_messages_with_or_without_the_line_feed(by_line: bool) -> None:
    wire = _Wire(REPLY + b"* 10 EXISTS\r\n")
    lines = ScanLines("INBOX", 3)
    stream(wire, b"UID FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE)", lines.feed,
           lines.feed_line if by_line else None)
    assert wire.sent == [b"A1 UID FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE)\r\n"]
    assert wire.file.read() == b"* 10 EXISTS\r\n"  # nothing read past the tagged reply
    msgs = lines.messages(lambda ref, f: "bad date" if ref.uid == 7 else Message(
        ref, f[b"RFC822.SIZE"], f[b"INTERNALDATE"].astimezone(UTC),
        frozenset(f[b"FLAGS"])))
    assert [(m.uid, m.size) for m in msgs] == [(5, 10), (6, 11)]
    assert msgs[0].received == datetime(2020, 1, 5, 12, 4, 5, tzinfo=UTC)
    assert msgs[1].received == datetime(2020, 1, 5, 12, 4, 6, tzinfo=UTC)
    assert lines.exists == 9 and lines.left_out == ["UID 7: bad date"]


@pytest.mark.parametrize("by_line", [False, True])
@pytest.mark.parametrize(("tail", "error"), [
    (b"* BYE going away\r\n", imaplib.IMAP4.abort),
    (b"A1 NO [SERVERBUG] sorry\r\n", imaplib.IMAP4.error),
    (b"* 4 FETCH (UID 8", imaplib.IMAP4.abort),  # EOF inside a line
    (b"", imaplib.IMAP4.abort),
])
def test_stream_errors(by_line: bool, tail: bytes, error: type[Exception]) -> None:
    wire = _Wire(REPLY.replace(b"A1 OK done\r\n", b"") + tail)
    lines = ScanLines("INBOX", 3)
    with pytest.raises(error):
        stream(wire, b"NOOP", lines.feed, lines.feed_line if by_line else None)
