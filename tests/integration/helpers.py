"""Shared helpers for end-to-end tests: policy files for Dovecot users, the CLI in a subprocess.

Other integration tests may import this module. It owns three things:

* ``PolicyFile``: writes a real policy file (YAML) whose accounts point at users of a test
  ``Dovecot`` (implicit TLS verified against the instance's CA by default), with each
  password in its own environment variable, never in the file or on a command line.
* ``PolicyFile.cli`` / ``.run`` / ``.usage``: run ``python -m retention ...`` in a
  subprocess exactly as a user would, and parse the JSON report (``CliResult``).
* Small tools to compare mailboxes: ``state_diff`` of two ``Dovecot.folder_state`` results,
  ``uid_of`` (which UID holds the bytes we seeded) and ``ago`` (an aware time in the past).

Example::

    pf = PolicyFile(tmp_path, {"p": {"rules": [{"name": "old", "older_than": "1y",
                                                "action": "delete"}]}})
    pf.add_imap(mail_user)  # a retention.testing.dovecot.MailUser, e.g. from the make_user fixture
    result = pf.run(dry_run=True)
    assert result.code == 0 and result.report["accounts"][0]["status"] == "ok"
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from retention.testing.dovecot import MailUser, MessageState

REPO = Path(__file__).resolve().parents[2]

# Variables that would silently redirect a subprocess away from the policy file under test.
_SCRUB = ("RETENTION_STATE_DIR", "STATE_DIRECTORY", "RETENTION_CONFIG")

State = dict[str, dict[int, MessageState]]

# The JSON report's keys the issue-2 contract names (the report may carry more).
ACCOUNT_KEYS = frozenset({
    "account", "protocol", "status", "error", "error_kind", "run_id", "usage_bytes",
    "limit_bytes", "ratio", "usage_after_bytes", "freed_bytes", "actions", "totals",
})
ACTION_KEYS = frozenset({
    "folder", "uid", "uidvalidity", "uidl", "message_id", "internal_date", "size", "action",
    "to_folder", "rule", "clock", "reason", "result",
})
USAGE_KEYS = frozenset({"account", "protocol", "status", "error", "usage_bytes", "limit_bytes",
                        "ratio", "source"})


SEEN = frozenset({"\\Seen"})
FLAGGED = frozenset({"\\Seen", "\\Flagged"})
UNREAD: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Seeded:
    """One seeded message: its tag, folder, exact bytes and flags (Message-ID from the tag)."""

    tag: str
    folder: str
    raw: bytes
    flags: frozenset[str]
    domain: str = "retention.test"

    @property
    def message_id(self) -> str:
        return f"<{self.tag}@{self.domain}>"

    @property
    def size(self) -> int:
        return len(self.raw)

    def uid(self, state: State) -> int:
        return uid_of(state, self.folder, self.raw)


@contextmanager
def patched_env(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for an in-process run, restoring them afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def ago(**delta: float) -> datetime:
    """An aware UTC time ``delta`` before now: ``ago(days=800)``."""
    return datetime.now(UTC) - timedelta(**delta)


def env_var_for(account: str) -> str:
    return "RT_TEST_PW_" + re.sub(r"[^A-Za-z0-9]", "_", account).upper()


@dataclass
class CliResult:
    """One finished ``python -m retention`` process."""

    args: list[str]
    code: int
    stdout: str
    stderr: str

    @property
    def report(self) -> dict[str, Any]:
        """stdout parsed as JSON (fails the test with both streams shown when it isn't)."""
        try:
            doc: dict[str, Any] = json.loads(self.stdout)
        except json.JSONDecodeError as e:
            raise AssertionError(f"stdout is not JSON ({e}):\n{self}") from None
        return doc

    def account(self, name: str) -> dict[str, Any]:
        """The report's entry for account ``name``."""
        for acct in self.report["accounts"]:
            if acct["account"] == name:
                return dict(acct)
        raise AssertionError(f"account {name!r} not in the report:\n{self}")

    def __str__(self) -> str:
        out = self.stdout if len(self.stdout) < 20_000 else self.stdout[:20_000] + "\n[...]"
        return (f"$ retention {' '.join(self.args)}\nexit {self.code}\n"
                f"--- stdout ---\n{out}\n--- stderr ---\n{self.stderr}")


@dataclass
class PolicyFile:
    """A policy file under ``directory`` plus the environment its accounts need.

    ``policies`` is the ``policies:`` mapping exactly as it goes into the YAML;
    ``extra`` adds more top-level keys (``archives``, ``service``, ...).
    """

    directory: Path
    policies: Mapping[str, Any]
    name: str = "policy.yaml"
    state_dir: str = "state"
    extra: Mapping[str, Any] = field(default_factory=dict)
    accounts: list[dict[str, Any]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.directory / self.name

    def add_imap(self, user: MailUser, *, password: str | None = None, name: str | None = None,
                 policy: str | None = None, security: str = "tls", **fields: Any) -> str:
        """Add an IMAP account for ``user`` (on its server); returns the account name.

        ``security``: ``tls`` (implicit TLS, verified against the test CA), ``starttls``, or
        ``none`` (plaintext, with ``allow_plaintext: true``). The password (the user's own
        unless given) goes into the environment variable ``env_var_for(name)``; ``fields``
        override any account key.
        """
        return self._add(user, "imap", password=password, name=name, policy=policy,
                         security=security, **fields)

    def add_pop3(self, user: MailUser, *, password: str | None = None, name: str | None = None,
                 policy: str | None = None, security: str = "tls", **fields: Any) -> str:
        """Like ``add_imap``, for the server's POP3 (995 / 110-style) ports."""
        return self._add(user, "pop3", password=password, name=name, policy=policy,
                         security=security, **fields)

    def _add(self, user: MailUser, protocol: str, *, password: str | None, name: str | None,
             policy: str | None, security: str, **fields: Any) -> str:
        server = user.server
        name = name or user.name.replace("_", "-").strip("-")
        password = user.password if password is None else password
        tls_port, plain_port = ((server.imaps_port, server.imap_port) if protocol == "imap"
                                else (server.pop3s_port, server.pop3_port))
        entry: dict[str, Any] = {
            "name": name,
            "protocol": protocol,
            "host": server.host,
            "port": tls_port if security == "tls" else plain_port,
            "security": security,
            "username": user.name,
            "password_env": env_var_for(name),
            "policy": policy or next(iter(self.policies)),
            "timeout": "60s",
        }
        if security == "none":
            entry["allow_plaintext"] = True
        else:
            entry["ca_file"] = str(server.ca_file)
        entry.update(fields)
        self.accounts.append(entry)
        self.env[env_var_for(name)] = password
        self.write()
        return name

    def document(self) -> dict[str, Any]:
        return {"state_dir": self.state_dir, "policies": dict(self.policies),
                "accounts": self.accounts, **self.extra}

    def write(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(self.document(), allow_unicode=True, sort_keys=False)
        self.path.write_text(text, encoding="utf-8")
        return self.path

    def subprocess_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
        env.update(self.env)
        env.update(extra or {})
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        return env

    def cli(self, *args: str, env: Mapping[str, str] | None = None,
            timeout: float = 900) -> CliResult:
        """``python -m retention ARGS`` with this file's passwords in the environment.

        ``-c PATH`` is added after the subcommand unless ``args`` already has one.
        """
        argv = list(args)
        if argv and "-c" not in argv and "--config" not in argv:
            argv[1:1] = ["-c", str(self.path)]
        return run_cli(argv, env=self.subprocess_env(env), timeout=timeout)

    def run(self, *, dry_run: bool = False, accounts: Sequence[str] = (), fmt: str = "json",
            output: Path | None = None, env: Mapping[str, str] | None = None) -> CliResult:
        args = ["run", "--format", fmt]
        if dry_run:
            args.append("--dry-run")
        for a in accounts:
            args += ["--account", a]
        if output is not None:
            args += ["--output", str(output)]
        return self.cli(*args, env=env)

    def usage(self, fmt: str = "json") -> CliResult:
        return self.cli("usage", "--format", fmt)

    def load(self) -> Any:
        """The validated ``Config`` (in-process; for ``retention.run.account.run_all``)."""
        from retention.config.load import load_config

        return load_config(self.path, env={})


def run_cli(args: Sequence[str], *, env: Mapping[str, str] | None = None,
            timeout: float = 900, cwd: Path | None = None) -> CliResult:
    """Run ``python -m retention ARGS`` and capture everything."""
    proc = subprocess.run(
        [sys.executable, "-m", "retention", *args],
        capture_output=True, text=True, env=dict(env) if env is not None else None,
        timeout=timeout, cwd=cwd or REPO, check=False,
    )
    return CliResult(list(args), proc.returncode, proc.stdout, proc.stderr)


# --------------------------------------------------------------------------- mailboxes


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def uid_of(state: State, folder: str, raw: bytes) -> int:
    """The UID in ``folder`` whose bytes are ``raw`` (exactly one must match)."""
    digest = sha256(raw)
    hits = [uid for uid, m in state.get(folder, {}).items() if m.sha256 == digest]
    if len(hits) != 1:
        raise AssertionError(f"{len(hits)} messages in {folder!r} match the seeded bytes")
    return hits[0]


def uids_of(state: State, folder: str, raws: Iterable[bytes]) -> set[int]:
    return {uid_of(state, folder, raw) for raw in raws}


@dataclass(frozen=True)
class FolderDiff:
    removed: frozenset[int]
    added: frozenset[int]
    changed: frozenset[int]  # same UID, different flags, bytes or INTERNALDATE


def state_diff(before: State, after: State) -> dict[str, FolderDiff]:
    """Per folder (those in either state) what disappeared, appeared or changed."""
    out: dict[str, FolderDiff] = {}
    for folder in sorted(set(before) | set(after)):
        b, a = before.get(folder, {}), after.get(folder, {})
        diff = FolderDiff(
            removed=frozenset(set(b) - set(a)),
            added=frozenset(set(a) - set(b)),
            changed=frozenset(u for u in set(a) & set(b) if a[u] != b[u]),
        )
        if diff.removed or diff.added or diff.changed:
            out[folder] = diff
    return out


def planned(report_account: Mapping[str, Any]) -> set[tuple[str, int, str, str]]:
    """(folder, uid, action, rule) of every action in one account of a JSON report."""
    return {(a["folder"], a["uid"], a["action"], a["rule"]) for a in report_account["actions"]}
