"""OAuth2 credential kinds in the policy file: valid forms, paths, and FILE:LINE errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from retention.config.load import load_config, warnings
from retention.config.oauth import GoogleCredential, Microsoft365Credential, OAuth2Credential
from retention.errors import ConfigError

HEAD = """\
policies:
  p: {rules: []}
"""


def _load(tmp_path: Path, body: str):
    path = tmp_path / "policy.yaml"
    path.write_text(HEAD + textwrap.dedent(body), encoding="utf-8")
    return load_config(path, env={})


def test_named_and_inline_credentials(tmp_path: Path) -> None:
    config = _load(tmp_path, """\
        credentials:
          m365: {type: microsoft365, tenant: contoso, client_id: app, client_secret_env: S}
          gw: {type: google, service_account_file: keys/sa.json}
          pw: {password_env: P}
        accounts:
          - {name: a, host: outlook.office365.com, username: a@contoso.com, policy: p,
             credentials: m365}
          - {name: b, host: imap.gmail.com, username: b@x.com, policy: p, credentials: gw}
          - {name: c, host: h, username: c, policy: p, credentials: pw}
          - name: d
            host: h
            username: d
            policy: p
            oauth: {type: oauth2, token_url: "https://idp/token", client_id: x,
                    refresh_token_file: rt}
        """)
    a, b, c, d = config.accounts
    assert isinstance(a.credential, Microsoft365Credential) and a.password_env is None
    assert isinstance(b.credential, GoogleCredential)
    assert b.credential.service_account_file == tmp_path / "keys" / "sa.json"
    assert c.credential is not None and c.password_env == "P"
    assert isinstance(d.credential, OAuth2Credential)
    assert d.credential.refresh_token_file == tmp_path / "rt"
    text = "\n".join(warnings(config, env={}))
    assert "credential m365: environment variable S is not set" in text
    assert "service_account_file" in text and "account d: refresh_token_file" in text


@pytest.mark.parametrize(("body", "expected"), [
    ("""\
        credentials:
          m: {type: microsoft365, tenant: t, client_id: c}
        accounts: [{name: a, host: h, username: u, policy: p, credentials: m}]
     """, "policy.yaml:4: credentials.m.client_secret_env: flow app needs exactly one of"),
    ("""\
        credentials:
          o: {type: oauth2, token_url: "http://idp/token", client_id: c, client_secret_env: S}
        accounts: [{name: a, host: h, username: u, policy: p, credentials: o}]
     """, "policy.yaml:4: credentials.o.token_url: must be an https:// URL"),
    ("""\
        credentials:
          g: {type: google}
        accounts: [{name: a, host: h, username: u, policy: p, credentials: g}]
     """, "credentials.g.service_account_file: missing required key"),
    ("""\
        accounts:
          - {name: a, host: h, username: u, policy: p, password_env: P,
             oauth: {type: google, service_account_file: f}}
     """, "oauth: give either oauth or password_env/password_file"),
    ("""\
        accounts:
          - {name: a, host: h, username: u, policy: p, oauth: {type: kerberos}}
     """, "type: must be oauth2, microsoft365 or google"),
])
def test_bad_credentials_name_file_line_field(tmp_path: Path, body: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, body)
    assert expected in str(err.value)
