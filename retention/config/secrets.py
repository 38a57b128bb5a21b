"""Reading account passwords from the environment, a file or a command; redacting them.

Passwords never appear on a command line (the process list), in the policy file, in a log
line, a report or an exception message: errors name the variable, the file or the
command, not the value.

``password_command`` (getmail6's ``password_command``, mbsync's ``PassCmd``: ``pass``,
vault CLIs, ``systemd-creds``, ``secret-tool``) is an argv list run directly, never
through a shell, with stdin closed and a timeout (its whole process group is killed when
it runs over); the password is the first line of its stdout. Its arguments are what the
policy file says and nothing else (the password only ever travels over the pipe). A
failure reports the exit status and the last line of stderr, scrubbed of whatever the
command printed on stdout. Every password read from a command is remembered for the
process's log filter (``command_secrets``), since the filter cannot run commands itself.
``redact`` is the one scrubber: the adapters run every server reply they quote in an error
through it (a server may echo what it was sent), and the service's log filter runs every
record through it. ``secret_forms`` lists the forms a password takes on the wire.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path

from retention.config.schema import Connection
from retention.errors import SecretError


def read_password(conn: Connection, env: Mapping[str, str] | None = None) -> str:
    """The password for ``conn`` from ``password_env``, ``password_file`` or
    ``password_command``.

    Raises:
        SecretError: the variable is unset or empty, the file cannot be read, or the
            command failed, timed out or printed nothing.
    """
    if conn.password_command is not None:
        return run_password_command(conn.password_command, conn.password_command_timeout)
    return read_secret(conn.password_env, conn.password_file, env, what="password_file")


_COMMAND_SECRETS: set[str] = set()
_COMMAND_SECRETS_LOCK = threading.Lock()
_STDERR_SHOWN = 200  # characters of the command's last stderr line in an error


def command_secrets() -> frozenset[str]:
    """Every password this process has read from a ``password_command`` (for the log filter)."""
    with _COMMAND_SECRETS_LOCK:
        return frozenset(_COMMAND_SECRETS)


def run_password_command(argv: Sequence[str], timeout: timedelta) -> str:
    """The first line of what ``argv`` prints on stdout (run without a shell).

    Raises:
        SecretError: it cannot be started, exits non-zero, runs over ``timeout`` or prints
            an empty first line. The message names ``argv[0]`` only (the arguments may
            say which secret, but not what it is; they are in the policy file anyway).
    """
    name = repr(argv[0])
    seconds = timeout.total_seconds()
    try:
        proc = subprocess.Popen(  # noqa: S603 - an argv list from the policy, no shell
            list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True,  # its own group: killable whole
        )
    except OSError as e:
        raise SecretError(
            f"password_command {name} cannot be run: {e.strerror or type(e).__name__}"
        ) from None
    with proc:
        try:
            out, err = proc.communicate(timeout=seconds)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise SecretError(
                f"password_command {name} did not finish within {seconds:g} s (killed)"
            ) from None
    first = out.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace")
    if proc.returncode != 0:
        detail = _last_line(err.decode("utf-8", "replace"))
        # The command may have printed the password before failing: never quote it.
        detail = redact(detail, [first]) if first else redact(detail)
        raise SecretError(
            f"password_command {name} exited with status {proc.returncode}"
            + (f": {detail}" if detail else "")
        )
    if not first:
        raise SecretError(f"password_command {name} printed nothing on its first line")
    with _COMMAND_SECRETS_LOCK:
        _COMMAND_SECRETS.add(first)
    return first


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    try:
        proc.communicate(timeout=5)  # reap it; a grandchild that left the group may
    except subprocess.TimeoutExpired:  # still hold the pipes: do not wait for it
        pass


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= _STDERR_SHOWN else line[:_STDERR_SHOWN] + "..."


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
