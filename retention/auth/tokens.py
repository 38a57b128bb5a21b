"""Access tokens and their cache: reuse until shortly before expiry, refresh on demand.

A ``TokenSource`` gets a fresh token from a provider (``oauth2``, ``microsoft``,
``google``); a ``TokenCache`` in front of it is what the rest of the agent asks. The
cache hands out the same token until ``margin`` before it expires (so a token never runs
out between the check and the login), and ``force=True`` (after a server refused the
token) gets a new one. A *shared* source gives one token for every mailbox (app-only
client credentials: Microsoft 365, a generic client-credentials grant); otherwise
tokens are per mailbox (Google's domain-wide delegation: subject = the mailbox;
delegated refresh tokens are per person anyway).

The clock is injectable: tests move it past an expiry instead of waiting.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

Clock = Callable[[], datetime]
#: Refresh this long before a token's expiry (providers' clocks and slow logins).
DEFAULT_MARGIN = timedelta(minutes=5)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class AccessToken:
    """A bearer token and when it expires (None: the provider did not say)."""

    value: str = field(repr=False)
    expires_at: datetime | None = None


class TokenSource(Protocol):
    """Gets a new access token for a mailbox from the provider (network I/O)."""

    @property
    def shared(self) -> bool:
        """True: one token serves every mailbox (the ``subject`` argument is ignored)."""
        ...

    def fetch(self, subject: str) -> AccessToken:
        """A new token (raises ``TokenError`` with the provider's error code)."""
        ...


def expiry(now: datetime, expires_in: object) -> datetime | None:
    """``expires_in`` seconds (RFC 6749 5.1, may come as a string) after ``now``."""
    try:
        seconds = int(str(expires_in))
    except ValueError:
        return None
    return now + timedelta(seconds=max(seconds, 0))


class TokenCache:
    """Thread-safe: pool workers of ``serve`` share one cache per credential."""

    def __init__(self, source: TokenSource, *, clock: Clock = utcnow,
                 margin: timedelta = DEFAULT_MARGIN) -> None:
        self.source = source
        self.clock = clock
        self.margin = margin
        self.fetches = 0  # tokens fetched from the provider (tests and metrics)
        self._tokens: dict[str, AccessToken] = {}
        self._lock = threading.Lock()

    def _key(self, subject: str) -> str:
        return "" if self.source.shared else subject.lower()

    def fresh(self, token: AccessToken) -> bool:
        return token.expires_at is None or self.clock() + self.margin < token.expires_at

    def token(self, subject: str, *, force: bool = False, stale: str | None = None) -> str:
        """A token for ``subject``; ``force``: a new one unless another thread already did.

        ``stale``: the token the server refused; with ``force``, a token different from
        it that is still fresh (another worker refreshed meanwhile) is reused.
        """
        key = self._key(subject)
        with self._lock:
            have = self._tokens.get(key)
            if have is not None and self.fresh(have):
                if not force or (stale is not None and have.value != stale):
                    return have.value
            new = self.source.fetch(subject)
            self.fetches += 1
            self._tokens[key] = new
            return new.value

    def forget(self) -> None:
        with self._lock:
            self._tokens.clear()
