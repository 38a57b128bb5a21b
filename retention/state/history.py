"""``retention history``: the audit log of what the agent removed, from the journal.

This module owns the query (completed removals: ``deleted`` and ``moved`` journal rows,
each removal exactly once, plus the messages ``retention restore`` put back, with
``action: restore``, and the interrupted actions an operator gave up on with ``retention
recover --abandon``, with ``action: abandoned`` (nothing was removed for those; ``reason``
says where the message was left); oldest first) and its three renderings:

* ``text``: a table, one line per removal, and a count.
* ``json``: ``{"entries": [ENTRY, ...]}``.
* ``csv``: a header line with the ENTRY keys, then one row per removal.

ENTRY keys: ``when`` (completion time, UTC ISO 8601), ``account``, ``folder``,
``message_id``, ``date`` (the message's received time), ``size``, ``rule``, ``action``
(``delete`` | ``trash`` | ``move`` | ``archive`` | ``restore`` | ``abandoned``), ``to_folder``,
``archive`` (target name),
``archive_location``, ``sha256`` (of the source bytes, archive only), ``uid``,
``uidvalidity``, ``uidl``, ``reason``, ``run_id``. Absent values are ``null`` (empty in CSV).
It reads the journal only (the shared PostgreSQL one with ``state_url``: every agent's
removals); it never connects to a mail server.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retention.config.units import format_duration, parse_duration
from retention.errors import ConfigError
from retention.state import StateDir
from retention.state.journal import Journal, JournalRow

if TYPE_CHECKING:
    from retention.config.schema import Config

FIELDS = (
    "when", "account", "folder", "message_id", "date", "size", "rule", "action", "to_folder",
    "archive", "archive_location", "sha256", "uid", "uidvalidity", "uidl", "reason", "run_id",
)


def entry(row: JournalRow) -> dict[str, Any]:
    def iso(when: datetime | None) -> str | None:
        return when.astimezone(UTC).isoformat() if when else None

    return {
        "when": iso(row.done_at or row.updated),
        "account": row.account,
        "folder": row.folder,
        "message_id": row.message_id,
        "date": iso(row.internal_date),
        "size": row.size,
        "rule": row.rule,
        "action": row.action,
        "to_folder": row.to_folder,
        "archive": row.target,
        "archive_location": row.location if row.action == "archive" else None,
        "sha256": row.sha256,
        "uid": row.uid,
        "uidvalidity": row.uidvalidity if row.uid is not None else None,
        "uidl": row.uidl,
        "reason": row.reason,
        "run_id": row.run_id,
    }


def query(
    journal: Journal,
    *,
    accounts: Sequence[str] = (),
    since: datetime | timedelta | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """The removals, oldest first; ``since`` is a moment or an age (``timedelta``)."""
    if isinstance(since, timedelta):
        since = _moment(since, now)
    rows = journal.removals(since=since)
    wanted = set(accounts)
    return [entry(r) for r in rows if not wanted or r.account in wanted]


def _moment(age: timedelta, now: datetime | None) -> datetime:
    try:
        return (now or datetime.now(UTC)) - age
    except OverflowError:
        # An age older than year 1 (e.g. ``--since 2700000y``): say so, no traceback.
        raise ConfigError(f"--since: {format_duration(age)} reaches back before year 1; "
                          "use a smaller age") from None


def render(entries: Sequence[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps({"entries": list(entries)}, indent=2, ensure_ascii=False) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        for e in entries:
            writer.writerow({k: "" if e[k] is None else e[k] for k in FIELDS})
        return out.getvalue()
    if fmt == "text":
        return _text(entries)
    raise ConfigError(f"unknown history format {fmt!r} (use text, json or csv)")


def _text(entries: Sequence[dict[str, Any]]) -> str:
    if not entries:
        return "no removals recorded\n"
    cols = ("when", "account", "folder", "message_id", "date", "size", "rule", "action",
            "where", "run_id")
    rows = []
    for e in entries:
        where = e["archive_location"] or e["to_folder"] or ""
        rows.append((
            (e["when"] or "")[:19].replace("T", " "), e["account"], e["folder"],
            e["message_id"] or "-", (e["date"] or "")[:10], str(e["size"]), e["rule"],
            e["action"], where, e["run_id"],
        ))
    widths = [max(len(c), *(len(str(r[i])) for r in rows)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    for r in rows:
        lines.append("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    n = len(entries)
    lines.append(f"{n} removal{'s' if n != 1 else ''}")
    return "\n".join(lines) + "\n"


def history(
    config: Config,
    *,
    accounts: Sequence[str] = (),
    since: str | timedelta | datetime | None = None,
    fmt: str = "text",
    now: datetime | None = None,
) -> str:
    """``retention history``: render the audit log of ``config``'s state_dir.

    ``since`` takes a policy duration (``30d``). Raises ConfigError for a bad one.
    """
    if isinstance(since, str):
        try:
            since = parse_duration(since)
        except ValueError as e:
            raise ConfigError(f"--since: {e}") from None
    if isinstance(since, timedelta):
        since = _moment(since, now)
    state = StateDir(config.state_dir, getattr(config, "state_url", None))
    if not state.has_journal():
        return render([], fmt)
    with state.journal() as journal:
        entries = query(journal, accounts=accounts, since=since, now=now)
        entries += restore_entries(journal, state, accounts=accounts, since=since, now=now)
        entries += abandoned_entries(journal, accounts=accounts, since=since)
    entries.sort(key=lambda e: e["when"] or "")
    return render(entries, fmt)


def abandoned_entries(journal: Journal, *, accounts: Sequence[str] = (),
                      since: datetime | None = None) -> list[dict[str, Any]]:
    """Interrupted actions given up by ``retention recover --abandon`` (review M9):
    ``action: abandoned``; ``reason`` is the original action and where the message was left."""
    out = []
    for row in journal.abandoned(since=since):
        if accounts and row.account not in accounts:
            continue
        e = entry(row)
        e.update({"action": "abandoned", "archive_location": row.location,
                  "reason": f"{row.action}: {row.detail}"})
        out.append(e)
    return out


def restore_entries(
    journal: Journal,
    state: StateDir | Path,
    *,
    accounts: Sequence[str] = (),
    since: datetime | timedelta | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Messages ``retention restore`` put back (``action: restore``; ``to_folder`` is where,
    ``run_id`` the restore's id, ``rule`` the rule that had removed it)."""
    from retention.state.restores import RESTORED, RestoreLog

    if isinstance(since, timedelta):
        since = (now or datetime.now(UTC)) - since
    out = []
    with (RestoreLog.open(state) if isinstance(state, Path) else state.restore_log()) as log:
        for r in log.entries():
            if r["state"] != RESTORED or (accounts and r["account"] not in accounts):
                continue
            when = datetime.fromisoformat(str(r["updated"]))
            if since is not None and when < since:
                continue
            src = journal.row(int(str(r["source_row"])))
            e = dict.fromkeys(FIELDS)
            e.update({
                "when": when.astimezone(UTC).isoformat(), "account": r["account"],
                "folder": src.folder if src else r["folder"], "message_id": r["message_id"],
                "date": src.internal_date.astimezone(UTC).isoformat()
                if src and src.internal_date else None,
                "size": r["size"], "rule": src.rule if src else None, "action": "restore",
                "to_folder": r["folder"], "archive": src.target if src else None,
                "archive_location": src.location if src else None, "sha256": r["sha256"],
                "uid": r["uid"], "uidvalidity": r["uidvalidity"],
                "reason": f"restored from run {src.run_id}" if src else "restored",
                "run_id": r["restore_id"],
            })
            out.append(e)
    return out
