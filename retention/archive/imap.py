"""IMAP archive targets: APPEND to another server (or account), verify by reading back.

This module owns archiving over IMAP through a second ``ImapSession`` (the adapter does the
wire work): the target folder (template expanded, ``/`` as separator, created when
missing), ``APPEND`` with the original flags minus ``\\Deleted``/``\\Recent`` and the
original INTERNALDATE, and verification by fetching the ``APPENDUID`` message back and
comparing SHA-256 of the exact bytes. A target without UIDPLUS cannot be verified and is
refused before anything is appended.

"Outcome unknown": when the connection drops or times out around an ``APPEND``, the
message may or may not have been stored. The writer reconnects once and *reconciles*
before appending again: it searches the target folder for the Message-ID (or, without
one, or with one ``SEARCH`` cannot match or refuses, for messages of the same size: review
M8) and accepts a candidate whose bytes hash equal, so a retry never duplicates. A copy
that fails verification is removed again (``discard``, review M11). If it cannot
reconnect, the item is left ``planned`` in the journal and the next run's recovery
reconciles it the same way (``find``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from retention.archive.base import Batch, Copy, Item, PasswordReader, Placed, WriteResult, sha256
from retention.archive.paths import expand
from retention.errors import (
    AccountError,
    ArchiveError,
    ConnectError,
    FolderSkipped,
    ProtocolError,
)

if TYPE_CHECKING:
    from retention.adapters.imap.session import ImapSession
    from retention.config.schema import ImapTarget
    from retention.state.journal import JournalRow

Connect = Callable[["ImapTarget", str], "ImapSession"]


def _default_connect(target: ImapTarget, password: str) -> ImapSession:
    from retention.adapters.imap.session import ImapSession

    return ImapSession.connect(target, password, readonly=False)


class ImapWriter:
    def __init__(
        self,
        name: str,
        target: ImapTarget,
        *,
        account: str,
        password: PasswordReader,
        connect: Connect | None = None,
    ) -> None:
        self.name = name
        self.target = target
        self.account = account
        self._password = password
        self._connect = connect or _default_connect
        self._session: ImapSession | None = None

    # -- the connection --------------------------------------------------------------------

    @property
    def where(self) -> str:
        port = self.target.effective_port()
        return f"imap://{self.target.username}@{self.target.host}:{port}"

    def session(self) -> ImapSession:
        if self._session is None:
            try:
                s = self._connect(self.target, self._password(self.target))
            except AccountError as e:
                raise ArchiveError(f"archive {self.name}: cannot connect: {e}") from None
            if "UIDPLUS" not in s.capabilities():
                s.close()
                raise ArchiveError(
                    f"archive {self.name}: the server lacks UIDPLUS (no APPENDUID), so "
                    "archived copies cannot be verified"
                )
            self._session = s
        return self._session

    def _drop(self) -> None:
        if self._session is not None:
            try:
                self._session.close()
            except AccountError:
                pass
            self._session = None

    # -- writing -----------------------------------------------------------------------------

    def folder_for(self, item: Item) -> str:
        m = item.action.message
        return expand(self.target.folder, account=self.account, folder=m.folder,
                      received=m.received, filesystem=False)

    def place(self, items: Sequence[Item]) -> Batch:
        placed = []
        for item in items:
            folder = self.folder_for(item)
            locator: dict[str, Any] = {"type": "imap", "folder": folder}
            placed.append(Placed(item, item.sha256, f"{self.where}/{folder}", locator))
        self.session()  # connect now: a refused login fails before anything is journalled
        return Batch(placed)

    def write(self, batch: Batch) -> WriteResult:
        result = WriteResult()
        for i, p in enumerate(batch.placed):
            try:
                uid = self._append(p)
            except ArchiveError as e:
                result.error = e
                break
            except _Unknown as e:
                result.error = e.error
                result.unresolved.add(i)
                break
            folder = p.locator["folder"]
            result.stored[i] = (
                f"{self.where}/{folder};UID={uid}", {"type": "imap", "folder": folder, "uid": uid}
            )
        return result

    def _append(self, p: Placed) -> int:
        m = p.item.action.message
        folder = p.locator["folder"]
        try:
            uid = self.session().append(folder, p.item.data, sorted(m.flags), m.received)
        except ConnectError as e:
            # Outcome unknown: reconnect, look for it, append again only if it is not there.
            self._drop()
            try:
                found = self._reconcile(folder, m.message_id, m.size, p.copy_sha256)
                if found is not None:
                    return found
                uid = self.session().append(folder, p.item.data, sorted(m.flags), m.received)
            except (ArchiveError, ConnectError) as again:
                raise _Unknown(ArchiveError(
                    f"archive {self.name}: connection lost around APPEND to {folder} ({e}); "
                    f"could not reconcile: {again}"
                )) from None
            except AccountError as again:
                raise ArchiveError(f"archive {self.name}: APPEND to {folder}: {again}") from None
        except AccountError as e:
            raise ArchiveError(f"archive {self.name}: APPEND to {folder} refused: {e}") from None
        if uid is None:
            raise _Unknown(ArchiveError(
                f"archive {self.name}: APPEND to {folder} returned no APPENDUID: cannot verify"
            ))
        return uid

    def _reconcile(
        self, folder: str, message_id: str | None, size: int, digest: str | None
    ) -> int | None:
        """The UID of a message in ``folder`` whose bytes hash to ``digest``, if any."""
        if digest is None:
            return None
        s = self.session()
        try:
            candidates = None
            if message_id and _searchable(message_id):
                try:
                    candidates = s.find_by_message_id(folder, message_id)
                except ProtocolError:  # a server that refuses the SEARCH (BAD): by size
                    candidates = None
            if candidates is None:
                candidates = self._same_size(folder, size)
            if not candidates:
                return None
            bodies = s.fetch_uids(folder, candidates)
        except FolderSkipped:
            return None
        except AccountError as e:
            raise ArchiveError(f"archive {self.name}: searching {folder}: {e}") from None
        for uid in sorted(bodies):
            if sha256(bodies[uid]) == digest:
                return uid
        return None

    def _same_size(self, folder: str, size: int) -> list[int]:
        """Without a Message-ID: candidates by RFC822.SIZE (a full scan; recovery only)."""
        s = self.session()
        if not s.folder_exists(folder):
            return []
        info = next((f for f in s.list_folders() if f.name == folder), None)
        if info is None:
            return []
        snap = s.scan(info, with_sent=False)
        return [m.uid for m in snap.messages if m.size == size and m.uid is not None]

    def release(self, batch: Batch) -> None:
        return None

    # -- reading back --------------------------------------------------------------------------

    def verify(self, copies: Sequence[Copy]) -> list[bool]:
        by_folder: dict[str, list[int]] = {}
        for c in copies:
            by_folder.setdefault(c.locator["folder"], []).append(int(c.locator["uid"]))
        digests: dict[tuple[str, int], str] = {}
        for folder, uids in by_folder.items():
            try:
                got = self.session().fetch_uids(folder, uids)
            except FolderSkipped:
                got = {}
            except AccountError as e:
                raise ArchiveError(f"archive {self.name}: reading back {folder}: {e}") from None
            # Digests only: a read-back body may be a spool file (large messages).
            digests.update({(folder, uid): sha256(data) for uid, data in got.items()})
            del got
        out = []
        for c in copies:
            digest = digests.get((c.locator["folder"], int(c.locator["uid"])))
            out.append(digest is not None and digest == c.copy_sha256)
        return out

    def discard(self, locators: Sequence[dict[str, Any]]) -> int:
        """Remove copies that failed verification (exactly their APPENDUIDs): a target that
        rewrites what it stores (Exchange) would otherwise keep one more unusable copy per
        run (review M11). Returns how many went; a failure to remove is not an error (the
        copy is only unusable, and the source is kept anyway)."""
        from retention.model import MessageRef

        by_folder: dict[str, list[int]] = {}
        for loc in locators:
            by_folder.setdefault(loc["folder"], []).append(int(loc["uid"]))
        gone = 0
        for folder, uids in by_folder.items():
            try:
                s = self.session()
                validity = s.folder_uidvalidity(folder)
                gone += len(s.delete([MessageRef(folder, validity, u) for u in uids]))
            except (AccountError, FolderSkipped):
                continue
        return gone

    def find(self, row: JournalRow) -> tuple[str, dict[str, Any]] | None:
        folder = row.locator.get("folder")
        if not folder:
            return None
        uid = self._reconcile(folder, row.message_id, row.size, row.copy_sha256)
        if uid is None:
            return None
        return f"{self.where}/{folder};UID={uid}", {"type": "imap", "folder": folder, "uid": uid}

    def close(self) -> None:
        self._drop()


def _searchable(message_id: str) -> bool:
    """Can ``SEARCH HEADER Message-ID`` find this id? Not when it was decoded from invalid
    UTF-8 (U+FFFD stands for bytes the search would need) or holds a control character
    (a lone CR): then the candidates are found by size instead (review M8)."""
    return "\ufffd" not in message_id and not any(ord(c) < 32 or ord(c) == 127
                                                   for c in message_id)


class _Unknown(Exception):  # noqa: N818 - internal signal, not an error type
    """The APPEND's outcome is unknown: leave the row planned for recovery."""

    def __init__(self, error: ArchiveError) -> None:
        super().__init__(str(error))
        self.error = error
