"""End to end through the CLI: policy files with OAuth2 credentials (named under
``credentials:`` and inline ``oauth:``) clean real mailboxes on a Dovecot that only
accepts the tokens; tokens never reach the report, stderr or state_dir."""

from __future__ import annotations

import stat
from pathlib import Path

from retention.testing.dovecot import Dovecot, SeedMessage
from retention.testing.tokenserver import TokenServer
from tests.integration.helpers import SEEN, PolicyFile, ago

POLICY = {"p": {"rules": [{"name": "old", "older_than": "30d", "action": "delete"}]}}


def _no_token_anywhere(ts: TokenServer, pf: PolicyFile, *texts: str) -> None:
    state = [p.read_bytes() for p in (pf.directory / "state").rglob("*")
             if p.is_file() and p.parent.name != "tokens"]
    for token in ts.issued:
        for text in texts:
            assert token not in text
        assert not any(token.encode() in blob for blob in state), "a token in state_dir"


def test_named_oauth2_credential_cleans_mailbox_and_refreshes_mid_run(
        oauth_dovecot: Dovecot, tokens: TokenServer, tmp_path: Path) -> None:
    user = oauth_dovecot.add_user("e_app")
    user.seed("INBOX", [SeedMessage(received=ago(days=90), flags=SEEN) for _ in range(3)])
    user.seed("INBOX", [SeedMessage(received=ago(days=1), flags=SEEN)])
    tokens.add_client("retention-app", "app-secret", user.name)
    pf = PolicyFile(tmp_path, POLICY, extra={"credentials": {"app": {
        "type": "oauth2", "token_url": tokens.token_url, "client_id": "retention-app",
        "client_secret_env": "RT_APP_SECRET", "ca_file": str(oauth_dovecot.ca_file)}}})
    pf.add_imap(user, credentials="app", password_env=None, ca_file=str(oauth_dovecot.ca_file))
    pf.env["RT_APP_SECRET"] = "app-secret"
    # The first token is already dead at the server although expires_in says an hour.
    tokens.expired_next = 1
    result = pf.run()
    assert result.code == 0, result
    acct = result.report["accounts"][0]
    assert acct["status"] == "ok" and len(acct["actions"]) == 3
    assert all(a["result"] == "done" for a in acct["actions"])
    assert len(user.folder_state()["INBOX"]) == 1
    assert [g.form["grant_type"] for g in tokens.grants()] == ["client_credentials"] * 2
    _no_token_anywhere(tokens, pf, result.stdout, result.stderr)
    check = pf.cli("check")
    assert check.code == 0 and "app-secret" not in check.stdout + check.stderr


def test_inline_refresh_token_is_rotated_into_state_dir_and_pop3_logs_in(
        oauth_dovecot: Dovecot, tokens: TokenServer, tmp_path: Path) -> None:
    user = oauth_dovecot.add_user("e_person")
    user.seed("INBOX", [SeedMessage(received=ago(days=90), flags=SEEN) for _ in range(2)])
    tokens.rotate = True
    first = tokens.add_refresh_token(user.name)
    (tmp_path / "rt").write_text(first + "\n")
    (tmp_path / "rt").chmod(0o600)
    oauth = {"type": "oauth2", "token_url": tokens.token_url, "client_id": "public-app",
             "refresh_token_file": "rt", "scopes": ["mail.read", "offline_access"],
             "ca_file": str(oauth_dovecot.ca_file)}
    pf = PolicyFile(tmp_path, POLICY)
    name = pf.add_pop3(user, oauth=oauth, password_env=None, ca_file=str(oauth_dovecot.ca_file))
    first_run = pf.usage()
    assert first_run.code == 0, first_run
    stored = tmp_path / "state" / "tokens" / f"account_{name}.token"
    assert stored.exists() and stat.S_IMODE(stored.stat().st_mode) == 0o600
    rotated = stored.read_text().strip()
    assert rotated != first and rotated in tokens.issued
    # A second process: the configured refresh token is dead now; the stored one is used.
    again = pf.usage()
    assert again.code == 0, again
    forms = [g.form for g in tokens.grants()]
    assert [f["refresh_token"] for f in forms] == [first, rotated]
    assert forms[0]["scope"] == "mail.read offline_access"
    oauth_dovecot.wait_for_log(
        f"pop3-login: Info: Login: user=<{user.name}>, method=OAUTHBEARER")
    _no_token_anywhere(tokens, pf, first_run.stdout, first_run.stderr, again.stdout)


def test_invalid_grant_fails_that_account_only(oauth_dovecot: Dovecot, tokens: TokenServer,
                                               tmp_path: Path) -> None:
    good = oauth_dovecot.add_user("e_good")
    bad = oauth_dovecot.add_user("e_bad")
    tokens.add_client("retention-app", "app-secret", good.name)
    pf = PolicyFile(tmp_path, POLICY, extra={"credentials": {
        "app": {"type": "oauth2", "token_url": tokens.token_url, "client_id": "retention-app",
                "client_secret_env": "RT_APP_SECRET", "ca_file": str(oauth_dovecot.ca_file)},
        "revoked": {"type": "oauth2", "token_url": tokens.token_url, "client_id": "x",
                    "refresh_token_env": "RT_REVOKED", "ca_file": str(oauth_dovecot.ca_file)},
    }})
    pf.env.update(RT_APP_SECRET="app-secret", RT_REVOKED="rt-revoked-long-ago")
    pf.add_imap(good, credentials="app", password_env=None, ca_file=str(oauth_dovecot.ca_file))
    pf.add_imap(bad, credentials="revoked", password_env=None,
                ca_file=str(oauth_dovecot.ca_file))
    result = pf.run(dry_run=True)
    assert result.code == 1, result
    ok, failed = (result.account(n) for n in ("e-good", "e-bad"))
    assert ok["status"] == "ok"
    assert failed["status"] == "error" and failed["error_kind"] == "auth"
    assert "invalid_grant" in failed["error"] and "rt-revoked-long-ago" not in result.stdout
    assert "Traceback" not in result.stderr


def test_retention_login_device_code_then_runs_use_the_stored_token(
        oauth_dovecot: Dovecot, tokens: TokenServer, tmp_path: Path) -> None:
    user = oauth_dovecot.add_user("e_device")
    tokens.device_subject = user.name
    tokens.rotate = True
    pf = PolicyFile(tmp_path, POLICY, extra={"credentials": {"me": {
        "type": "microsoft365", "tenant": "contoso.onmicrosoft.com", "client_id": "pub-app",
        "flow": "device", "authority_host": tokens.url,
        "ca_file": str(oauth_dovecot.ca_file)}}})
    pf.add_imap(user, name="mine", credentials="me", password_env=None,
                ca_file=str(oauth_dovecot.ca_file))
    before = pf.usage()
    assert before.code == 1 and "retention login" in before.account("mine")["error"]
    login = pf.cli("login", "mine")
    assert login.code == 0, login
    assert "ABCD-EFGH" in login.stdout and "refresh token stored" in login.stdout
    stored = tmp_path / "state" / "tokens" / "me.token"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    after = pf.usage()
    assert after.code == 0, after
    assert tokens.grants()[-1].form["grant_type"] == "refresh_token"
    assert pf.cli("login", "nobody").code == 2
    _no_token_anywhere(tokens, pf, login.stdout, login.stderr, after.stdout, after.stderr)


def test_exchange_like_server_takes_its_limit_from_graph(
        dovecot_factory, oauth_dovecot: Dovecot, tokens: TokenServer, tmp_path: Path) -> None:
    from tests.integration.oauth_rig import KEY

    exo = dovecot_factory(quota=False, oauth2_key=KEY)  # like Exchange Online: no QUOTA
    user = exo.add_user("e_exo")
    user.seed("INBOX", [SeedMessage(received=ago(days=9), flags=SEEN, size=5000)])
    tokens.add_client("app-id", "app-secret", user.name)
    tokens.usage_csv = ("User Principal Name,Storage Used (Byte),"
                        "Prohibit Send/Receive Quota (Byte)\n"
                        f"{user.name},4000,107374182400\nother@x,1,2\n")
    pf = PolicyFile(tmp_path, POLICY, extra={"credentials": {"m365": {
        "type": "microsoft365", "tenant": "contoso", "client_id": "app-id",
        "client_secret_env": "RT_M365", "graph_usage": True, "authority_host": tokens.url,
        "graph_url": tokens.url, "ca_file": str(oauth_dovecot.ca_file)}}})  # the token CA
    pf.env["RT_M365"] = "app-secret"
    pf.add_imap(user, name="exo", credentials="m365", password_env=None,
                ca_file=str(exo.ca_file))
    result = pf.usage()
    assert result.code == 0, result
    row = result.account("exo")
    assert row["limit_bytes"] == 107374182400 and row["limit_source"] == "graph"
    assert row["source"] == "sum"  # usage itself is measured over IMAP (the report lags)
    scopes = [g.form["scope"] for g in tokens.grants()]
    assert scopes == ["https://outlook.office365.com/.default",
                      "https://graph.microsoft.com/.default"]
    # Without graph_usage the policy's limit is used, and the report says so.
    pf.extra["credentials"]["m365"]["graph_usage"] = False  # type: ignore[index]
    pf.policies["p"]["quota"] = {"limit": "1GiB"}  # type: ignore[index]
    pf.write()
    again = pf.usage().account("exo")
    assert again["limit_bytes"] == 1024**3 and again["limit_source"] == "policy"
