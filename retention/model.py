"""Frozen value types for what a mailbox holds, as read from the server.

Nothing here performs I/O. Every message is named by a ``MessageRef`` that carries the
folder, the UIDVALIDITY it was read under and its UID (IMAP) or UIDL (POP3), so no action
can ever be applied to a message other than the one that was planned (RFC 3501 2.3.1.1).
Datetimes are always timezone-aware.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import FrozenInstanceError, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

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


_REF_SETTERS = tuple(MessageRef.__dict__[n].__set__ for n in MessageRef.__slots__)


def new_ref(folder: str, uidvalidity: int, uid: int | None, uidl: str | None = None
            ) -> MessageRef:
    """``MessageRef(folder, uidvalidity, uid, uidl)``, built without the frozen
    dataclass's ``object.__setattr__`` per field (``Message.ref`` makes one per call)."""
    ref = _NEW(MessageRef)
    s_folder, s_validity, s_uid, s_uidl = _REF_SETTERS
    s_folder(ref, folder)
    s_validity(ref, uidvalidity)
    s_uid(ref, uid)
    s_uidl(ref, uidl)
    return ref


def exempt_key(folder: str, uidvalidity: int, uid: int | None) -> str:
    """The key of ``Snapshot.exempt`` for one IMAP message."""
    return f"ref:{folder}\x00{uidvalidity}\x00{uid}"


# One message's metadata is the unit a scan of a million-message folder holds a million of,
# so ``Message`` is written by hand: one object per message, not a Message plus a
# MessageRef (the ref is made when asked for), the four fields a scan of INTERNALDATE,
# size and flags never fills in one slot, and built without a frozen dataclass's
# ``object.__setattr__`` per field. That is 104 bytes a message instead of 168 and about
# a third of the time to build one (bench/README.md, bench_scan.py). It behaves as the
# frozen dataclass did: the same constructor, equality, hash and repr, and no assignment.
_RARE_NONE = (None, None, None, None)


class Message:
    """Metadata of one message; never its body. Immutable.

    ``ref`` (its (folder, UIDVALIDITY, UID) or UIDL, see ``MessageRef``) is also read as
    ``folder``, ``uidvalidity``, ``uid`` and ``uidl``. ``received`` is INTERNALDATE (IMAP)
    or the first-seen time (POP3). ``sent`` is the parsed Date header, None when missing or
    unparseable. ``saved`` is when the message entered this folder (SAVEDATE, or the
    agent's first sighting in this folder), None when unknown. ``message_id``: the
    Message-ID header when read. ``date_header``: the raw Date header when it could not be
    parsed (the report says so). ``global_id``: the same stored message in every folder it
    shows in, where folders are labels (Gmail's X-GM-MSGID): the planner counts and
    removes it once; None elsewhere.
    """

    __slots__ = ("folder", "uidvalidity", "uid", "uidl", "size", "received", "flags",
                 "saved", "_rare")

    folder: str
    uidvalidity: int
    uid: int | None
    uidl: str | None
    size: int
    received: datetime
    flags: frozenset[str]
    saved: datetime | None
    _rare: tuple[datetime | None, str | None, str | None, str | None] | None

    def __init__(self, ref: MessageRef, size: int, received: datetime,
                 flags: frozenset[str] = frozenset(), sent: datetime | None = None,
                 saved: datetime | None = None, message_id: str | None = None,
                 date_header: str | None = None, global_id: str | None = None) -> None:
        _SET_FOLDER(self, ref.folder)
        _SET_VALIDITY(self, ref.uidvalidity)
        _SET_UID(self, ref.uid)
        _SET_UIDL(self, ref.uidl)
        _SET_SIZE(self, size)
        _SET_RECEIVED(self, received)
        _SET_FLAGS(self, flags)
        _SET_SAVED(self, saved)
        rare = (sent, message_id, date_header, global_id)
        _SET_RARE(self, None if rare == _RARE_NONE else rare)

    @classmethod
    def scanned(cls, folder: str, uidvalidity: int, uid: int, size: int, received: datetime,
                flags: frozenset[str], saved: datetime | None) -> Message:
        """What a metadata scan reads of one IMAP message: the hot path of a big scan
        (no MessageRef, no keyword handling)."""
        m = _NEW(cls)
        _SET_FOLDER(m, folder)
        _SET_VALIDITY(m, uidvalidity)
        _SET_UID(m, uid)
        _SET_UIDL(m, None)
        _SET_SIZE(m, size)
        _SET_RECEIVED(m, received)
        _SET_FLAGS(m, flags)
        _SET_SAVED(m, saved)
        _SET_RARE(m, None)
        return m

    @property
    def ref(self) -> MessageRef:
        return new_ref(self.folder, self.uidvalidity, self.uid, self.uidl)

    @property
    def sent(self) -> datetime | None:
        return None if self._rare is None else self._rare[0]

    @property
    def message_id(self) -> str | None:
        return None if self._rare is None else self._rare[1]

    @property
    def date_header(self) -> str | None:
        return None if self._rare is None else self._rare[2]

    @property
    def global_id(self) -> str | None:
        return None if self._rare is None else self._rare[3]

    @property
    def deleted(self) -> bool:
        return DELETED in self.flags

    def replace(self, **changes: Any) -> Message:
        """A copy with ``changes`` (the fields of the constructor), as
        ``dataclasses.replace`` made for the frozen dataclass."""
        fields = {name: getattr(self, name) for name in _FIELDS}
        unknown = set(changes) - fields.keys()
        if unknown:
            raise TypeError(f"Message has no field(s) {', '.join(sorted(unknown))}")
        fields.update(changes)
        return Message(**fields)

    def with_message_id(self, message_id: str | None) -> Message:
        """``replace(message_id=...)`` at a fraction of its cost (the Message-IDs of a
        plan's 10,000 actions are filled in one by one)."""
        m = _NEW(Message)
        for name in _SLOTS:
            _SETTERS[name](m, getattr(self, name))
        sent, _, date_header, global_id = self._rare or _RARE_NONE
        rare = (sent, message_id, date_header, global_id)
        _SET_RARE(m, None if rare == _RARE_NONE else rare)
        return m

    def _key(self) -> tuple[Any, ...]:
        return (self.folder, self.uidvalidity, self.uid, self.uidl, self.size, self.received,
                self.flags, self.saved, self._rare or _RARE_NONE)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Message:
            return NotImplemented
        assert isinstance(other, Message)
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return "Message(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in _FIELDS) + ")"

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuilt, tuple(getattr(self, n) for n in _FIELDS))


_FIELDS = ("ref", "size", "received", "flags", "sent", "saved", "message_id", "date_header",
           "global_id")
_NEW = object.__new__
# The slots' own setters: what ``__init__`` and ``scanned`` write through, since
# ``__setattr__`` refuses (a frozen value).
_SET_FOLDER = Message.__dict__["folder"].__set__
_SET_VALIDITY = Message.__dict__["uidvalidity"].__set__
_SET_UID = Message.__dict__["uid"].__set__
_SET_UIDL = Message.__dict__["uidl"].__set__
_SET_SIZE = Message.__dict__["size"].__set__
_SET_RECEIVED = Message.__dict__["received"].__set__
_SET_FLAGS = Message.__dict__["flags"].__set__
_SET_SAVED = Message.__dict__["saved"].__set__
_SET_RARE = Message.__dict__["_rare"].__set__
_SLOTS = tuple(n for n in Message.__slots__ if n != "_rare")
_SETTERS = {n: Message.__dict__[n].__set__ for n in _SLOTS}


def _rebuilt(*fields: Any) -> Message:
    return Message(*fields)


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
