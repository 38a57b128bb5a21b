"""The only code that parses the command line: the ``retention`` command's entry point.

``parser`` is the grammar (help texts, examples, exit codes), ``common`` the selection
flags every subcommand shares, ``check`` and ``commands`` the subcommands; ``main``
dispatches and maps errors to ``ExitCode``: 0 every account succeeded; 1 an account
failed (the others still ran); 2 a usage or configuration error (each problem printed as
``FILE:LINE: field: message``, never a traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from retention.cli.parser import build_parser
from retention.errors import ConfigError, ExitCode, SourceError


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from retention.archive import ignore_sigxfsz

    # Once, in the main thread, before any worker: writes past RLIMIT_FSIZE then fail with
    # EFBIG (an archive error for that account) instead of killing the process.
    ignore_sigxfsz()
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
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
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    from retention.cli import check, commands
    from retention.cli.common import config_path
    from retention.config.load import load_config

    command = args.command
    path = config_path(args.config)
    if command == "serve":
        from retention.service.serve import serve

        return serve(path)
    config = load_config(path)
    if command == "check":
        return check.cmd_check(config)
    from retention.sources import load_fleet

    config = load_fleet(config)  # accounts from sources: read now, built lazily
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
