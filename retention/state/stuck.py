"""``retention recover``: the operator's escape hatch for interrupted actions recovery cannot
finish (review M9).

This module owns listing an account's open journal rows and abandoning them. Recovery
refuses to guess: when it cannot verify an archive copy (the IMAP target was removed from
the policy, a copy is unreadable, the target is gone for good) it raises ``ArchiveError``
before anything is deleted, and it does so again on every run, so the account never gets
cleaned up again. ``--list`` shows what is stuck; ``--abandon --yes`` gives up on it.

Abandoning is a journal-only operation, so it can never lose mail:

* nothing is sent to any server and no archive file is touched; in particular no source
  message is deleted, whether its copy was verified or not. Every message the rows are
  about stays wherever the interrupted run left it (a message whose copy was verified may
  then be archived again by a later run: a duplicate in the archive, never a loss);
* the rows go to ``abandoned`` (a terminal state) with a detail that says what was left
  where, and ``retention history`` lists them (``action: abandoned``);
* an mbox append intent whose rows are all closed is cleared from the journal; the torn
  bytes of a dead append stay guarded by the intent sidecar next to the file, which the
  next writer of that file repairs under its locks (``archive.mbox``).

It runs under the account's and the mailbox's locks, so it never races a pass that is
acting on the account; with ``state_url`` (the journal in PostgreSQL, shared by every
replica) under the mailbox's lease too, so no replica's pass acts on it meanwhile.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from retention.errors import AccountLocked, ConfigError
from retention.state import StateDir
from retention.state.journal import (
    ABANDONED,
    ARCHIVED,
    DELETING,
    OPEN_STATES,
    VERIFIED,
    Journal,
    JournalRow,
)

if TYPE_CHECKING:
    from retention.config.schema import Account, Config

COMMAND = "retention recover"


def hint(account: str) -> str:
    """What to tell the operator when recovery of ``account`` is stuck (the account error)."""
    return (f"the next runs stop here too; see the stuck actions with "
            f"'{COMMAND} --account {account} --list', and give up on them with "
            f"'{COMMAND} --account {account} --abandon --yes' (deletes nothing: each message "
            "stays where it is)")


def left_as(row: JournalRow) -> str:
    """Where the message of ``row`` is left when the row is abandoned."""
    where = row.location or row.target or "the archive"
    if row.action == "archive":
        if row.state == VERIFIED:
            return (f"the copy at {where} was verified; the message also stays in "
                    f"{row.folder} (a later run may archive it again: a duplicate)")
        if row.state == ARCHIVED:
            return (f"a copy was written to {where} but not verified; the message stays "
                    f"in {row.folder}")
        if row.state == DELETING:
            return (f"the copy at {where} was verified and the removal sent but not "
                    f"committed; the message stays in {row.folder} unless the server "
                    "committed it")
        return (f"the copy to {row.target} may be incomplete (a torn mbox append is cut by "
                f"the next writer of that file); the message stays in {row.folder}")
    if row.state == DELETING:
        return f"the removal was sent but not committed; the message stays in {row.folder} " \
            "unless the server committed it"
    what = {"delete": "delete", "trash": "move to Trash", "move": f"move to {row.to_folder}"}
    return (f"the {what.get(row.action, row.action)} was interrupted with an unknown outcome:"
            f" done by the server, or the message stays in {row.folder} (a \\Deleted flag "
            "the interrupted run set stays too)")


@dataclass(frozen=True, slots=True)
class Stuck:
    """One open row and what abandoning it leaves behind."""

    row: JournalRow
    left_as: str

    def as_dict(self) -> dict[str, object]:
        r = self.row
        return {
            "id": r.id, "run_id": r.run_id, "created": r.created.isoformat(),
            "state": r.state, "action": r.action, "rule": r.rule, "folder": r.folder,
            "uidvalidity": r.uidvalidity if r.uid is not None else None, "uid": r.uid,
            "uidl": r.uidl, "message_id": r.message_id, "size": r.size, "target": r.target,
            "to_folder": r.to_folder, "location": r.location, "detail": r.detail,
            "if_abandoned": self.left_as,
        }


def stuck(journal: Journal, account: str) -> list[Stuck]:
    """Every open row of ``account`` (whichever mailbox it is about), oldest first."""
    return [Stuck(r, left_as(r)) for r in journal.all_open_rows(account)]


def abandon(journal: Journal, account: str, rows: Sequence[Stuck]) -> list[JournalRow]:
    """Mark ``rows`` abandoned (one transaction) and clear the intents they leave closed."""
    ids = [s.row.id for s in rows]
    with journal.transaction("abandoned"):
        for s in rows:
            journal.mark([s.row.id], ABANDONED, detail=(
                f"abandoned by the operator ({COMMAND} --abandon) in state {s.row.state}; "
                f"nothing was deleted: {s.left_as}"))
        for intent in journal.intents(account=account):
            if all(r.state not in OPEN_STATES for r in journal.rows_of_intent(intent.id)):
                journal.clear_intents([intent.id])
    return journal.rows(ids)


def recover_command(config: Config, account: Account, *, abandon_rows: bool,
                    only: Collection[int], confirmed: bool,
                    fmt: str) -> tuple[int, str, str]:
    """``retention recover``: (exit code, stdout, stderr). An unconfirmed ``--abandon``
    lists what it would abandon, changes nothing and exits 2. Raises ConfigError for a bad
    ``--row``, AccountLocked while a pass holds the account or its mailbox."""
    state = StateDir(config.state_dir, config.state_url)
    if not state.has_journal():
        return 0, _render([], fmt, done=False), ""
    mailbox = account.mailbox_identity()
    with state.lock(account.name, mailbox), _lease(config, mailbox), \
            state.journal() as journal:
        found = stuck(journal, account.name)
        if only:
            unknown = sorted(set(only) - {s.row.id for s in found})
            if unknown:
                raise ConfigError(f"--row: {', '.join(map(str, unknown))}: not an open "
                                  f"action of account {account.name}")
            found = [s for s in found if s.row.id in only]
        if not abandon_rows or not found:
            return 0, _render(found, fmt, done=False), ""
        if not confirmed:
            return 2, _render(found, fmt, done=False), (
                f"{COMMAND}: --abandon: nothing changed; add --yes to abandon these "
                f"{len(found)} action(s)\n")
        abandon(journal, account.name, found)
        return 0, _render(found, fmt, done=True), ""


@contextmanager
def _lease(config: Config, mailbox: str) -> Iterator[None]:
    """The mailbox's lease in the shared database (nothing without ``state_url``)."""
    if not config.state_url:
        yield
        return
    from retention.state.leases import LeaseStore, Refused, default_owner, held

    store = LeaseStore.open(config.state_dir, config.state_url)
    try:
        with held(store, mailbox, default_owner(),
                  ttl=config.leases.ttl.total_seconds()) as got:
            if isinstance(got, Refused):
                raise AccountLocked(f"another agent ({got.owner}) holds this mailbox's lease")
            yield
    finally:
        store.close()


def _render(found: Sequence[Stuck], fmt: str, *, done: bool) -> str:
    if fmt == "json":
        return json.dumps({"abandoned" if done else "open": [s.as_dict() for s in found]},
                          indent=2, ensure_ascii=False) + "\n"
    if not found:
        return "no interrupted actions\n"
    lines = []
    for s in found:
        r = s.row
        which = f"UID {r.uid}" if r.uid is not None else f"UIDL {r.uidl}"
        lines.append(f"row {r.id}  run {r.run_id}  {r.state}  {r.action}  {r.folder} {which}"
                     f"  {r.message_id or '-'}  rule {r.rule}")
        if r.detail:
            lines.append(f"    last note: {r.detail}")
        lines.append(f"    {'abandoned' if done else 'if abandoned'}: {s.left_as}")
    n = len(found)
    lines.append(f"{n} action(s) abandoned" if done else
                 f"{n} open action(s); {COMMAND} --abandon --yes gives up on them")
    return "\n".join(lines) + "\n"


__all__ = ["COMMAND", "Stuck", "abandon", "hint", "left_as", "recover_command", "stuck"]
