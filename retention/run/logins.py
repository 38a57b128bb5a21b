"""The process's ``Logins`` registry, with rotated refresh tokens kept in ``state_dir``.

``retention.auth`` sits below ``state``, so the wiring of the two lives here: the CLI,
``run_account`` and ``serve`` share this one registry (and so one token cache per
credential for the whole process).
"""

from __future__ import annotations

import sys
from typing import TextIO

from retention.auth.logins import Logins, build_source, oauth_of
from retention.auth.microsoft import MicrosoftSource
from retention.config.oauth import Microsoft365Credential
from retention.config.schema import Config
from retention.errors import AccountError
from retention.state.tokens import RefreshTokens

LOGINS = Logins(store_for=RefreshTokens)


def device_login(config: Config, name: str, out: TextIO) -> int:
    """``retention login ACCOUNT``: the device-code flow once; the refresh token is stored.

    Exit 0 when stored, 1 when the provider refused, 2 when the account has no
    device-code credential (a usage error).
    """
    try:
        account = config.account(name)
    except KeyError:
        print(f"retention login: no account {name!r} in the policy file", file=sys.stderr)
        return 2
    found = oauth_of(account)
    cred = found[1] if found else None
    if found is None or not isinstance(cred, Microsoft365Credential) or cred.flow != "device":
        print(f"retention login: account {name} does not use a microsoft365 credential "
              "with flow: device (nothing to log in)", file=sys.stderr)
        return 2
    key = found[0]
    source = build_source(key, cred, RefreshTokens(config.state_dir),
                          timeout=account.timeout.total_seconds() or 30.0)
    assert isinstance(source, MicrosoftSource)
    try:
        who = source.device_login(out)
    except AccountError as exc:
        print(f"retention login: {exc}", file=sys.stderr)
        return 1
    where = RefreshTokens(config.state_dir).path(key)
    print(f"signed in{' as ' + who if who else ''}; refresh token stored in {where}", file=out)
    return 0
