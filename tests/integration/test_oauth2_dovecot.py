"""A real Dovecot 2.3 with its oauth2 passdb (local JWT validation) accepts the agent's
XOAUTH2 and OAUTHBEARER logins over IMAP and POP3, with tokens from a local token endpoint:
client credentials and refresh-token grants, rotation, expiry mid-run, invalid_grant."""

from __future__ import annotations

import dataclasses
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from retention.adapters.imap.session import ImapSession
from retention.adapters.pop3 import Pop3Session
from retention.auth.logins import Logins
from retention.auth.oauth2 import OAuth2Source
from retention.auth.sasl import BearerLogin
from retention.config.oauth import OAuth2Credential
from retention.errors import AuthError, TokenError
from retention.state.tokens import RefreshTokens
from retention.testing.dovecot import Dovecot
from retention.testing.tokenserver import TokenServer
from tests.integration.oauth_rig import account_for

SESSIONS = {"imap": ImapSession, "pop3": Pop3Session}


def connect(dc: Dovecot, user: str, protocol: str, login: Any) -> Any:
    return SESSIONS[protocol].connect(account_for(dc, user, protocol=protocol), login,
                                      readonly=True)


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
@pytest.mark.parametrize("mech", ["XOAUTH2", "OAUTHBEARER"])
def test_dovecot_accepts_bearer_logins(oauth_dovecot: Dovecot, tokens: TokenServer,
                                       protocol: str, mech: str) -> None:
    user = oauth_dovecot.add_user(f"o_{protocol}_{mech.lower()}").name
    tokens.add_client("app", "s3cret", user)
    source = OAuth2Source("m", tokens.token_url, "app", client_secret="s3cret",
                          ca_file=oauth_dovecot.ca_file)
    token = source.fetch(user).value
    session = connect(oauth_dovecot, user, protocol, BearerLogin(user, token, (mech,)))
    try:
        assert session.list_folders()
    finally:
        session.close()
    oauth_dovecot.wait_for_log(f"user=<{user}>, method={mech}")
    # The grant the agent sent: client credentials in the form, over TLS.
    (grant,) = tokens.grants()
    assert grant.form == {"grant_type": "client_credentials", "client_id": "app",
                          "client_secret": "s3cret"}


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_mechanism_comes_from_capabilities_and_refusal_names_no_token(
        oauth_dovecot: Dovecot, tokens: TokenServer, protocol: str) -> None:
    user = oauth_dovecot.add_user(f"o_caps_{protocol}").name
    good = tokens.mint(user)
    # Preference order is followed when the server offers both.
    session = connect(oauth_dovecot, user, protocol, BearerLogin(user, good))
    session.close()
    oauth_dovecot.wait_for_log(f"user=<{user}>, method=OAUTHBEARER")
    expired = tokens.mint(user, lifetime=-120)
    with pytest.raises(AuthError) as err:
        connect(oauth_dovecot, user, protocol, BearerLogin(user, expired, ("XOAUTH2",)))
    text = str(err.value)
    assert "XOAUTH2" in text and "rejected" in text and expired not in text
    assert expired.split(".")[1] not in text
    # A mechanism the server does not offer fails clearly, before anything is sent.
    with pytest.raises(AuthError, match="offers no SASL mechanism"):
        connect(oauth_dovecot, user, protocol, BearerLogin(user, good, ("GSSAPI",)))


def test_refresh_token_rotation_is_stored_0600(oauth_dovecot: Dovecot, tokens: TokenServer,
                                               tmp_path: Path) -> None:
    user = oauth_dovecot.add_user("o_rotate").name
    tokens.rotate = True
    first = tokens.add_refresh_token(user)
    store = RefreshTokens(tmp_path / "state")
    source = OAuth2Source("person", tokens.token_url, "public-app", refresh_token=first,
                          scopes=("mail",), store=store, ca_file=oauth_dovecot.ca_file)
    t1 = source.fetch(user)
    stored = store.load("person")
    assert stored and stored != first
    mode = stat.S_IMODE(store.path("person").stat().st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    # The next refresh uses the stored (rotated) token: the configured one is dead now.
    t2 = source.fetch(user)
    assert t2.value != t1.value and store.load("person") not in (stored, first)
    forms = [g.form for g in tokens.grants()]
    assert [f["refresh_token"] for f in forms] == [first, stored]
    assert all(f["grant_type"] == "refresh_token" and f["scope"] == "mail" for f in forms)
    session = connect(oauth_dovecot, user, "imap", BearerLogin(user, t2.value))
    session.close()


def test_invalid_grant_is_an_auth_error_with_the_code(oauth_dovecot: Dovecot,
                                                      tokens: TokenServer) -> None:
    source = OAuth2Source("person", tokens.token_url, "app", refresh_token="rt-long-gone-x",
                          ca_file=oauth_dovecot.ca_file)
    with pytest.raises(TokenError) as err:
        source.fetch("someone")
    assert err.value.kind == "auth" and err.value.code == "invalid_grant"
    assert "invalid_grant (HTTP 400)" in str(err.value) and tokens.token_url in str(err.value)
    assert "rt-long-gone-x" not in str(err.value)
    # An unreachable endpoint: also a typed auth error, no traceback.
    dead = OAuth2Source("x", "https://127.0.0.1:9/token", "app", client_secret="s")
    with pytest.raises(TokenError) as err2:
        dead.fetch("someone")
    assert err2.value.code == "unreachable"


@dataclasses.dataclass
class _Acct:
    """Just what ``Logins`` reads of an account."""

    name: str
    username: str
    credential: Any
    credentials: str | None = "shared"
    timeout: timedelta = timedelta(seconds=30)


class _Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def _app_account(dc: Dovecot, ts: TokenServer, monkeypatch: pytest.MonkeyPatch,
                 name: str) -> tuple[str, _Acct]:
    """A new user and an account using a client-credentials ``type: oauth2`` credential."""
    user = dc.add_user(name).name
    ts.add_client("app", "s3cret", user)
    monkeypatch.setenv("RT_CLIENT_SECRET", "s3cret")
    cred = OAuth2Credential(type="oauth2", token_url=ts.token_url, client_id="app",
                            client_secret_env="RT_CLIENT_SECRET", ca_file=dc.ca_file)
    return user, _Acct("a", user, cred)


def test_token_reused_then_refreshed_before_expiry_mid_run(
        oauth_dovecot: Dovecot, tokens: TokenServer, monkeypatch: pytest.MonkeyPatch) -> None:
    user, acct = _app_account(oauth_dovecot, tokens, monkeypatch, "o_midrun")
    clock = _Clock()
    logins = Logins(clock=clock)
    opened = []

    def open_session(secret: Any) -> Any:
        s = connect(oauth_dovecot, user, "imap", secret)
        opened.append(s)
        s.close()
        return s

    for _ in range(3):  # three sessions of one run: one token
        logins.connect(acct, None, open_session)  # type: ignore[arg-type]
    assert len(tokens.grants()) == 1
    clock.now += timedelta(seconds=tokens.lifetime - 60)  # inside the 5-minute margin
    logins.connect(acct, None, open_session)  # type: ignore[arg-type]
    assert len(tokens.grants()) == 2 and len(opened) == 4


def test_token_refused_by_the_server_is_refreshed_once(
        oauth_dovecot: Dovecot, tokens: TokenServer, monkeypatch: pytest.MonkeyPatch) -> None:
    user, acct = _app_account(oauth_dovecot, tokens, monkeypatch, "o_refused")
    logins = Logins()

    def open_session(secret: Any) -> Any:
        s = connect(oauth_dovecot, user, "pop3", secret)
        s.close()
        return s

    # The token the endpoint issues first is already dead at the server (like Exchange's
    # AccessTokenExpired) although expires_in says an hour: one refresh, then it works.
    tokens.expired_next = 1
    logins.connect(acct, None, open_session)  # type: ignore[arg-type]
    assert len(tokens.grants()) == 2
    # Always refused: exactly one more token, then the account's auth error.
    tokens.expired_next = 10
    logins2 = Logins()
    with pytest.raises(AuthError) as err:
        logins2.connect(acct, None, open_session)  # type: ignore[arg-type]
    assert len(tokens.grants()) == 4 and "rejected" in str(err.value)
