"""``retention check --connect`` and ``--archives``: their text and exit codes.

The probes themselves are in ``retention.run.probe``; this module picks the accounts,
runs the logins (``--jobs`` at once, per-host limits as for ``run``) and prints one line
per account, failures also on stderr.
"""

from __future__ import annotations

import argparse
import sys

from retention.cli.common import select
from retention.config.schema import Config
from retention.errors import ExitCode
from retention.report import human_size
from retention.run.probe import (
    ArchiveCheck,
    Probe,
    check_archives,
    probe_account,
    probe_target,
)


def cmd_connect(config: Config, args: argparse.Namespace) -> int:
    from retention.config.providers import host_limits
    from retention.service import logs
    from retention.service.batch import run_ordered

    accounts = select(config, args.account)
    logs.update_secrets(logs.secrets_of(config))  # scrubbed from every log line, as in run
    jobs = args.jobs if args.jobs is not None else config.service.concurrency
    per_host = config.service.max_connections_per_host
    limits = host_limits("max_connections_per_host" in config.service.model_fields_set)
    print("\nconnect (read-only logins):")
    probes = [_show(p) for p in run_ordered(  # shown as they come, in account order
        accounts, lambda a: probe_account(config, a), jobs=jobs, per_host=per_host,
        host_limits=limits, is_error=lambda p: p.failed)]
    if not args.account:  # and the IMAP archive targets the accounts archive to
        for name, target in sorted(config.archives.items()):
            if target.type == "imap":
                probes.append(_show(probe_target(name, target)))
    return ExitCode.FAILED if any(p.failed for p in probes) else ExitCode.OK


def _show(p: Probe) -> Probe:
    print("\n".join(probe_lines(p)), flush=True)
    if p.failed:
        what = "" if p.account.startswith("archive ") else "account "
        print(f"retention: {what}{p.account}: check --connect failed: "
              f"{p.error or 'missing ' + ', '.join(c for c, _ in p.missing)}", file=sys.stderr)
    return p


def probe_lines(p: Probe) -> list[str]:
    head = f"  {p.account}: {p.protocol} {p.where}"
    if p.error is not None:
        return [f"{head}: FAILED ({p.error_kind}): {p.error}"]
    lines = [f"{head}: {'FAILED' if p.failed else 'ok'}; "
             f"has {' '.join(p.present) or 'none of them'}"]
    lines += [f"    missing {c}: {why}" for c, why in p.missing]
    if p.special_use:
        lines.append("    special-use: " + ", ".join(f"{u} {f}" for u, f in p.special_use))
    if p.usage_bytes is not None:
        limit = human_size(p.limit_bytes) if p.limit_bytes else "no limit"
        lines.append(f"    quota: {human_size(p.usage_bytes)} of {limit}")
    return lines


def cmd_archives(config: Config, args: argparse.Namespace) -> int:
    names = [a.name for a in select(config, args.account)] if args.account else []
    checks = check_archives(config, names)
    print("\narchives (copies in the audit history re-read and re-hashed):")
    if not checks:
        print("  no archived copies in the audit history")
    for c in checks:
        print("\n".join(archive_lines(c)))
        for p in c.problems:
            print(f"retention: account {c.account}: archived copy (history row {p.row_id}) "
                  f"not intact: {p.problem}", file=sys.stderr)
    return ExitCode.FAILED if any(c.problems for c in checks) else ExitCode.OK


def archive_lines(c: ArchiveCheck) -> list[str]:
    if not c.problems:
        return [f"  {c.account}: {c.checked} copies intact"]
    lines = [f"  {c.account}: FAILED: {len(c.problems)} of {c.checked} copies not intact"]
    lines += [f"    row {p.row_id} from {p.folder} {p.message_id or ''} at {p.location}: "
              f"{p.problem}" for p in c.problems]
    return lines
