"""Folder patterns of rules and the folders they select. Pure: no I/O.

This module owns what a folder pattern in a policy means (README "Folder patterns"):

* ``\\Trash``, ``\\Junk``, ... (anything starting with a backslash) is an RFC 6154
  special-use attribute: it matches the folder(s) the server marks with it, whatever
  they are called or in whatever language.
* A pattern containing ``*`` or ``%`` is a glob: ``*`` matches across hierarchy levels,
  ``%`` within one level (no ``/``), as in IMAP LIST (RFC 3501 6.3.8).
* Anything else is a literal, decoded Unicode folder name.

``/`` always stands for the server's hierarchy separator: adapters normalise
``FolderInfo.name`` to ``/`` whatever the server uses. ``INBOX`` is case-insensitive, also
as the first level of a longer name (``inbox/Lists``). Names are compared in Unicode NFC so a
Japanese or accented name typed in a policy matches whatever normal form the server used.

Safety: a pattern only ever matches selectable folders, and wildcards never match the
virtual ``\\All`` / ``\\Flagged`` folders (Gmail's "All Mail" holds every message once more:
a ``*`` rule must not delete everything through it). Those are matched only when named
explicitly, by name or by attribute. Exclusions are looser on purpose (excluding too much
is the safe side): they match regardless of selectability and virtual folders.

Namespaces (RFC 2342, review F2): wildcards and special-use attributes cover the user's
own folders only (``FolderInfo.namespace.own``: the personal namespace INBOX lies in). A
folder in another user's namespace (Dovecot ``shared/bob/...``, Cyrus ``user.bob``), a
shared/public one, or another personal namespace (Dovecot's ``virtual/``, whose messages
are stored in other folders: expunging through it would bypass every exclusion) is
covered only by a rule naming it exactly, glob-free. Resolving a ``move_to`` attribute
likewise finds only the user's own folder.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

from retention.model import FolderInfo, SpecialUse

if TYPE_CHECKING:
    from retention.config.schema import Policy

__all__ = [
    "excluded_by",
    "folders_to_scan",
    "is_attribute",
    "is_glob",
    "matches",
    "normalise",
    "resolve_target",
    "select",
]

INBOX = "INBOX"
_VIRTUAL = (SpecialUse.ALL.value, SpecialUse.FLAGGED.value)


def is_attribute(pattern: str) -> bool:
    """A special-use attribute such as ``\\Trash`` (folder names never start with ``\\``)."""
    return pattern.startswith("\\")


def is_glob(pattern: str) -> bool:
    return "*" in pattern or "%" in pattern


def normalise(name: str) -> str:
    """NFC, and ``INBOX`` upper-cased when it is the first level (RFC 3501 5.1)."""
    name = unicodedata.normalize("NFC", name)
    head, sep, rest = name.partition("/")
    if head.upper() == INBOX:
        return INBOX + sep + rest
    return name


def _has_use(folder: FolderInfo, attribute: str) -> bool:
    # Attributes are case-insensitive atoms (RFC 3501 flag syntax).
    wanted = attribute.casefold()
    return any(use.casefold() == wanted for use in folder.special_use)


def _is_virtual(folder: FolderInfo) -> bool:
    return any(_has_use(folder, use) for use in _VIRTUAL)


@lru_cache(maxsize=512)
def _glob(pattern: str) -> re.Pattern[str]:
    parts: list[str] = []
    for ch in normalise(pattern):
        if ch == "*":
            parts.append(".*")
        elif ch == "%":
            parts.append("[^/]*")
        else:
            parts.append(re.escape(ch))
    return re.compile("".join(parts), re.DOTALL)


def _name_matches(pattern: str, folder: FolderInfo) -> bool:
    if is_attribute(pattern):
        return _has_use(folder, pattern)
    if is_glob(pattern):
        return _glob(pattern).fullmatch(normalise(folder.name)) is not None
    return normalise(pattern) == normalise(folder.name)


def matches(pattern: str, folder: FolderInfo) -> bool:
    """Whether a rule's folder ``pattern`` selects ``folder`` (see the module docstring)."""
    if not folder.selectable:
        return False
    if not folder.namespace.own:
        # Someone else's, shared or virtual: only when named (not by glob or attribute).
        return not is_attribute(pattern) and not is_glob(pattern) and _name_matches(
            pattern, folder)
    if is_glob(pattern) and not is_attribute(pattern) and _is_virtual(folder):
        return False
    return _name_matches(pattern, folder)


def excluded_by(pattern: str, folder: FolderInfo) -> bool:
    """Whether an ``exclude_folders`` pattern excludes ``folder`` (no safety restrictions)."""
    return _name_matches(pattern, folder)


def select(
    patterns: Iterable[str], excludes: Iterable[str], folders: Sequence[FolderInfo]
) -> list[FolderInfo]:
    """The folders some pattern matches and no exclusion excludes, in ``folders`` order."""
    pats = list(patterns)
    excl = list(excludes)
    return [
        f
        for f in folders
        if any(matches(p, f) for p in pats) and not any(excluded_by(p, f) for p in excl)
    ]


def folders_to_scan(
    policy: Policy, folders: Sequence[FolderInfo], protocol: str
) -> list[FolderInfo]:
    """Every folder some rule of ``policy`` could touch, in ``folders`` order.

    POP3 has only INBOX (``check`` rejects other folders for POP3 accounts).
    """
    wanted: set[str] = set()
    for rule in policy.rules:
        wanted.update(f.name for f in select(rule.folders, rule.exclude_folders, folders))
    out = [f for f in folders if f.name in wanted]
    if protocol == "pop3":
        out = [f for f in out if normalise(f.name) == INBOX]
    return out


def resolve_target(target: str, folders: Sequence[FolderInfo]) -> str | None:
    """The folder name a ``move_to`` / ``trash`` target stands for, or None if unusable.

    A special-use attribute resolves to the (first selectable) folder of the user's own
    namespace having it; None when the server has none: that rule's actions fail for the
    account. A plain name resolves to the existing folder of that name (its spelling on
    the server, e.g. ``INBOX``), or to itself when missing (the executor creates it). A
    glob is never a target: None.
    """
    if is_attribute(target):
        for f in folders:
            if f.selectable and f.namespace.own and _has_use(f, target):
                return f.name
        return None
    if is_glob(target) or not target.strip("/"):
        return None
    wanted = normalise(target)
    for f in folders:
        if normalise(f.name) == wanted:
            return f.name
    return wanted
