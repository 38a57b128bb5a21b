"""``--jobs``: results in account order, the job and per-host limits, the progress line."""

from __future__ import annotations

import io
import threading
import time
from collections import Counter

import pytest

from retention.config.schema import Account
from retention.service.batch import Progress, run_ordered


def accounts(n: int, hosts: int = 3) -> list[Account]:
    return [Account(name=f"a{i}", host=f"h{i % hosts}", username="u", password_env="P",
                    policy="p") for i in range(n)]


def test_results_come_in_account_order_within_both_limits() -> None:
    lock = threading.Lock()
    active: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    total_peak = [0]

    def work(a: Account) -> str:
        with lock:
            active[a.host] += 1
            peak[a.host] = max(peak[a.host], active[a.host])
            total_peak[0] = max(total_peak[0], sum(active.values()))
        # Later accounts finish first: the order must come from the caller, not the clock.
        time.sleep(0.001 * (50 - int(a.name[1:]) % 50))
        with lock:
            active[a.host] -= 1
        return a.name

    out = list(run_ordered(accounts(120), work, jobs=5, per_host=2))
    assert out == [f"a{i}" for i in range(120)]
    assert total_peak[0] <= 5 and max(peak.values()) <= 2


def test_an_unexpected_exception_reaches_the_caller() -> None:
    def work(a: Account) -> str:
        if a.name == "a7":
            raise RuntimeError("bug")
        return a.name

    with pytest.raises(RuntimeError, match="bug"):
        list(run_ordered(accounts(20), work, jobs=4, per_host=4))


def test_jobs_1_is_a_plain_loop_in_this_thread() -> None:
    seen: list[str] = []
    out = list(run_ordered(accounts(5), lambda a: seen.append(threading.current_thread().name)
                           or a.name, jobs=1, per_host=1))
    assert out == [f"a{i}" for i in range(5)]
    assert set(seen) == {threading.current_thread().name}


def test_progress_only_on_a_terminal() -> None:
    quiet = io.StringIO()
    p = Progress(3, quiet)  # StringIO is not a terminal
    for err in (False, True, False):
        p.update(err)
    p.finish()
    assert quiet.getvalue() == "" and (p.done, p.errors) == (3, 1)

    clock = iter(float(t) for t in range(100))
    shown = io.StringIO()
    p = Progress(4, shown, enabled=True, clock=lambda: next(clock))
    p.update(False)
    p.update(True)
    p.finish()
    text = shown.getvalue()
    assert "\r1/4 accounts, 0 errors, ETA 3s" in text
    assert "\r2/4 accounts, 1 errors, ETA 2s" in text and text.endswith("\n")
