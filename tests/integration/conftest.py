"""Integration-test fixtures on top of the Dovecot servers from tests/conftest.py.

  imap   an imapclient.IMAPClient logged in (plaintext port) as `mail_user`,
         logged out at teardown
  oauth_dovecot, tokens   a Dovecot with its oauth2 passdb and a local token service
         (tests/integration/oauth_rig.py)
  cyrus  a real Cyrus IMAP per module, in both of its namespace layouts: Debian's
         (``user.alice``, ``INBOX.Trash``) and upstream's (``unixhierarchysep`` and
         ``altnamespace``: ``user/alice``, ``Trash``); skipped without Cyrus (outside CI)

Everything in this directory is marked `dovecot` by tests/conftest.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from retention.testing.cyrus import Cyrus, cyrus_unavailable_reason
from retention.testing.dovecot import MailUser
from tests.integration.oauth_rig import oauth_dovecot, tokens  # noqa: F401
from tests.integration.sources_support import require


@pytest.fixture
def imap(mail_user: MailUser) -> Iterator[Any]:
    client = mail_user.imap_client()
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.logout()


@pytest.fixture(scope="module", params=["debian", "upstream"])
def cyrus(request: pytest.FixtureRequest) -> Iterator[Cyrus]:
    require("Cyrus IMAP", cyrus_unavailable_reason())
    upstream = request.param == "upstream"
    with Cyrus(unixhierarchysep=upstream, altnamespace=upstream) as server:
        yield server
