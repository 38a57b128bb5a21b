"""Fleet aggregates of the metrics: series whose number never grows with the account count.

This module owns the shard-wide view that ``metrics`` exports next to (or instead of) the
per-account series: the histogram of usage ratios, how many accounts are above their warn
and clean levels, how many are in error by reason, each schedule's sweep progress, and the
oldest last success per schedule. At a million accounts a scrape cannot afford to walk
every account, so every aggregate is maintained *incrementally* when an observation
arrives (O(1), or O(log n) for the success heaps), and a scrape reads counters. The same
index answers "the K fullest accounts" for ``account_metrics: top:K`` from a fine grid of
ratio buckets, so only the accounts of the top few buckets are ever sorted.

Not thread-safe on its own: ``metrics.Metrics`` calls it under its collector lock.
"""

from __future__ import annotations

import bisect
import heapq
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric

#: Upper bounds of ``retention_mailbox_usage_ratio`` (the last one, +Inf, is implied).
RATIO_BUCKETS: tuple[float, ...] = (
    0.1, 0.25, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0, 1.1,
)
#: The fixed ``reason`` label values of errors.
REASONS: tuple[str, ...] = ("auth", "tls", "connect", "protocol", "archive", "other")
_FINE_STEP = 0.005  # the top-K grid: 0.5% wide cells, everything above 2.0 in the last one
_FINE_CELLS = 400


@dataclass
class _Sweep:
    period: float | None = None
    generation: int = 0
    due: int = 0
    done: int = 0
    started: float | None = None


@dataclass(slots=True)
class _Member:
    schedule: str = ""
    warn: float = 1.0
    clean: float = 1.0
    ratio: float | None = None
    error: str | None = None
    last_success: float | None = None
    done_generation: int = -1


@dataclass
class FleetIndex:
    """The incremental aggregates; see the module docstring."""

    members: dict[str, _Member] = field(default_factory=dict)
    _coarse: list[int] = field(default_factory=lambda: [0] * (len(RATIO_BUCKETS) + 1))
    _sum: float = 0.0
    _fine: dict[int, set[str]] = field(default_factory=dict)
    above_warn: int = 0
    above_clean: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    sweeps: dict[str, _Sweep] = field(default_factory=dict)
    _heaps: dict[str, list[tuple[float, str]]] = field(default_factory=dict)

    # -- membership ------------------------------------------------------------------

    def set_account(self, name: str, *, schedule: str, period: float | None,
                    warn: float, clean: float) -> None:
        """Adopt an account's (re)loaded constants; its measured values are kept."""
        m = self.members.get(name)
        if m is None:
            m = self.members[name] = _Member()
        self._unrank(name, m)
        m.warn, m.clean = warn, clean
        if m.schedule != schedule:
            m.schedule = schedule
            if m.last_success is not None:
                self._push(schedule, m.last_success, name)
        self._rank(name, m)
        sweep = self.sweeps.get(schedule)
        if sweep is None:
            sweep = self.sweeps[schedule] = _Sweep()
        sweep.period = period

    def constants(self, name: str) -> tuple[float | None, float | None]:
        """(warn level, schedule period) of an owned account; (None, None) otherwise."""
        m = self.members.get(name)
        if m is None:
            return None, None
        sweep = self.sweeps.get(m.schedule)
        return m.warn, sweep.period if sweep is not None else None

    def forget(self, name: str) -> None:
        m = self.members.pop(name, None)
        if m is None:
            return
        self._unrank(name, m)
        if m.error is not None:
            self.errors[m.error] -= 1
        # Heap entries of a forgotten account are dropped lazily by ``oldest_success``.

    def prune_schedules(self, live: Iterable[str]) -> None:
        keep = set(live)
        for gone in set(self.sweeps) - keep:
            del self.sweeps[gone]
            self._heaps.pop(gone, None)

    # -- observations ----------------------------------------------------------------

    def set_ratio(self, name: str, ratio: float | None) -> None:
        m = self.members.get(name)
        if m is None:
            return
        self._unrank(name, m)
        m.ratio = ratio
        self._rank(name, m)

    def set_error(self, name: str, reason: str | None) -> None:
        """The account's current state: in error for ``reason``, or fine (None)."""
        m = self.members.get(name)
        if m is None or m.error == reason:
            return
        if m.error is not None:
            self.errors[m.error] -= 1
        if reason is not None:
            self.errors[reason] += 1
        m.error = reason

    def succeeded(self, name: str, when: float) -> None:
        m = self.members.get(name)
        if m is None:
            return
        m.last_success = when
        self._push(m.schedule, when, name)

    def begin_sweep(self, schedule: str, due: int, now: float) -> None:
        s = self.sweeps.setdefault(schedule, _Sweep())
        s.generation += 1
        s.due, s.done, s.started = due, 0, now

    def not_due(self, schedule: str) -> None:
        """An account of the sweep was skipped (still busy from the last one)."""
        s = self.sweeps.get(schedule)
        if s is not None and s.due > 0:
            s.due -= 1

    def finished(self, name: str) -> None:
        """A run of ``name`` finished (success or error): once per sweep it counts as done."""
        m = self.members.get(name)
        s = self.sweeps.get(m.schedule) if m is not None else None
        if m is None or s is None or s.generation == 0 or m.done_generation == s.generation:
            return
        m.done_generation = s.generation
        s.done = min(s.due, s.done + 1)

    # -- queries ---------------------------------------------------------------------

    def fullest(self, k: int) -> list[str]:
        """The ``k`` accounts of the highest usage ratio (ties by name), fullest first."""
        if k <= 0:
            return []
        candidates: list[str] = []
        for cell in range(_FINE_CELLS, -1, -1):
            members = self._fine.get(cell)
            if members:
                candidates.extend(members)
                if len(candidates) >= k:
                    break
        ratio = self._ratio_of
        return heapq.nsmallest(k, candidates, key=lambda n: (-ratio(n), n))

    def in_error(self, limit: int) -> list[str]:
        """Up to ``limit`` accounts currently in error, by name."""
        if not sum(self.errors.values()):
            return []
        return heapq.nsmallest(limit, (n for n, m in self.members.items()
                                       if m.error is not None))

    def oldest_success(self, schedule: str) -> float | None:
        """The oldest last-success time among the schedule's accounts that ever succeeded."""
        heap = self._heaps.get(schedule)
        while heap:
            when, name = heap[0]
            m = self.members.get(name)
            if m is not None and m.schedule == schedule and m.last_success == when:
                return when
            heapq.heappop(heap)  # superseded by a newer success, moved, or forgotten
        return None

    def families(self, now: float) -> Iterator[Metric]:
        """The fleet series (the same names whatever ``account_metrics`` says)."""
        cumulative, total = [], 0
        for bound, count in zip((*RATIO_BUCKETS, float("inf")), self._coarse, strict=True):
            total += count
            cumulative.append((_le(bound), float(total)))
        yield GaugeHistogramMetricFamily(
            "retention_mailbox_usage_ratio",
            "Accounts by usage ratio (usage / limit) at their last measurement",
            buckets=cumulative, gsum_value=self._sum,
        )
        yield GaugeMetricFamily("retention_accounts_above_warn",
                                "Accounts whose usage ratio is above their warn_above",
                                value=self.above_warn)
        yield GaugeMetricFamily("retention_accounts_above_clean",
                                "Accounts whose usage ratio is at or above their clean_above",
                                value=self.above_clean)
        errs = GaugeMetricFamily("retention_accounts_in_error",
                                 "Accounts whose last run or measurement failed, by reason",
                                 labels=["reason"])
        for reason in REASONS:
            errs.add_metric([reason], self.errors.get(reason, 0))
        yield errs
        due = GaugeMetricFamily("retention_sweep_accounts_due",
                                "Accounts the current sweep of the schedule has to run",
                                labels=["schedule"])
        done = GaugeMetricFamily("retention_sweep_accounts_done",
                                 "Accounts the current sweep of the schedule has finished",
                                 labels=["schedule"])
        started = GaugeMetricFamily("retention_sweep_started_timestamp_seconds",
                                    "When the current sweep of the schedule started",
                                    labels=["schedule"])
        period = GaugeMetricFamily("retention_sweep_period_seconds",
                                   "Seconds between two sweeps of the schedule",
                                   labels=["schedule"])
        oldest = GaugeMetricFamily(
            "retention_oldest_success_age_seconds",
            "Age of the oldest last success among the schedule's accounts (that ever succeeded)",
            labels=["schedule"],
        )
        for schedule, s in sorted(self.sweeps.items()):
            if s.started is not None:
                due.add_metric([schedule], s.due)
                done.add_metric([schedule], s.done)
                started.add_metric([schedule], s.started)
            if s.period is not None:
                period.add_metric([schedule], s.period)
            when = self.oldest_success(schedule)
            if when is not None:
                oldest.add_metric([schedule], max(0.0, now - when))
        yield from (due, done, started, period, oldest)

    # -- internals -------------------------------------------------------------------

    def _ratio_of(self, name: str) -> float:
        m = self.members.get(name)
        return m.ratio if m is not None and m.ratio is not None else 0.0

    def _rank(self, name: str, m: _Member) -> None:
        r = m.ratio
        if r is None:
            return
        self._coarse[bisect.bisect_left(RATIO_BUCKETS, r)] += 1
        self._sum += r
        self._fine.setdefault(_cell(r), set()).add(name)
        self.above_warn += r > m.warn
        self.above_clean += r >= m.clean

    def _unrank(self, name: str, m: _Member) -> None:
        r = m.ratio
        if r is None:
            return
        self._coarse[bisect.bisect_left(RATIO_BUCKETS, r)] -= 1
        self._sum -= r
        cell = self._fine.get(_cell(r))
        if cell is not None:
            cell.discard(name)
        self.above_warn -= r > m.warn
        self.above_clean -= r >= m.clean

    def _push(self, schedule: str, when: float, name: str) -> None:
        heap = self._heaps.setdefault(schedule, [])
        heapq.heappush(heap, (when, name))
        if len(heap) > 2 * len(self.members) + 1024:  # too many superseded entries: rebuild
            self._heaps[schedule] = [(m.last_success, n) for n, m in self.members.items()
                                     if m.schedule == schedule and m.last_success is not None]
            heapq.heapify(self._heaps[schedule])


def _cell(ratio: float) -> int:
    return min(_FINE_CELLS, max(0, int(ratio / _FINE_STEP)))


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
