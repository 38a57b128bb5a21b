"""The service's scheduling logic with fake run/measure functions (no mail server).

Sweeps per schedule, no double run, per-host limits, coalescing, reload, graceful stop;
plus the cron translation, the worker pool's rules and the log redaction they rely on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from retention.config.schedule import (
    ScheduleError,
    crontab_weekdays,
    parse_schedule,
    schedule_period,
)
from retention.config.settings import ServiceSettings
from retention.errors import ConfigError
from retention.result import AccountResult
from retention.service.logs import RedactionFilter, account_run_fields, logfmt, redact
from retention.service.pool import HostPool, Submitted
from retention.service.serve import RetentionService, load_policy
from retention.state.observations import Observations

FAST = "* * * * * *"  # every second
NEVER = "0 0 1 1 *"  # once a year: only manual sweeps in most tests


def write_policy(path: Path, accounts: list[tuple[str, str, str]], *, state: Path) -> Path:
    """accounts: (name, host, schedule)."""
    lines = [f"state_dir: {state}", "policies:", "  default:", f"    schedule: '{NEVER}'",
             "accounts:"]
    for name, host, schedule in accounts:
        lines.append(f"  - {{name: {name}, host: {host}, username: u, password_env: RT_PW, "
                     f"policy: default, schedule: '{schedule}'}}")
    path.write_text("\n".join(lines) + "\n")
    return path


class Fake:
    """Records calls; ``hold`` makes runs block until released (or stopped)."""

    def __init__(self, *, run_seconds: float = 0.0, honour_stop: bool = True) -> None:
        self.run_seconds = run_seconds
        self.honour_stop = honour_stop
        self.lock = threading.Lock()
        self.runs: list[tuple[str, float, float]] = []  # (account, start, end)
        self.measures: list[str] = []
        self.active: Counter[str] = Counter()
        self.active_hosts: Counter[str] = Counter()
        self.max_active = 0
        self.max_per_host: Counter[str] = Counter()
        self.release = threading.Event()
        self.overlaps: list[str] = []
        self.started = threading.Event()

    def result(self, name: str, started: datetime, status: str = "ok") -> AccountResult:
        return AccountResult(
            account=name, protocol="imap", run_id="t", dry_run=False, status=status,
            started=started, finished=datetime.now(UTC), usage_bytes=100,
            usage_after_bytes=90, limit_bytes=1000, messages=3,
        )

    def run(self, config, account, *, dry_run, stop=None) -> AccountResult:
        assert dry_run is False
        started = datetime.now(UTC)
        t0 = time.monotonic()
        with self.lock:
            if self.active[account.name]:
                self.overlaps.append(account.name)
            self.active[account.name] += 1
            self.active_hosts[account.host] += 1
            self.max_active = max(self.max_active, sum(self.active.values()))
            self.max_per_host[account.host] = max(self.max_per_host[account.host],
                                                  self.active_hosts[account.host])
        self.started.set()
        try:
            deadline = time.monotonic() + self.run_seconds
            while time.monotonic() < deadline:  # "batches" of 20 ms
                if self.honour_stop and stop is not None and stop.is_set():
                    break
                time.sleep(0.02)
        finally:
            with self.lock:
                self.active[account.name] -= 1
                self.active_hosts[account.host] -= 1
                self.runs.append((account.name, t0, time.monotonic()))
        return self.result(account.name, started)

    def measure(self, config, account) -> AccountResult:
        with self.lock:
            self.measures.append(account.name)
        return self.result(account.name, datetime.now(UTC))


def wait_active(fake: Fake, n: int, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while sum(fake.active.values()) < n:
        assert time.monotonic() < deadline, f"fewer than {n} runs started"
        time.sleep(0.01)


def make_service(tmp_path, accounts, fake, **settings) -> RetentionService:
    policy = write_policy(tmp_path / "policy.yaml", accounts, state=tmp_path / "state")
    defaults = {"jitter": 0, "measure_every": "1h", "concurrency": 4,
                "max_connections_per_host": 2, "shutdown_timeout": 5}
    s = ServiceSettings(**{**defaults, **settings})
    return RetentionService(policy, s, registry=CollectorRegistry(),
                            run_account=fake.run, measure_account=fake.measure)


@pytest.fixture
def svc_factory(tmp_path):
    made: list[RetentionService] = []

    def make(accounts, fake, **settings):
        svc = make_service(tmp_path, accounts, fake, **settings)
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.shutdown(timeout=2)


def metric(svc: RetentionService, name: str, **labels) -> float | None:
    return svc.registry.get_sample_value(name, labels)


# -- grouping and jobs ---------------------------------------------------------------------


def test_one_sweep_job_per_distinct_schedule(tmp_path, svc_factory):
    accounts = [(f"a{i}", "h1", FAST if i % 2 else NEVER) for i in range(10)]
    svc = svc_factory(accounts, Fake())
    assert set(svc.loaded.groups) == {FAST, NEVER}
    assert [a.name for a in svc.loaded.groups[FAST]] == ["a1", "a3", "a5", "a7", "a9"]
    svc.start(http=False)
    jobs = {j.id: j for j in svc._scheduler.get_jobs()}
    assert set(jobs) == {f"sweep:{FAST}", f"sweep:{NEVER}", "measure"}
    for job in jobs.values():
        assert job.coalesce is True and job.max_instances == 1
        assert job.misfire_grace_time >= 1
    assert jobs[f"sweep:{NEVER}"].misfire_grace_time == 12 * 3600
    assert metric(svc, "retention_schedule_period_seconds", account="a1") == 1.0


def test_invalid_schedule_is_a_config_error(tmp_path):
    policy = write_policy(tmp_path / "p.yaml", [("a", "h", "61 * * * *")], state=tmp_path)
    with pytest.raises(ConfigError, match=r"accounts\.0\.schedule"):
        load_policy(policy)


def test_sweep_runs_every_account_of_its_schedule(svc_factory):
    fake = Fake()
    svc = svc_factory([("a", "h1", NEVER), ("b", "h2", NEVER), ("c", "h1", FAST)], fake)
    svc.start(http=False)
    svc.sweep(NEVER)
    assert svc.pool.wait_idle(5)
    assert sorted(name for name, _, _ in fake.runs if name != "c") == ["a", "b"]
    assert metric(svc, "retention_mailbox_usage_bytes", account="a") == 90  # after cleanup
    assert metric(svc, "retention_last_success_timestamp_seconds", account="b") is not None


def test_account_in_flight_is_skipped_and_reported(svc_factory, caplog):
    fake = Fake(run_seconds=30)
    svc = svc_factory([("a", "h1", NEVER), ("b", "h1", NEVER)], fake, shutdown_timeout=2)
    svc.start(http=False)
    svc.sweep(NEVER)
    wait_active(fake, 2)
    with caplog.at_level(logging.INFO, logger="retention.runs"):
        svc.sweep(NEVER)
    assert metric(svc, "retention_runs_skipped_total", account="a", reason="busy") == 1
    assert metric(svc, "retention_runs_skipped_total", account="b", reason="busy") == 1
    assert "event=account_skipped account=a reason=in_flight" in caplog.text
    assert svc.shutdown(timeout=5) == 0  # the fakes honour the stop event
    assert Counter(n for n, _, _ in fake.runs) == {"a": 1, "b": 1}
    assert fake.overlaps == []


def test_real_ticks_coalesce_and_never_overlap(svc_factory):
    fake = Fake(run_seconds=1.3)
    svc = svc_factory([("a", "h1", FAST)], fake)
    svc.start(http=False)
    time.sleep(2.6)
    assert svc.shutdown(timeout=5) == 0
    assert fake.overlaps == []
    assert 1 <= len(fake.runs) <= 2
    assert (metric(svc, "retention_runs_skipped_total", account="a", reason="busy") or 0) >= 1
    runs = sorted(fake.runs, key=lambda r: r[1])
    for (_, _, end), (_, start, _) in zip(runs, runs[1:], strict=False):
        assert start >= end


def test_concurrency_and_per_host_limits(svc_factory):
    fake = Fake(run_seconds=0.25)
    accounts = [(f"a{i}", "busy.example", NEVER) for i in range(6)]
    accounts += [(f"b{i}", "idle.example", NEVER) for i in range(2)]
    accounts += [(f"c{i}", "other.example", NEVER) for i in range(2)]
    svc = svc_factory(accounts, fake, concurrency=4, max_connections_per_host=2)
    svc.start(http=False)
    svc.sweep(NEVER)
    assert svc.pool.wait_idle(10)
    assert len(fake.runs) == 10
    assert fake.max_active <= 4
    assert max(fake.max_per_host.values()) <= 2
    assert fake.max_per_host["busy.example"] == 2
    # No head-of-line blocking: the idle hosts did not wait for the busy host's queue.
    first_b = min(s for n, s, _ in fake.runs if n.startswith("b"))
    last_a_start = max(s for n, s, _ in fake.runs if n.startswith("a"))
    assert first_b < last_a_start


def test_measurement_job_runs_first_and_sets_ready(svc_factory):
    fake = Fake()
    svc = svc_factory([("a", "h1", NEVER), ("b", "h2", NEVER)], fake)
    assert not svc.ready()
    svc.start(http=False)
    deadline = time.monotonic() + 5
    while len(fake.measures) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sorted(fake.measures) == ["a", "b"]
    assert svc.ready() and svc.healthy()
    assert metric(svc, "retention_mailbox_limit_bytes", account="a") == 1000
    assert fake.runs == []  # measuring never cleans


def test_graceful_stop_lets_running_accounts_finish(svc_factory):
    fake = Fake(run_seconds=30)
    svc = svc_factory([(f"a{i}", "h", NEVER) for i in range(5)], fake,
                      concurrency=2, max_connections_per_host=2)
    svc.start(http=False)
    svc.sweep(NEVER)
    wait_active(fake, 2)
    t0 = time.monotonic()
    assert svc.shutdown(timeout=5) == 0
    assert time.monotonic() - t0 < 2
    assert len(fake.runs) == 2  # the three queued accounts never started
    assert not svc.healthy() and not svc.ready()
    assert svc.pool.submit("x", "h", "run", lambda: None) is Submitted.CLOSED


def test_shutdown_timeout_exits_1(svc_factory):
    fake = Fake(run_seconds=1, honour_stop=False)
    svc = svc_factory([("a", "h", NEVER)], fake)
    svc.start(http=False)
    svc.sweep(NEVER)
    assert fake.started.wait(5)
    assert svc.shutdown(timeout=0.3) == 1


def test_run_forever_serves_requests(svc_factory):
    svc = svc_factory([("a", "h", NEVER)], Fake())
    svc.start(http=False)
    codes: list[int] = []
    t = threading.Thread(target=lambda: codes.append(svc.run_forever()))
    t.start()
    svc.request("reload")
    svc.request("stop")
    t.join(10)
    assert codes == [0]
    svc.request("stop")  # after shutdown: harmless


def test_reload_applies_a_valid_file_and_keeps_the_old_on_error(tmp_path, svc_factory, caplog):
    fake = Fake()
    svc = svc_factory([("a", "h", NEVER)], fake)
    svc.start(http=False)
    write_policy(svc.config_path, [("a", "h", NEVER), ("b", "h", FAST)], state=tmp_path / "s")
    assert svc.reload() is True
    assert {j.id for j in svc._scheduler.get_jobs()} == {f"sweep:{NEVER}", f"sweep:{FAST}",
                                                          "measure"}
    assert metric(svc, "retention_config_last_reload_successful") == 1
    assert metric(svc, "retention_schedule_period_seconds", account="b") == 1.0
    svc.config_path.write_text("policies: [broken\n")
    with caplog.at_level(logging.ERROR, logger="retention.service"):
        assert svc.reload() is False
    assert "event=reload_failed" in caplog.text
    assert metric(svc, "retention_config_last_reload_successful") == 0
    assert [a.name for a in svc.loaded.config.accounts] == ["a", "b"]
    write_policy(svc.config_path, [("b", "h", FAST)], state=tmp_path / "s")
    assert svc.reload() is True
    assert {j.id for j in svc._scheduler.get_jobs()} == {f"sweep:{FAST}", "measure"}
    assert metric(svc, "retention_schedule_period_seconds", account="a") is None


def test_forecast_from_the_ledger(tmp_path, svc_factory):
    fake = Fake()
    svc = svc_factory([("a", "h", NEVER)], fake)
    now = datetime.now(UTC)
    ledger = Observations.open(svc.loaded.config.state_dir / "observations.sqlite3")
    for days, usage in ((3, 400), (2, 500), (1, 600)):
        ledger.record_usage("a", now - timedelta(days=days), usage, 1000)
    ledger.close()
    svc._measure_one(svc.loaded.config, svc.loaded.config.accounts[0])
    # 100 bytes a day, fitted 700 now: 3 days to 1000.
    full = metric(svc, "retention_mailbox_full_seconds", account="a")
    assert full == pytest.approx(3 * 86400, rel=1e-4)


def test_account_run_log_line(svc_factory, caplog):
    svc = svc_factory([("a", "h", NEVER)], Fake())
    with caplog.at_level(logging.INFO, logger="retention.runs"):
        svc._run_one(svc.loaded.config, svc.loaded.config.accounts[0])
    line = next(r.getMessage() for r in caplog.records if "event=account_run" in r.getMessage())
    for part in ("account=a", "outcome=ok", "actions=0", "freed_bytes=0", "duration="):
        assert part in line


# -- the worker pool -------------------------------------------------------------------------


def test_pool_cleanup_outranks_measurement():
    pool = HostPool(1, 1)
    gate, running = threading.Event(), threading.Event()
    order: list[str] = []
    assert pool.submit("x", "h", "measure",
                       lambda: (running.set(), gate.wait(5), order.append("m-x"))) \
        is Submitted.QUEUED
    assert pool.submit("y", "h", "measure", lambda: order.append("m-y")) is Submitted.QUEUED
    assert pool.submit("y", "h", "run", lambda: order.append("r-y")) is Submitted.REPLACED
    assert pool.submit("y", "h", "measure", lambda: None) is Submitted.BUSY
    pool.start()
    assert running.wait(5)  # x's measurement is now running
    assert pool.submit("x", "h", "run", lambda: order.append("r-x")) is Submitted.DEFERRED
    assert pool.submit("x", "h", "run", lambda: None) is Submitted.BUSY
    gate.set()
    assert pool.wait_idle(5)
    assert order == ["m-x", "r-y", "r-x"]
    pool.close()
    assert pool.join(2)


def test_pool_close_drops_queued_jobs():
    pool = HostPool(1, 1)
    ran: list[str] = []
    for key in "abc":
        pool.submit(key, "h", "run", lambda k=key: ran.append(k))
    assert sorted(pool.close()) == ["a", "b", "c"]
    pool.start()
    assert pool.join(2) and ran == []


def test_pool_survives_a_failing_job():
    pool = HostPool(1, 1)
    pool.start()
    pool.submit("a", "h", "run", lambda: 1 / 0)
    ok: list[bool] = []
    pool.submit("b", "h", "run", lambda: ok.append(True))
    assert pool.wait_idle(5) and ok == [True]
    pool.close()


# -- cron ------------------------------------------------------------------------------------


@pytest.mark.parametrize("field,names", [
    ("*", "*"), ("0", "sun"), ("7", "sun"), ("1-5", "mon,tue,wed,thu,fri"),
    ("5-7", "sun,fri,sat"), ("*/2", "sun,tue,thu,sat"), ("sat,sun", "sun,sat"),
    ("1/3", "mon,thu"),
])
def test_crontab_weekdays_count_from_sunday(field, names):
    assert crontab_weekdays(field) == names


def test_five_and_six_field_schedules():
    monday = datetime(2024, 6, 3, 0, 0, tzinfo=UTC)  # a Monday
    t = parse_schedule("30 3 * * 1", timezone=UTC)
    assert t.get_next_fire_time(None, monday) == datetime(2024, 6, 3, 3, 30, tzinfo=UTC)
    t = parse_schedule("0 3 * * 0", timezone=UTC)  # crontab 0 = Sunday
    assert t.get_next_fire_time(None, monday) == datetime(2024, 6, 9, 3, 0, tzinfo=UTC)
    t = parse_schedule("*/2 * * * * *", timezone=UTC)
    assert t.get_next_fire_time(None, monday + timedelta(seconds=1)) == \
        monday + timedelta(seconds=2)
    assert schedule_period("0 3 * * *", now=monday, timezone=UTC) == 86400
    assert schedule_period("*/15 * * * *", now=monday, timezone=UTC) == 900
    assert schedule_period("*/2 * * * * *", now=monday, timezone=UTC) == 2
    for bad in ("", "* * * *", "* * * * * * *", "61 * * * *", "0 3 * * 9", "0 0 * * 3-1"):
        with pytest.raises(ScheduleError):
            parse_schedule(bad)


def test_default_schedule_parses():
    """``config.load`` skips parsing the default schedule (start-up time): it must parse."""
    from retention.config.schema import Policy

    default = Policy.model_fields["schedule"].default
    t = parse_schedule(default, timezone=UTC)
    assert t.get_next_fire_time(None, datetime(2024, 6, 3, tzinfo=UTC)) == \
        datetime(2024, 6, 3, 3, 0, tzinfo=UTC)


# -- logs ------------------------------------------------------------------------------------


def test_redaction_of_known_secrets_and_patterns():
    assert redact("login failed for s3cretPW!", {"s3cretPW!"}) == "login failed for ***"
    assert redact("password=hunter22 next") == "password=*** next"
    assert redact('a LOGIN "bob" "pw pw" b') == 'a LOGIN "bob" *** b'
    assert redact("C: PASS topsecret") == "C: PASS ***"
    assert redact("AUTHENTICATE PLAIN AGJvYgBwdw==") == "AUTHENTICATE PLAIN ***"
    assert redact("password_env RT_PW is not set") == "password_env RT_PW is not set"


def test_redaction_filter_scrubs_args_fields_and_tracebacks():
    f = RedactionFilter({"topsecret"})
    try:
        raise RuntimeError("server said topsecret")
    except RuntimeError:
        import sys
        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "got %s", ("topsecret",),
                                sys.exc_info())
    rec.fields = {"error": "topsecret!"}
    assert f.filter(rec)
    assert rec.getMessage() == "got ***"
    assert rec.fields == {"error": "***!"}
    assert "topsecret" not in (rec.exc_text or "") and "***" in (rec.exc_text or "")


def test_logfmt_quotes_when_needed():
    assert logfmt({"a": 1, "b": "x y", "c": None, "d": 'q"', "e": 0.5}) == \
        'a=1 b="x y" d="q\\"" e=0.500'


def test_account_run_fields_have_no_secret_fields():
    started = datetime.now(UTC)
    r = AccountResult(account="a", protocol="imap", run_id="r", dry_run=False, status="error",
                      started=started, finished=started, error="auth failed",
                      error_kind="auth")
    fields = account_run_fields(r, "run")
    assert fields["outcome"] == "error" and fields["error_kind"] == "auth"
    assert not any("pass" in k for k in fields)


# -- serve() ---------------------------------------------------------------------------------


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    filters = {h: list(h.filters) for h in handlers}
    yield
    root.setLevel(level)
    for h in root.handlers[:]:
        if h not in handlers:
            root.removeHandler(h)
    for h, fs in filters.items():
        h.filters[:] = fs


def test_serve_stops_cleanly_and_restores_signal_handlers(tmp_path, monkeypatch,
                                                          restore_logging):
    import signal
    import urllib.request

    from retention.service.serve import serve

    # An unreachable account: the start-up measurement fails fast (connection refused).
    policy = write_policy(tmp_path / "p.yaml", [("a", "127.0.0.1", NEVER)], state=tmp_path)
    policy.write_text(policy.read_text().replace("policy: default", "policy: default, port: 1"))
    monkeypatch.setenv("RT_PW", "pw-not-used")
    monkeypatch.setenv("RETENTION_METRICS_PORT_FILE", str(tmp_path / "port"))
    monkeypatch.setenv("RETENTION_SECRETS_DIR", str(tmp_path / "none"))
    before = signal.getsignal(signal.SIGTERM)
    seen: dict[str, object] = {}

    def started(svc: RetentionService) -> None:
        seen["port"] = svc.port
        with urllib.request.urlopen(f"http://127.0.0.1:{svc.port}/healthz", timeout=5) as r:
            seen["healthz"] = r.status
        svc.request("stop")

    code = serve(policy, metrics_port=0, metrics_address="127.0.0.1",
                 overrides={"jitter": 0}, on_started=started)
    assert code == 0
    assert seen["healthz"] == 200
    assert int((tmp_path / "port").read_text()) == seen["port"]
    assert signal.getsignal(signal.SIGTERM) == before


def test_serve_config_errors(tmp_path, monkeypatch, restore_logging):
    import socket

    from retention.service.serve import serve

    monkeypatch.delenv("RETENTION_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="RETENTION_CONFIG"):
        serve(None)
    policy = write_policy(tmp_path / "p.yaml", [("a", "h", NEVER)], state=tmp_path)
    with pytest.raises(ConfigError, match="metrics_port"):
        serve(policy, overrides={"metrics_port": 70000})
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match="cannot listen"):
            serve(policy, metrics_port=port, metrics_address="127.0.0.1")
