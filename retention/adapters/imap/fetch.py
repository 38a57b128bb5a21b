"""FETCH responses -> ``{uid: {item: value}}``, safely and fast.

This module owns turning the untagged FETCH data imaplib hands over into one dict of items
per UID, and nothing else (no I/O: every rule is unit tested, the fast path against
imapclient's own parser). Two reasons it exists instead of imapclient's
``parse_fetch_response``:

* Safety: imapclient merges every response into one dict keyed by UID *or*, when a
  response carries no UID, by sequence number. An unsolicited ``* 5 FETCH (FLAGS (...))``
  about another message (another client changed its flags) then overwrites the flags of
  UID 5: one message's flags are attached to another, and a ``\\Flagged`` message can look
  unflagged to the planner. ``parse_fetch`` parses each response on its own, drops those
  without a UID and merges only responses naming the same UID.
* Speed: imapclient's lexer reads a response a byte at a time (most of a big scan's CPU).
  ``parse_simple_fetch`` reads the responses the agent asks for (scan metadata, header
  literals) with regular expressions and gives the very dict imapclient would; anything
  unusual is left to imapclient. INTERNALDATE/SAVEDATE go through ``parse_imap_datetime``,
  which parses the regular RFC 3501 form itself (aware, in the date's own offset) and
  leaves anything else to imapclient.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from imapclient.datetime_util import parse_to_datetime
from imapclient.response_parser import parse_fetch_response

# -- one dict per UID -----------------------------------------------------------------

_RESPONSE_START = re.compile(rb"^\d+ \(")


def parse_fetch(data: list[Any]) -> dict[int, dict[bytes, Any]]:
    """imaplib's untagged FETCH data -> ``{uid: {item: value}}``, one response at a time.

    imapclient's own parser merges every response into one dict keyed by UID *or*, when a
    response has no UID, by sequence number: an unsolicited ``* 5 FETCH (FLAGS (...))``
    about another message (another client changed its flags) would then overwrite the
    flags of UID 5, and a ``\\Flagged`` message could look unflagged. Here each response
    is parsed on its own, responses without a UID are dropped (they are not answers to
    our UID FETCH), and only responses naming the same UID are merged.
    """
    out: dict[int, dict[bytes, Any]] = {}
    if not data or data == [None]:
        return out
    chunk: list[Any] = []
    for item in data:
        if item is None:
            continue
        head = item[0] if isinstance(item, tuple) else item
        if chunk and _RESPONSE_START.match(bytes(head)):
            _merge(out, chunk)
            chunk = []
        chunk.append(item)
    if chunk:
        _merge(out, chunk)
    return out


def _merge(out: dict[int, dict[bytes, Any]], chunk: list[Any]) -> None:
    fast = parse_simple_fetch(chunk)
    if fast is not None:
        uid = fast.get(b"UID")
        if isinstance(uid, int):
            out.setdefault(uid, {}).update(fast)
        return
    for fields in parse_fetch_response(chunk, False, False).values():
        uid = fields.get(b"UID")
        if isinstance(uid, int):
            out.setdefault(uid, {}).update(fields)


# -- the fast path --------------------------------------------------------------------

# The fast path for the FETCH responses the agent asks for: a scan's metadata line
# (``UID FLAGS INTERNALDATE RFC822.SIZE SAVEDATE``) and header fields as a literal
# (``BODY[HEADER.FIELDS (MESSAGE-ID)] {58}``). imapclient's general lexer reads a response
# one byte at a time through generators (~150 us each: most of a 20,000-message scan's
# CPU). Here a response is split into tokens by one regular expression: atoms, numbers,
# NIL, plain quoted strings, parenthesised lists, section names (``BODY[...]``, read to the
# ``]`` as imapclient does) and literals. Anything else (an escaped quote, 8-bit bytes
# outside a literal, ENVELOPE/BODY structures, a malformed response) makes it give up, and
# imapclient's parser reads that response as before; the result is the same dict it would
# give (tested against it).
_WORD_CHAR = rb'[^\x00-\x20()%"\[\]{}\x7f-\xff]'
_TOKEN = re.compile(
    rb'[ \t]*(?:(\()|(\))|"([^"\\\r\n]*)"|\{(\d+)\}\Z'
    rb"|((?:" + _WORD_CHAR + rb"|\[[^\]\x00-\x1f\x7f-\xff]*\])+)(?=[ \t\r\n()]|\Z))"
)
_BLANK = re.compile(rb"[ \t\r\n]*")
_STRUCTURED = frozenset({b"ENVELOPE", b"BODY", b"BODYSTRUCTURE"})


def _atom(token: bytes) -> Any:
    # As imapclient's response_parser.atom: NIL, numbers without a leading zero, else bytes.
    if token == b"NIL":
        return None
    if token.isdigit() and (token[:1] != b"0" or len(token) == 1):
        return int(token)
    return token


def _tokens(chunk: Sequence[Any]) -> list[Any] | None:
    """The values of one response's pieces (imaplib: ``(text, literal)`` tuples, then the
    rest of the line), nested lists as tuples; None when not of the simple kind."""
    stack: list[list[Any]] = [[]]
    match = _TOKEN.match
    for piece in chunk:
        if isinstance(piece, tuple):
            if len(piece) != 2:
                return None
            text, literal = piece
        else:
            text, literal = piece, None
        if not isinstance(text, bytes) or not (literal is None or isinstance(literal, bytes)):
            return None
        pos, end = 0, len(text)
        while pos < end:
            m = match(text, pos)
            if m is None:
                if _BLANK.fullmatch(text, pos) is None:
                    return None
                break
            pos = m.end()
            opening, _closing, quoted, size, word = m.groups()
            if word is not None:
                stack[-1].append(_atom(word))
            elif quoted is not None:
                stack[-1].append(quoted)
            elif size is not None:  # "{n}" ends the text: the literal is its value
                if literal is None or len(literal) != int(size):
                    return None
                stack[-1].append(literal)
                literal = None
            elif opening is not None:
                stack.append([])
            elif len(stack) == 1:  # a ")" too many
                return None
            else:
                done = tuple(stack.pop())
                stack[-1].append(done)
        if literal is not None:  # a literal no "{n}" announced
            return None
    return stack[0] if len(stack) == 1 else None


# A one-line response of name-value pairs whose values are atoms, plain quoted strings or
# flat lists of atoms (a scan's ``UID 7 FLAGS (\\Seen) INTERNALDATE "..." RFC822.SIZE 99``):
# read pair by pair, several times faster than token by token. Anything else goes on to
# ``_tokens``.
_HEAD = re.compile(rb"(\d+) \(")
_PAIR = re.compile(
    rb"((?:" + _WORD_CHAR + rb"|\[[^\]\x00-\x1f\x7f-\xff]*\])+)"
    rb' (?:"([^"\\\r\n]*)"|\(([^\x00-\x1f()%"\[\]{}\x7f-\xff]*)\)|(' + _WORD_CHAR
    + rb"+)(?=[ )]))([ )])"
)


def _pairs(line: bytes) -> list[Any] | None:
    head = _HEAD.match(line)
    if head is None or not isinstance(seq := _atom(head.group(1)), int):
        return None
    items: list[Any] = []
    pos = head.end()
    match = _PAIR.match
    while True:
        m = match(line, pos)
        if m is None:
            return None
        name, quoted, listed, word, after = m.groups()
        items.append(name)
        if quoted is not None:
            items.append(quoted)
        elif listed is not None:
            items.append(tuple(_atom(t) for t in listed.split()))
        else:
            items.append(_atom(word))
        pos = m.end()
        if after == b")":
            break
    if pos < len(line) and _BLANK.fullmatch(line, pos) is None:
        return None
    return [seq, tuple(items)]


def parse_simple_fetch(chunk: Sequence[Any]) -> dict[bytes, Any] | None:
    """One FETCH response as imaplib gives it (``[b'12 (UID 7 FLAGS (\\\\Seen))']``) -> the
    fields dict imapclient's ``parse_fetch_response(chunk, False, False)`` gives for it
    (``SEQ`` included), or None when it is not of the simple kind handled here."""
    top = None
    if len(chunk) == 1 and isinstance(chunk[0], bytes):
        top = _pairs(chunk[0])
    if top is None:
        top = _tokens(chunk)
    if top is None or len(top) != 2 or not isinstance(top[0], int):
        return None
    items = top[1]
    if not isinstance(items, tuple) or len(items) % 2:
        return None
    fields: dict[bytes, Any] = {b"SEQ": top[0]}
    for i in range(0, len(items), 2):
        name, value = items[i], items[i + 1]
        if not isinstance(name, bytes):
            return None
        word = name.upper()
        if word == b"UID":
            if not isinstance(value, int):
                return None
            fields[word] = value
        elif word == b"INTERNALDATE":
            if value is not None and not isinstance(value, bytes):
                return None
            fields[word] = None if value is None else parse_imap_datetime(value)
        elif word in _STRUCTURED:
            return None
        else:
            fields[word] = value
    return fields


# -- dates ----------------------------------------------------------------------------

# INTERNALDATE / SAVEDATE (RFC 3501 date-time): " 7-Jul-1996 02:44:25 -0700".
_IMAP_DATE = re.compile(
    rb" ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"
)
_MONTHS = {
    m.encode(): i
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
_ZONES: dict[int, timezone] = {}


def parse_imap_datetime(value: bytes) -> datetime | None:
    """An IMAP date-time -> an aware datetime (its own offset), None when unparseable.

    The regular form is parsed here (imapclient's ``parse_to_datetime`` goes through
    ``email.utils`` at ~10 us a date); anything else is left to imapclient, as before.
    """
    m = _IMAP_DATE.fullmatch(value)
    month = _MONTHS.get(m.group(2).lower()) if m is not None else None
    if m is not None and month is not None:
        minutes = int(m.group(8)) * 60 + int(m.group(9))
        if m.group(7) == b"-":
            minutes = -minutes
        zone = _ZONES.get(minutes)
        try:
            if zone is None:
                zone = _ZONES.setdefault(minutes, timezone(timedelta(minutes=minutes)))
            return datetime(
                int(m.group(3)), month, int(m.group(1)), int(m.group(4)), int(m.group(5)),
                int(m.group(6)), tzinfo=zone,
            )
        except ValueError:
            pass  # out of range: imapclient decides, as it always did
    try:
        parsed: datetime = parse_to_datetime(bytes(value), normalise=False)
        parsed.utcoffset()  # "+9999" makes a zone no datetime arithmetic accepts
    except (ValueError, TypeError, OverflowError):
        return None
    return parsed
