"""FETCH parsing of the IMAP adapter: one dict per UID, the fast path, dates.

``parse_fetch`` never attaches an unsolicited response to another message; the fast path
(``parse_simple_fetch``, ``parse_imap_datetime``) gives exactly what imapclient's parser
gives, or nothing at all.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st
from imapclient.datetime_util import parse_to_datetime
from imapclient.response_parser import parse_fetch_response

from retention.adapters.imap.fetch import parse_fetch, parse_imap_datetime, parse_simple_fetch


def test_parse_fetch_ignores_unsolicited_responses_about_other_messages():
    # UID 2 is at sequence 1 (UID 1 was expunged); another client flags the message at
    # sequence 2 (UID 7), and the server tells us in the middle of our UID FETCH.
    data = [
        (b"1 (UID 2 FLAGS (\\Flagged) RFC822.SIZE 10 BODY[HEADER.FIELDS (MESSAGE-ID)] {17}",
         b"Message-ID: <a>\r\n"),
        b")",
        b"2 (FLAGS (\\Seen))",
        b"3 (UID 9 FLAGS () RFC822.SIZE 20)",
        b"3 (UID 9 FLAGS (\\Answered))",  # an update naming the UID: same message, merged
    ]
    # imapclient alone keys the FLAGS-only response by its sequence number 2 = UID 2:
    assert parse_fetch_response(data, False, True)[2][b"FLAGS"] == (b"\\Seen",)
    parsed = parse_fetch(data)
    assert sorted(parsed) == [2, 9]
    assert parsed[2][b"FLAGS"] == (b"\\Flagged",) and parsed[2][b"RFC822.SIZE"] == 10
    assert parsed[2][b"BODY[HEADER.FIELDS (MESSAGE-ID)]"] == b"Message-ID: <a>\r\n"
    assert parsed[9][b"FLAGS"] == (b"\\Answered",) and parsed[9][b"RFC822.SIZE"] == 20
    assert parse_fetch([None]) == {} and parse_fetch([]) == {}


# -- the FETCH fast path: the same result as imapclient's parser, or none at all ---------

_FLAG = st.sampled_from([b"\\Seen", b"\\Flagged", b"\\Deleted", b"\\Answered", b"\\Recent",
                         b"$Label1", b"Junk", b"\\*", b"NIL", b"0123", b"7"])
_ATOM = st.from_regex(rb"\A[A-Za-z0-9$\\.+\-_:*]{1,12}\Z")
_MONTH_NAMES = [b"Jan", b"feb", b"MAR", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct",
                b"Nov", b"Dec"]


@st.composite
def _imap_date(draw):
    if draw(st.integers(0, 9)) == 0:  # garbage or out of range
        return draw(st.sampled_from([b"31-Feb-2024 00:00:00 +0000", b"not a date",
                                     b"1-Jan-2024 25:00:00 +0000", b"01-Foo-2024 00:00:00 +0000",
                                     b"01-Jan-2024 10:00:00 +9999", b""]))
    when = draw(st.datetimes(datetime(1970, 1, 1), datetime(2100, 1, 1)))
    sign = draw(st.sampled_from(b"+-"))
    zone = draw(st.integers(0, 14)) * 100 + draw(st.sampled_from([0, 30, 45]))
    day = (b"%2d" if draw(st.booleans()) else b"%02d") % when.day
    return b"%s-%s-%04d %02d:%02d:%02d %c%04d" % (
        day, _MONTH_NAMES[when.month - 1], when.year, when.hour, when.minute, when.second,
        sign, zone)


def _quoted(text: bytes) -> bytes:
    return b'"' + text + b'"'


_TEXT = st.binary(max_size=20).filter(lambda b: all(32 <= c < 127 for c in b))
_VALUE = st.one_of(
    st.integers(0, 2**32).map(lambda n: str(n).encode()),
    _ATOM, st.just(b"NIL"),
    _TEXT.map(_quoted),  # may hold '"' or '\\': the fast path then leaves it to imapclient
    st.lists(_FLAG, max_size=4).map(lambda f: b"(" + b" ".join(f) + b")"),
    st.just(b"(1 (2 3))"),
)


@st.composite
def _fetch_response(draw):
    """[(name, value-or-literal)], rendered as imaplib hands a FETCH response over."""
    pairs: list[tuple[bytes, bytes | tuple[bytes]]] = []
    if draw(st.integers(0, 9)):
        pairs.append((b"UID", str(draw(st.integers(1, 2**32))).encode()))
    for _ in range(draw(st.integers(0, 5))):
        name = draw(st.sampled_from([b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"SAVEDATE",
                                     b"MODSEQ", b"X-Thing", b"BODY[HEADER.FIELDS (MESSAGE-ID)]",
                                     b"BODY[]", b"uid"]))
        if name in (b"INTERNALDATE", b"SAVEDATE") and draw(st.booleans()):
            value: bytes | tuple[bytes] = _quoted(draw(_imap_date()))
        elif name.startswith(b"BODY[") and draw(st.booleans()):
            value = (draw(st.binary(max_size=40)),)  # a literal
        else:
            value = draw(_VALUE)
        pairs.append((name, value))
    if draw(st.booleans()):
        draw(st.randoms()).shuffle(pairs)
    sep = draw(st.sampled_from([b" ", b" ", b"  ", b"\t"]))
    seq = str(draw(st.integers(0, 100_000))).encode()
    chunk: list = []
    text = seq + b" ("
    for i, (name, value) in enumerate(pairs):
        text += (sep if i else b"") + name + b" "
        if isinstance(value, tuple):
            literal = value[0]
            chunk.append((text + b"{%d}" % len(literal), literal))
            text = b""
        else:
            text += value
    chunk.append(text + b")")
    return chunk


def _usable(value):
    try:
        value.utcoffset()
    except ValueError:  # imapclient's zone for "+9999"
        return None
    return value


def _same(a, b) -> bool:
    if isinstance(b, datetime):
        b = _usable(b)
    if isinstance(a, datetime) or isinstance(b, datetime):
        return (isinstance(a, datetime) and isinstance(b, datetime) and a == b
                and a.utcoffset() == b.utcoffset())
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _check_against_imapclient(chunk) -> bool:
    ours = parse_simple_fetch(chunk)
    try:
        theirs = parse_fetch_response(chunk, False, False)
    except Exception:  # noqa: BLE001 - imapclient rejects it: so must we
        assert ours is None, (chunk, ours)
        return False
    if ours is not None:
        assert len(theirs) == 1, (chunk, theirs)
        (fields,) = theirs.values()
        assert _same(ours, fields), (chunk, ours, fields)
    return ours is not None


@given(_fetch_response())
def test_fast_fetch_parser_agrees_with_imapclient(chunk):
    _check_against_imapclient(chunk)


@given(st.binary(max_size=60))
def test_fast_fetch_parser_on_garbage(tail):
    _check_against_imapclient([b"1 (UID 5 " + tail])
    _check_against_imapclient([b"1 (" + tail + b")"])


def test_fast_fetch_parser_takes_the_common_responses():
    """The responses of a scan and of a Message-ID fetch take the fast path (else the
    tests above would pass with a fast path that never fires)."""
    scan = [b'12 (UID 34 FLAGS (\\Seen $X) INTERNALDATE " 7-Jul-1996 02:44:25 -0700" '
            b'RFC822.SIZE 2048 SAVEDATE "29-Nov-2026 01:40:00 +0000")']
    header = [(b"12 (UID 34 BODY[HEADER.FIELDS (MESSAGE-ID)] {19}", b"Message-ID: <a@b>\r\n"),
              b")"]
    empty = [b"3 (UID 4 FLAGS () SAVEDATE NIL)"]
    assert all(_check_against_imapclient(c) for c in (scan, header, empty))
    parsed = parse_fetch(scan + header + empty)
    assert parsed[34][b"INTERNALDATE"] == datetime(1996, 7, 7, 9, 44, 25, tzinfo=UTC)
    assert parsed[34][b"BODY[HEADER.FIELDS (MESSAGE-ID)]"] == b"Message-ID: <a@b>\r\n"
    assert parsed[34][b"FLAGS"] == (b"\\Seen", b"$X") and parsed[4][b"SAVEDATE"] is None


@given(_imap_date())
def test_imap_datetime_as_imapclient(value):
    try:
        theirs = parse_to_datetime(value, normalise=False)
        theirs.utcoffset()  # "+9999": a zone out of range, unusable: we say None
    except ValueError:
        theirs = None
    assert _same(parse_imap_datetime(value), theirs)
