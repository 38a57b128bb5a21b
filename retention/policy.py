"""The policy file: pydantic models, loading, and errors that name file, line and field.

This module owns the schema of ``policy.yaml`` and the rules that make a file valid. It
performs no network I/O; it reads the policy file and, for warnings only, checks whether
secrets are present. ``load_config`` returns a fully resolved ``Config`` (relative paths
made absolute against the file's folder, ``${VAR}`` expanded) or raises ``ConfigError``
carrying one ``Problem`` per error, each printed as ``FILE:LINE: dotted.field: message``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from retention.errors import ConfigError, Problem
from retention.plan import ActionKind, Clock
from retention.units import (
    CountOrPercent,
    CountOrPercentT,
    Duration,
    Percent,
    Size,
    parse_duration,
)
from retention.yamlsource import YamlDoc, YamlError, load_yaml

Protect = Literal["flagged", "unread", "answered", "draft"]
TRASH_JUNK = frozenset({"\\Trash", "\\Junk"})
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._@+-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _duration_or_seconds(value: object) -> timedelta:
    """Service durations also take plain seconds (``30``) and ``30s``."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return timedelta(seconds=value)
    if isinstance(value, str) and re.fullmatch(r"\d+s", value):
        return timedelta(seconds=int(value[:-1]))
    return parse_duration(value)


ServiceDuration = Annotated[timedelta, BeforeValidator(_duration_or_seconds)]


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


class Connection(_Strict):
    """How to reach and log in to a server (accounts and IMAP archive targets)."""

    host: StrictStr
    port: StrictInt | None = Field(default=None, ge=1, le=65535)
    security: Literal["tls", "starttls", "none"] = "tls"
    ca_file: Path | None = None
    tls_verify: StrictBool = True
    allow_plaintext: StrictBool = False
    username: StrictStr
    password_env: StrictStr | None = None
    password_file: Path | None = None
    timeout: ServiceDuration = timedelta(seconds=30)

    @model_validator(mode="after")
    def _secure(self) -> Connection:
        if self.security == "none" and not self.allow_plaintext:
            raise ValueError(
                "security: 'none' sends the password in clear text; "
                "set allow_plaintext: true to allow it"
            )
        if (self.password_env is None) == (self.password_file is None):
            raise ValueError("password_env: give exactly one of password_env or password_file")
        return self


class Account(Connection):
    """One mailbox to keep under its quota."""

    name: Annotated[StrictStr, Field(pattern=_NAME)]
    protocol: Literal["imap", "pop3"] = "imap"
    policy: StrictStr
    hold: StrictBool | None = None
    schedule: StrictStr | None = None

    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        if self.protocol == "imap":
            return 993 if self.security == "tls" else 143
        return 995 if self.security == "tls" else 110


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
        if self.port is not None:
            return self.port
        return 993 if self.security == "tls" else 143


ArchiveTarget = Annotated[MboxTarget | MaildirTarget | ImapTarget, Field(discriminator="type")]


class Service(_Strict):
    """Settings of ``retention serve`` (each also from ``RETENTION_<KEY>``)."""

    metrics_port: StrictInt = Field(default=9478, ge=0, le=65535)
    metrics_address: StrictStr = "0.0.0.0"  # noqa: S104 - a scrape target listens on all addresses
    measure_every: ServiceDuration = timedelta(minutes=15)
    concurrency: StrictInt = Field(default=4, ge=1, le=256)
    max_connections_per_host: StrictInt = Field(default=2, ge=1, le=256)
    jitter: ServiceDuration = timedelta(seconds=30)
    shutdown_timeout: ServiceDuration = timedelta(seconds=60)
    account_label: Literal["name", "hash", "none"] = "name"


class Config(_Strict):
    """A whole policy file."""

    state_dir: Path = Path("./state")
    policies: dict[StrictStr, Policy]
    accounts: list[Account] = Field(min_length=1)
    archives: dict[StrictStr, ArchiveTarget] = Field(default_factory=dict)
    service: Service = Field(default_factory=Service)
    # Set by load_config, not by the file.
    source: Path | None = Field(default=None, exclude=True)

    def policy_of(self, account: Account) -> Policy:
        return self.policies[account.policy]

    def account(self, name: str) -> Account:
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


# --- loading ------------------------------------------------------------------------------

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand(value: str, loc: tuple[str | int, ...], problems: list[tuple[Any, str]]) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in os.environ:
            problems.append((loc, f"environment variable {name} is not set"))
            return m.group(0)
        return os.environ[name]

    return _VAR.sub(sub, value)


def _clean_loc(data: Any, loc: Sequence[str | int]) -> tuple[str | int, ...]:
    """Drop pydantic's union/validator tags: keep only the path that exists in the data."""
    out: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, Mapping) and part in node:
            out.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
        elif i == len(loc) - 1 and isinstance(node, Mapping) and isinstance(part, str):
            if not (part[:1].isupper() or "[" in part):
                out.append(part)  # a missing key
        # else: a tag such as 'function-after[...]' or a union member name
    return tuple(out)


def _message(err: Mapping[str, Any], doc: YamlDoc, loc: tuple[str | int, ...]) -> str:
    kind = err.get("type", "")
    msg = str(err.get("msg", ""))
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "missing required key"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind in ("string_type", "str_type") and loc:
        raw = doc.raw_scalar(loc)
        if raw is not None:
            return f"must be a string; quote it: '{raw}'"
    if kind in ("literal_error", "enum"):
        expected = err.get("ctx", {}).get("expected", "")
        return f"must be one of {expected}"
    if kind == "union_tag_invalid":
        return "type must be one of mbox, maildir, imap"
    return msg


_FIELD_PREFIX = re.compile(r"^([a-z_]+): (.*)$", re.S)


def _split_field(loc: tuple[str | int, ...], msg: str) -> tuple[tuple[str | int, ...], str]:
    """Model-level checks say ``field: message``; point the error at that field."""
    m = _FIELD_PREFIX.match(msg)
    if m is None:
        return loc, msg
    return loc + (m.group(1),), m.group(2)


def _problem(path: Path, doc: YamlDoc, loc: tuple[str | int, ...], message: str) -> Problem:
    return Problem(path, doc.line_of(loc), ".".join(str(p) for p in loc), message)


def load_config(path: Path | str, *, env: Mapping[str, str] | None = None) -> Config:
    """Read, validate and resolve a policy file.

    Raises:
        ConfigError: with one Problem per error found (all of them, not just the first).
    """
    path = Path(path)
    env = os.environ if env is None else env
    try:
        doc = load_yaml(path)
    except YamlError as e:
        raise ConfigError([Problem(e.path, e.line, "", e.message)]) from None
    except OSError as e:
        raise ConfigError([Problem(path, None, "", f"cannot read: {e.strerror}")]) from None
    data = doc.data
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        problems = []
        seen: set[tuple[tuple[str | int, ...], str]] = set()
        for err in e.errors():
            loc = _clean_loc(data, err["loc"])
            msg = _message(err, doc, loc)
            if err.get("type") == "value_error":
                loc, msg = _split_field(loc, msg)
            if (loc, msg) not in seen:
                seen.add((loc, msg))
                problems.append(_problem(path, doc, loc, msg))
        raise ConfigError(problems) from None
    problems = [_problem(path, doc, loc, msg) for loc, msg in _cross_check(config)]
    if problems:
        raise ConfigError(problems)
    resolved, expand_problems = _resolve(config, path, env)
    if expand_problems:
        raise ConfigError([_problem(path, doc, loc, msg) for loc, msg in expand_problems])
    return resolved


def _check_values(config: Config) -> list[tuple[tuple[str | int, ...], str]]:
    """Cron strings and archive path templates: checked here so `check` and `run` agree."""
    from retention.archive.paths import TemplateError, validate_template
    from retention.cron import ScheduleError, parse_schedule

    out: list[tuple[tuple[str | int, ...], str]] = []

    def schedule(text: str | None, loc: tuple[str | int, ...]) -> None:
        if text is None:
            return
        try:
            parse_schedule(text)
        except ScheduleError as e:
            out.append((loc, str(e)))

    for pname, policy in config.policies.items():
        schedule(policy.schedule, ("policies", pname, "schedule"))
    for i, acct in enumerate(config.accounts):
        schedule(acct.schedule, ("accounts", i, "schedule"))
    for name, target in config.archives.items():
        key = "folder" if isinstance(target, ImapTarget) else "path"
        try:
            validate_template(target.folder if isinstance(target, ImapTarget) else target.path)
        except TemplateError as e:
            out.append((("archives", name, key), str(e)))
    return out


def _cross_check(config: Config) -> list[tuple[tuple[str | int, ...], str]]:
    out: list[tuple[tuple[str | int, ...], str]] = _check_values(config)
    names: set[str] = set()
    for i, acct in enumerate(config.accounts):
        if acct.name in names:
            out.append((("accounts", i, "name"), f"duplicate account name {acct.name!r}"))
        names.add(acct.name)
        if acct.policy not in config.policies:
            known = ", ".join(sorted(config.policies)) or "none"
            out.append(
                (("accounts", i, "policy"), f"unknown policy {acct.policy!r} (known: {known})")
            )
            continue
        if acct.protocol == "pop3":
            policy = config.policies[acct.policy]
            for j, rule in enumerate(policy.rules):
                loc: tuple[str | int, ...] = ("policies", acct.policy, "rules", j)
                if rule.action.kind in (ActionKind.MOVE, ActionKind.TRASH):
                    out.append(
                        (
                            loc + ("action",),
                            f"{rule.action.kind.value} is not possible over POP3 "
                            f"(used by pop3 account {acct.name!r})",
                        )
                    )
                if any(f.upper() != "INBOX" for f in rule.folders):
                    out.append(
                        (
                            loc + ("folders",),
                            f"POP3 has only INBOX (used by pop3 account {acct.name!r})",
                        )
                    )
    for pname, policy in config.policies.items():
        rule_names: set[str] = set()
        for j, rule in enumerate(policy.rules):
            loc = ("policies", pname, "rules", j)
            if rule.name in rule_names:
                out.append((loc + ("name",), f"duplicate rule name {rule.name!r}"))
            rule_names.add(rule.name)
            if rule.action.kind is ActionKind.ARCHIVE and rule.action.target not in config.archives:
                known = ", ".join(sorted(config.archives)) or "none defined"
                out.append(
                    (
                        loc + ("action",),
                        f"unknown archive target {rule.action.target!r} (known: {known})",
                    )
                )
            if rule.when == "over_quota" and rule.action.kind in (
                ActionKind.MOVE,
                ActionKind.TRASH,
            ):
                out.append(
                    (
                        loc + ("action",),
                        f"{rule.action.kind.value} frees no space (same quota root); "
                        "over_quota rules must delete or archive",
                    )
                )
            if (
                rule.larger_than is not None
                and rule.smaller_than is not None
                and rule.larger_than >= rule.smaller_than
            ):
                out.append((loc + ("smaller_than",), "must be greater than larger_than"))
    return out


def _resolve(
    config: Config, path: Path, env: Mapping[str, str]
) -> tuple[Config, list[tuple[tuple[str | int, ...], str]]]:
    """Expand ``${VAR}``, make relative paths absolute against the file's folder."""
    base = path.resolve().parent
    problems: list[tuple[Any, str]] = []

    ignored: list[tuple[Any, str]] = []

    def fix(p: Path | str | None, loc: tuple[str | int, ...], secret: bool = False) -> Any:
        if p is None:
            return None
        # An unset variable in a secret's path is a missing secret: a warning in `check`
        # (the file is unreadable), a failure of that one account in `run`.
        sink = ignored if secret else problems
        text = _expand(str(p), loc, sink) if "${" in str(p) else str(p)
        q = Path(text).expanduser()
        resolved = q if q.is_absolute() else base / q
        return resolved if isinstance(p, Path) else str(resolved)

    state_dir = fix(config.state_dir, ("state_dir",))
    override = env.get("RETENTION_STATE_DIR") or env.get("STATE_DIRECTORY")
    if override:
        # systemd may pass several colon-separated directories; the first is ours.
        state_dir = Path(override.split(":")[0])
    accounts = [
        a.model_copy(
            update={
                "ca_file": fix(a.ca_file, ("accounts", i, "ca_file")),
                "password_file": fix(a.password_file, ("accounts", i, "password_file"), True),
            }
        )
        for i, a in enumerate(config.accounts)
    ]
    archives: dict[str, Any] = {}
    for name, t in config.archives.items():
        if isinstance(t, ImapTarget):
            archives[name] = t.model_copy(
                update={
                    "ca_file": fix(t.ca_file, ("archives", name, "ca_file")),
                    "password_file": fix(
                        t.password_file, ("archives", name, "password_file"), True
                    ),
                }
            )
        else:
            archives[name] = t.model_copy(update={"path": fix(t.path, ("archives", name, "path"))})
    resolved = config.model_copy(
        update={
            "state_dir": state_dir,
            "accounts": accounts,
            "archives": archives,
            "source": path,
        }
    )
    return resolved, problems


def warnings(config: Config, *, env: Mapping[str, str] | None = None) -> list[str]:
    """Things ``check`` reports without failing: missing secrets, suspicious durations."""
    env = os.environ if env is None else env
    out: list[str] = []
    for acct in config.accounts:
        if acct.password_env is not None and acct.password_env not in env:
            out.append(
                f"account {acct.name}: environment variable {acct.password_env} is not set "
                "(the account will fail until it is)"
            )
        if acct.password_file is not None and not os.access(acct.password_file, os.R_OK):
            out.append(f"account {acct.name}: password_file {acct.password_file} is not readable")
    for pname, policy in config.policies.items():
        for rule in policy.rules:
            if rule.older_than is not None and rule.older_than < timedelta(hours=1):
                out.append(
                    f"policy {pname}, rule {rule.name}: older_than is in minutes "
                    "('m' is minutes; months are not a unit: use e.g. 30d)"
                )
    used = {a.policy for a in config.accounts}
    for pname in sorted(set(config.policies) - used):
        out.append(f"policy {pname} is not used by any account")
    return out
