"""``check`` warns about a password login to Exchange Online (basic authentication is off
in every tenant; only OAuth2 credentials of type microsoft365 get in)."""

from __future__ import annotations

from pathlib import Path

from retention.config.load import load_config
from retention.config.load import warnings as config_warnings


def test_check_warns_about_a_password_login_to_exchange_online(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(
        f"state_dir: {tmp_path / 's'}\npolicies: {{p: {{}}}}\n"
        "credentials:\n"
        "  m365: {type: microsoft365, tenant: contoso.onmicrosoft.com, client_id: x,\n"
        "         client_secret_env: M365_SECRET}\n"
        "accounts:\n"
        "  - {name: pw, host: outlook.office365.com, username: a@contoso.com, policy: p,\n"
        "     password_env: P}\n"
        "  - {name: oauth, host: outlook.office365.com, username: b@contoso.com, policy: p,\n"
        "     credentials: m365}\n"
        "  - {name: other, host: imap.example.org, username: c, policy: p, password_env: P}\n",
        encoding="utf-8")
    warned = [w for w in config_warnings(load_config(policy, env={}), env={"P": "x"})
              if "Exchange Online" in w]
    assert warned == ["account pw: Exchange Online refuses password logins (basic "
                      "authentication is off in every tenant): use a credential of type "
                      "microsoft365 (README: OAuth2)"]
