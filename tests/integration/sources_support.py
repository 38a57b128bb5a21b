"""Support for the LDAP and SQL source tests: the real servers, and reader settings.

Fixtures (session-scoped, lazy): ``slapd`` (a real OpenLDAP with 300 users, see
``retention.testing.slapd``) and ``postgres`` (a real PostgreSQL cluster). Import
``slapd_fixture`` / ``postgres_fixture`` into a test module to use them. Without the
server they skip with the reason, except under CI=true, where that is a failure: CI must
never go green by skipping these.

``ldap_settings``/``sql_settings`` build the validated source settings the readers take
(``retention.config.sources.LdapSource``/``SqlSource``); ``replace`` changes one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, TypeVar

import pytest

from retention.config.sources import LdapSource, PolicyBy, SqlSource
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


def _policy_by(attributes: tuple[str, ...]) -> list[PolicyBy]:
    # Attributes that policy_by rules read are fetched too: one catch-all rule per name.
    return [PolicyBy(attribute=a, value="*", policy="std") for a in attributes]


def ldap_settings(*, extra: tuple[str, ...] = (), **keys: Any) -> LdapSource:
    """A validated ``ldap`` source (name ``directory``); ``extra``: policy_by attributes."""
    keys.setdefault("name", "directory")
    return LdapSource.model_validate({"type": "ldap", **keys, "policy_by": _policy_by(extra)})


def sql_settings(**keys: Any) -> SqlSource:
    """A validated ``sql`` source (name ``database``)."""
    keys.setdefault("name", "database")
    return SqlSource.model_validate({"type": "sql", **keys})


M = TypeVar("M", LdapSource, SqlSource)


def replace(settings: M, *, extra: tuple[str, ...] | None = None, **changes: Any) -> M:
    """``settings`` with ``changes``, not validated again (so a test can make one the
    policy validation would refuse, and see that the reader refuses it too)."""
    if extra is not None:
        changes["policy_by"] = _policy_by(extra)
    return settings.model_copy(update=changes)
