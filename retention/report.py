"""Pure rendering of run results: JSON (a stable, documented shape) and a readable text table.

Dry-runs and real runs render the same ``RunResult``; ``dry_run`` and each action's
``result`` tell them apart. What stays is reported too: per folder and reason always, one
line per message when the plan listed them (``run --list-kept``).
No I/O here: the CLI writes the strings where they belong.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from retention.model import Message
from retention.plan import Kept, Plan, totals
from retention.result import AccountResult, ActionResult, NoticeOutcome, RunResult


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt is not None else None


def _message_dict(m: Message) -> dict[str, Any]:
    return {
        "folder": m.folder,
        "uid": m.uid,
        "uidvalidity": m.uidvalidity if m.uid is not None else None,
        "uidl": m.uidl,
        "message_id": m.message_id,
        "internal_date": _iso(m.received),
        "size": m.size,
    }


def action_dict(r: ActionResult) -> dict[str, Any]:
    a = r.action
    return {
        **_message_dict(a.message),
        "action": a.kind.value,
        "to_folder": a.to_folder,
        "archive": a.archive,
        "rule": a.rule,
        "clock": a.clock.value,
        "reason": a.reason,
        "result": r.result,
        "detail": r.detail,
    }


def kept_dict(k: Kept) -> dict[str, Any]:
    return {**_message_dict(k.message), "reason": k.reason.value, "rule": k.rule}


def kept_totals(plan: Plan | None) -> list[dict[str, Any]]:
    return [{"folder": t.folder, "reason": t.reason.value, "messages": t.messages,
             "bytes": t.bytes} for t in (plan.kept if plan else ())]


def notice_dict(n: NoticeOutcome) -> dict[str, Any]:
    return {"kind": n.kind, "event": n.event, "status": n.status, "channel": n.channel,
            "language": n.language, "subject": n.subject, "body": n.body, "detail": n.detail}


def account_dict(acct: AccountResult) -> dict[str, Any]:
    plan = acct.plan
    ratio = (
        acct.usage_bytes / acct.limit_bytes
        if acct.usage_bytes is not None and acct.limit_bytes
        else None
    )
    done = [r for r in acct.results if r.result in ("done", "planned")]
    return {
        "account": acct.account,
        "protocol": acct.protocol,
        "run_id": acct.run_id,
        "status": acct.status,
        "error": acct.error,
        "error_kind": acct.error_kind,
        # With status skipped: locked (another agent holds it: not cleaned; exit 1 unless
        # --skip-locked-ok) or recent (finished within leases.once_within).
        "skip_reason": acct.skip_reason,
        "hold": plan.hold if plan else False,
        "usage_bytes": acct.usage_bytes,
        "limit_bytes": acct.limit_bytes,
        "limit_source": acct.limit_source,
        # Unrounded, as in ``usage_json``: exactly usage_bytes / limit_bytes.
        "ratio": ratio,
        "usage_after_bytes": acct.usage_after_bytes,
        "short_by_bytes": plan.short_by_bytes if plan else 0,
        "deferred_by_cap": plan.deferred_by_cap if plan else 0,
        "freed_bytes": acct.freed_bytes,
        "over_quota": plan.over_quota if plan else False,
        "warnings": list(acct.warnings),
        "dropped": [
            {"rule": d.rule, "folder": d.folder, "messages": d.count, "reason": d.reason}
            for d in (plan.dropped if plan else ())
        ],
        "failed_rules": [
            {"rule": rule, "reason": why} for rule, why in (plan.failed_rules if plan else ())
        ],
        "actions": [action_dict(r) for r in acct.results],
        "totals": totals(r.action for r in done),
        # Kept although a rule might take them: restored mail within restore_grace.
        "exempted": [
            {"folder": m.folder, "uid": m.uid, "message_id": m.message_id,
             "size": m.size, "reason": why}
            for m, why in (plan.exempted if plan else ())
        ],
        # Every message no action takes, per folder and reason; one by one (else null)
        # with --list-kept.
        "kept": kept_totals(plan),
        "kept_messages": (None if plan is None or plan.kept_messages is None
                          else [kept_dict(k) for k in plan.kept_messages]),
        "notices": [notice_dict(n) for n in acct.notices],
        "duration_seconds": round(acct.duration, 3),
    }


def to_json(run: RunResult) -> str:
    doc = {
        "dry_run": run.dry_run,
        "generated_at": _iso(run.generated_at),
        "accounts": [account_dict(a) for a in run.accounts],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


@functools.lru_cache(maxsize=4096)  # a report of 10,000 actions has few distinct sizes
def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _pct(used: int | None, limit: int | None) -> str:
    if used is None or not limit:
        return "-"
    return f"{100 * used / limit:.1f}%"


def _minute(when: datetime) -> str:
    """``%Y-%m-%d %H:%M`` of ``when``, by ``isoformat`` (strftime costs several times more
    and a report can have 10,000 rows); strftime for years before 1000, which it does not
    pad to four digits."""
    return when.isoformat(" ", "minutes")[:16] if when.year >= 1000 else f"{when:%Y-%m-%d %H:%M}"


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _account_text(acct: AccountResult, dry_run: bool) -> list[str]:
    head = f"== {acct.account} ({acct.protocol}) status={acct.status}"
    if acct.plan and acct.plan.hold:
        head += "  HOLD: report only, nothing is changed"
    lines = [head]
    if acct.status == "skipped":
        lines.append(f"   skipped ({acct.skip_reason}): {acct.error}")
    elif acct.error:
        lines.append(f"   error ({acct.error_kind}): {acct.error}")
    if acct.usage_bytes is not None:
        limit = human_size(acct.limit_bytes) if acct.limit_bytes else "unknown"
        after_word = "projected" if dry_run else "after"
        lines.append(
            f"   usage {human_size(acct.usage_bytes)} of {limit} "
            f"({_pct(acct.usage_bytes, acct.limit_bytes)}); {after_word} "
            f"{human_size(acct.usage_after_bytes)} "
            f"({_pct(acct.usage_after_bytes, acct.limit_bytes)})"
        )
    plan = acct.plan
    if plan and plan.short_by_bytes:
        lines.append(
            f"   cannot reach the cleanup target: short by {human_size(plan.short_by_bytes)} "
            "(the rest is protected or kept by policy)"
        )
    if plan and plan.deferred_by_cap:
        lines.append(
            f"   {plan.deferred_by_cap} removals deferred to the next run (max_delete_per_run)"
        )
    for d in plan.dropped if plan else ():
        lines.append(f"   rule {d.rule}: {d.count} actions in {d.folder} dropped: {d.reason}")
    for rule, why in plan.failed_rules if plan else ():
        lines.append(f"   rule {rule}: {why}")
    for w in acct.warnings:
        lines.append(f"   warning: {w}")
    if acct.results:
        rows = [["RESULT", "ACTION", "FOLDER", "ID", "RECEIVED", "SIZE", "RULE", "REASON"]]
        for r in acct.results:
            a = r.action
            m = a.message
            ident = str(m.uid) if m.uid is not None else (m.uidl or "")
            act = a.kind.value
            if a.to_folder:
                act += f" -> {a.to_folder}"
            elif a.archive:
                act += f" -> {a.archive}"
            reason = a.reason + (f" [{r.detail}]" if r.detail else "")
            rows.append(
                [
                    r.result,
                    act,
                    m.folder,
                    ident,
                    _minute(m.received),
                    human_size(m.size),
                    a.rule,
                    reason,
                ]
            )
        lines.extend("   " + row for row in _table(rows))
        done = [r for r in acct.results if r.result in ("done", "planned")]
        for kind, t in totals(r.action for r in done).items():
            lines.append(f"   total {kind}: {t['messages']} messages, {human_size(t['bytes'])}")
        verb = "would free" if dry_run else "freed"
        lines.append(f"   {verb}: {human_size(acct.freed_bytes)}")
    elif acct.status == "ok":
        lines.append("   nothing to do")
    if plan:
        lines.extend(_kept_text(plan))
    for m, why in plan.exempted if plan else ():
        lines.append(f"   kept {m.folder} UID {m.uid}: {why}")
    for n in acct.notices:
        how = f" by {n.channel}" if n.channel else ""
        lines.append(f"   notice {n.kind}: {n.status.replace('_', ' ')}{how}"
                     + (f" ({n.detail})" if n.detail else ""))
        if n.status == "would_send":
            lines.append(f"      Subject: {n.subject}")
            lines.extend(f"      | {t}" for t in n.body.rstrip("\n").splitlines())
    return lines


def _kept_text(plan: Plan) -> list[str]:
    """The kept summary (one row per folder and reason), then each kept message if listed."""
    if not plan.kept:
        return []
    n = sum(t.messages for t in plan.kept)
    size = sum(t.bytes for t in plan.kept)
    lines = [f"   kept: {n} messages, {human_size(size)}"]
    rows = [["KEPT IN", "REASON", "MESSAGES", "SIZE"]]
    rows += [[t.folder, t.reason.text, str(t.messages), human_size(t.bytes)] for t in plan.kept]
    lines.extend("     " + row for row in _table(rows))
    if plan.kept_messages:
        rows = [["KEPT", "FOLDER", "ID", "RECEIVED", "SIZE", "RULE", "REASON"]]
        for k in plan.kept_messages:
            m = k.message
            ident = str(m.uid) if m.uid is not None else (m.uidl or "")
            rows.append(["kept", m.folder, ident, _minute(m.received),
                         human_size(m.size), k.rule or "-", k.reason.text])
        lines.extend("   " + row for row in _table(rows))
    return lines


def to_text(run: RunResult) -> str:
    kind = "DRY RUN (nothing was changed)" if run.dry_run else "RUN"
    lines = [f"retention {kind} at {run.generated_at:%Y-%m-%d %H:%M:%S %Z}"]
    for acct in run.accounts:
        lines.append("")
        lines.extend(_account_text(acct, run.dry_run))
    failed = sum(1 for a in run.accounts if a.status == "error")
    skipped = sum(1 for a in run.accounts if a.status == "skipped")
    lines.append("")
    lines.append(f"{len(run.accounts)} accounts, {failed} failed"
                 + (f", {skipped} skipped" if skipped else ""))
    return "\n".join(lines) + "\n"


def usage_json(results: Sequence[AccountResult]) -> str:
    rows = [
        {
            "account": a.account,
            "protocol": a.protocol,
            "status": a.status,
            "error": a.error,
            "usage_bytes": a.usage_bytes,
            "limit_bytes": a.limit_bytes,
            "ratio": (a.usage_bytes / a.limit_bytes)
            if a.usage_bytes is not None and a.limit_bytes
            else None,
            "messages": a.messages,
            "source": a.usage_source,
            "limit_source": a.limit_source,
        }
        for a in results
    ]
    return json.dumps({"accounts": rows}, indent=2, ensure_ascii=False) + "\n"
