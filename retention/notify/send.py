"""After an account pass: decide which notices are due, journal them, deliver them.

``notify_account(config, account, result)`` is called with the pass's ``AccountResult``
and returns it with ``notices`` filled in. Events:

* ``warning``: usage (after the run; the current usage in a dry-run) at or above
  ``quota.warn_above`` while the last real run saw it below (``crossed``). The level
  state is written in the same transaction as the pending notice.
* ``archived``: the run archived, deleted or trashed mail (the same ``ActionResult`` rows
  the report lists, so the summary and the report always agree).

A dry-run (and a pass over a held account: report only) journals nothing, connects
nowhere and returns the notices it would send (``would_send``). A failing notice never
fails the account: it is reported.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retention.notify import render
from retention.notify.deliver import Delivery
from retention.notify.templates import load
from retention.result import AccountResult, NoticeOutcome
from retention.state import StateDir
from retention.state.notices import NoticeRow

if TYPE_CHECKING:
    from retention.config.schema import Account, Config, Notify

log = logging.getLogger("retention.notify")
DEFAULT_SENDER = "Mailbox assistant <postmaster@localhost>"


def _addresses(account: Account, notify: Notify) -> tuple[str, str]:
    from string import Template

    email = account.email or account.username
    values = {"account": account.name, "username": account.username, "email": email}
    smtp = notify.smtp
    sender = Template(smtp.sender).safe_substitute(values) if smtp else DEFAULT_SENDER
    to = Template(smtp.to).safe_substitute(values) if smtp else email
    return sender, to


def due(
    config: Config,
    account: Account,
    result: AccountResult,
    *,
    level: tuple[bool, int],
    now: datetime,
) -> tuple[list[render.Notice], tuple[bool, int]]:
    """The notices this result calls for, and the new level state (pure but for templates)."""
    policy = config.policy_of(account)
    notify = policy.notify
    assert notify is not None
    language = account.language or notify.language
    templates = load(language, notify.templates)
    out: list[render.Notice] = []
    was_above, crossings = level
    new_level = level
    usage = result.usage_bytes if result.dry_run else result.usage_after_bytes
    limit = result.limit_bytes
    ratio = usage / limit if usage is not None and limit else None
    above, fire = render.crossed(was_above, ratio, policy.quota.warn_above)
    new_level = (above, crossings + 1 if fire else crossings)
    if fire and notify.warn and usage is not None and limit:
        out.append(render.warning(
            templates, account=account.name, username=account.username, language=language,
            crossing=crossings + 1, usage_bytes=usage, limit_bytes=limit,
            warn_above=policy.quota.warn_above, clean_above=policy.quota.clean_above,
            restore_contact=notify.restore_contact, now=now,
        ))
    outcomes = ("planned",) if result.dry_run else ("done",)
    lines = render.summarise(result.results, outcomes)
    if notify.archived and lines:
        source = config.source or Path("POLICY")
        out.append(render.archived(
            templates, account=account.name, username=account.username, language=language,
            run_id=result.run_id, lines=lines,
            places=render.archive_places(result.results, outcomes),
            restore_contact=notify.restore_contact,
            restore_command=(f"retention restore -c {source} --account {account.name} "
                             f"--run {result.run_id}"),
            now=now,
        ))
    return out, new_level


def notify_account(
    config: Config,
    account: Account,
    result: AccountResult,
    *,
    now: datetime,
    password: Callable[[Any], str] | None = None,
    **delivery: Any,
) -> AccountResult:
    """``result`` with the notices it called for (sent, or only shown in a dry-run)."""
    notify = config.policy_of(account).notify
    if notify is None or result.status != "ok":
        return result
    if password is None:
        from retention.config.secrets import read_password

        password = read_password
    try:
        return _notify(config, account, result, notify, now, password, delivery)
    except Exception as e:  # noqa: BLE001 - a notice must never fail the account's pass
        log.exception("account=%s notices failed", account.name)
        return dataclasses.replace(
            result, warnings=(*result.warnings, f"notices not sent: {type(e).__name__}: {e}")
        )


def _notify(
    config: Config, account: Account, result: AccountResult, notify: Notify, now: datetime,
    password: Callable[[Any], str], delivery: dict[str, Any],
) -> AccountResult:
    sender, to = _addresses(account, notify)
    channel = notify.delivery
    # A held account is report-only: its notices are shown, like a dry-run's, not sent.
    if result.dry_run or (result.plan is not None and result.plan.hold):
        level = (False, 0)
        state_dir = StateDir(config.state_dir)
        if state_dir.notices_path.exists():
            with state_dir.notices() as store:
                level = store.level(account.name)
        notices, _ = due(config, account, result, level=level, now=now)
        shown = tuple(
            NoticeOutcome(n.kind, n.event, "would_send", channel, n.subject, n.body, n.language,
                          f"to {to}")
            for n in notices
        )
        return dataclasses.replace(result, notices=shown)
    outcomes: list[NoticeOutcome] = []
    with StateDir(config.state_dir).notices() as store:
        d = Delivery(account, notify, store, password, **delivery)
        interrupted = store.pending(account.name)
        for row in interrupted:
            state, ch, detail = d.finish_interrupted(row)
            outcomes.append(NoticeOutcome(row.kind, row.event, _status(state), ch, "", "",
                                          "", detail))
        tried = {row.event for row in interrupted}
        for row in store.to_retry(account.name, now=now):
            if row.event in tried:
                continue  # one attempt per run
            state, ch, detail = d.send(row)
            outcomes.append(NoticeOutcome(row.kind, row.event, _status(state), ch, "", "",
                                          "", detail))
        level = store.level(account.name)
        notices, new_level = due(config, account, result, level=level, now=now)
        level_written = False
        for n in notices:
            row = NoticeRow(n.event, account.name, n.kind, "pending", channel, n.message_id,
                            sender, to, n.to_bytes(sender=sender, to=to, now=now), None)
            fresh = store.add_pending(row, level=None if level_written else new_level)
            level_written = level_written or fresh
            if not fresh:
                outcomes.append(NoticeOutcome(n.kind, n.event, "already_sent", channel,
                                              n.subject, n.body, n.language))
                continue
            state, ch, detail = d.send(row)
            outcomes.append(NoticeOutcome(n.kind, n.event, _status(state), ch, n.subject,
                                          n.body, n.language, detail))
        if not level_written and new_level != level:
            store.set_level(account.name, *new_level)
    return dataclasses.replace(result, notices=tuple(outcomes))


def _status(state: str) -> Any:
    return {"sent": "sent", "failed": "failed", "unknown": "unknown",
            "retry": "will_retry"}.get(state, "failed")
