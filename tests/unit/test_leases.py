"""Per-account leases on SQLite: exclusion, expiry, fencing, once_within, renewal."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from retention.config.schema import Config
from retention.errors import AccountLocked
from retention.run.lease import account_lease
from retention.state.leases import Lease, LeaseStore, Refused, held, redacted_url


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> LeaseStore:
    s = LeaseStore.open(tmp_path, clock=clock)
    yield s
    s.close()


def test_one_holder_until_expiry_then_a_new_token(store: LeaseStore, clock: Clock) -> None:
    a = store.acquire("box", "A", ttl=60)
    assert isinstance(a, Lease) and a.token == 1
    refused = store.acquire("box", "B", ttl=60)
    assert refused == Refused("box", "held", "A", clock.t + 60)
    assert isinstance(store.acquire("other", "B", ttl=60), Lease)  # per account
    clock.t += 61
    b = store.acquire("box", "B", ttl=60)
    assert isinstance(b, Lease) and b.token == 2
    # A's lease expired and was taken over: its renewal and release change nothing.
    assert store.renew(a) is None
    assert store.release(a, done=True) is False
    assert store.last_done("box") is None
    assert store.release(b, done=True) is True
    assert store.last_done("box") == clock.t


def test_renew_extends_and_release_frees(store: LeaseStore, clock: Clock) -> None:
    a = store.acquire("box", "A", ttl=60)
    assert isinstance(a, Lease)
    clock.t += 50
    renewed = store.renew(a, ttl=60)
    assert renewed is not None and renewed.expires == clock.t + 60
    clock.t += 50  # past the first expiry, within the renewed one
    assert isinstance(store.acquire("box", "B"), Refused)
    assert store.release(renewed, done=False)
    assert isinstance(store.acquire("box", "B"), Lease)  # free at once, not done


def test_once_within_refuses_a_second_pass(store: LeaseStore, clock: Clock) -> None:
    a = store.acquire("box", "A", once_within=3600)
    assert isinstance(a, Lease)
    store.release(a, done=True)
    clock.t += 1800
    again = store.acquire("box", "B", once_within=3600)
    assert isinstance(again, Refused) and again.reason == "done"
    b = store.acquire("box", "B")  # without once_within: allowed
    assert isinstance(b, Lease)
    store.release(b, done=False)
    clock.t += 3600  # the last *successful* pass is now older than once_within
    assert isinstance(store.acquire("box", "C", once_within=3600), Lease)


def test_failed_pass_is_not_done(store: LeaseStore) -> None:
    with held(store, "box", "A", once_within=3600) as h:
        assert not isinstance(h, Refused)  # h.succeeded stays False
    assert store.last_done("box") is None
    assert isinstance(store.acquire("box", "B", once_within=3600), Lease)


def test_threads_never_hold_one_account_together(tmp_path: Path) -> None:
    """8 workers (each its own store, as separate processes would be) race for 20 boxes."""
    accounts = [f"box{i}" for i in range(20)]
    inside: Counter[str] = Counter()
    overlaps: list[str] = []
    passes: Counter[str] = Counter()
    lock = threading.Lock()

    def worker(n: int) -> None:
        store = LeaseStore.open(tmp_path)
        try:
            for _ in range(3):
                for account in accounts:
                    with held(store, account, f"w{n}", ttl=60, once_within=3600) as h:
                        if isinstance(h, Refused):
                            continue
                        with lock:
                            inside[account] += 1
                            if inside[account] > 1:
                                overlaps.append(account)
                        time.sleep(0.001)
                        with lock:
                            inside[account] -= 1
                            passes[account] += 1
                        h.succeeded = True
        finally:
            store.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not overlaps
    assert passes == Counter({a: 1 for a in accounts})  # once each, whoever won


def test_a_lost_lease_stops_the_pass(tmp_path: Path, clock: Clock) -> None:
    store = LeaseStore.open(tmp_path, clock=clock)
    thief = LeaseStore.open(tmp_path, clock=clock)
    with held(store, "box", "A", ttl=0.15) as h:  # renewed every 0.05 s (real time)
        assert not isinstance(h, Refused)
        clock.t += 1  # A's clock-time lease runs out before its next renewal ...
        assert isinstance(thief.acquire("box", "B", ttl=60), Lease)  # ... and B takes it
        assert h.stop.wait(30), "the renewer never noticed the lease was lost"
        assert h.lost
    assert thief.last_done("box") is None
    store.close()
    thief.close()


def test_outer_stop_is_passed_on(store: LeaseStore) -> None:
    outer = threading.Event()
    with held(store, "box", "A", ttl=60, outer=outer) as h:
        assert not isinstance(h, Refused)
        outer.set()
        assert h.stop.wait(30)
        assert not h.lost


def _config(tmp_path: Path, **extra: object) -> Config:
    return Config.model_validate({
        "state_dir": str(tmp_path), "policies": {"p": {}},
        "accounts": [{"name": "a", "host": "h", "username": "u", "password_env": "P",
                      "policy": "p"}], **extra,
    })


def test_account_lease_refusal_is_account_locked(tmp_path: Path, monkeypatch) -> None:
    import retention.run.lease as lease_module

    config = _config(tmp_path, leases={"once_within": "1h"})
    with account_lease(config, "a", dry_run=False, stop=None, owner="A") as h:
        assert h is None  # no state_url: the flock in state_dir is enough
    # The same logic as with PostgreSQL, on the SQLite store.
    config = config.model_copy(update={"state_url": "sqlite:///unused"})

    @contextlib.contextmanager
    def sqlite_store(config: Config):
        store = LeaseStore.open(tmp_path)
        yield store
        store.close()

    monkeypatch.setattr(lease_module, "lease_store", sqlite_store)
    with account_lease(config, "a", dry_run=False, stop=None, owner="A") as h:
        assert h is not None
        with pytest.raises(AccountLocked, match="holds this account's lease"), \
                account_lease(config, "a", dry_run=False, stop=None, owner="B"):
            pass
        h.succeeded = True
    with pytest.raises(AccountLocked, match="already processed"), \
            account_lease(config, "a", dry_run=False, stop=None, owner="B"):
        pass
    with account_lease(config, "a", dry_run=True, stop=None, owner="B") as h:
        assert h is None  # a dry run takes no lease


def test_urls_are_redacted() -> None:
    assert redacted_url("postgresql://u:s3cret@db:5432/x") == "postgresql://u:***@db:5432/x"
    assert redacted_url("postgresql://u@db/x") == "postgresql://u@db/x"
    assert "s3cret" not in redacted_url("postgresql://u:s3c@ret@db/x")
