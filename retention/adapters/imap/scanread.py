"""A scan's metadata FETCH, read straight off the socket and parsed a line at a time.

This module owns the hot loop of a big scan: one ``UID FETCH <set> (UID FLAGS
INTERNALDATE RFC822.SIZE [SAVEDATE])`` whose answer is 100 to 200 bytes a message. Three
things make it cheap (a 200,000-message scan spent 15 of 34 s in the general parser):

* ``stream`` sends the command itself and reads the reply line by line from imaplib's
  socket file, so no list of 200,000 responses is ever built and nothing goes through
  imaplib's per-response regular expressions;
* ``ScanLines.feed`` matches each line with one compiled pattern of the exact shape
  Dovecot, Cyrus and most servers send (items in any of the usual orders are not
  needed: anything else falls back, see below);
* ``imap_utc`` turns the fixed-width RFC 3501 date-time into an aware UTC datetime by
  slicing, with the midnight of each date cached, instead of ``strptime``.

The parser's safety properties are those of ``fetch.parse_fetch``, which every line the
fast pattern does not match is handed to: a response without a UID is dropped (it is
not an answer to our UID FETCH: an unsolicited ``* 5 FETCH (FLAGS ...)`` about another
message must never change UID 5), a response's items are only ever attached to the UID
inside that same response, and two responses naming the same UID are merged in arrival
order, later items winning (``parse_fetch``'s rule).
"""

from __future__ import annotations

import imaplib
import re
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from typing import Any

from retention.adapters.imap.fetch import parse_fetch
from retention.adapters.imap.wire import normalise_flags
from retention.model import Message, MessageRef

# -- dates by slicing -----------------------------------------------------------------

_MONTHS = {m.encode(): i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_MIDNIGHTS: dict[bytes, int] = {}  # b"05-Jan-2020" -> its midnight in seconds since 1970
_MIDNIGHTS_MAX = 100_000  # distinct days: bounded all the same
_UNIX_DAY = date(1970, 1, 1).toordinal()
_DATE = rb"[ 0-9][0-9]-[A-Z][a-z]{2}-[0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} [+-][0-9]{4}"
_SHAPE = re.compile(_DATE)
_from_epoch = datetime.fromtimestamp


def imap_utc(value: bytes) -> datetime | None:
    """``b"05-Jan-2020 13:04:05 +0100"`` -> 2020-01-05 12:04:05 UTC; None when the value
    is not exactly of that fixed-width form or out of range (the caller then falls back
    to the general parser, which decides as it always did)."""
    if _SHAPE.fullmatch(value) is None:
        return None
    return _shaped_utc(value)


def _shaped_utc(value: bytes) -> datetime | None:
    # value matched _DATE, so every position read below is a digit (48 is b"0"). The
    # local midnight of each day is cached as seconds since 1970; the time of day and the
    # zone are added as integers and one datetime is made from the sum: a third of the
    # cost of datetime arithmetic, for each of a big scan's messages.
    midnight = _MIDNIGHTS.get(value[:11])
    try:
        if midnight is None:
            month = _MONTHS.get(value[3:6])
            if month is None:
                return None
            day = value[1] - 48 + (0 if value[0] == 32 else (value[0] - 48) * 10)
            midnight = (date(int(value[7:11]), month, day).toordinal() - _UNIX_DAY) * 86400
            if len(_MIDNIGHTS) < _MIDNIGHTS_MAX:
                _MIDNIGHTS[value[:11]] = midnight
        hours = value[12] * 10 + value[13] - 528  # 528 = 48 * 11
        minutes = value[15] * 10 + value[16] - 528
        seconds = value[18] * 10 + value[19] - 528
        zone_h = value[22] * 10 + value[23] - 528
        zone_m = value[24] * 10 + value[25] - 528
        if hours > 23 or minutes > 59 or seconds > 59 or zone_h > 23 or zone_m > 59:
            return None
        offset = zone_h * 3600 + zone_m * 60
        if value[21] == 45:  # "-": west of UTC, so UTC is later
            offset = -offset
        return _from_epoch(midnight + hours * 3600 + minutes * 60 + seconds - offset, UTC)
    except (ValueError, OverflowError, OSError):  # 31 February, year 0, out of range
        return None


_scanned = Message.scanned


# -- one line, one pattern ------------------------------------------------------------

# "* 12 FETCH (UID 7 [MODSEQ (n) ]FLAGS (...) INTERNALDATE "..." RFC822.SIZE n
#  [SAVEDATE "..."|NIL][ MODSEQ (n)])": flags are atoms only (no quotes, literals,
# brackets or 8-bit bytes), as in fetch._PAIR.
_FLAG_LIST = rb"[^\x00-\x1f()%\"\[\]{}\x7f-\xff]*"
_LINE = re.compile(
    rb"\* [0-9]+ FETCH \(UID ([0-9]+) (?:MODSEQ \([0-9]+\) )?FLAGS \((" + _FLAG_LIST + rb")\)"
    rb' INTERNALDATE "(' + _DATE + rb')" RFC822\.SIZE ([0-9]+)'
    rb'(?: SAVEDATE (?:"(' + _DATE + rb')"|(NIL)))?(?: MODSEQ \([0-9]+\))?\)'
)
_LITERAL = re.compile(rb"\{([0-9]+)\}\Z")
_UNTAGGED_NUMBER = re.compile(rb"\* ([0-9]+) ([A-Za-z]+)")
_FETCH_HEAD = re.compile(rb"\* ([0-9]+) FETCH ", re.IGNORECASE)

class ScanLines:
    """Collects the messages of one metadata FETCH of ``folder`` from ``stream``'s lines.

    ``rows`` holds the messages of the fast lines in arrival order (built as they come:
    no intermediate row per message; flag sets, sizes and runs of equal dates shared);
    ``slow`` the ``{item: value}`` dicts of the responses only ``fetch.parse_fetch``
    could read, as (rows before it, UID, fields) in arrival order. ``vanished`` the UID
    sets a ``* VANISHED`` named, ``exists`` the last ``* n EXISTS``.
    """

    def __init__(self, folder: str, validity: int) -> None:
        self.folder = folder
        self.validity = validity
        self.rows: list[Message] = []
        self.slow: list[tuple[int, int, dict[bytes, Any]]] = []
        self.vanished: list[str] = []
        self.exists: int | None = None
        self.left_out: list[str] = []
        self._ordered = True
        self._last_uid = 0
        self._flag_sets: dict[bytes, frozenset[str]] = {}
        self._sizes: dict[bytes, int] = {}
        self._dates: list[Any] = [None, None, None, None]  # last (bytes, datetime) x 2

    def feed(self, chunk: list[Any]) -> None:
        """One untagged response: ``[line]``, or imaplib-style pieces around literals."""
        first = chunk[0]
        line = first if isinstance(first, bytes) else None
        if line is not None and len(chunk) == 1:
            m = _LINE.fullmatch(line)
            if m is not None and self._fast(*m.group(1, 2, 3, 4, 5)):
                return
            if line.startswith(b"* VANISHED "):
                self.vanished.append(line[11:].decode("ascii", "replace"))
                return
            number = _UNTAGGED_NUMBER.match(line)
            if number is not None and number.group(2).upper() == b"EXISTS":
                self.exists = int(number.group(1))
                return
        self._slow(chunk)

    def feed_line(self, line: bytes) -> None:
        """One untagged response of one line without a literal (``stream``'s
        ``line_feed``): the fast pattern first, else as ``feed([line])``."""
        m = _LINE.fullmatch(line)
        if m is None or not self._fast(*m.groups()):
            self.feed([line])

    def _fast(self, uid_b: bytes, flags_b: bytes, date_b: bytes, size_b: bytes,
              saved_b: bytes | None, _nil: bytes | None = None) -> bool:
        dates = self._dates
        # Mail arrives in bulk: runs of equal dates share one datetime object.
        if date_b == dates[0]:
            received = dates[1]
        else:
            received = _shaped_utc(date_b)
            if received is None:
                return False  # out of range: the general parser says why
            dates[0], dates[1] = date_b, received
        saved = None
        if saved_b is not None:
            if saved_b == date_b:  # saved as it arrived (a delivery): one object for both
                saved = received
            elif saved_b == dates[2]:
                saved = dates[3]
            else:
                saved = _shaped_utc(saved_b)
                if saved is None:
                    return False
                dates[2], dates[3] = saved_b, saved
        flags = self._flag_sets.get(flags_b)
        if flags is None:
            flags = normalise_flags(tuple(flags_b.split()))
            if len(self._flag_sets) < 4096:
                self._flag_sets[flags_b] = flags
        size = self._sizes.get(size_b)
        if size is None:
            size = int(size_b)
            if len(self._sizes) < 65536:
                self._sizes[size_b] = size
        uid = int(uid_b)
        if uid <= self._last_uid:
            self._ordered = False
        self._last_uid = uid
        self.rows.append(_scanned(self.folder, self.validity, uid, size, received, flags,
                                  saved))
        return True

    def _slow(self, chunk: list[Any]) -> None:
        first = chunk[0]
        head = first[0] if isinstance(first, tuple) else first
        fetch = _FETCH_HEAD.match(head)
        if fetch is None:
            return  # * OK, * FLAGS, * n EXPUNGE...: nothing a scan reads
        # imaplib's form: "* 12 FETCH (...)" -> b"12 (...)", literals as (text, bytes).
        text = fetch.group(1) + b" " + head[fetch.end():]
        fixed = [(text, first[1]) if isinstance(first, tuple) else text]
        for uid, fields in parse_fetch(fixed + chunk[1:]).items():
            self.slow.append((len(self.rows), uid, fields))

    def messages(
        self, general: Callable[[MessageRef, dict[bytes, Any]], Message | str],
    ) -> list[Message]:
        """The folder's messages in UID order. ``general`` builds one from a fields dict
        (the slow path's, and every row of a reply that was not one fast line per UID in
        UID order: then all responses are merged by UID in arrival order first), or says
        why it is left out (``left_out``: "UID 5: ...")."""
        if not self.slow and self._ordered:
            return self.rows
        merged: dict[int, dict[bytes, Any]] = {}
        events = iter(self.slow)
        event = next(events, None)
        for position, m in enumerate(self.rows):
            while event is not None and event[0] <= position:
                merged.setdefault(event[1], {}).update(event[2])
                event = next(events, None)
            fields: dict[bytes, Any] = {b"UID": m.uid, b"FLAGS": tuple(sorted(m.flags)),
                                        b"INTERNALDATE": m.received, b"RFC822.SIZE": m.size}
            if m.saved is not None:
                fields[b"SAVEDATE"] = m.saved
            merged.setdefault(m.uid or 0, {}).update(fields)
        while event is not None:
            merged.setdefault(event[1], {}).update(event[2])
            event = next(events, None)
        out = []
        for uid in sorted(merged):
            message = general(MessageRef(self.folder, self.validity, uid), merged[uid])
            if isinstance(message, str):
                self.left_out.append(f"UID {uid}: {message}")
            else:
                out.append(message)
        return out


def stream(imap: Any, command: bytes, feed: Callable[[list[Any]], None],
           line_feed: Callable[[bytes], None] | None = None) -> None:
    """Send ``TAG <command>`` on imaplib's connection and hand each untagged response to
    ``feed`` (``[line]``, or ``[(text, literal), ..., rest]`` around literals) until the
    tagged reply; with ``line_feed``, a response of one line without a literal goes to it
    as the bare line instead (no list per line: a big scan's 200,000 lines). NO/BAD raise
    ``imaplib.IMAP4.error``, BYE or EOF ``IMAP4.abort``."""
    tag = imap._new_tag()
    imap.tagged_commands.pop(tag, None)  # answered here, not by imaplib's reader
    imap.send(tag + b" " + command + b"\r\n")
    readline = imap.readline
    prefix = tag + b" "
    literal = _LITERAL.search
    while True:
        raw = readline()
        if not raw.endswith(b"\r\n"):
            raise imaplib.IMAP4.abort("socket error: EOF" if not raw else
                                      "socket error: unterminated line")
        line = raw[:-2]
        if line.startswith(b"* "):
            if line.startswith(b"* BYE"):
                raise imaplib.IMAP4.abort(line.decode("utf-8", "replace"))
            if line_feed is not None and not (line.endswith(b"}") and literal(line)):
                line_feed(line)
            else:
                feed(_with_literals(imap, readline, line))
        elif line.startswith(prefix):
            status = line[len(prefix):].split(b" ", 1)
            if status[0].upper() != b"OK":
                raise imaplib.IMAP4.error(line[len(prefix):].decode("utf-8", "replace"))
            return
        # "+ " continuations and other tags' lines: nothing of ours


def _lines(imap: Any, readline: Callable[[], bytes]) -> Iterator[bytes]:
    while True:
        line = readline()
        if not line.endswith(b"\r\n"):
            raise imaplib.IMAP4.abort("socket error: EOF" if not line else
                                      "socket error: unterminated line")
        yield line[:-2]


def _with_literals(imap: Any, readline: Callable[[], bytes], line: bytes) -> list[Any]:
    if not line.endswith(b"}"):  # most lines: no literal, and no pattern search
        return [line]
    m = _LITERAL.search(line)
    if m is None:
        return [line]
    chunk: list[Any] = []
    while m is not None:
        size = int(m.group(1))
        literal = imap.read(size)
        if len(literal) != size:
            raise imaplib.IMAP4.abort("socket error: EOF in a literal")
        chunk.append((line, literal))
        line = next(_lines(imap, readline))
        m = _LITERAL.search(line)
    chunk.append(line)
    return chunk


# -- Message-ID headers ---------------------------------------------------------------

_ID_HEAD = re.compile(
    rb"\* [0-9]+ FETCH \(UID ([0-9]+) BODY\[HEADER\.FIELDS \(MESSAGE-ID\)\] \{[0-9]+\}")
_ID_TAIL = re.compile(rb"(?: MODSEQ \([0-9]+\))?\)")


class HeaderLines:
    """Collects ``{uid: header bytes}`` of one ``BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]``
    FETCH from the responses ``stream`` yields: the usual shape (UID, the section, its
    literal, ``)``) by one pattern, anything else through ``fetch.parse_fetch`` (the same
    safety rules as ``ScanLines``: no UID, no data; later responses win)."""

    def __init__(self) -> None:
        self.headers: dict[int, bytes | None] = {}

    def feed(self, chunk: list[Any]) -> None:
        first = chunk[0]
        if len(chunk) == 2 and isinstance(first, tuple) and isinstance(chunk[1], bytes):
            head = _ID_HEAD.fullmatch(first[0])
            if head is not None and _ID_TAIL.fullmatch(chunk[1]) is not None:
                self.headers[int(head.group(1))] = first[1]
                return
        lines = ScanLines("", 0)
        lines._slow(chunk)
        for _position, uid, fields in lines.slow:
            for key, value in fields.items():
                if isinstance(key, bytes) and key.upper().startswith(b"BODY[HEADER"):
                    self.headers[uid] = bytes(value) if value is not None else None
