"""An in-memory mail server and ``MailSession`` for unit tests of the modules above adapters.

``FakeServer`` holds folders of messages; ``FakeServer.session()`` (or ``.connect``, which
has the runner's connector signature) opens a ``FakeSession`` that keeps every invariant of
``retention.adapters.MailSession`` the way the real adapters do, so executor and runner
tests exercise the same contract they meet on a real server:

* Refs carry UIDVALIDITY; ``fetch``/``delete``/``move`` raise ``UidValidityChanged`` when
  the folder's UIDVALIDITY moved on (``server.recreate(folder)`` makes that happen).
* ``delete`` removes exactly the named messages; a message another client flagged
  ``\\Deleted`` (``server.flag(...)``) stays. Without ``UIDPLUS`` in the capabilities,
  ``delete`` raises ``ProtocolError`` as the IMAP adapter does; ``move`` needs MOVE or UIDPLUS.
* Read-only sessions refuse ``delete``/``move``/``append`` with ``ProtocolError``; reading
  never changes flags.
* POP3 (``FakeServer(protocol="pop3")``): one INBOX, refs by UIDL, deletions pending until
  ``commit()``; ``close()`` without ``commit()`` drops them.

Faults: ``session(fail_on={"delete": ConnectError("boom")})`` raises before the call does
anything; a value may also be a callable (called with the method's arguments, it may raise),
e.g. ``FailAfter(2, ConnectError("x"))`` lets two calls through and fails the third.
``server.log`` records every change as ``(operation, folder, uids)``; ``session.calls``
counts calls by method name.

Example::

    server = FakeServer(quota_bytes=10_000)
    trash = server.add("Trash", special_use="\\\\Trash", size=500, received=old)
    session = server.session()
    snap = session.scan(session.list_folders()[0])
    session.delete([trash])
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from retention.errors import ConnectError, FolderSkipped, ProtocolError, UidValidityChanged
from retention.model import (
    DELETED,
    RECENT,
    FolderInfo,
    FolderSnapshot,
    Message,
    MessageRef,
    Protection,
    Usage,
)

AUTO: Any = object()  # "derive it" for FakeServer.add's sent / message_id / uidl
IMAP_CAPABILITIES = frozenset(
    {"IMAP4REV1", "UIDPLUS", "MOVE", "UNSELECT", "SPECIAL-USE", "SAVEDATE", "ESEARCH"}
)
POP3_CAPABILITIES = frozenset({"TOP", "UIDL", "USER"})

Fault = BaseException | Callable[..., None]


class FailAfter:
    """A ``fail_on`` value: let ``calls`` calls through, then raise ``exc`` every time."""

    def __init__(self, calls: int, exc: BaseException) -> None:
        self.calls = calls
        self.exc = exc

    def __call__(self, *args: Any) -> None:
        if self.calls <= 0:
            raise self.exc
        self.calls -= 1


@dataclass
class FakeMessage:
    """One stored message. ``size`` is its RFC822.SIZE as declared when added."""

    uid: int
    body: bytes
    size: int
    received: datetime
    flags: set[str] = field(default_factory=set)
    sent: datetime | None = None
    saved: datetime | None = None
    message_id: str | None = None
    date_header: str | None = None
    uidl: str | None = None


@dataclass
class FakeFolder:
    name: str
    uidvalidity: int
    special_use: frozenset[str] = frozenset()
    selectable: bool = True
    uidnext: int = 1
    messages: dict[int, FakeMessage] = field(default_factory=dict)

    def info(self) -> FolderInfo:
        return FolderInfo(self.name, self.special_use, self.selectable)


class FakeServer:
    """Folders of messages; open sessions with ``session()`` or ``connect()``."""

    def __init__(
        self, *, protocol: Literal["imap", "pop3"] = "imap", quota_bytes: int | None = None,
        capabilities: Iterable[str] | None = None, now: Callable[[], datetime] | None = None,
    ) -> None:
        self.protocol: Literal["imap", "pop3"] = protocol
        self.quota_bytes = quota_bytes
        base = IMAP_CAPABILITIES if protocol == "imap" else POP3_CAPABILITIES
        caps = set(base if capabilities is None else (c.upper() for c in capabilities))
        if protocol == "imap" and quota_bytes is not None and capabilities is None:
            caps.add("QUOTA")
        self.capabilities = frozenset(caps)
        self.now = now or (lambda: datetime.now(UTC))
        self.folders: dict[str, FakeFolder] = {}
        self.log: list[tuple[str, str, tuple[int | str, ...]]] = []
        self.sessions: list[FakeSession] = []
        self._validity = itertools.count(1_700_000_000)
        self.folder("INBOX")

    @classmethod
    def standard(cls, **kwargs: Any) -> FakeServer:
        """INBOX plus Trash, Junk, Sent, Archive, Drafts with their special-use attributes."""
        server = cls(**kwargs)
        for name in ("Trash", "Junk", "Sent", "Archive", "Drafts"):
            server.folder(name, special_use="\\" + name)
        return server

    # -- building --------------------------------------------------------------------

    def folder(self, name: str, *, special_use: str | Iterable[str] | None = None,
               selectable: bool = True) -> FakeFolder:
        """The folder ``name``, created (with these attributes) when missing."""
        if self.protocol == "pop3" and name != "INBOX":
            raise ValueError("a POP3 server has only INBOX")
        if name not in self.folders:
            uses = {special_use} if isinstance(special_use, str) else set(special_use or ())
            self.folders[name] = FakeFolder(
                name, next(self._validity), frozenset(uses), selectable
            )
        return self.folders[name]

    def add(
        self, folder: str = "INBOX", *, size: int = 1000, received: datetime | None = None,
        flags: Iterable[str] = (), special_use: str | None = None, sent: Any = AUTO,
        saved: datetime | None = None, message_id: Any = AUTO, date_header: str | None = None,
        body: bytes | None = None, uidl: Any = AUTO,
    ) -> MessageRef:
        """Store one message; returns its ref. ``sent`` defaults to ``received`` (None: no
        Date header; give ``date_header`` for a garbage one). With ``body`` given its length
        is the size; otherwise a body of ``size`` bytes is generated (headers permitting)."""
        box = self.folder(folder, special_use=special_use)
        received = _aware(received or self.now())
        uid = box.uidnext
        box.uidnext += 1
        sent = received if sent is AUTO else sent
        mid = f"<fake-{box.uidvalidity}-{uid}@fake.example>" if message_id is AUTO else message_id
        if body is None:
            body = _build(size, sent, mid, date_header)
        else:
            size = len(body)
        box.messages[uid] = FakeMessage(
            uid=uid, body=body, size=size, received=received, flags=set(flags),
            sent=_aware(sent) if sent is not None else None,
            saved=_aware(saved) if saved is not None else self._default_saved(received),
            message_id=mid, date_header=date_header if sent is None else None,
            uidl=f"{uid:08X}{box.uidvalidity:08X}" if uidl is AUTO else uidl,
        )
        return self._ref(box, box.messages[uid])

    def _default_saved(self, received: datetime) -> datetime | None:
        # A server with SAVEDATE knows when a message entered its folder; seeded ones
        # are taken to have arrived when they were received.
        return received if "SAVEDATE" in self.capabilities else None

    def flag(self, folder: str, uid: int, *flags: str) -> None:
        """Another client adds flags (e.g. ``\\Deleted`` without expunging)."""
        self.folders[folder].messages[uid].flags.update(flags)

    def recreate(self, folder: str, *, keep_messages: bool = True) -> int:
        """Delete and recreate ``folder``: a new UIDVALIDITY, UIDs renumbered from 1."""
        box = self.folders[folder]
        old = sorted(box.messages.values(), key=lambda m: m.uid)
        box.uidvalidity = next(self._validity)
        box.messages, box.uidnext = {}, 1
        for m in old if keep_messages else []:
            m.uid = box.uidnext
            box.uidnext += 1
            box.messages[m.uid] = m
        return box.uidvalidity

    # -- inspecting ------------------------------------------------------------------

    def uids(self, folder: str) -> list[int]:
        return sorted(self.folders[folder].messages) if folder in self.folders else []

    def message(self, ref: MessageRef) -> FakeMessage | None:
        box = self.folders.get(ref.folder)
        if box is None:
            return None
        if ref.uid is None:
            return next((m for m in box.messages.values() if m.uidl == ref.uidl), None)
        if box.uidvalidity != ref.uidvalidity:
            return None
        return box.messages.get(ref.uid)

    def usage_bytes(self) -> int:
        return sum(m.size for box in self.folders.values() for m in box.messages.values())

    def state(self) -> dict[str, dict[int, tuple[frozenset[str], str, datetime]]]:
        """{folder: {uid: (flags, sha256, received)}}: compare before/after for "nothing
        changed"."""
        return {
            name: {
                m.uid: (frozenset(m.flags), hashlib.sha256(m.body).hexdigest(), m.received)
                for m in box.messages.values()
            }
            for name, box in self.folders.items()
        }

    # -- sessions --------------------------------------------------------------------

    def session(self, *, readonly: bool = False,
                fail_on: dict[str, Fault] | None = None) -> FakeSession:
        s = FakeSession(self, readonly=readonly, fail_on=fail_on)
        self.sessions.append(s)
        return s

    def connect(self, account: object, password: str, readonly: bool) -> FakeSession:
        """The runner's ``Connector`` signature: ``Runner(connect=server.connect)``."""
        return self.session(readonly=readonly)

    def _ref(self, box: FakeFolder, m: FakeMessage) -> MessageRef:
        if self.protocol == "pop3":
            return MessageRef("INBOX", 0, None, m.uidl)
        return MessageRef(box.name, box.uidvalidity, m.uid)


class FakeSession:
    """A ``MailSession`` on a ``FakeServer`` (see the module docstring)."""

    def __init__(self, server: FakeServer, *, readonly: bool,
                 fail_on: dict[str, Fault] | None = None) -> None:
        self.server = server
        self.protocol = server.protocol
        self.readonly = readonly
        self.fail_on: dict[str, Fault] = dict(fail_on or {})
        self.calls: Counter[str] = Counter()
        self.pending: set[MessageRef] = set()  # POP3 deletions awaiting commit()
        self.closed = False
        self.committed = False

    def _enter(self, name: str, *args: Any) -> None:
        self.calls[name] += 1
        if self.closed:
            raise ConnectError("fake: the session is closed")
        fault = self.fail_on.get(name)
        if isinstance(fault, BaseException):
            raise fault
        if fault is not None:
            fault(*args)

    def _writable(self, what: str) -> None:
        if self.readonly:
            raise ProtocolError(f"fake: read-only session (dry-run): refusing to {what}")

    def _box(self, refs: Sequence[MessageRef]) -> FakeFolder:
        first = refs[0]
        if any(r.folder != first.folder or r.uidvalidity != first.uidvalidity for r in refs):
            raise ValueError("all refs of one call must share folder and UIDVALIDITY")
        box = self.server.folders.get(first.folder)
        if box is None:
            raise UidValidityChanged(first.folder, "the folder no longer exists")
        if self.protocol == "imap" and box.uidvalidity != first.uidvalidity:
            raise UidValidityChanged(
                first.folder, f"UIDVALIDITY changed from {first.uidvalidity} to "
                f"{box.uidvalidity}; its planned actions are skipped",
            )
        return box

    # -- MailSession -----------------------------------------------------------------

    def capabilities(self) -> frozenset[str]:
        self._enter("capabilities")
        return self.server.capabilities

    def list_folders(self) -> list[FolderInfo]:
        self._enter("list_folders")
        return [box.info() for box in self.server.folders.values()]

    def usage(self, folders: Sequence[FolderInfo] | None = None, *,
              counted: Mapping[str, int] | None = None) -> Usage:
        self._enter("usage", folders)
        if self.server.quota_bytes is not None and "QUOTA" in self.server.capabilities:
            count = sum(len(b.messages) for b in self.server.folders.values())
            return Usage(self.server.usage_bytes(), self.server.quota_bytes, "quota", count)
        names = {f.name for f in folders} if folders is not None else set(self.server.folders)
        boxes = [b for n, b in self.server.folders.items() if n in names and b.selectable]
        msgs = [m for b in boxes for m in b.messages.values() if self._ref(b, m) not in
                self.pending]
        return Usage(sum(m.size for m in msgs), None, "sum", len(msgs))

    def scan(self, folder: FolderInfo, *, with_sent: bool = True) -> FolderSnapshot:
        self._enter("scan", folder)
        box = self.server.folders.get(folder.name)
        if box is None:
            raise FolderSkipped(folder.name, "the folder no longer exists")
        messages = tuple(
            Message(
                ref=self._ref(box, m), size=m.size, received=m.received,
                flags=frozenset(f for f in m.flags if f != RECENT),
                sent=m.sent if with_sent else None, saved=m.saved,
                # As the real adapters: read along with the Date header only.
                message_id=m.message_id if with_sent else None,
                date_header=m.date_header if with_sent else None,
            )
            for m in sorted(box.messages.values(), key=lambda m: m.uid)
            if self._ref(box, m) not in self.pending
        )
        validity = box.uidvalidity if self.protocol == "imap" else 0
        return FolderSnapshot(box.info(), validity, messages,
                              has_savedate="SAVEDATE" in self.server.capabilities)

    def message_ids(self, refs: Sequence[MessageRef]) -> dict[MessageRef, str | None]:
        self._enter("message_ids", refs)
        if not refs:
            return {}
        self._box(refs)
        found = {r: self.server.message(r) for r in refs}
        return {r: m.message_id if m is not None else None for r, m in found.items()}

    def fetch(
        self, refs: Sequence[MessageRef], *, skipped: dict[MessageRef, str] | None = None
    ) -> Iterator[tuple[MessageRef, bytes]]:
        self._enter("fetch", refs)
        if not refs:
            return iter(())
        self._box(refs)
        found = [(r, self.server.message(r)) for r in refs]
        return iter([(r, m.body) for r, m in found if m is not None])

    def delete(
        self, refs: Sequence[MessageRef], *, protect: Protection | None = None,
        skipped: dict[MessageRef, str] | None = None,
    ) -> set[MessageRef]:
        self._enter("delete", refs)
        self._writable("delete")
        if not refs:
            return set()
        box = self._box(refs)
        if self.protocol == "pop3":
            gone = {r for r in refs if self.server.message(r) is not None}
            self.pending |= gone
            return gone
        if "UIDPLUS" not in self.server.capabilities:
            raise ProtocolError("fake: server lacks UIDPLUS: cannot delete exactly the "
                                "planned messages safely")
        removed = self._unprotected(box, refs, protect, skipped)
        for r in removed:
            del box.messages[_uid(r)]
        if removed:
            self.server.log.append(("delete", box.name, tuple(sorted(_uid(r) for r in removed))))
        return removed

    def move(
        self, refs: Sequence[MessageRef], to_folder: str, *, protect: Protection | None = None,
        skipped: dict[MessageRef, str] | None = None,
    ) -> set[MessageRef]:
        self._enter("move", refs, to_folder)
        self._writable("move")
        if not refs:
            return set()
        if self.protocol == "pop3":
            raise ProtocolError("fake: POP3 has no folders to move to")
        box = self._box(refs)
        caps = self.server.capabilities
        if "MOVE" not in caps and "UIDPLUS" not in caps:
            raise ProtocolError("fake: server lacks MOVE and UIDPLUS")
        target = self._target(to_folder)
        if target is box:
            raise ProtocolError(f"fake: cannot move {box.name} into itself")
        moved = self._unprotected(box, refs, protect, skipped)
        for r in sorted(moved):
            m = box.messages.pop(_uid(r))
            m.uid, target.uidnext = target.uidnext, target.uidnext + 1
            m.saved = self.server.now()
            target.messages[m.uid] = m
        if moved:
            self.server.log.append(("move", box.name, tuple(sorted(_uid(r) for r in moved))))
        return moved

    def _unprotected(
        self, box: FakeFolder, refs: Sequence[MessageRef], protect: Protection | None,
        skipped: dict[MessageRef, str] | None,
    ) -> set[MessageRef]:
        """The refs present whose current flags ``protect`` lets go (as the IMAP re-check)."""
        out: set[MessageRef] = set()
        for r in refs:
            m = box.messages.get(_uid(r))
            if m is None:
                continue
            hit = protect.forbids(frozenset(m.flags)) if protect else None
            if hit is not None:
                if skipped is not None:
                    skipped[r] = f"{hit} since the scan (changed by another client): left alone"
                continue
            out.add(r)
        return out

    def _target(self, name: str) -> FakeFolder:
        if name.startswith("\\"):
            for box in self.server.folders.values():
                if any(u.lower() == name.lower() for u in box.special_use):
                    return box
            raise ProtocolError(f"fake: the server has no {name} folder")
        return self.server.folder(name)

    def commit(self) -> None:
        self._enter("commit")
        if self.protocol == "pop3" and self.pending:
            box = self.server.folders["INBOX"]
            uidls = {r.uidl for r in self.pending}
            gone = [m.uid for m in box.messages.values() if m.uidl in uidls]
            for uid in gone:
                del box.messages[uid]
            if gone:
                self.server.log.append(("delete", "INBOX", tuple(sorted(gone))))
            self.pending.clear()
        self.committed = True

    def close(self) -> None:
        """Idempotent; POP3 deletions not committed are dropped (no QUIT)."""
        self.calls["close"] += 1
        self.pending.clear()
        self.closed = True

    def __enter__(self) -> FakeSession:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- the IMAP archive target's extras (as ImapSession) ---------------------------

    def folder_exists(self, name: str) -> bool:
        self._enter("folder_exists", name)
        return name in self.server.folders

    def ensure_folder(self, name: str) -> str:
        self._enter("ensure_folder", name)
        if name not in self.server.folders:
            self._writable(f"create folder {name}")
            self.server.folder(name)
        return name

    def folder_uidvalidity(self, name: str) -> int:
        self._enter("folder_uidvalidity", name)
        return self.server.folders[name].uidvalidity

    def append(self, folder: str, message: bytes, flags: Iterable[str],
               internal_date: datetime) -> int | None:
        self._enter("append", folder, message, flags, internal_date)
        self._writable(f"append to {folder}")
        keep = {f for f in flags if f.lower() not in (DELETED.lower(), RECENT.lower())}
        ref = self.server.add(folder, body=message, received=internal_date, flags=keep,
                              sent=None, message_id=_message_id(message))
        self.server.log.append(("append", folder, (ref.uid or 0,)))
        return ref.uid if "UIDPLUS" in self.server.capabilities else None

    def find_by_message_id(self, folder: str, message_id: str) -> list[int]:
        self._enter("find_by_message_id", folder, message_id)
        box = self.server.folders.get(folder)
        if box is None:
            return []
        return sorted(m.uid for m in box.messages.values() if m.message_id == message_id.strip())

    def fetch_uids(self, folder: str, uids: Iterable[int]) -> dict[int, bytes]:
        self._enter("fetch_uids", folder, uids)
        box = self.server.folders.get(folder)
        if box is None:
            return {}
        return {u: box.messages[u].body for u in uids if u in box.messages}

    def _ref(self, box: FakeFolder, m: FakeMessage) -> MessageRef:
        return self.server._ref(box, m)


def _uid(ref: MessageRef) -> int:
    if ref.uid is None:
        raise ValueError(f"not an IMAP ref (no UID): {ref}")
    return ref.uid


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _build(size: int, sent: datetime | None, message_id: str | None,
           date_header: str | None) -> bytes:
    head = [b"From: sender@fake.example", b"Subject: fake"]
    if sent is not None:
        head.append(b"Date: " + format_datetime(_aware(sent)).encode())
    elif date_header is not None:
        head.append(b"Date: " + date_header.encode("utf-8", "replace"))
    if message_id is not None:
        head.append(b"Message-ID: " + message_id.encode("utf-8", "replace"))
    data = b"\r\n".join(head) + b"\r\n\r\n"
    if size > len(data):
        data += b"x" * (size - len(data))
    return data


def _message_id(message: bytes) -> str | None:
    head = message.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    for line in head.splitlines():
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"message-id":
            return value.strip().decode("utf-8", "replace") or None
    return None


if TYPE_CHECKING:  # FakeSession satisfies the MailSession protocol (checked by mypy)
    from retention.adapters import MailSession

    def _is_mail_session(session: FakeSession) -> MailSession:
        return session
