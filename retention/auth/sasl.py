"""SASL XOAUTH2 and OAUTHBEARER (RFC 7628) initial responses; pure, no I/O.

XOAUTH2 (Google's and Microsoft's documented form)::

    user={user}^Aauth=Bearer {token}^A^A

OAUTHBEARER (RFC 7628 section 3.1): a GS2 header naming the authorization identity, then
key/value pairs separated by ``^A``; ``host`` and ``port`` are optional and included (as
curl does) since some servers log them::

    n,a={user},^Ahost={host}^Aport={port}^Aauth=Bearer {token}^A^A

A failed OAUTHBEARER or XOAUTH2 exchange ends with a server challenge carrying a JSON error
(``{"status":"invalid_token","scope":...}``); the client must answer it with an empty
response (OAUTHBEARER: ``^A``) before the server sends its final NO/-ERR.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

XOAUTH2 = "XOAUTH2"
OAUTHBEARER = "OAUTHBEARER"
#: Both mechanisms carry the same bearer token; OAUTHBEARER is the standard one.
DEFAULT_MECHANISMS: tuple[str, ...] = (OAUTHBEARER, XOAUTH2)


def xoauth2(user: str, token: str) -> bytes:
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


def oauthbearer(user: str, token: str, host: str | None = None, port: int | None = None) -> bytes:
    # RFC 7628 3.1 / RFC 5801: "," and "=" in the authzid are escaped as =2C and =3D.
    authzid = user.replace("=", "=3D").replace(",", "=2C")
    parts = [f"n,a={authzid},"]
    if host:
        parts.append(f"host={host}")
    if port:
        parts.append(f"port={port}")
    parts.append(f"auth=Bearer {token}")
    return ("\x01".join(parts) + "\x01\x01").encode()


def choose(offered: Iterable[str], preferred: Sequence[str]) -> str | None:
    """The first of ``preferred`` among the server's ``offered`` mechanisms (any case)."""
    have = {m.upper() for m in offered}
    for mech in preferred:
        if mech.upper() in have:
            return mech.upper()
    return None


def challenge_status(challenge: bytes) -> str | None:
    """The ``status`` of a server's JSON error challenge (already base64-decoded), if any.

    Only the status (``invalid_token``, ``401``...) is kept: it names the failure without
    repeating anything the client sent.
    """
    try:
        doc = json.loads(challenge.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    status = doc.get("status") if isinstance(doc, dict) else None
    return str(status)[:60] if status is not None else None


@dataclass(frozen=True)
class BearerLogin:
    """A bearer-token login for one mailbox (the adapters' ``SaslLogin``).

    ``username`` is the mailbox (XOAUTH2 ``user=``, OAUTHBEARER ``a=``); ``token`` the access
    token; ``mechanisms`` the preference order. ``repr`` never shows the token.
    """

    username: str
    token: str = field(repr=False)
    mechanisms: tuple[str, ...] = DEFAULT_MECHANISMS
    source: str = ""  # the credential's name, for messages

    def choose(self, offered: Iterable[str]) -> str | None:
        return choose(offered, self.mechanisms)

    def initial_response(self, mechanism: str, host: str | None = None,
                         port: int | None = None) -> bytes:
        if mechanism.upper() == XOAUTH2:
            return xoauth2(self.username, self.token)
        if mechanism.upper() == OAUTHBEARER:
            return oauthbearer(self.username, self.token, host, port)
        raise ValueError(f"unsupported SASL mechanism {mechanism!r}")

    def secrets(self) -> list[str]:
        """Strings to scrub from anything a server echoes: the token and its encodings."""
        out = [self.token]
        for mech in (XOAUTH2, OAUTHBEARER):
            raw = self.initial_response(mech)
            out.append(base64.b64encode(raw).decode("ascii"))
        return out

    def describe(self) -> str:
        return f"OAuth2 ({self.source})" if self.source else "OAuth2"
