"""Pure helpers of the IMAP adapter: UID sets, batching, headers, names, reply texts.

Nothing here does I/O, so every rule of the wire format the adapter relies on is unit
tested on its own: how UID sets are compressed and split so command lines stay under
8 KB, how a Date/Message-ID header is parsed without ever raising, how response codes
(``APPENDUID``, ``COPYUID``) are read, how server folder names map to the ``/``-separated
names the rest of the agent uses, and how an imaplib exception becomes a one-line cause.
FETCH responses are turned into per-UID dicts by ``imap_fetch``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

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


def uid_ranges(text: str) -> list[tuple[int, int]]:
    """A ``VANISHED`` answer's UID set (``"(EARLIER) 3:5,9"``) -> ``[(3, 5), (9, 9)]``.

    Ranges stay ranges (a set may span millions of UIDs); ``a:b`` and ``b:a`` are the same
    range (RFC 3501 sequence sets). Garbage parts are ignored.
    """
    if text.upper().startswith("(EARLIER)"):
        text = text[len("(EARLIER)"):]
    out: list[tuple[int, int]] = []
    for part in text.strip().split(","):
        first, _sep, last = part.partition(":")
        if first.isdigit() and (not last or last.isdigit()):
            a, b = int(first), int(last or first)
            out.append((min(a, b), max(a, b)))
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


def relative_name(server: str, prefix: str, delimiter: str | None) -> str:
    """``server`` (decoded) without the user's own namespace ``prefix`` when that is INBOX's
    level (``Namespaces.inbox_level_prefix``: ``INBOX.`` on Cyrus and Courier).

    Unchanged outside the prefix, and where the rest would read as INBOX (a folder
    ``INBOX.INBOX`` stays ``INBOX/INBOX``, never a second INBOX).
    """
    if not prefix or server[:len(prefix)].upper() != prefix.upper():
        return server
    rest = server[len(prefix):]
    if not rest or (rest.split(delimiter, 1)[0] if delimiter else rest).upper() == "INBOX":
        return server
    return rest


def prefixed_name(server: str, prefix: str) -> str:
    """The inverse of ``relative_name`` for a name the server did not list (a folder to
    create): under ``prefix`` unless it is INBOX or already under the prefix."""
    if not prefix or server.upper() == "INBOX" or server[:len(prefix)].upper() == prefix.upper():
        return server
    return prefix + server


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
    if len(text) > 2 and text[0] == "b" and text[1] in "'\"" and text[-1] == text[1]:
        # imapclient's LoginError carries the server's bytes as their repr: b'[AUTH...]'
        try:
            raw = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raw = None
        if isinstance(raw, bytes):
            text = raw.decode("utf-8", errors="replace")
    return one_line(text) or type(exc).__name__
