"""The account pass's two hooks for the mailbox owner (issue 14), kept out of the pass itself.

* ``exemptions``: the restored messages still within ``restore_grace`` (``state.restores``),
  as ``Snapshot.exempt`` entries, so the pure planner keeps them and says why.
* ``after_pass``: the notices a finished pass calls for (``notify.send``): sent in a real
  run, only shown in a dry-run.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from retention.model import exempt_key
from retention.result import AccountResult

if TYPE_CHECKING:
    from retention.config.schema import Account, Config


def exemptions(config: Config, account: Account, now: datetime) -> tuple[tuple[str, str], ...]:
    from retention.state import StateDir
    from retention.state.restores import live_holds

    out: list[tuple[str, str]] = []
    for h in live_holds(StateDir(config.state_dir).journal_path, account.name, now,
                        config.state_url):
        out.append((exempt_key(h.folder, h.uidvalidity, h.uid), h.reason()))
        if h.message_id:
            out.append(("mid:" + h.message_id, h.reason()))
    return tuple(out)


def after_pass(config: Config, account: Account, result: AccountResult,
               now: datetime) -> AccountResult:
    if config.policy_of(account).notify is None:
        return result
    from retention.notify.send import notify_account

    return notify_account(config, account, result, now=now)
