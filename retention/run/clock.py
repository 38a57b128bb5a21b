"""The clock check's evidence: the only code that asks a server how late it is (review M10).

The planner refuses to remove anything unless ``now`` is at most ``clock_skew_limit``
ahead of a moment the server's clock is known to have reached (``Snapshot.server_time``;
``planner.clock_refusal``). This module finds that moment for one account pass, cheapest
evidence first:

1. the newest date of the scan the server stamped (IMAP INTERNALDATE or SAVEDATE): a
   mailbox that gets mail is proven at once, with no extra command;
2. when that is older than the limit (the rules scan only folders that get nothing new,
   such as Trash), the INTERNALDATE of INBOX's newest message (one EXAMINE and FETCH);
3. when that is older too (an idle mailbox, or a clock that jumped ahead),
   IMAP servers with WITHIN (RFC 5032) are asked with their own clock: ``UID SEARCH UID u
   OLDER s`` for that newest message, with ``s`` chosen so that a hit means the server's
   now is past ``now - clock_skew_limit``; one read-only EXAMINE and SEARCH;
4. POP3 keeps no server dates (its ages are the agent's first sightings): the top
   ``Received:`` stamp of the newest message, read with ``TOP n 0`` (none: no check).

Why these and not the IMAP greeting or a probe APPEND: greetings carry no time, and an
APPEND writes to the user's mailbox, which a dry-run must never do.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from retention.model import Snapshot
from retention.planner import newest_server_date

if TYPE_CHECKING:
    from retention.adapters import MailSession


def server_time(session: MailSession, snapshot: Snapshot, now: datetime,
                limit: timedelta) -> datetime | None:
    """The latest moment the server's clock is known to have reached, as far as the check
    needs it (not searched for beyond ``now - limit``); None when nothing shows it."""
    if snapshot.protocol == "pop3":
        read = getattr(session, "server_date", None)
        return read() if read is not None else None
    newest = newest_server_date(snapshot, now)
    if newest is None:
        return None
    message, at = newest
    if not limit or now - at <= limit:
        return at
    inbox = getattr(session, "newest_internaldate", None)
    delivered: datetime | None = inbox() if inbox is not None else None
    if delivered is not None and at < delivered <= now:
        at = delivered  # a later proof; the WITHIN probe below still uses the scanned one
        if now - at <= limit:
            return at
    older_than = getattr(session, "older_than", None)
    if older_than is None:
        return at
    # OLDER compares the INTERNALDATE (not a SAVEDATE) with the server's now: the server
    # counts the message older than s seconds iff its now > received + s.
    wanted = now - limit
    seconds = math.ceil((wanted - message.received).total_seconds())
    confirmed = older_than(message.ref, seconds)
    return wanted if confirmed else at


__all__ = ["server_time"]
