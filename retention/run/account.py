"""One pass over one account: connect, recover, measure, scan, plan, execute, measure again.

This module is the glue between the pure core (policy, planner) and the side effects
(adapters, the observation store, the executor). A real pass is one unit of work: one
``Executor`` over the attempt's session, with the journal and archives opened once, first
recovers what an interrupted run left, then executes the new plan.

It never raises for an account-level failure: every outcome becomes an ``AccountResult``
so that one failing account never stops the others. Only connection-level failures are
retried within a run; a rejected login never is, since retrying could lock the account.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

from retention.adapters import MailSession, Secret
from retention.archive import ArchiveSet
from retention.config.schema import (
    Account,
    Config,
    Policy,
    effective_clock,
    effective_protect,
)
from retention.errors import (
    AccountError,
    AccountLocked,
    ClockSkew,
    ErrorKind,
    FolderSkipped,
    RetentionError,
    SkipReason,
    Throttled,
)
from retention.folders import folders_to_scan
from retention.model import FolderInfo, FolderSnapshot, MessageRef, Protection, Snapshot, Usage
from retention.plan import Action, Clock, Plan
from retention.planner import clock_refusal
from retention.planner import plan as make_plan
from retention.result import AccountResult, ActionResult, RunResult, Status
from retention.run.clock import server_time
from retention.run.executor import Executor
from retention.run.lease import account_lease
from retention.run.logins import LOGINS
from retention.run.owner import after_pass, exemptions
from retention.run.recovery import RecoveryReport, row_action
from retention.run.scanning import FolderScans, PendingScan, cached_message_ids
from retention.state import StateDir
from retention.state.journal import JournalRow
from retention.state.observations import Observations
from retention.state.scancache import ScanCache

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


def current_rules(config: Config, account: Account) -> dict[str, Protection]:
    """Rule name -> what it protects now: recovery re-checks both before finishing a
    removal an interrupted run left (review F4)."""
    policy = config.policy_of(account)
    return {r.name: Protection.of(effective_protect(r, policy, account.protocol))
            for r in policy.rules}


def new_run_id(now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def open_observations(config: Config) -> Observations:
    """The state_dir's observation store, opened for a caller that shares it."""
    return StateDir(config.state_dir).observations()


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
    # Every adapter here implements message_ids; a third-party MailSession written before it
    # existed (``message_ids = None``) keeps working, without the ids.
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
        a = action  # the constructor, positionally: dataclasses.replace costs twice as much
        return Action(a.message.with_message_id(mid), a.kind, a.rule, a.clock, a.reason,
                      a.to_folder, a.archive, a.over_quota, a.protect)

    return dataclasses.replace(
        plan,
        actions=tuple(fill(a) for a in plan.actions),
        failed_actions=tuple(fill(a) for a in plan.failed_actions),
    )


class AccountPass:
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
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        list_kept: bool = False,
        message_ids: bool = True,
    ) -> None:
        self.config = config
        self.message_ids = message_ids  # a read-only pass: whether its report shows them
        self.clock = clock
        self._bound = False  # the observation store knows which mailbox this account is
        self.account = account
        self.policy = config.policy_of(account)
        self.hold = config.is_held(account)
        self.dry_run = dry_run
        self.readonly = dry_run or self.hold
        self.now = now
        self.run_id = run_id
        self.connect = connect
        self.stop = stop
        self.list_kept = list_kept  # the plan lists every kept message (run --list-kept)
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
        self.earlier: tuple[ActionResult, ...] = ()
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

    def scan(
        self, session: MailSession, observations: Observations
    ) -> tuple[Snapshot, list[FolderInfo]]:
        protocol = self.account.protocol
        with_sent = _needs_sent(self.policy, protocol)
        scanned: list[FolderSnapshot] = []
        with FolderScans(session, with_sent=with_sent, cache=self.scan_cache()) as scans:
            early = self._inbox_first(scans)
            folders = session.list_folders()
            pending: list[PendingScan] = []
            for info in folders_to_scan(self.policy, folders, protocol):
                try:
                    if early is not None and info.name == early.info.name:
                        pending.append(early.listed_as(info))
                    else:
                        pending.append(scans.ask(info))
                except FolderSkipped as e:
                    self.warnings.append(f"folder {e.folder} skipped: {e.reason}")
            # Usage between the two steps: the server measures it while the cached scans
            # are still being decoded. After the server's part of the scan, so that a
            # folder it counted needs no STATUS (on a 200,000-message maildir a STATUS
            # costs Dovecot as much as the EXAMINE); one with messages left out is asked.
            counted = {p.info.name: p.count for p in pending if p.count is not None}
            scans.decode(pending)
            usage = session.usage(folders, counted=counted)
            for p in pending:
                try:
                    snap = scans.finish(p)
                except FolderSkipped as e:
                    self.warnings.append(f"folder {e.folder} skipped: {e.reason}")
                    continue
                scanned.append(self._observe(snap, observations))
        usage = dataclasses.replace(usage, limit_bytes=self.limit(usage))
        if getattr(session, "provider", None) == "gmail":
            self.warnings.append(GMAIL_QUOTA)
        self.usage = usage
        snapshot = Snapshot(
            account=self.account.name,
            protocol=protocol,
            usage=usage,
            folders=tuple(scanned),
            all_folders=tuple(folders),
        )
        return snapshot, folders

    def _inbox_first(self, scans: FolderScans) -> PendingScan | None:
        """INBOX's changes since its cached scan, asked before the folder list.

        Measured on Dovecot 2.3 (maildir, its mailbox list index on, as by default): the
        first mailbox a session opens opens in milliseconds; after a LIST (or a STATUS of
        another folder) an EXAMINE of a 200,000-message INBOX takes 0.15-0.2 s of the
        server's time, every session (bench/README.md). The LIST still decides what is
        scanned: an INBOX it does not list, or no rule takes, is not used.
        """
        inbox = FolderInfo("INBOX")
        if not folders_to_scan(self.policy, [inbox], self.account.protocol):
            return None
        try:
            return scans.ask_cached(inbox)
        except FolderSkipped:  # asked again after the LIST, which then reports it
            return None

    def _observe(self, snap: FolderSnapshot, observations: Observations) -> FolderSnapshot:
        """Fill first-seen times: POP3's age, and IMAP's ``saved`` clock without SAVEDATE.

        Recording first sightings is the one state a dry-run writes.
        """
        pop3 = self.account.protocol == "pop3"
        if not pop3 and snap.has_savedate:
            return snap
        keys = [(m.uidl if pop3 else str(m.uid)) or "" for m in snap.messages]
        if not self._bound:  # once per pass: each call may take SQLite's write lock
            observations.bind_mailbox(self.account.name, self.account.mailbox_identity())
            self._bound = True
        seen = observations.first_seen(
            self.account.name, snap.name, snap.uidvalidity, keys, self.now
        )
        observations.prune(self.account.name, snap.name, snap.uidvalidity, keys)
        if pop3:
            msgs = tuple(
                m.replace(received=seen[k], saved=seen[k])
                for m, k in zip(snap.messages, keys, strict=True)
            )
        else:
            msgs = tuple(
                m.replace(saved=m.saved or seen[k])
                for m, k in zip(snap.messages, keys, strict=True)
            )
        return dataclasses.replace(snap, messages=msgs)

    def once(self, observations: Observations) -> AccountResult:
        # A password, or an OAuth2 bearer login (a token refused once is refreshed once).
        session = LOGINS.connect(
            self.account, self.config.state_dir,
            lambda secret: self.connect(self.account, secret, self.readonly),
        )
        try:
            with self._work(session) as work:
                if work is not None:
                    self._note_recovery(work.recover())
                snapshot, folders = self.scan(session, observations)
                usage = snapshot.usage
                observations.record_usage(
                    self.account.name, self.now, usage.usage_bytes, usage.limit_bytes
                )
                snapshot = dataclasses.replace(
                    snapshot, exempt=exemptions(self.config, self.account, self.now),
                    server_time=server_time(session, snapshot, self.now,
                                            self.policy.clock_skew_limit),
                )
                plan = make_plan(self.policy, snapshot, self.now, list_kept=self.list_kept)
                refused = clock_refusal(self.policy, snapshot, self.now) if plan.actions else None
                if refused and work is not None:
                    raise ClockSkew(refused)
                if refused:  # dry-run or hold: reported, as what a real run would refuse
                    plan = dataclasses.replace(plan, warnings=(*plan.warnings, refused))
                # The scan read no header (with the Date it read the Message-ID too). A real
                # pass journals every Message-ID it acts on (the audit history); a read-only
                # one reads them only when its report shows them (10,000 planned messages:
                # 10,000 message files the server opens and parses).
                if not _needs_sent(self.policy, self.account.protocol) and (
                        work is not None or self.message_ids):
                    plan = with_message_ids(session, plan, self.warnings, self.scan_cache())
                if self.hold:
                    plan = dataclasses.replace(plan, hold=True)
                self.plan = plan
                self.warnings.extend(plan.warnings)
                impossible = tuple(
                    ActionResult(a, "failed", dict(plan.failed_rules).get(a.rule))
                    for a in plan.failed_actions
                )
                if work is None:
                    results = tuple(ActionResult(a, "planned") for a in plan.actions)
                    after = plan.usage_after_bytes
                else:
                    results = self._with_recovered(self._execute(work, plan))
                    after = self._measure_after(session, folders, snapshot, results)
                    observations.record_usage(
                        self.account.name, self.clock(), after, usage.limit_bytes
                    )
            return self.result(
                "ok",
                plan=plan,
                results=results + impossible,
                usage=usage,
                after=after,
                messages=usage.messages or snapshot.message_count,
            )
        finally:
            session.close()

    @contextmanager
    def _work(self, session: MailSession) -> Iterator[Executor | None]:
        """The attempt's unit of work: an executor over ``session`` with the journal and the
        archives open, or None for a read-only pass (dry-run, hold), which journals nothing."""
        if self.readonly:
            yield None
            return
        with (
            StateDir(self.config.state_dir, self.config.state_url).journal() as journal,
            ArchiveSet(self.config.archives, account=self.account.name) as archives,
        ):
            journal.bind_mailbox(self.account.name, self.account.mailbox_identity())
            yield Executor(session, journal, archives=archives, run_id=self.run_id,
                           account=self.account.name, stop=self.stop,
                           rules=current_rules(self.config, self.account))

    def _note_recovery(self, report: RecoveryReport) -> None:
        self.recovered += report.finished  # kept across retries within this run
        self.recovered_pending = report.pending  # uncommitted ones are redone on retry

    def _with_recovered(self, results: tuple[ActionResult, ...]) -> tuple[ActionResult, ...]:
        """Add the removals recovery finished in this run: a fresh scan no longer shows
        them, yet this run did them (report, metrics). POP3's are done once QUIT commits,
        i.e. when execution returned normally."""
        seen = {r.action.message.ref.key() for r in results}
        extra = []
        for row in [*self.recovered, *self.recovered_pending]:
            if row.ref.key() not in seen:
                seen.add(row.ref.key())
                extra.append(ActionResult(row_action(row), "done",
                                          f"finished from interrupted run {row.run_id}"))
        return results + tuple(extra)

    def _execute(self, work: Executor, plan: Plan) -> tuple[ActionResult, ...]:
        try:
            return self.earlier + tuple(work.execute(plan))
        finally:
            # Kept for the report when execution fails part-way.
            self.results = self.earlier + tuple(work.results)

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

    def result(
        self,
        status: Status,
        *,
        error: str | None = None,
        error_kind: ErrorKind | None = None,
        skip_reason: SkipReason | None = None,
        plan: Plan | None = None,
        results: tuple[ActionResult, ...] = (),
        usage: Usage | None = None,
        after: int | None = None,
        messages: int | None = None,
        retry_later: bool = False,
    ) -> AccountResult:
        """This pass's ``AccountResult`` (the report's and the metrics' input)."""
        return AccountResult(
            account=self.account.name,
            protocol=self.account.protocol,
            run_id=self.run_id,
            dry_run=self.dry_run,
            status=status,
            started=self.now,
            finished=self.clock(),
            error=error,
            error_kind=error_kind,
            skip_reason=skip_reason,
            plan=plan,
            results=results,
            usage_bytes=usage.usage_bytes if usage is not None else None,
            limit_bytes=usage.limit_bytes if usage is not None else None,
            usage_after_bytes=after,
            messages=messages,
            usage_source=usage.source if usage is not None else None,
            limit_source=self.limit_source if usage is not None else None,
            retry_later=retry_later,
            warnings=tuple(self.warnings),
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
    list_kept: bool = False,
    message_ids: bool = True,
) -> AccountResult:
    """One cleanup pass over one account. Never raises for account-level failures.

    ``list_kept``: the report lists every kept message, not only their counts.
    ``message_ids``: False when the caller's report of a dry-run (or hold) pass does not show
    them (text, HTML); a pass that acts always reads and journals them.
    """
    now = now or datetime.now(UTC)
    assert now.tzinfo is not None
    p = AccountPass(
        config,
        account,
        dry_run=dry_run,
        now=now,
        run_id=run_id or new_run_id(now),
        connect=connect,
        stop=stop,
        list_kept=list_kept,
        message_ids=message_ids,
    )
    try:
        state = StateDir(config.state_dir)
        # The per-mailbox lock (F4) only for passes that change the mailbox: two read-only
        # entries for one mailbox may look at it at once.
        mailbox = None if dry_run else account.mailbox_identity()
        # The lease is the mailbox's too: two entries (or agents) for one mailbox never
        # act on it at once.
        with state.lock(account.name, mailbox), account_lease(
            config, mailbox or account.name, dry_run=dry_run, stop=stop
        ) as lease, state.observations() as observations:
            if lease is not None:
                p.stop = stop = lease.stop  # also set when the lease is lost mid-pass
            for attempt in range(RETRIES + 1):
                try:
                    result = after_pass(config, account, p.once(observations), now)
                    if lease is not None:
                        lease.succeeded = result.status == "ok"
                    return result
                except AccountError as e:
                    if not e.retryable or attempt == RETRIES:
                        raise
                    if stop is not None and stop.is_set():
                        raise  # shutting down: the journal carries it to the next run
                    p.earlier = tuple(r for r in p.results if r.result == "done")
                    log.info("account=%s retry=%d cause=%s", account.name, attempt + 1, e)
                    sleep(BACKOFF[attempt])
            raise AssertionError("unreachable")
    except AccountLocked as e:
        return p.result("skipped", error=str(e), skip_reason=e.reason)
    except AccountError as e:
        return p.result(
            "error", error=str(e) or type(e).__name__, error_kind=e.kind,
            plan=p.plan, results=p.results, usage=p.usage, retry_later=isinstance(e, Throttled),
        )
    except RetentionError as e:
        return p.result("error", error=str(e), error_kind="other", plan=p.plan,
                         results=p.results, usage=p.usage)
    except Exception as e:  # noqa: BLE001 - one account's bug must not stop the others
        log.exception("account=%s unexpected error", account.name)
        return p.result(
            "error", error=f"internal error: {type(e).__name__}: {e}", error_kind="other"
        )


def measure_account(
    config: Config,
    account: Account,
    *,
    now: datetime | None = None,
    connect: Connector = default_connect,
    observations: Observations | None = None,
) -> AccountResult:
    """Usage only (a read-only session); records a usage sample for the forecast.

    ``observations``: an open store shared by many measurements (``usage --jobs``): opening and
    closing SQLite per account costs more than the IMAP round trips it records.
    """
    now = now or datetime.now(UTC)
    p = AccountPass(
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
        if observations is not None:
            observations.record_usage(account.name, now, usage.usage_bytes, usage.limit_bytes)
        else:
            with StateDir(config.state_dir).observations() as own:
                own.record_usage(account.name, now, usage.usage_bytes, usage.limit_bytes)
        return p.result("ok", usage=usage, after=usage.usage_bytes, messages=usage.messages)
    except AccountError as e:
        return p.result("error", error=str(e) or type(e).__name__, error_kind=e.kind)
    except RetentionError as e:
        return p.result("error", error=str(e), error_kind="other")


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
