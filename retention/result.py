"""Frozen value types for what a run did: per action, per account, per run.

The report renders these, the metrics count them, the CLI turns them into exit codes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from retention.errors import ErrorKind, ExitCode, SkipReason
from retention.model import MailProtocol
from retention.plan import Action, Plan

Outcome = Literal["planned", "done", "skipped", "failed"]
Status = Literal["ok", "error", "skipped"]


@dataclass(frozen=True, slots=True)
class ActionResult:
    action: Action
    result: Outcome
    detail: str | None = None  # why skipped/failed; where archived

    @property
    def freed_bytes(self) -> int:
        return self.action.freed_bytes if self.result in ("done", "planned") else 0


@dataclass(frozen=True, slots=True)
class NoticeOutcome:
    """A notice to the mailbox owner: sent, failed, or (dry-run) what would be sent."""

    kind: str  # warning | archived
    event: str
    status: Literal["would_send", "sent", "failed", "will_retry", "unknown", "already_sent"]
    channel: str | None  # append | smtp | smtp-fallback
    subject: str
    body: str
    language: str
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class AccountResult:
    """One account's outcome in one run (dry or real)."""

    account: str
    protocol: MailProtocol
    run_id: str
    dry_run: bool
    status: Status
    started: datetime
    finished: datetime
    error: str | None = None  # why it failed, or why it was skipped
    error_kind: ErrorKind | None = None
    skip_reason: SkipReason | None = None  # with status skipped: locked | recent
    plan: Plan | None = None
    results: tuple[ActionResult, ...] = ()
    usage_bytes: int | None = None
    limit_bytes: int | None = None
    usage_after_bytes: int | None = None
    messages: int | None = None
    usage_source: str | None = None  # quota (server-reported) | sum (summed sizes)
    # Where limit_bytes came from: server (QUOTA) | policy (quota.limit) | graph (Microsoft
    # Graph's mailbox usage report, for Exchange Online, which has no IMAP QUOTA).
    limit_source: str | None = None
    # Failed because the provider throttled us: worth one more try later in the sweep.
    retry_later: bool = False
    warnings: tuple[str, ...] = field(default=())
    notices: tuple[NoticeOutcome, ...] = field(default=())

    @property
    def freed_bytes(self) -> int:
        return sum(r.freed_bytes for r in self.results)

    @property
    def duration(self) -> float:
        return (self.finished - self.started).total_seconds()


@dataclass(frozen=True, slots=True)
class RunResult:
    dry_run: bool
    generated_at: datetime
    accounts: tuple[AccountResult, ...]

    @property
    def locked(self) -> tuple[AccountResult, ...]:
        """Accounts skipped because another agent holds them (not those done recently)."""
        return tuple(a for a in self.accounts
                     if a.status == "skipped" and a.skip_reason != "recent")

    @property
    def exit_code(self) -> ExitCode:
        return self.exit_code_for(skip_locked_ok=False)

    def exit_code_for(self, *, skip_locked_ok: bool) -> ExitCode:
        """1 when an account failed, or (unless ``skip_locked_ok``) was skipped because
        another agent holds it: that account was not cleaned, and a timer or a job should
        say so; 0 otherwise (accounts skipped by ``leases.once_within`` were done)."""
        failed = any(a.status == "error" for a in self.accounts)
        if failed or (self.locked and not skip_locked_ok):
            return ExitCode.FAILED
        return ExitCode.OK
