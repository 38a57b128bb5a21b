"""The executor: performs exactly a plan's actions, journal first.

This module owns the order of every destructive step. It never decides policy: it acts on
exactly the messages the plan names, grouped by folder and kind, in batches:

* delete / trash / move: journal ``planned`` rows, call ``session.delete``/``move`` for
  exactly those refs, journal ``deleted``/``moved`` (POP3: ``deleting`` until ``QUIT``).
* archive: fetch the bytes (``BODY.PEEK[]``), hash them, journal ``planned`` (hash, intended
  location, mbox intent), write the copy and make it durable, journal ``archived``, read it
  back and compare hashes, journal ``verified``, delete only the verified refs, journal
  ``deleted``. Nothing unverified is ever deleted.

Failures: ``UidValidityChanged`` skips that folder's remaining actions (reported); an
``ArchiveError`` stops archiving for the account (the other actions go on) and is raised at
the end; any other ``AccountError`` (lost connection, NO reply) fails every remaining
action and is raised at once. A batch whose server call failed half-way keeps its rows
``planned``: its outcome is unknown, and the next run's ``recover`` looks at the server to
tell which messages went. ``Executor.results`` holds every action's result even when
``execute`` raises.

One executor is one account pass's unit of work: ``recover()`` first finishes what an
interrupted run left for this account (``retention.run.recovery``, sharing this executor's
containers), then ``execute(plan)``; for POP3, ``execute`` ends with ``session.commit()``
(``QUIT``), which also commits the deletions ``recover`` retried.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from retention.adapters.spool import Limits
from retention.archive import ArchiveSet, ArchiveWriter, Copy, Item, sha256
from retention.errors import AccountError, ArchiveError, FolderSkipped
from retention.model import MessageRef, Protection
from retention.plan import Action, ActionKind, Plan
from retention.result import ActionResult, Outcome
from retention.run.recovery import Recovery, RecoveryReport
from retention.state.journal import (
    ARCHIVED,
    DELETED,
    DELETING,
    FAILED,
    MOVED,
    OPEN_STATES,
    SKIPPED,
    VERIFIED,
    Journal,
    NewRow,
)

if TYPE_CHECKING:
    from retention.adapters import MailSession

BATCH_SIZE = 100  # messages per archive batch (one mbox member, one journal round)
# ...and at most Limits.batch_bytes() of source data (message_memory / 8): the archive path
# holds a batch about six times over, so a batch fits message_memory (review F11).
# Refs per delete/move call and journal round (the adapter splits command lines itself).
# Each call re-selects the folder (SELECT of a 20,000-message folder: ~30 ms of server time)
# and commits the journal twice; a crash or a stop request still leaves at most one batch
# in flight, whose rows stay 'planned' until recover() looks at the server.
REMOVE_BATCH = 5000


class _Stop(Exception):  # noqa: N818 - control flow inside execute()
    def __init__(self, outcome: Outcome, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail


class Executor:
    """Performs one account's plan over one session (see the module docstring)."""

    def __init__(
        self,
        session: MailSession,
        journal: Journal,
        *,
        archives: ArchiveSet | None,
        run_id: str,
        account: str,
        crash_hook: Callable[[int, str], None] | None = None,
        stop: threading.Event | None = None,
        batch_size: int = BATCH_SIZE,
        batch_bytes: int | None = None,
        rules: Mapping[str, Protection] | None = None,
    ) -> None:
        self.session = session
        self.rules = rules  # the current policy, for recovery's re-check (None: no check)
        self.journal = journal
        self.archives = archives
        self.run_id = run_id
        self.account = account
        self.stop = stop
        self.batch_size = max(1, batch_size)
        self.batch_bytes = Limits.batch_bytes() if batch_bytes is None else batch_bytes
        if crash_hook is not None:
            journal.hook = crash_hook
        self.results: list[ActionResult] = []
        self._pop3 = session.protocol == "pop3"
        # 'deleting' rows committed by session.commit() (POP3), and what recovery finished
        # (ref key -> detail): filled by recover(), read by execute().
        self._pending: list[int] = []
        self._handled: dict[str, str] = {}
        self._pending_slots: dict[int, int] = {}  # row id -> plan index
        self._recovery: Recovery | None = None  # one per executor: it caches the scans

    # -- recovery ----------------------------------------------------------------------------

    def recover(self) -> RecoveryReport:
        """Finish or roll back what an interrupted run left for this account: see
        ``retention.run.recovery`` (what it finishes is then reported ``done`` by ``execute``)."""
        if self._recovery is None:
            self._recovery = Recovery(
                self.session, self.journal, archives=self.archives, run_id=self.run_id,
                account=self.account, pending=self._pending, handled=self._handled,
                rules=self.rules,
            )
        return self._recovery.run()

    # -- execution ---------------------------------------------------------------------------

    def execute(self, plan: Plan) -> list[ActionResult]:
        """Perform every action of ``plan``; one ``ActionResult`` per action, in plan order."""
        actions = list(plan.actions)
        slots: list[ActionResult | None] = [None] * len(actions)
        self.results = []
        failed_rules = dict(plan.failed_rules)
        latest = self.journal.latest_by_key(self.account, {a.message.ref.key() for a in actions})
        groups: dict[tuple[str, str, str | None], list[int]] = {}
        for i, a in enumerate(actions):
            key = a.message.ref.key()
            if key in self._handled:
                slots[i] = ActionResult(a, "done", self._handled[key])
            elif key in latest and latest[key].state in OPEN_STATES:
                slots[i] = ActionResult(a, "skipped", f"pending from interrupted run "
                                        f"{latest[key].run_id}; finished by the next run")
            elif a.rule in failed_rules:
                slots[i] = ActionResult(a, "failed", failed_rules[a.rule])
            else:
                target = a.archive if a.kind is ActionKind.ARCHIVE else a.to_folder
                groups.setdefault((a.message.folder, a.kind.value, target), []).append(i)
        archive_error: ArchiveError | None = None
        fatal: AccountError | None = None
        skipped_folders: dict[str, str] = {}
        try:
            for (folder, kind, target), idx in groups.items():
                if fatal is not None:
                    self._fill(slots, actions, idx, "failed", f"not attempted: {fatal}")
                    continue
                if folder in skipped_folders:
                    self._fill(slots, actions, idx, "skipped", skipped_folders[folder])
                    continue
                if kind == ActionKind.ARCHIVE.value and archive_error is not None:
                    self._fill(slots, actions, idx, "failed",
                               f"archiving stopped: {archive_error}")
                    continue
                try:
                    if kind == ActionKind.ARCHIVE.value:
                        self._archive_group(target, [actions[i] for i in idx], idx, slots)
                    else:
                        self._remove_group(kind, target, [actions[i] for i in idx], idx, slots)
                except FolderSkipped as e:
                    skipped_folders[folder] = e.reason
                    self._fill(slots, actions, idx, "skipped", e.reason)
                except ArchiveError as e:
                    archive_error = e
                    self._fill(slots, actions, idx, "failed", str(e))
                except _Stop as e:
                    self._fill(slots, actions, idx, e.outcome, e.detail)
                except AccountError as e:
                    fatal = e
                    self._fill(slots, actions, idx, "failed", str(e))
            if fatal is None:
                self._commit()
        except AccountError as e:
            fatal = e
            for row, i in self._pending_slots.items():
                if row in self._pending:
                    slots[i] = ActionResult(actions[i], "failed", f"deletion not confirmed: {e}")
        finally:
            self._fill(slots, actions, range(len(actions)), "failed",
                       f"not attempted: {fatal}" if fatal else "not attempted")
            self.results = [r for r in slots if r is not None]
        if fatal is not None:
            raise fatal
        if archive_error is not None:
            raise archive_error
        return self.results

    @staticmethod
    def _fill(
        slots: list[ActionResult | None], actions: Sequence[Action], idx: Sequence[int] | range,
        outcome: Outcome, detail: str,
    ) -> None:
        for i in idx:
            if slots[i] is None:
                slots[i] = ActionResult(actions[i], outcome, detail)

    def _check_stop(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise _Stop("skipped", "stopped: the agent is shutting down")

    def _commit(self) -> None:
        """Make pending removals durable (POP3 ``QUIT``) and journal them ``deleted``."""
        self.session.commit()
        if self._pending:
            self.journal.mark(self._pending, DELETED, name="committed")
            self._pending.clear()

    def _chunks(self, actions: Sequence[Action], idx: Sequence[int], count: int,
                limit: int | None) -> list[list[tuple[int, Action]]]:
        out: list[list[tuple[int, Action]]] = []
        cur: list[tuple[int, Action]] = []
        size = 0
        for i, a in zip(idx, actions, strict=True):
            if cur and (len(cur) >= count or (limit is not None and size + a.message.size > limit)):
                out.append(cur)
                cur, size = [], 0
            cur.append((i, a))
            size += a.message.size
        if cur:
            out.append(cur)
        return out

    # delete / trash / move

    def _remove_group(
        self, kind: str, to_folder: str | None, actions: Sequence[Action], idx: Sequence[int],
        slots: list[ActionResult | None],
    ) -> None:
        if kind in ("move", "trash") and not to_folder:
            what = "\\Trash" if kind == "trash" else "target"
            self._fill(slots, actions, idx, "failed", f"the account has no {what} folder")
            return
        for chunk in self._chunks(actions, idx, REMOVE_BATCH, None):
            self._check_stop()
            ids = self.journal.add_planned(
                self.run_id, self.account, [NewRow(a) for _, a in chunk]
            )
            removed: set[MessageRef] = set()
            skipped: dict[MessageRef, str] = {}  # left alone at the moment of acting: why
            try:
                for protect, refs in _by_protection(a for _, a in chunk):
                    if kind == ActionKind.DELETE.value:
                        removed |= self.session.delete(refs, protect=protect, skipped=skipped)
                    else:
                        assert to_folder is not None
                        removed |= self.session.move(refs, to_folder, protect=protect,
                                                     skipped=skipped)
            except FolderSkipped as e:
                self.journal.mark(ids, SKIPPED, detail=e.reason)
                raise
            # Any other error: outcome unknown, rows stay 'planned' for recover().
            self.journal.step("source-removed")
            details = {a.message.ref: f"moved to {to_folder}" if to_folder else None
                       for _, a in chunk}
            self._finish_removal(chunk, ids, removed, kind, slots, details, skipped)

    def _finish_removal(
        self, chunk: Sequence[tuple[int, Action]], ids: Sequence[int], removed: set[MessageRef],
        kind: str, slots: list[ActionResult | None], details: dict[MessageRef, str | None],
        skipped: dict[MessageRef, str] | None = None,
    ) -> None:
        skipped = skipped or {}
        done: list[tuple[int, Action, int]] = []
        gone: list[tuple[int, Action, int]] = []
        kept: list[tuple[int, Action, int]] = []
        for (i, a), row in zip(chunk, ids, strict=True):  # one pass: each ref hashed once
            ref = a.message.ref
            (done if ref in removed else kept if ref in skipped else gone).append((i, a, row))
        with self.journal.transaction("removed"):
            if self._pop3:
                self.journal.mark([row for _, _, row in done], DELETING)
                self._pending.extend(row for _, _, row in done)
                self._pending_slots.update({row: i for i, _, row in done})
            else:
                state = DELETED if kind in ("delete", "archive") else MOVED
                self.journal.mark([row for _, _, row in done], state)
            if kind != "archive":
                self.journal.mark([row for _, _, row in gone], SKIPPED,
                                  detail="no longer in the folder")
            # Protected since the scan (the user flagged it meanwhile): closed as skipped,
            # an archived one too, so that recovery never removes it later; its verified
            # copy stays in the archive (a later run may archive it a second time).
            for i, a, row in kept:
                where = details.get(a.message.ref) if kind == "archive" else None
                reason = skipped[a.message.ref] + (f"; archived copy kept at {where}"
                                                   if where else "")
                self.journal.mark([row], SKIPPED, detail=reason)
                slots[i] = ActionResult(a, "skipped", reason)
            # An archived message the delete did not remove (already gone, or it survived
            # UID EXPUNGE) keeps its verified row: the next run's recovery deletes it or
            # confirms it gone, instead of the next plan archiving it a second time.
        for i, a, _ in done:
            slots[i] = ActionResult(a, "done", details.get(a.message.ref))
        for i, a, _ in gone:
            why = "no longer in the folder" if kind != "archive" else (
                "archived and verified, but not removed from the folder; the next run "
                "finishes it")
            slots[i] = ActionResult(a, "skipped", why)

    # archive

    def _archive_group(
        self, target: str | None, actions: Sequence[Action], idx: Sequence[int],
        slots: list[ActionResult | None],
    ) -> None:
        if self.archives is None or target is None:
            raise ArchiveError("no archive targets are configured for this account")
        writer = self.archives.writer(target, self.journal, self.run_id)
        for chunk in self._chunks(actions, idx, self.batch_size, self.batch_bytes):
            self._check_stop()
            self._archive_batch(writer, chunk, slots)

    def _archive_batch(
        self, writer: ArchiveWriter, chunk: Sequence[tuple[int, Action]],
        slots: list[ActionResult | None],
    ) -> None:
        by_ref = {a.message.ref: (i, a) for i, a in chunk}
        unread: dict[MessageRef, str] = {}  # not whole (F6): skipped with the reason
        fetched = dict(self.session.fetch(list(by_ref), skipped=unread))
        for ref, (i, a) in by_ref.items():
            if ref not in fetched:
                slots[i] = ActionResult(a, "skipped", unread.get(ref, "no longer in the folder"))
        todo = [(i, a) for i, a in chunk if a.message.ref in fetched]
        if not todo:
            return
        items = []
        for _, a in todo:
            data = fetched[a.message.ref]
            items.append(Item(a, data, sha256(data)))
        del fetched
        batch = writer.place(items)
        try:
            with self.journal.transaction("planned"):
                intent_ids = {
                    path: self.journal.add_intent(self.account, self.run_id, writer.name, path, off)
                    for path, off in batch.intents
                }
                ids = self.journal.add_planned(self.run_id, self.account, [
                    NewRow(p.item.action, sha256=p.item.sha256, copy_sha256=p.copy_sha256,
                           location=p.location, locator=p.locator,
                           intent_id=intent_ids.get(p.intent_path or ""))
                    for p in batch.placed
                ])
            result = writer.write(batch)
            self.journal.step("archive-written")
            self._journal_written(batch, result, ids, intent_ids)
        finally:
            writer.release(batch)
        stored = sorted(result.stored)
        oks = writer.verify([
            Copy(result.stored[k][1], batch.placed[k].copy_sha256) for k in stored
        ]) if stored else []
        good = [k for k, ok in zip(stored, oks, strict=True) if ok]
        bad = [k for k, ok in zip(stored, oks, strict=True) if not ok]
        # A copy that differs is useless: a writer that can remove it does (review M11: an
        # IMAP target that rewrites messages would keep one more per run), before the rows
        # are closed, so a crash in between leaves at worst the copy, never a lost source.
        discard = getattr(writer, "discard", None)
        dropped = discard([result.stored[k][1] for k in bad]) if bad and discard else 0
        note = " (removed from the target)" if bad and dropped == len(bad) else ""
        with self.journal.transaction("verified"):
            self.journal.mark([ids[k] for k in good], VERIFIED)
            self.journal.mark([ids[k] for k in bad], FAILED,
                              detail=f"verification failed: the archived copy differs{note}")
        if good:
            removed: set[MessageRef] = set()
            kept: dict[MessageRef, str] = {}
            for protect, refs in _by_protection(items[k].action for k in good):
                removed |= self.session.delete(refs, protect=protect, skipped=kept)
            self.journal.step("source-removed")
            where: dict[MessageRef, str | None] = {
                items[k].action.message.ref: result.stored[k][0] for k in good
            }
            self._finish_removal([todo[k] for k in good], [ids[k] for k in good], removed,
                                 "archive", slots, where, kept)
        for k in bad:
            i, a = todo[k]
            slots[i] = ActionResult(a, "failed", f"verification failed at {result.stored[k][0]}")
        error = result.error
        for k, (i, a) in enumerate(todo):
            if slots[i] is None:
                why = str(error) if error else "not archived"
                if k in result.unresolved:
                    why += " (outcome unknown: checked by the next run)"
                slots[i] = ActionResult(a, "failed", why)
        if error is not None:
            raise error
        if bad:
            raise ArchiveError(
                f"archive {writer.name}: {len(bad)} copy(ies) failed verification "
                f"(first: {result.stored[bad[0]][0]}); their sources were kept"
            )

    def _journal_written(
        self, batch: Any, result: Any, ids: Sequence[int], intent_ids: dict[str, int]
    ) -> None:
        unresolved_paths = {batch.placed[k].intent_path for k in result.unresolved}
        with self.journal.transaction("archived"):
            for k, row_id in enumerate(ids):
                if k in result.stored:
                    location, locator = result.stored[k]
                    self.journal.mark([row_id], ARCHIVED, location=location, locator=locator)
                elif k not in result.unresolved:
                    self.journal.mark([row_id], FAILED,
                                      detail=str(result.error or "not archived"))
            self.journal.clear_intents(
                iid for path, iid in intent_ids.items() if path not in unresolved_paths
            )


# -- the runner's entry points -----------------------------------------------------------------


def _by_protection(actions: Iterable[Action]) -> list[tuple[Protection, list[MessageRef]]]:
    """The refs of ``actions`` grouped by what their rule protects (usually one group)."""
    groups: dict[Protection, list[MessageRef]] = {}
    for a in actions:
        groups.setdefault(a.protect, []).append(a.message.ref)
    return list(groups.items())
