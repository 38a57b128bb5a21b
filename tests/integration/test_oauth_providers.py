"""MSAL (Microsoft 365) and google-auth (Google Workspace) against a local stand-in for the
providers' token services (HTTPS on 127.0.0.1, no network): the requests they send (grant
type, scope, assertion shape), token reuse, errors with the provider's code, and the
tokens they bring back logging in to a real Dovecot."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from retention.adapters.imap.session import ImapSession
from retention.auth.google import GoogleSource
from retention.auth.microsoft import (
    EXO_APP_SCOPE,
    MicrosoftSource,
    certificate_credential,
    parse_usage_csv,
)
from retention.auth.sasl import BearerLogin
from retention.auth.tokens import TokenCache
from retention.errors import TokenError
from retention.state.tokens import RefreshTokens
from retention.testing.dovecot import Dovecot
from retention.testing.tokenserver import DEVICE_GRANT, JWT_BEARER, TokenServer, jwt_parts
from tests.integration.oauth_rig import account_for

pytest.importorskip("msal")
pytest.importorskip("google.oauth2.service_account")

TENANT = "11111111-2222-3333-4444-555555555555"


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _login(dc: Dovecot, user: str, token: str) -> None:
    ImapSession.connect(account_for(dc, user), BearerLogin(user, token), readonly=True).close()


def _m365(ts: TokenServer, dc: Dovecot, **kw: object) -> MicrosoftSource:
    return MicrosoftSource(name="m365", tenant=TENANT, client_id="app-id",
                           authority_host=ts.url, graph_url=ts.url, ca_file=dc.ca_file,
                           **kw)  # type: ignore[arg-type]


def test_msal_client_secret_grant_scope_and_reuse(oauth_dovecot: Dovecot,
                                                   tokens: TokenServer) -> None:
    user = oauth_dovecot.add_user("m_secret").name
    tokens.add_client("app-id", "app-secret", user)
    cache = TokenCache(_m365(tokens, oauth_dovecot, client_credential="app-secret"))
    token = cache.token(f"{user}")
    assert cache.token("another-mailbox@x") == token  # app-only: one token for all mailboxes
    (grant,) = tokens.grants()
    assert grant.path == f"/{TENANT}/oauth2/v2.0/token"
    assert grant.form["grant_type"] == "client_credentials"
    assert grant.form["scope"] == EXO_APP_SCOPE
    assert grant.form["client_id"] == "app-id" and grant.form["client_secret"] == "app-secret"
    _login(oauth_dovecot, user, token)
    # A forced refresh really asks again (MSAL's own cache does not hand back the refused one).
    assert cache.token(user, force=True) != token and len(tokens.grants()) == 2


def test_msal_certificate_sends_a_signed_client_assertion(oauth_dovecot: Dovecot,
                                                          tokens: TokenServer,
                                                          tmp_path: Path) -> None:
    user = oauth_dovecot.add_user("m_cert").name
    tokens.add_client("app-id", None, user)
    key = _rsa_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "retention")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=9))
            .sign(key, hashes.SHA256()))
    pem = tmp_path / "app.pem"
    pem.write_text(cert.public_bytes(serialization.Encoding.PEM).decode() + _pem(key))
    source = _m365(tokens, oauth_dovecot, client_credential=certificate_credential(pem, None))
    token = source.fetch(user).value
    (grant,) = tokens.grants()
    assert "client_secret" not in grant.form
    assert grant.form["client_assertion_type"] == \
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    head, claims = jwt_parts(grant.form["client_assertion"])
    assert head["alg"] in ("RS256", "PS256") and ("x5t" in head or "x5t#S256" in head)
    assert claims["iss"] == claims["sub"] == "app-id"
    assert claims["aud"].endswith(f"/{TENANT}/oauth2/v2.0/token")
    _login(oauth_dovecot, user, token)


def test_msal_error_is_a_token_error_with_the_code(oauth_dovecot: Dovecot,
                                                   tokens: TokenServer) -> None:
    tokens.add_client("app-id", "right", "nobody")
    source = _m365(tokens, oauth_dovecot, client_credential="wrong")
    with pytest.raises(TokenError) as err:
        source.fetch("x")
    assert err.value.code == "invalid_client" and "wrong" not in str(err.value)


def test_device_flow_login_stores_refresh_token_and_runs_use_it(
        oauth_dovecot: Dovecot, tokens: TokenServer, tmp_path: Path) -> None:
    user = oauth_dovecot.add_user("m_device").name
    tokens.device_subject = user
    tokens.rotate = True
    store = RefreshTokens(tmp_path)
    source = _m365(tokens, oauth_dovecot, flow="device", store=store)
    out = io.StringIO()
    source.device_login(out)
    assert "ABCD-EFGH" in out.getvalue()  # the code the person types in
    first = store.load("m365")
    assert first and first.startswith("rt-")
    kinds = [g.form["grant_type"] for g in tokens.grants()]
    assert kinds == [DEVICE_GRANT]
    (start,) = [r for r in tokens.requests if r.path.endswith("/devicecode")]
    assert start.form["client_id"] == "app-id"
    scopes = start.form["scope"].split()
    assert "https://outlook.office.com/IMAP.AccessAsUser.All" in scopes
    assert "offline_access" in scopes  # MSAL adds it: a refresh token comes back
    # A later run: the stored refresh token, rotated and stored again.
    token = TokenCache(_m365(tokens, oauth_dovecot, flow="device", store=store)).token(user)
    assert tokens.grants()[-1].form["grant_type"] == "refresh_token"
    assert tokens.grants()[-1].form["refresh_token"] == first
    assert store.load("m365") not in (None, first)
    _login(oauth_dovecot, user, token)


def test_device_flow_without_login_says_what_to_run(oauth_dovecot: Dovecot,
                                                   tokens: TokenServer, tmp_path: Path) -> None:
    source = _m365(tokens, oauth_dovecot, flow="device", store=RefreshTokens(tmp_path))
    with pytest.raises(TokenError, match="retention login") as err:
        source.fetch("x")
    assert err.value.code == "login_required"


def test_graph_mailbox_usage_csv_and_no_token_to_the_download(
        oauth_dovecot: Dovecot, tokens: TokenServer) -> None:
    tokens.add_client("app-id", "app-secret", "x")
    tokens.usage_csv = (
        "\ufeffReport Refresh Date,User Principal Name,Display Name,Is Deleted,Deleted Date,"
        "Created Date,Last Activity Date,Item Count,Storage Used (Byte),"
        "Issue Warning Quota (Byte),Prohibit Send Quota (Byte),"
        "Prohibit Send/Receive Quota (Byte),Deleted Item Count,Deleted Item Size (Byte),"
        "Deleted Item Quota (Byte),Has Archive,Report Period\n"
        "2026-12-01,Alice@Contoso.com,Alice,False,,2020-01-01,2026-11-30,1200,1073741824,"
        "52613349376,53687091200,107374182400,0,0,32212254720,False,7\n")
    source = _m365(tokens, oauth_dovecot, client_credential="app-secret")
    assert source.mailbox_usage("alice@contoso.com") == (1073741824, 107374182400)
    assert source.mailbox_usage("bob@contoso.com") is None
    graph = [r for r in tokens.requests if "getMailboxUsageDetail" in r.path]
    download = [r for r in tokens.requests if r.path.endswith("usage.csv")]
    assert len(graph) == 1 and len(download) == 1  # cached: one report per sweep
    assert graph[0].headers["authorization"].startswith("Bearer ")
    assert "authorization" not in download[0].headers
    assert tokens.grants()[0].form["scope"] == "https://graph.microsoft.com/.default"
    assert parse_usage_csv("User Principal Name,Storage Used (Byte)\nx,12\n") == {"x": (12, None)}


def _service_account(tmp_path: Path, ts: TokenServer) -> Path:
    info = {"type": "service_account", "project_id": "p", "private_key_id": "kid1",
            "private_key": _pem(_rsa_key()), "client_email": "retention@p.iam.gserviceaccount.com",
            "client_id": "1234", "token_uri": "https://oauth2.googleapis.com/token"}
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(info))
    return path


def test_google_service_account_delegation(oauth_dovecot: Dovecot, tokens: TokenServer,
                                           tmp_path: Path) -> None:
    alice = oauth_dovecot.add_user("g_alice").name
    bob = oauth_dovecot.add_user("g_bob").name
    source = GoogleSource("gw", _service_account(tmp_path, tokens),
                          token_uri=tokens.token_url, ca_file=oauth_dovecot.ca_file)
    cache = TokenCache(source)
    ta, tb = cache.token(alice), cache.token(bob)
    assert cache.token(alice) == ta and ta != tb  # per mailbox, and reused
    grants = tokens.grants()
    assert len(grants) == 2 and all(g.form["grant_type"] == JWT_BEARER for g in grants)
    head, claims = jwt_parts(grants[0].form["assertion"])
    assert head["alg"] == "RS256" and head["kid"] == "kid1"
    assert claims["iss"] == "retention@p.iam.gserviceaccount.com"
    assert claims["sub"] == alice and claims["scope"] == "https://mail.google.com/"
    # google-auth always names Google's endpoint as the audience, whatever token_uri is.
    assert claims["aud"] == "https://oauth2.googleapis.com/token"
    assert grants[0].path == "/token"  # ...but it went to the configured token_uri
    _login(oauth_dovecot, alice, ta)
    _login(oauth_dovecot, bob, tb)


def test_google_unauthorized_client_names_the_code(oauth_dovecot: Dovecot, tokens: TokenServer,
                                                   tmp_path: Path) -> None:
    tokens.fail_next.append((401, "unauthorized_client"))
    source = GoogleSource("gw", _service_account(tmp_path, tokens),
                          token_uri=tokens.token_url, ca_file=oauth_dovecot.ca_file)
    with pytest.raises(TokenError) as err:
        source.fetch("someone@x")
    assert err.value.code == "unauthorized_client" and err.value.kind == "auth"
