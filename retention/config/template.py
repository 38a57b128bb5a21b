"""Account templates: a source's ``account:`` mapping (plus per-entry keys) -> an ``Account``.

This module owns how a template becomes a validated account *prototype* and how a named
credential is attached to an account. A prototype is validated once (with placeholder
name and username) and then copied for each entry with ``model_copy``, which does not
validate again: a million entries cost a million cheap copies, not a million pydantic
validations. That is safe because what differs per entry (name, username, policy) is
checked by the caller: the name against ``NAME_RE``, the policy against the policies.
No I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from retention.config.schema import Account, AttachedCredential, Config, Credential

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]*$")
PLACEHOLDER = "template"
# Keys an entry supplies itself; a template may not set them.
ENTRY_KEYS = frozenset({"name", "username"})
_INT_KEYS = frozenset({"port"})
_BOOL_KEYS = frozenset({"hold", "tls_verify", "allow_plaintext"})
_PATH_KEYS = ("ca_file", "password_file")
_TRUE = frozenset({"true", "yes", "1", "on"})
_FALSE = frozenset({"false", "no", "0", "off"})


def coerce(key: str, value: str) -> Any:
    """A column/attribute value (always text) as the account key's type."""
    if key in _INT_KEYS:
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{key}: must be a number, not {value!r}") from None
    if key in _BOOL_KEYS:
        low = value.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"{key}: must be true or false, not {value!r}")
    return value


def with_credential(account: Account, credentials: Mapping[str, AttachedCredential]) -> Account:
    """The account with its credential attached (a password source copied in).

    An OAuth2 credential (named, or the account's own ``oauth:``) has no password: the
    account logs in with tokens (``retention.auth``).
    """
    if account.credentials is None:
        if account.oauth is not None:
            return account.model_copy(update={"credential": account.oauth})
        return account
    cred = credentials[account.credentials]  # the loader checked that it exists
    if not isinstance(cred, Credential):
        return account.model_copy(update={"credential": cred})
    return account.model_copy(
        update={
            "credential": cred,
            "password_env": cred.password_env,
            "password_file": cred.password_file,
            "password_command": cred.password_command,
            "password_command_timeout": cred.password_command_timeout,
        }
    )


def prototype(config: Config, template: Mapping[str, Any], base: Path | None) -> Account:
    """A validated account from ``template`` with placeholder name/username (and policy).

    Raises:
        pydantic.ValidationError / ValueError: the template is not a valid account, or
            names an unknown credential.
    """
    data: dict[str, Any] = dict(template)
    for key in ENTRY_KEYS & set(data):
        raise ValueError(f"{key}: comes from each entry of the source; remove it here")
    data.setdefault("name", PLACEHOLDER)
    data.setdefault("username", PLACEHOLDER)
    data.setdefault("policy", PLACEHOLDER)  # policy_by or the entry may supply it
    for key in _PATH_KEYS:
        if base is not None and isinstance(data.get(key), str):
            p = Path(data[key]).expanduser()
            data[key] = str(p if p.is_absolute() else base / p)
    account = Account.model_validate(data)
    if account.credentials is not None and account.credentials not in config.credentials:
        known = ", ".join(sorted(config.credentials)) or "none defined"
        raise ValueError(f"credentials: unknown credential {account.credentials!r} "
                         f"(known: {known})")
    return with_credential(account, config.credentials)
