"""``retention run``, ``usage``, ``history`` and ``restore``: the commands that read mail
state (and, for ``run`` and ``restore``, change it), with their exit codes.

This module owns how each of them turns its flags into calls to ``run/``, ``service.batch``
and ``state/``, and how their results reach stdout, stderr and the exit status.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retention.cli.common import (
    emit,
    freeze_startup,
    select,
    sharded,
    when,
    with_once_within,
)
from retention.cli.parser import verbosity
from retention.config.schema import Account, Config
from retention.errors import ConfigError, ExitCode
from retention.service.logs import account_run_fields, logfmt

if TYPE_CHECKING:
    from retention.result import AccountResult
    from retention.service.batch import Progress

# The logger serve's account lines use: one filter, one format for both.
_runlog = logging.getLogger("retention.runs")


def cmd_run(config: Config, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from retention import report
    from retention.result import RunResult
    from retention.run.account import retry_throttled, run_account
    from retention.service.batch import run_ordered

    config = with_once_within(config, args.once_within)
    textfile = _textfile(args.metrics_textfile)
    _limits(config)
    accounts = sharded(select(config, args.account), args)
    now = datetime.now(UTC)
    jobs, per_host = _jobs(config, args)
    progress = _progress(len(accounts), args)
    # Only the JSON report shows Message-IDs; a pass that acts reads them anyway (journal).
    ids = args.format == "json"
    freeze_startup()

    def one(a: Account) -> AccountResult:
        return _logged(run_account(config, a, dry_run=args.dry_run, now=now,
                                   list_kept=args.list_kept, message_ids=ids), "run")

    results = tuple(run_ordered(
        accounts, one,
        jobs=jobs, per_host=per_host, host_limits=_host_limits(config), progress=progress,
        is_error=lambda r: r.status == "error",
    ))
    progress.finish()
    # Later in the sweep: the provider asked us to slow down.
    results = retry_throttled(accounts, results, one)
    result = RunResult(dry_run=args.dry_run, generated_at=now, accounts=results)
    if args.format == "html":
        from retention.page.html import levels_of, to_html

        text = to_html(result, levels_of(config, [a.account for a in result.accounts]))
    elif args.format == "json":
        text = report.to_json(result)
    else:
        text = report.to_text(result)
    emit(text, args.output)
    for a in result.accounts:  # after the report: the operator sees which account failed
        if a.status == "error":
            fields = {"event": "account_failed", "account": a.account,
                      "error_kind": a.error_kind, "error": a.error}
            _runlog.error("%s", logfmt(fields), extra={"fields": fields})
    for a in result.locked:  # not cleaned either: a failure unless --skip-locked-ok
        fields = {"event": "account_skipped", "account": a.account, "reason": a.skip_reason,
                  "detail": a.error}
        level = logging.INFO if args.skip_locked_ok else logging.ERROR
        _runlog.log(level, "%s", logfmt(fields), extra={"fields": fields})
    if textfile is not None:
        from retention.service.textfile import write_run_metrics

        try:
            write_run_metrics(textfile, config, accounts, result.accounts, dry_run=args.dry_run)
        except OSError as e:
            print(f"retention: --metrics-textfile {textfile}: {e.strerror or e}",
                  file=sys.stderr)
            return ExitCode.FAILED
    return result.exit_code_for(skip_locked_ok=args.skip_locked_ok)


def _textfile(path: Path | None) -> Path | None:
    """``--metrics-textfile``, checked before any account is touched (exit 2 if unusable)."""
    if path is None:
        return None
    if path.suffix != ".prom":
        raise ConfigError(f"--metrics-textfile {path}: must end in .prom (node_exporter's "
                          "textfile collector reads only *.prom files)")
    if not path.parent.is_dir():
        raise ConfigError(f"--metrics-textfile {path}: directory {path.parent} does not exist")
    return path


def cmd_usage(config: Config, args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    from retention.errors import RetentionError
    from retention.run.account import measure_account, open_observations
    from retention.service.batch import run_ordered

    accounts = sharded(select(config, args.account), args)
    jobs, per_host = _jobs(config, args)
    progress = _progress(len(accounts), args)
    freeze_startup()
    try:
        shared: Any = open_observations(config)  # one store for all: see measure_account
    except RetentionError:
        shared = nullcontext()  # each account then reports why it cannot record
    with shared as observations:
        return _print_usage(args, run_ordered(
            accounts,
            lambda a: _logged(measure_account(config, a, observations=observations), "measure"),
            jobs=jobs, per_host=per_host, host_limits=_host_limits(config), progress=progress,
            is_error=lambda r: r.status == "error",
        ), progress)


def _print_usage(
    args: argparse.Namespace, measured: Iterator[AccountResult], progress: Progress
) -> int:
    from retention import report

    if args.format == "json":
        results = list(measured)
        progress.finish()
        sys.stdout.write(report.usage_json(results))
    else:
        results = []
        for r in measured:
            results.append(r)
            if r.status != "ok":
                print(f"{r.account:20} {r.status}: {r.error}")
                continue
            limit = report.human_size(r.limit_bytes) if r.limit_bytes else "unknown"
            ratio = (
                f"{100 * r.usage_bytes / r.limit_bytes:.1f}%"
                if (r.usage_bytes is not None and r.limit_bytes)
                else "-"
            )
            print(
                f"{r.account:20} {report.human_size(r.usage_bytes):>10} of {limit:>10} "
                f"{ratio:>7}  ({r.usage_source}"
                f"{', limit from Graph' if r.limit_source == 'graph' else ''})"
            )
        progress.finish()
    return ExitCode.FAILED if any(r.status == "error" for r in results) else ExitCode.OK


def cmd_history(config: Config, args: argparse.Namespace) -> int:
    from retention.state.history import history

    select(config, args.account)
    sys.stdout.write(history(config, accounts=args.account, since=args.since, fmt=args.format))
    return ExitCode.OK


def cmd_restore(config: Config, args: argparse.Namespace) -> int:
    from retention.run.restore import Selection, render, restore

    (account,) = select(config, [args.account])
    selection = Selection(
        run_id=args.run, since=when(args.since, "--since"), until=when(args.until, "--until"),
        message_ids=tuple(args.message_id), folder=args.folder,
    )
    report = restore(config, account, selection, to_folder=args.to_folder,
                     dry_run=args.dry_run, export_mbox=args.export_mbox)
    sys.stdout.write(render(report, args.format))
    return ExitCode.FAILED if report.failed else ExitCode.OK


def cmd_recover(config: Config, args: argparse.Namespace) -> int:
    from retention.errors import AccountLocked
    from retention.state.stuck import recover_command

    (account,) = select(config, [args.account])
    try:
        code, out, err = recover_command(
            config, account, abandon_rows=args.abandon, only=args.row, confirmed=args.yes,
            fmt=args.format)
    except AccountLocked as e:
        print(f"retention: account {account.name}: {e}; try again when it is done",
              file=sys.stderr)
        return ExitCode.FAILED
    sys.stdout.write(out)
    sys.stderr.write(err)
    return code


def _host_limits(config: Config) -> dict[str, int]:
    """Big providers' hosts take more connections, unless the file set the limit itself."""
    from retention.config.providers import host_limits

    return host_limits("max_connections_per_host" in config.service.model_fields_set)


def _jobs(config: Config, args: argparse.Namespace) -> tuple[int, int]:
    jobs = args.jobs if args.jobs is not None else config.service.concurrency
    return jobs, config.service.max_connections_per_host


def _limits(config: Config) -> None:
    """Body memory bound and spool folder (review F11) for this process's account passes."""
    from retention.adapters.spool import Limits

    Limits.configure(config.message_memory, Path(config.state_dir) / "tmp")


def _progress(total: int, args: argparse.Namespace) -> Progress:
    """The progress line on a terminal's stderr; none with ``-q``, nor with ``-v`` (where
    each account's log line says as much without the two overwriting each other)."""
    from retention.service.batch import Progress

    return Progress(total, enabled=False if verbosity(args) != 0 else None)


def _logged(result: AccountResult, kind: str) -> AccountResult:
    """One info line per account as it finishes (``-v``), the fields ``serve`` logs."""
    if _runlog.isEnabledFor(logging.INFO):
        fields = account_run_fields(result, kind)
        _runlog.info("%s", logfmt(fields), extra={"fields": fields})
    return result
