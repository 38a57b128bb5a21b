"""Loading a policy file: YAML with line numbers -> a validated, resolved ``Config``.

This module owns what makes a file valid beyond the schema in ``policy.py`` (references
between accounts, policies and archives; cron strings; path templates) and how each
problem is reported: ``FILE:LINE: dotted.field: message``, all problems at once, never a
traceback. It resolves relative paths against the file's folder, expands ``${VAR}`` and
applies ``RETENTION_STATE_DIR``/``STATE_DIRECTORY``. It reads only the policy file (and,
for ``warnings``, whether secrets are present); no network.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from retention.config.oauth import PATH_KEYS as OAUTH_PATH_KEYS
from retention.config.oauth import OAuthCredential
from retention.config.providers import PROVIDER_HOSTS
from retention.config.schema import TRASH_JUNK, Config, Credential, ImapTarget, Policy
from retention.config.template import prototype, with_credential
from retention.config.yamlsource import YamlDoc, YamlError, load_yaml
from retention.errors import ConfigError, Problem
from retention.plan import ActionKind, Clock

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
            Anything else a hostile file could provoke (an overflow, a recursion, an OS
            error the checks below did not foresee) becomes a ConfigError too, so a bad file
            always means exit 2 with ``FILE:LINE`` at start-up and a kept policy on reload.
    """
    path = Path(path)
    try:
        return _load_config(path, os.environ if env is None else env)
    except ConfigError:
        raise
    except (Exception, RecursionError) as e:  # noqa: BLE001 - see the docstring
        raise ConfigError([Problem(path, 1, "", f"cannot load: {type(e).__name__}: {e}")]) \
            from None


def _load_config(path: Path, env: Mapping[str, str]) -> Config:
    env = os.environ if env is None else env
    try:
        doc = load_yaml(path)
    except YamlError as e:
        field = ".".join(str(p) for p in e.loc)
        raise ConfigError([Problem(e.path, e.line, field, e.message)]) from None
    except OSError as e:
        # Line 1: every problem line keeps the FILE:LINE: shape, even for a missing file.
        raise ConfigError([Problem(path, 1, "", f"cannot read: {e.strerror}")]) from None
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


_DEFAULT_SCHEDULE = Policy.model_fields["schedule"].default


def _check_values(config: Config) -> list[tuple[tuple[str | int, ...], str]]:
    """Cron strings and archive path templates: checked here so `check` and `run` agree."""
    from retention.archive.paths import TemplateError, validate_template

    out: list[tuple[tuple[str | int, ...], str]] = []

    def schedule(text: str | None, loc: tuple[str | int, ...]) -> None:
        # The default ("0 3 * * *", parsed by tests/unit/test_service_unit.py) is not parsed
        # again: APScheduler's cron module costs every start-up ~40 ms.
        if text is None or text == _DEFAULT_SCHEDULE:
            return
        from retention.config.schedule import ScheduleError, parse_schedule

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
        template = target.folder if isinstance(target, ImapTarget) else str(target.path)
        try:
            # ``${VAR}`` is expanded later (``_resolve``); its braces are not a placeholder.
            validate_template(_VAR.sub("v", template))
        except TemplateError as e:
            out.append((("archives", name, key), str(e)))
        if getattr(target, "compress", None) == "zstd" and not zstd_available():
            out.append((("archives", name, "compress"), ZSTD_MISSING))
    return out


ZSTD_MISSING = ("zstd needs the optional zstandard package: "
                "pip install 'mailbox-retention[zstd]' (or use compress: gzip)")


def zstd_available() -> bool:
    """Is python-zstandard installed (the ``zstd`` extra)? zstd archives need it."""
    import importlib.util

    return importlib.util.find_spec("zstandard") is not None


def protocol_problems(
    config: Config, protocol: str, policy_name: str, who: str
) -> list[tuple[tuple[str | int, ...], str]]:
    """What a policy's rules cannot do over ``protocol`` (``who``: the account, for the message)."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    policy = config.policies[policy_name]
    for j, rule in enumerate(policy.rules):
        loc: tuple[str | int, ...] = ("policies", policy_name, "rules", j)
        if protocol == "imap" and rule.age_by is Clock.FIRST_SEEN:
            out.append((loc + ("age_by",), "first_seen is for POP3 accounts; use received, "
                        f"sent or saved (used by {who})"))
        if protocol == "pop3":
            if rule.action.kind in (ActionKind.MOVE, ActionKind.TRASH):
                out.append((loc + ("action",), f"{rule.action.kind.value} is not possible "
                            f"over POP3 (used by {who})"))
            if any(f.upper() != "INBOX" for f in rule.folders):
                out.append((loc + ("folders",), f"POP3 has only INBOX (used by {who})"))
    return out


def _check_sources(config: Config) -> list[tuple[tuple[str | int, ...], str]]:
    """Source names, policy_by policies and account templates (no source is read here)."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    seen: dict[str, int] = {}
    known = ", ".join(sorted(config.policies)) or "none"
    for i, spec in enumerate(config.sources):
        if spec.name in seen:
            out.append((("sources", i, "name"), f"duplicate source name {spec.name!r} "
                        f"(also sources.{seen[spec.name]})"))
        seen.setdefault(spec.name, i)
        for j, rule in enumerate(spec.policy_by):
            if rule.policy not in config.policies:
                out.append((("sources", i, "policy_by", j, "policy"),
                            f"unknown policy {rule.policy!r} (known: {known})"))
        policy = spec.account.get("policy")
        if policy is not None and policy not in config.policies:
            out.append((("sources", i, "account", "policy"),
                        f"unknown policy {policy!r} (known: {known})"))
        try:
            proto = prototype(config, spec.account, None)
        except ValidationError as e:
            for err in e.errors():
                loc = tuple(p for p in err["loc"] if isinstance(p, str | int))
                msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
                if err.get("type") == "extra_forbidden":
                    msg = "unknown key"
                elif err.get("type") == "value_error":
                    loc, msg = _split_field(loc, msg)
                out.append((("sources", i, "account", *loc), msg))
            continue
        except ValueError as e:
            loc, msg = _split_field((), str(e))
            out.append((("sources", i, "account", *loc), msg))
            continue
        if policy is not None and policy in config.policies:
            out.extend(protocol_problems(config, proto.protocol, policy,
                                         f"{proto.protocol} source {spec.name!r}"))
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
        if acct.credentials is not None and acct.credentials not in config.credentials:
            known = ", ".join(sorted(config.credentials)) or "none defined"
            out.append((("accounts", i, "credentials"),
                        f"unknown credential {acct.credentials!r} (known: {known})"))
        out.extend(protocol_problems(config, acct.protocol, acct.policy,
                                     f"{acct.protocol} account {acct.name!r}"))
    out.extend(_check_sources(config))
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
        try:
            q = Path(text).expanduser()
        except RuntimeError:  # ``~nosuchuser/...``: no such user, or no home directory
            sink.append((loc, f"cannot expand {text.split('/', 1)[0]!r}: no such user "
                              "or home directory"))
            q = Path(text)
        resolved = q if q.is_absolute() else base / q
        return resolved if isinstance(p, Path) else str(resolved)

    def command(argv: list[str] | None, loc: tuple[str | int, ...]) -> list[str] | None:
        """``${VAR}`` in each argument (``${CREDENTIALS_DIRECTORY}/alice.cred``); a relative
        program path (``./get-password``) against the file's folder, as for files."""
        if argv is None:
            return None
        out = [_expand(a, (*loc, i), ignored) if "${" in a else a for i, a in enumerate(argv)]
        if os.sep in out[0] and not Path(out[0]).is_absolute():
            out[0] = str(base / out[0])
        return out

    state_dir = fix(config.state_dir, ("state_dir",))
    override = env.get("RETENTION_STATE_DIR") or env.get("STATE_DIRECTORY")
    if override:
        # systemd may pass several colon-separated directories; the first is ours.
        state_dir = Path(override.split(":")[0])
    credentials = {
        name: c.model_copy(update={key: fix(
            getattr(c, key), ("credentials", name, key), key != "ca_file")
            for key in (*OAUTH_PATH_KEYS, "password_file") if hasattr(c, key)})
        for name, c in config.credentials.items()
    }
    credentials = {
        name: c.model_copy(update={"password_command": command(
            c.password_command, ("credentials", name, "password_command"))})
        if isinstance(c, Credential) and c.password_command else c
        for name, c in credentials.items()
    }
    accounts = [
        with_credential(
            a.model_copy(
                update={
                    "ca_file": fix(a.ca_file, ("accounts", i, "ca_file")),
                    "password_file": fix(a.password_file, ("accounts", i, "password_file"),
                                         True),
                    "password_command": command(a.password_command,
                                                ("accounts", i, "password_command")),
                    "oauth": a.oauth and a.oauth.model_copy(update={key: fix(
                        getattr(a.oauth, key), ("accounts", i, "oauth", key), key != "ca_file")
                        for key in OAUTH_PATH_KEYS if hasattr(a.oauth, key)}),
                }
            ),
            credentials,
        )
        for i, a in enumerate(config.accounts)
    ]
    sources = [_resolve_source(s, i, fix) for i, s in enumerate(config.sources)]
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
    policies = {name: _resolve_notify(pol, name, fix) for name, pol in config.policies.items()}
    resolved = config.model_copy(
        update={
            "state_dir": state_dir,
            "state_url": env.get("RETENTION_STATE_URL") or config.state_url,
            "accounts": accounts,
            "credentials": credentials,
            "sources": sources,
            "archives": archives,
            "policies": policies,
            "source": path,
        }
    )
    return resolved, problems


def _resolve_source(spec: Any, i: int, fix: Any) -> Any:
    """Relative paths of a source (its file, CA file, secret files) against the policy file."""
    update = {}
    for key in ("path", "ca_file", "bind_password_file", "password_file"):
        value = getattr(spec, key, None)
        if value is not None:
            update[key] = fix(value, ("sources", i, key), key.endswith("password_file"))
    return spec.model_copy(update=update) if update else spec


def oauth_warnings(who: str, cred: OAuthCredential, env: Mapping[str, str]) -> list[str]:
    """Unset secrets, unreadable files and a missing optional extra of an OAuth2 credential."""
    out: list[str] = []
    for key in ("client_secret_env", "refresh_token_env"):
        name = getattr(cred, key, None)
        if name is not None and name not in env:
            out.append(f"{who}: environment variable {name} is not set (its accounts will "
                       "fail until it is)")
    for key in OAUTH_PATH_KEYS:
        path = getattr(cred, key, None)
        if path is not None and key != "ca_file" and not os.access(path, os.R_OK):
            out.append(f"{who}: {key} {path} is not readable")
    module = {"microsoft365": "msal", "google": "google.oauth2"}.get(cred.type)
    if module is not None:
        import importlib.util

        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            out.append(f"{who}: type {cred.type} needs {module.split('.')[0]} "
                       "(pip install 'mailbox-retention[oauth]')")
    return out


def _resolve_notify(policy: Policy, name: str, fix: Any) -> Policy:
    """``notify.templates`` and the SMTP relay's files, relative to the policy file."""
    n = policy.notify
    if n is None:
        return policy
    loc = ("policies", name, "notify")
    smtp = n.smtp
    if smtp is not None:
        smtp = smtp.model_copy(update={
            "ca_file": fix(smtp.ca_file, (*loc, "smtp", "ca_file")),
            "password_file": fix(smtp.password_file, (*loc, "smtp", "password_file"), True),
        })
    n = n.model_copy(update={"templates": fix(n.templates, (*loc, "templates")), "smtp": smtp})
    return policy.model_copy(update={"notify": n})


def _command_warning(who: str, argv: Sequence[str] | None) -> list[str]:
    """A ``password_command`` whose program is not there (``check`` never runs it: it may
    prompt, or be audited)."""
    if argv is None:
        return []
    program = argv[0]
    found = (os.access(program, os.X_OK) and os.path.isfile(program)) if os.sep in program \
        else shutil.which(program) is not None
    if found:
        return []
    return [f"{who}: password_command program {program!r} is not found or not executable "
            "(a name is looked up on PATH; the login will fail until it is there)"]


def _shared_journal_warnings(config: Config) -> list[str]:
    """File archives under a journal every replica shares (``state_url``)."""
    out = []
    for name, target in config.archives.items():
        if target.type == "imap":
            continue
        note = ("with state_url the journal is shared, so keep the archive on a volume "
                "every replica mounts: a copy only another replica can read is not trusted "
                "by recovery (archived again) nor readable by restore")
        if "{account}" not in target.path:
            note += ("; and put {account} in path: one file name per account keeps "
                     "replicas on separate volumes from sharing mbox intents")
        out.append(f"archive {name}: {note}")
    return out


def warnings(config: Config, *, env: Mapping[str, str] | None = None) -> list[str]:
    """Things ``check`` reports without failing: missing secrets, suspicious durations."""
    env = os.environ if env is None else env
    out: list[str] = []
    if config.state_url and ":" in config.state_url.partition("://")[2].rpartition("@")[0]:
        out.append("state_url carries a password: anyone who can read the policy file can "
                   "use it; set PGPASSWORD (or ~/.pgpass) and drop it from the URL")
    if config.state_url:
        out.extend(_shared_journal_warnings(config))
    for cname, cred in config.credentials.items():
        if not isinstance(cred, Credential):
            out.extend(oauth_warnings(f"credential {cname}", cred, env))
            continue
        if cred.password_env is not None and cred.password_env not in env:
            out.append(f"credential {cname}: environment variable {cred.password_env} is not "
                       "set (its accounts will fail until it is)")
        if cred.password_file is not None and not os.access(cred.password_file, os.R_OK):
            out.append(f"credential {cname}: password_file {cred.password_file} is not readable")
        out.extend(_command_warning(f"credential {cname}", cred.password_command))
    for acct in config.accounts:
        if acct.oauth is not None:
            out.extend(oauth_warnings(f"account {acct.name}", acct.oauth, env))
        if (PROVIDER_HOSTS.get(acct.host.lower(), ("", 0))[0] == "exchange"
                and acct.oauth is None
                and (acct.credential is None or isinstance(acct.credential, Credential))):
            out.append(f"account {acct.name}: Exchange Online refuses password logins (basic "
                       "authentication is off in every tenant): use a credential of type "
                       "microsoft365 (README: OAuth2)")
        if acct.credentials is not None or acct.oauth is not None:
            continue  # reported once for the credential above
        if acct.password_env is not None and acct.password_env not in env:
            out.append(
                f"account {acct.name}: environment variable {acct.password_env} is not set "
                "(the account will fail until it is)"
            )
        if acct.password_file is not None and not os.access(acct.password_file, os.R_OK):
            out.append(f"account {acct.name}: password_file {acct.password_file} is not readable")
        out.extend(_command_warning(f"account {acct.name}", acct.password_command))
    for pname, policy in config.policies.items():
        for rule in policy.rules:
            # Parsed durations lose their unit: one that is not whole hours was written in
            # minutes, which is almost always "6m" meant as six months.
            if rule.older_than is not None and (
                rule.older_than < timedelta(hours=1) or rule.older_than.total_seconds() % 3600
            ):
                out.append(
                    f"policy {pname}, rule {rule.name}: older_than is in minutes "
                    "('m' is minutes; months are not a unit: use e.g. 30d)"
                )
            # A Trash or Junk rule that protects unread mail: most of what lands there is
            # never read, so with the default protect: [flagged, unread] it never expires.
            if (rule.folders and all(f in TRASH_JUNK for f in rule.folders)
                    and "unread" in (rule.protect if rule.protect is not None
                                     else policy.protect)):
                out.append(
                    f"policy {pname}, rule {rule.name}: protects unread mail in "
                    f"{'/'.join(rule.folders)}, where most mail is never read, so it never "
                    "expires (set protect: [flagged] on the rule)"
                )
        if policy.quota.warn_above >= policy.quota.clean_above:
            out.append(
                f"policy {pname}: warn_above is not below clean_above, so no warning comes "
                "before cleanup starts"
            )
    used = {a.policy for a in config.accounts}
    for spec in config.sources:  # a source's policies: those it can give (not read here)
        used.update(r.policy for r in spec.policy_by)
        if isinstance(spec.account.get("policy"), str):
            used.add(spec.account["policy"])
        if spec.type in ("csv", "sql") or getattr(getattr(spec, "attributes", None),
                                                   "policy", None):
            used.update(config.policies)  # an entry may name any policy
    for pname in sorted(set(config.policies) - used):
        out.append(f"policy {pname} is not used by any account")
    return out
