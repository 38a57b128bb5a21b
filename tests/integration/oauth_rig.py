"""Fixtures for the OAuth2 tests: a Dovecot with its oauth2 passdb, and a token service.

``oauth_dovecot`` is one Dovecot per module with ``oauth2_key=KEY`` (local JWT
validation); ``tokens`` is a fresh ``TokenServer`` per test signing with the same key and
serving HTTPS with that Dovecot's certificate (its CA is ``oauth_dovecot.ca_file``), so
MSAL, google-auth and the agent's own client all verify TLS as in production.
``tests/integration/conftest.py`` makes both fixtures available to every test there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from retention.testing.dovecot import Dovecot
from retention.testing.tokenserver import TokenServer

KEY = os.urandom(32)


@pytest.fixture(scope="module")
def oauth_dovecot(dovecot_factory: Callable[..., Dovecot]) -> Dovecot:
    return dovecot_factory(oauth2_key=KEY)


@pytest.fixture
def tokens(oauth_dovecot: Dovecot) -> Iterator[TokenServer]:
    d = oauth_dovecot.directory
    with TokenServer(KEY, tls=(d / "server.crt", d / "server.key")) as ts:
        yield ts


def account_for(dc: Dovecot, user: str, *, protocol: str = "imap") -> Any:
    """An ``Account`` on ``dc`` (plaintext loopback port: Dovecot counts it as secured)."""
    from retention.config.schema import Account

    port = dc.imap_port if protocol == "imap" else dc.pop3_port
    return Account(name=user.replace("_", "-"), host=dc.host, port=port, security="none",
                   allow_plaintext=True, username=user, policy="p", protocol=protocol,
                   password_env="UNUSED")
