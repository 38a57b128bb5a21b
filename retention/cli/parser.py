"""The command line's grammar: every subcommand, option, help text, example and exit code.

This module owns what ``retention --help`` and ``retention SUBCOMMAND --help`` say (and so
what the generated man page and shell completions say): each subcommand has a one-line
summary, a description, every option explained, examples and its exit codes (an epilog).
It imports no policy model, so building the parser (``--version``, ``completion``,
``man``) stays cheap.

``-v``/``-q`` are accepted before and after the subcommand (``retention -v run`` and
``retention run -v``); ``verbosity(args)`` adds them up.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from retention import __version__
from retention.errors import ExitCode

SUMMARY = "Keep IMAP and POP3 mailboxes under quota without losing mail that matters."

VERBOSE_HELP = (
    "more log output on stderr, repeatable: -v info, -vv debug (the retention logger "
    "only), -vvv every library's debug too (imapclient's IMAP wire log, passwords scrubbed)"
)
QUIET_HELP = "only errors on stderr (no warnings, no progress line)"

# What each exit code means for most commands; a command may say more (``_Command.exits``).
EXIT_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.FAILED: "an account failed (the others still ran)",
    ExitCode.USAGE: "usage or policy file error: each problem printed as "
    "FILE:LINE: field: message; retrying will not help",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C, SIGINT)",
}
LOCKED_EXIT = (
    "an account failed, or was skipped because another agent holds its lock "
    "(exit 0 for those with --skip-locked-ok; an account skipped by --once-within is "
    "not counted)"
)


@dataclass(frozen=True)
class _Command:
    """One subcommand's texts: the parser's help, description and epilog come from here."""

    name: str
    summary: str  # one line, lower case, no full stop (the command list)
    description: str
    examples: tuple[tuple[str, str], ...]  # (command line, what it does)
    exits: tuple[tuple[ExitCode, str], ...] = ()  # overrides of EXIT_MEANINGS
    codes: tuple[ExitCode, ...] = (
        ExitCode.OK, ExitCode.FAILED, ExitCode.USAGE, ExitCode.INTERRUPTED,
    )

    def exit_lines(self) -> list[tuple[int, str]]:
        special = dict(self.exits)
        return [(int(c), special.get(c, EXIT_MEANINGS[c])) for c in self.codes]

    def epilog(self) -> str:
        lines = ["examples:"]
        for cmd, what in self.examples:
            lines += [f"  {cmd}", f"      {what}"]
        return "\n".join([*lines, "", "exit status:", *_exit_lines(self.exit_lines())])


_NO_ACCOUNT = (ExitCode.OK, ExitCode.USAGE, ExitCode.INTERRUPTED)

COMMANDS: tuple[_Command, ...] = (
    _Command(
        "check", "validate a policy file and print the effective policy",
        "Load the policy file, report each problem as FILE:LINE: field: message, print "
        "warnings, and print the effective policy of every account with each default "
        "filled in (the clock of each rule, the quota levels). Account sources are read and "
        "summarised. No mail server is contacted unless --connect is given: it then logs in "
        "to every account (those from sources too) read-only and reports the capabilities "
        "that matter; --archives re-reads every archived copy of the audit history and "
        "compares its SHA-256 with the recorded one. Neither changes a mailbox, an archive "
        "or the state folder.",
        (("retention check -c policies/site.yaml", "validate and show the effective policy"),
         ("RETENTION_CONFIG=site.yaml retention check", "the same, the file from the "
          "environment"),
         ("retention check -c site.yaml --connect",
          "log in to every account: UIDPLUS, MOVE, QUOTA, CONDSTORE, SPECIAL-USE"),
         ("retention check -c site.yaml --archives --account alice",
          "re-hash alice's archived copies against the audit history")),
        exits=((ExitCode.OK, "the policy file is valid (with --connect: every login worked; "
                "with --archives: every copy is intact)"),
               (ExitCode.FAILED, "with --connect: a login failed or a server lacks UIDPLUS "
                "(POP3: UIDL); with --archives: a copy is missing or changed")),
    ),
    _Command(
        "run", "one pass over the accounts (add --dry-run to only report)",
        "Measure each account against its limit and delete, move or archive what its "
        "policy lets go, down to quota.clean_to. Archives are copied, made durable and "
        "verified before anything is deleted; every removal is journalled and kept in the "
        "audit history. With --dry-run nothing is changed (folders are EXAMINEd, bodies "
        "peeked) and the report says what would happen and why.",
        (("retention run -c site.yaml --dry-run", "what would go, and why (read-only)"),
         ("retention run -c site.yaml --dry-run --list-kept --account alice",
          "also each message that stays, and why (borg prune --list-kept)"),
         ("retention run -c site.yaml --metrics-textfile /var/lib/node_exporter/retention.prom",
          "from a timer: the run's metrics for node_exporter's textfile collector"),
         ("retention run -c site.yaml --account alice -v", "one account, with info logs"),
         ("retention run -c site.yaml --format json --output /var/lib/retention/last.json",
          "the JSON report, written atomically"),
         ("retention run -c site.yaml --shard 2/8 --once-within 12h",
          "shard 2 of 8, skipping accounts another agent finished within 12 h")),
        exits=((ExitCode.OK, "every account succeeded (or was skipped by --once-within)"),
               (ExitCode.FAILED, LOCKED_EXIT)),
    ),
    _Command(
        "usage", "measure usage against the limit, change nothing",
        "Log in to each account read-only and print its usage, limit and ratio (the server's "
        "QUOTA, else the summed message sizes against the policy's quota.limit); each "
        "measurement is recorded for the fill-up forecast.",
        (("retention usage -c site.yaml", "a table of every account"),
         ("retention usage -c site.yaml --format json --jobs 8", "JSON, 8 accounts at once")),
        exits=((ExitCode.OK, "every account was measured"),
               (ExitCode.FAILED, "an account could not be measured (the others were)")),
    ),
    _Command(
        "accounts", "every account the file and its sources resolve to, with its policy",
        "List every account of the policy file and of its sources (passwd-file, CSV, "
        "doveadm, LDAP, SQL) with its policy, the rule that chose it, its credential and "
        "host. No mail server is contacted.",
        (("retention accounts -c site.yaml", "a table"),
         ("retention accounts -c site.yaml --format csv --shard 0/4",
          "the accounts shard 0 of 4 owns, as CSV")),
        exits=((ExitCode.USAGE, "the policy file, an option or a source is wrong or "
                "unreadable"),),
        codes=_NO_ACCOUNT,
    ),
    _Command(
        "history", "the audit log of what the agent removed",
        "Print the audit history kept in state_dir: every message the agent deleted, moved "
        "or archived, when, by which rule and run, and where its archive copy is.",
        (("retention history -c site.yaml --since 30d", "the last 30 days"),
         ("retention history -c site.yaml --account alice --format csv", "one account, CSV")),
        codes=_NO_ACCOUNT,
    ),
    _Command(
        "login", "sign in once for an account's device-code credential (Microsoft 365)",
        "For an account whose credential has flow: device, print the code to enter at the "
        "provider's sign-in page, wait for the sign-in and store the refresh token in "
        "state_dir for later runs.",
        (("retention login -c site.yaml alice", "sign in for alice's credential"),),
        exits=((ExitCode.FAILED, "the sign-in failed or timed out"),),
    ),
    _Command(
        "restore", "put archived messages back into the mailbox",
        "Find archived messages in the audit history (by run, time, Message-ID or folder), "
        "read them back from their archive and append them to their original folder (or "
        "--to-folder), or write them to an mbox. Restored mail is exempt from every rule "
        "for the policy's restore_grace.",
        (("retention restore -c site.yaml --account alice --since 7d --dry-run",
          "what the last 7 days' runs archived, restoring nothing"),
         ("retention restore -c site.yaml --account alice --run 20261128T030000Z-1a2b3c",
          "put back what one run removed"),
         ("retention restore -c site.yaml --account bob --export-mbox bob.mbox",
          "write the archived messages to an mbox (POP3 accounts)")),
        exits=((ExitCode.OK, "every selected message was restored (or would be)"),
               (ExitCode.FAILED, "a message could not be restored")),
    ),
    _Command(
        "recover", "list, or give up on, interrupted actions recovery cannot finish",
        "Every run first finishes what an interrupted run left in the journal; when it "
        "cannot (an archive copy cannot be verified: its target was removed, is unreadable "
        "or gone), the account fails on every run. --list shows those open actions; "
        "--abandon --yes gives up on them. Abandoning only changes the journal: no server "
        "is contacted and no message or archive file is touched, so no mail is lost (a "
        "message may be archived again later: a duplicate, never a loss).",
        (("retention recover -c site.yaml --account alice", "list alice's stuck actions"),
         ("retention recover -c site.yaml --account alice --abandon --row 12 --yes",
          "give up on journal row 12")),
        exits=((ExitCode.OK, "listed, or abandoned"),
               (ExitCode.FAILED, "another agent is processing the account: try again later"),
               (ExitCode.USAGE, "--abandon without --yes, or a usage or policy file error")),
    ),
    _Command(
        "serve", "run as a service: scheduler + Prometheus metrics",
        "Run each account's schedule and a measurement every service.measure_every, with "
        "bounded concurrency, and serve /metrics, /healthz and /readyz on "
        "service.metrics_port. SIGHUP reloads the policy file (the old one stays if the new "
        "one is invalid); SIGTERM finishes the accounts in flight and exits. Logs are logfmt "
        "on stderr (log_format: json for JSON).",
        (("retention serve -c site.yaml", "scheduler and metrics on :9478"),
         ("RETENTION_METRICS_PORT=9100 RETENTION_LOG_FORMAT=json retention serve -c site.yaml",
          "another port, JSON logs")),
        exits=((ExitCode.OK, "stopped by SIGTERM/SIGINT after a clean shutdown"),
               (ExitCode.FAILED, "the accounts in flight did not finish within "
                "service.shutdown_timeout"),
               (ExitCode.USAGE, "the policy file or a setting is wrong, or the metrics port "
                "cannot be bound")),
        codes=(ExitCode.OK, ExitCode.FAILED, ExitCode.USAGE),
    ),
    _Command(
        "completion", "print a shell completion script (bash, zsh or fish)",
        "Print a completion script for the shell, generated from this parser.",
        (("retention completion bash > /etc/bash_completion.d/retention",
          "bash, for every user"),
         ("retention completion zsh > ~/.zfunc/_retention", "zsh (~/.zfunc in $fpath)"),
         ("retention completion fish > ~/.config/fish/completions/retention.fish", "fish")),
        codes=(ExitCode.OK, ExitCode.USAGE),
    ),
    _Command(
        "man", "print the manual page (roff), generated from this parser",
        "Print the retention(1) manual page: every command, option, example and exit code.",
        (("retention man | man -l -", "read it now"),
         ("retention man > /usr/local/share/man/man1/retention.1", "install it")),
        codes=(ExitCode.OK, ExitCode.USAGE),
    ),
)
BY_NAME = {c.name: c for c in COMMANDS}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(ExitCode.USAGE)


class _Formatter(argparse.HelpFormatter):
    """Wraps one-paragraph texts (descriptions) as usual; keeps the layout of texts with
    lines of their own (epilogs: examples, exit codes)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _exit_lines(lines: Sequence[tuple[int, str]]) -> list[str]:
    out: list[str] = []
    for code, text in lines:
        out += textwrap.wrap(text, 78, initial_indent=f"  {code:<4}", subsequent_indent=" " * 6,
                             break_on_hyphens=False)
    return out


def _top_epilog() -> str:
    lines = ["Run 'retention COMMAND --help' for a command's options, examples and exit",
             "codes; 'retention man' prints the manual page.", "", "exit status:"]
    lines += _exit_lines([(int(c), t) for c, t in EXIT_MEANINGS.items()])
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="retention", description=SUMMARY, epilog=_top_epilog(),
                formatter_class=_Formatter)
    p.add_argument("--version", action="version", version=f"retention {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE_HELP)
    p.add_argument("-q", "--quiet", action="count", default=0, help=QUIET_HELP)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser,
                           metavar="COMMAND", title="commands")
    # The same flags after the subcommand, under other names: a subparser's defaults would
    # otherwise overwrite what was given before it (``retention -v run``).
    common = _Parser(add_help=False)
    common.add_argument("-v", "--verbose", dest="sub_verbose", action="count", default=0,
                        help=VERBOSE_HELP)
    common.add_argument("-q", "--quiet", dest="sub_quiet", action="count", default=0,
                        help=QUIET_HELP)

    def add(name: str) -> argparse.ArgumentParser:
        c = BY_NAME[name]
        return sub.add_parser(
            name, help=c.summary, description=c.description,
            epilog=c.epilog(), formatter_class=_Formatter, parents=[common],
        )

    for name, build in _BUILDERS.items():
        build(add(name))
    return p


def verbosity(args: argparse.Namespace) -> int:
    """-v minus -q, before and after the subcommand: 0 is the default (warnings)."""
    verbose = args.verbose + getattr(args, "sub_verbose", 0)
    quiet = args.quiet + getattr(args, "sub_quiet", 0)
    return int(verbose - quiet)


# -- the options of each subcommand -------------------------------------------------------


def _config(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("-c", "--config", type=Path, default=None, metavar="FILE",
                    help="the policy file (default: $RETENTION_CONFIG)")


def _jobs(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "-j", "--jobs", type=positive, default=None, metavar="N",
        help="accounts at once, 1 to 256 (default: service.concurrency; at most "
        "service.max_connections_per_host per host)",
    )


def _shard(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--shard", default=None, metavar="I/N",
        help="only the accounts shard I of N owns (rendezvous hash of the name; "
        "default $RETENTION_SHARD, else all)",
    )


def _accounts(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--account", action="append", default=[], metavar="NAME",
                    help="only this account (repeatable; default: every account)")


def _format(sp: argparse.ArgumentParser, choices: Sequence[str], extra: str = "") -> None:
    sp.add_argument("--format", choices=list(choices), default="text",
                    help=f"output format: {', '.join(choices)} (default: text){extra}")


def _check(sp: argparse.ArgumentParser) -> None:
    _config(sp)
    sp.add_argument(
        "--connect", action="store_true",
        help="also log in to every account read-only (no folder selected, nothing written) "
        "and report its capabilities, special-use folders and quota "
        "(e.g. retention check -c site.yaml --connect --account alice)",
    )
    sp.add_argument(
        "--archives", action="store_true",
        help="also re-read every archived copy in the audit history and compare its "
        "SHA-256 with the recorded one (e.g. retention check -c site.yaml --archives)",
    )
    sp.add_argument("--account", action="append", default=[], metavar="NAME",
                    help="with --connect/--archives: only this account (repeatable)")
    _jobs(sp)


def _run(sp: argparse.ArgumentParser) -> None:
    _config(sp)
    sp.add_argument("--dry-run", action="store_true",
                    help="read-only: report what would happen, change nothing")
    _accounts(sp)
    _format(sp, ("text", "json", "html"), "; html is one self-contained page, for --output")
    sp.add_argument("--output", type=Path, default=None, metavar="PATH",
                    help="write the report to PATH (atomically) instead of stdout")
    sp.add_argument(
        "--list-kept", action="store_true",
        help="list every kept message with its reason (protected, keep_within, no rule, "
        "capped, ...), not only the counts per folder and reason that every report has",
    )
    _jobs(sp)
    _shard(sp)
    sp.add_argument(
        "--once-within", default=None, metavar="DURATION",
        help="skip accounts another agent sharing state_url finished this recently "
        "(e.g. 12h; overrides leases.once_within); such skips do not fail the run",
    )
    sp.add_argument(
        "--metrics-textfile", type=Path, default=None, metavar="PATH",
        help="also write the run's Prometheus metrics here, atomically, for node_exporter's "
        "textfile collector (PATH must end in .prom; counters carry over from the last file)",
    )
    sp.add_argument(
        "--skip-locked-ok", action="store_true",
        help="exit 0 although an account was skipped because another agent holds its lock "
        "(a timer overlapping 'retention serve', agents on overlapping shards)",
    )


def _usage(sp: argparse.ArgumentParser) -> None:
    _config(sp)
    _accounts(sp)
    _format(sp, ("text", "json"))
    _jobs(sp)
    _shard(sp)


def _accounts_cmd(sp: argparse.ArgumentParser) -> None:
    _config(sp)
    _format(sp, ("text", "json", "csv"))
    _shard(sp)


def _history(sp: argparse.ArgumentParser) -> None:
    _config(sp)
    _accounts(sp)
    sp.add_argument("--since", default=None, metavar="WHEN",
                    help="only entries newer than this: a duration ago (30d) or a date")
    _format(sp, ("text", "json", "csv"))


def _login(sp: argparse.ArgumentParser) -> None:
    _config(sp)
    sp.add_argument("account", metavar="ACCOUNT",
                    help="the account whose device-code credential to sign in for")


def _restore(sp: argparse.ArgumentParser) -> None:
    _config(sp)
    sp.add_argument("--account", required=True, metavar="NAME",
                    help="the account to restore to (required)")
    sp.add_argument("--run", default=None, metavar="RUN_ID",
                    help="only what this run removed (run ids are in the report and history)")
    sp.add_argument("--since", default=None, metavar="WHEN",
                    help="removed at or after: a duration ago (30d) or a date")
    sp.add_argument("--until", default=None, metavar="WHEN",
                    help="removed before: a duration ago (30d) or a date")
    sp.add_argument("--message-id", action="append", default=[], metavar="ID",
                    help="only the message with this Message-ID (repeatable)")
    sp.add_argument("--folder", default=None, metavar="FOLDER",
                    help="only messages removed from this folder")
    sp.add_argument("--to-folder", default=None, metavar="FOLDER",
                    help="restore into this folder instead of the original one")
    sp.add_argument("--export-mbox", type=Path, default=None, metavar="PATH",
                    help="write the selection to an mbox instead (the only way for POP3)")
    sp.add_argument("--dry-run", action="store_true",
                    help="show what would be restored, change nothing")
    _format(sp, ("text", "json"))


def _recover(sp: argparse.ArgumentParser) -> None:
    _config(sp)
    sp.add_argument("--account", required=True, metavar="NAME",
                    help="the account whose interrupted actions to list or abandon (required)")
    what = sp.add_mutually_exclusive_group()
    what.add_argument("--list", action="store_true", help="show the open actions (default)")
    what.add_argument("--abandon", action="store_true",
                      help="mark them abandoned; deletes nothing (needs --yes)")
    sp.add_argument("--row", action="append", type=int, default=[], metavar="ID",
                    help="only this journal row (repeatable; ids from --list)")
    sp.add_argument("--yes", action="store_true", help="confirm --abandon")
    _format(sp, ("text", "json"))


def _serve(sp: argparse.ArgumentParser) -> None:
    _config(sp)


SHELLS = ("bash", "zsh", "fish")


def _completion(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("shell", choices=SHELLS, help="the shell: " + ", ".join(SHELLS))


def _man(sp: argparse.ArgumentParser) -> None:
    del sp  # no options of its own


_BUILDERS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "check": _check, "run": _run, "usage": _usage, "accounts": _accounts_cmd,
    "history": _history, "login": _login, "restore": _restore, "recover": _recover,
    "serve": _serve,
    "completion": _completion, "man": _man,
}


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError("must be between 1 and 256")
    return value
