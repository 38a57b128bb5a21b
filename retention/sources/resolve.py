"""Entries -> accounts: a source's template, each entry's keys and ``policy_by``.

This module owns the rules by which one entry (a mapping of attribute/column -> text, as
every reader yields) becomes one account:

* username: the entry's ``username`` (LDAP: ``attributes.username``); name: its ``name``
  (LDAP: ``attributes.name``) or else the username. A name the policy file could not
  hold (``[A-Za-z0-9][A-Za-z0-9._@+-]*``) skips the entry, with the reason reported.
* account keys: columns named like account keys (``host``, ``port``, ``protocol``,
  ``credentials``...) override the template for that entry. Each distinct combination is
  validated once, as a prototype (see ``config.template``), not once per entry.
* policy, first that applies: the entry's own ``policy`` (LDAP: ``attributes.policy``),
  then the first matching ``policy_by`` rule, then the template's ``policy``.

No I/O: the reader supplies the entries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from retention.config.load import protocol_problems
from retention.config.schema import Account, Config
from retention.config.sources import LdapSource
from retention.config.template import NAME_RE, coerce, prototype
from retention.sources.model import RULE_ENTRY, RULE_TEMPLATE, SourceAccounts

# Keys an entry may override; name/username/policy are handled on their own.
OVERRIDE_KEYS = frozenset(Account.model_fields) - {"name", "username", "policy", "credential"}
MAX_REPORTED = 20  # skipped entries described (all are counted)


def _field_names(spec: Any) -> tuple[str, str, str]:
    if isinstance(spec, LdapSource):
        a = spec.attributes
        return a.username, a.name or a.username, a.policy or "\0none"
    return "username", "name", "policy"


def _why(err: ValidationError | ValueError) -> str:
    if isinstance(err, ValidationError):
        parts = []
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"])
            parts.append(f"{loc}: {str(e.get('msg', 'invalid')).removeprefix('Value error, ')}")
        return "; ".join(parts)
    return str(err)


class Resolver:
    """Turns one source's entries into its ``SourceAccounts`` (see the module doc)."""

    def __init__(self, config: Config, spec: Any, where: str) -> None:
        self.config = config
        self.spec = spec
        self.base: Path | None = config.source.resolve().parent if config.source else None
        self.out = SourceAccounts(source=spec.name, where=where,
                                  rule_names=[r.describe() for r in spec.policy_by])
        self.user_key, self.name_key, self.policy_key = _field_names(spec)
        self._variants: dict[tuple[tuple[str, str], ...], int | str] = {}
        self._policy_index: dict[str, int] = {}
        self._checked: dict[tuple[int, int], str | None] = {}
        self._rules = list(spec.policy_by)
        self._template_policy = spec.account.get("policy")
        self._policies = config.policies

    def skip(self, row: int, why: str) -> None:
        out = self.out
        out.skipped_count += 1
        if len(out.skipped) < MAX_REPORTED:
            out.skipped.append(f"{out.where}:{row}: {why}" if "://" not in out.where
                               else f"{out.where} entry {row}: {why}")

    def _variant(self, entry: Mapping[str, str]) -> int | str:
        """The index of the entry's prototype, or why the entry cannot be an account."""
        keys = OVERRIDE_KEYS.intersection(entry.keys()) if len(entry) > 1 else ()
        items = tuple(sorted((k, entry[k]) for k in keys if entry[k] not in ("", None)))
        found = self._variants.get(items)
        if found is not None:
            return found
        try:
            data = dict(self.spec.account)
            for k, v in items:
                data[k] = coerce(k, v)
            proto = prototype(self.config, data, self.base)
            result: int | str = len(self.out.prototypes)
            self.out.prototypes.append(proto)
        except (ValidationError, ValueError) as e:
            result = _why(e)
        self._variants[items] = result
        return result

    def _policy(self, username: str, entry: Mapping[str, str]) -> tuple[str | None, int]:
        own = entry.get(self.policy_key)
        if own:
            return own, RULE_ENTRY
        for i, rule in enumerate(self._rules):
            if rule.matches(username, entry):
                return rule.policy, i
        return self._template_policy, RULE_TEMPLATE

    def add(self, entry: Mapping[str, str], row: int) -> None:
        username = entry.get(self.user_key)
        if isinstance(username, list | tuple):  # a multi-valued attribute: the first
            username = username[0] if username else None
        if not username:
            self.skip(row, f"no {self.user_key}")
            return
        name = entry.get(self.name_key) or username
        if not NAME_RE.match(name) or any(c in username for c in "\r\n\0"):
            self.skip(row, f"{name!r} cannot be an account name (letters, digits, ._@+-)")
            return
        variant = self._variant(entry)
        if isinstance(variant, str):
            self.skip(row, variant)
            return
        policy, rule = self._policy(username, entry)
        if policy is None:
            self.skip(row, "no policy: no policy_by rule matched and account.policy is unset")
            return
        pidx = self._policy_index.get(policy)
        if pidx is None:
            if policy not in self._policies:
                known = ", ".join(sorted(self._policies))
                self.skip(row, f"unknown policy {policy!r} (known: {known})")
                return
            pidx = self._policy_index[policy] = len(self.out.policies)
            self.out.policies.append(policy)
        key = (variant, pidx)
        problem = self._checked.get(key, "")
        if problem == "":
            proto = self.out.prototypes[variant]
            found = protocol_problems(self.config, proto.protocol, policy,
                                      f"{proto.protocol} accounts of source {self.spec.name!r}")
            problem = self._checked[key] = (
                "; ".join(f"{'.'.join(map(str, loc))}: {m}" for loc, m in found) or None
            )
        if problem:
            self.skip(row, problem)
            return
        out = self.out
        out.names.append(name)
        out.usernames.append(username)
        out.variant.append(variant)
        out.policy.append(pidx)
        out.rule.append(rule)
        out.line.append(row)

    def add_all(self, entries: Iterable[Mapping[str, str]]) -> SourceAccounts:
        # Readers of files expose the line of the entry they yielded last (``line``).
        lines = getattr(entries, "line", None) is not None
        for n, entry in enumerate(entries, 1):
            self.add(entry, getattr(entries, "line", n) if lines else n)
        return self.out
