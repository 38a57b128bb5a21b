"""One pass over one account: connect, recover, measure, scan, plan, execute, measure again.

This module is the glue between the pure core (policy, planner) and the side effects
(adapters, ledger, executor). It never raises for an account-level failure: every outcome
becomes an ``AccountResult`` so that one failing account never stops the others. Only
connection-level failures are retried within a run; a rejected login never is, since
retrying could lock the account.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from retention.adapters import MailSession, Secret
from retention.config.schema import Account, Config, Policy, effective_clock
from retention.errors import (
    AccountError,
    AccountLocked,
    FolderSkipped,
    RetentionError,
    Throttled,
)
from retention.folders import folders_to_scan
from retention.model import FolderInfo, FolderSnapshot, MessageRef, Snapshot, Usage
from retention.plan import Action, Clock, Plan
from retention.planner import plan as make_plan
from retention.result import AccountResult, ActionResult, RunResult
from retention.run.lease import account_lease
from retention.run.logins import LOGINS
from retention.run.owner import after_pass, exemptions
from retention.run.scanning import cached_message_ids, scan_folder
from retention.state.observations import Ledger
from retention.state.scancache import ScanCache

if TYPE_CHECKING:
    from retention.state.journal import JournalRow

log = logging.getLogger("retention.runner")

Connector = Callable[[Account, Secret, bool], MailSession]
RETRIES = 2  # connection-level failures only
GMAIL_QUOTA = ("Gmail: the quota is the Google account's storage, shared with Google Drive "
               "and Google Photos; deleted mail is moved to Trash and expunged there")
BACKOFF = (1.0, 3.0)


def default_connect(account: Account, password: Secret, readonly: bool) -> MailSession:
    """Open a session with the adapter for the account's protocol."""
    if account.protocol == "pop3":
        from retention.adapters.pop3 import Pop3Session

        return Pop3Session.connect(account, password, readonly=readonly)
    from retention.adapters.imap.session import ImapSession

    return ImapSession.connect(account, password, readonly=readonly)


def new_run_id(now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


@contextmanager
def account_lock(state_dir: Path, account: str) -> Iterator[None]:
    """Hold the per-account lock in ``state_dir`` (a timer's ``run`` and a ``serve`` race)."""
    locks = state_dir / "locks"
    locks.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(locks / f"{account}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AccountLocked("another agent is processing this account") from None
        yield
    finally:
        os.close(fd)  # closing releases the flock


def open_observations(config: Config) -> Ledger:
    """The state_dir's observation store, opened for a caller that shares it."""
    return _open_ledger(config)


def _open_ledger(config: Config) -> Ledger:
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return Ledger.open(config.state_dir / "observations.sqlite3")


def _needs_sent(policy: Policy, protocol: str) -> bool:
    return any(effective_clock(r, protocol) is Clock.SENT for r in policy.rules)


def with_message_ids(session: MailSession, plan: Plan, warnings: list[str],
                     cache: ScanCache | None = None) -> Plan:
    """The plan with the Message-ID of every message it acts on (read-only reads).

    A scan without the Date header does not read Message-IDs (that would be a header per
    message of the folder); the report, the journal, the audit history and the IMAP
    archive's reconciliation need them only for the messages acted on, so they are read
    here, one folder at a time. A folder that changed meanwhile (``FolderSkipped``) keeps
    None and a warning; its actions are skipped when executed anyway.
    """
    # A MailSession written before message_ids existed keeps working, without the ids.
    read = getattr(session, "message_ids", None)
    if read is None:
        return plan
    if cache is not None:  # the ones read on an earlier run are not read again
        read = cached_message_ids(read, cache)
    by_folder: dict[tuple[str, int], list[MessageRef]] = {}
    for a in (*plan.actions, *plan.failed_actions):
        if a.message.message_id is None:
            ref = a.message.ref
            by_folder.setdefault((ref.folder, ref.uidvalidity), []).append(ref)
    ids: dict[MessageRef, str | None] = {}
    for refs in by_folder.values():
        try:
            ids.update(read(refs))
        except FolderSkipped as e:
            warnings.append(f"folder {e.folder}: Message-IDs not read: {e.reason}")
    if not any(ids.values()):
        return plan

    def fill(action: Action) -> Action:
        mid = ids.get(action.message.ref)
        if mid is None or action.message.message_id is not None:
            return action
        return dataclasses.replace(
            action, message=dataclasses.replace(action.message, message_id=mid)
        )

    return dataclasses.replace(
        plan,
        actions=tuple(fill(a) for a in plan.actions),
        failed_actions=tuple(fill(a) for a in plan.failed_actions),
    )


class _Pass:
    """The state of one account pass (a small object so each step stays readable)."""

    def __init__(
        self,
        config: Config,
        account: Account,
        *,
        dry_run: bool,
        now: datetime,
        run_id: str,
        connect: Connector,
        stop: threading.Event | None,
    ) -> None:
        self.config = config
        self.account = account
        self.policy = config.policy_of(account)
        self.hold = config.is_held(account)
        self.dry_run = dry_run
        self.readonly = dry_run or self.hold
        self.now = now
        self.run_id = run_id
        self.connect = connect
        self.stop = stop
        self.warnings: list[str] = []
        self.limit_source: str | None = None
        if not account.tls_verify and account.security != "none":
            self.warnings.append("TLS certificate verification is off (tls_verify: false)")
        # The last attempt's plan and results, reported even when the account fails.
        self.plan: Plan | None = None
        self.usage: Usage | None = None
        self.results: tuple[ActionResult, ...] = ()
        # What earlier attempts of this run really did: a retry's fresh scan no longer
        # shows those messages, but the report and the metrics must.
        self.carried: tuple[ActionResult, ...] = ()
        # Journal rows that this run's recovery finished (see _with_recovered).
        self.recovered: list[JournalRow] = []
        self.recovered_pending: list[JournalRow] = []

    def scan_cache(self) -> ScanCache:
        a = self.account
        return ScanCache(self.config.state_dir / "scancache",
                         f"{a.name}\x00{a.protocol}\x00{a.host}\x00{a.port}\x00{a.username}")

    def limit(self, usage: Usage) -> int | None:
        """The server's limit, else Graph's (Exchange Online), else the policy's."""
        if usage.limit_bytes:
            self.limit_source = "server"
            return usage.limit_bytes
        try:
            graph = LOGINS.mailbox_limit(self.account, self.config.state_dir)
        except AccountError as e:  # the report is a help, not a need: say so, go on
            self.warnings.append(f"mailbox quota from Microsoft Graph not read: {e}")
            graph = None
        if graph is not None:
            self.limit_source = "graph"
            return graph
        self.limit_source = "policy" if self.policy.quota.limit else None
        return self.policy.quota.limit

    def scan(self, session: MailSession, ledger: Ledger) -> tuple[Snapshot, list[FolderInfo]]:
        protocol = self.account.protocol
        folders = session.list_folders()
        usage = session.usage(folders)
        usage = dataclasses.replace(usage, limit_bytes=self.limit(usage))
        if getattr(session, "provider", None) == "gmail":
            self.warnings.append(GMAIL_QUOTA)
        self.usage = usage
        with_sent = _needs_sent(self.policy, protocol)
        scanned: list[FolderSnapshot] = []
        for info in folders_to_scan(self.policy, folders, protocol):
            try:
                snap = scan_folder(session, info, with_sent=with_sent, cache=self.scan_cache())
            except FolderSkipped as e:
                self.warnings.append(f"folder {e.folder} skipped: {e.reason}")
                continue
            scanned.append(self._observe(snap, ledger))
        snapshot = Snapshot(
            account=self.account.name,
            protocol=protocol,
            usage=usage,
            folders=tuple(scanned),
            all_folders=tuple(folders),
        )
        return snapshot, folders

    def _observe(self, snap: FolderSnapshot, ledger: Ledger) -> FolderSnapshot:
        """Fill first-seen times: POP3's age, and IMAP's ``saved`` clock without SAVEDATE.

        Recording first sightings is the one state a dry-run writes.
        """
        pop3 = self.account.protocol == "pop3"
        if not pop3 and snap.has_savedate:
            return snap
        keys = [(m.ref.uidl if pop3 else str(m.ref.uid)) or "" for m in snap.messages]
        seen = ledger.first_seen(self.account.name, snap.name, snap.uidvalidity, keys, self.now)
        ledger.prune(self.account.name, snap.name, snap.uidvalidity, keys)
        if pop3:
            msgs = tuple(
                dataclasses.replace(m, received=seen[k], saved=seen[k])
                for m, k in zip(snap.messages, keys, strict=True)
            )
        else:
            msgs = tuple(
                dataclasses.replace(m, saved=m.saved or seen[k])
                for m, k in zip(snap.messages, keys, strict=True)
            )
        return dataclasses.replace(snap, messages=msgs)

    def once(self, ledger: Ledger) -> AccountResult:
        # A password, or an OAuth2 bearer login (a token refused once is refreshed once).
        session = LOGINS.connect(
            self.account, self.config.state_dir,
            lambda secret: self.connect(self.account, secret, self.readonly),
        )
        try:
            if not self.readonly:
                self._recover(session)
            snapshot, folders = self.scan(session, ledger)
            ledger.record_usage(
                self.account.name, self.now, snapshot.usage.usage_bytes, snapshot.usage.limit_bytes
            )
            snapshot = dataclasses.replace(
                snapshot, exempt=exemptions(self.config, self.account, self.now)
            )
            plan = make_plan(self.policy, snapshot, self.now)
            if not _needs_sent(self.policy, self.account.protocol):
                # The scan read no header; with the Date it read the Message-ID too.
                plan = with_message_ids(session, plan, self.warnings, self.scan_cache())
            if self.hold:
                plan = dataclasses.replace(plan, hold=True)
            self.plan = plan
            self.warnings.extend(plan.warnings)
            impossible = tuple(
                ActionResult(a, "failed", dict(plan.failed_rules).get(a.rule))
                for a in plan.failed_actions
            )
            if self.readonly:
                results = tuple(ActionResult(a, "planned") for a in plan.actions) + impossible
                after = plan.usage_after_bytes
            else:
                results = self._with_recovered(self._execute(session, plan)) + impossible
                after = self._measure_after(session, folders, snapshot, results)
                ledger.record_usage(
                    self.account.name, datetime.now(UTC), after, snapshot.usage.limit_bytes
                )
            return self._result(
                "ok",
                plan=plan,
                results=results,
                usage=snapshot.usage,
                after=after,
                messages=snapshot.usage.messages or snapshot.message_count,
            )
        finally:
            session.close()

    def _recover(self, session: MailSession) -> None:
        from retention.run.recovery import recover

        report = recover(self.config, self.account, session)
        self.recovered += report.finished  # kept across retries within this run
        self.recovered_pending = report.pending  # uncommitted ones are redone on retry

    def _with_recovered(self, results: tuple[ActionResult, ...]) -> tuple[ActionResult, ...]:
        """Add the removals recovery finished in this run: a fresh scan no longer shows
        them, yet this run did them (report, metrics). POP3's are done once QUIT commits,
        i.e. when execution returned normally."""
        from retention.run.recovery import row_action

        seen = {r.action.message.ref.key() for r in results}
        extra = []
        for row in [*self.recovered, *self.recovered_pending]:
            if row.ref.key() not in seen:
                seen.add(row.ref.key())
                extra.append(ActionResult(row_action(row), "done",
                                          f"finished from interrupted run {row.run_id}"))
        return results + tuple(extra)

    def _execute(self, session: MailSession, plan: Plan) -> tuple[ActionResult, ...]:
        from retention.archive import ArchiveSet
        from retention.run.executor import Executor, journal_path
        from retention.state.journal import Journal

        with (
            Journal.open(journal_path(self.config)) as journal,
            ArchiveSet(self.config.archives, account=self.account.name) as archives,
        ):
            ex = Executor(session, journal, archives=archives, run_id=self.run_id,
                          account=self.account.name, stop=self.stop)
            try:
                return self.carried + tuple(ex.execute(plan))
            finally:
                # Kept for the report when execution fails part-way.
                self.results = self.carried + tuple(ex.results)

    def _measure_after(
        self,
        session: MailSession,
        folders: Sequence[FolderInfo],
        snapshot: Snapshot,
        results: Sequence[ActionResult],
    ) -> int:
        freed = sum(r.freed_bytes for r in results if r.result == "done")
        if self.account.protocol == "pop3":
            return snapshot.usage.usage_bytes - freed  # the session has QUIT to commit
        try:
            return session.usage(folders).usage_bytes
        except RetentionError as e:
            self.warnings.append(f"usage after the run not measured: {e}")
            return snapshot.usage.usage_bytes - freed

    def _result(self, status: str, **kw: object) -> AccountResult:
        usage = kw.pop("usage", None)
        after = kw.pop("after", None)
        return AccountResult(
            account=self.account.name,
            protocol=self.account.protocol,
            run_id=self.run_id,
            dry_run=self.dry_run,
            status=status,  # type: ignore[arg-type]
            started=self.now,
            finished=datetime.now(UTC),
            usage_bytes=usage.usage_bytes if isinstance(usage, Usage) else None,
            limit_bytes=usage.limit_bytes if isinstance(usage, Usage) else None,
            usage_after_bytes=after if isinstance(after, int) else None,
            usage_source=usage.source if isinstance(usage, Usage) else None,
            limit_source=self.limit_source if isinstance(usage, Usage) else None,
            warnings=tuple(self.warnings),
            **kw,  # type: ignore[arg-type]
        )


def run_account(
    config: Config,
    account: Account,
    *,
    dry_run: bool,
    now: datetime | None = None,
    run_id: str | None = None,
    stop: threading.Event | None = None,
    connect: Connector = default_connect,
    sleep: Callable[[float], None] = time.sleep,
) -> AccountResult:
    """One cleanup pass over one account. Never raises for account-level failures."""
    now = now or datetime.now(UTC)
    assert now.tzinfo is not None
    p = _Pass(
        config,
        account,
        dry_run=dry_run,
        now=now,
        run_id=run_id or new_run_id(now),
        connect=connect,
        stop=stop,
    )
    try:
        with account_lock(config.state_dir, account.name), account_lease(
            config, account.name, dry_run=dry_run, stop=stop
        ) as lease:
            if lease is not None:
                p.stop = stop = lease.stop  # also set when the lease is lost mid-pass
            ledger = _open_ledger(config)
            try:
                for attempt in range(RETRIES + 1):
                    try:
                        result = after_pass(config, account, p.once(ledger), now)
                        if lease is not None:
                            lease.succeeded = result.status == "ok"
                        return result
                    except AccountError as e:
                        if not e.retryable or attempt == RETRIES:
                            raise
                        if stop is not None and stop.is_set():
                            raise  # shutting down: the journal carries it to the next run
                        p.carried = tuple(r for r in p.results if r.result == "done")
                        log.info("account=%s retry=%d cause=%s", account.name, attempt + 1, e)
                        sleep(BACKOFF[attempt])
                raise AssertionError("unreachable")
            finally:
                ledger.close()
    except AccountLocked as e:
        return p._result("skipped", error=str(e), error_kind="other")
    except AccountError as e:
        return p._result(
            "error", error=str(e) or type(e).__name__, error_kind=e.kind,
            plan=p.plan, results=p.results, usage=p.usage, retry_later=isinstance(e, Throttled),
        )
    except RetentionError as e:
        return p._result("error", error=str(e), error_kind="other", plan=p.plan,
                         results=p.results, usage=p.usage)
    except Exception as e:  # noqa: BLE001 - one account's bug must not stop the others
        log.exception("account=%s unexpected error", account.name)
        return p._result(
            "error", error=f"internal error: {type(e).__name__}: {e}", error_kind="other"
        )


def measure_account(
    config: Config,
    account: Account,
    *,
    now: datetime | None = None,
    connect: Connector = default_connect,
    ledger: Ledger | None = None,
) -> AccountResult:
    """Usage only (a read-only session); records a usage sample for the forecast.

    ``ledger``: an open store shared by many measurements (``usage --jobs``): opening and
    closing SQLite per account costs more than the IMAP round trips it records.
    """
    now = now or datetime.now(UTC)
    p = _Pass(
        config, account, dry_run=True, now=now, run_id=new_run_id(now), connect=connect, stop=None
    )
    try:
        session = LOGINS.connect(account, config.state_dir,
                                 lambda secret: connect(account, secret, True))
        try:
            usage = session.usage(None)
        finally:
            session.close()
        usage = dataclasses.replace(usage, limit_bytes=p.limit(usage))
        if ledger is not None:
            ledger.record_usage(account.name, now, usage.usage_bytes, usage.limit_bytes)
        else:
            own = _open_ledger(config)
            try:
                own.record_usage(account.name, now, usage.usage_bytes, usage.limit_bytes)
            finally:
                own.close()
        return p._result("ok", usage=usage, after=usage.usage_bytes, messages=usage.messages)
    except AccountError as e:
        return p._result("error", error=str(e) or type(e).__name__, error_kind=e.kind)
    except RetentionError as e:
        return p._result("error", error=str(e), error_kind="other")


#: Wait before the end-of-sweep retry of throttled accounts (Exchange suggests seconds to
#: minutes; the other accounts of the sweep ran meanwhile).
THROTTLE_BACKOFF = 30.0


def retry_throttled(
    accounts: Sequence[Account], results: Sequence[AccountResult],
    again: Callable[[Account], AccountResult], *, sleep: Callable[[float], None] = time.sleep,
    backoff: float = THROTTLE_BACKOFF,
) -> tuple[AccountResult, ...]:
    """Once every account had its turn, run the throttled ones once more (in order)."""
    todo = [i for i, r in enumerate(results) if r.retry_later]
    if not todo:
        return tuple(results)
    out = list(results)
    log.info("retrying %d throttled account(s) in %gs", len(todo), backoff)
    sleep(backoff)
    by_name = {a.name: a for a in accounts}
    for i in todo:
        account = by_name.get(out[i].account)
        if account is not None:
            out[i] = again(account)
    return tuple(out)


def run_all(
    config: Config,
    names: Sequence[str] = (),
    *,
    dry_run: bool,
    now: datetime | None = None,
    connect: Connector = default_connect,
    sleep: Callable[[float], None] = time.sleep,
) -> RunResult:
    """One pass over the selected accounts (all when ``names`` is empty), one after another."""
    now = now or datetime.now(UTC)
    accounts = [a for a in config.accounts if not names or a.name in names]
    def one(a: Account) -> AccountResult:
        return run_account(config, a, dry_run=dry_run, now=now, connect=connect, sleep=sleep)

    results = retry_throttled(accounts, [one(a) for a in accounts], one, sleep=sleep)
    return RunResult(dry_run=dry_run, generated_at=now, accounts=results)
