"""Crash recovery: finishing or rolling back what an interrupted run left in the journal.

This module owns the journal rows a run did not close (the agent was killed, the connection
dropped, a batch's server call failed half-way): before the next run of the account scans,
each open row is either finished or rolled back, judged by what the server and the archive
show, never by the journal alone. The invariants it keeps:

* Nothing is archived twice: a ``planned`` archive row whose copy is complete (Maildir file,
  IMAP message found by Message-ID and hash) is adopted, not written again; an mbox file is
  truncated back to its journalled offset. A copy is only ever made again after the previous
  attempt was proven absent or rolled back.
* Nothing is deleted without a verified copy: the copy of an ``archived``/``verified`` row is
  read back and hashed again before its source goes; a missing or damaged copy leaves the
  source in place (row ``failed``), an unreachable target raises ``ArchiveError`` before
  anything is deleted, and a changed UIDVALIDITY leaves the folder alone.
* Our own ``\\Deleted`` flags are finished: a delete cut between ``UID STORE \\Deleted`` and
  ``UID EXPUNGE`` is completed for exactly the planned UIDs. Left behind, the flag would make
  the planner skip the message as another client's pending delete.
* A move made by ``UID COPY`` + ``UID STORE \\Deleted`` + ``UID EXPUNGE`` (a server without
  MOVE) cut after the COPY is finished too, when the target folder holds a byte-identical
  copy (found by Message-ID, compared whole): the source is removed exactly, instead of a
  second COPY next run (a duplicate) or our ``\\Deleted`` left on it (review M6).

One unit of work: an ``Executor`` owns a ``Recovery`` and shares its containers with it
(``handled``: ref key -> detail, so the plan's action for a message recovery finished is
reported ``done``; ``pending``: for POP3, the rows whose deletion was retried and awaits
``QUIT``). The runner calls ``Executor.recover()`` and then ``Executor.execute()`` on the
same executor; execute's commit journals the pending rows ``deleted``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from retention.archive import ArchiveSet, ArchiveWriter, Copy, Item, sha256
from retention.errors import ArchiveError, FolderSkipped
from retention.model import FolderInfo, Message, MessageRef, Protection
from retention.plan import Action, ActionKind, Clock
from retention.state.journal import (
    ARCHIVED,
    DELETED,
    DELETING,
    DROPPED,
    FAILED,
    MOVED,
    PLANNED,
    SKIPPED,
    VERIFIED,
    Journal,
    JournalRow,
)
from retention.state.stuck import hint

if TYPE_CHECKING:
    from retention.adapters import MailSession

@dataclass
class RecoveryReport:
    """What ``recover`` did, for logs and tests."""

    completed: int = 0  # removals confirmed or finished
    dropped: int = 0  # planned but never acted on: rolled back
    failed: int = 0  # copy missing/damaged or folder changed: source left in place
    pending_commit: int = 0  # POP3 deletions retried, committed by execute()
    notes: list[str] = field(default_factory=list)
    # The removals this recovery finished (and, for POP3, those its QUIT will commit):
    # the run reports them, since a fresh scan no longer shows those messages.
    finished: list[JournalRow] = field(default_factory=list)
    pending: list[JournalRow] = field(default_factory=list)


class Recovery:
    """Recovers one account's interrupted runs over one session (see the module docstring).

    ``pending`` and ``handled`` are the executor's containers: recovery adds to them and the
    executor reads them.
    """

    def __init__(
        self,
        session: MailSession,
        journal: Journal,
        *,
        archives: ArchiveSet | None,
        run_id: str,
        account: str,
        pending: list[int],
        handled: dict[str, str],
        rules: Mapping[str, Protection] | None = None,
    ) -> None:
        self.session = session
        self.rules = rules
        self.journal = journal
        self.archives = archives
        self.run_id = run_id
        self.account = account
        self._pop3 = session.protocol == "pop3"
        self.pending = pending
        self.handled = handled
        self._folders: dict[str, FolderInfo] | None = None
        self._present: dict[str, tuple[int, set[str]]] = {}
        self._deleted_flag: set[str] = set()  # keys of present messages flagged \Deleted

    def run(self) -> RecoveryReport:
        """Finish or roll back what an interrupted run left for this account.

        * mbox intents: the file is truncated back to the journalled offset; their rows
          (still ``planned``) are ``dropped`` - the message is still in its folder.
        * ``planned`` archive rows: a complete copy the run made (Maildir file, IMAP message
          found by Message-ID and hash) is adopted as ``archived``; otherwise ``dropped``.
        * ``planned`` delete/move rows: ``deleted``/``moved`` if the message is gone from the
          folder (same UIDVALIDITY), else ``dropped``.
        * ``archived``/``verified`` rows: the copy is verified again (exists, hash); then the
          source is deleted if still there. A missing or damaged copy makes the row
          ``failed`` and leaves the source alone (the next plan archives it again).
        * ``deleting`` rows (POP3): deleted again if the UIDL is still listed, else ``deleted``.

        No message is archived twice: a copy is only ever made again after the previous
        attempt was proven absent or rolled back. Raises ArchiveError when a target needed
        to verify a copy cannot be reached (nothing is deleted then); its message names
        ``retention recover``, the operator's way out when that lasts (review M9).
        """
        try:
            return self._run()
        except ArchiveError as e:
            raise ArchiveError(f"recovering interrupted actions: {e}; {hint(self.account)}"
                               ) from None

    def _run(self) -> RecoveryReport:
        report = RecoveryReport()
        for intent in self.journal.intents(account=self.account):
            from retention.archive.mbox import repair_intent  # only when one is left

            repair_intent(self.journal, intent)
        foreign = self.journal.foreign_rows(self.account)
        if foreign:
            # Review F4: the entry now reaches another mailbox; the same folder, UIDVALIDITY
            # and UID there are another message. Nothing is done to either mailbox.
            self.journal.mark([r.id for r in foreign], SKIPPED, detail=(
                "interrupted in another mailbox (the account entry now points elsewhere); "
                "nothing done"))
            report.failed += len(foreign)
            report.notes.append(f"{len(foreign)} interrupted action(s) of the mailbox this "
                                "account used to reach were left alone")
        rows = self.journal.open_rows(self.account)
        if not rows:
            return report
        to_delete: list[JournalRow] = []
        for row in rows:
            self._recover_row(row, report, to_delete)
        by_folder: dict[tuple[str, bool], list[JournalRow]] = {}
        for row in to_delete:
            by_folder.setdefault((row.folder, row.action in _MOVES), []).append(row)
        for folder_rows in by_folder.values():
            self._recover_deletes(folder_rows, report)
        return report

    def _recover_row(
        self, row: JournalRow, report: RecoveryReport, to_delete: list[JournalRow]
    ) -> None:
        key = row.ref.key()
        state = row.state
        if row.action == ActionKind.ARCHIVE.value and state == PLANNED:
            found = self._recovery_writer(row).find(row)
            if found is None:
                self.journal.mark([row.id], DROPPED, detail="interrupted before the archive "
                                  "copy was complete; message left in place")
                report.dropped += 1
                return
            location, locator = found
            self.journal.mark([row.id], ARCHIVED, location=location, locator=locator,
                              detail="copy found by recovery")
            row = replace(row, state=ARCHIVED, location=location, locator=locator)
            state = ARCHIVED
        if state in (ARCHIVED, VERIFIED):
            assert row.copy_sha256 is not None
            ok = self._verify_rows([row])[0]
            if not ok:
                self.journal.mark([row.id], FAILED, detail=f"archived copy at {row.location} "
                                  "is missing or damaged; source left in place")
                report.failed += 1
                report.notes.append(f"copy missing or damaged: {row.location}")
                return
            if state == ARCHIVED:
                self.journal.mark([row.id], VERIFIED, name="verified-by-recovery")
                row = replace(row, state=VERIFIED)
        present = self._is_present(row.ref)
        if present is None:
            self.journal.mark([row.id], SKIPPED, detail="the folder is gone or its "
                              "UIDVALIDITY changed since the interrupted run; nothing done")
            report.failed += 1
            return
        if row.state == PLANNED:  # delete / move / trash, outcome unknown
            if present and row.action == ActionKind.DELETE.value and self._flagged_deleted(
                row.ref
            ):
                # Cut between our UID STORE \Deleted and UID EXPUNGE: the planner would now
                # skip it as "another client's pending delete", so finish the exact delete
                # the plan chose rather than leave our flag behind.
                to_delete.append(row)
                return
            if present and row.action in _MOVES and self._copied_to_target(row):
                to_delete.append(row)  # the COPY was made: finish the move (M6)
                return
            if present:
                self.journal.mark([row.id], DROPPED, detail="interrupted before acting; "
                                  "message left in place")
                report.dropped += 1
            else:
                done = MOVED if row.action in ("move", "trash") else DELETED
                self.journal.mark([row.id], done, detail="completed (confirmed by recovery)")
                self.handled[key] = f"completed by run {row.run_id}"
                report.completed += 1
                report.finished.append(row)
            return
        # verified or deleting: the source goes, if it is still there
        if present:
            to_delete.append(row)
        else:
            self.journal.mark([row.id], DELETED, detail="completed (confirmed by recovery)")
            self.handled[key] = f"completed by run {row.run_id}"
            report.completed += 1
            report.finished.append(row)

    def _recover_deletes(self, rows: list[JournalRow], report: RecoveryReport) -> None:
        rows = self._still_chosen(rows, report)
        removed: set[MessageRef] = set()
        kept: dict[MessageRef, str] = {}
        try:
            for protect, group in _by_protection(rows, self.rules):
                removed |= self.session.delete([r.ref for r in group], protect=protect,
                                               skipped=kept)
        except FolderSkipped as e:
            self.journal.mark([r.id for r in rows if r.state != DELETING], SKIPPED,
                              detail=e.reason)
            return
        spared = [r for r in rows if r.ref in kept and r.ref not in removed]
        if spared:
            self.journal.mark([r.id for r in spared], DROPPED, detail=(
                "not finished: the message is protected now "
                f"({kept[spared[0].ref]}); left in place"))
            report.dropped += len(spared)
            rows = [r for r in rows if r not in spared]
        self.journal.step("source-removed")
        gone = [r for r in rows if r.ref in removed]
        vanished = [r for r in rows if r.ref not in removed]
        self.journal.mark([r.id for r in vanished if r.action not in _MOVES], DELETED,
                          detail="gone before recovery could delete it; the copy is verified")
        self.journal.mark([r.id for r in vanished if r.action in _MOVES], MOVED,
                          detail="gone before recovery could finish the move; the copy is in "
                          "the target folder")
        report.completed += len(vanished)
        report.finished.extend(vanished)
        if self._pop3:
            self.journal.mark([r.id for r in gone if r.state != DELETING], DELETING)
            self.pending.extend(r.id for r in gone)
            report.pending_commit += len(gone)
            report.pending.extend(gone)
        else:
            moves = [r for r in gone if r.action in _MOVES]
            self.journal.mark([r.id for r in moves], MOVED, detail=(
                "completed by recovery: the interrupted run's copy is in the target folder"))
            self.journal.mark([r.id for r in gone if r.action not in _MOVES], DELETED,
                              detail="completed by recovery")
            report.completed += len(gone)
            report.finished.extend(gone)
        for r in gone:
            self.handled[r.ref.key()] = f"completed from run {r.run_id}"

    def _still_chosen(self, rows: list[JournalRow], report: RecoveryReport) -> list[JournalRow]:
        """Rows whose rule is still in the current policy; the others are dropped (F4)."""
        if self.rules is None:
            return rows
        gone = [r for r in rows if r.rule not in self.rules]
        if gone:
            self.journal.mark([r.id for r in gone], DROPPED, detail=(
                f"not finished: rule {gone[0].rule!r} is no longer in the policy; "
                "left in place"))
            report.dropped += len(gone)
        return [r for r in rows if r.rule in self.rules]

    def _recovery_writer(self, row: JournalRow) -> ArchiveWriter:
        if self.archives is not None and row.target in self.archives.targets:
            assert row.target is not None
            return self.archives.writer(row.target, self.journal, self.run_id)
        kind = row.locator.get("type")
        if kind in ("mbox", "maildir"):
            return _LocatorOnly(row.target or "?")
        raise ArchiveError(
            f"archive target {row.target!r} of an interrupted run is no longer configured; "
            "cannot verify its copies (nothing deleted)"
        )

    def _verify_rows(self, rows: Sequence[JournalRow]) -> list[bool]:
        out = []
        for row in rows:
            assert row.copy_sha256 is not None
            out.extend(self._recovery_writer(row).verify([Copy(row.locator, row.copy_sha256)]))
        return out

    def _copied_to_target(self, row: JournalRow) -> bool:
        """Did an interrupted COPY-fallback move already copy ``row``'s message? Only on a
        server without MOVE (a UID MOVE is atomic: a message still in its folder was not
        moved), only by Message-ID, and only for a byte-identical copy."""
        s: Any = self.session
        has, find = getattr(s, "has", None), getattr(s, "find_by_message_id", None)
        if has is None or find is None or has("MOVE") or not row.message_id or not row.to_folder:
            return False
        try:
            target = s.resolve(row.to_folder)
            uids = find(target, row.message_id)
            if not uids:
                return False
            source = dict(s.fetch([row.ref]))
            copies = s.fetch_uids(target, uids)
        except FolderSkipped:
            return False
        body = source.get(row.ref)
        return body is not None and any(
            sha256(c) == sha256(body) for c in copies.values())

    def _flagged_deleted(self, ref: MessageRef) -> bool:
        return ref.key() in self._deleted_flag

    def _is_present(self, ref: MessageRef) -> bool | None:
        """Is the message still in its folder? None when the folder is gone or its
        UIDVALIDITY changed (POP3 refs have no UID: INBOX always exists)."""
        if ref.folder not in self._present:
            if self._folders is None:
                self._folders = {f.name: f for f in self.session.list_folders()}
            info = self._folders.get(ref.folder)
            if info is None:
                # Renamed or deleted since the crash: we cannot tell which, so nothing is
                # claimed done (a rename would leave the messages, under another name).
                self._present[ref.folder] = (-1, set())
            else:
                snap = self.session.scan(info, with_sent=False)
                self._present[ref.folder] = (
                    snap.uidvalidity, {m.ref.key() for m in snap.messages}
                )
                self._deleted_flag.update(m.ref.key() for m in snap.messages if m.deleted)
        validity, keys = self._present[ref.folder]
        if ref.uid is not None and validity != ref.uidvalidity:
            return None
        return ref.key() in keys


class _LocatorOnly:
    """Verifies mbox/Maildir copies of a target no longer in the config, by locator alone."""

    def __init__(self, name: str) -> None:
        self.name = name

    def verify(self, copies: Sequence[Copy]) -> list[bool]:
        from retention.archive.maildir import current_path, matches
        from retention.archive.mbox import verify_copies

        out = []
        for c in copies:
            if c.locator.get("type") == "mbox":
                out.extend(verify_copies([c]))
            else:
                out.append(matches(current_path(c.locator), c.copy_sha256))
        return out

    def find(self, row: JournalRow) -> tuple[str, dict[str, Any]] | None:
        if row.locator.get("type") == "maildir":
            from retention.archive.maildir import MaildirWriter
            from retention.config.schema import MaildirTarget

            return MaildirWriter(self.name, MaildirTarget(type="maildir", path=""),
                                 account="").find(row)
        return None

    def place(self, items: Sequence[Item]) -> Any:
        raise ArchiveError(f"archive target {self.name!r} is not configured")

    def write(self, batch: Any) -> Any:
        raise ArchiveError(f"archive target {self.name!r} is not configured")

    def release(self, batch: Any) -> None:
        return None

    def close(self) -> None:
        return None


_MOVES = (ActionKind.MOVE.value, ActionKind.TRASH.value)


def _by_protection(rows: Sequence[JournalRow], rules: Mapping[str, Protection] | None
                   ) -> list[tuple[Protection | None, list[JournalRow]]]:
    groups: dict[Protection | None, list[JournalRow]] = {}
    for r in rows:
        groups.setdefault(None if rules is None else rules[r.rule], []).append(r)
    return list(groups.items())


def row_action(row: JournalRow) -> Action:
    """The action a journal row recorded, rebuilt for the report of the run that finished it."""
    message = Message(
        ref=row.ref, size=row.size, received=row.internal_date or row.created,
        flags=row.flags, message_id=row.message_id,
    )
    return Action(
        message=message, kind=ActionKind(row.action), rule=row.rule,
        clock=Clock(row.clock) if row.clock else Clock.RECEIVED,
        reason=row.reason or "", to_folder=row.to_folder, archive=row.target,
    )
