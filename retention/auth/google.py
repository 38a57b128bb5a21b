"""Google Workspace tokens: a service account with domain-wide delegation (google-auth).

``google.oauth2.service_account.Credentials`` from the key file, ``with_subject(mailbox)``
and the scope ``https://mail.google.com/`` (IMAP/POP/SMTP; an admin authorises the
client ID for it under Security > API controls > Domain-wide delegation). google-auth
signs an RFC 7523 assertion (``iss`` the service account, ``sub`` the mailbox, ``aud``
the token URI) and exchanges it for an access token: one token per mailbox. The error
``unauthorized_client`` means that delegation is missing for the scope.

``token_uri`` overrides the one in the key file (a test stand-in, a private endpoint).
google-auth is an optional dependency (``pip install 'mailbox-retention[oauth]'``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retention.auth.tokens import AccessToken, Clock, utcnow
from retention.errors import TokenError

GMAIL_SCOPE = "https://mail.google.com/"
EXTRA = "pip install 'mailbox-retention[oauth]'"


@dataclass
class GoogleSource:
    """A ``TokenSource`` for one ``type: google`` credential (per-mailbox tokens)."""

    name: str
    service_account_file: Path
    scopes: tuple[str, ...] = (GMAIL_SCOPE,)
    token_uri: str | None = None
    ca_file: Path | None = None
    timeout: float = 30.0
    clock: Clock = utcnow
    _base: Any = field(default=None, repr=False)

    @property
    def shared(self) -> bool:
        return False  # domain-wide delegation: one token per mailbox (its subject)

    @property
    def what(self) -> str:
        return f"credential {self.name}"

    def _credentials(self) -> Any:
        if self._base is None:
            try:
                from google.oauth2 import service_account
            except ImportError:
                raise TokenError(f"{self.what}: type google needs google-auth, which is not "
                                 f"installed ({EXTRA})", "missing_dependency") from None
            try:
                info = json.loads(self.service_account_file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                why = exc.strerror if isinstance(exc, OSError) else "not JSON"
                raise TokenError(f"{self.what}: cannot read service_account_file "
                                 f"{self.service_account_file}: {why}", "config") from None
            if self.token_uri:
                info["token_uri"] = self.token_uri
            try:
                self._base = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                    info, scopes=list(self.scopes))
            except (ValueError, KeyError) as exc:
                raise TokenError(f"{self.what}: not a service account key file "
                                 f"({type(exc).__name__})", "config") from None
        return self._base

    def fetch(self, subject: str) -> AccessToken:
        creds = self._credentials().with_subject(subject)
        try:
            import google.auth.exceptions
            import google.auth.transport.requests
        except ImportError:
            raise TokenError(f"{self.what}: google-auth needs requests ({EXTRA})",
                             "missing_dependency") from None
        from retention.auth.http import PinnedSession

        session = PinnedSession(self.ca_file, self.timeout)
        try:
            creds.refresh(google.auth.transport.requests.Request(session))
        except google.auth.exceptions.RefreshError as exc:
            raise TokenError(f"{self.what}: Google token endpoint refused {subject}: "
                             f"{_code(exc)}", _code(exc)) from None
        except google.auth.exceptions.TransportError as exc:
            raise TokenError(f"{self.what}: Google token endpoint unreachable: "
                             f"{type(exc).__name__}", "unreachable") from None
        finally:
            session.close()
        expires = creds.expiry  # naive UTC in google-auth
        if expires is not None and expires.tzinfo is None:
            from datetime import UTC

            expires = expires.replace(tzinfo=UTC)
        return AccessToken(str(creds.token), expires)


def _code(exc: Exception) -> str:
    """The OAuth ``error`` of a google-auth RefreshError (``args[1]`` is the answer)."""
    if len(exc.args) > 1 and isinstance(exc.args[1], dict) and exc.args[1].get("error"):
        return str(exc.args[1]["error"])[:80]
    text = str(exc.args[0]) if exc.args else ""
    return text.split(":", 1)[0][:80] or "refresh_error"
