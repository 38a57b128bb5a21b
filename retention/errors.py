"""The exception tree; every error knows its consequence.

* RetentionError
  * ConfigError            exit 2: the policy file or the command line is wrong
  * AccountError           the account fails this run (status error, exit 1); others go on
    * ConnectError         retried within the run (twice, with backoff)
      * Throttled          the provider said "slow down": retried, then once more at the
                           end of the sweep (``retry_later`` in the result)
    * TlsError             not retried: a certificate does not fix itself
    * AuthError            never retried in the same run: retries could lock the account
      * TokenError         an OAuth2 token endpoint refused or failed (its error code named)
    * ProtocolError        a NO/BAD answer or a missing capability (e.g. no UIDPLUS)
    * SecretError          the password is unset or unreadable
    * ArchiveError         an archive target failed; nothing unverified is deleted
    * AccountLocked        another agent holds this account (or finished it within
                           leases.once_within): skipped, not failed; a lock held makes
                           ``retention run`` exit 1 unless --skip-locked-ok
  * SourceError            an account source (LDAP, SQL, file, command) cannot be read:
                           exit 2 in check/run; in serve the source keeps its last good list
  * FolderSkipped          skip one folder, go on with the others (e.g. UIDVALIDITY changed)
  * JournalError           abort: never act without a journal
    * ObservationsError    the observation store (first-seen times, usage) is unusable

Exit codes of the commands are ``ExitCode``: 0 all went well, 1 an account failed (or was
skipped because another agent holds its lock), 2 the policy file or the command line is
wrong (``ConfigError.exit_code``), 130 interrupted.

Messages never carry secrets: adapters build them from server replies and host names only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import ClassVar, Literal

ErrorKind = Literal["auth", "tls", "connect", "protocol", "config", "archive", "other"]
# Why an account was skipped: another agent holds its lock or lease now (``locked``), or
# one finished it within leases.once_within (``recent``, asked for: never a failure).
SkipReason = Literal["locked", "recent"]


class ExitCode(IntEnum):
    """The exit status of every command (``retention run``, ``check``, ``serve``...)."""

    OK = 0
    FAILED = 1  # an account failed (or the service could not shut down in time)
    USAGE = 2  # the policy file or the command line is wrong: retrying will not help
    INTERRUPTED = 130  # Ctrl-C (SIGINT), as shells report 128 + 2


class RetentionError(Exception):
    """Base of every error this package raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem in a policy file: printed as ``FILE:LINE: field: message``."""

    path: Path | None
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}: " if self.path is not None else ""
        field = f"{self.field}: " if self.field else ""
        return f"{where}{field}{self.message}"


class ConfigError(RetentionError):
    """The policy file or the command line is invalid (exit 2)."""

    exit_code: ClassVar[ExitCode] = ExitCode.USAGE

    def __init__(self, problems: list[Problem] | str) -> None:
        if isinstance(problems, str):
            problems = [Problem(None, None, "", problems)]
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class AccountError(RetentionError):
    """The account fails this run; the other accounts still run."""

    kind: ClassVar[ErrorKind] = "other"
    retryable: ClassVar[bool] = False


class ConnectError(AccountError):
    """Connection refused, reset, timed out or dropped: retried with backoff."""

    kind = "connect"
    retryable = True


class Throttled(ConnectError):
    """The server asks us to slow down (Exchange Online's throttling, Gmail's bandwidth and
    connection limits, RFC 5530 ``[UNAVAILABLE]``): not the account's fault."""


class TlsError(AccountError):
    """TLS handshake or certificate verification failed; STARTTLS refused."""

    kind = "tls"


class AuthError(AccountError):
    """The server rejected the credentials; never retried within a run."""

    kind = "auth"


class TokenError(AuthError):
    """An OAuth2 token service refused (``invalid_grant``...) or could not be reached.

    The message names the credential, the endpoint and the provider's error code, never a
    token or a secret; ``code`` is that error code (``invalid_grant``, ``http_503``...).
    """

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class ProtocolError(AccountError):
    """The server answered NO/BAD, or lacks a capability we need to act safely."""

    kind = "protocol"


class SecretError(AccountError):
    """The account's password is unset (password_env) or unreadable (password_file)."""

    kind = "config"


class ArchiveError(AccountError):
    """Writing or verifying an archive copy failed; archiving stops for the account."""

    kind = "archive"


class ClockSkew(AccountError):
    """The agent's clock is not shown to agree with the server's (review M10): nothing is
    removed this run; the message says what was compared and which setting to change."""

    kind = "other"


class AccountLocked(AccountError):
    """Another agent is processing this account (lock in state_dir, or a lease), or
    finished it within ``leases.once_within`` (``reason``): skipped, not failed."""

    kind = "other"

    def __init__(self, message: str, reason: SkipReason = "locked") -> None:
        super().__init__(message)
        self.reason: SkipReason = reason


SourceErrorKind = Literal["config", "connect", "tls", "auth", "query"]


class SourceError(RetentionError):
    """An account source cannot be read: its settings, the server, the login or the query.

    The consequence is the caller's: ``check`` and ``run`` print it naming the source and
    exit 2 (without its accounts the run would act on a partial fleet); ``serve`` keeps the
    source's last good list, logs it and counts it in a metric. ``kind`` says what failed:
    ``config`` (bad settings, a missing optional extra, an unreadable secret), ``connect``,
    ``tls``, ``auth``, ``query`` (the search or SQL failed). ``retryable``: a later refresh
    may succeed (connect, and a server-side query failure), the others need a fix.
    Messages never carry the bind password or a URL's password.
    """

    exit_code: ClassVar[int] = 2

    def __init__(self, source: str, kind: SourceErrorKind, message: str) -> None:
        self.source = source
        self.kind: SourceErrorKind = kind
        self.message = message
        super().__init__(f"source {source}: {message}")

    @property
    def retryable(self) -> bool:
        return self.kind in ("connect", "query")


class FolderSkipped(RetentionError):
    """One folder cannot be processed this run (UIDVALIDITY changed, folder vanished)."""

    def __init__(self, folder: str, reason: str) -> None:
        self.folder = folder
        self.reason = reason
        super().__init__(f"{folder}: {reason}")


class UidValidityChanged(FolderSkipped):
    """The folder's UIDVALIDITY differs from the one the plan was made under."""


class JournalError(RetentionError):
    """The journal cannot be written or read: nothing destructive may happen."""


class ObservationsError(JournalError):
    """The observation store cannot be opened, read or written: act on nothing."""
