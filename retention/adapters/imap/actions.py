"""The state-changing IMAP operations of ``ImapSession``: exact delete, move, append.

This module owns how the agent changes a mailbox, and only how (the session decides
nothing): ``delete`` is ``UID STORE +FLAGS.SILENT (\\Deleted)`` then ``UID EXPUNGE`` of exactly
the planned UIDs that still exist, checked by a ``UID SEARCH`` afterwards (a ``\\Deleted``
we set but could not expunge is taken back, so no other client's bare ``EXPUNGE`` acts on
it); never a bare ``EXPUNGE`` or ``CLOSE``, and without UIDPLUS it refuses. ``move`` is
``UID MOVE``, or ``UID COPY`` + ``COPYUID`` + the same exact delete. The archive target's
``append`` / ``ensure_folder`` live here too. Every call refuses in a read-only session and
re-checks UIDVALIDITY when it selects the folder of planned refs.
"""

from __future__ import annotations

import imaplib
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from retention.adapters.imap.connection import ImapConnection
from retention.adapters.imap.wire import (
    aware_utc,
    compress_uids,
    expand_uid_set,
    normalise_flags,
    parse_appenduid,
    parse_copyuid,
    uid_batches,
)
from retention.adapters.spool import Body, Spooled
from retention.errors import FolderSkipped, ProtocolError
from retention.model import DELETED, RECENT, MessageRef, Protection

log = logging.getLogger("retention.imap")

# UIDs per STORE/EXPUNGE/MOVE/COPY round (SEARCH, STORE, EXPUNGE, SEARCH); the set is
# compressed and split by length, so command lines stay under 8 KB whatever the count.
ACT_BATCH = 5000


class ImapActions(ImapConnection):
    """Delete, move, create and append on top of an ``ImapConnection``."""

    def _writable(self, what: str) -> None:
        if self.readonly:
            raise ProtocolError(f"{self.label}: read-only session (dry-run): refusing to {what}")

    def delete(
        self, refs: Sequence[MessageRef], *, protect: Protection | None = None,
        skipped: dict[MessageRef, str] | None = None,
    ) -> set[MessageRef]:
        """Remove exactly these messages; the refs actually removed are returned.

        ``protect``: re-checked right before acting (see ``_recheck``); the refs left alone
        for it go into ``skipped`` with the reason.
        """
        self._writable("delete")
        if not refs:
            return set()
        folder, validity = one_folder(refs)
        self._require_uidplus("delete")
        if self.labels and not self._is_trash(folder):
            return self._delete_via_trash(refs, protect, skipped)
        by_uid = {ref_uid(r): r for r in refs}
        removed: set[int] = set()
        why: dict[int, str] = {}
        self.select(folder, readonly=False, expect=validity)
        try:
            for batch in uid_batches(by_uid, ACT_BATCH):
                allowed, modseq = self._recheck(batch, protect, why)
                removed |= self._expunge_exact(allowed, unchangedsince=modseq, why=why)
        except BaseException:
            self.leave(quiet=True)
            raise
        finally:
            _report(skipped, by_uid, why)
        self.leave()
        return {by_uid[u] for u in removed}

    def _recheck(
        self, batch: list[int], protect: Protection | None, why: dict[int, str]
    ) -> tuple[list[int], int | None]:
        """The UIDs of ``batch`` that exist and that ``protect`` still lets go, and the
        MODSEQ to make the STORE conditional on (CONDSTORE, RFC 7162), else None.

        Flags are re-read here, right before acting: a message another client flagged or
        marked unread since the scan is left alone (``why`` says so). With CONDSTORE the
        STORE then carries ``UNCHANGEDSINCE`` the highest MODSEQ read here, so a change
        between this read and the STORE makes the server refuse it for that message.
        """
        if not protect:
            return self.present(batch), None
        condstore = self.has("CONDSTORE")
        fetched = self._fetch(batch, ["FLAGS", "MODSEQ"] if condstore else ["FLAGS"])
        allowed: list[int] = []
        modseqs: list[int] = []
        for uid in batch:
            data = fetched.get(uid)
            if data is None:
                continue  # no longer there
            flags = data.get(b"FLAGS")
            if not isinstance(flags, tuple | list):
                why[uid] = "its flags could not be read again before acting: left alone"
                continue
            hit = protect.forbids(normalise_flags(flags))
            if hit is not None:
                why[uid] = f"{hit} since the scan (changed by another client): left alone"
                continue
            allowed.append(uid)
            modseq = _modseq(data.get(b"MODSEQ"))
            if modseq is not None:
                modseqs.append(modseq)
        usable = condstore and len(modseqs) == len(allowed) and bool(allowed)
        return allowed, max(modseqs) if usable else None

    def _is_trash(self, folder: str) -> bool:
        return any(f.name == folder and "\\Trash" in f.special_use for f in self.folders())

    def _delete_via_trash(
        self, refs: Sequence[MessageRef], protect: Protection | None,
        skipped: dict[MessageRef, str] | None,
    ) -> set[MessageRef]:
        """Gmail: expunging in a label folder only removes the label (the message stays in
        All Mail, using quota). So ``UID MOVE`` to the ``\\Trash`` folder, then the exact
        ``UID STORE``/``UID EXPUNGE`` there of the UIDs ``COPYUID`` gave the moved copies.
        Without a COPYUID the moved messages stay in Trash (Gmail purges it in 30 days)."""
        folder, validity = one_folder(refs)
        trash = self.resolve("\\Trash")
        by_uid = {ref_uid(r): r for r in refs}
        moved: set[int] = set()
        in_trash: dict[int, list[int]] = {}  # Trash UIDVALIDITY -> UIDs of our copies
        why: dict[int, str] = {}
        self.select(folder, readonly=False, expect=validity)
        try:
            for batch in uid_batches(by_uid, ACT_BATCH):
                present, _modseq = self._recheck(batch, protect, why)
                if not present:
                    continue
                untagged = self._untagged()  # imaplib's SELECT replaces the dict
                untagged.pop("COPYUID", None)
                with self.guard("UID MOVE"):
                    self._client.move(compress_uids(present), self.server(trash))
                for code in untagged.pop("COPYUID", []):
                    parsed = parse_copyuid(b"[COPYUID " + bytes(code) + b"]")
                    if parsed is not None:
                        pairs = dict(zip(parsed[1], parsed[2], strict=True))
                        in_trash.setdefault(parsed[0], []).extend(
                            pairs[u] for u in present if u in pairs)
                self._drain()
                moved |= set(present) - set(self.present(present))
        except BaseException:
            self.leave(quiet=True)
            raise
        finally:
            _report(skipped, by_uid, why)
        self.leave()
        for trash_validity, uids in in_trash.items():
            try:
                self.select(trash, readonly=False, expect=trash_validity)
            except FolderSkipped as exc:  # moved already: Trash keeps them (30 days)
                log.warning("%s: %s: not expunged there: %s", self.label, trash, exc.reason)
                continue
            try:
                self._expunge_exact(self.present(sorted(set(uids))))
            except BaseException:
                self.leave(quiet=True)
                raise
            self.leave()
        if moved and not in_trash:
            log.warning("%s: no COPYUID from UID MOVE: %d message(s) left in %s",
                        self.label, len(moved), trash)
        return {by_uid[u] for u in moved}

    def _require_uidplus(self, what: str) -> None:
        if not self.has("UIDPLUS"):
            raise ProtocolError(
                f"{self.label}: server lacks UIDPLUS: cannot {what} exactly the planned "
                "messages safely"
            )

    def _expunge_exact(
        self, uids: list[int], *, unchangedsince: int | None = None,
        why: dict[int, str] | None = None,
    ) -> set[int]:
        """``UID STORE +FLAGS.SILENT (\\Deleted)`` + ``UID EXPUNGE`` of exactly ``uids``.

        ``unchangedsince``: a conditional STORE (RFC 7162 3.1.3); the UIDs the server
        reports ``MODIFIED`` were changed by another client meanwhile and are neither
        flagged nor expunged (``why`` says so).
        """
        if not uids:  # an empty set must never turn into a bare EXPUNGE
            return set()
        uid_set = compress_uids(uids)
        try:
            if unchangedsince is None:
                with self.guard("UID STORE"):
                    self._client.add_flags(uid_set, [DELETED], silent=True)
            else:
                modified = self._store_unchanged(uid_set, unchangedsince)
                for uid in modified & set(uids):
                    if why is not None:
                        why[uid] = "changed by another client while being removed: left alone"
                uids = [u for u in uids if u not in modified]
                if not uids:
                    return set()
                uid_set = compress_uids(uids)
            with self.guard("UID EXPUNGE"):
                # imapclient's public UID EXPUNGE (RFC 4315): it checks UIDPLUS (from the
                # capabilities cached at login, no extra round trip) and raises on NO/BAD.
                self._client.uid_expunge(uid_set)
        except ProtocolError:
            # A NO/BAD: do not leave our \Deleted behind for another client's bare EXPUNGE.
            # (After a lost connection we cannot; the journal's recovery deletes again.)
            self._unflag(uids)
            raise
        self._drain()
        remaining = self.present(uids)
        if remaining:
            log.warning("%s: %d message(s) survived UID EXPUNGE", self.label, len(remaining))
            self._unflag(remaining)
        return set(uids) - set(remaining)

    def _store_unchanged(self, uid_set: str, modseq: int) -> set[int]:
        """``UID STORE set (UNCHANGEDSINCE m) +FLAGS.SILENT (\\Deleted)``: the UIDs the
        server reported ``[MODIFIED ...]`` (not flagged)."""
        untagged = self._untagged()
        untagged.pop("MODIFIED", None)
        with self.guard("UID STORE"):
            typ, data = self._client._imap.uid(
                "STORE", uid_set, f"(UNCHANGEDSINCE {modseq})", "+FLAGS.SILENT", f"({DELETED})"
            )
            if typ != "OK":
                raise imaplib.IMAP4.error(f"STORE command error: {typ} {data!r}")
        modified: set[int] = set()
        for code in untagged.pop("MODIFIED", []) or []:
            text = bytes(code).decode("ascii", "replace").strip()
            try:
                modified.update(expand_uid_set(text))
            except ValueError:  # unreadable: trust nothing of this STORE
                modified.update(expand_uid_set(uid_set))
        return modified

    def _unflag(self, uids: list[int]) -> None:
        try:
            with self.guard("UID STORE"):
                self._client.remove_flags(compress_uids(uids), [DELETED], silent=True)
        except ProtocolError as exc:
            log.warning("%s: could not clear \\Deleted again: %s", self.label, exc)

    def move(
        self, refs: Sequence[MessageRef], to_folder: str, *, protect: Protection | None = None,
        skipped: dict[MessageRef, str] | None = None,
    ) -> set[MessageRef]:
        """Move exactly these messages to ``to_folder`` (a name, created when missing, or
        a special-use attribute such as ``\\Trash``).

        ``protect``/``skipped`` as for ``delete``: flags are re-read right before the
        ``UID MOVE`` (IMAP has no conditional MOVE: the window is one round trip).
        """
        self._writable("move")
        if not refs:
            return set()
        folder, validity = one_folder(refs)
        target = self.resolve(to_folder)
        if self.server(target) == self.server(folder):
            raise ProtocolError(f"{self.label}: cannot move {folder} into itself")
        use_move = self.has("MOVE")
        if not use_move:
            self._require_uidplus("move")
        real_target = self.ensure_folder(target)
        by_uid = {ref_uid(r): r for r in refs}
        moved: set[int] = set()
        why: dict[int, str] = {}
        self.select(folder, readonly=False, expect=validity)
        try:
            for batch in uid_batches(by_uid, ACT_BATCH):
                present, _modseq = self._recheck(batch, protect, why)
                if not present:
                    continue
                if use_move:
                    with self.guard("UID MOVE"):
                        self._client.move(compress_uids(present), real_target)
                    self._drain()
                    moved |= set(present) - set(self.present(present))
                else:
                    moved |= self._copy_then_delete(present, real_target)
        except BaseException:
            self.leave(quiet=True)
            raise
        finally:
            _report(skipped, by_uid, why)
        self.leave()
        return {by_uid[u] for u in moved}

    def _copy_then_delete(self, uids: list[int], real_target: str) -> set[int]:
        untagged = self._untagged()
        untagged.pop("COPYUID", None)
        with self.guard("UID COPY"):
            self._client.copy(compress_uids(uids), real_target)
        codes = untagged.pop("COPYUID", [])
        copied: set[int] = set()
        for code in codes:
            parsed = parse_copyuid(b"[COPYUID " + bytes(code) + b"]")
            if parsed is not None:
                copied.update(parsed[1])
        copied &= set(uids)
        if not copied:
            raise ProtocolError(
                f"{self.label}: UID COPY gave no COPYUID: the copies cannot be verified, "
                "so the originals are kept"
            )
        return self._expunge_exact(sorted(copied))

    # -- the IMAP archive target -----------------------------------------------------

    def folder_exists(self, name: str) -> bool:
        real = self.server(name)
        if real in self._existing:
            return True
        with self.guard("LIST"):
            rows = self._client.list_folders("", real)
        if any(row[2] == real for row in rows):
            self._existing.add(real)
            return True
        return False

    def ensure_folder(self, name: str) -> str:
        """Create (and subscribe) ``name`` unless it exists; returns the server name.

        Folders known to exist are remembered for the session (an archive run appends
        thousands of messages to a handful of folders).
        """
        real = self.server(name)
        if self.folder_exists(name):
            return real
        self._writable(f"create folder {name}")
        try:
            with self.guard("CREATE"):
                self._client.create_folder(real)
        except ProtocolError as exc:
            if "ALREADYEXISTS" not in str(exc).upper():  # a race with another client
                raise
        try:
            with self.guard("SUBSCRIBE"):
                self._client.subscribe_folder(real)
        except ProtocolError as exc:  # not worth failing for
            log.debug("%s: SUBSCRIBE %s: %s", self.label, name, exc)
        self._existing.add(real)
        self._names = None  # list again next time
        self._folders = None
        return real

    def folder_uidvalidity(self, name: str) -> int:
        with self.guard("STATUS"):
            status = self._client.folder_status(self.server(name), ["UIDVALIDITY"])
        return int(status[b"UIDVALIDITY"])

    def append(
        self, folder: str, message: Body, flags: Iterable[str], internal_date: datetime
    ) -> int | None:
        """APPEND with the flags (minus ``\\Deleted``/``\\Recent``) and INTERNALDATE.

        Returns the new UID from ``APPENDUID`` (UIDPLUS), else None. A ``NO`` (e.g.
        ``[OVERQUOTA]``) raises ProtocolError with the server's text; a lost connection
        raises ConnectError and the outcome is unknown (search before appending again).
        """
        self._writable(f"append to {folder}")
        keep = [f for f in flags if f.lower() not in (DELETED.lower(), RECENT.lower())]
        when = aware_utc(internal_date)
        untagged = self._untagged()
        untagged.pop("APPENDUID", None)
        real = self.ensure_folder(folder)
        try:
            with self.guard("APPEND"):
                text = self._append(real, message, keep, when)
        except ProtocolError as exc:
            if "TRYCREATE" not in str(exc).upper():
                raise
            # Deleted by someone since we looked: create it again, once.
            self._existing.discard(real)
            real = self.ensure_folder(folder)
            with self.guard("APPEND"):
                text = self._append(real, message, keep, when)
        codes = untagged.pop("APPENDUID", [])
        parsed = parse_appenduid(text)
        if parsed is None and codes:
            parsed = parse_appenduid(b"[APPENDUID " + bytes(codes[-1]) + b"]")
        return parsed[1] if parsed else None

    def _append(self, folder: str, message: Body, flags: list[str], when: datetime) -> Any:
        if not isinstance(message, Spooled):
            return self._client.append(folder, message, flags=flags, msg_time=when)
        # A spooled body (review F11) goes out as a literal read from its file piece by
        # piece: imaplib's append would build the whole message (and a CRLF-mapped copy)
        # in memory. imaplib sends a literal with ``self.send(literal)`` after the
        # server's continuation; that one call is redirected to stream the file.
        from imapclient.datetime_util import datetime_to_INTERNALDATE
        from imapclient.imapclient import seq_to_parenstr
        from imapclient.util import to_unicode

        imap = self._client._imap
        literal = _Literal(message)
        real_send = imap.send

        def send(data: Any) -> None:
            if data is literal:
                for piece in message.chunks():
                    real_send(piece)
            else:
                real_send(data)

        date = f'"{datetime_to_INTERNALDATE(when)}"'
        imap.send = send
        imap.literal = literal
        try:
            typ, data = imap._simple_command(
                "APPEND", self._client._normalise_folder(folder), seq_to_parenstr(flags), date)
        finally:
            imap.literal = None
            del imap.send  # back to the class's method
        if typ != "OK":
            from imapclient.exceptions import IMAPClientError

            raise IMAPClientError(f"append failed: {to_unicode(data[0])}")
        return data[0]


class _Literal:
    """Stands for a spooled body in imaplib's command: only its length is read there."""

    def __init__(self, body: Spooled) -> None:
        self.body = body

    def __len__(self) -> int:
        return len(self.body)


# -- helpers ------------------------------------------------------------------------


def one_folder(refs: Sequence[MessageRef]) -> tuple[str, int]:
    first = refs[0]
    for ref in refs:
        if ref.folder != first.folder or ref.uidvalidity != first.uidvalidity:
            raise ValueError("all refs of one call must share folder and UIDVALIDITY")
    return first.folder, first.uidvalidity


def _modseq(value: object) -> int | None:
    """FETCH's ``MODSEQ (12345)`` -> 12345."""
    if isinstance(value, tuple | list) and len(value) == 1:
        value = value[0]
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _report(
    skipped: dict[MessageRef, str] | None, by_uid: dict[int, MessageRef], why: dict[int, str]
) -> None:
    if skipped is not None:
        skipped.update({by_uid[u]: reason for u, reason in why.items() if u in by_uid})


def ref_uid(ref: MessageRef) -> int:
    if ref.uid is None:
        raise ValueError(f"not an IMAP ref (no UID): {ref}")
    return ref.uid
