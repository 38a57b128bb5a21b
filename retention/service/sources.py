"""The service's view of its sources: last good lists, refresh outcomes, their metrics.

This module owns what ``serve`` remembers about each source between reads: the last
list that was read successfully (kept, and used, when a later read fails: an LDAP
server down for maintenance must not make a fleet vanish from the schedule), and the
outcome of each read, exported as

* ``retention_source_up{source}`` 1 if the last read succeeded, else 0;
* ``retention_source_accounts{source}`` the accounts in use from the source;
* ``retention_source_last_success_timestamp_seconds{source}``;
* ``retention_source_refresh_failures_total{source}``.

Failures are logged as ``event=source_failed source=NAME kept=N error=...`` (the error
names the source and what failed, never a secret).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from retention.errors import SourceError
from retention.sources.model import SourceAccounts

log = logging.getLogger("retention.service")


class SourceWatch(Collector):
    """Last good list and status per source (thread-safe; a Prometheus collector)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.last_good: dict[str, SourceAccounts] = {}
        self.up: dict[str, bool] = {}
        self.last_success: dict[str, float] = {}
        self.failures: dict[str, int] = {}
        self._registered = False

    def register(self, registry: CollectorRegistry) -> None:
        if not self._registered:
            registry.register(self)
            self._registered = True

    def succeeded(self, lists: Iterable[SourceAccounts]) -> None:
        now = time.time()
        with self._lock:
            for s in lists:
                if self.up.get(s.source) is False:
                    log.info("event=source_recovered source=%s accounts=%d", s.source, len(s))
                self.last_good[s.source] = s
                self.up[s.source] = True
                self.last_success[s.source] = now
                self.failures.setdefault(s.source, 0)

    def failed(self, error: SourceError) -> None:
        with self._lock:
            name = error.source
            self.up[name] = False
            self.failures[name] = self.failures.get(name, 0) + 1
            kept = self.last_good.get(name)
        log.error("event=source_failed source=%s kept=%s error=%r", name,
                  len(kept) if kept is not None else "none", error.message)

    def forget_except(self, names: Iterable[str]) -> None:
        """Drop sources no longer in the policy file."""
        keep = set(names)
        with self._lock:
            for d in (self.last_good, self.up, self.last_success, self.failures):
                for gone in set(d) - keep:
                    del d[gone]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            up = GaugeMetricFamily("retention_source_up",
                                   "1 if the last read of the source succeeded",
                                   labels=["source"])
            count = GaugeMetricFamily("retention_source_accounts",
                                      "Accounts in use from the source", labels=["source"])
            last = GaugeMetricFamily("retention_source_last_success_timestamp_seconds",
                                     "When the source was last read successfully",
                                     labels=["source"])
            fails = CounterMetricFamily("retention_source_refresh_failures",
                                        "Reads of the source that failed", labels=["source"])
            for name in sorted(self.up):
                up.add_metric([name], 1.0 if self.up[name] else 0.0)
                good = self.last_good.get(name)
                count.add_metric([name], float(len(good)) if good is not None else 0.0)
                if name in self.last_success:
                    last.add_metric([name], self.last_success[name])
                fails.add_metric([name], float(self.failures.get(name, 0)))
        yield from (up, count, last, fails)
