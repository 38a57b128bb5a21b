"""The imapclient client the IMAP adapter opens: capabilities from the greeting.

This module owns one round trip. imaplib sends ``CAPABILITY`` right after the greeting,
always, although most servers (Dovecot, Cyrus, Courier...) put the same list in the
greeting's ``[CAPABILITY ...]`` response code (RFC 3501 7.1, "a server MAY send it
there to save a round trip"). ``ImapClient`` is ``IMAPClient`` whose imaplib connection
takes that list when the greeting has one, and asks as before when it has none.

What is believed is unchanged: before login the list is only used to choose STARTTLS or
a SASL mechanism (a plaintext greeting and a plaintext ``CAPABILITY`` answer are equally
open to an on-path attacker; after STARTTLS ``connection._forget_plaintext`` drops
everything said before, a line slipped in after the greeting included, and asks again
over TLS), and after login the list of the LOGIN completion's code, or a new
``CAPABILITY``, replaces it (``connection._login``). Only the greeting line itself is
read here: anything the server sends after it is read with the next command.
"""

from __future__ import annotations

from typing import Any

from imapclient import IMAPClient
from imapclient.imap4 import IMAP4WithTimeout
from imapclient.tls import IMAP4_TLS

__all__ = ["ImapClient"]


class _GreetingCapabilities:
    """Mixin for imaplib connections: ``_get_capabilities`` (called once, by ``_connect``
    after the greeting) uses the greeting's ``[CAPABILITY ...]`` when there is exactly one."""

    untagged_responses: dict[str, list[Any]]
    capabilities: tuple[str, ...]
    _encoding: str

    def _get_capabilities(self) -> None:
        found = self.untagged_responses.get("CAPABILITY")
        # Exactly one list, of text: the greeting's code. Anything else: ask, as imaplib.
        if not found or len(found) != 1 or not isinstance(found[0], bytes) or not found[0]:
            super()._get_capabilities()  # type: ignore[misc]
            return
        # As imaplib's CAPABILITY: the response is taken out of the untagged queue, so a
        # later capabilities() after LOGIN never mistakes it for a post-login list.
        del self.untagged_responses["CAPABILITY"]
        self.capabilities = tuple(str(found[0], self._encoding).upper().split())


class _Plain(_GreetingCapabilities, IMAP4WithTimeout):  # type: ignore[misc]
    pass


class _Tls(_GreetingCapabilities, IMAP4_TLS):  # type: ignore[misc]
    pass


class ImapClient(IMAPClient):  # type: ignore[misc]
    """``IMAPClient`` over ``_Plain``/``_Tls`` (no CAPABILITY round trip after a greeting
    that gave the list); everything else is imapclient's."""

    def _create_IMAP4(self) -> Any:  # noqa: N802 - imapclient's name
        connect_timeout = getattr(self._timeout, "connect", None)
        if self.ssl:
            return _Tls(self.host, self.port, self.ssl_context, connect_timeout)
        return _Plain(self.host, self.port, connect_timeout)
