"""What every subcommand shares: finding the policy file, choosing accounts, writing output.

This module owns how the command line's selection flags (``--account``, ``--shard``,
``--once-within``, ``--since``/``--until``) become accounts and moments, and how a
report reaches ``--output`` (whole, by an atomic rename).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from retention.config.schema import Account, Config
from retention.config.shard import Shard, ShardSpecError, parse_shard
from retention.config.units import parse_duration
from retention.errors import ConfigError


def config_path(arg: Path | None) -> Path:
    if arg is not None:
        return arg
    env = os.environ.get("RETENTION_CONFIG")
    if env:
        return Path(env)
    raise ConfigError("no policy file: pass -c FILE or set RETENTION_CONFIG")


def shard_of(arg: str | None) -> Shard | None:
    """``--shard``, else ``RETENTION_SHARD``, else None (every account)."""
    text = arg if arg is not None else os.environ.get("RETENTION_SHARD") or None
    if text is None:
        return None
    try:
        return parse_shard(text)
    except ShardSpecError as e:
        raise ConfigError(f"--shard: {e}") from None


def sharded(accounts: Sequence[Account], args: argparse.Namespace) -> Sequence[Account]:
    shard = shard_of(args.shard)
    return accounts if shard is None else list(shard.select(accounts, lambda a: a.name))


def with_once_within(config: Config, text: str | None) -> Config:
    if text is None:
        return config
    try:
        once = parse_duration(text)
    except ValueError as e:
        raise ConfigError(f"--once-within: {e}") from None
    leases = config.leases.model_copy(update={"once_within": once})
    return config.model_copy(update={"leases": leases})


def when(text: str | None, flag: str) -> datetime | None:
    """A moment from ``30d`` (that long ago) or an ISO date/time (UTC when naive)."""
    if text is None:
        return None
    try:
        return datetime.now(UTC) - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{flag}: {text!r} is neither a duration (30d) nor a date") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def select(config: Config, names: Sequence[str]) -> Sequence[Account]:
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
        known = sorted(a.name for a in explicit(config))
        more = len(config.accounts) - len(known)
        listed = ", ".join(known) + (f" and {more} from sources" if more else "")
        raise ConfigError(f"unknown account {', '.join(map(repr, unknown))} (known: {listed})")
    order = {n: config.accounts.index(a) for n, a in found.items()}
    return sorted(found.values(), key=lambda a: order[a.name])


def explicit(config: Config) -> Sequence[Account]:
    """The ``accounts:`` of the file (``check`` describes sources by summary instead)."""
    return getattr(config.accounts, "explicit", config.accounts)


def emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(output)


def freeze_startup() -> None:
    """Before a sweep: what start-up made (modules, validated policies, schemas) lives as
    long as the process, so full garbage collections need not walk it again (gc.freeze)."""
    gc.freeze()
