"""``retention check`` and ``retention accounts``: what the policy file says, effective.

This module owns the text of the effective policy (every default filled in) that
``check`` prints, and hands ``accounts`` to the fleet listing.
"""

from __future__ import annotations

import argparse
import sys

from retention.cli.common import explicit, shard_of
from retention.config.load import warnings as config_warnings
from retention.config.schema import Config, effective_allow_empty, effective_clock
from retention.config.units import (
    format_count_or_percent,
    format_duration,
    format_percent,
    format_size,
)
from retention.errors import ConfigError, ExitCode


def describe(config: Config) -> str:
    """The effective policy per account, with every default filled in (``check``)."""
    out = [f"policy file: {config.source}", f"state_dir: {config.state_dir}"]
    for acct in explicit(config):
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
        out.append(f"  schedule: {config.schedule_of(acct)} ({config.service.timezone})")
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


def cmd_check(config: Config, args: argparse.Namespace) -> int:
    from retention.sources.check import check_sources

    for w in config_warnings(config):
        print(f"{config.source}: warning: {w}", file=sys.stderr)
    config, lines = check_sources(config)  # raises ConfigError for unreadable sources
    sys.stdout.write(describe(config))
    if lines:
        sys.stdout.write("\n" + "\n".join(lines) + "\n")
    code: int = ExitCode.OK
    if args.connect or args.archives:
        from retention.cli import probes

        if args.connect:
            code = max(code, probes.cmd_connect(config, args))
        if args.archives:
            code = max(code, probes.cmd_archives(config, args))
    elif args.account:
        raise ConfigError("--account: only with --connect or --archives")
    return code


def cmd_accounts(config: Config, args: argparse.Namespace) -> int:
    from retention.sources.listing import write_accounts

    shard = shard_of(args.shard)
    write_accounts(config, args.format, sys.stdout, shard.owns if shard is not None else None)
    return ExitCode.OK
