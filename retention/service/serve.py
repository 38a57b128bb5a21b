"""``retention serve``: the scheduler, the worker pool, signals, and the serve loop.

This module owns *when* accounts run; ``runner`` owns what one run does and ``metrics``
what is exported. The shape, chosen so that 10,000 accounts cost a handful of jobs:

* one APScheduler **sweep job per distinct schedule** (not per account), with jitter,
  ``coalesce=True`` (missed ticks run once, never as a burst), ``max_instances=1`` and a
  misfire grace of half the period (at most 12 h), so a laptop that slept through 03:00
  still cleans up once on waking;
* a sweep only *submits* its accounts to a ``HostPool`` (``concurrency`` workers, at most
  ``max_connections_per_host`` per host). An account still in flight from an earlier
  tick is skipped, logged and counted (``retention_runs_skipped_total``): it never runs
  twice at once;
* one lighter **measurement job** every ``measure_every`` (first at start-up) keeps usage
  and the forecast fresh without cleaning;
* ``SIGHUP`` reloads the policy file: validated first (schema and every schedule); if
  invalid the old policy stays, the problems are logged and
  ``retention_config_last_reload_successful`` drops to 0. Service settings (port, pool sizes)
  need a restart; a reload says so when they changed;
* ``SIGTERM``/``SIGINT``: no new ticks, queued accounts dropped, the ``stop`` event tells
  running accounts to stop at their next batch boundary; exit 0 when they all finished
  within ``shutdown_timeout``, else 1 (the journal is left for the next run to recover).
  A second signal gives up waiting at once (exit 1).

Signal handlers only append to a list and write one byte to a self-pipe; the main thread
does the work. Locks are never taken in a handler. The kernel may deliver a process signal
to *any* thread (a worker, the scheduler); CPython then runs the Python handler only when
the main thread next executes bytecode, which it never would while it sleeps in
``select()``. So the self-pipe is also the C-level wakeup fd (``signal.set_wakeup_fd``):
the signal itself wakes the loop, whichever thread it hit, and the loop never sleeps more
than a second anyway.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import CollectorRegistry

from retention.archive import ignore_sigxfsz
from retention.config.load import load_config
from retention.config.schedule import ScheduleError, parse_schedule, schedule_period
from retention.config.schema import Account, Config
from retention.config.settings import (
    ServiceSettings,
    config_path_from_env,
    resolve_settings,
    service_changes,
)
from retention.config.shard import Shard, parse_shard
from retention.errors import ConfigError, ExitCode, Problem, RetentionError, SourceError
from retention.result import AccountResult
from retention.service import logs
from retention.service.forecast import WINDOW, fit_usage, latest_limit
from retention.service.http import MetricsServer
from retention.service.metrics import Metrics
from retention.service.pool import HostPool, Submitted
from retention.service.sources import SourceWatch
from retention.sources import assemble, load_fleet, read_source, schedule_groups, source_lists
from retention.sources.model import FleetAccounts
from retention.state import StateDir
from retention.state.observations import Observations

log = logging.getLogger("retention.service")
runlog = logging.getLogger("retention.runs")

MAX_GRACE = timedelta(hours=12)
WAKE_EVERY = 1.0  # seconds: the longest the serve loop sleeps between looks at requests


class RunFn(Protocol):
    def __call__(
        self, config: Config, account: Account, *, dry_run: bool,
        stop: threading.Event | None = None,
    ) -> AccountResult: ...


class MeasureFn(Protocol):
    def __call__(self, config: Config, account: Account) -> AccountResult: ...


@dataclass(frozen=True)
class Loaded:
    """A validated policy and what the scheduler derives from it."""

    config: Config
    # schedule -> its accounts, in file order (lazy for sources: built one at a time)
    groups: dict[str, Sequence[Account]]
    periods: dict[str, float]  # schedule -> seconds between two ticks
    shard: Shard | None = None  # set by ``sharded``: groups hold only the owned accounts

    @property
    def accounts(self) -> Sequence[Account]:
        """The accounts this service owns (all of them unless sharded), in file order."""
        if self.shard is None:
            return self.config.accounts
        return tuple(a for group in self.groups.values() for a in group)


def sharded(loaded: Loaded, spec: str | None) -> Loaded:
    """Only the accounts shard ``spec`` (``I/N``) owns; schedules left empty are dropped.

    The owned accounts are built (a lazy fleet list is walked once); the others are not kept.
    """
    if spec is None:
        return loaded
    shard = parse_shard(spec)
    owned: dict[str, Sequence[Account]] = {}
    for schedule, accounts in loaded.groups.items():
        mine = tuple(shard.select(accounts, lambda a: a.name))
        if mine:
            owned[schedule] = mine
    return Loaded(loaded.config, owned, {s: loaded.periods[s] for s in owned}, shard)


def load_policy(path: Path, *, watch: SourceWatch | None = None) -> Loaded:
    """Load and validate the policy file, schedules included, and read its sources.

    With ``watch``, a source that cannot be read is logged, counted and replaced by its
    last good list (none the first time) instead of failing the load.

    Raises:
        ConfigError: the file is invalid, a schedule is not a cron expression, a name is
            listed twice, or (without ``watch``) a source cannot be read.
    """
    config = load_config(path)
    if watch is None:
        config = load_fleet(config)
    else:
        failed: set[str] = set()

        def on_error(e: SourceError) -> None:
            failed.add(e.source)
            watch.failed(e)

        config = load_fleet(config, previous=watch.last_good, on_error=on_error)
        watch.succeeded(s for s in source_lists(config).values() if s.source not in failed)
        watch.forget_except(spec.name for spec in config.sources)
    return loaded_from(config, path)


def loaded_from(config: Config, path: Path) -> Loaded:
    """The scheduler's groups and periods for an already loaded policy (and fleet)."""
    groups = schedule_groups(config)
    periods: dict[str, float] = {}
    problems: list[Problem] = []
    for schedule, accounts in groups.items():
        try:
            periods[schedule] = schedule_period(schedule, timezone=config.service.timezone)
        except ScheduleError as e:
            first = accounts[0]
            where = (f"accounts.{config.accounts.index(first)}.schedule" if first.schedule
                     else f"policies.{first.policy}.schedule")
            problems.append(Problem(path, None, where, str(e)))
    if problems:
        raise ConfigError(problems)
    return Loaded(config, groups, periods)


def _grace(period: float) -> int:
    return int(max(1.0, min(period / 2, MAX_GRACE.total_seconds())))


class RetentionService:
    """The running service. ``serve`` drives it from signals; tests drive it directly."""

    def __init__(
        self,
        config_path: Path,
        settings: ServiceSettings,
        *,
        loaded: Loaded | None = None,
        registry: CollectorRegistry | None = None,
        run_account: RunFn | None = None,
        measure_account: MeasureFn | None = None,
        overrides: Mapping[str, Any] | None = None,
        watch: SourceWatch | None = None,
    ) -> None:
        if run_account is None or measure_account is None:
            from retention.run import account as runner  # the real thing; tests inject fakes

            run_account = run_account or runner.run_account
            measure_account = measure_account or runner.measure_account
        self.config_path = config_path
        self.settings = settings
        self._overrides = dict(overrides or {})  # re-applied on reload
        self.watch = watch if watch is not None else SourceWatch()
        self.loaded = sharded(loaded or load_policy(config_path, watch=self.watch),
                              settings.shard)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.watch.register(self.registry)
        self.metrics = Metrics(self.registry, account_label=settings.account_label,
                               account_metrics=settings.account_metrics)
        # Gmail's and Exchange Online's hosts take more connections (config.providers),
        # unless the policy file or the environment set the limit explicitly.
        from retention.config.providers import host_limits

        explicit = ("max_connections_per_host" in self.loaded.config.service.model_fields_set
                    or settings.max_connections_per_host != 2)
        self.pool = HostPool(settings.concurrency, settings.max_connections_per_host,
                             host_limits=host_limits(explicit))
        self.stop = threading.Event()  # passed to every run: stop at the next batch
        self._run = run_account
        self._measure = measure_account
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(2)},
            job_defaults={"coalesce": True, "max_instances": 1},
        )
        self._server: MetricsServer | None = None
        self._measuring_started = threading.Event()
        self._stopping = False
        self._exit_code: int | None = None
        self._observations: dict[Path, Observations] = {}
        self._observations_lock = threading.Lock()
        self._requests: list[str] = []
        self._refresh_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self.metrics.set_accounts(self.loaded.config, self.loaded.periods, self.loaded.accounts)

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def wakeup_fd(self) -> int:
        """The write end of the self-pipe (non-blocking), for ``signal.set_wakeup_fd``."""
        return self._wake_w

    @property
    def port(self) -> int | None:
        return self._server.port if self._server is not None else None

    def start(self, *, http: bool = True) -> None:
        """Bind the metrics port, start the workers and the scheduler."""
        _limits(self.loaded.config)
        if http:
            self._server = MetricsServer(
                self.registry, self.settings.metrics_address, self.settings.metrics_port,
                healthy=self.healthy, ready=self.ready,
            )
            self._server.start()
        self.pool.start()
        self._schedule(self.loaded, previous=None)
        self._schedule_sources(self.loaded)
        interval = self.settings.measure_every.total_seconds()
        trigger = (IntervalTrigger(seconds=interval) if interval > 0
                   else DateTrigger(datetime.now(UTC)))
        self._scheduler.add_job(
            self.measure_all, trigger, id="measure", name="measure",
            next_run_time=datetime.now(UTC), misfire_grace_time=_grace(max(interval, 2)),
        )
        self._scheduler.start()
        if self._server is not None and self.settings.account_label == "name" and \
                not _loopback(self.settings.metrics_address):
            # Review M12: the default stays 0.0.0.0 (a scrape target, and every shipped
            # deployment needs it), but say what that exposes.
            log.warning("event=metrics_exposed address=%s note=%r", self.settings.metrics_address,
                        "account names and usage are readable by anyone who can reach this "
                        "port; set service.metrics_address: 127.0.0.1 or account_label: hash")
        log.info(
            "event=started accounts=%d schedules=%d metrics=%s:%s concurrency=%d per_host=%d",
            len(self.loaded.accounts), len(self.loaded.groups),
            self.settings.metrics_address, self.port, self.settings.concurrency,
            self.settings.max_connections_per_host,
        )

    def healthy(self) -> bool:
        return bool(self._scheduler.running) and not self._stopping

    def ready(self) -> bool:
        return self._measuring_started.is_set() and not self._stopping

    def _schedule(self, loaded: Loaded, previous: Loaded | None) -> None:
        """One sweep job per distinct schedule; jobs of vanished schedules are removed."""
        old = set(previous.groups) if previous else set()
        jitter = self.settings.jitter.total_seconds() or None
        for schedule in old - set(loaded.groups):
            with contextlib.suppress(Exception):
                self._scheduler.remove_job(_job_id(schedule))
        for schedule in loaded.groups:
            if schedule in old:
                continue  # unchanged: keep its next fire time
            # service.timezone, like every service setting, changes with a restart only.
            trigger = parse_schedule(schedule, jitter=jitter, timezone=self.settings.timezone)
            self._scheduler.add_job(
                self.sweep, trigger, args=[schedule],
                id=_job_id(schedule), name=f"sweep {schedule}",
                misfire_grace_time=_grace(loaded.periods[schedule]), replace_existing=True,
            )

    def _schedule_sources(self, loaded: Loaded) -> None:
        """One refresh job per source, every ``refresh`` (re-added on reload)."""
        for job in self._scheduler.get_jobs():
            if job.id.startswith("source:"):
                with contextlib.suppress(Exception):
                    self._scheduler.remove_job(job.id)
        for spec in loaded.config.sources:
            seconds = spec.refresh.total_seconds()
            if seconds > 0:
                self._scheduler.add_job(
                    self.refresh_source, IntervalTrigger(seconds=seconds), args=[spec.name],
                    id=f"source:{spec.name}", name=f"refresh {spec.name}",
                    misfire_grace_time=_grace(seconds), replace_existing=True,
                )

    def refresh_source(self, name: str) -> bool:
        """Re-read one source; on failure keep its last good list (logged, in metrics)."""
        with self._refresh_lock:  # a reload and a refresh must not interleave their swaps
            loaded = self.loaded
            spec = next((s for s in loaded.config.sources if s.name == name), None)
            if spec is None:
                return False
            fleet = loaded.config.accounts
            explicit = fleet.explicit if isinstance(fleet, FleetAccounts) else list(fleet)
            base = loaded.config.model_copy(update={"accounts": explicit})
            try:
                got = read_source(base, spec)
                lists = [got if s.name == name else self.watch.last_good.get(s.name)
                         for s in base.sources]
                config = assemble(base, [x for x in lists if x is not None])
                fresh = loaded_from(config, self.config_path)
            except SourceError as e:
                self.watch.failed(e)
                return False
            except ConfigError as e:  # e.g. a name now listed twice: keep the old list
                why = "; ".join(str(p) for p in e.problems)
                self.watch.failed(SourceError(name, "config", why))
                return False
            self.watch.succeeded([got])
            self._adopt(fresh, loaded)
            log.info("event=source_refreshed source=%s accounts=%d", name, len(got))
            return True

    def _adopt(self, loaded: Loaded, previous: Loaded) -> None:
        loaded = sharded(loaded, self.settings.shard)
        self.loaded = loaded
        self._schedule(loaded, previous)
        self.metrics.set_accounts(loaded.config, loaded.periods, loaded.accounts)

    # -- requests (safe from signal handlers and other threads) -----------------------

    def request(self, what: str) -> None:
        """Ask the serve loop to ``reload`` or ``stop``; never blocks, takes no lock."""
        self._requests.append(what)
        fd = self._wake_w
        if fd >= 0:  # closed after shutdown: never write to a reused descriptor
            with contextlib.suppress(OSError):
                os.write(fd, b"\0")

    def _next_request(self, timeout: float | None) -> str | None:
        if not self._requests and self._wake_r < 0:
            return "stop"  # shut down behind the loop's back (e.g. shutdown() from a thread)
        if not self._requests:
            readable, _, _ = select.select([self._wake_r], [], [], timeout)
            if readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 512)
        return self._requests.pop(0) if self._requests else None

    def run_forever(self, *, shutdown_timeout: float | None = None) -> int:
        """Serve until a ``stop`` request; returns the exit code (see module doc)."""
        while True:
            # Bounded sleep: even a wakeup byte lost to a full pipe costs at most a second.
            what = self._next_request(WAKE_EVERY)
            if what == "reload":
                self.reload()
            elif what == "stop":
                break
        timeout = (self.settings.shutdown_timeout.total_seconds()
                   if shutdown_timeout is None else shutdown_timeout)
        self.begin_shutdown()
        deadline = time.monotonic() + timeout
        finished = self.pool.join(0)
        while not finished:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            finished = self.pool.join(min(left, 0.2))
            if not finished and self._next_request(0) == "stop":
                log.warning("event=shutdown_forced reason=second_signal")
                break
        return self.finish_shutdown(finished)

    # -- jobs ----------------------------------------------------------------------------

    def sweep(self, schedule: str) -> None:
        """A tick of one schedule: submit its accounts; skip (and report) those in flight."""
        loaded = self.loaded  # one consistent snapshot, even if a reload swaps it
        queued = skipped = 0
        self.metrics.begin_sweep(schedule, len(loaded.groups.get(schedule, ())))
        for account in loaded.groups.get(schedule, ()):
            outcome = self.pool.submit(
                account.name, account.host, "run", partial(self._run_one, loaded.config, account)
            )
            if outcome is Submitted.CLOSED:
                return
            if outcome is Submitted.BUSY:
                skipped += 1
                self.metrics.observe_skip(account.name, schedule)
                runlog.info("event=account_skipped account=%s reason=in_flight", account.name)
            else:
                queued += 1
        log.debug("event=sweep schedule=%r queued=%d skipped=%d", schedule, queued, skipped)

    def measure_all(self) -> None:
        self._measuring_started.set()
        loaded = self.loaded
        for account in loaded.accounts:
            outcome = self.pool.submit(
                account.name, account.host, "measure",
                partial(self._measure_one, loaded.config, account),
            )
            if outcome is Submitted.CLOSED:
                return

    def _run_one(self, config: Config, account: Account) -> None:
        if self.stop.is_set():
            return  # shutting down: a queued account starts nothing
        result = self._run(config, account, dry_run=False, stop=self.stop)
        self.metrics.observe_run(result)
        logs.log_account_run(runlog, result, kind="run")
        self._update_forecast(config, account.name, result.limit_bytes)

    def _measure_one(self, config: Config, account: Account) -> None:
        if self.stop.is_set():
            return
        result = self._measure(config, account)
        self.metrics.observe_measurement(result)
        if result.status == "error":
            logs.log_account_run(runlog, result, kind="measure")
        else:
            runlog.debug("%s", logs.logfmt(logs.account_run_fields(result, "measure")))
        self._update_forecast(config, account.name, result.limit_bytes)

    def _update_forecast(self, config: Config, name: str, limit: int | None) -> None:
        now = datetime.now(UTC)
        try:
            samples = self._observations_of(config).usage_samples(name, now - WINDOW)
        except RetentionError as e:
            log.warning("event=forecast_failed account=%s error=%r", name, str(e))
            return
        self.metrics.set_forecast(name, fit_usage(samples, now), latest_limit(samples) or limit)

    def _observations_of(self, config: Config) -> Observations:
        path = StateDir(config.state_dir).observations_path
        with self._observations_lock:
            ledger = self._observations.get(path)
            if ledger is None:
                ledger = self._observations[path] = StateDir(config.state_dir).observations()
            return ledger

    # -- reload and shutdown ---------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the policy file; keep the old policy when the new one is invalid.

        Any failure (not only a ``ConfigError``: a loader bug, an OS error, an overflow the
        validators missed) keeps the old policy, sets the reload metric to 0 and is logged;
        a reload never stops the service.
        """
        with self._refresh_lock:  # a source refresh must not swap in between
            return self._reload()

    def _reload(self) -> bool:
        try:
            loaded = load_policy(self.config_path, watch=self.watch)
            settings = resolve_settings(loaded.config.service, overrides=self._overrides)
            # The shard is a start-up setting (it names this replica): keep the running one.
            loaded = sharded(loaded, self.settings.shard)
        except ConfigError as e:
            return self._reload_failed([str(p) for p in e.problems])
        except Exception as e:  # noqa: BLE001 - see the docstring: never exit on a reload
            return self._reload_failed([f"{self.config_path}: {type(e).__name__}: {e}"])
        changed = [c for c in service_changes(self.settings, settings) if c != "config"]
        if changed:
            log.warning("event=reload_settings_ignored settings=%s note=%r", ",".join(changed),
                        "service settings take effect after a restart")
        previous, self.loaded = self.loaded, loaded
        _limits(loaded.config)
        self._schedule(loaded, previous)
        self._schedule_sources(loaded)
        self.metrics.set_accounts(loaded.config, loaded.periods, loaded.accounts)
        self.metrics.set_reload(True)
        logs.update_secrets(logs.secrets_of(loaded.config))
        log.info("event=reloaded accounts=%d schedules=%d",
                 len(loaded.accounts), len(loaded.groups))
        return True

    def _reload_failed(self, problems: list[str]) -> bool:
        self.metrics.set_reload(False)
        for problem in problems:
            log.error("event=reload_failed problem=%r", problem)
        log.error("event=reload_failed kept=old_policy problems=%d", len(problems))
        return False

    def begin_shutdown(self) -> None:
        """No new ticks, drop queued accounts, tell running ones to stop at a safe point."""
        if self._stopping:
            return
        self._stopping = True
        with contextlib.suppress(Exception):
            self._scheduler.shutdown(wait=False)
        self.stop.set()
        dropped = self.pool.close()
        log.info("event=shutdown running=%s dropped=%d",
                 ",".join(self.pool.running()) or "-", len(dropped))

    def _disarm_wakeup(self) -> None:
        """Stop signals writing to the pipe before it is closed (its number may be reused)."""
        if threading.current_thread() is not threading.main_thread() or self._wake_w < 0:
            return
        current = signal.set_wakeup_fd(-1)
        if current != self._wake_w:
            signal.set_wakeup_fd(current)

    def finish_shutdown(self, finished: bool) -> int:
        if self._exit_code is not None:
            return self._exit_code  # already shut down
        if self._server is not None:
            self._server.stop()
        with self._observations_lock:
            for ledger in self._observations.values():
                with contextlib.suppress(Exception):
                    ledger.close()
            self._observations.clear()
        self._disarm_wakeup()
        wake_r, wake_w, self._wake_r, self._wake_w = self._wake_r, self._wake_w, -1, -1
        for fd in (wake_r, wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if finished:
            log.info("event=stopped exit=0")
            self._exit_code = ExitCode.OK
        else:
            log.error("event=stopped exit=1 reason=shutdown_timeout running=%s note=%r",
                      ",".join(self.pool.running()), "the journal is recovered on the next run")
            self._exit_code = ExitCode.FAILED
        return self._exit_code

    def shutdown(self, timeout: float | None = None) -> int:
        """begin + wait + finish, for callers without a serve loop (tests, embedding)."""
        if self._exit_code is not None:
            return self._exit_code
        self.begin_shutdown()
        wait = self.settings.shutdown_timeout.total_seconds() if timeout is None else timeout
        return self.finish_shutdown(self.pool.join(wait))


def _loopback(address: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def _limits(config: Config) -> None:
    """Body memory bound and spool folder (review F11) for the account passes."""
    from retention.adapters.spool import Limits

    Limits.configure(config.message_memory, Path(config.state_dir) / "tmp")


def _job_id(schedule: str) -> str:
    return f"sweep:{schedule}"


@contextlib.contextmanager
def _signals(service: RetentionService) -> Iterator[None]:
    """SIGHUP -> reload, SIGTERM/SIGINT -> stop, for the duration of the serve loop."""
    def on_signal(signum: int, frame: FrameType | None) -> None:
        service.request("reload" if signum == signal.SIGHUP else "stop")

    wanted = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)
    previous = {s: signal.signal(s, on_signal) for s in wanted}
    # A signal delivered to a worker or scheduler thread writes its number to the pipe
    # from C, which wakes the loop's select(); the Python handler then runs in the main
    # thread (see the module doc).
    previous_fd = signal.set_wakeup_fd(service.wakeup_fd, warn_on_full_buffer=False)
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        for s, handler in previous.items():
            signal.signal(s, handler)


def _write_port_file(path: Path, port: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{port}\n", encoding="utf-8")
    tmp.replace(path)  # readers never see a half-written file


def serve(
    config_path: Path | str | None = None,
    *,
    metrics_port: int | None = None,
    metrics_address: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    registry: CollectorRegistry | None = None,
    on_started: Callable[[RetentionService], None] | None = None,
) -> int:
    """Run the service until SIGTERM/SIGINT; returns the process exit code (0 or 1).

    ``config_path`` defaults to ``RETENTION_CONFIG``. ``metrics_port``/``metrics_address``
    and ``overrides`` (any ``ServiceSettings`` field) win over the environment, secret
    files and the file's ``service:`` block. Must run in the main thread (signals).

    Raises:
        ConfigError: the policy file, a schedule or a service setting is invalid, or the
            metrics port cannot be bound (exit 2 in the CLI).
    """
    # Before any thread exists: an archive write past RLIMIT_FSIZE then fails with EFBIG
    # (an ArchiveError for that account) instead of SIGXFSZ killing every account.
    ignore_sigxfsz()
    path = Path(config_path) if config_path is not None else config_path_from_env()
    if path is None:
        raise ConfigError("no policy file: pass -c FILE or set RETENTION_CONFIG")
    watch = SourceWatch()
    loaded = load_policy(path, watch=watch)
    extra = {"metrics_port": metrics_port, "metrics_address": metrics_address,
             **(overrides or {})}
    settings = resolve_settings(loaded.config.service, overrides=extra)
    logs.configure(settings.log_level, settings.log_format, logs.secrets_of(loaded.config))
    service = RetentionService(path, settings, loaded=loaded, registry=registry,
                               overrides=extra, watch=watch)
    with _signals(service):
        try:
            service.start()
        except OSError as e:
            service.finish_shutdown(True)
            raise ConfigError(
                f"cannot listen on {settings.metrics_address}:{settings.metrics_port} "
                f"for metrics: {e.strerror or e}"
            ) from None
        if settings.metrics_port_file is not None and service.port is not None:
            _write_port_file(settings.metrics_port_file, service.port)
        if on_started is not None:
            on_started(service)
        return service.run_forever()
