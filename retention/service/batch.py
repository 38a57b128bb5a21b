"""Concurrent one-shot passes for the CLI (``run --jobs N``, ``usage --jobs N``).

This module owns running one function over many accounts at once while keeping what
the CLI promises: results come back **in account order** (streamed: the first account's
line is printed as soon as it is done, not after the last), at most ``jobs`` accounts run
at once and at most ``per_host`` of them on one host (the service's ``HostPool``), and
only a bounded window of accounts is queued ahead, so a million accounts never sit in
the queue as a million closures. A progress line (done/total, errors, ETA) goes to a
terminal on stderr, and nowhere when stderr is not a terminal.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Generic, TextIO, TypeVar

from retention.config.schema import Account
from retention.service.pool import HostPool, Submitted

R = TypeVar("R")
WINDOW_PER_JOB = 8  # accounts queued ahead per worker


def _eta(seconds: float) -> str:
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Progress:
    """``done/total, errors, ETA`` on one rewritten line of a terminal (else silent)."""

    def __init__(self, total: int, stream: TextIO | None = None, *,
                 enabled: bool | None = None, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total = total
        self.done = self.errors = 0
        self._clock = clock
        self._start = clock()
        self._last = 0.0
        self._shown = False

    def update(self, error: bool) -> None:
        self.done += 1
        self.errors += int(error)
        if not self.enabled:
            return
        now = self._clock()
        if now - self._last < 0.2 and self.done < self.total:
            return  # a terminal needs no more than five redraws a second
        self._last = now
        rate = self.done / max(now - self._start, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        self.stream.write(f"\r{self.done}/{self.total} accounts, {self.errors} errors, "
                          f"ETA {_eta(left)}   ")
        self.stream.flush()
        self._shown = True

    def finish(self) -> None:
        if self.enabled and self._shown:
            self.stream.write("\n")
            self.stream.flush()


class _Slots(Generic[R]):
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.done: dict[int, R] = {}
        self.failed: BaseException | None = None


def run_ordered(
    accounts: Iterable[Account],
    fn: Callable[[Account], R],
    *,
    jobs: int,
    per_host: int,
    host_limits: Mapping[str, int] | None = None,
    progress: Progress | None = None,
    is_error: Callable[[R], bool] = lambda r: False,
) -> Iterator[R]:
    """``fn(account)`` for each account, ``jobs`` at once; yields results in order.

    ``fn`` must not raise for an account-level failure (``run_account`` and
    ``measure_account`` return an error result instead); if it raises anyway, the
    exception is re-raised here after the running accounts finish.
    """
    if jobs <= 1:
        for account in accounts:
            result = fn(account)
            if progress is not None:
                progress.update(is_error(result))
            yield result
        return
    slots: _Slots[R] = _Slots()
    pool = HostPool(jobs, per_host, name="retention-job", host_limits=host_limits)
    pool.start()
    window = jobs * WINDOW_PER_JOB

    def job(i: int, account: Account) -> Callable[[], None]:
        def work() -> None:
            try:
                result = fn(account)
            except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                with slots.cond:
                    slots.failed = slots.failed or e
                    slots.cond.notify_all()
                return
            with slots.cond:
                slots.done[i] = result
                slots.cond.notify_all()
        return work

    source = iter(enumerate(accounts))
    submitted = yielded = 0
    exhausted = False
    try:
        while True:
            while not exhausted and submitted - yielded < window:
                item = next(source, None)
                if item is None:
                    exhausted = True
                    break
                i, account = item
                # Names are unique, so the pool never answers BUSY here.
                outcome = pool.submit(f"{i}:{account.name}", account.host, "run",
                                      job(i, account))
                if outcome is Submitted.CLOSED:
                    raise RuntimeError("the job pool closed unexpectedly")
                submitted += 1
            if exhausted and yielded == submitted:
                return
            with slots.cond:
                while yielded not in slots.done and slots.failed is None:
                    slots.cond.wait()
                if slots.failed is not None:
                    raise slots.failed
                result = slots.done.pop(yielded)
            yielded += 1
            if progress is not None:
                progress.update(is_error(result))
            yield result
    finally:
        pool.close()
        pool.join(None)
