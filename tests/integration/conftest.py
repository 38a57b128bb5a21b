"""Integration-test fixtures on top of the Dovecot servers from tests/conftest.py.

  imap   an imapclient.IMAPClient logged in (plaintext port) as `mail_user`,
         logged out at teardown
  oauth_dovecot, tokens   a Dovecot with its oauth2 passdb and a local token service
         (tests/integration/oauth_rig.py)

Everything in this directory is marked `dovecot` by tests/conftest.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from retention.testing.dovecot import MailUser
from tests.integration.oauth_rig import oauth_dovecot, tokens  # noqa: F401


@pytest.fixture
def imap(mail_user: MailUser) -> Iterator[Any]:
    client = mail_user.imap_client()
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.logout()
