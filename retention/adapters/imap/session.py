"""``ImapSession``: the ``MailSession`` of IMAP servers (RFC 3501 + UIDPLUS, MOVE, QUOTA...).

This module owns the IMAP session's entry point (``connect``) and its reading: usage, scan,
message_ids, fetch. The connection, login, error mapping and folder selection live in
``imap_conn``; delete, move and append in ``imap_act``; FETCH parsing in ``imap_fetch``;
the pure wire helpers in ``imap_wire``. The guarantees (see ``retention.adapters`` for
the contract):

* Reading never changes anything: ``scan``/``message_ids``/``fetch``/``usage`` use
  ``EXAMINE`` and ``BODY.PEEK`` in every session, read-only or not, so ``\\Seen`` is never
  set by us.
* Acting is exact: ``delete`` is ``UID STORE +FLAGS.SILENT (\\Deleted)`` then ``UID EXPUNGE``
  of exactly the planned UIDs that still exist, verified by a ``UID SEARCH`` afterwards;
  never a bare ``EXPUNGE`` or ``CLOSE``. Without UIDPLUS it refuses. ``move`` is ``UID MOVE``
  or ``UID COPY`` + ``COPYUID`` check + the same exact delete. UIDVALIDITY is re-checked on
  every ``SELECT``/``EXAMINE`` that acts on planned refs.
* Big folders go in batches: UID sets compressed to ranges and split so every command line
  stays under 8 KB, 2000 messages per ``UID FETCH`` when scanning (flags, dates, size: no
  header unless the Date is needed), Message-IDs 1000 at a time and only for the messages
  acted on (``message_ids``), bodies by at most 200 messages or 32 MiB. Scanning a
  50,000-message folder takes ~27 round trips, not 50,000.

Folder names are decoded Unicode with ``/`` between levels whatever the server's separator;
a literal ``/`` inside one level on a server with another separator is shown as U+2215
(``imap_wire.ESCAPED_SLASH``). They are relative to the personal namespace: where it is
``INBOX.`` (Cyrus with ``altnamespace: no``, Courier) ``INBOX.Trash`` is ``Trash``, and a
folder to create goes under the prefix. The session keeps the map back to the server's names.

The IMAP archive target (``retention.archive.imap``) also uses ``append``,
``find_by_message_id``, ``fetch_uids``, ``folder_exists``, ``ensure_folder`` and
``folder_uidvalidity``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

from imapclient import imap_utf7

from retention.adapters.deadline import io_timeout
from retention.adapters.imap.actions import ImapActions, one_folder, ref_uid
from retention.adapters.imap.connection import default_port, open_client
from retention.adapters.imap.fetch import parse_imap_datetime
from retention.adapters.imap.pipeline import Command, Reply, pipeline
from retention.adapters.imap.scanread import HeaderLines, ScanLines, stream
from retention.adapters.imap.wire import (
    aware_utc,
    compress_uids,
    normalise_flags,
    parse_date,
    parse_header_fields,
    parse_message_id,
    uid_batches,
    uid_ranges,
)
from retention.adapters.spool import Body, Limits, Spooled
from retention.errors import ProtocolError, Throttled
from retention.model import FolderChanges, FolderInfo, FolderSnapshot, Message, MessageRef, Usage

if TYPE_CHECKING:
    from retention.adapters import SaslLogin
    from retention.config.schema import Connection

_STATUS_MESSAGES = re.compile(rb"\(MESSAGES (\d+)\)\s*$")
log = logging.getLogger("retention.imap")

# Messages per metadata UID FETCH (~150 bytes of reply each). Bigger batches save little
# more time on a local server and hold more replies in memory at once.
SCAN_BATCH = 2000
HEADER_BATCH = 5000  # messages per Message-ID FETCH: streamed, so memory is not the bound
SIZE_BATCH = 5000  # messages per RFC822.SIZE-only FETCH (usage without STATUS=SIZE)
MESSAGE_ID = "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"
BODY_BATCH = 200  # messages per BODY.PEEK[] FETCH, and at most Limits.batch_bytes()
KIB = 1024


class ImapSession(ImapActions):
    """One authenticated IMAP session on one account (``MailSession``)."""

    # -- opening and closing ---------------------------------------------------------

    @classmethod
    def connect(
        cls, conn: Connection, password: str | SaslLogin, *, readonly: bool,
        host_label: str | None = None,
    ) -> ImapSession:
        """Connect, (STARTTLS,) log in. Raises ConnectError, TlsError or AuthError."""
        label = host_label or f"{conn.host}:{default_port(conn)}"
        client = open_client(conn, password, label)
        session = cls(client, readonly=readonly, label=label, timeout=io_timeout(conn))
        session.provider_hint = str(getattr(conn, "provider", "auto"))
        session.virtual_prefixes = tuple(getattr(conn, "virtual_prefixes", ()))
        welcome = getattr(client, "welcome", b"")
        session.greeting = welcome if isinstance(welcome, bytes) else b""
        return session

    def __enter__(self) -> ImapSession:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def commit(self) -> None:
        """IMAP changes are durable when each call returns: nothing to do."""

    # -- usage -----------------------------------------------------------------------

    def usage(self, folders: Sequence[FolderInfo] | None = None, *,
              counted: Mapping[str, int] | None = None) -> Usage:
        """``GETQUOTAROOT INBOX`` (STORAGE KiB -> bytes), else summed sizes (source sum).

        Summed sizes and message counts are of the user's own folders only (review F2):
        other users' and shared folders are not this mailbox's storage, and a virtual
        folder (Dovecot's ``virtual/`` namespace) shows messages stored elsewhere again.
        """
        caps = self.capabilities()
        if "QUOTA" in caps or any(c.startswith("QUOTA=RES-") for c in caps):
            replies = self._usage_replies(count=folders is None)
            try:
                quota = self._quota(replies["GETQUOTAROOT"])
            except ProtocolError as exc:  # a BAD for GETQUOTAROOT: measure instead
                log.debug("%s: %s: summing sizes", self.label, exc)
                quota = None
            if quota is not None:
                if quota.messages is None:
                    # No MESSAGE resource: count them (the cap's percentage and the
                    # messages gauge are about the whole account, not the scanned folders).
                    # Unlisted folders and LIST-STATUS (RFC 5819): one command for all, the
                    # difference between a fleet's usage sweep at the protocol's pace or not.
                    listed = replies.get("LIST-STATUS")
                    count = self._list_status_count(listed) if listed is not None else None
                    if count is None:
                        infos = list(folders) if folders is not None else self.folders()
                        count = self._message_count(infos, counted)
                    quota = replace(quota, messages=count)
                return quota
        infos = list(folders) if folders is not None else self.folders()
        total = count = 0
        for info in infos:
            if info.selectable and info.namespace.own:
                size, messages = self._folder_size(info.name)
                total += size
                count += messages
        return Usage(usage_bytes=total, limit_bytes=None, source="sum", messages=count)

    def _usage_replies(self, *, count: bool) -> dict[str, Reply]:
        """``GETQUOTAROOT INBOX`` and, when the messages are to be ``count``ed, what
        counting them needs: ``NAMESPACE`` (once a session) and ``LIST ... RETURN (STATUS
        (MESSAGES))`` where offered. Pipelined (``imap.pipeline``): one round trip, not
        three. The count's two are asked before the quota says whether it has a MESSAGE
        resource (then they go unused), as waiting for it would cost the round trip
        every account without one pays. By name; a NAMESPACE reply is left for
        ``namespaces()`` to judge when (and if) it is needed.
        """
        commands = {"GETQUOTAROOT": Command(b"GETQUOTAROOT INBOX", ("QUOTAROOT", "QUOTA"))}
        if count:
            if (self._namespaces is None and self.namespace_answer is None
                    and self.has("NAMESPACE")):
                commands["NAMESPACE"] = Command(b"NAMESPACE", ("NAMESPACE",))
            if self.has("LIST-STATUS"):
                # Only STATUS lines are read: the LIST lines are the folders'.
                commands["LIST-STATUS"] = Command(
                    b'LIST "" "*" RETURN (STATUS (MESSAGES))', ("STATUS",))
        names = list(commands)
        with self.guard(" + ".join(names), counts=names):
            answers = pipeline(self._client._imap, list(commands.values()))
        self._drain()
        replies = dict(zip(names, answers, strict=True))
        self.namespace_answer = replies.pop("NAMESPACE", self.namespace_answer)
        return replies

    def _quota(self, reply: Reply) -> Usage | None:
        """The fullest quota root's STORAGE (and MESSAGE) of a GETQUOTAROOT ``reply``; None
        when refused (NO) or without STORAGE. A BAD raises ``refusal``."""
        if reply.status == "BAD":
            raise self.refusal("GETQUOTAROOT", f"BAD {reply.text}")
        if not reply.ok:
            log.debug("%s: GETQUOTAROOT answered %s: summing sizes", self.label, reply.status)
            return None
        best: tuple[float, Usage] | None = None
        for line in reply.data.get("QUOTA", []):
            resources = _quota_resources(line)
            if "STORAGE" not in resources:
                continue
            used, limit = resources["STORAGE"]
            messages = resources.get("MESSAGE", (None, None))[0]
            usage = Usage(used * KIB, limit * KIB if limit else None, "quota", messages)
            # Several quota roots: the fullest one is the one that bites.
            ratio = usage.ratio or 0.0
            if best is None or ratio > best[0]:
                best = (ratio, usage)
        return best[1] if best else None

    def _list_status_count(self, reply: Reply) -> int | None:
        """Messages in all folders from the reply of ``LIST "" "*" RETURN (STATUS
        (MESSAGES))``.

        None when the server refused it (then STATUS per folder); a BAD that says "slow
        down" raises ``Throttled``. Only selectable folders get a STATUS reply (RFC 5819
        section 2).
        """
        if not reply.ok:
            refused = self.refusal("LIST-STATUS", f"{reply.status} {reply.text}")
            if reply.status == "BAD" and isinstance(refused, Throttled):
                raise refused
            log.debug("%s: %s", self.label, refused)
            return None
        total = 0
        name: bytes | None = None
        for item in reply.data.get("STATUS", []):
            # A name sent as a literal arrives as (prefix, name) then the rest of the line.
            if isinstance(item, tuple) and len(item) == 2:
                name = bytes(item[1])
                continue
            if isinstance(item, bytes):
                m = _STATUS_MESSAGES.search(item)
                if m is not None:
                    raw = name if name is not None else _status_name(item[: m.start()])
                    # Only the user's own folders (review F2): not other users', shared
                    # or virtual ones.
                    if raw is not None and self.namespace_of(_decode(raw)).own:
                        total += int(m.group(1))
            name = None
        return total

    def _message_count(self, infos: Sequence[FolderInfo],
                       counted: Mapping[str, int] | None = None) -> int | None:
        """Messages in the user's own selectable folders (``STATUS (MESSAGES)``, except
        those ``counted`` already); None if refused."""
        total = 0
        for info in infos:
            if not info.selectable or not info.namespace.own:
                continue
            if counted is not None and info.name in counted:
                total += counted[info.name]
                continue
            try:
                with self.guard("STATUS"):
                    status = self._client.folder_status(self.server(info.name), ["MESSAGES"])
            except ProtocolError as exc:
                log.debug("%s: STATUS %s: %s", self.label, info.name, exc)
                return None
            total += int(status.get(b"MESSAGES", 0))
        return total

    def _folder_size(self, folder: str) -> tuple[int, int]:
        """(bytes, messages) of one folder: ``STATUS (SIZE)`` or RFC822.SIZE fetches."""
        if self.has("STATUS=SIZE"):
            real = self.server(folder)
            with self.guard("STATUS"):
                status = self._client.folder_status(real, ["MESSAGES", "SIZE"])
            return int(status.get(b"SIZE", 0)), int(status.get(b"MESSAGES", 0))
        _validity, exists = self.select(folder, readonly=True)
        total = count = 0
        try:
            if exists:
                for batch in uid_batches(self.search_all(), SIZE_BATCH):
                    for data in self._fetch(batch, ["RFC822.SIZE"]).values():
                        total += _size(data) or 0  # NIL: unknown, counted as nothing
                        count += 1
        except BaseException:
            self.leave(quiet=True)
            raise
        self.leave()
        return total, count

    # -- reading ---------------------------------------------------------------------

    def scan(self, folder: FolderInfo, *, with_sent: bool = True) -> FolderSnapshot:
        """Metadata of every message, read-only (EXAMINE).

        Flags, INTERNALDATE, size (and SAVEDATE where offered): no header, so no literal
        per message, read by one ``UID FETCH 1:*`` streamed through ``scanread`` (one
        pattern per line, no per-message dict). ``with_sent`` adds the Date and
        Message-ID header fields (``BODY.PEEK``), read in batches of ``SCAN_BATCH`` by
        the general parser; without it ``message_id`` is None: ``message_ids`` reads it
        for the few messages that are acted on. Where QRESYNC is offered the snapshot
        carries the folder's HIGHESTMODSEQ (``scan_changes`` starts from it).
        """
        if with_sent or self.global_id_item() is not None:
            # Label folders (Gmail) also need each message's global id: the general path.
            return self._scan_with_headers(folder, with_sent=with_sent)
        savedate = self.has("SAVEDATE")
        qresync = self.enable_qresync()
        validity, exists = self.select(folder.name, readonly=True)
        modseq = self.selected_modseq if qresync else None
        try:
            lines = ScanLines(folder.name, validity)
            if exists:
                self._stream_meta(b"1:*", savedate, lines)
            messages = lines.messages(_general(False))
        except BaseException:
            self.leave(quiet=True)
            raise
        self.leave()
        return FolderSnapshot(folder, validity, tuple(messages), has_savedate=savedate,
                              warnings=self._left_out(folder, lines.left_out), modseq=modseq)

    def scan_changes(self, folder: FolderInfo, *, uidvalidity: int,
                     modseq: int) -> FolderChanges | None:
        """What changed since (``uidvalidity``, ``modseq``), read-only; None when that
        cannot be known exactly here (no QRESYNC, another UIDVALIDITY, no HIGHESTMODSEQ,
        or one below ``modseq``): the caller scans in full.

        EXAMINE; when HIGHESTMODSEQ moved, one ``UID FETCH 1:* (...) (CHANGEDSINCE m
        VANISHED)``: the changed and new messages in full, and the UIDs expunged since.
        """
        if not self.enable_qresync():
            return None
        savedate = self.has("SAVEDATE")
        validity, exists = self.select(folder.name, readonly=True)
        current = self.selected_modseq
        try:
            if validity != uidvalidity or current is None or current < modseq:
                self.leave()
                return None
            lines = ScanLines(folder.name, validity)
            if current != modseq:
                self._stream_meta(b"1:*", savedate, lines,
                                  b" (CHANGEDSINCE %d VANISHED)" % modseq)
            changed = lines.messages(_general(False))
            vanished = tuple(r for text in lines.vanished for r in uid_ranges(text))
        except BaseException:
            self.leave(quiet=True)
            raise
        self.leave()
        return FolderChanges(
            uidvalidity=validity, modseq=current,
            exists=lines.exists if lines.exists is not None else exists,
            changed=tuple(changed), vanished=vanished, has_savedate=savedate,
        )

    def _stream_meta(self, uid_set: bytes, savedate: bool, lines: ScanLines,
                     modifiers: bytes = b"") -> None:
        items = b"UID FLAGS INTERNALDATE RFC822.SIZE" + (b" SAVEDATE" if savedate else b"")
        with self.guard("UID FETCH"):
            stream(self._client._imap, b"UID FETCH " + uid_set + b" (" + items + b")"
                   + modifiers, lines.feed, lines.feed_line)
        self._drain()

    def _scan_with_headers(self, folder: FolderInfo, *, with_sent: bool = True) -> FolderSnapshot:
        savedate = self.has("SAVEDATE")
        items = ["FLAGS", "INTERNALDATE", "RFC822.SIZE"]
        if with_sent:
            items.append("BODY.PEEK[HEADER.FIELDS (DATE MESSAGE-ID)]")
        if savedate:
            items.append("SAVEDATE")
        gid = self.global_id_item()
        if gid is not None:
            items.append(gid)
        validity, exists = self.select(folder.name, readonly=True)
        messages: list[Message] = []
        left_out: list[str] = []  # "UID 5: INTERNALDATE out of range" (kept, reported)
        try:
            uids = self.search_all() if exists else []
            for batch in uid_batches(uids, SCAN_BATCH):
                fetched = self._fetch(batch, items)
                for uid in batch:
                    data = fetched.get(uid)
                    if data is None:  # expunged by someone else meanwhile
                        continue
                    ref = MessageRef(folder.name, validity, uid)
                    message = _message(ref, data, with_sent=with_sent)
                    if isinstance(message, str):
                        left_out.append(f"UID {uid}: {message}")
                    else:
                        if gid is not None and data.get(gid.encode()) is not None:
                            value = data[gid.encode()]
                            message = message.replace(global_id=(
                                value.decode("ascii", "replace") if isinstance(value, bytes)
                                else str(value)))
                        messages.append(message)
                del fetched  # not alive while the next batch is read: half the peak memory
        except BaseException:
            self.leave(quiet=True)
            raise
        self.leave()
        return FolderSnapshot(folder, validity, tuple(messages), has_savedate=savedate,
                              warnings=self._left_out(folder, left_out))

    def _left_out(self, folder: FolderInfo, left_out: Sequence[str]) -> tuple[str, ...]:
        if not left_out:
            return ()
        log.warning("%s: %s: %d message(s) left out: %s", self.label, folder.name,
                    len(left_out), "; ".join(left_out[:5]))
        return (_left_out_warning(left_out),)

    def message_ids(self, refs: Sequence[MessageRef]) -> dict[MessageRef, str | None]:
        """The Message-ID header of each ref (all in one folder), read-only.

        EXAMINE (UIDVALIDITY re-checked: ``UidValidityChanged``), then
        ``UID FETCH set BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]`` in batches. A message
        without the header, or no longer there, maps to None.
        """
        if not refs:
            return {}
        folder, validity = one_folder(refs)
        by_uid = {ref_uid(r): r for r in refs}
        found: dict[MessageRef, str | None] = dict.fromkeys(refs)
        self.select(folder, readonly=True, expect=validity)
        try:
            for batch in uid_batches(by_uid, HEADER_BATCH):
                for uid, mid in self._message_id_batch(batch).items():
                    found[by_uid[uid]] = mid
        except BaseException:
            self.leave(quiet=True)
            raise
        self.leave()
        return found

    def _message_id_batch(self, batch: Sequence[int]) -> dict[int, str | None]:
        """``{uid: Message-ID}`` of one batch of the selected folder (missing UIDs left out,
        and UIDs not in ``batch``: an unsolicited response is no answer)."""
        lines = HeaderLines()
        with self.guard("UID FETCH"):
            stream(self._client._imap, f"UID FETCH {compress_uids(batch)} ({MESSAGE_ID})"
                   .encode("ascii"), lines.feed)
        self._drain()
        wanted = set(batch)
        return {
            uid: parse_message_id(parse_header_fields(raw).get("message-id"))
            for uid, raw in lines.headers.items() if uid in wanted
        }

    def fetch(
        self, refs: Sequence[MessageRef], *, skipped: dict[MessageRef, str] | None = None
    ) -> Iterator[tuple[MessageRef, Body]]:
        """The exact bytes of each ref (BODY.PEEK[]), in batches; missing refs not yielded.

        A generator: the folder is examined (and UIDVALIDITY checked, raising
        ``UidValidityChanged``) when iteration starts. A body whose length is not its
        RFC822.SIZE (cut short, or padded) is not whole: it is not yielded, and
        ``skipped`` gets the ref with the reason (review F6).
        """
        if not refs:
            return iter(())
        folder, validity = one_folder(refs)
        by_uid = {ref_uid(r): r for r in refs}
        why: dict[int, str] = {}

        def bodies() -> Iterator[tuple[MessageRef, Body]]:
            try:
                for uid, body in self._bodies(folder, validity, list(by_uid), why):
                    yield by_uid[uid], body
            finally:
                if skipped is not None:
                    skipped.update({by_uid[u]: reason for u, reason in why.items()})

        return bodies()

    def fetch_uids(self, folder: str, uids: Iterable[int]) -> dict[int, Body]:
        """``{uid: bytes}`` of the given UIDs that exist (read back for verification)."""
        wanted = sorted(set(uids))
        if not wanted:
            return {}
        return dict(self._bodies(folder, None, wanted))

    def _bodies(
        self, folder: str, validity: int | None, uids: list[int],
        why: dict[int, str] | None = None,
    ) -> Iterator[tuple[int, Body]]:
        """``(uid, body)`` of the UIDs that exist and whose body is whole (its length is
        RFC822.SIZE); the others go into ``why`` with the reason. Bodies larger than the
        spool threshold come as ``Spooled`` files (see ``adapters.spool``)."""
        why = {} if why is None else why
        current, _exists = self.select(folder, readonly=True, expect=validity)
        try:
            sizes: dict[int, int] = {}
            for batch in uid_batches(uids, SCAN_BATCH):
                for uid, data in self._fetch(batch, ["RFC822.SIZE"]).items():
                    size = _size(data)
                    if size is None:
                        why[uid] = "no RFC822.SIZE (NIL): the body cannot be checked whole"
                    else:
                        sizes[uid] = size
            big = sorted(u for u, n in sizes.items() if n > Limits.spool_above())
            for uid in big:  # review F11: streamed to a spool file, never whole in memory
                self.ensure_selected(folder, True, current)
                spooled = self._spool_body(uid, sizes.pop(uid), why)
                if spooled is not None:
                    yield uid, spooled
            for batch in _by_size(sorted(sizes), sizes):
                # The caller may have used this session between two yields.
                self.ensure_selected(folder, True, current)
                fetched = self._fetch(batch, ["BODY.PEEK[]"])
                for uid in batch:
                    body = fetched.get(uid, {}).get(b"BODY[]")
                    if body is None:
                        continue
                    if len(body) != sizes[uid]:
                        why[uid] = (f"the server sent {len(body)} bytes of a "
                                    f"{sizes[uid]}-byte message (RFC822.SIZE): not whole")
                        log.warning("%s: %s UID %d: %s", self.label, folder, uid, why[uid])
                        continue
                    yield uid, bytes(body)
        except BaseException:
            self.leave(quiet=True)
            raise
        self.leave()

    def _spool_body(self, uid: int, size: int, why: dict[int, str]) -> Spooled | None:
        """Fetch one big body in ``BODY.PEEK[]<offset.length>`` pieces into a spool file."""
        piece = Limits.spool_above()
        spooled = Spooled()
        try:
            while len(spooled) < size:
                offset = len(spooled)
                got = self._fetch([uid], [f"BODY.PEEK[]<{offset}.{piece}>"]).get(uid, {})
                data = got.get(f"BODY[]<{offset}>".encode())
                if data is None and offset == 0 and not got:
                    spooled.close()
                    return None  # gone since RFC822.SIZE was read
                if not data:
                    break
                spooled.write(data)
                del data, got
        except BaseException:
            spooled.close()
            raise
        if len(spooled) != size:
            why[uid] = (f"the server sent {len(spooled)} bytes of a {size}-byte message "
                        "(RFC822.SIZE): not whole")
            log.warning("%s: UID %d: %s", self.label, uid, why[uid])
            spooled.close()
            return None
        return spooled

    def newest_internaldate(self, folder: str = "INBOX") -> datetime | None:
        """The INTERNALDATE of ``folder``'s highest UID (its newest delivery), read-only;
        None when empty or missing. Evidence for the clock check (review M10) when the
        rules scan only folders that get no new mail (a Trash-only policy)."""
        if not self.folder_exists(folder):
            return None
        self.select(folder, readonly=True)
        try:
            uids = self.search_uids("ALL")
            found = self._fetch([uids[-1]], ["INTERNALDATE"]) if uids else {}
        except BaseException:
            self.leave(quiet=True)
            raise
        self.leave()
        value = next(iter(found.values()), {}).get(b"INTERNALDATE")
        return value if isinstance(value, datetime) else None

    def older_than(self, ref: MessageRef, seconds: int) -> bool | None:
        """Does the server, by its own clock, count ``ref`` older than ``seconds``? (RFC
        5032 ``OLDER``: its INTERNALDATE against the server's now.) Read-only (EXAMINE,
        UIDVALIDITY re-checked); None without WITHIN or when the message is gone. The
        account pass checks its clock with it (review M10)."""
        if not self.has("WITHIN"):
            return None
        folder, validity = one_folder([ref])
        uid = str(ref_uid(ref))
        self.select(folder, readonly=True, expect=validity)
        try:
            if not self.search_uids("UID", uid):
                answer = None
            else:
                answer = bool(self.search_uids("UID", uid, "OLDER", str(max(1, seconds))))
        except BaseException:
            self.leave(quiet=True)
            raise
        self.leave()
        return answer

    def find_by_message_id(self, folder: str, message_id: str) -> list[int]:
        """UIDs whose Message-ID header is exactly ``message_id`` ([] if no such folder)."""
        if not self.folder_exists(folder):
            return []
        wanted = message_id.strip()
        self.select(folder, readonly=True)
        try:
            charset = None if wanted.isascii() else "UTF-8"
            with self.guard("UID SEARCH"):
                hits = sorted(self._client.search(["HEADER", "Message-ID", wanted], charset))
            found: list[int] = []
            for batch in uid_batches(hits, HEADER_BATCH):
                ids = self._message_id_batch(batch)
                # SEARCH HEADER is a substring match: confirm equality.
                found.extend(uid for uid in batch if ids.get(uid) == wanted)
        except BaseException:
            self.leave(quiet=True)
            raise
        self.leave()
        return found


# -- helpers ------------------------------------------------------------------------


def _by_size(uids: list[int], sizes: dict[int, int]) -> Iterator[list[int]]:
    batch: list[int] = []
    total = 0
    for uid in uids:
        size = sizes[uid]
        if batch and (len(batch) >= BODY_BATCH or total + size > Limits.batch_bytes()):
            yield batch
            batch, total = [], 0
        batch.append(uid)
        total += size
    if batch:
        yield batch


def _header_bytes(data: dict[bytes, Any]) -> bytes | None:
    for key, value in data.items():
        if isinstance(key, bytes) and key.upper().startswith(b"BODY[HEADER"):
            return bytes(value) if value is not None else None
    return None


def _general(with_sent: bool) -> Callable[[MessageRef, dict[bytes, Any]], Message | str]:
    return lambda ref, data: _message(ref, data, with_sent=with_sent)


def _message(ref: MessageRef, data: dict[bytes, Any], *, with_sent: bool) -> Message | str:
    """The scanned message, or why it is left out of the scan (kept, never acted on).

    A server's answer is input like any other: an INTERNALDATE that is missing or outside
    what a datetime holds (`` 1-Jan-0001 00:00:00 +0100``), ``RFC822.SIZE NIL`` or
    ``FLAGS NIL`` make the message's age, size or protection unknowable.
    """
    received = data.get(b"INTERNALDATE")
    if not isinstance(received, datetime):
        return "no readable INTERNALDATE"  # unknowable age: kept
    try:
        received = aware_utc(received)
    except OverflowError:  # year 1 at a positive offset, year 9999 at a negative one
        return "INTERNALDATE out of range"
    size = _size(data)
    if size is None:
        return "no RFC822.SIZE (NIL or missing)"
    flags = data.get(b"FLAGS")
    if not isinstance(flags, tuple | list):
        return "no FLAGS (NIL or missing): protection cannot be judged"
    fields = parse_header_fields(_header_bytes(data)) if with_sent else {}
    sent, raw_date = parse_date(fields.get("date")) if with_sent else (None, None)
    return Message(
        ref=ref,
        size=size,
        received=received,
        flags=normalise_flags(flags),
        sent=sent,
        saved=_savedate(data.get(b"SAVEDATE")),
        message_id=parse_message_id(fields.get("message-id")),
        date_header=raw_date,
    )


def _status_name(head: bytes) -> bytes | None:
    """The mailbox name of a ``STATUS`` line's head (an atom or a quoted string)."""
    head = head.strip()
    if head.startswith(b'"') and head.endswith(b'"') and len(head) >= 2:
        return re.sub(rb'\\(.)', rb"\1", head[1:-1])
    return head or None


def _decode(raw: bytes) -> str:
    """A modified UTF-7 mailbox name as imapclient decodes LIST names."""
    try:
        return str(imap_utf7.decode(raw))
    except (UnicodeError, ValueError):
        return raw.decode("utf-8", "replace")


def _size(data: dict[bytes, Any]) -> int | None:
    """RFC822.SIZE as a number; None when the server said NIL (or nothing, or garbage)."""
    size = data.get(b"RFC822.SIZE")
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None


def _left_out_warning(left_out: Sequence[str]) -> str:
    shown = "; ".join(left_out[:5]) + ("; ..." if len(left_out) > 5 else "")
    return f"{len(left_out)} message(s) left out of the scan (kept): {shown}"


def _savedate(value: Any) -> datetime | None:
    if not value:  # NIL: the server does not know
        return None
    if isinstance(value, datetime):
        return aware_utc(value)
    if not isinstance(value, bytes | bytearray):
        return None
    parsed = parse_imap_datetime(bytes(value))
    try:
        return aware_utc(parsed) if parsed is not None else None
    except OverflowError:  # year 1 at a positive offset
        return None


def _quota_resources(line: Any) -> dict[str, tuple[int, int]]:
    """``b'"User quota" (STORAGE 10 512 MESSAGE 3 1000)'`` -> {"STORAGE": (10, 512), ...}."""
    text = bytes(line).decode("utf-8", "replace") if isinstance(line, bytes | bytearray) else str(
        line
    )
    start, end = text.rfind("("), text.rfind(")")
    if start < 0 or end < start:
        return {}
    words = text[start + 1 : end].split()
    out: dict[str, tuple[int, int]] = {}
    for i in range(0, len(words) - 2, 3):
        name, used, limit = words[i : i + 3]
        if used.isdigit() and limit.isdigit():
            out[name.upper()] = (int(used), int(limit))
    return out


if TYPE_CHECKING:  # ImapSession satisfies the MailSession protocol (checked by mypy)
    from retention.adapters import MailSession

    def _is_mail_session(session: ImapSession) -> MailSession:
        return session
