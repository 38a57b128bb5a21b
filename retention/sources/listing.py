"""What ``retention accounts`` and ``check`` print about a fleet (formatting only).

``account_rows`` streams one row per account (explicit accounts and every source's) with
its policy, credential name (never a secret), host and what chose its policy;
``write_accounts`` prints them as text, JSON or CSV without holding them all;
``describe_sources`` is ``check``'s summary of each source.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from retention.config.schema import Account, Config
from retention.sources.model import FleetAccounts, SourceAccounts

COLUMNS = ("name", "username", "protocol", "host", "port", "policy", "policy_from",
           "credentials", "login_as", "source")


def _row(a: Account, source: str, chosen: str) -> dict[str, Any]:
    cred = a.credential
    return {
        "name": a.name,
        "username": a.username,
        "protocol": a.protocol,
        "host": a.host,
        "port": a.effective_port(),
        "policy": a.policy,
        "policy_from": chosen,
        "credentials": a.credentials or "",
        "login_as": getattr(cred, "login_as", None) or (cred.type if cred is not None else "user"),
        "source": source,
    }


def account_rows(
    config: Config, keep: Callable[[str], bool] | None = None
) -> Iterator[dict[str, Any]]:
    """Every account's row; with ``keep``, only those whose name it keeps (``--shard``)."""
    rows = _all_rows(config)
    return rows if keep is None else (r for r in rows if keep(r["name"]))


def _all_rows(config: Config) -> Iterator[dict[str, Any]]:
    fleet = config.accounts
    if not isinstance(fleet, FleetAccounts):
        for a in fleet:
            yield _row(a, "accounts", "account")
        return
    for a in fleet.explicit:
        yield _row(a, "accounts", "account")
    for src in fleet.sources:
        for j in range(len(src)):
            yield _row(src.account(j), src.source, src.chosen_by(j))


def write_accounts(
    config: Config, fmt: str, out: TextIO, keep: Callable[[str], bool] | None = None
) -> int:
    """Print every account (those ``keep`` keeps); returns how many."""
    n = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in account_rows(config, keep):
            writer.writerow(row)
            n += 1
        return n
    if fmt == "json":
        out.write("[")
        for row in account_rows(config, keep):
            out.write(("\n  " if n == 0 else ",\n  ") + json.dumps(row, sort_keys=False))
            n += 1
        out.write("\n]\n" if n else "]\n")
        return n
    for row in account_rows(config, keep):
        cred = f" credentials={row['credentials']} ({row['login_as']})" if row["credentials"] \
            else ""
        out.write(f"{row['name']}: {row['protocol']} {row['host']}:{row['port']} "
                  f"user={row['username']} policy={row['policy']} "
                  f"(from {row['policy_from']}){cred} source={row['source']}\n")
        n += 1
    return n


def describe_source(config: Config, spec: Any, got: SourceAccounts | None,
                    probed: int | None) -> list[str]:
    """``check``'s lines for one source (``got``: what reading it yielded)."""
    out = [f"source {spec.name}: {spec.type} {_target(spec)} refresh={_dur(spec)}"]
    template = ", ".join(f"{k}={v}" for k, v in sorted(spec.account.items()))
    out.append(f"  account template: {template or '(none)'}")
    for i, rule in enumerate(spec.policy_by):
        out.append(f"  policy_by[{i}]: {rule.describe()} -> {rule.policy}")
    if got is None:
        return out
    counts: dict[str, int] = {}
    for j in range(len(got)):
        counts[got.policies[got.policy[j]]] = counts.get(got.policies[got.policy[j]], 0) + 1
    per = ", ".join(f"{p}={n}" for p, n in sorted(counts.items()))
    hint = f" (the server reports {probed})" if probed is not None else ""
    out.append(f"  yields {len(got)} accounts{hint}" + (f": {per}" if per else ""))
    creds = sorted({p.credentials or "own password" for p in got.prototypes})
    if got.prototypes:
        out.append(f"  logs in with: {', '.join(creds)}")
    if got.skipped_count:
        out.append(f"  skipped {got.skipped_count} entries:")
        out.extend(f"    {s}" for s in got.skipped)
        if got.skipped_count > len(got.skipped):
            out.append(f"    ... and {got.skipped_count - len(got.skipped)} more")
    return out


def _target(spec: Any) -> str:
    for key in ("path", "url"):
        value = getattr(spec, key, None)
        if value is not None:
            return str(value).split("?", 1)[0]
    return " ".join(getattr(spec, "command", ()))


def _dur(spec: Any) -> str:
    from retention.config.units import format_duration

    return format_duration(spec.refresh)
