"""Keep IMAP and POP3 mailboxes under quota without losing mail that matters.

Exit codes: 0 every account succeeded; 1 an account failed (the others still ran);
2 a usage or configuration error (each problem printed as ``FILE:LINE: field: message``,
never a traceback).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retention import __version__
from retention.config.load import load_config
from retention.config.load import warnings as config_warnings
from retention.config.schema import Account, Config, effective_allow_empty, effective_clock
from retention.config.shard import Shard, ShardSpecError, parse_shard
from retention.config.units import (
    format_count_or_percent,
    format_duration,
    format_percent,
    format_size,
    parse_duration,
)
from retention.errors import ConfigError, ExitCode, SourceError

if TYPE_CHECKING:
    from retention.result import AccountResult
    from retention.service.batch import Progress


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(ExitCode.USAGE)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="retention", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--version", action="version", version=f"retention {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "-c",
            "--config",
            type=Path,
            default=None,
            help="policy file (default: $RETENTION_CONFIG)",
        )

    def with_jobs(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "-j", "--jobs", type=_positive, default=None, metavar="N",
            help="accounts at once (default: service.concurrency; at most "
            "service.max_connections_per_host per host)",
        )

    sp = sub.add_parser("check", help="validate a policy file and print the effective policy")
    with_config(sp)
    sp = sub.add_parser("run", help="one pass over the accounts (add --dry-run to only report)")
    with_config(sp)
    sp.add_argument("--dry-run", action="store_true", help="read-only: report what would happen")
    sp.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="NAME",
        help="only this account (repeatable)",
    )
    sp.add_argument("--format", choices=["text", "json", "html"], default="text",
                    help="html: one self-contained page (use with --output)")
    sp.add_argument("--output", type=Path, help="write the report here instead of stdout")
    with_jobs(sp)
    _with_shard(sp)
    sp.add_argument(
        "--once-within",
        default=None,
        metavar="DURATION",
        help="skip accounts another agent sharing state_url finished this recently "
        "(e.g. 12h; overrides leases.once_within)",
    )
    sp = sub.add_parser("usage", help="measure usage against the limit, change nothing")
    with_config(sp)
    sp.add_argument("--account", action="append", default=[], metavar="NAME")
    sp.add_argument("--format", choices=["text", "json"], default="text")
    with_jobs(sp)
    _with_shard(sp)
    sp = sub.add_parser(
        "accounts", help="every account the file and its sources resolve to, with its policy"
    )
    with_config(sp)
    sp.add_argument("--format", choices=["text", "json", "csv"], default="text")
    _with_shard(sp)
    sp = sub.add_parser("history", help="the audit log of what the agent removed")
    with_config(sp)
    sp.add_argument("--account", action="append", default=[], metavar="NAME")
    sp.add_argument("--since", default=None, help="only entries newer than this (e.g. 30d)")
    sp.add_argument("--format", choices=["text", "json", "csv"], default="text")
    sp = sub.add_parser(
        "login", help="sign in once for an account's device-code credential (Microsoft 365)"
    )
    with_config(sp)
    sp.add_argument("account", metavar="ACCOUNT")
    _restore_parser(sub, with_config)
    sp = sub.add_parser("serve", help="run as a service: scheduler + Prometheus metrics")
    with_config(sp)
    return p


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError("must be between 1 and 256")
    return value


def _with_shard(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="only the accounts shard I of N owns (rendezvous hash of the name; "
        "default $RETENTION_SHARD, else all)",
    )


def _shard(arg: str | None) -> Shard | None:
    """``--shard``, else ``RETENTION_SHARD``, else None (every account)."""
    text = arg if arg is not None else os.environ.get("RETENTION_SHARD") or None
    if text is None:
        return None
    try:
        return parse_shard(text)
    except ShardSpecError as e:
        raise ConfigError(f"--shard: {e}") from None


def _sharded(accounts: Sequence[Account], args: argparse.Namespace) -> Sequence[Account]:
    shard = _shard(args.shard)
    return accounts if shard is None else list(shard.select(accounts, lambda a: a.name))


def _with_once_within(config: Config, text: str | None) -> Config:
    if text is None:
        return config
    try:
        once = parse_duration(text)
    except ValueError as e:
        raise ConfigError(f"--once-within: {e}") from None
    leases = config.leases.model_copy(update={"once_within": once})
    return config.model_copy(update={"leases": leases})
def _restore_parser(sub: Any, with_config: Any) -> None:
    sp = sub.add_parser("restore", help="put archived messages back into the mailbox")
    with_config(sp)
    sp.add_argument("--account", required=True, metavar="NAME")
    sp.add_argument("--run", default=None, metavar="RUN_ID", help="only what this run removed")
    sp.add_argument("--since", default=None, help="removed at or after (30d, or a date)")
    sp.add_argument("--until", default=None, help="removed before (30d, or a date)")
    sp.add_argument("--message-id", action="append", default=[], metavar="ID")
    sp.add_argument("--folder", default=None, help="only messages removed from this folder")
    sp.add_argument("--to-folder", default=None, help="restore here instead of the original")
    sp.add_argument("--export-mbox", type=Path, default=None, metavar="PATH",
                    help="write the selection to an mbox instead (the only way for POP3)")
    sp.add_argument("--dry-run", action="store_true", help="show what would be restored")
    sp.add_argument("--format", choices=["text", "json"], default="text")


def _when(text: str | None, flag: str) -> datetime | None:
    """A moment from ``30d`` (that long ago) or an ISO date/time (UTC when naive)."""
    if text is None:
        return None
    from retention.config.units import parse_duration

    try:
        return datetime.now(UTC) - parse_duration(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{flag}: {text!r} is neither a duration (30d) nor a date") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _cmd_restore(config: Config, args: argparse.Namespace) -> int:
    from retention.run.restore import Selection, render, restore

    (account,) = _select(config, [args.account])
    selection = Selection(
        run_id=args.run, since=_when(args.since, "--since"), until=_when(args.until, "--until"),
        message_ids=tuple(args.message_id), folder=args.folder,
    )
    report = restore(config, account, selection, to_folder=args.to_folder,
                     dry_run=args.dry_run, export_mbox=args.export_mbox)
    sys.stdout.write(render(report, args.format))
    return ExitCode.FAILED if report.failed else ExitCode.OK


def _config_path(arg: Path | None) -> Path:
    if arg is not None:
        return arg
    env = os.environ.get("RETENTION_CONFIG")
    if env:
        return Path(env)
    raise ConfigError("no policy file: pass -c FILE or set RETENTION_CONFIG")


def _select(config: Config, names: Sequence[str]) -> Sequence[Account]:
    if not names:
        return config.accounts  # a fleet's lazy list: accounts are built one at a time
    found: dict[str, Account] = {}
    for n in names:
        try:
            found[n] = config.account(n)
        except KeyError:
            pass
    unknown = [n for n in names if n not in found]
    if unknown:
        known = sorted(a.name for a in _explicit(config))
        more = len(config.accounts) - len(known)
        listed = ", ".join(known) + (f" and {more} from sources" if more else "")
        raise ConfigError(f"unknown account {', '.join(map(repr, unknown))} (known: {listed})")
    order = {n: config.accounts.index(a) for n, a in found.items()}
    return sorted(found.values(), key=lambda a: order[a.name])


def _explicit(config: Config) -> Sequence[Account]:
    """The ``accounts:`` of the file (``check`` describes sources by summary instead)."""
    return getattr(config.accounts, "explicit", config.accounts)


def describe(config: Config) -> str:
    """The effective policy per account, with every default filled in (``check``)."""
    out = [f"policy file: {config.source}", f"state_dir: {config.state_dir}"]
    for acct in _explicit(config):
        pol = config.policy_of(acct)
        q = pol.quota
        out.append("")
        out.append(
            f"account {acct.name}: {acct.protocol} {acct.host}:{acct.effective_port()} "
            f"security={acct.security}{'' if acct.tls_verify else ' (certificate NOT verified)'}"
            f" user={acct.username} policy={acct.policy}"
            + (f" credentials={acct.credentials}" if acct.credentials else "")
        )
        if config.is_held(acct):
            out.append("  HOLD: report only, nothing will be changed")
        out.append(f"  schedule: {config.schedule_of(acct)}")
        protect = ", ".join(pol.protect) if acct.protocol == "imap" else "(ignored for POP3)"
        out.append(f"  protect: {protect}; keep_within: {format_duration(pol.keep_within)}")
        if q.limit is not None:
            limit = format_size(q.limit)
        else:  # POP3 has no quota command: without quota.limit there is no limit at all
            limit = "server quota" if acct.protocol == "imap" else "none (set quota.limit)"
        out.append(
            f"  quota: limit={limit} warn_above={format_percent(q.warn_above)} "
            f"clean_above={format_percent(q.clean_above)} clean_to={format_percent(q.clean_to)} "
            f"max_delete_per_run={format_count_or_percent(q.max_delete_per_run)}"
        )
        if pol.notify is not None:
            n = pol.notify
            what = [w for w, on in (("warn", n.warn), ("archived", n.archived)) if on]
            relay = f" smtp={n.smtp.host}:{n.smtp.effective_port()}" if n.smtp else ""
            out.append(
                f"  notify: {', '.join(what) or 'nothing'} in {acct.language or n.language} "
                f"by {n.delivery}{relay}; restore_grace: {format_duration(pol.restore_grace)}"
            )
        for i, rule in enumerate(pol.rules, 1):
            conds = [f"folders={rule.folders}"]
            if rule.exclude_folders:
                conds.append(f"exclude={rule.exclude_folders}")
            if rule.older_than is not None:
                conds.append(f"older_than={format_duration(rule.older_than)}")
            if rule.before is not None:
                conds.append(f"before={rule.before.isoformat()}")
            if rule.larger_than is not None:
                conds.append(f"larger_than={format_size(rule.larger_than)}")
            if rule.smaller_than is not None:
                conds.append(f"smaller_than={format_size(rule.smaller_than)}")
            if rule.protect is not None:
                conds.append(f"protect={rule.protect}")
            out.append(
                f"  rule {i} {rule.name}: when={rule.when} {' '.join(conds)} "
                f"clock={effective_clock(rule, acct.protocol).value} "
                f"-> {rule.action.describe()} "
                f"allow_empty_folder={str(effective_allow_empty(rule, acct.protocol)).lower()}"
            )
        if not pol.rules:
            out.append("  (no rules: nothing will ever be removed)")
    return "\n".join(out) + "\n"


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(output)


def _cmd_check(config: Config) -> int:
    from retention.sources.check import check_sources

    for w in config_warnings(config):
        print(f"{config.source}: warning: {w}", file=sys.stderr)
    config, lines = check_sources(config)  # raises ConfigError for unreadable sources
    sys.stdout.write(describe(config))
    if lines:
        sys.stdout.write("\n" + "\n".join(lines) + "\n")
    return ExitCode.OK


def _host_limits(config: Config) -> dict[str, int]:
    """Big providers' hosts take more connections, unless the file set the limit itself."""
    from retention.config.providers import host_limits

    return host_limits("max_connections_per_host" in config.service.model_fields_set)


def _jobs(config: Config, args: argparse.Namespace) -> tuple[int, int]:
    jobs = args.jobs if args.jobs is not None else config.service.concurrency
    return jobs, config.service.max_connections_per_host


def _cmd_accounts(config: Config, args: argparse.Namespace) -> int:
    from retention.sources.listing import write_accounts

    shard = _shard(args.shard)
    write_accounts(config, args.format, sys.stdout, shard.owns if shard is not None else None)
    return ExitCode.OK


def _limits(config: Config) -> None:
    """Body memory bound and spool folder (review F11) for this process's account passes."""
    from retention.adapters.spool import Limits

    Limits.configure(config.message_memory, Path(config.state_dir) / "tmp")


def _cmd_run(config: Config, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from retention import report
    from retention.result import RunResult
    from retention.run.account import retry_throttled, run_account
    from retention.service.batch import Progress, run_ordered

    config = _with_once_within(config, args.once_within)
    _limits(config)
    accounts = _sharded(_select(config, args.account), args)
    now = datetime.now(UTC)
    jobs, per_host = _jobs(config, args)
    progress = Progress(len(accounts))
    results = tuple(run_ordered(
        accounts, lambda a: run_account(config, a, dry_run=args.dry_run, now=now),
        jobs=jobs, per_host=per_host, host_limits=_host_limits(config), progress=progress,
        is_error=lambda r: r.status == "error",
    ))
    progress.finish()
    results = retry_throttled(  # later in the sweep: the provider asked us to slow down
        accounts, results, lambda a: run_account(config, a, dry_run=args.dry_run, now=now))
    result = RunResult(dry_run=args.dry_run, generated_at=now, accounts=results)
    if args.format == "html":
        from retention.page.html import levels_of, to_html

        text = to_html(result, levels_of(config, [a.account for a in result.accounts]))
    elif args.format == "json":
        text = report.to_json(result)
    else:
        text = report.to_text(result)
    _emit(text, args.output)
    for a in result.accounts:
        if a.status == "error":
            print(
                f"retention: account {a.account} failed ({a.error_kind}): {a.error}",
                file=sys.stderr,
            )
    return result.exit_code


def _cmd_usage(config: Config, args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    from retention.errors import RetentionError
    from retention.run.account import measure_account, open_observations
    from retention.service.batch import Progress, run_ordered

    accounts = _sharded(_select(config, args.account), args)
    jobs, per_host = _jobs(config, args)
    progress = Progress(len(accounts))
    try:
        shared: Any = open_observations(config)  # one store for all: see measure_account
    except RetentionError:
        shared = nullcontext()  # each account then reports why it cannot record
    with shared as observations:
        return _print_usage(args, run_ordered(
            accounts, lambda a: measure_account(config, a, observations=observations),
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


def _cmd_history(config: Config, args: argparse.Namespace) -> int:
    from retention.state.history import history

    _select(config, args.account)
    sys.stdout.write(history(config, accounts=args.account, since=args.since, fmt=args.format))
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from retention.archive import ignore_sigxfsz

    # Once, in the main thread, before any worker: writes past RLIMIT_FSIZE then fail with
    # EFBIG (an archive error for that account) instead of killing the process.
    ignore_sigxfsz()
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        path = _config_path(args.config)
        if args.command == "serve":
            from retention.service.serve import serve

            return serve(path)
        config = load_config(path)
        if args.command == "check":
            return _cmd_check(config)
        from retention.sources import load_fleet

        config = load_fleet(config)  # accounts from sources: read now, built lazily
        if args.command == "accounts":
            return _cmd_accounts(config, args)
        if args.command == "run":
            return _cmd_run(config, args)
        if args.command == "usage":
            return _cmd_usage(config, args)
        if args.command == "history":
            return _cmd_history(config, args)
        if args.command == "login":
            from retention.run.logins import device_login

            return device_login(config, args.account, sys.stdout)
        if args.command == "restore":
            return _cmd_restore(config, args)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return ExitCode.USAGE
    except SourceError as e:  # a source cannot be read: no partial fleet is acted on
        print(f"retention: {e}", file=sys.stderr)
        return ExitCode.USAGE
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unknown command {args.command}")
