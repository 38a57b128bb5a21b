"""The compact, lazy account list of a fleet: what a million accounts cost in memory.

This module owns how accounts from sources are *stored* once read: per source, parallel
columns (names, usernames, and small integer indexes into the source's validated
prototypes, policy names and ``policy_by`` rules), about 100 bytes per account. An
``Account`` object is built only when somebody asks for one (``FleetAccounts[i]``,
iteration), by copying a prototype, and dropped again by the caller: the scheduler and
the runner stream over them. No I/O.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import overload

from retention.config.schema import Account

# Values of SourceAccounts.rules that are not an index into policy_by:
RULE_ENTRY = -1  # the entry's own policy column/attribute
RULE_TEMPLATE = -2  # the template's policy


@dataclass
class SourceAccounts:
    """The accounts one source yielded, in its order (see the module docstring)."""

    source: str
    where: str  # e.g. "/etc/dovecot/users" or "ldaps://ldap.example.com", for messages
    prototypes: list[Account] = field(default_factory=list)
    policies: list[str] = field(default_factory=list)
    rule_names: list[str] = field(default_factory=list)  # describe() of each policy_by rule
    names: list[str] = field(default_factory=list)
    usernames: list[str] = field(default_factory=list)  # the same str object when == name
    variant: array[int] = field(default_factory=lambda: array("I"))
    policy: array[int] = field(default_factory=lambda: array("H"))
    rule: array[int] = field(default_factory=lambda: array("h"))
    line: array[int] = field(default_factory=lambda: array("I"))  # line/row, for messages
    skipped: list[str] = field(default_factory=list)  # first few unusable entries, why
    skipped_count: int = 0

    def __len__(self) -> int:
        return len(self.names)

    def account(self, i: int) -> Account:
        proto = self.prototypes[self.variant[i]]
        return proto.model_copy(
            update={
                "name": self.names[i],
                "username": self.usernames[i],
                "policy": self.policies[self.policy[i]],
            }
        )

    def chosen_by(self, i: int) -> str:
        """Which rule gave entry ``i`` its policy (``policy_by[N] match ...``, ``entry``...)."""
        r = self.rule[i]
        if r == RULE_ENTRY:
            return "entry"
        if r == RULE_TEMPLATE:
            return "template"
        return f"policy_by[{r}] {self.rule_names[r]}"

    def schedule_key(self, i: int) -> tuple[int, int]:
        """(variant, policy): everything an account's schedule and hold depend on."""
        return self.variant[i], self.policy[i]


class FleetAccounts(Sequence[Account]):
    """Every account of a policy file: ``accounts:`` first, then each source in order.

    A read-only ``Sequence[Account]`` that builds each ``Account`` on access. ``by_name``
    is a dict lookup, so ``Config.account(name)`` stays O(1) for a million accounts.
    """

    def __init__(self, explicit: Sequence[Account], sources: Sequence[SourceAccounts]) -> None:
        self.explicit = list(explicit)
        self.sources = list(sources)
        self._offsets: list[int] = []
        total = len(self.explicit)
        for s in self.sources:
            self._offsets.append(total)
            total += len(s)
        self._len = total
        self._index: dict[str, int] | None = None

    def __len__(self) -> int:
        return self._len

    def locate(self, i: int) -> tuple[SourceAccounts | None, int]:
        """(the source, index within it) of account ``i``; (None, i) for ``accounts:``."""
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(i)
        if i < len(self.explicit):
            return None, i
        # Few sources: a linear scan from the end is as fast as bisect and simpler.
        for k in range(len(self.sources) - 1, -1, -1):
            if i >= self._offsets[k]:
                return self.sources[k], i - self._offsets[k]
        raise IndexError(i)

    @overload
    def __getitem__(self, i: int) -> Account: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Account]: ...
    def __getitem__(self, i: int | slice) -> Account | Sequence[Account]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self._len))]
        src, j = self.locate(i)
        return self.explicit[j] if src is None else src.account(j)

    def __iter__(self) -> Iterator[Account]:
        yield from self.explicit
        for s in self.sources:
            for j in range(len(s)):
                yield s.account(j)

    def names(self) -> Iterator[str]:
        for a in self.explicit:
            yield a.name
        for s in self.sources:
            yield from s.names

    def index(self, value: object, start: int = 0, stop: int | None = None) -> int:
        if isinstance(value, Account):
            i = self.index_of(value.name)
            if i is not None:
                return i
        raise ValueError(f"{value!r} is not in the accounts")

    def index_of(self, name: str) -> int | None:
        if self._index is None:
            self._index = {n: i for i, n in enumerate(self.names())}
        return self._index.get(name)

    def set_index(self, index: dict[str, int]) -> None:
        """Adopt the name index the loader built while checking for duplicates."""
        self._index = index

    def by_name(self, name: str) -> Account:
        i = self.index_of(name)
        if i is None:
            raise KeyError(name)
        return self[i]

    def __contains__(self, value: object) -> bool:
        name = value.name if isinstance(value, Account) else value
        return isinstance(name, str) and self.index_of(name) is not None


class Subset(Sequence[Account]):
    """Some accounts of a ``FleetAccounts`` by index (a schedule's group), built on access."""

    def __init__(self, fleet: Sequence[Account], indexes: array[int]) -> None:
        self.fleet = fleet
        self.indexes = indexes

    def __len__(self) -> int:
        return len(self.indexes)

    @overload
    def __getitem__(self, i: int) -> Account: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Account]: ...
    def __getitem__(self, i: int | slice) -> Account | Sequence[Account]:
        if isinstance(i, slice):
            return [self.fleet[k] for k in self.indexes[i]]
        return self.fleet[self.indexes[i]]

    def __iter__(self) -> Iterator[Account]:
        fleet = self.fleet
        for k in self.indexes:
            yield fleet[k]
