"""The policy file's schema: pydantic models, defaults and effective values.

This module owns what a policy file may say (unknown keys are errors; every model is
frozen) and the effective values the rest of the agent uses (which clock a rule measures
age by, what it protects). No I/O: ``policyfile.load_config`` reads a file into these
models and reports problems with their line numbers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    Tag,
    model_validator,
)

from retention.config.base import NAME_PATTERN, ServiceDuration, Strict
from retention.config.oauth import (
    OAUTH_TYPES,
    GoogleCredential,
    Microsoft365Credential,
    OAuth2Credential,
    OAuthCredential,
)
from retention.config.shard import parse_shard
from retention.config.sources import SourceSpec
from retention.config.units import (
    CountOrPercent,
    CountOrPercentT,
    Duration,
    Percent,
    Size,
)
from retention.model import MailProtocol
from retention.plan import ActionKind, Clock

Protect = Literal["flagged", "unread", "answered", "draft"]
TRASH_JUNK = frozenset({"\\Trash", "\\Junk"})
_NAME = NAME_PATTERN
_Strict = Strict


class ActionSpec(_Strict):
    """``delete`` | ``trash`` | ``{move_to: FOLDER}`` | ``{archive: TARGET}``."""

    kind: ActionKind
    target: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, ActionSpec):
            return value
        if isinstance(value, str):
            if value in ("delete", "trash"):
                return {"kind": value}
            raise ValueError(
                f"unknown action {value!r}: use delete, trash, {{move_to: FOLDER}} "
                "or {archive: TARGET}"
            )
        if isinstance(value, Mapping):
            if set(value) == {"kind"} or set(value) == {"kind", "target"}:
                return value
            if len(value) == 1:
                ((key, target),) = value.items()
                if key in ("move_to", "archive"):
                    if not isinstance(target, str) or not target:
                        raise ValueError(f"{key} needs a folder or target name (a string)")
                    return {"kind": "move" if key == "move_to" else "archive", "target": target}
            raise ValueError("an action mapping has exactly one key: move_to or archive")
        raise ValueError("action must be delete, trash, {move_to: FOLDER} or {archive: TARGET}")

    def describe(self) -> str:
        if self.kind is ActionKind.MOVE:
            return f"move_to {self.target}"
        if self.kind is ActionKind.ARCHIVE:
            return f"archive to {self.target}"
        return self.kind.value


class Rule(_Strict):
    """One retention rule; the first rule whose conditions all hold decides a message."""

    name: Annotated[StrictStr, Field(pattern=_NAME)]
    folders: list[StrictStr] = Field(default_factory=lambda: ["INBOX"], min_length=1)
    exclude_folders: list[StrictStr] = Field(default_factory=list)
    older_than: Duration | None = None
    age_by: Clock | None = None
    larger_than: Size | None = None
    smaller_than: Size | None = None
    before: date | None = None
    action: ActionSpec
    protect: list[Protect] | None = None
    when: Literal["always", "over_quota"] = "always"
    allow_empty_folder: StrictBool | None = None

    @model_validator(mode="after")
    def _needs_an_age(self) -> Rule:
        if self.when == "always" and self.older_than is None and self.before is None:
            raise ValueError(
                "older_than: an always-rule needs older_than or before "
                "(only when: over_quota may omit it)"
            )
        return self

    @property
    def only_trash_or_junk(self) -> bool:
        return bool(self.folders) and set(self.folders) <= TRASH_JUNK


class Quota(_Strict):
    """Limits and quota-driven cleanup levels (fractions of the limit)."""

    limit: Size | None = None
    warn_above: Percent = 0.8
    clean_above: Percent = 0.9
    clean_to: Percent = 0.75
    max_delete_per_run: CountOrPercentT = CountOrPercent(count=10000, fraction=None)

    @model_validator(mode="after")
    def _levels(self) -> Quota:
        if self.clean_to >= self.clean_above:
            raise ValueError("clean_to: must be below clean_above")
        return self


class SmtpSettings(_Strict):
    """Submission relay for notices (``notify.smtp``): STARTTLS/TLS verified by default.

    ``from``/``to`` are ``string.Template`` texts (``$account``, ``$username``, ``$email``);
    ``to`` defaults to the account's ``email`` (or its username when that is an address).
    Credentials are optional (a relay that trusts the agent's host): ``username`` with
    ``password_env`` or ``password_file``, never a password in the file.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    host: StrictStr
    port: StrictInt | None = Field(default=None, ge=1, le=65535)
    security: Literal["tls", "starttls", "none"] = "starttls"
    ca_file: Path | None = None
    tls_verify: StrictBool = True
    allow_plaintext: StrictBool = False
    username: StrictStr | None = None
    password_env: StrictStr | None = None
    password_file: Path | None = None
    timeout: ServiceDuration = timedelta(seconds=30)
    sender: StrictStr = Field(default="Mailbox assistant <postmaster@localhost>", alias="from")
    to: StrictStr = "$email"

    @model_validator(mode="after")
    def _secure(self) -> SmtpSettings:
        if self.security == "none" and not self.allow_plaintext:
            raise ValueError(
                "security: 'none' sends mail (and any password) in clear text; "
                "set allow_plaintext: true to allow it"
            )
        if self.username and (self.password_env is None) == (self.password_file is None):
            raise ValueError("password_env: give exactly one of password_env or password_file")
        return self

    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return {"tls": 465, "starttls": 587, "none": 25}[self.security]


class Notify(_Strict):
    """Notices to the mailbox owner (``retention.notify``)."""

    warn: StrictBool = True  # when usage crosses quota.warn_above (once per crossing)
    archived: StrictBool = True  # after a run that archived or deleted mail
    language: Literal["en", "ja"] = "en"
    delivery: Literal["append", "smtp"] = "append"
    smtp: SmtpSettings | None = None
    templates: Path | None = None  # a folder with en/warning.txt etc. overriding the shipped
    restore_contact: StrictStr = "your mail administrator"

    @model_validator(mode="after")
    def _needs_smtp(self) -> Notify:
        if self.delivery == "smtp" and self.smtp is None:
            raise ValueError("smtp: delivery: smtp needs an smtp: relay")
        return self


def _default_protect() -> list[Protect]:
    return ["flagged", "unread"]


class Policy(_Strict):
    """A named retention policy that accounts refer to."""

    protect: list[Protect] = Field(default_factory=_default_protect)
    keep_within: Duration = timedelta(0)
    quota: Quota = Field(default_factory=Quota)
    rules: list[Rule] = Field(default_factory=list)
    schedule: StrictStr = "0 3 * * *"
    hold: StrictBool = False
    notify: Notify | None = None
    # Restored messages are exempt from every rule for this long (``retention restore``).
    restore_grace: Duration = timedelta(days=30)
    # How far the agent's clock may run ahead of the server's before the account refuses to
    # remove anything (review M10: a VM restore or a bad RTC jumps it forward and ages every
    # message); 0d turns the check off. See planner.clock_refusal.
    clock_skew_limit: Duration = timedelta(days=30)


Security = Literal["tls", "starttls", "none"]


def _argv(value: object) -> object:
    if isinstance(value, str):
        # A string would need a shell (or shlex) to split: say how to write it instead.
        raise ValueError("must be a list of arguments, e.g. [pass, show, mail/alice] "
                         "(it is run without a shell)")
    if isinstance(value, list) and value and isinstance(value[0], str) and not value[0]:
        raise ValueError("the program (the first item) is empty")
    return value


PasswordCommand = Annotated[list[StrictStr], Field(min_length=1), BeforeValidator(_argv)]
_PASSWORD_KEYS = ("password_env", "password_file", "password_command")


def _password_sources(holder: object) -> list[str]:
    return [k for k in _PASSWORD_KEYS if getattr(holder, k, None) is not None]


def _one_password_source(holder: object) -> None:
    given = _password_sources(holder)
    if len(given) != 1:
        where = given[1] if len(given) > 1 else "password_env"
        raise ValueError(f"{where}: give exactly one of password_env, password_file or "
                         "password_command")

# The one table of default ports (IANA): implicit TLS, or the plain port STARTTLS upgrades.
DEFAULT_PORTS: Mapping[tuple[MailProtocol, Security], int] = {
    ("imap", "tls"): 993, ("imap", "starttls"): 143, ("imap", "none"): 143,
    ("pop3", "tls"): 995, ("pop3", "starttls"): 110, ("pop3", "none"): 110,
}


class Connection(_Strict):
    """How to reach and log in to a server (accounts and IMAP archive targets)."""

    host: StrictStr
    port: StrictInt | None = Field(default=None, ge=1, le=65535)
    security: Security = "tls"
    ca_file: Path | None = None
    tls_verify: StrictBool = True
    allow_plaintext: StrictBool = False
    username: StrictStr
    password_env: StrictStr | None = None
    password_file: Path | None = None
    # An argv list, run without a shell; the password is the first line of its stdout
    # (``config.secrets.run_password_command``).
    password_command: PasswordCommand | None = None
    password_command_timeout: ServiceDuration = timedelta(seconds=10)
    timeout: ServiceDuration = timedelta(seconds=30)

    def login_names(self) -> tuple[str, str | None]:
        """(authentication identity, authorization identity or None) for the login."""
        return self.username, None

    @model_validator(mode="after")
    def _secure(self) -> Connection:
        if self.security == "none" and not self.allow_plaintext:
            raise ValueError(
                "security: 'none' sends the password in clear text; "
                "set allow_plaintext: true to allow it"
            )
        if getattr(self, "credentials", None) is not None or getattr(self, "oauth", None):
            # The named credential (or OAuth2) supplies the login (see Account, Credential).
            key = "credentials" if getattr(self, "credentials", None) is not None else "oauth"
            if _password_sources(self):
                raise ValueError(
                    f"{key}: give either {key} or password_env/password_file/password_command"
                )
        else:
            _one_password_source(self)
        return self

    def port_for(self, protocol: MailProtocol) -> int:
        """The port to connect to: the configured one, else the protocol's default."""
        return self.port if self.port is not None else DEFAULT_PORTS[(protocol, self.security)]


LoginAs = Literal["user", "separator", "authzid"]


class Credential(_Strict):
    """A login secret named once under ``credentials:`` and used by many accounts.

    ``login_as``: ``user`` logs in as the account's own username with this password;
    ``separator`` as ``USER{separator}{username}`` (Dovecot master users,
    ``auth_master_user_separator``); ``authzid`` with SASL PLAIN, authorization identity
    = the account's username, authentication identity = ``username`` (Dovecot master
    users, Cyrus admins/proxyservers). Never printed: ``check`` names it, nothing more.
    """

    type: Literal["password"] = "password"
    username: StrictStr | None = None
    password_env: StrictStr | None = None
    password_file: Path | None = None
    password_command: PasswordCommand | None = None
    password_command_timeout: ServiceDuration = timedelta(seconds=10)
    login_as: LoginAs = "user"
    separator: Annotated[StrictStr, Field(min_length=1)] = "*"

    @model_validator(mode="after")
    def _complete(self) -> Credential:
        _one_password_source(self)
        if self.login_as != "user" and not self.username:
            raise ValueError(f"username: login_as {self.login_as} needs the admin's username")
        return self


def _credential_kind(value: Any) -> str:
    """``type`` of a ``credentials:`` entry: ``password`` (the default) or an OAuth2 kind."""
    kind = value.get("type", "password") if isinstance(value, Mapping) else getattr(
        value, "type", "password")
    # Bracketed tags: the loader's error paths leave them out (``_clean_loc``).
    return f"kind[{kind if kind in OAUTH_TYPES else 'password'}]"


#: A ``credentials:`` entry: a password (``login_as``...) or ``type: oauth2 | microsoft365 |
#: google`` (``retention.config.oauth``).
AnyCredential = Annotated[
    Annotated[Credential, Tag("kind[password]")]
    | Annotated[OAuth2Credential, Tag("kind[oauth2]")]
    | Annotated[Microsoft365Credential, Tag("kind[microsoft365]")]
    | Annotated[GoogleCredential, Tag("kind[google]")],
    Discriminator(_credential_kind),
]
AttachedCredential = Credential | OAuth2Credential | Microsoft365Credential | GoogleCredential


def _virtual_prefix(value: object) -> object:
    if isinstance(value, str):
        if not value.strip("/") or "*" in value or "%" in value or value.startswith("\\"):
            raise ValueError("must be a folder prefix such as virtual/ (no wildcard)")
    return value


VirtualPrefix = Annotated[StrictStr, BeforeValidator(_virtual_prefix)]


class Account(Connection):
    """One mailbox to keep under its quota."""

    name: Annotated[StrictStr, Field(pattern=_NAME)]
    protocol: Literal["imap", "pop3"] = "imap"
    policy: StrictStr
    hold: StrictBool | None = None
    schedule: StrictStr | None = None
    credentials: StrictStr | None = None
    #: An OAuth2 credential of this account alone (``type: oauth2 | microsoft365 | google``).
    oauth: OAuthCredential | None = None
    #: ``auto`` detects Gmail (``X-GM-EXT-1``) and Exchange (its greeting); ``gmail`` makes
    #: folders labels of one message (delete = Trash then expunge there).
    provider: Literal["auto", "gmail", "exchange", "generic"] = "auto"
    #: Folders under these prefixes (``virtual/``) are views of mail stored elsewhere, or
    #: someone else's, where the server's NAMESPACE does not say so (a Dovecot namespace
    #: with ``hidden = yes``): never matched by a wildcard, never counted in usage (F2).
    virtual_prefixes: list[VirtualPrefix] = Field(default_factory=list)
    language: Literal["en", "ja"] | None = None  # of notices; default: the policy's
    email: StrictStr | None = None  # the owner's address (notices by SMTP)
    # Set by loading (the ``credentials:`` entry this account names), never by the file.
    credential: AttachedCredential | None = Field(default=None, exclude=True, repr=False)

    @model_validator(mode="before")
    @classmethod
    def _no_internal_keys(cls, value: Any) -> Any:
        if isinstance(value, Mapping) and "credential" in value and not isinstance(
            value.get("credential"),
            Credential | OAuth2Credential | Microsoft365Credential | GoogleCredential | None,
        ):
            raise ValueError("credential: unknown key (did you mean credentials?)")
        return value

    def login_names(self) -> tuple[str, str | None]:
        """(authentication identity, authorization identity or None) for the login."""
        cred = self.credential
        if not isinstance(cred, Credential) or cred.login_as == "user" or not cred.username:
            return self.username, None
        if cred.login_as == "separator":
            return f"{self.username}{cred.separator}{cred.username}", None
        return cred.username, self.username

    def effective_port(self) -> int:
        return self.port_for(self.protocol)

    def mailbox_identity(self) -> str:
        """Which mailbox this entry reaches: protocol, username, host and port (review F4).

        Journal rows and the per-mailbox lock are keyed by it (with the account name), so
        an entry edited to point at another mailbox never inherits the old one's state.
        """
        return f"{self.protocol}://{self.username}@{self.host.lower()}:{self.effective_port()}"


class MboxTarget(_Strict):
    type: Literal["mbox"]
    path: StrictStr
    compress: Literal["gzip", "zstd", "none"] = "none"


class MaildirTarget(_Strict):
    type: Literal["maildir"]
    path: StrictStr


class ImapTarget(Connection):
    type: Literal["imap"]
    folder: StrictStr = "Archive/{account}/{folder}"

    def effective_port(self) -> int:
        return self.port_for("imap")


ArchiveTarget = Annotated[MboxTarget | MaildirTarget | ImapTarget, Field(discriminator="type")]


def _shard_spec(value: object) -> object:
    if isinstance(value, str):
        parse_shard(value)  # ShardSpecError is a ValueError: FILE:LINE with its message
        return value.strip()
    return value


def _account_metrics(value: object) -> object:
    if isinstance(value, str) and not _ACCOUNT_METRICS.fullmatch(value.strip()):
        raise ValueError("must be all, none or top:K (K a positive number, e.g. top:100)")
    return value.strip() if isinstance(value, str) else value


def _timezone(value: object) -> object:
    if isinstance(value, str):
        from retention.config.schedule import ScheduleError, zone

        try:
            zone(value.strip())
        except ScheduleError as e:
            raise ValueError(str(e)) from None
        return value.strip()
    return value


_ACCOUNT_METRICS = re.compile(r"all|none|top:[1-9][0-9]{0,6}")
TimeZoneName = Annotated[StrictStr, BeforeValidator(_timezone)]
ShardSpec = Annotated[StrictStr, BeforeValidator(_shard_spec)]
AccountMetrics = Annotated[StrictStr, BeforeValidator(_account_metrics)]


class ServiceFields(BaseModel):
    """The settings of ``retention serve``, declared once: the policy file's ``service:``
    block (``Service``, strict YAML types) and the effective settings with the environment
    over it (``config.settings.ServiceSettings``, strings from variables) both use them."""

    metrics_port: int = Field(default=9478, ge=0, le=65535)
    metrics_address: str = "0.0.0.0"  # noqa: S104 - a scrape target listens on all addresses
    measure_every: ServiceDuration = timedelta(minutes=15)
    concurrency: int = Field(default=4, ge=1, le=256)
    max_connections_per_host: int = Field(default=2, ge=1, le=256)
    jitter: ServiceDuration = timedelta(seconds=30)
    shutdown_timeout: ServiceDuration = timedelta(seconds=60)
    account_label: Literal["name", "hash", "none"] = "name"
    # Only the accounts this shard owns (rendezvous hash of the name), e.g. "2/8"; also
    # RETENTION_SHARD, which a StatefulSet sets to "$(POD_NAME)/N". None: every account.
    shard: ShardSpec | None = None
    # Per-account series: all | top:K (the K fullest plus every account in error) | none.
    # None: all up to 10,000 accounts, top:100 above (fleet series are always exported).
    account_metrics: AccountMetrics | None = None
    # The IANA time zone every ``schedule`` is read in ("0 3 * * *" = 03:00 there, also
    # across daylight-saving changes). UTC unless set: never the host's local zone, which
    # differs between a laptop, a VM and a container.
    timezone: TimeZoneName = "UTC"
    # Log lines on stderr, of serve and of every other command: logfmt (ts=... level=...
    # logger=... event=...) or one JSON object per line.
    log_format: Literal["logfmt", "json"] = "logfmt"


class Service(ServiceFields):
    """The policy file's ``service:`` block (each key also from ``RETENTION_<KEY>``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
class Leases(_Strict):
    """Per-account leases (``retention.state.leases``): one agent per mailbox at a time."""

    # How long a lease lasts unless renewed (renewed every third of it while working).
    ttl: ServiceDuration = timedelta(minutes=5)
    # Skip an account whose last successful pass, by any agent, finished less than this
    # ago (e.g. 12h for a daily sweep run by agents with overlapping shards). None: never.
    once_within: ServiceDuration | None = None


class Config(_Strict):
    """A whole policy file."""

    state_dir: Path = Path("./state")
    # postgresql://user@host/db (password from PGPASSWORD or ~/.pgpass, not the file):
    # leases shared by agents on several machines; also RETENTION_STATE_URL. None: SQLite
    # in state_dir.
    state_url: StrictStr | None = None
    leases: Leases = Field(default_factory=Leases)
    policies: dict[StrictStr, Policy]
    # Sequence: after sources are read (retention.sources), a lazy list of every account.
    accounts: Sequence[Account] = Field(default_factory=list)
    credentials: dict[Annotated[StrictStr, Field(pattern=_NAME)], AnyCredential] = Field(
        default_factory=dict
    )
    sources: list[SourceSpec] = Field(default_factory=list)
    archives: dict[StrictStr, ArchiveTarget] = Field(default_factory=dict)
    service: Service = Field(default_factory=Service)
    # The most memory one account pass may spend on message bodies beyond its baseline:
    # larger bodies are streamed through private temporary files (review F11).
    message_memory: Size = 64 * 1024 * 1024
    # Set by load_config, not by the file.
    source: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _some_accounts(self) -> Config:
        if not self.accounts and not self.sources:
            raise ValueError("accounts: list at least one account or add a source")
        return self

    def policy_of(self, account: Account) -> Policy:
        return self.policies[account.policy]

    def account(self, name: str) -> Account:
        find = getattr(self.accounts, "by_name", None)  # the lazy list has an index
        if find is not None:
            found: Account = find(name)
            return found
        for a in self.accounts:
            if a.name == name:
                return a
        raise KeyError(name)

    def is_held(self, account: Account) -> bool:
        return account.hold if account.hold is not None else self.policy_of(account).hold

    def schedule_of(self, account: Account) -> str:
        return account.schedule or self.policy_of(account).schedule


# --- effective values -------------------------------------------------------------------


def effective_clock(rule: Rule, protocol: str) -> Clock:
    """The clock a rule measures age by, after defaults (printed by ``check``)."""
    if protocol == "pop3":
        return Clock.SENT if rule.age_by is Clock.SENT else Clock.FIRST_SEEN
    if rule.age_by is not None:
        return rule.age_by
    # A message trashed an hour ago must not be purged because it was received years ago.
    return Clock.SAVED if rule.only_trash_or_junk else Clock.RECEIVED


def effective_allow_empty(rule: Rule, protocol: str) -> bool:
    if rule.allow_empty_folder is not None:
        return rule.allow_empty_folder
    return protocol == "pop3" or rule.only_trash_or_junk


def effective_protect(rule: Rule, policy: Policy, protocol: str) -> frozenset[str]:
    if protocol == "pop3":  # POP3 has no flags: protect has no meaning there
        return frozenset()
    return frozenset(rule.protect if rule.protect is not None else policy.protect)
