"""Pure helpers of the IMAP adapter: UID sets, batching, headers, names, reply texts.

Nothing here does I/O, so every rule of the wire format the adapter relies on is unit
tested on its own: how UID sets are compressed and split so command lines stay under
8 KB, how a Date/Message-ID header is parsed without ever raising, how response codes
(``APPENDUID``, ``COPYUID``) are read, how server folder names map to the ``/``-separated
names the rest of the agent uses, and how an imaplib exception becomes a one-line cause.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any

from imapclient.datetime_util import parse_to_datetime
from imapclient.response_parser import parse_fetch_response

from retention.model import ANSWERED, DELETED, DRAFT, FLAGGED, RECENT, SEEN, SpecialUse

# A UID set of a batch stays below this many characters, so with the command around it
# ("TAG UID FETCH <set> (FLAGS INTERNALDATE ...)") the line is far below 8 KB, the limit
# RFC 7162 section 4 recommends clients respect.
MAX_SET_CHARS = 6000

# "/" inside one level of a name on a server whose separator is not "/" (e.g. Courier's
# "INBOX.a/b") is shown as U+2215 DIVISION SLASH, so "/" always means a level boundary.
ESCAPED_SLASH = "\u2215"

_SYSTEM_FLAGS = {f.lower(): f for f in (SEEN, FLAGGED, DELETED, RECENT, ANSWERED, DRAFT)}
_SPECIAL_USES = {u.value.lower(): u.value for u in SpecialUse}
# Gmail's deprecated XLIST names for the same attributes.
_SPECIAL_USES.update({"\\allmail": "\\All", "\\spam": "\\Junk", "\\starred": "\\Flagged"})
_NOT_SELECTABLE = frozenset({"\\noselect", "\\nonexistent"})


# -- UID sets -------------------------------------------------------------------------


def _runs(uids: Iterable[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for uid in sorted(set(uids)):
        if runs and uid == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], uid)
        else:
            runs.append((uid, uid))
    return runs


def _run_text(run: tuple[int, int]) -> str:
    return str(run[0]) if run[0] == run[1] else f"{run[0]}:{run[1]}"


def compress_uids(uids: Iterable[int]) -> str:
    """``[1, 2, 3, 7, 9, 10]`` -> ``"1:3,7,9:10"``. Only the given UIDs: a range ``a:b``
    is emitted only when every UID from a to b is in the input, so a set never names a
    message that was not asked for."""
    text = ",".join(_run_text(r) for r in _runs(uids))
    if not text:
        raise ValueError("empty UID set")
    return text


def expand_uid_set(text: str, limit: int = 1_000_000) -> list[int]:
    """``"1:3,7"`` -> ``[1, 2, 3, 7]`` (as in COPYUID; ``a:b`` with a > b allowed)."""
    out: list[int] = []
    for part in text.strip().split(","):
        lo, sep, hi = part.partition(":")
        a = int(lo)
        b = int(hi) if sep else a
        a, b = min(a, b), max(a, b)
        if len(out) + (b - a + 1) > limit:
            raise ValueError("UID set too large")
        out.extend(range(a, b + 1))
    return out


def uid_batches(
    uids: Iterable[int], max_count: int = 1000, max_chars: int = MAX_SET_CHARS
) -> Iterator[list[int]]:
    """Sorted batches of at most ``max_count`` UIDs whose compressed set has at most
    ``max_chars`` characters (sparse 10-digit UIDs would otherwise make 1000 UIDs ~11 KB)."""
    batch: list[int] = []
    chars = 0  # length of compress_uids(batch)
    run_start = 0
    for uid in sorted(set(uids)):
        if batch and uid == batch[-1] + 1:
            # Extends the last run: "a" -> "a:uid" or "a:b" -> "a:uid".
            old = _run_text((run_start, batch[-1]))
            new = _run_text((run_start, uid))
            added = len(new) - len(old)
        else:
            added = len(str(uid)) + (1 if batch else 0)
        if batch and (len(batch) >= max_count or chars + added > max_chars):
            yield batch
            batch, chars = [], 0
            added = len(str(uid))
        if not batch or uid != batch[-1] + 1:
            run_start = uid
        batch.append(uid)
        chars += added
    if batch:
        yield batch


# -- FETCH responses ------------------------------------------------------------------

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


# -- headers --------------------------------------------------------------------------


def parse_header_fields(raw: bytes | None) -> dict[str, str]:
    """The fields of a ``BODY[HEADER.FIELDS (...)]`` reply: lower-case name -> first value.

    Unfolded, decoded as UTF-8 with replacement: 8-bit garbage never raises.
    """
    fields: dict[str, str] = {}
    if not raw:
        return fields
    text = raw.decode("utf-8", errors="replace")
    # Unfold (RFC 5322 2.2.3): a line break followed by white space continues the field.
    text = re.sub(r"\r?\n(?=[ \t])", "", text)
    for line in re.split(r"\r?\n", text):
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            continue
        fields.setdefault(name.lower(), value.strip())
    return fields


def parse_date(value: str | None) -> tuple[datetime | None, str | None]:
    """(parsed aware UTC datetime, None) or (None, raw text) when the header is unparseable.

    A missing header gives (None, None). A date without a zone (or ``-0000``) is taken as
    UTC, as RFC 5322 3.3 suggests for ``-0000``.
    """
    if value is None or not value.strip():
        return None, None
    try:
        parsed = parsedate_to_datetime(value)
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=UTC), None
        return parsed.astimezone(UTC), None
    except (TypeError, ValueError, IndexError, OverflowError):
        return None, one_line(value, 200)


def parse_message_id(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


def aware_utc(when: datetime) -> datetime:
    """A naive datetime that slipped through is UTC; aware ones are converted to UTC."""
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


# A folder's messages share a handful of flag combinations: one frozenset each (a scan
# of 20,000 "\\Seen" messages holds one set, not 20,000). Bounded: keywords vary more.
_FLAG_SETS: dict[tuple[Any, ...], frozenset[str]] = {}
_FLAG_SETS_MAX = 4096


def normalise_flags(flags: Iterable[bytes | str]) -> frozenset[str]:
    """Flags as str, system flags in their canonical case, ``\\Recent`` dropped.

    ``\\Recent`` is session state (RFC 3501 2.3.2), not something a message keeps.
    """
    key = flags if isinstance(flags, tuple) else None
    if key is not None and (known := _FLAG_SETS.get(key)) is not None:
        return known
    out: set[str] = set()
    for flag in flags:
        text = flag.decode("utf-8", errors="replace") if isinstance(flag, bytes) else str(flag)
        text = _SYSTEM_FLAGS.get(text.lower(), text)
        if text != RECENT:
            out.add(text)
    result = frozenset(out)
    if key is not None and len(_FLAG_SETS) < _FLAG_SETS_MAX:
        _FLAG_SETS[key] = result
    return result


# -- response codes -------------------------------------------------------------------


def response_code(text: bytes | str | None, code: str) -> str | None:
    """The argument of ``[CODE args]`` in a reply text, or None."""
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    m = re.search(r"\[" + re.escape(code) + r"(?: ([^\]]*))?\]", text, re.IGNORECASE)
    if m is None:
        return None
    return m.group(1) or ""


def parse_appenduid(text: bytes | str | None) -> tuple[int, int] | None:
    """``[APPENDUID <uidvalidity> <uid>]`` -> (uidvalidity, uid)."""
    args = response_code(text, "APPENDUID")
    if not args:
        return None
    parts = args.split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def parse_copyuid(text: bytes | str | None) -> tuple[int, list[int], list[int]] | None:
    """``[COPYUID <uidvalidity> <src set> <dst set>]`` -> (uidvalidity, src, dst)."""
    args = response_code(text, "COPYUID")
    if not args:
        return None
    parts = args.split()
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    try:
        src, dst = expand_uid_set(parts[1]), expand_uid_set(parts[2])
    except ValueError:
        return None
    if len(src) != len(dst):
        return None
    return int(parts[0]), src, dst


# -- folder names ---------------------------------------------------------------------


def display_name(server_name: str, delimiter: str | None) -> str:
    """A decoded server name -> the agent's name: ``/`` between levels, ``INBOX`` upper."""
    if delimiter == "/":
        parts = server_name.split("/")
    elif delimiter:
        parts = [p.replace("/", ESCAPED_SLASH) for p in server_name.split(delimiter)]
    else:  # a flat namespace: "/" is just a character
        parts = [server_name.replace("/", ESCAPED_SLASH)]
    if parts and parts[0].upper() == "INBOX":
        parts[0] = "INBOX"
    return "/".join(parts)


def server_name(display: str, delimiter: str | None) -> str:
    """The inverse of ``display_name`` (the server name still decoded, not modified UTF-7)."""
    if delimiter == "/":
        return display
    if not delimiter:
        return display.replace(ESCAPED_SLASH, "/")
    return delimiter.join(p.replace(ESCAPED_SLASH, "/") for p in display.split("/"))


def special_uses(flags: Iterable[bytes | str]) -> frozenset[str]:
    out = set()
    for flag in flags:
        text = flag.decode("ascii", errors="replace") if isinstance(flag, bytes) else str(flag)
        use = _SPECIAL_USES.get(text.lower())
        if use is not None:
            out.add(use)
    return frozenset(out)


def selectable(flags: Iterable[bytes | str]) -> bool:
    for flag in flags:
        text = flag.decode("ascii", errors="replace") if isinstance(flag, bytes) else str(flag)
        if text.lower() in _NOT_SELECTABLE:
            return False
    return True


# -- error texts ----------------------------------------------------------------------

_IMAPLIB_ERROR = re.compile(r"^\s*(\w+) command error: (\w+) (\[.*\])\s*$", re.DOTALL)
_IMAPCLIENT_ERROR = re.compile(r"^\s*[\w ]+ failed: (.*)$", re.DOTALL)


def one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def reply_text(exc: BaseException) -> str:
    """The server's words from an imaplib/imapclient exception, as one line.

    imaplib says ``FETCH command error: BAD [b'Error in IMAP command ...']`` and
    imapclient ``fetch failed: [OVERQUOTA] Quota exceeded``; both keep only what the
    server said (neither echoes command arguments, so no password can be in them; the
    caller scrubs anyway).
    """
    text = str(exc)
    m = _IMAPLIB_ERROR.match(text)
    if m:
        status, payload = m.group(2), m.group(3)
        try:
            items = ast.literal_eval(payload)
        except (ValueError, SyntaxError):
            items = [payload]
        words = [
            i.decode("utf-8", errors="replace") if isinstance(i, bytes) else str(i)
            for i in (items if isinstance(items, list) else [items])
            if i is not None
        ]
        return one_line(f"{status} {' '.join(words)}")
    m = _IMAPCLIENT_ERROR.match(text)
    if m:
        return one_line(m.group(1))
    return one_line(text) or type(exc).__name__


def scrub(text: str, secrets: Sequence[str]) -> str:
    """Remove secrets from a message (defence in depth; messages are built from replies)."""
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "***")
    return text
