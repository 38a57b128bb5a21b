"""The observation store: first sightings (POP3 age, IMAP saved clock) and usage samples."""

from __future__ import annotations

import os
import stat
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from retention.errors import JournalError
from retention.state.observations import Observations, ObservationsError

T0 = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def path(tmp_path):
    return tmp_path / "state" / "observations.sqlite3"


def test_records_now_for_new_keys_and_keeps_the_first_time(path):
    with Observations.open(path) as led:
        first = led.first_seen("alice", "INBOX", 0, ["a", "b"], T0)
        assert first == {"a": T0, "b": T0}
        later = T0 + timedelta(days=3)
        again = led.first_seen("alice", "INBOX", 0, ["b", "c"], later)
        assert again == {"b": T0, "c": later}
        assert all(v.tzinfo is not None for v in again.values())


def test_survives_reopen(path):
    with Observations.open(path) as led:
        led.first_seen("alice", "INBOX", 0, ["a"], T0)
    with Observations.open(path) as led:
        assert led.first_seen("alice", "INBOX", 0, ["a"], T0 + timedelta(days=40)) == {"a": T0}


def test_keys_are_scoped_by_account_folder_and_uidvalidity(path):
    with Observations.open(path) as led:
        led.first_seen("alice", "INBOX", 0, ["1"], T0)
        t1 = T0 + timedelta(hours=1)
        assert led.first_seen("bob", "INBOX", 0, ["1"], t1) == {"1": t1}
        assert led.first_seen("alice", "Trash", 7, ["1"], t1) == {"1": t1}
        assert led.first_seen("alice", "Trash", 8, ["1"], t1 + timedelta(1)) == {
            "1": t1 + timedelta(1)
        }


def test_prune_forgets_vanished_keys_and_old_uidvalidity(path):
    with Observations.open(path) as led:
        led.first_seen("alice", "Trash", 7, ["1", "2", "3"], T0)
        led.first_seen("alice", "Trash", 6, ["1", "9"], T0)
        led.first_seen("alice", "INBOX", 7, ["1"], T0)
        removed = led.prune("alice", "Trash", 7, ["2"])
        assert removed == 4  # keys 1 and 3, and both rows of UIDVALIDITY 6
        later = T0 + timedelta(days=1)
        seen = led.first_seen("alice", "Trash", 7, ["1", "2"], later)
        assert seen == {"1": later, "2": T0}  # 1 came back: a new sighting
        assert led.first_seen("alice", "INBOX", 7, ["1"], later) == {"1": T0}  # untouched


def test_prune_folders(path):
    with Observations.open(path) as led:
        led.first_seen("alice", "Old", 1, ["1"], T0)
        led.first_seen("alice", "Trash", 1, ["1"], T0)
        assert led.prune_folders("alice", ["Trash", "INBOX"]) == 1
        later = T0 + timedelta(days=1)
        assert led.first_seen("alice", "Old", 1, ["1"], later) == {"1": later}
        assert led.first_seen("alice", "Trash", 1, ["1"], later) == {"1": T0}


def test_naive_datetimes_are_refused(path):
    with Observations.open(path) as led, pytest.raises(ValueError):
        led.first_seen("alice", "INBOX", 0, ["a"], datetime(2026, 1, 1))  # noqa: DTZ001


def test_fifty_thousand_keys_are_fast(path):
    keys = [f"{i:08X}6b0b78b3" for i in range(50_000)]
    with Observations.open(path) as led:
        started = time.perf_counter()
        seen = led.first_seen("alice", "INBOX", 0, keys, T0)
        first = time.perf_counter() - started
        started = time.perf_counter()
        led.first_seen("alice", "INBOX", 0, keys, T0 + timedelta(days=1))
        led.prune("alice", "INBOX", 0, keys[:25_000])
        second = time.perf_counter() - started
    assert len(seen) == 50_000
    assert first < 5 and second < 5, (first, second)


def test_file_is_private_and_in_wal_mode(path):
    Observations.open(path).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    import sqlite3

    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


def test_unusable_file_is_a_journal_error(tmp_path):
    bad = tmp_path / "observations.sqlite3"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ObservationsError) as info:
        Observations.open(bad)
    assert isinstance(info.value, JournalError)
    assert str(bad) in str(info.value)


def test_usage_samples_keep_thirty_days(path):
    with Observations.open(path) as led:
        for day in range(40):
            led.record_usage("alice", T0 + timedelta(days=day), 1000 + day, 5000 if day else None)
        led.record_usage("bob", T0, 1, None)
        samples = led.usage_samples("alice", T0)
        end = T0 + timedelta(days=39)
        assert samples[0][0] == end - timedelta(days=30)
        assert samples[-1] == (end, 1039, 5000)
        assert len(samples) == 31
        assert [s[0] for s in samples] == sorted(s[0] for s in samples)
        assert led.usage_samples("alice", end) == [(end, 1039, 5000)]
        assert led.usage_samples("bob", T0) == [(T0, 1, None)]


def test_shared_between_threads(path):
    with Observations.open(path) as led:
        errors: list[BaseException] = []

        def work(account: str) -> None:
            try:
                for i in range(20):
                    led.first_seen(account, "INBOX", 0, [str(i)], T0)
                    led.record_usage(account, T0 + timedelta(seconds=i), i, None)
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=work, args=(f"u{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert len(led.usage_samples("u3", T0)) == 20


def test_two_ledgers_on_one_file(path):
    """Two agents (a timer's run and a serve) share the file through SQLite's locking."""
    with Observations.open(path) as a, Observations.open(path) as b:
        a.first_seen("alice", "INBOX", 0, ["x"], T0)
        assert b.first_seen("alice", "INBOX", 0, ["x"], T0 + timedelta(1)) == {"x": T0}


def test_first_seen_times_belong_to_a_mailbox(tmp_path):
    """Review F4: a repointed entry never inherits another mailbox's first-seen ages."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with Observations.open(tmp_path / "o.sqlite3") as obs:
        assert obs.first_seen("a", "INBOX", 1, ["k1"], t0) == {"k1": t0}  # before binding
        assert obs.bind_mailbox("a", "pop3://u1@h:995") is False  # claimed, kept
        later = t0 + timedelta(days=30)
        assert obs.first_seen("a", "INBOX", 1, ["k1"], later) == {"k1": t0}
        assert obs.bind_mailbox("a", "pop3://u1@h:995") is False
        assert obs.bind_mailbox("a", "pop3://u2@h:995") is True  # repointed: forgotten
        assert obs.first_seen("a", "INBOX", 1, ["k1"], later) == {"k1": later}
