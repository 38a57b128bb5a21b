"""Reading account passwords from the environment or a file, and nowhere else; redacting them.

Passwords never appear on a command line (the process list), in the policy file, in a log
line, a report or an exception message: errors name the variable or the file, not the value.
``redact`` is the one scrubber: the adapters run every server reply they quote in an error
through it (a server may echo what it was sent), and the service's log filter runs every
record through it. ``secret_forms`` lists the forms a password takes on the wire.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterable, Mapping
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


REDACTED = "***"
_MIN_SECRET = 3  # shorter "secrets" would shred every line; such passwords fail anyway
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # OAuth2 (retention.auth): bearer tokens, JWTs, SASL XOAUTH2/OAUTHBEARER responses.
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+"), rf"\1{REDACTED}"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), REDACTED),
    (re.compile(r"(?i)\b((?:XOAUTH2|OAUTHBEARER)\s+)[A-Za-z0-9+/=]{16,}"), rf"\1{REDACTED}"),
    (re.compile(r"(?i)\b(refresh_token|access_token|client_secret|assertion)(\W{1,4})"
                r"[A-Za-z0-9._~+/=-]+"), rf"\1\2{REDACTED}"),
    (re.compile(r"(?i)\b(password|passwd|pwd|secret|token|authorization)(\s*[=:]\s*)"
                r"(\"[^\"]*\"|'[^']*'|\S+)"), rf"\1\2{REDACTED}"),
    (re.compile(r"\b(LOGIN\s+(?:\"[^\"]*\"|\S+)\s+)(\"[^\"]*\"|\S+)"), rf"\1{REDACTED}"),
    (re.compile(r"\b(PASS\s+)\S+"), rf"\1{REDACTED}"),
    (re.compile(r"(?i)\b(AUTH(?:ENTICATE)?\s+PLAIN\s+)[A-Za-z0-9+/=]+"), rf"\1{REDACTED}"),
)


def secret_forms(password: str, username: str | None = None) -> list[str]:
    """The forms ``password`` takes on the wire, for ``redact``: itself, as an RFC 3501
    quoted string (LOGIN), base64 of itself, and SASL PLAIN's base64 of
    ``\\0user\\0password`` (IMAP AUTHENTICATE and POP3 AUTH)."""
    forms = [password, password.replace("\\", "\\\\").replace('"', '\\"'),
             base64.b64encode(password.encode()).decode("ascii")]
    if username is not None:
        plain = f"\0{username}\0{password}".encode()
        forms.append(base64.b64encode(plain).decode("ascii"))
    return forms


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every known secret and every password-shaped field replaced by ``***``.

    Longest secrets first, so that no part of a longer one is left; then the patterns of
    credentials in protocol lines (``LOGIN u p``, ``PASS p``, ``AUTH PLAIN b64``,
    ``password=...``), for secrets we were never told about.
    """
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= _MIN_SECRET:
            text = text.replace(secret, REDACTED)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text
