"""The policy file: valid files load with defaults; every bad file names file, line and field."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from retention.config.load import load_config
from retention.config.schema import (
    effective_allow_empty,
    effective_clock,
    effective_protect,
)
from retention.errors import ConfigError
from retention.plan import ActionKind, Clock

GOOD = """\
state_dir: ./state
policies:
  standard:
    protect: [flagged, unread]
    keep_within: 7d
    quota: {limit: 1GiB}
    rules:
      - name: trash
        folders: ['\\Trash']
        older_than: 30d
        action: delete
      - name: old-mail
        folders: ['*']
        exclude_folders: ['\\Trash', '\\Junk', '\\Sent']
        older_than: 2y
        age_by: received
        action: {move_to: '\\Archive'}
accounts:
  - name: alice
    protocol: imap
    host: mail.example.com
    port: 993
    security: tls
    username: alice@example.com
    password_env: ALICE_PASSWORD
    policy: standard
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_the_issue_example_loads_with_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    pol = config.policies["standard"]
    assert pol.keep_within == timedelta(days=7)
    assert pol.quota.limit == 1024**3
    assert pol.quota.clean_above == 0.9 and pol.quota.clean_to == 0.75
    trash, old = pol.rules
    assert trash.action.kind is ActionKind.DELETE
    assert old.action.kind is ActionKind.MOVE and old.action.target == "\\Archive"
    assert effective_clock(trash, "imap") is Clock.SAVED
    assert effective_clock(old, "imap") is Clock.RECEIVED
    assert effective_allow_empty(trash, "imap") and not effective_allow_empty(old, "imap")
    assert effective_protect(old, pol, "imap") == {"flagged", "unread"}
    assert effective_protect(old, pol, "pop3") == frozenset()
    assert config.state_dir == tmp_path / "state"
    assert config.accounts[0].effective_port() == 993


def test_relative_paths_and_env_expansion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRETS", "/run/creds")
    text = GOOD.replace("password_env: ALICE_PASSWORD", "password_file: ${SECRETS}/alice")
    text = text.replace("    port: 993\n", "    port: 993\n    ca_file: ca.pem\n")
    config = load_config(write(tmp_path, text), env={})
    acct = config.accounts[0]
    assert acct.password_file == Path("/run/creds/alice")
    assert acct.ca_file == tmp_path / "ca.pem"


def test_state_dir_overridden_by_environment(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD), env={"STATE_DIRECTORY": "/var/lib/retention"})
    assert config.state_dir == Path("/var/lib/retention")
    config = load_config(
        write(tmp_path, GOOD),
        env={"RETENTION_STATE_DIR": "/srv/r", "STATE_DIRECTORY": "/var/lib/retention"},
    )
    assert config.state_dir == Path("/srv/r")


# (description, text transformation, expected line, expected field, message fragment)
BAD: list[tuple[str, str, str, int, str, str]] = [
    (
        "unknown top-level key",
        "state_dir: ./state",
        "state_dir: ./state\ncolour: red",
        2,
        "colour",
        "unknown key",
    ),
    (
        "unknown rule key",
        "        action: delete",
        "        action: delete\n        colour: red",
        12,
        "policies.standard.rules.0.colour",
        "unknown key",
    ),
    (
        "bad duration",
        "older_than: 30d",
        "older_than: 30 days",
        10,
        "policies.standard.rules.0.older_than",
        "invalid duration",
    ),
    ("bad size", "limit: 1GiB", "limit: 1 gigabyte", 6, "policies.standard.quota.limit", "size"),
    (
        "bad percentage",
        "quota: {limit: 1GiB}",
        "quota: {limit: 1GiB, warn_above: 180%}",
        6,
        "policies.standard.quota.warn_above",
        "",
    ),
    (
        "clean_to above clean_above",
        "quota: {limit: 1GiB}",
        "quota: {limit: 1GiB, clean_above: 80%, clean_to: 90%}",
        6,
        "policies.standard.quota.clean_to",
        "below clean_above",
    ),
    (
        "unknown action",
        "action: delete",
        "action: shred",
        11,
        "policies.standard.rules.0.action",
        "unknown action",
    ),
    (
        "boolean folder name",
        "folders: ['\\Trash']",
        "folders: [No]",
        9,
        "policies.standard.rules.0.folders.0",
        "quote it: 'No'",
    ),
    (
        "unknown age_by",
        "age_by: received",
        "age_by: arrival",
        16,
        "policies.standard.rules.1.age_by",
        "must be one of",
    ),
    (
        "always-rule without age",
        "        older_than: 30d\n",
        "",
        8,
        "policies.standard.rules.0.older_than",
        "needs older_than",
    ),
    (
        "unknown policy",
        "    policy: standard",
        "    policy: standrd",
        26,
        "accounts.0.policy",
        "unknown policy 'standrd'",
    ),
    (
        "unknown protocol",
        "protocol: imap",
        "protocol: smtp",
        20,
        "accounts.0.protocol",
        "must be one of",
    ),
    (
        "plaintext without consent",
        "security: tls",
        "security: none",
        23,
        "accounts.0.security",
        "allow_plaintext",
    ),
    (
        "no password source",
        "    password_env: ALICE_PASSWORD\n",
        "",
        19,
        "accounts.0.password_env",
        "exactly one of",
    ),
    (
        "missing host",
        "    host: mail.example.com\n",
        "",
        19,
        "accounts.0.host",
        "missing required key",
    ),
    ("port out of range", "port: 993", "port: 99300", 22, "accounts.0.port", "65535"),
    ("duplicate key", "    port: 993\n", "    port: 993\n    port: 994\n", 23, "accounts.0.port",
     "duplicate key"),
    (
        "unknown archive target",
        "action: {move_to: '\\Archive'}",
        "action: {archive: cold}",
        17,
        "policies.standard.rules.1.action",
        "unknown archive target",
    ),
    (
        "over-quota move frees nothing",
        "        older_than: 2y\n",
        "        older_than: 2y\n        when: over_quota\n",
        18,
        "policies.standard.rules.1.action",
        "frees no space",
    ),
    ("bad YAML", "    rules:", "    rules: [", 8, "", ""),
    (
        "bad protect value",
        "protect: [flagged, unread]",
        "protect: [flagged, starred]",
        4,
        "policies.standard.protect.1",
        "must be one of",
    ),
    (
        "duplicate rule name",
        "name: old-mail",
        "name: trash",
        12,
        "policies.standard.rules.1.name",
        "duplicate rule name",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "line", "field", "fragment"),
    [case[1:] for case in BAD],
    ids=[case[0] for case in BAD],
)
def test_bad_policy_names_file_line_and_field(
    tmp_path: Path, old: str, new: str, line: int, field: str, fragment: str
) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    problems = info.value.problems
    rendered = [str(p) for p in problems]
    match = [p for p in problems if p.field == field and fragment in p.message]
    assert match, rendered
    assert match[0].path == path
    assert match[0].line == line, rendered
    assert str(match[0]).startswith(f"{path}:{line}: ")


def test_pop3_rules_with_folders_or_moves_are_errors(tmp_path: Path) -> None:
    text = GOOD.replace("protocol: imap", "protocol: pop3")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    messages = [f"{p.field}: {p.message}" for p in info.value.problems]
    assert any("rules.0.folders" in m and "INBOX" in m for m in messages), messages
    assert any("rules.1.action" in m and "not possible over POP3" in m for m in messages)


def test_cli_check_exit_codes_and_no_traceback(tmp_path: Path) -> None:
    good = write(tmp_path, GOOD)
    ok = subprocess.run(
        [sys.executable, "-m", "retention", "check", "-c", str(good)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert ok.returncode == 0, ok.stderr
    assert "clock=saved" in ok.stdout and "clock=received" in ok.stdout
    assert "ALICE_PASSWORD is not set" in ok.stderr  # a warning, not an error
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("older_than: 30d", "older_than: 3 months"))
    res = subprocess.run(
        [sys.executable, "-m", "retention", "check", "-c", str(bad)], capture_output=True, text=True
    )
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert res.stderr.startswith(f"{bad}:10: policies.standard.rules.0.older_than: ")
    missing = subprocess.run(
        [sys.executable, "-m", "retention", "check", "-c", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "Traceback" not in missing.stderr


def test_unknown_account_is_a_usage_error(tmp_path: Path) -> None:
    good = write(tmp_path, GOOD)
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "retention",
            "run",
            "-c",
            str(good),
            "--dry-run",
            "--account",
            "mallory",
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2
    assert "unknown account 'mallory'" in res.stderr


def test_bad_schedules_and_archive_templates_are_config_errors(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        archives:
          cold: {type: mbox, path: './a/{acount}/{year}.mbox'}
        policies:
          p:
            schedule: '61 * * * *'
        accounts:
          - name: a
            host: h
            username: u
            password_env: X
            policy: p
            schedule: 'every day'
        """)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    found = {(p.line, p.field) for p in info.value.problems}
    assert found == {(2, "archives.cold.path"), (5, "policies.p.schedule"),
                     (12, "accounts.0.schedule")}


def test_check_warns_about_minutes_and_warn_above_clean_above(tmp_path: Path) -> None:
    from retention.config.load import warnings

    text = GOOD.replace("older_than: 30d", "older_than: 90m").replace(
        "quota: {limit: 1GiB}", "quota: {limit: 1GiB, warn_above: 95%, clean_above: 90%}")
    found = warnings(load_config(write(tmp_path, text), env={}), env={"ALICE_PASSWORD": "x"})
    assert any("rule trash: older_than is in minutes" in w for w in found), found
    assert any("warn_above is not below clean_above" in w for w in found), found


def test_check_warns_about_a_trash_rule_that_protects_unread_mail(tmp_path: Path) -> None:
    from retention.config.load import warnings

    config = load_config(write(tmp_path, GOOD), env={})
    trash = [w for w in warnings(config, env={"ALICE_PASSWORD": "x"}) if "protects unread" in w]
    assert trash and "rule trash" in trash[0] and "protect: [flagged]" in trash[0], trash
    fixed = GOOD.replace("folders: ['\\Trash']", "folders: ['\\Trash']\n        protect: [flagged]")
    config = load_config(write(tmp_path, fixed), env={})
    assert not [w for w in warnings(config, env={"ALICE_PASSWORD": "x"}) if "protects unread" in w]


def test_the_shipped_policies_give_no_trash_warning() -> None:
    from retention.config.load import warnings

    for path in sorted((Path(__file__).parents[2] / "policies").glob("*.yaml")):
        found = [w for w in warnings(load_config(path, env={}), env={}) if "protects unread" in w]
        assert found == [], (path, found)


def test_zstd_without_its_extra_is_a_file_line_error_and_an_archive_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    import retention.config.load as load_mod
    from retention.archive.base import zstandard_module
    from retention.errors import ArchiveError

    text = GOOD.replace("policies:\n", "archives:\n  cold: {type: mbox, path: ./a.mbox, "
                        "compress: zstd}\npolicies:\n", 1)
    monkeypatch.setattr(load_mod, "zstd_available", lambda: False)
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    (problem,) = [p for p in info.value.problems if p.field.endswith("compress")]
    assert problem.line is not None and "mailbox-retention[zstd]" in problem.message
    monkeypatch.setitem(sys.modules, "zstandard", None)  # `import zstandard` fails
    with pytest.raises(ArchiveError, match=r"mailbox-retention\[zstd\]"):
        zstandard_module()
