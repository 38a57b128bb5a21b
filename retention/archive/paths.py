"""Archive path templates and filesystem-safe names.

This module owns how ``{account}``, ``{folder}``, ``{year}`` and ``{month}`` in an archive
target's ``path`` (mbox, Maildir) or ``folder`` (IMAP) are expanded, and how account and
folder names are made safe as path segments.

Escaping (filesystem targets only), applied to each segment separately:

* A mail folder contributes one path segment per hierarchy level: ``Lists/python`` becomes
  ``Lists/python`` on disk, never one segment containing ``/``.
* Inside a segment ``%`` is written ``%25``, ``/`` ``%2F``, NUL ``%00``, and a leading
  ``.`` ``%2E`` (so ``.``/``..`` and hidden names cannot appear). An empty segment (a folder
  name like ``a//b``) is written ``%``, which no other escape produces. The encoding is
  reversible (``unescape_segment``) and leaves every other character, including non-ASCII
  letters, as it is.
* For Maildir targets the level names ``cur``, ``new`` and ``tmp`` are also escaped (first
  letter as ``%63``/``%6E``/``%74``) so that a folder can never collide with a Maildir's
  own subdirectories.

``{year}`` and ``{month}`` (``2024``, ``03``) come from the message's received time
(INTERNALDATE) in UTC, so the same message always lands in the same file wherever the
agent runs. IMAP folder templates use ``/`` as hierarchy separator like every folder
name in this package; ``{folder}`` is inserted unescaped there (the IMAP adapter encodes
names for the wire).
"""

from __future__ import annotations

import string
from datetime import UTC, datetime

FIELDS = frozenset({"account", "folder", "year", "month"})
_MAILDIR_RESERVED = {"cur": "%63ur", "new": "%6Eew", "tmp": "%74mp"}


class TemplateError(ValueError):
    """An archive template uses an unknown field or a format spec."""


def validate_template(template: str) -> None:
    """Raise ``TemplateError`` unless the template only uses the four plain fields."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise TemplateError(f"bad template {template!r}: {e}") from None
    for _literal, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in FIELDS:
            known = ", ".join("{" + f + "}" for f in sorted(FIELDS))
            raise TemplateError(f"unknown field {{{field}}} in {template!r} (use {known})")
        if spec or conversion:
            raise TemplateError(f"field {{{field}}} in {template!r} takes no format spec")


def escape_segment(name: str, *, maildir: bool = False) -> str:
    """One folder level or account name as a single safe path segment."""
    if name == "":
        return "%"
    out = name.replace("%", "%25").replace("/", "%2F").replace("\x00", "%00")
    if out.startswith("."):
        out = "%2E" + out[1:]
    if maildir and out in _MAILDIR_RESERVED:
        out = _MAILDIR_RESERVED[out]
    return out


def unescape_segment(segment: str) -> str:
    """Reverse ``escape_segment``."""
    if segment == "%":
        return ""
    out: list[str] = []
    i = 0
    while i < len(segment):
        c = segment[i]
        if c == "%" and _is_hex(segment[i + 1 : i + 3]):
            out.append(chr(int(segment[i + 1 : i + 3], 16)))
            i += 3
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _is_hex(text: str) -> bool:
    return len(text) == 2 and all(c in string.hexdigits for c in text)


def folder_segments(folder: str, *, maildir: bool = False) -> list[str]:
    """A mail folder (``/``-separated) as escaped path segments, one per level."""
    return [escape_segment(level, maildir=maildir) for level in folder.split("/")]


def fs_folder(folder: str, *, maildir: bool = False) -> str:
    return "/".join(folder_segments(folder, maildir=maildir))


def expand(
    template: str,
    *,
    account: str,
    folder: str,
    received: datetime,
    filesystem: bool = True,
    maildir: bool = False,
) -> str:
    """Expand a template for one message.

    With ``filesystem`` the account and folder are escaped as described in the module
    docstring; otherwise (IMAP folder templates) they are inserted as they are.
    """
    validate_template(template)
    when = received.astimezone(UTC)
    values = {
        "account": escape_segment(account, maildir=maildir) if filesystem else account,
        "folder": fs_folder(folder, maildir=maildir) if filesystem else folder,
        "year": f"{when.year:04d}",
        "month": f"{when.month:02d}",
    }
    out: list[str] = []
    for literal, field, _spec, _conv in string.Formatter().parse(template):
        out.append(literal)
        if field is not None:
            out.append(values[field])
    return "".join(out)
