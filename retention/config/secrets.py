"""Reading account passwords from the environment or a file, and nowhere else.

Passwords never appear on a command line (the process list), in the policy file, in a log
line, a report or an exception message: errors name the variable or the file, not the value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from retention.config.schema import Connection
from retention.errors import SecretError


def read_password(conn: Connection, env: Mapping[str, str] | None = None) -> str:
    """The password for ``conn`` from ``password_env`` or ``password_file``.

    Raises:
        SecretError: the variable is unset or empty, or the file cannot be read.
    """
    return read_secret(conn.password_env, conn.password_file, env, what="password_file")


def read_secret(
    env_name: str | None,
    file: Path | None,
    env: Mapping[str, str] | None = None,
    *,
    what: str = "password_file",
) -> str:
    """A secret from the variable ``env_name`` or else the file ``file`` (one must be set).

    ``what`` names the file key in messages (``bind_password_file`` for an LDAP source).

    Raises:
        SecretError: the variable is unset or empty, or the file cannot be read.
    """
    env = os.environ if env is None else env
    if env_name is not None:
        value = env.get(env_name)
        if not value:
            raise SecretError(f"environment variable {env_name} is not set")
        return value
    if file is None:
        raise SecretError(f"neither an environment variable nor {what} is set")
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as e:
        raise SecretError(
            f"cannot read {what} {file}: {e.strerror or type(e).__name__}"
        ) from None
    # Secret files written by `echo` or editors end with a newline that is not the password.
    value = text.rstrip("\r\n")
    if not value:
        raise SecretError(f"{what} {file} is empty")
    return value
