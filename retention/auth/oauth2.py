"""The generic OAuth2 token endpoint (RFC 6749): client credentials or a refresh token.

``type: oauth2`` credentials use it directly. One POST of a form to ``token_url``:

* ``grant_type=client_credentials`` (app-only) with ``scope``;
* ``grant_type=refresh_token`` (delegated: a person's own mailbox). When the provider
  rotates refresh tokens (answers with a new ``refresh_token``), the new one is stored at
  once through a ``RefreshStore`` (``retention.state.tokens``: 0600 in ``state_dir``) and
  used from then on: the old one may already be dead.

The client authenticates with ``client_secret_post`` (default) or HTTP Basic. Failures
become ``TokenError`` naming the endpoint and the provider's ``error`` code, never the
secret, the refresh token or the answer's token fields.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from retention.auth.tokens import AccessToken, Clock, expiry, utcnow
from retention.errors import TokenError

_MAX_BODY = 1024 * 1024


class RefreshStore(Protocol):
    """Where rotated refresh tokens live (``retention.state.tokens.RefreshTokens``)."""

    def load(self, key: str) -> str | None: ...

    def save(self, key: str, token: str) -> None: ...


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return text


def post_form(url: str, form: dict[str, str], *, what: str, ca_file: Path | None,
              timeout: float, headers: dict[str, str] | None = None,
              secrets: Sequence[str] = ()) -> dict[str, Any]:
    """POST ``form`` and return the JSON answer; every failure is a ``TokenError``."""
    if not url.startswith("https://") and not url.startswith("http://127.0.0.1"):
        # Client secrets and refresh tokens only ever travel over TLS (loopback excepted).
        raise TokenError(f"{what}: token endpoint {url} is not https", "config")
    data = urllib.parse.urlencode(form).encode("ascii")
    req = urllib.request.Request(url, data=data, method="POST", headers={  # noqa: S310
        "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json",
        **(headers or {})})
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:  # noqa: S310
            body = resp.read(_MAX_BODY)
    except urllib.error.HTTPError as exc:
        raise _http_error(exc, url, what, secrets) from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise TokenError(f"{what}: token endpoint {url} unreachable: {reason}", "unreachable") \
            from None
    try:
        doc = json.loads(body)
    except ValueError:
        raise TokenError(f"{what}: token endpoint {url} answered something not JSON",
                         "bad_response") from None
    if not isinstance(doc, dict):
        raise TokenError(f"{what}: token endpoint {url} answered no JSON object", "bad_response")
    return doc


def _http_error(exc: urllib.error.HTTPError, url: str, what: str,
                secrets: Sequence[str]) -> TokenError:
    code, desc = f"http_{exc.code}", ""
    try:
        doc = json.loads(exc.read(_MAX_BODY))
        if isinstance(doc, dict) and doc.get("error"):
            code = str(doc["error"])[:80]
            desc = str(doc.get("error_description") or "").splitlines()[0][:200] \
                if doc.get("error_description") else ""
    except (ValueError, OSError, IndexError):
        pass
    detail = f": {_scrub(desc, secrets)}" if desc else ""
    return TokenError(f"{what}: token endpoint {url} answered {code} (HTTP {exc.code}){detail}",
                      code)


@dataclass
class OAuth2Source:
    """A ``TokenSource`` for one ``type: oauth2`` credential (see the module docstring)."""

    name: str
    token_url: str
    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)  # the configured one
    scopes: tuple[str, ...] = ()
    client_auth: str = "post"  # post | basic
    store: RefreshStore | None = None
    ca_file: Path | None = None
    timeout: float = 30.0
    clock: Clock = utcnow

    @property
    def shared(self) -> bool:
        return self.refresh_token is None  # client credentials: one app token

    def _refresh(self) -> str | None:
        stored = self.store.load(self.name) if self.store is not None else None
        return stored or self.refresh_token

    def fetch(self, subject: str) -> AccessToken:
        what = f"credential {self.name}"
        refresh = self._refresh()
        form: dict[str, str] = {}
        if refresh is not None:
            form.update(grant_type="refresh_token", refresh_token=refresh)
        else:
            form["grant_type"] = "client_credentials"
        if self.scopes:
            form["scope"] = " ".join(self.scopes)
        headers: dict[str, str] = {}
        if self.client_auth == "basic" and self.client_secret is not None:
            pair = f"{urllib.parse.quote(self.client_id)}:{urllib.parse.quote(self.client_secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form["client_id"] = self.client_id
            if self.client_secret is not None:
                form["client_secret"] = self.client_secret
        secrets = [s for s in (self.client_secret, refresh) if s]
        now = self.clock()
        doc = post_form(self.token_url, form, what=what, ca_file=self.ca_file,
                        timeout=self.timeout, headers=headers, secrets=secrets)
        token = doc.get("access_token")
        if not isinstance(token, str) or not token:
            raise TokenError(f"{what}: token endpoint {self.token_url} answered no access_token",
                             "bad_response")
        rotated = doc.get("refresh_token")
        if isinstance(rotated, str) and rotated and rotated != refresh and self.store is not None:
            self.store.save(self.name, rotated)  # before anything else can fail
        return AccessToken(token, expiry(now, doc.get("expires_in")))
