"""The only code that parses the command line: the ``retention`` command's entry point.

``parser`` is the grammar (help texts, examples, exit codes), ``common`` the selection
flags every subcommand shares, ``check`` and ``commands`` the subcommands, ``docs`` the
shell completions and the man page generated from the parser; ``main`` sets up logging
(``service.logs``: logfmt or JSON, ``-v``/``-q``), dispatches and maps errors to
``ExitCode``: 0 success; 1 an account failed (the others still ran) or was skipped
because another agent holds its lock; 2 a usage or configuration error (each problem
printed as ``FILE:LINE: field: message``, never a traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Sequence

from retention.cli.parser import build_parser, verbosity
from retention.errors import ConfigError, ExitCode, SourceError

# A scan holds one object per message and none of them is garbage, yet the collector's
# default pace (a young collection every 700 allocations, full ones as the heap grows)
# spent 0.32 s of a 200,000-message dry-run walking them again; at this pace, with the
# start-up heap frozen (``common.freeze_startup``), 0.08 s (bench/README.md). Cycles are
# still collected, a little later.
GC_THRESHOLDS = (50_000, 10, 10)


def main(argv: Sequence[str] | None = None) -> int:
    thresholds = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        return _main(argv)
    finally:  # as it was, for a caller in the same process (tests, an embedding)
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("completion", "man"):
        from retention.cli.docs import cmd_docs

        return cmd_docs(args)
    from retention.archive import ignore_sigxfsz
    from retention.service import logs

    # Once, in the main thread, before any worker: writes past RLIMIT_FSIZE then fail with
    # EFBIG (an archive error for that account) instead of killing the process.
    ignore_sigxfsz()
    # The environment's format until the policy file is read (its service.log_format).
    env_format = os.environ.get("RETENTION_LOG_FORMAT", "").strip().lower()
    logs.configure_cli(verbosity(args), "json" if env_format == "json" else "logfmt")
    try:
        return _dispatch(args)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return ExitCode.USAGE
    except SourceError as e:  # a source cannot be read: no partial fleet is acted on
        print(f"retention: {e}", file=sys.stderr)
        return ExitCode.USAGE
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED


def _dispatch(args: argparse.Namespace) -> int:
    from retention.cli import check, commands
    from retention.cli.common import config_path
    from retention.config.load import load_config
    from retention.config.settings import resolve_settings
    from retention.service import logs

    command = args.command
    path = config_path(args.config)
    if command == "serve":
        from retention.service.serve import serve

        return serve(path)
    config = load_config(path)
    # Same format and the same scrubbing as serve: RETENTION_LOG_FORMAT over the file's.
    logs.set_format(resolve_settings(config.service).log_format)
    if command == "check":
        return check.cmd_check(config, args)
    from retention.sources import load_fleet

    config = load_fleet(config)  # accounts from sources: read now, built lazily
    if command in ("run", "usage", "login", "restore"):  # the ones that log in
        logs.update_secrets(logs.secrets_of(config))
    if command == "accounts":
        return check.cmd_accounts(config, args)
    if command == "run":
        return commands.cmd_run(config, args)
    if command == "usage":
        return commands.cmd_usage(config, args)
    if command == "history":
        return commands.cmd_history(config, args)
    if command == "login":
        from retention.run.logins import device_login

        return device_login(config, args.account, sys.stdout)
    if command == "restore":
        return commands.cmd_restore(config, args)
    if command == "recover":
        return commands.cmd_recover(config, args)
    raise AssertionError(f"unknown command {command}")


__all__ = ["main"]
