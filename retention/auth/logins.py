"""From an account to what its adapter logs in with: a password, or a ``BearerLogin``.

``Logins`` keeps one ``TokenCache`` per OAuth2 credential for the life of the process (a
sweep, or ``serve``'s many sweeps), so an app-only token is fetched once for the whole
tenant and reused until shortly before it expires. ``connect`` opens a session and, when
the server refuses a bearer token (expired early, revoked: Exchange's
``AccessTokenExpired``), gets a new token once and tries again; a second refusal is the
account's ``auth`` error. Password accounts go through unchanged (``read_password``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from retention.auth.google import GoogleSource
from retention.auth.microsoft import MicrosoftSource, certificate_credential
from retention.auth.oauth2 import OAuth2Source, RefreshStore
from retention.auth.sasl import BearerLogin
from retention.auth.tokens import Clock, TokenCache, TokenSource, utcnow
from retention.config.oauth import (
    GoogleCredential,
    Microsoft365Credential,
    OAuth2Credential,
    OAuthCredential,
)
from retention.config.secrets import read_password, read_secret
from retention.errors import AuthError, SecretError, TokenError

if TYPE_CHECKING:
    from retention.config.schema import Account

S = TypeVar("S")


def oauth_of(account: Account) -> tuple[str, OAuthCredential] | None:
    """(credential key, OAuth2 credential) of ``account``, or None for a password login.

    The key names the token cache and the stored refresh token: the ``credentials:``
    entry's name, or ``account:NAME`` for a credential written on the account itself.
    """
    cred = getattr(account, "credential", None)
    if not isinstance(cred, OAuth2Credential | Microsoft365Credential | GoogleCredential):
        return None
    name = getattr(account, "credentials", None)
    return (name if isinstance(name, str) else f"account:{account.name}"), cred


def _optional(what: str, key: str, env_name: str | None, file: Path | None,
              env: Mapping[str, str] | None) -> str | None:
    """A client secret or refresh token when one is configured (None when neither key is)."""
    if env_name is None and file is None:
        return None
    try:
        return read_secret(env_name, file, env, what=f"{key}_file")
    except SecretError as exc:
        raise SecretError(f"{what}: {exc}") from None


def build_source(key: str, cred: OAuthCredential, store: RefreshStore | None,
                 env: Mapping[str, str] | None = None, clock: Clock = utcnow,
                 timeout: float = 30.0) -> TokenSource:
    what = f"credential {key}"
    if isinstance(cred, OAuth2Credential):
        return OAuth2Source(
            name=key, token_url=cred.token_url, client_id=cred.client_id,
            client_secret=_optional(what, "client_secret", cred.client_secret_env,
                                    cred.client_secret_file, env),
            refresh_token=_optional(what, "refresh_token", cred.refresh_token_env,
                                    cred.refresh_token_file, env),
            scopes=tuple(cred.scopes), client_auth=cred.client_auth, store=store,
            ca_file=cred.ca_file, timeout=timeout, clock=clock)
    if isinstance(cred, Microsoft365Credential):
        secret: str | dict[str, str] | None = _optional(
            what, "client_secret", cred.client_secret_env, cred.client_secret_file, env)
        if cred.certificate_file is not None:
            try:
                secret = certificate_credential(cred.certificate_file, cred.key_file)
            except (OSError, ValueError) as exc:
                raise TokenError(f"{what}: cannot load certificate_file "
                                 f"{cred.certificate_file}: {type(exc).__name__}",
                                 "config") from None
        return MicrosoftSource(
            name=key, tenant=cred.tenant, client_id=cred.client_id, client_credential=secret,
            flow=cred.flow, scopes=tuple(cred.scopes), authority_host=cred.authority_host,
            graph_url=cred.graph_url, store=store, ca_file=cred.ca_file, timeout=timeout,
            clock=clock)
    return GoogleSource(name=key, service_account_file=cred.service_account_file,
                        scopes=tuple(cred.scopes), token_uri=cred.token_uri,
                        ca_file=cred.ca_file, timeout=timeout, clock=clock)


class Logins:
    """Token caches of one process, keyed by credential (see the module docstring)."""

    def __init__(self, *, clock: Clock = utcnow, env: Mapping[str, str] | None = None,
                 store_for: Callable[[Path], RefreshStore] | None = None) -> None:
        self.clock = clock
        self.env = env
        self._store_for = store_for
        self._caches: dict[tuple[str, Path | None, str], TokenCache] = {}
        self._lock = threading.Lock()

    def cache(self, account: Account, state_dir: Path | None) -> TokenCache | None:
        found = oauth_of(account)
        if found is None:
            return None
        key, cred = found
        ident = (key, state_dir, cred.model_dump_json())  # an edited credential: a new cache
        with self._lock:
            cache = self._caches.get(ident)
            if cache is None:
                store = self._store_for(state_dir) if self._store_for and state_dir else None
                timeout = account.timeout.total_seconds() or 30.0
                source = build_source(key, cred, store, self.env, self.clock, timeout)
                cache = self._caches[ident] = TokenCache(source, clock=self.clock)
            return cache

    def secret(self, account: Account, state_dir: Path | None, *, force: bool = False,
               stale: BearerLogin | None = None) -> str | BearerLogin:
        """The account's password, or a bearer login with a token from the cache."""
        cache = self.cache(account, state_dir)
        if cache is None:
            return read_password(account)
        found = oauth_of(account)
        assert found is not None
        key, cred = found
        mailbox = cred.username or account.username
        token = cache.token(mailbox, force=force, stale=stale.token if stale else None)
        return BearerLogin(mailbox, token, tuple(cred.mechanisms), source=key)

    def connect(self, account: Account, state_dir: Path | None,
                open_session: Callable[[Any], S]) -> S:
        """``open_session(secret)``; one new token and one more try if a token is refused."""
        secret = self.secret(account, state_dir)
        try:
            return open_session(secret)
        except TokenError:
            raise
        except AuthError:
            if not isinstance(secret, BearerLogin):
                raise
        fresh = self.secret(account, state_dir, force=True, stale=secret)
        return open_session(fresh)

    def mailbox_limit(self, account: Account, state_dir: Path | None) -> int | None:
        """Exchange Online's limit of the mailbox from Graph (``graph_usage: true``), or None.

        Raises ``TokenError`` when the report cannot be read.
        """
        found = oauth_of(account)
        if found is None or not isinstance(found[1], Microsoft365Credential):
            return None
        if not found[1].graph_usage:
            return None
        source = self.source(account, state_dir)
        assert isinstance(source, MicrosoftSource)
        row = source.mailbox_usage(found[1].username or account.username)
        return row[1] if row is not None else None

    def source(self, account: Account, state_dir: Path | None) -> TokenSource | None:
        cache = self.cache(account, state_dir)
        return cache.source if cache is not None else None
