"""POP3 wire parsing without a server: multi-line bodies, listings, CAPA, headers."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retention.adapters.pop3 import (
    parse_capa,
    parse_headers,
    parse_listing,
    read_multiline,
    unique_uidls,
)


def stuff(message: bytes) -> bytes:
    """What a server sends for a message: dot-stuffed lines, then the terminating dot."""
    lines = message.split(b"\r\n")
    assert lines[-1] == b""
    out = b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in lines[:-1])
    return out + b".\r\n"


def test_multiline_unstuffs_and_keeps_crlf():
    message = b"Subject: x\r\n\r\n.leading\r\n..two\r\n.\r\nend\r\n"
    stream = io.BytesIO(stuff(message) + b"+OK next\r\n")
    assert read_multiline(stream) == message
    assert stream.read() == b"+OK next\r\n"  # nothing past the terminator was consumed


def test_multiline_reads_lines_longer_than_poplib_allows():
    message = b"Subject: long\r\n\r\n" + b"x" * 300_000 + b"\r\n.y" + b"z" * 70_000 + b"\r\n"
    assert read_multiline(io.BytesIO(stuff(message))) == message


def test_multiline_keeps_bare_lf_as_sent():
    assert read_multiline(io.BytesIO(b"a\nb\r\n.\r\n")) == b"a\nb\r\n"


def test_multiline_eof_is_an_error():
    with pytest.raises(EOFError):
        read_multiline(io.BytesIO(b"a\r\nb\r\n"))


@given(st.lists(st.binary(max_size=200).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
                max_size=30))
def test_multiline_roundtrip(lines):
    message = b"".join(ln + b"\r\n" for ln in lines)
    assert read_multiline(io.BytesIO(stuff(message))) == message


def test_capa():
    caps = parse_capa(b"CAPA\r\ntop\r\nUIDL\r\nSASL PLAIN LOGIN\r\nEXPIRE 30 USER\r\n\r\n")
    assert caps == {"CAPA": (), "TOP": (), "UIDL": (), "SASL": ("PLAIN", "LOGIN"),
                    "EXPIRE": ("30", "USER")}


def test_listing():
    assert parse_listing(b"1 000000016b0b78b3\r\n2 abc\r\n", "UIDL") == {
        1: "000000016b0b78b3", 2: "abc"
    }
    assert parse_listing(b"", "LIST") == {}
    with pytest.raises(ValueError, match="malformed UIDL"):
        parse_listing(b"x abc\r\n", "UIDL")
    with pytest.raises(ValueError):
        parse_listing(b"1\r\n", "LIST")


def test_repeated_uidls_are_left_out():
    assert unique_uidls({1: "a", 2: "b", 3: "a"}) == {"b": 2}


def test_headers_date_and_message_id():
    raw = (b"From: x\r\nDate: Tue, 2 Jan 2024 03:04:05 +0200\r\n"
           b"Message-ID:\r\n <abc@example.com> (comment)\r\n\r\n")
    sent, date_raw, mid = parse_headers(raw)
    assert sent == datetime(2024, 1, 2, 1, 4, 5, tzinfo=UTC)
    assert sent.utcoffset() == timedelta(hours=2)
    assert date_raw is None
    assert mid == "<abc@example.com>"


def test_headers_minus_zero_zone_is_utc():
    sent, _, _ = parse_headers(b"Date: 2 Jan 2024 03:04:05 -0000\r\n\r\n")
    assert sent == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_headers_first_field_wins_and_body_is_ignored():
    raw = (b"Date: Tue, 2 Jan 2024 03:04:05 +0000\r\nDate: garbage\r\n  more\r\n\r\n"
           b"Date: Wed, 3 Jan 2024 03:04:05 +0000\r\n")
    sent, date_raw, _ = parse_headers(raw)
    assert sent == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert date_raw is None


@pytest.mark.parametrize("raw", [
    b"Subject: none\r\n\r\n",
    b"Date: yesterday-ish\r\n\r\n",
    b"Date: Tue, 2 Jan 2024 03:04:05 +9999\r\n\r\n",
    b"Date: Tue, 32 Jan 2024 03:04:05 +0000\r\n\r\n",
    b"Date: \xff\xfe\x00\r\n\r\n",
    b"\xff\xfe garbage without colon\r\n\r\n",
    b"",
])
def test_headers_garbage_gives_none(raw):
    sent, date_raw, mid = parse_headers(raw)
    assert sent is None
    assert mid is None
    if b"Date:" in raw and raw.split(b"Date:")[1].strip():
        assert date_raw  # the report can say which header could not be read


@given(st.binary(max_size=500))
def test_headers_never_raise(raw):
    sent, _, _ = parse_headers(raw)
    assert sent is None or sent.tzinfo is not None
