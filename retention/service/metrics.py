"""Prometheus metrics of the service (``service.http`` serves them).

This module owns the metric names, their labels and what each value means; the service
only reports events to it (``observe_run``, ``observe_measurement``, ...). Values are
kept in memory from the last measurement and run, so a scrape never logs in to a mailbox.
Everything is registered in an injected ``CollectorRegistry`` (tests use a fresh one).

Label privacy (``service.account_label``):

* ``name``: ``account="<the account's name>"``;
* ``hash``: ``account="<first 12 hex digits of SHA-256 of the name>"``;
* ``none``: no ``account`` label anywhere; fleet totals only. Sums for bytes, messages,
  counters and ``short_by``; the soonest ``full_seconds``; the lowest ``warn_ratio``; the
  longest schedule period; the newest last run and the *oldest* last success, so that
  "no success within twice the schedule" still fires when any one account is stale.

How many accounts get per-account series (``service.account_metrics``):

* ``all``: every account (the default up to ``AUTO_ALL_UP_TO`` = 10,000 accounts);
* ``top:K``: the K fullest by usage ratio plus the accounts currently in error, at most
  ``ERRORS_PER_K`` x K (= K) of those, first by name: an outage of the mail server must
  not turn a scrape of a million accounts into a million series, and 2K accounts keep
  ``/metrics`` near 200 KB (``retention_accounts_in_error`` counts them all); the default
  above 10,000 accounts is ``top:100``;
* ``none``: no per-account series.

Whatever the choice, the fleet series of ``service.fleet`` (usage-ratio histogram, accounts
above warn/clean, in error by reason, sweep progress, oldest success) are exported; their
number depends on the schedules and reasons, never on the account count. Under ``top:K``
and ``none`` a scrape costs O(K), not O(accounts): see bench/bench_metrics.py.

``retention_run_duration_seconds`` and ``retention_notices_total`` never have an account
label. Only account names, rule names, action kinds, error reasons and notice kinds and
outcomes appear as label values, so an e-mail address appears only when an account is
named after one.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from retention import __version__
from retention.config.schema import Account, Config
from retention.errors import ErrorKind
from retention.result import AccountResult
from retention.service.fleet import REASONS, FleetIndex
from retention.service.forecast import Fit

log = logging.getLogger("retention.service")

AccountLabel = Literal["name", "hash", "none"]
DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


def error_reason(kind: ErrorKind | str | None) -> str:
    """The fixed ``reason`` label set; ``config`` (e.g. an unset password) counts as other."""
    return kind if kind in REASONS else "other"


def hashed(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()[:12]


@dataclass(slots=True)
class _Account:
    usage: int | None = None
    limit: int | None = None
    messages: int | None = None
    fit: Fit | None = None
    fit_limit: int | None = None
    last_run: float | None = None
    last_success: float | None = None
    short_by: int | None = None
    # Plain dicts, not Counters. Made only for an account that has been observed: the
    # policy's constants (warn level, schedule period) live in the FleetIndex member, so
    # adopting a million-account policy makes no _Account at all.
    actions: dict[tuple[str, str], int] = field(default_factory=dict)
    freed: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    # Skipped runs by reason: busy (serve: still in flight from the last tick), locked
    # (another agent holds the account), recent (done within leases.once_within).
    skipped: dict[str, int] = field(default_factory=dict)

    def count_error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1


_UNOBSERVED = _Account()  # read-only stand-in for an owned account with no result yet


# Prometheus' and Alertmanager's names for the same facts. The old name stays for one
# release so that rules and dashboards can move at their own pace (README: Metrics).
RELOAD_OK = "retention_config_last_reload_successful"
RELOAD_OK_AT = "retention_config_last_reload_success_timestamp_seconds"
RELOAD_OK_DEPRECATED = "retention_config_reload_success"

AUTO_ALL_UP_TO = 10_000
AUTO_TOP = 100
ERRORS_PER_K = 1


def parse_account_metrics(value: str | None, accounts: int) -> int | None:
    """How many accounts get per-account series: None = all, 0 = none, K for ``top:K``.

    ``value`` is ``all``, ``none``, ``top:K`` or None (all up to 10,000 accounts, else
    top:100); the schema has already checked its form.
    """
    if value is None:
        return None if accounts <= AUTO_ALL_UP_TO else AUTO_TOP
    if value == "all":
        return None
    if value == "none":
        return 0
    return int(value.removeprefix("top:"))


class ServiceCollector:
    """Builds every per-account family at scrape time from the in-memory state."""

    def __init__(
        self,
        label: AccountLabel,
        clock: Callable[[], float] = time.time,
        account_metrics: str | None = None,
    ) -> None:
        self.label = label
        self.clock = clock
        self.lock = threading.Lock()
        self.accounts: dict[str, _Account] = {}
        self.reload_ok = 1.0
        self.reload_ok_at = clock()  # the service starts with a policy that loaded
        self.account_metrics = account_metrics
        self.fleet = FleetIndex()
        self._hashes: dict[str, str] = {}

    def selected(self) -> list[str] | None:
        """Names that get per-account series (None: all of them). Under the lock."""
        k = parse_account_metrics(self.account_metrics, len(self.fleet.members))
        if k is None:
            return None
        if k == 0:
            return []
        chosen = self.fleet.fullest(k)
        seen = set(chosen)
        chosen.extend(n for n in self.fleet.in_error(ERRORS_PER_K * k) if n not in seen)
        return chosen

    def _snapshot(self, name: str, now: float) -> _Snap:
        warn, period = self.fleet.constants(name)
        return _snapshot(self.accounts.get(name, _UNOBSERVED), now, warn, period)

    def label_of(self, name: str) -> str:
        """The ``account`` label value of ``name`` (its hash under ``account_label: hash``)."""
        return self._label(name)

    def _label(self, name: str) -> str:
        if self.label == "name":
            return name
        h = self._hashes.get(name)
        if h is None:
            h = self._hashes[name] = hashed(name)
        return h

    def describe(self) -> Iterator[Metric]:
        # Names only (for the registry's duplicate check); no state is read.
        labels: list[str] = []
        for name, doc in _GAUGES:
            yield GaugeMetricFamily(name, doc, labels=labels)
        for name, doc, _ in _COUNTERS:
            yield CounterMetricFamily(name, doc, labels=labels)
        yield GaugeMetricFamily(RELOAD_OK, "", labels=labels)
        yield GaugeMetricFamily(RELOAD_OK_DEPRECATED, "", labels=labels)
        yield GaugeMetricFamily(RELOAD_OK_AT, "", labels=labels)
        yield GaugeMetricFamily("retention_accounts", "", labels=labels)
        yield GaugeMetricFamily("retention_build_info", "", labels=labels)
        yield from FleetIndex().families(0.0)

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        with self.lock:
            names = self.selected() if self.label != "none" else None
            owned = self.fleet.members
            if names is None:
                names = list(owned)
                names.extend(n for n in self.accounts if n not in owned)
            rows = [(self._label(n), self._snapshot(n, now)) for n in names
                    if n in owned or n in self.accounts]
            reload_ok, reload_ok_at = self.reload_ok, self.reload_ok_at
            total = len(owned)
            fleet = list(self.fleet.families(now))
        per_account = self.label != "none"
        acct = ["account"] if per_account else []
        gauges: dict[str, list[tuple[str, float]]] = {name: [] for name, _ in _GAUGES}
        counters: dict[str, dict[tuple[str, ...], float]] = {n: {} for n, _, _ in _COUNTERS}
        for label, snap in rows:
            for name, value in snap.gauges.items():
                if value is not None:
                    gauges[name].append((label, value))
            for name, series in snap.counters.items():
                for key, value in series.items():
                    full = (label, *key) if per_account else key
                    counters[name][full] = counters[name].get(full, 0.0) + value
        for name, doc in _GAUGES:
            fam = GaugeMetricFamily(name, doc, labels=acct)
            if per_account:
                for label, value in gauges[name]:
                    fam.add_metric([label], value)
            elif gauges[name]:
                fam.add_metric([], _FLEET[name]([v for _, v in gauges[name]]))
            yield fam
        for name, doc, extra in _COUNTERS:
            cfam = CounterMetricFamily(name, doc, labels=[*acct, *extra])
            for key, value in sorted(counters[name].items()):
                cfam.add_metric(list(key), value)
            yield cfam
        yield GaugeMetricFamily(
            RELOAD_OK,
            "1 if the last policy reload (SIGHUP) succeeded, 0 if the old policy stayed",
            value=reload_ok,
        )
        yield GaugeMetricFamily(
            RELOAD_OK_DEPRECATED,
            f"Deprecated (removed in the next release): the same value as {RELOAD_OK}",
            value=reload_ok,
        )
        yield GaugeMetricFamily(
            RELOAD_OK_AT, "When the policy was last loaded successfully (start-up or SIGHUP)",
            value=reload_ok_at,
        )
        yield GaugeMetricFamily(
            "retention_accounts", "Accounts this agent owns (its shard of the policy)",
            value=total,
        )
        yield from fleet
        info = GaugeMetricFamily(
            "retention_build_info", "Version of the agent (value 1)", labels=["version", "python"]
        )
        info.add_metric([__version__, platform.python_version()], 1)
        yield info


@dataclass
class _Snap:
    gauges: dict[str, float | None]
    counters: dict[str, Mapping[tuple[str, ...], float]]


def _snapshot(a: _Account, now: float, warn: float | None, period: float | None) -> _Snap:
    full = None
    if a.fit is not None and a.fit_limit:
        at = a.fit.origin.timestamp()
        # The fit is re-evaluated at scrape time: the forecast counts down between samples.
        seconds = a.fit.seconds_until(a.fit_limit, a.fit.origin)
        full = None if seconds is None else max(0.0, seconds - (now - at))
    return _Snap(
        gauges={
            "retention_mailbox_usage_bytes": a.usage,
            "retention_mailbox_limit_bytes": a.limit,
            "retention_mailbox_messages": a.messages,
            "retention_mailbox_full_seconds": full,
            "retention_mailbox_warn_ratio": warn,
            "retention_schedule_period_seconds": period,
            "retention_last_run_timestamp_seconds": a.last_run,
            "retention_last_success_timestamp_seconds": a.last_success,
            "retention_short_by_bytes": a.short_by,
        },
        counters={
            "retention_actions_total": {k: float(v) for k, v in a.actions.items()},
            "retention_freed_bytes_total": {(k,): v for k, v in a.freed.items()},
            # Every reason from 0, so the first error is an increase() an alert can see.
            "retention_account_errors_total": {(k,): float(a.errors.get(k, 0)) for k in REASONS},
            "retention_runs_skipped_total": {(k,): float(v) for k, v in a.skipped.items()},
        },
    )


_GAUGES: tuple[tuple[str, str], ...] = (
    ("retention_mailbox_usage_bytes", "Storage in use (after the last cleanup or measurement)"),
    ("retention_mailbox_limit_bytes", "Storage limit (server quota, else the policy's limit)"),
    ("retention_mailbox_messages", "Messages in the mailbox"),
    ("retention_mailbox_full_seconds",
     "Forecast seconds until full (OLS over 7 days of usage); absent when not filling up"),
    ("retention_mailbox_warn_ratio", "The policy's warn_above level (fraction of the limit)"),
    ("retention_schedule_period_seconds", "Seconds between two cleanup runs of the schedule"),
    ("retention_last_run_timestamp_seconds", "When the last cleanup run finished"),
    ("retention_last_success_timestamp_seconds", "When the last successful cleanup run finished"),
    ("retention_short_by_bytes", "Bytes the last cleanup could not free to reach clean_to"),
)
_COUNTERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("retention_actions_total", "Messages acted on, by action and rule", ("action", "rule")),
    ("retention_freed_bytes_total", "Bytes freed, by action", ("action",)),
    ("retention_account_errors_total", "Failed runs and measurements, by reason", ("reason",)),
    ("retention_runs_skipped_total",
     "Runs skipped: busy (the last one still running), locked (another agent holds the "
     "account), recent (done within leases.once_within)", ("reason",)),
)
_FLEET: dict[str, Callable[[list[float]], float]] = {
    "retention_mailbox_usage_bytes": sum,
    "retention_mailbox_limit_bytes": sum,
    "retention_mailbox_messages": sum,
    "retention_mailbox_full_seconds": min,
    "retention_mailbox_warn_ratio": min,
    "retention_schedule_period_seconds": max,
    "retention_last_run_timestamp_seconds": max,
    "retention_last_success_timestamp_seconds": min,
    "retention_short_by_bytes": sum,
}


class Metrics:
    """What the service reports; thread-safe (workers report concurrently)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        account_label: AccountLabel = "name",
        account_metrics: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.clock = clock
        # No ``*_created`` series next to the histogram: a gauge per series that no rule
        # uses (process-wide in client_python; this process serves one set of metrics).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.collector = ServiceCollector(account_label, clock, account_metrics)
        self.fleet = self.collector.fleet
        registry.register(self.collector)
        self.run_duration = Histogram(
            "retention_run_duration_seconds",
            "Duration of one account's cleanup run",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        # Fleet-wide, like the duration: kinds and statuses are fixed sets, so a million
        # accounts still make a handful of series. "failed" and "unknown" mean an owner
        # may not have been told; "will_retry" is tried again by the next run.
        self.notices = Counter(
            "retention_notices",
            "Notices to mailbox owners, by kind (warning, archived) and outcome "
            "(sent, will_retry, failed, unknown, already_sent, would_send)",
            ["kind", "status"],
            registry=registry,
        )

    def account_state(self, name: str) -> _Account:
        """The observed state of ``name``, made on first use (under the lock)."""
        a = self.collector.accounts.get(name)
        if a is None:
            a = self.collector.accounts[name] = _Account()
        return a

    def set_accounts(
        self, config: Config, periods: Mapping[str, float],
        accounts: Iterable[Account] | None = None,
    ) -> None:
        """Adopt a (re)loaded policy: per-account constants; forget removed accounts.

        ``periods``: the schedule period in seconds, by schedule string. ``accounts``: the
        ones this agent owns (its shard), default all of the policy's.
        """
        with self.collector.lock:
            names = set()
            for account in config.accounts if accounts is None else accounts:
                names.add(account.name)
                quota = config.policy_of(account).quota
                schedule = config.schedule_of(account)
                period = periods.get(schedule)
                self.fleet.set_account(
                    account.name, schedule=schedule,
                    period=period if period is not None and period != float("inf") else None,
                    warn=quota.warn_above, clean=quota.clean_above)
            for gone in (set(self.collector.accounts) | set(self.fleet.members)) - names:
                self.collector.accounts.pop(gone, None)
                self.fleet.forget(gone)
            self.fleet.prune_schedules(periods)

    def begin_sweep(self, schedule: str, due: int) -> None:
        """A tick of ``schedule`` submits ``due`` accounts (``observe_skip`` takes one off)."""
        with self.collector.lock:
            self.fleet.begin_sweep(schedule, due, self.clock())

    def set_reload(self, ok: bool) -> None:
        with self.collector.lock:
            self.collector.reload_ok = 1.0 if ok else 0.0
            if ok:
                self.collector.reload_ok_at = self.clock()

    def observe_measurement(self, result: AccountResult) -> None:
        with self.collector.lock:
            a = self.account_state(result.account)
            if result.status == "error":
                a.count_error(error_reason(result.error_kind))
                self.fleet.set_error(result.account, error_reason(result.error_kind))
                return
            if result.status != "ok":
                return
            _set_usage(a, result)
            self.fleet.set_error(result.account, None)
            self.fleet.set_ratio(result.account, _ratio(a))
            if result.messages is not None:
                a.messages = result.messages

    def observe_run(self, result: AccountResult) -> None:
        """A finished cleanup run: counters, timestamps and the usage measured after it."""
        self.run_duration.observe(result.duration)
        for notice in result.notices:
            self.notices.labels(notice.kind, notice.status).inc()
        with self.collector.lock:
            a = self.account_state(result.account)
            if result.status == "skipped":  # another agent held it, or did it recently
                reason = result.skip_reason or "locked"
                a.skipped[reason] = a.skipped.get(reason, 0) + 1
                return
            a.last_run = result.finished.timestamp()
            self.fleet.finished(result.account)
            if result.status == "error":
                a.count_error(error_reason(result.error_kind))
                self.fleet.set_error(result.account, error_reason(result.error_kind))
                return
            a.last_success = a.last_run
            self.fleet.set_error(result.account, None)
            self.fleet.succeeded(result.account, a.last_success)
            removed = 0
            for r in result.results:
                if r.result != "done":
                    continue  # planned (dry run), skipped and failed actions change nothing
                kind = r.action.kind
                key = (kind.value, r.action.rule)
                a.actions[key] = a.actions.get(key, 0) + 1
                a.freed[kind.value] = a.freed.get(kind.value, 0) + r.freed_bytes
                removed += 1 if kind.frees_space else 0
            if result.plan is not None:
                a.short_by = result.plan.short_by_bytes
            _set_usage(a, result)
            self.fleet.set_ratio(result.account, _ratio(a))
            if result.messages is not None:
                # Moves stay in the account; deleted and archived messages leave it.
                a.messages = max(0, result.messages - removed)

    def observe_skip(self, account: str, schedule: str | None = None) -> None:
        """A tick found the account still in flight: nothing ran (nor is it due this sweep)."""
        with self.collector.lock:
            skipped = self.account_state(account).skipped
            skipped["busy"] = skipped.get("busy", 0) + 1
            if schedule is not None:
                self.fleet.not_due(schedule)

    def set_forecast(self, account: str, fit: Fit | None, limit: int | None) -> None:
        with self.collector.lock:
            a = self.account_state(account)
            a.fit, a.fit_limit = fit, limit


def _set_usage(a: _Account, result: AccountResult) -> None:
    """The gauges show the usage measured last: after the cleanup when there was one."""
    usage = result.usage_after_bytes if result.usage_after_bytes is not None else result.usage_bytes
    if usage is not None:
        a.usage = usage
    if result.limit_bytes is not None:
        a.limit = result.limit_bytes


def _ratio(a: _Account) -> float | None:
    if a.usage is None or not a.limit:
        return None
    return a.usage / a.limit
