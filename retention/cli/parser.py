"""The command line's grammar: every subcommand, option, help text and exit code.

This module owns what ``retention --help`` and ``retention SUBCOMMAND --help`` say, and
nothing else: it imports no policy model, so building the parser (``--version``, shell
completion, the man page) stays cheap.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from retention import __version__
from retention.errors import ExitCode


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(ExitCode.USAGE)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="retention", description="Keep IMAP and POP3 mailboxes under quota "
                "without losing mail that matters.")
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
            "-j", "--jobs", type=positive, default=None, metavar="N",
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
    sp.add_argument(
        "--metrics-textfile", type=Path, default=None, metavar="PATH",
        help="also write the run's Prometheus metrics here, atomically, for node_exporter's "
        "textfile collector (PATH must end in .prom; counters carry over from the last file)",
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
    _recover_parser(sub, with_config)
    sp = sub.add_parser("serve", help="run as a service: scheduler + Prometheus metrics")
    with_config(sp)
    return p


def positive(text: str) -> int:
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


def _recover_parser(sub: Any, with_config: Any) -> None:
    sp = sub.add_parser(
        "recover", help="list, or give up on, interrupted actions recovery cannot finish")
    with_config(sp)
    sp.add_argument("--account", required=True, metavar="NAME")
    what = sp.add_mutually_exclusive_group()
    what.add_argument("--list", action="store_true", help="show the open actions (default)")
    what.add_argument("--abandon", action="store_true",
                      help="mark them abandoned; deletes nothing (needs --yes)")
    sp.add_argument("--row", action="append", type=int, default=[], metavar="ID",
                    help="only this journal row (repeatable)")
    sp.add_argument("--yes", action="store_true", help="confirm --abandon")
    sp.add_argument("--format", choices=["text", "json"], default="text")
