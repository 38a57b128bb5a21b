"""The policy file's ``sources:`` entries: where accounts come from besides ``accounts:``.

This module owns what a source entry may say (one settings model per type, unknown keys
are errors, every model frozen) and ``policy_by``, the ordered rules that give each
account from a source its policy. No I/O: the readers in ``retention.sources`` take these
validated settings. The account template (``account:``) stays a plain mapping here and
is validated against ``Account`` by ``retention.sources`` (it lacks the name and username
that each entry supplies).

Secrets (an LDAP bind password, a database password) are named by ``*_env``/``*_file``
like account passwords, never written in the file.
"""

from __future__ import annotations

import fnmatch
import re
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)

from retention.config.base import NAME_PATTERN, ServiceDuration, Strict

_NAME = NAME_PATTERN
_Strict = Strict
Duration = ServiceDuration


class PolicyBy(_Strict):
    """One ``policy_by`` rule: exactly one of ``match``, ``domain``, ``attribute``.

    ``match`` is a shell glob on the username (``*@vip.example.com``, case-insensitive);
    ``domain`` the part after the last ``@`` (case-insensitive); ``attribute`` + ``value``
    an LDAP attribute, SQL or CSV column of the entry (``value`` a glob, case-sensitive
    as directories store it; a multi-valued attribute matches if any value does).
    """

    match: StrictStr | None = None
    domain: StrictStr | None = None
    attribute: StrictStr | None = None
    value: StrictStr | None = None
    policy: StrictStr

    @model_validator(mode="after")
    def _one_selector(self) -> PolicyBy:
        given = [k for k in ("match", "domain", "attribute") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("match: give exactly one of match, domain or attribute")
        if (self.attribute is None) != (self.value is None):
            raise ValueError("value: attribute and value go together")
        return self

    @cached_property
    def _regex(self) -> re.Pattern[str] | None:
        if self.match is not None:
            return re.compile(fnmatch.translate(self.match), re.IGNORECASE)
        if self.value is not None:
            return re.compile(fnmatch.translate(self.value))
        return None

    def matches(self, username: str, entry: Any) -> bool:
        """Does this rule select the entry (``entry``: a mapping of attribute -> value)?"""
        if self.domain is not None:
            return username.rpartition("@")[2].lower() == self.domain.lower()
        regex = self._regex
        assert regex is not None
        if self.match is not None:
            return regex.match(username) is not None
        assert self.attribute is not None
        got = entry.get(self.attribute)
        if got is None:
            return False
        values = got if isinstance(got, list | tuple) else (got,)
        return any(regex.match(str(v)) is not None for v in values)

    def describe(self) -> str:
        if self.match is not None:
            return f"match {self.match}"
        if self.domain is not None:
            return f"domain {self.domain}"
        return f"attribute {self.attribute}={self.value}"


class _SourceBase(_Strict):
    name: Annotated[StrictStr, Field(pattern=_NAME)]
    # Any account key (protocol, host, port, security, credentials, policy, schedule...):
    # validated against Account by retention.sources with each entry's name and username.
    account: dict[StrictStr, Any] = Field(default_factory=dict)
    policy_by: list[PolicyBy] = Field(default_factory=list)
    refresh: Duration = timedelta(hours=1)

    def attribute_names(self) -> list[str]:
        """Attributes/columns the ``policy_by`` rules read (a reader fetches them too)."""
        return [r.attribute for r in self.policy_by if r.attribute is not None]


class PasswdFileSource(_SourceBase):
    """Dovecot's passwd-file: ``user:password:uid:gid:gecos:home:shell:extra``."""

    type: Literal["passwd-file"]
    path: Path


class CsvSource(_SourceBase):
    """A CSV file with a header row: ``name``, ``username``, account keys, ``policy``."""

    type: Literal["csv"]
    path: Path
    delimiter: Annotated[StrictStr, Field(min_length=1, max_length=1)] = ","


class DoveadmSource(_SourceBase):
    """The users ``doveadm user '*'`` lists (userdb iteration), or another command's."""

    type: Literal["doveadm"]
    # Run without a shell; one username per output line.
    command: list[StrictStr] = Field(
        default_factory=lambda: ["doveadm", "user", "*"], min_length=1
    )
    timeout: Duration = timedelta(minutes=10)


class LdapAttributes(_Strict):
    """Which LDAP attribute is what."""

    username: StrictStr = "mail"
    name: StrictStr | None = None  # default: the username
    policy: StrictStr | None = None  # its value is the name of a policy


class LdapSource(_SourceBase):
    """An LDAP directory: a paged search under ``base`` with ``filter``."""

    type: Literal["ldap"]
    url: StrictStr  # ldaps://host[:port] or ldap://host[:port] (then starttls)
    bind_dn: StrictStr | None = None  # None: anonymous bind
    bind_password_env: StrictStr | None = None
    bind_password_file: Path | None = None
    base: StrictStr
    filter: StrictStr = "(objectClass=*)"
    attributes: LdapAttributes = Field(default_factory=LdapAttributes)
    starttls: StrictBool = False
    ca_file: Path | None = None
    tls_verify: StrictBool = True
    allow_plaintext: StrictBool = False
    page_size: StrictInt = Field(default=500, ge=1, le=100000)
    timeout: Duration = timedelta(seconds=30)

    @model_validator(mode="after")
    def _secure(self) -> LdapSource:
        if not self.url.lower().startswith(("ldap://", "ldaps://", "ldapi://")):
            raise ValueError("url: must start with ldaps://, ldap:// or ldapi://")
        if self.bind_password_env is not None and self.bind_password_file is not None:
            raise ValueError("bind_password_env: give at most one of bind_password_env or "
                             "bind_password_file")
        has_password = self.bind_password_env is not None or self.bind_password_file is not None
        if self.bind_dn is not None and not has_password:
            raise ValueError("bind_password_env: bind_dn needs bind_password_env or "
                             "bind_password_file")
        plain = self.url.lower().startswith("ldap://") and not self.starttls
        if plain and has_password and not self.allow_plaintext:
            raise ValueError("url: ldap:// without starttls sends the bind password in clear "
                             "text; use ldaps://, starttls: true, or allow_plaintext: true")
        return self

    def wanted_attributes(self) -> list[str]:
        """Every attribute the search must return (username, name, policy, policy_by)."""
        names = [self.attributes.username, self.attributes.name, self.attributes.policy,
                 *self.attribute_names()]
        return list(dict.fromkeys(n for n in names if n))


class SqlSource(_SourceBase):
    """An SQL query (SQLAlchemy URL) returning ``username`` and optional account keys."""

    type: Literal["sql"]
    url: StrictStr  # without the password: use password_env/password_file
    password_env: StrictStr | None = None
    password_file: Path | None = None
    query: StrictStr
    batch_size: StrictInt = Field(default=1000, ge=1, le=1000000)
    timeout: Duration = timedelta(seconds=30)

    @model_validator(mode="after")
    def _one_password(self) -> SqlSource:
        if self.password_env is not None and self.password_file is not None:
            raise ValueError("password_env: give at most one of password_env or password_file")
        return self


SourceSpec = Annotated[
    PasswdFileSource | CsvSource | DoveadmSource | LdapSource | SqlSource,
    Field(discriminator="type"),
]
SOURCE_TYPES = ("passwd-file", "csv", "doveadm", "ldap", "sql")
