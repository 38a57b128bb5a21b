"""The account pass's lease: taken before the pass, renewed during it, given back after.

This module owns how a pass uses ``retention.state.leases``: one ``LeaseStore`` per
process and state location (``state_url`` when set, else ``state_dir``), one owner id per
process, and the translation of a refusal into ``AccountLocked`` (the pass is *skipped*,
not failed: another agent holds the mailbox, or finished it within ``leases.once_within``).
Dry runs take no lease: they change nothing, so two at once are harmless.

A pass takes a lease only with ``state_url``: agents sharing one ``state_dir`` are already
kept apart by its per-account ``flock``, which, unlike a lease, the kernel releases the
moment a process dies, so a run killed mid-pass is recovered by the very next run. With a
shared PostgreSQL, a killed agent's leases block its accounts until they expire
(``leases.ttl``, default 5 minutes); the journal then lets the next pass finish the work.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from retention.config.schema import Config
from retention.errors import AccountLocked
from retention.state.leases import Held, LeaseStore, Refused, default_owner, held

_OWNER = default_owner()
_stores: dict[tuple[Path, str | None], LeaseStore] = {}
_stores_lock = threading.Lock()


@contextmanager
def lease_store(config: Config) -> Iterator[LeaseStore]:
    """The store for the config's state location.

    A PostgreSQL store (its connection pool) is opened once per process and shared; an
    SQLite one is opened for the pass and closed after it, like the journal, so that many
    state_dirs (tests, several policy files) never pile up open files.
    """
    if not config.state_url:
        store = LeaseStore.open(config.state_dir)
        try:
            yield store
        finally:
            store.close()
        return
    key = (config.state_dir, config.state_url)
    with _stores_lock:
        shared = _stores.get(key)
        if shared is None:
            shared = _stores[key] = LeaseStore.open(config.state_dir, config.state_url)
    yield shared


def close_stores() -> None:
    with _stores_lock:
        for store in _stores.values():
            store.close()
        _stores.clear()


@contextmanager
def account_lease(
    config: Config, account: str, *, dry_run: bool, stop: threading.Event | None,
    owner: str | None = None, once: bool = True,
) -> Iterator[Held | None]:
    """Hold the account's lease for the block; None for a dry run.

    ``once=False`` (``retention restore``): taken even when a pass finished within
    ``leases.once_within``, and given back without recording a finished pass.

    Raises:
        AccountLocked: another agent holds the lease, or a pass finished within
            ``leases.once_within``.
        LeaseError: the store cannot be reached (the account fails; nothing is done).
    """
    if dry_run or not config.state_url:
        yield None
        return
    once_within = config.leases.once_within if once else None
    with lease_store(config) as store, held(
        store, account, owner or _OWNER,
        ttl=config.leases.ttl.total_seconds(),
        once_within=once_within.total_seconds() if once_within else None, outer=stop,
    ) as got:
        if isinstance(got, Refused):
            raise AccountLocked(_why(got), "recent" if got.reason == "done" else "locked")
        yield got


def _why(refused: Refused) -> str:
    ago = max(0, int(time.time() - refused.until))
    if refused.reason == "done":
        return f"already processed by another agent {ago} s ago (leases.once_within)"
    left = max(0, int(refused.until - time.time()))
    return f"another agent ({refused.owner}) holds this account's lease ({left} s left)"
