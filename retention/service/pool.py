"""A bounded worker pool that also bounds connections per mail host, and never runs one
account twice at once.

This module owns *how* account jobs get a thread; the service decides *when* to submit
them. Three limits hold at all times:

* at most ``workers`` jobs run at once (``service.concurrency``);
* at most ``per_host`` of them talk to the same host (``service.max_connections_per_host``),
  so a sweep over an ISP's 10,000 mailboxes never trips the server's per-IP limits;
* a key (an account name) is queued or running at most once: the in-flight set.

Why a pool of its own rather than ``ThreadPoolExecutor`` plus one semaphore per host: a
worker that blocks on a busy host's semaphore holds a pool slot while accounts on idle
hosts wait behind it. Here a worker only takes a job whose host has room, picking hosts
round-robin, so one busy host never starves the others. Picking costs O(workers), not
O(queue), because at most ``workers`` hosts can be saturated at once.

Cleanup outranks measurement: a cleanup submitted while the account's measurement waits
in the queue takes its place; while the measurement runs, the cleanup waits for it
(``DEFERRED``). A measurement for a busy account is dropped, since the running job
measures anyway.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

log = logging.getLogger("retention.service")

Kind = Literal["run", "measure"]


class Submitted(StrEnum):
    QUEUED = "queued"
    REPLACED = "replaced"  # a queued measurement became this cleanup
    DEFERRED = "deferred"  # queued behind the account's running measurement
    BUSY = "busy"  # the account is already queued or running: skipped
    CLOSED = "closed"  # the pool is shutting down: takes no new jobs


@dataclass(slots=True)
class _Job:
    key: str
    host: str
    kind: Kind
    fn: Callable[[], None]


class HostPool:
    """``workers`` threads taking jobs round-robin over hosts with room (see module doc)."""

    def __init__(self, workers: int, per_host: int, *, name: str = "retention-worker",
                 host_limits: Mapping[str, int] | None = None) -> None:
        if workers < 1 or per_host < 1:
            raise ValueError("workers and per_host must be at least 1")
        self.workers = workers
        self.per_host = per_host
        #: Per-host exceptions to ``per_host`` (big providers: ``config.providers``).
        self.host_limits = {h.lower(): n for h, n in (host_limits or {}).items()}
        self._name = name
        self._cond = threading.Condition()
        self._queues: OrderedDict[str, deque[_Job]] = OrderedDict()
        self._queued: dict[str, _Job] = {}
        self._running: dict[str, _Job] = {}
        self._deferred: dict[str, _Job] = {}
        self._active: Counter[str] = Counter()
        self._closed = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        with self._cond:
            if self._threads:
                return
            for i in range(self.workers):
                # Daemon: after shutdown_timeout the process may exit with a job stuck in
                # a network call; the journal makes that safe.
                t = threading.Thread(target=self._work, name=f"{self._name}-{i}", daemon=True)
                self._threads.append(t)
                t.start()

    # -- submitting ------------------------------------------------------------------

    def submit(self, key: str, host: str, kind: Kind, fn: Callable[[], None]) -> Submitted:
        """Queue ``fn`` for ``key`` unless the key is in flight (see module doc)."""
        host = host.lower()
        with self._cond:
            if self._closed:
                return Submitted.CLOSED
            queued = self._queued.get(key)
            running = self._running.get(key)
            if queued is None and running is None:
                self._enqueue(_Job(key, host, kind, fn))
                return Submitted.QUEUED
            if kind == "measure":
                return Submitted.BUSY
            if queued is not None and queued.kind == "measure":
                queued.kind, queued.fn = "run", fn
                return Submitted.REPLACED
            if running is not None and running.kind == "measure" and key not in self._deferred:
                self._deferred[key] = _Job(key, host, kind, fn)
                return Submitted.DEFERRED
            return Submitted.BUSY

    def _enqueue(self, job: _Job) -> None:
        q = self._queues.get(job.host)
        if q is None:
            q = self._queues[job.host] = deque()
        q.append(job)
        self._queued[job.key] = job
        self._cond.notify()

    # -- state -----------------------------------------------------------------------

    def busy(self, key: str) -> bool:
        with self._cond:
            return key in self._queued or key in self._running or key in self._deferred

    def running(self) -> list[str]:
        with self._cond:
            return list(self._running)

    def pending(self) -> int:
        with self._cond:
            return len(self._queued) + len(self._deferred)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued or running; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queued or self._running or self._deferred:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            return True

    # -- shutting down ---------------------------------------------------------------

    def close(self) -> list[str]:
        """Take no new jobs and drop the queued ones; running jobs go on. Returns dropped keys."""
        with self._cond:
            self._closed = True
            dropped = list(self._queued) + [k for k in self._deferred if k not in self._queued]
            self._queues.clear()
            self._queued.clear()
            self._deferred.clear()
            self._cond.notify_all()
        return dropped

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the workers to finish their running jobs; False if one is still running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            t.join(left)
        return not any(t.is_alive() for t in self._threads)

    # -- workers ---------------------------------------------------------------------

    def _pick(self) -> _Job | None:
        """The next job whose host has room; hosts take turns (called with the lock held)."""
        found: str | None = None
        for host in self._queues:
            if self._active[host] < self.host_limits.get(host.lower(), self.per_host):
                found = host
                break
        if found is None:
            return None
        q = self._queues[found]
        job = q.popleft()
        if q:
            self._queues.move_to_end(found)
        else:
            del self._queues[found]
        del self._queued[job.key]
        return job

    def _work(self) -> None:
        while True:
            with self._cond:
                job = self._pick()
                while job is None:
                    if self._closed:
                        return
                    self._cond.wait()
                    job = self._pick()
                self._running[job.key] = job
                self._active[job.host] += 1
            try:
                job.fn()
            except Exception:  # a job must not kill its worker
                log.exception("event=job_failed account=%s kind=%s", job.key, job.kind)
            finally:
                with self._cond:
                    self._active[job.host] -= 1
                    if not self._active[job.host]:
                        del self._active[job.host]
                    del self._running[job.key]
                    follow = self._deferred.pop(job.key, None)
                    if follow is not None and not self._closed:
                        self._enqueue(follow)
                    # Wake workers waiting for this host and anyone in wait_idle.
                    self._cond.notify_all()
