"""Pure parts of the IMAP adapter: UID sets, batching, headers, names, error texts, TLS."""

from __future__ import annotations

import imaplib
import logging
import ssl
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from imapclient.exceptions import IMAPClientError

from retention.adapters import tls
from retention.adapters.imap_wire import (
    ESCAPED_SLASH,
    MAX_SET_CHARS,
    compress_uids,
    display_name,
    expand_uid_set,
    normalise_flags,
    parse_appenduid,
    parse_copyuid,
    parse_date,
    parse_header_fields,
    parse_message_id,
    reply_text,
    scrub,
    selectable,
    server_name,
    special_uses,
    uid_batches,
)
from retention.errors import TlsError


def test_compress_only_names_given_uids():
    assert compress_uids([9, 1, 2, 3, 7, 10, 3]) == "1:3,7,9:10"
    assert compress_uids([5]) == "5"
    with pytest.raises(ValueError):
        compress_uids([])


@given(st.sets(st.integers(1, 5000), min_size=1))
def test_compress_roundtrip(uids):
    assert expand_uid_set(compress_uids(uids)) == sorted(uids)


@given(st.sets(st.integers(1, 4_000_000_000), min_size=1, max_size=3000),
       st.integers(1, 1200))
def test_batches_partition_and_respect_limits(uids, max_count):
    batches = list(uid_batches(uids, max_count))
    assert [u for b in batches for u in b] == sorted(uids)
    for batch in batches:
        assert len(batch) <= max_count
        assert len(compress_uids(batch)) <= MAX_SET_CHARS


def test_sparse_ten_digit_uids_are_split_by_length():
    uids = range(4_000_000_000, 4_000_000_000 + 2 * 1000, 2)  # 1000 UIDs, no runs
    batches = list(uid_batches(uids, 1000))
    assert len(batches) == 2
    assert all(len(compress_uids(b)) <= MAX_SET_CHARS for b in batches)
    dense = list(uid_batches(range(1, 50_001), 1000))
    assert len(dense) == 50 and compress_uids(dense[0]) == "1:1000"


def test_expand_accepts_reversed_ranges():
    assert expand_uid_set("5:3,9") == [3, 4, 5, 9]


def test_header_fields_unfold_and_never_raise_on_8bit():
    raw = b"Date: Mon, 1 Jan 2024\r\n 10:00:00 +0200\r\nMessage-ID:  <a@b>  \r\n\r\n"
    fields = parse_header_fields(raw)
    assert fields["date"] == "Mon, 1 Jan 2024 10:00:00 +0200"
    assert parse_message_id(fields["message-id"]) == "<a@b>"
    weird = parse_header_fields(b"Date: \xff\xfe garbage \x80\r\nMessage-ID: <\xe9@x>\r\n\r\n")
    assert weird["date"].startswith("\ufffd")
    assert parse_date(weird["date"])[0] is None
    assert parse_header_fields(None) == {} and parse_header_fields(b"\r\n") == {}


@pytest.mark.parametrize(
    ("value", "sent", "raw"),
    [
        ("Mon, 01 Jan 2024 10:00:00 +0200", datetime(2024, 1, 1, 8, 0, tzinfo=UTC), None),
        ("Mon, 01 Jan 2024 10:00:00 -0000", datetime(2024, 1, 1, 10, 0, tzinfo=UTC), None),
        ("01 Jan 2024 10:00:00", datetime(2024, 1, 1, 10, 0, tzinfo=UTC), None),
        ("yesterday-ish", None, "yesterday-ish"),
        ("Mon, 99 Foo 2024 99:99:99 +9999", None, "Mon, 99 Foo 2024 99:99:99 +9999"),
        ("", None, None),
        (None, None, None),
    ],
)
def test_parse_date(value, sent, raw):
    parsed, raw_text = parse_date(value)
    assert parsed == sent and raw_text == raw
    if parsed is not None:
        assert parsed.tzinfo is not None


def test_flags_canonical_case_and_recent_dropped():
    assert normalise_flags([b"\\SEEN", b"\\Recent", b"$Label1", "\\flagged"]) == {
        "\\Seen", "$Label1", "\\Flagged"}


def test_response_codes():
    assert parse_appenduid(b"[APPENDUID 1700000000 42] Append completed.") == (1700000000, 42)
    assert parse_appenduid(b"Append completed.") is None
    assert parse_copyuid("[COPYUID 7 1:3,5 10:13] Done") == (7, [1, 2, 3, 5], [10, 11, 12, 13])
    assert parse_copyuid("[COPYUID 7 1:3 10] Done") is None  # lengths differ: unusable


def test_names_with_other_delimiters():
    assert display_name("INBOX.Lists.python", ".") == "INBOX/Lists/python"
    assert display_name("inbox", "/") == "INBOX"
    shown = display_name("INBOX.a/b", ".")
    assert shown == f"INBOX/a{ESCAPED_SLASH}b"
    assert server_name(shown, ".") == "INBOX.a/b"
    assert server_name("Archive/2024", ".") == "Archive.2024"
    assert server_name("ゴミ箱", "/") == "ゴミ箱"
    assert display_name("a/b", None) == f"a{ESCAPED_SLASH}b" and server_name(
        f"a{ESCAPED_SLASH}b", None) == "a/b"


def test_special_use_and_selectable():
    assert special_uses([b"\\HasNoChildren", b"\\trash"]) == {"\\Trash"}
    assert special_uses([b"\\AllMail", b"\\Spam"]) == {"\\All", "\\Junk"}
    assert not selectable([b"\\Noselect"]) and not selectable([b"\\NonExistent"])
    assert selectable([b"\\HasChildren"])


def test_reply_text_keeps_only_the_server_words():
    bad = imaplib.IMAP4.error("FETCH command error: BAD [b'Error in IMAP command: bad set']")
    assert reply_text(bad) == "BAD Error in IMAP command: bad set"
    no = IMAPClientError("append failed: [OVERQUOTA] Quota exceeded (mailbox is full)")
    assert reply_text(no) == "[OVERQUOTA] Quota exceeded (mailbox is full)"
    assert reply_text(imaplib.IMAP4.abort("socket error: EOF")) == "socket error: EOF"
    assert scrub("echo hunter22 x", ["hunter22"]) == "echo *** x"


def test_make_context_verifies_by_default(tmp_path):
    ctx = tls.make_context(None, True)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    with pytest.raises(TlsError, match="ca_file"):
        tls.make_context(tmp_path / "missing.pem", True)
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(TlsError, match="ca_file"):
        tls.make_context(tmp_path / "junk.pem", True)


def test_unverified_context_warns_once(caplog, monkeypatch):
    monkeypatch.setattr(tls, "_warned_unverified", False)
    with caplog.at_level(logging.WARNING, logger="retention.tls"):
        ctx = tls.make_context(None, False)
        tls.make_context(None, False)
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    assert len([r for r in caplog.records if "NOT verified" in r.message]) == 1


def test_classify_ssl_errors():
    err = ssl.SSLCertVerificationError(1, "certificate verify failed")
    err.verify_message = "unable to get local issuer certificate"
    out = tls.classify_ssl_error(err, "mail:993")
    assert isinstance(out, TlsError)
    assert str(out) == "mail:993: certificate verification failed: unable to get local issuer " \
        "certificate"
    wrong = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    wrong.reason = "WRONG_VERSION_NUMBER"
    assert "starttls" in str(tls.classify_ssl_error(wrong))


def test_naive_offsets_compare():
    # sanity: aware dates from different zones compare as instants
    a = datetime(2024, 1, 1, 10, tzinfo=timezone(timedelta(hours=2)))
    assert parse_date("Mon, 01 Jan 2024 10:00:00 +0200")[0] == a


def test_parse_fetch_ignores_unsolicited_responses_about_other_messages():
    from imapclient.response_parser import parse_fetch_response

    from retention.adapters.imap_wire import parse_fetch

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
    from imapclient.response_parser import parse_fetch_response

    from retention.adapters.imap_wire import parse_simple_fetch

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
    from retention.adapters.imap_wire import parse_fetch

    parsed = parse_fetch(scan + header + empty)
    assert parsed[34][b"INTERNALDATE"] == datetime(1996, 7, 7, 9, 44, 25, tzinfo=UTC)
    assert parsed[34][b"BODY[HEADER.FIELDS (MESSAGE-ID)]"] == b"Message-ID: <a@b>\r\n"
    assert parsed[34][b"FLAGS"] == (b"\\Seen", b"$X") and parsed[4][b"SAVEDATE"] is None


@given(_imap_date())
def test_imap_datetime_as_imapclient(value):
    from imapclient.datetime_util import parse_to_datetime

    from retention.adapters.imap_wire import parse_imap_datetime

    try:
        theirs = parse_to_datetime(value, normalise=False)
        theirs.utcoffset()  # "+9999": a zone out of range, unusable: we say None
    except ValueError:
        theirs = None
    assert _same(parse_imap_datetime(value), theirs)
