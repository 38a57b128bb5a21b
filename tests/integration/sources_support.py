"""Support for the LDAP and SQL source tests: the real servers, and reader settings.

Fixtures (session-scoped, lazy): ``slapd`` (a real OpenLDAP with 300 users, see
``retention.testing.slapd``) and ``postgres`` (a real PostgreSQL cluster). Import
``slapd_fixture`` / ``postgres_fixture`` into a test module to use them. Without the
server they skip with the reason, except under CI=true, where that is a failure: CI must
never go green by skipping these.

``LdapSettings``/``SqlSettings`` carry the names and defaults of the ``ldap``/``sql``
source settings the readers take (``retention.config.sources``), as plain dataclasses so
these tests construct them directly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest

from retention.testing.postgres import Postgres, postgres_unavailable_reason
from retention.testing.slapd import LdapUser, Slapd, make_users, slapd_unavailable_reason

USERS = 300
# One user with two mail values (the username attribute must still be one string).
TWO_MAILS = LdapUser("twomail", "first@example.org", "vip", extra_mail=("second@example.org",))


def require(what: str, reason: str | None) -> None:
    if reason is None:
        return
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI=true but {what} is unavailable: {reason}", pytrace=False)
    pytest.skip(f"{what} unavailable: {reason}")


@pytest.fixture(scope="session", name="slapd")
def slapd_fixture() -> Iterator[Slapd]:
    require("slapd", slapd_unavailable_reason())
    with Slapd([*make_users(USERS - 1), TWO_MAILS]) as server:
        yield server


@pytest.fixture(scope="session", name="postgres")
def postgres_fixture() -> Iterator[Postgres]:
    require("PostgreSQL", postgres_unavailable_reason())
    with Postgres() as server:
        yield server


@dataclass(frozen=True)
class LdapAttributes:
    username: str = "mail"
    name: str | None = None
    policy: str | None = None


@dataclass(frozen=True)
class LdapSettings:
    url: str
    base: str
    name: str = "directory"
    bind_dn: str | None = None
    bind_password_env: str | None = None
    bind_password_file: Path | None = None
    filter: str = "(objectClass=*)"
    attributes: LdapAttributes = field(default_factory=LdapAttributes)
    starttls: bool = False
    ca_file: Path | None = None
    tls_verify: bool = True
    allow_plaintext: bool = False
    page_size: int = 500
    timeout: timedelta = timedelta(seconds=30)
    extra: tuple[str, ...] = ()  # what policy_by rules read

    def wanted_attributes(self) -> list[str]:
        names = [self.attributes.username, self.attributes.name, self.attributes.policy,
                 *self.extra]
        return list(dict.fromkeys(n for n in names if n))


@dataclass(frozen=True)
class SqlSettings:
    url: str
    query: str
    name: str = "database"
    password_env: str | None = None
    password_file: Path | None = None
    batch_size: int = 1000
    timeout: timedelta = timedelta(seconds=30)
