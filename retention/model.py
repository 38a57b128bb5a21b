"""Frozen value types for what a mailbox holds, as read from the server.

Nothing here performs I/O. Every message is named by a ``MessageRef`` that carries the
folder, the UIDVALIDITY it was read under and its UID (IMAP) or UIDL (POP3), so no action
can ever be applied to a message other than the one that was planned (RFC 3501 2.3.1.1).
Datetimes are always timezone-aware.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal

MailProtocol = Literal["imap", "pop3"]

# IMAP system flags as imapclient reports them (str, with the backslash).
SEEN = "\\Seen"
FLAGGED = "\\Flagged"
DELETED = "\\Deleted"
RECENT = "\\Recent"
ANSWERED = "\\Answered"
DRAFT = "\\Draft"


class SpecialUse(StrEnum):
    """RFC 6154 special-use attributes that rules may name."""

    ALL = "\\All"
    ARCHIVE = "\\Archive"
    DRAFTS = "\\Drafts"
    FLAGGED = "\\Flagged"
    JUNK = "\\Junk"
    SENT = "\\Sent"
    TRASH = "\\Trash"


@dataclass(frozen=True, slots=True, order=True)
class MessageRef:
    """The identity of one message: (folder, UIDVALIDITY, UID) or, for POP3, its UIDL.

    ``folder`` is the decoded Unicode name with ``/`` as hierarchy separator. For POP3 the
    folder is ``INBOX``, ``uidvalidity`` is 0 and ``uid`` is None.
    """

    folder: str
    uidvalidity: int
    uid: int | None
    uidl: str | None = None

    def key(self) -> str:
        """A stable text key, used by the journal and the state store."""
        if self.uid is None:
            return f"{self.folder}\x00pop3\x00{self.uidl}"
        return f"{self.folder}\x00{self.uidvalidity}\x00{self.uid}"


def exempt_key(folder: str, uidvalidity: int, uid: int | None) -> str:
    """The key of ``Snapshot.exempt`` for one IMAP message."""
    return f"ref:{folder}\x00{uidvalidity}\x00{uid}"


@dataclass(frozen=True, slots=True)
class Message:
    """Metadata of one message; never its body.

    ``received`` is INTERNALDATE (IMAP) or the first-seen time (POP3). ``sent`` is the parsed
    Date header, None when missing or unparseable. ``saved`` is when the message entered this
    folder (SAVEDATE, or the agent's first sighting in this folder), None when unknown.
    """

    ref: MessageRef
    size: int
    received: datetime
    flags: frozenset[str] = frozenset()
    sent: datetime | None = None
    saved: datetime | None = None
    message_id: str | None = None
    # The raw Date header when it could not be parsed: the report says so.
    date_header: str | None = None
    # The same stored message in every folder it shows in, where folders are labels
    # (Gmail's X-GM-MSGID): the planner counts and removes it once. None elsewhere.
    global_id: str | None = None

    @property
    def deleted(self) -> bool:
        return DELETED in self.flags


NamespaceKind = Literal["personal", "other", "shared"]


@dataclass(frozen=True, slots=True)
class Namespace:
    """The RFC 2342 namespace a folder lies in, as the server's NAMESPACE reply says.

    ``kind``: ``personal`` (the user's), ``other`` (other users' mailboxes: Dovecot's
    ``type = shared`` ``shared/%%u/``, Cyrus ``user.``) or ``shared`` (public folders).
    ``prefix``: the namespace's prefix in agent form (``/`` levels: ``shared/``,
    ``virtual/``, ``""``). ``inbox``: this is the personal namespace INBOX lies in, the
    user's own folders; another personal namespace is typically a view of mail stored
    elsewhere (Dovecot's ``virtual/`` namespace, an alias namespace). A fact, not a
    decision: which folders a wildcard covers is ``retention.folders``'.
    """

    kind: NamespaceKind = "personal"
    prefix: str = ""
    inbox: bool = True

    @property
    def own(self) -> bool:
        """The user's own folders (the personal namespace holding INBOX)."""
        return self.kind == "personal" and self.inbox


#: Where every folder is without NAMESPACE (and every POP3 folder): the user's own.
OWN = Namespace()


@dataclass(frozen=True, slots=True)
class FolderInfo:
    """A folder as LIST shows it (no messages), and the namespace it lies in."""

    name: str
    special_use: frozenset[str] = frozenset()
    selectable: bool = True
    delimiter: str = "/"
    namespace: Namespace = OWN

    def has_use(self, use: str) -> bool:
        return use in self.special_use


_PROTECT_FLAGS = {"flagged": FLAGGED, "answered": ANSWERED, "draft": DRAFT}


@dataclass(frozen=True, slots=True)
class Protection:
    """What forbids removing a message *at the moment of acting* (review F3).

    The planner judges protection from the scan; minutes can pass before a batch is acted
    on, and the user may star or mark unread a planned message meanwhile. The executor
    hands this to ``delete``/``move`` so the adapter re-reads the flags right before
    acting and leaves such messages alone (and says why). It is not policy: only which
    flags forbid removal and whether a missing ``\\Seen`` does.
    """

    flags: frozenset[str] = frozenset()  # any of these set: keep (\\Flagged, \\Answered...)
    unread: bool = False  # no \\Seen: keep

    @classmethod
    def of(cls, words: frozenset[str] | set[str] | tuple[str, ...]) -> Protection:
        """From a policy's ``protect`` words: flagged, unread, answered, draft."""
        return cls(frozenset(_PROTECT_FLAGS[w] for w in words if w in _PROTECT_FLAGS),
                   "unread" in words)

    def __bool__(self) -> bool:
        return bool(self.flags) or self.unread

    def forbids(self, flags: frozenset[str]) -> str | None:
        """What about ``flags`` forbids removal ("flagged, unread"; None: nothing)."""
        hit = [f.lstrip("\\").lower() for f in sorted(self.flags & flags)]
        if self.unread and SEEN not in flags:
            hit.append("unread")
        return ", ".join(hit) if hit else None


@dataclass(frozen=True, slots=True)
class FolderSnapshot:
    """A folder's messages read under one UIDVALIDITY."""

    info: FolderInfo
    uidvalidity: int
    messages: tuple[Message, ...] = ()
    # True when the server provided SAVEDATE for this folder's messages.
    has_savedate: bool = False
    # What the scan could not read and left out (kept, never acted on), one line each
    # ("3 message(s) left out (kept): UID 5: INTERNALDATE out of range ..."): reported.
    warnings: tuple[str, ...] = ()
    # HIGHESTMODSEQ when the folder was examined (RFC 7162), None without CONDSTORE: with
    # UIDVALIDITY, what an incremental scan of the next run starts from.
    modseq: int | None = None

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def size(self) -> int:
        return sum(m.size for m in self.messages)


@dataclass(frozen=True, slots=True)
class FolderChanges:
    """What changed in a folder since a known (UIDVALIDITY, HIGHESTMODSEQ) (RFC 7162).

    ``changed``: every message added or whose flags changed since, read in full;
    ``vanished``: UID ranges ``(first, last)`` expunged since (QRESYNC ``VANISHED``),
    which may name UIDs never seen; ``exists``: the folder's message count, so that a
    merge can prove it ended with exactly the folder's messages.
    """

    uidvalidity: int
    modseq: int
    exists: int
    changed: tuple[Message, ...] = ()
    vanished: tuple[tuple[int, int], ...] = ()
    has_savedate: bool = False


@dataclass(frozen=True, slots=True)
class Usage:
    """Storage in use against the limit. ``source`` is ``quota`` (server-reported) or ``sum``."""

    usage_bytes: int
    limit_bytes: int | None
    source: Literal["quota", "sum"]
    messages: int | None = None

    @property
    def ratio(self) -> float | None:
        if not self.limit_bytes:
            return None
        return self.usage_bytes / self.limit_bytes


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the planner may know about one account at one moment."""

    account: str
    protocol: MailProtocol
    usage: Usage
    folders: tuple[FolderSnapshot, ...] = ()
    # Every folder the server listed, including those not scanned (for move targets).
    all_folders: tuple[FolderInfo, ...] = field(default=())
    # Messages no rule may touch, with the reason (restored mail within restore_grace):
    # (``exempt_key(ref)`` or ``"mid:" + Message-ID``, reason). Passed in by the account
    # pass from state_dir, so the planner stays pure.
    exempt: tuple[tuple[str, str], ...] = field(default=())
    # A moment the server's own clock is known to have reached (review M10), found by the
    # account pass: the newest server-stamped date of the scan, or what the server confirmed
    # (IMAP ``OLDER``, a POP3 message's ``Received`` stamp). None: nothing known.
    server_time: datetime | None = None

    def messages(self) -> Iterator[Message]:
        for folder in self.folders:
            yield from folder.messages

    @property
    def message_count(self) -> int:
        """Messages in the scanned folders of the user's own namespace (review F2: a
        shared folder a rule names is not this account's, nor a virtual one)."""
        return sum(len(f.messages) for f in self.folders if f.info.namespace.own)
