"""Which RFC 2342 namespace a server folder name lies in. Pure: no I/O.

This module owns reading the server's ``NAMESPACE`` reply (as imapclient parses it:
personal, other users', shared, each None or ``((prefix, delimiter), ...)`` with decoded
prefixes) and classifying a decoded server name by it. It reports facts (which kind of
namespace, its prefix, whether INBOX lies in it); what a wildcard may cover is decided
in ``retention.folders``.

Found on Dovecot 2.3.19 with a ``type = shared`` namespace ``shared/%%u/`` and a
``virtual/`` namespace: ``(("" "/")("virtual/" "/")) (("shared/" "/")) NIL``. bob's shared
INBOX is listed as ``shared/bob`` (the namespace root), his other folders as
``shared/bob/Work``; neither the shared nor the virtual folders carry any attribute, so
the prefixes are the only way to know them. Cyrus 3: ``(("INBOX." ".")) (("user." "."))
(("" "."))`` (bob's INBOX is ``user.bob``, public folders have no prefix), or with
``altnamespace`` and ``unixhierarchysep`` ``(("" "/")) (("Other Users/" "/")) (("Shared
Folders/" "/"))``; no attributes either.

Rules:

* A name lies in the namespace with the longest prefix it starts with (or equals, less
  the trailing delimiter: ``shared`` is the root of ``shared/``). Equally long prefixes:
  personal first, then other users', then shared (RFC 2342 wants them distinct).
* ``INBOX`` is always the user's own (RFC 3501 5.1), whatever the prefixes say.
* The user's own folders are the personal namespace INBOX lies in; other personal
  namespaces (Dovecot's ``virtual/``, alias namespaces) are views of mail stored
  elsewhere, reported with ``inbox=False``.
* A name in no listed namespace (only possible when no prefix is empty) is reported as
  not the user's own: the safe side.
* No NAMESPACE (not advertised, or refused): every folder is the user's own, as before.
* An account's ``virtual_prefixes`` (agent names, ``virtual/``) say what NAMESPACE does
  not (a Dovecot namespace with ``hidden = yes`` is listed but not in the reply): a
  folder under one is reported as another personal namespace (``virtual_prefix``).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from imapclient import imap_utf7
from imapclient.response_parser import parse_response

from retention.adapters.imap.wire import display_name
from retention.model import OWN, Namespace, NamespaceKind

__all__ = ["Namespaces", "namespace_reply", "parse_namespaces", "virtual_prefix"]

_KINDS: tuple[NamespaceKind, ...] = ("personal", "other", "shared")
_ORDER = {kind: i for i, kind in enumerate(_KINDS)}


@dataclass(frozen=True, slots=True)
class _Entry:
    kind: NamespaceKind
    prefix: str  # decoded server form, e.g. "shared/" or "INBOX."
    delimiter: str | None


@dataclass(frozen=True, slots=True)
class Namespaces:
    """The server's namespaces; ``classify`` names the one a folder lies in."""

    entries: tuple[_Entry, ...] = ()

    @property
    def known(self) -> bool:
        return bool(self.entries)

    def _entry(self, name: str) -> _Entry | None:
        best: _Entry | None = None
        for entry in self.entries:
            if not _within(name, entry):
                continue
            if best is None or (len(entry.prefix), -_ORDER[entry.kind]) > (
                    len(best.prefix), -_ORDER[best.kind]):
                best = entry
        return best

    def _inbox_prefix(self) -> str | None:
        entry = self._entry("INBOX")
        if entry is not None and entry.kind == "personal":
            return entry.prefix
        personal = [e for e in self.entries if e.kind == "personal"]
        return personal[0].prefix if personal else None

    def inbox_level_prefix(self) -> str:
        """The user's own namespace prefix when it is INBOX's level plus the delimiter, else "".

        Cyrus with ``altnamespace: no`` (Debian's imapd.conf) and Courier say
        ``(("INBOX." "."))``: ``INBOX.Trash`` there is the folder other servers call
        ``Trash`` (the agent shows it so: one policy for both), and a folder created
        outside the prefix is refused (Cyrus: "Permission denied"). Other prefixes
        (``#mh/``, ``~/``) are not a second name of the root: "".
        """
        entry = self._entry("INBOX")
        if entry is None or entry.kind != "personal" or not entry.delimiter:
            return ""
        level = _inbox_upper(entry.prefix, entry.delimiter)
        return entry.prefix if level == "INBOX" + entry.delimiter else ""

    def classify(self, name: str) -> Namespace:
        """The namespace of a decoded server name (see the module docstring)."""
        if not self.entries or name.upper() == "INBOX":
            return OWN
        entry = self._entry(name)
        if entry is None:
            return Namespace("personal", "", inbox=False)
        prefix = _agent_prefix(entry)
        if entry.kind != "personal":
            return Namespace(entry.kind, prefix, inbox=False)
        return Namespace("personal", prefix, inbox=entry.prefix == self._inbox_prefix())


def _within(name: str, entry: _Entry) -> bool:
    if not entry.prefix:
        return True
    delim = entry.delimiter
    name, prefix = _inbox_upper(name, delim), _inbox_upper(entry.prefix, delim)
    if name.startswith(prefix):
        return True
    # The prefix's own level ("shared" for "shared/"): Dovecot lists it as \Noselect, and
    # names another user's INBOX by it ("shared/bob" for "shared/bob/").
    return delim is not None and prefix.endswith(delim) and name == prefix[: -len(delim)]


def _inbox_upper(text: str, delim: str | None) -> str:
    """``inbox`` as the first level is ``INBOX`` (RFC 3501 5.1)."""
    head, rest = text[:5], text[5:]
    if head.upper() == "INBOX" and (not rest or (delim and rest.startswith(delim))):
        return "INBOX" + rest
    return text


def _agent_prefix(entry: _Entry) -> str:
    """The prefix in agent form: ``/`` levels, ending in ``/`` when it names a level."""
    if not entry.prefix:
        return ""
    delim = entry.delimiter
    if delim and entry.prefix.endswith(delim):
        return display_name(entry.prefix[: -len(delim)], delim) + "/"
    return display_name(entry.prefix, delim)


def parse_namespaces(reply: Sequence[Any] | None) -> Namespaces:
    """imapclient's ``namespace()`` result (or None) -> ``Namespaces``.

    Anything malformed is left out; a reply with no usable entry is "no NAMESPACE".
    """
    entries: list[_Entry] = []
    for kind, group in zip(_KINDS, reply or (), strict=False):
        for item in group or ():
            if not isinstance(item, tuple | list) or len(item) < 2:
                continue
            prefix, delim = _text(item[0]), _text(item[1]) if item[1] is not None else None
            if prefix is None:
                continue
            entries.append(_Entry(kind, prefix, delim or None))
    if entries and not any(e.kind == "personal" for e in entries):
        # Only other users' or shared namespaces: everything outside them is the
        # user's own, as without NAMESPACE.
        entries.insert(0, _Entry("personal", "", None))
    return Namespaces(tuple(entries))


def namespace_reply(data: list[Any] | None) -> tuple[Any, ...] | None:
    """The untagged ``NAMESPACE`` data (imaplib's form, from ``pipeline``) -> what
    imapclient's ``namespace()`` returns for it: (personal, other, shared), each None or
    ``((decoded prefix, delimiter), ...)``. None when the server sent no NAMESPACE line
    (every folder is then the user's own). Raises what imapclient's parser raises on
    garbage (``ProtocolError`` of imapclient, an ``imaplib.IMAP4.error``)."""
    if not data:
        return None
    parts: list[Any] = []
    for item in parse_response(data):
        if item is None:
            parts.append(None)
            continue
        # As imapclient: prefixes decoded from modified UTF-7, delimiters as text.
        parts.append(tuple(
            (imap_utf7.decode(prefix),
             delim.decode("ascii", "ignore") if isinstance(delim, bytes) else delim)
            for prefix, delim in item))
    return tuple(parts)


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return None


def virtual_prefix(shown: str, prefixes: Sequence[str]) -> str | None:
    """The configured prefix (``virtual/``) agent name ``shown`` lies under, or None.

    ``virtual/`` and ``virtual`` both cover ``virtual`` itself and ``virtual/All``;
    compared in NFC, ``INBOX`` case-insensitive as the first level.
    """
    name = _agent_key(shown)
    for prefix in prefixes:
        root = _agent_key(prefix.strip("/"))
        if root and (name == root or name.startswith(root + "/")):
            return prefix.strip("/") + "/"
    return None


def _agent_key(name: str) -> str:
    name = unicodedata.normalize("NFC", name)
    return _inbox_upper(name, "/")
