"""What the agent knows about the big providers' hosts; pure data, no I/O.

``max_connections_per_host`` protects one ISP server from a sweep of many mailboxes (the
default 2). The big providers limit per mailbox rather than per client IP (Gmail: 15
simultaneous IMAP connections per account; Exchange Online: 20 per mailbox), so a sweep
may keep more connections open to their hosts. These are the defaults for those hosts;
setting ``service.max_connections_per_host`` explicitly applies that value to every host.
The numbers are conservative guesses, not measured against the real services.
"""

from __future__ import annotations

from collections.abc import Mapping

#: host -> (provider, default connections from one agent to that host)
PROVIDER_HOSTS: Mapping[str, tuple[str, int]] = {
    "imap.gmail.com": ("gmail", 8),
    "pop.gmail.com": ("gmail", 8),
    "outlook.office365.com": ("exchange", 8),
    "outlook.office.com": ("exchange", 8),
}


def host_limits(explicit: bool) -> dict[str, int]:
    """Per-host connection limits: the providers' defaults unless the file set one."""
    return {} if explicit else {h: n for h, (_p, n) in PROVIDER_HOSTS.items()}
