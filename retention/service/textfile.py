"""The metrics of a one-shot run (``retention run --metrics-textfile PATH``).

This module owns the file that node_exporter's textfile collector reads
(``--collector.textfile.directory``) when the agent runs from a timer or cron instead of
as ``retention serve``: the same names, labels and label privacy as ``/metrics``
(``service.metrics``), so the same alert rules and dashboard work.

Written atomically: the exposition (prometheus-client's ``generate_latest``) goes to a
temporary file next to ``PATH`` (``.PATH.<random>.tmp``, which the collector ignores: it
reads only ``*.prom``), is flushed to disk and renamed over ``PATH``, so a scrape never
sees half a file. Not ``write_to_textfile``: its file gets the process umask, and the
shipped units run with ``UMask=0077``, so node_exporter (another user) could not read it;
this file is 0644, as readable as ``/metrics`` itself.

A process that lives for one run has no memory of the previous one, so the previous file
is read back first and carried forward, which is what the rules need:

* counters (``retention_actions_total``, ``retention_freed_bytes_total``,
  ``retention_account_errors_total``, ``retention_runs_skipped_total``) add this run to
  the previous file's values, so ``increase()`` sees every run's errors;
* ``retention_last_success_timestamp_seconds`` of an account that failed this run stays
  the previous success, so "no success within twice the schedule" still fires.

Not carried: the run-duration histogram (this run's only), and the agent's own
forecast ``retention_mailbox_full_seconds`` (``serve`` only: the rules fall back to
Prometheus' ``predict_linear``). A dry run (``--dry-run``) only measures: usage gauges,
no run timestamps or counters. Under ``account_label: none`` nothing is carried (there
is no per-account label to match).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from retention.config.schedule import ScheduleError, schedule_period
from retention.config.schema import Account, Config
from retention.result import AccountResult
from retention.service.metrics import Metrics

log = logging.getLogger("retention.service")

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def write_run_metrics(path: Path, config: Config, accounts: Sequence[Account],
                      results: Iterable[AccountResult], *, dry_run: bool) -> None:
    """Render this run's metrics into ``path`` (atomically), carrying the previous file.

    Raises:
        OSError: the file (or its temporary sibling) cannot be written.
    """
    registry = CollectorRegistry()
    service = config.service
    metrics = Metrics(registry, account_label=service.account_label,
                      account_metrics=service.account_metrics)
    metrics.set_accounts(config, _periods(config, accounts), accounts)
    if service.account_label != "none":
        _carry(metrics, accounts, _previous(path))
    for result in results:
        if dry_run:
            metrics.observe_measurement(result)
        else:
            metrics.observe_run(result)
    _write_atomically(path, generate_latest(registry))


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # whatever the umask: node_exporter must read it
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself survives a crash
        dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)


def _periods(config: Config, accounts: Sequence[Account]) -> dict[str, float]:
    out: dict[str, float] = {}
    for schedule in {config.schedule_of(a) for a in accounts}:
        try:
            out[schedule] = schedule_period(schedule, timezone=config.service.timezone)
        except ScheduleError:  # the loader has checked it; never fail the report on it
            continue
    return out


def _previous(path: Path) -> Samples:
    """The previous file's samples by name and label set; nothing if absent or unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("event=metrics_textfile_unreadable path=%s error=%r", path, str(exc))
        return {}
    out: Samples = {}
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    except ValueError as exc:  # a half-edited or foreign file: start again from zero
        log.warning("event=metrics_textfile_unreadable path=%s error=%r", path, str(exc))
        return {}
    return out


def _by_account(samples: Mapping[tuple[tuple[str, str], ...], float]
                ) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for key, value in samples.items():
        labels = dict(key)
        account = labels.pop("account", None)
        if account is not None:
            out.setdefault(account, []).append((labels, value))
    return out


def _carry(metrics: Metrics, accounts: Sequence[Account], previous: Samples) -> None:
    if not previous:
        return
    success = _by_account(previous.get("retention_last_success_timestamp_seconds", {}))
    actions = _by_account(previous.get("retention_actions_total", {}))
    freed = _by_account(previous.get("retention_freed_bytes_total", {}))
    errors = _by_account(previous.get("retention_account_errors_total", {}))
    skipped = _by_account(previous.get("retention_runs_skipped_total", {}))
    collector = metrics.collector
    with collector.lock:
        for account in accounts:
            label = collector.label_of(account.name)
            if account.name not in collector.fleet.members:
                continue
            a = metrics.account_state(account.name)
            for _, value in success.get(label, []):
                a.last_success = value
                metrics.fleet.succeeded(account.name, value)
            for labels, value in actions.get(label, []):
                a.actions[(labels.get("action", ""), labels.get("rule", ""))] = int(value)
            for labels, value in freed.get(label, []):
                a.freed[labels.get("action", "")] = int(value)
            for labels, value in errors.get(label, []):
                if value:
                    a.errors[labels.get("reason", "other")] = int(value)
            for labels, value in skipped.get(label, []):
                a.skipped[labels.get("reason", "locked")] = int(value)
