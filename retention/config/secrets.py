"""Reading account passwords from the environment or a file, and nowhere else.

Passwords never appear on a command line (the process list), in the policy file, in a log
line, a report or an exception message: errors name the variable or the file, not the value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from retention.config.schema import Connection
from retention.errors import SecretError


def read_password(conn: Connection, env: Mapping[str, str] | None = None) -> str:
    """The password for ``conn`` from ``password_env`` or ``password_file``.

    Raises:
        SecretError: the variable is unset or empty, or the file cannot be read.
    """
    env = os.environ if env is None else env
    if conn.password_env is not None:
        value = env.get(conn.password_env)
        if not value:
            raise SecretError(f"environment variable {conn.password_env} is not set")
        return value
    assert conn.password_file is not None  # policy validation guarantees one of the two
    try:
        text = conn.password_file.read_text(encoding="utf-8")
    except OSError as e:
        raise SecretError(
            f"cannot read password_file {conn.password_file}: {e.strerror or type(e).__name__}"
        ) from None
    # Secret files written by `echo` or editors end with a newline that is not the password.
    value = text.rstrip("\r\n")
    if not value:
        raise SecretError(f"password_file {conn.password_file} is empty")
    return value
