"""Frozen value types for what the planner decided, and why.

A ``Plan`` is the single input of both the executor and the report: a dry-run renders it,
a real run executes it and renders it with results. Every ``Action`` carries the rule that
decided it, the clock that rule used and a human reason (borg prune's ``KeepResult``); every
other message is kept for exactly one ``KeptReason``, counted per folder in ``Plan.kept`` and
listed one by one only when asked (borg prune's ``--list-kept``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from retention.model import Message, Protection


class ActionKind(StrEnum):
    """What happens to a message."""

    DELETE = "delete"  # UID STORE \Deleted + UID EXPUNGE (POP3: DELE + QUIT)
    TRASH = "trash"  # UID MOVE to the \Trash folder
    MOVE = "move"  # UID MOVE to a named or special-use folder
    ARCHIVE = "archive"  # copy to an archive target, verify, then delete

    @property
    def frees_space(self) -> bool:
        """A move within the account stays under the same quota root: it frees nothing."""
        return self in (ActionKind.DELETE, ActionKind.ARCHIVE)

    @property
    def removes_from_folder(self) -> bool:
        return True


class Clock(StrEnum):
    """Which time a rule measures age by."""

    RECEIVED = "received"  # INTERNALDATE
    SENT = "sent"  # Date header, falling back to received
    SAVED = "saved"  # SAVEDATE, or first seen in this folder
    FIRST_SEEN = "first_seen"  # POP3: the agent's ledger


@dataclass(frozen=True, slots=True)
class Action:
    """One planned removal or move of one message."""

    message: Message
    kind: ActionKind
    rule: str
    clock: Clock
    reason: str
    to_folder: str | None = None  # move / trash: the decoded target folder name
    archive: str | None = None  # archive: the archive target's name
    over_quota: bool = False  # chosen by quota-driven cleanup rather than an always-rule
    # What the deciding rule protects, re-checked on the server right before acting: a
    # message flagged or marked unread by the user during the run is left alone (F3).
    protect: Protection = Protection()

    @property
    def freed_bytes(self) -> int:
        return self.message.size if self.kind.frees_space else 0


class KeptReason(StrEnum):
    """Why a message no action takes stays where it is: one reason a message, the first that
    applies in the planner's order (README "What was kept, and why")."""

    DELETED = "deleted"  # already flagged \Deleted by another client
    KEEP_WITHIN = "keep_within"  # received within keep_within
    RESTORED = "restored"  # restored by `retention restore`, within restore_grace
    # Protected by the rule that matched it; a message several words cover counts under the
    # first of flagged, unread, answered, draft (the user's explicit mark first).
    PROTECTED_FLAGGED = "protected_flagged"
    PROTECTED_UNREAD = "protected_unread"
    PROTECTED_ANSWERED = "protected_answered"
    PROTECTED_DRAFT = "protected_draft"
    IN_TARGET = "in_target"  # already in the folder the matching rule moves mail to
    NO_RULE = "no_rule"  # no rule's conditions hold
    NOT_NEEDED = "not_needed"  # only a when: over_quota rule matches; usage does not need it
    NOT_OWN = "not_own"  # ... in another user's, shared or virtual folder: frees no quota
    CAPPED = "capped"  # deferred to the next run by max_delete_per_run
    EMPTY_FOLDER = "empty_folder"  # the rule would empty its folder (allow_empty_folder)
    LABEL_KEPT = "label_kept"  # Gmail labels: the same message is kept in another folder
    LABEL_COPY = "label_copy"  # Gmail labels: removed with its copy acted on in another folder

    @property
    def text(self) -> str:
        """How the reports name it."""
        return _KEPT_TEXT[self]


_KEPT_TEXT = {
    KeptReason.DELETED: "already \\Deleted by another client",
    KeptReason.KEEP_WITHIN: "within keep_within",
    KeptReason.RESTORED: "restored, within restore_grace",
    KeptReason.PROTECTED_FLAGGED: "protected: flagged",
    KeptReason.PROTECTED_UNREAD: "protected: unread",
    KeptReason.PROTECTED_ANSWERED: "protected: answered",
    KeptReason.PROTECTED_DRAFT: "protected: draft",
    KeptReason.IN_TARGET: "already in the rule's target folder",
    KeptReason.NO_RULE: "no rule matched",
    KeptReason.NOT_NEEDED: "over-quota candidate, not needed",
    KeptReason.NOT_OWN: "not the account's own storage: over-quota cleanup skips it",
    KeptReason.CAPPED: "capped: deferred by max_delete_per_run",
    KeptReason.EMPTY_FOLDER: "would empty the folder (allow_empty_folder: false)",
    KeptReason.LABEL_KEPT: "kept under another Gmail label",
    KeptReason.LABEL_COPY: "removed with its copy under another Gmail label",
}


@dataclass(frozen=True, slots=True)
class KeptTotal:
    """Messages and bytes one folder keeps for one reason."""

    folder: str
    reason: KeptReason
    messages: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Kept:
    """One kept message (listed only when the plan is asked for them)."""

    message: Message
    reason: KeptReason
    rule: str | None = None  # the rule that protected it, or would have taken it


@dataclass(frozen=True, slots=True)
class Dropped:
    """Actions a safety rail removed from the plan, with the reason (reported, not failed)."""

    rule: str
    folder: str
    count: int
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    """What one run will do to one account."""

    account: str
    actions: tuple[Action, ...] = ()
    usage_bytes: int = 0
    limit_bytes: int | None = None
    usage_after_bytes: int = 0
    short_by_bytes: int = 0
    deferred_by_cap: int = 0
    over_quota: bool = False
    hold: bool = False
    dropped: tuple[Dropped, ...] = ()
    warnings: tuple[str, ...] = ()
    # Rules whose move/trash target the server lacks: (rule, why). Their would-be actions
    # are in failed_actions: reported as failed, never executed.
    failed_rules: tuple[tuple[str, str], ...] = field(default=())
    failed_actions: tuple[Action, ...] = field(default=())
    # Messages kept because the snapshot exempts them (restored mail), with the reason.
    exempted: tuple[tuple[Message, str], ...] = field(default=())
    # Every message neither in actions nor in failed_actions, counted per (folder, reason)
    # in snapshot folder order; one by one only when planned with list_kept (else None).
    kept: tuple[KeptTotal, ...] = field(default=())
    kept_messages: tuple[Kept, ...] | None = None

    @property
    def freed_bytes(self) -> int:
        return sum(a.freed_bytes for a in self.actions)

    def totals(self) -> dict[str, dict[str, int]]:
        """Per action kind: messages and bytes, in a stable order."""
        return totals(self.actions)


def totals(actions: Iterable[Action]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for a in actions:
        t = out.setdefault(a.kind.value, {"messages": 0, "bytes": 0})
        t["messages"] += 1
        t["bytes"] += a.message.size
    return dict(sorted(out.items()))
