"""Several independent IMAP commands in one write, their replies read back by tag.

This module owns pipelining (RFC 3501 section 5.5): a client may send commands without
waiting for the previous one's completion when none depends on another's result and
their untagged responses cannot be confused. A usage measurement needs ``GETQUOTAROOT
INBOX``, ``NAMESPACE`` and ``LIST "" "*" RETURN (STATUS (MESSAGES))``: all read-only,
none using another's answer, and each answered by untagged responses of its own kinds
(``QUOTAROOT``/``QUOTA``, ``NAMESPACE``, ``LIST``/``STATUS``). Sent one by one they cost
three round trips; pipelined, one (the sweep's accounts/s is mostly round trips).

``pipeline`` sends ``TAG1 cmd1 CRLF TAG2 cmd2 CRLF ...`` on imaplib's socket and reads
lines until every tag has its completion, as ``scanread.stream`` does for one command
(imaplib's own reader is not used: it waits for one tag at a time):

* Untagged responses are attributed by their name, never by arrival order: a server may
  answer pipelined commands in any order (RFC 3501 5.5), and an unsolicited response
  (``* OK [ALERT]``, ``* 3 EXISTS``, another ``* CAPABILITY``) may come in between.
  Each ``Command`` names the responses it asks for, and no two commands of one pipeline
  may name the same one (that would be the ambiguity 5.5 forbids): ``ValueError``.
  Responses no command names are ignored.
* The data of each named response is kept as imaplib keeps ``untagged_responses``: the
  text after ``* NAME ``, and around a literal ``(text, literal bytes)`` pairs then the
  rest of the line. So the code that read imaplib's answers reads these unchanged
  (modified UTF-7 names, literals in LIST/STATUS names...).
* Every command's completion is read before anything is raised: a NO or BAD is a
  ``Reply`` status for the caller to judge (the connection stays in step for the next
  command). ``* BYE``, EOF, or a line cut short raise ``imaplib.IMAP4.abort`` at once,
  as imaplib does, for ``ImapConnection.guard`` to map (the connection is then lost).

Commands must not carry literals (no ``+`` continuation is awaited): these do not.
"""

from __future__ import annotations

import imaplib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from retention.adapters.imap.scanread import _lines, _with_literals

__all__ = ["Command", "Reply", "pipeline"]

# "* NAME ..." or "* 12 NAME ..." (imaplib's Untagged_response and Untagged_status).
_UNTAGGED = re.compile(rb"\* (?:([0-9]+) )?([A-Za-z-]+)(?: |\Z)")


@dataclass(frozen=True, slots=True)
class Command:
    """One command of a pipeline: its text (no tag, no CRLF) and the names of the untagged
    responses that answer it (upper case, e.g. ``("QUOTAROOT", "QUOTA")``)."""

    text: bytes
    answers: tuple[str, ...]


@dataclass(slots=True)
class Reply:
    """A command's tagged completion (``status`` upper case: OK, NO, BAD; ``text`` the
    rest of the line, response code included) and its untagged data by response name,
    in imaplib's form (see the module docstring)."""

    status: str
    text: str
    data: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "OK"


def pipeline(imap: Any, commands: Sequence[Command]) -> list[Reply]:
    """Send ``commands`` in one write on imaplib connection ``imap``; their ``Reply`` in
    the same order once every completion has arrived. Raises ``imaplib.IMAP4.abort`` on
    ``* BYE`` or a lost connection, ``ValueError`` when two commands name one response."""
    owner: dict[bytes, int] = {}
    for i, command in enumerate(commands):
        for name in command.answers:
            key = name.upper().encode("ascii")
            if key in owner:
                raise ValueError(f"two pipelined commands are answered by {name}")
            owner[key] = i
    tags: dict[bytes, int] = {}
    out = bytearray()
    for i, command in enumerate(commands):
        tag = imap._new_tag()
        imap.tagged_commands.pop(tag, None)  # answered here, not by imaplib's reader
        tags[tag] = i
        out += tag + b" " + command.text + b"\r\n"
    replies: list[Reply | None] = [None] * len(commands)
    data: list[dict[str, list[Any]]] = [{} for _ in commands]
    imap.send(bytes(out))
    readline = imap.readline
    pending = len(commands)
    lines = _lines(imap, readline)
    while pending:
        line = next(lines)
        if line.startswith(b"* "):
            _untagged(imap, readline, line, owner, data)
            continue
        tag, _sep, rest = line.partition(b" ")
        index = tags.get(tag)
        if index is None or replies[index] is not None:
            continue  # "+ " continuations and other tags' lines: nothing of ours
        status, _sep, text = rest.partition(b" ")
        replies[index] = Reply(status.decode("ascii", "replace").upper(),
                               text.decode("utf-8", "replace"), data[index])
        pending -= 1
    return [r for r in replies if r is not None]


def _untagged(imap: Any, readline: Callable[[], bytes], line: bytes, owner: dict[bytes, int],
              data: list[dict[str, list[Any]]]) -> None:
    """Read one untagged response (and its literals) and file it under its command."""
    if line.startswith(b"* BYE"):
        # imaplib's words: the text after "* BYE " (guard() looks for throttling in it).
        raise imaplib.IMAP4.abort(line[6:].decode("utf-8", "replace"))
    # Literals are read whether the response is ours or not: the stream stays in step.
    chunk = _with_literals(imap, readline, line)
    m = _UNTAGGED.match(line)
    if m is None:
        return
    number, name = m.group(1, 2)
    name = name.upper()
    i = owner.get(name)
    if i is None:
        return  # unsolicited, or an answer no command asked for (LIST of LIST-STATUS)
    # imaplib's form: the first piece without "* NAME " ("* 3 NAME x": "3 x"), the
    # others as they came.
    rest = line[m.end():]
    if number is not None:
        rest = number + b" " + rest if rest else number
    first = chunk[0]
    head: Any = (rest, first[1]) if isinstance(first, tuple) else rest
    data[i].setdefault(name.decode("ascii"), []).extend([head, *chunk[1:]])
