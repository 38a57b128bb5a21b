"""Accounts from the systems that already list them: passwd-files, CSV, doveadm, LDAP, SQL.

This package is the only code that reads a source of accounts. It sits above ``config``
(whose ``config.sources`` models say what a source may be) and below ``run``/``service``/
``cli``. What it owns:

* the readers, one module per kind of I/O: ``files`` (passwd-file, csv), ``doveadm``,
  ``ldap`` and ``sql``. **The reader contract**: a module exposes
  ``entries(settings) -> Iterator[Mapping[str, str]]`` (the entries, attribute/column name
  -> value, streamed or paged, never all in memory) and ``probe(settings) -> int | None``
  (reachable and the first page readable; the number of entries if cheaply known).
  Both raise ``errors.SourceError`` naming the source, never a secret;
* ``resolve``: entry -> account (template + entry keys + ``policy_by``);
* ``model``: the compact per-source columns and ``FleetAccounts``, the lazy
  ``Sequence[Account]`` that ``load_fleet`` puts into ``Config.accounts``;
* duplicate names across ``accounts:`` and the sources (an error naming both places).

``load_fleet(config)`` is what the CLI and the service call after ``load_config``.
"""

from __future__ import annotations

import importlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from retention.config.schema import Account, Config
from retention.errors import ConfigError, Problem, SourceError
from retention.sources.model import FleetAccounts, SourceAccounts, Subset
from retention.sources.resolve import Resolver

Entry = Mapping[str, str]
__all__ = ["Entry", "FleetAccounts", "SourceAccounts", "SourceError", "load_fleet",
           "password_holders", "probe_source", "read_source", "schedule_groups",
           "source_lists"]


def _where(spec: Any) -> str:
    path = getattr(spec, "path", None)
    if path is not None:
        return str(path)
    url = getattr(spec, "url", None)
    if isinstance(url, str):
        # An SQL URL may carry a user name; never a password (it comes from password_env).
        return url.split("?", 1)[0]
    return " ".join(getattr(spec, "command", ())) or spec.type


def _module(spec: Any) -> Any:
    name = {"ldap": "ldap", "sql": "sql"}.get(spec.type)
    if name is None:
        return None
    try:
        return importlib.import_module(f"retention.sources.{name}")
    except ImportError as e:
        raise SourceError(spec.name, "config",
                          f"the {spec.type} reader is not available: {e}") from None


def entries(spec: Any) -> Iterable[Entry]:
    """The entries of one source, streamed (see the reader contract above)."""
    if spec.type == "passwd-file":
        from retention.sources.files import PasswdFile

        return PasswdFile(spec)
    if spec.type == "csv":
        from retention.sources.files import CsvFile

        return CsvFile(spec)
    if spec.type == "doveadm":
        from retention.sources.doveadm import Doveadm

        return Doveadm(spec)
    read: Callable[[Any], Iterator[Entry]] = _module(spec).entries
    return read(spec)


def probe_source(spec: Any) -> int | None:
    """Reachable and readable? The entry count if cheaply known (``check``)."""
    if spec.type in ("passwd-file", "csv"):
        from retention.sources.files import probe_file

        probe_file(spec.path, spec.name)
        return None
    if spec.type == "doveadm":
        return None  # running it is the probe: load_fleet does
    probe: Callable[[Any], int | None] = _module(spec).probe
    return probe(spec)


def read_source(config: Config, spec: Any) -> SourceAccounts:
    """Read one source and resolve its entries (template, entry keys, ``policy_by``).

    Raises:
        SourceError: the source cannot be read.
    """
    resolver = Resolver(config, spec, _where(spec))
    try:
        return resolver.add_all(entries(spec))
    except SourceError:
        raise
    except (OSError, ValueError) as e:  # a reader's unexpected failure, still per source
        raise SourceError(spec.name, "query", f"{type(e).__name__}: {e}") from None


def _place(config: Config, src: SourceAccounts | None, j: int) -> str:
    if src is None:
        return f"accounts.{j}"
    pos = src.line[j]
    if "://" in src.where or not src.where.startswith("/"):
        return f"source {src.source} (entry {pos})"
    return f"source {src.source} ({src.where}:{pos})"


def assemble(config: Config, lists: Sequence[SourceAccounts]) -> Config:
    """``config`` whose ``accounts`` are the explicit ones plus the sources' (lazy).

    Raises:
        ConfigError: a name is listed twice (naming both places).
    """
    fleet = FleetAccounts(config.accounts, lists)
    index: dict[str, int] = {}
    problems: list[Problem] = []
    for i, name in enumerate(fleet.names()):
        first = index.setdefault(name, i)
        if first != i and len(problems) < 50:
            a = _place(config, *fleet.locate(first))
            b = _place(config, *fleet.locate(i))
            problems.append(Problem(None, None, "", f"{config.source}: account {name!r} "
                                    f"is listed twice: {a} and {b}"))
    if problems:
        raise ConfigError(problems)
    fleet.set_index(index)
    return config.model_copy(update={"accounts": fleet})


def load_fleet(
    config: Config,
    *,
    previous: Mapping[str, SourceAccounts] | None = None,
    on_error: Callable[[SourceError], None] | None = None,
) -> Config:
    """Read every source of ``config`` and return it with all its accounts.

    A source that fails raises ``SourceError`` unless ``on_error`` is given: then it is
    called and the source's list from ``previous`` (its last good one) is used, or none.
    """
    if not config.sources:
        return config
    lists: list[SourceAccounts] = []
    for spec in config.sources:
        try:
            lists.append(read_source(config, spec))
        except SourceError as e:
            if on_error is None:
                raise
            on_error(e)
            kept = (previous or {}).get(spec.name)
            if kept is not None:
                lists.append(kept)
    return assemble(config, lists)


def schedule_groups(config: Config) -> dict[str, Sequence[Account]]:
    """schedule -> its accounts in account order, without building an account per entry.

    An entry's schedule depends only on its prototype and policy (``account.schedule``
    or the policy's), so it is computed once per (prototype, policy) pair.
    """
    groups: dict[str, array[int]] = {}
    fleet = config.accounts
    explicit = fleet.explicit if isinstance(fleet, FleetAccounts) else fleet
    for i, account in enumerate(explicit):
        groups.setdefault(config.schedule_of(account), array("I")).append(i)
    if isinstance(fleet, FleetAccounts):
        offset = len(explicit)
        for src in fleet.sources:
            cache: dict[tuple[int, int], array[int]] = {}
            for j in range(len(src)):
                key = src.schedule_key(j)
                bucket = cache.get(key)
                if bucket is None:
                    proto = src.prototypes[key[0]]
                    schedule = proto.schedule or config.policies[src.policies[key[1]]].schedule
                    bucket = cache[key] = groups.setdefault(schedule, array("I"))
                bucket.append(offset + j)
            offset += len(src)
    return {s: Subset(fleet, idx) for s, idx in groups.items()}


def password_holders(config: Config) -> Iterator[Account]:
    """One account per distinct password source: ``accounts:`` and each prototype."""
    fleet = config.accounts
    if not isinstance(fleet, FleetAccounts):
        yield from fleet
        return
    yield from fleet.explicit
    for src in fleet.sources:
        yield from src.prototypes


def source_lists(config: Config) -> dict[str, SourceAccounts]:
    """The per-source lists inside a loaded fleet (by source name)."""
    fleet = config.accounts
    if not isinstance(fleet, FleetAccounts):
        return {}
    return {s.source: s for s in fleet.sources}
