"""A fleet on a real Dovecot with a master user (issue 9).

A passwd-file source plus one master credential (``login_as: separator`` and
``login_as: authzid``, IMAP and POP3) must plan exactly what per-user password logins
plan for the same mailboxes; ``policy_by`` gives each account its policy; a wrong master
password fails every account and shows no secret; ``doveadm user '*'`` on a userdb that
cannot iterate is a clear error; ``--jobs`` keeps the report in account order.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from retention.cli import main
from retention.testing.dovecot import Dovecot, MailUser, SeedMessage
from tests.integration.helpers import ago

MASTER = "fleetadmin"
MASTER_PW = "M4ster-pw-7Qx"
SEEN = frozenset({"\\Seen"})


def policies(protocol: str) -> dict[str, Any]:
    # POP3: only INBOX, and age by the Date header (first_seen would make nothing old yet).
    clock = {"age_by": "sent"} if protocol == "pop3" else {}
    std = [{"name": "old", "folders": ["INBOX"], "older_than": "365d", "action": "delete",
            **clock}]
    if protocol == "imap":
        std.append({"name": "trash", "folders": ["\\Trash"], "older_than": "30d",
                    "action": "delete"})
    return {"std": {"protect": [], "rules": std},
            "short": {"protect": [], "rules": [{"name": "month", "folders": ["INBOX"],
                                                "older_than": "30d", "action": "delete",
                                                **clock}]}}


@pytest.fixture(scope="module")
def server(dovecot_factory: Callable[..., Dovecot]) -> Dovecot:
    return dovecot_factory(master_users={MASTER: MASTER_PW})


@pytest.fixture(scope="module")
def users(server: Dovecot) -> list[MailUser]:
    out = []
    for i, name in enumerate(("ann@fleet.example.org", "ben@fleet.example.org",
                              "cat@vip.example.com")):
        user = server.add_user(name, quota_bytes=50 * 1024 * 1024)
        user.seed("INBOX", [
            *(SeedMessage(received=ago(days=400 + d), flags=SEEN, size=2000) for d in range(i + 1)),
            *(SeedMessage(received=ago(days=60), flags=SEEN, size=2000) for _ in range(2)),
            SeedMessage(received=ago(days=1), size=2000),
        ])
        user.seed("Trash", [SeedMessage(received=ago(days=90), flags=SEEN, size=1000)])
        out.append(user)
    return out


def _account(server: Dovecot, protocol: str) -> dict[str, Any]:
    return {"protocol": protocol, "host": server.host,
            "port": server.imap_port if protocol == "imap" else server.pop3_port,
            "security": "none", "allow_plaintext": True, "timeout": "60s"}


def write_policy(tmp_path: Path, body: dict[str, Any], protocol: str = "imap") -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"),
                                    "policies": policies(protocol), **body}), encoding="utf-8")
    return path


def per_user(tmp_path: Path, server: Dovecot, users: list[MailUser], protocol: str,
             monkeypatch: pytest.MonkeyPatch) -> Path:
    accounts = []
    for i, u in enumerate(users):
        monkeypatch.setenv(f"PW_{i}", u.password)
        accounts.append({**_account(server, protocol), "name": u.name, "username": u.name,
                         "password_env": f"PW_{i}",
                         "policy": "short" if u.name.endswith("@vip.example.com") else "std"})
    return write_policy(tmp_path, {"accounts": accounts}, protocol)


def with_master(tmp_path: Path, server: Dovecot, users: list[MailUser], protocol: str,
                login_as: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MASTER_PW", MASTER_PW)
    passwd = tmp_path / "users.passwd"
    # Dovecot's own format, passwords included: the source must ignore them.
    passwd.write_text("".join(f"{u.name}:{{PLAIN}}{u.password}:::::\n" for u in users))
    return write_policy(tmp_path, {
        "credentials": {"admin": {"username": MASTER, "password_env": "MASTER_PW",
                                  "login_as": login_as}},
        "sources": [{"name": "dovecot", "type": "passwd-file", "path": str(passwd),
                     "account": {**_account(server, protocol), "credentials": "admin",
                                 "policy": "std"},
                     "policy_by": [{"match": "*@vip.example.com", "policy": "short"}]}],
    }, protocol)


def dry_run(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    capsys.readouterr()
    code = main(["run", "--dry-run", "--format", "json", "-c", str(path), *extra])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert MASTER_PW not in out + err
    return json.loads(out)  # type: ignore[no-any-return]


def planned(report: dict[str, Any]) -> dict[str, list[tuple[Any, ...]]]:
    return {a["account"]: sorted((x["folder"], x["uid"], x["uidl"], x["action"], x["rule"])
                                 for x in a["actions"]) for a in report["accounts"]}


@pytest.mark.parametrize(("protocol", "login_as"), [
    ("imap", "separator"), ("imap", "authzid"), ("pop3", "separator"), ("pop3", "authzid")])
def test_master_credential_plans_what_user_logins_plan(
    tmp_path: Path, server: Dovecot, users: list[MailUser], protocol: str, login_as: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    own = planned(dry_run(per_user(tmp_path / "a", server, users, protocol, monkeypatch),
                          capsys))
    report = dry_run(with_master(tmp_path / "b", server, users, protocol, login_as,
                                 monkeypatch), capsys)
    assert [a["status"] for a in report["accounts"]] == ["ok"] * 3
    assert planned(report) == own
    # Something was planned, and the vip account got the shorter policy from policy_by.
    assert all(own.values())
    vip = "cat@vip.example.com"
    assert {x[4] for x in own[vip]} == {"month"}
    assert len(own[vip]) == 5  # 3 older than 400 days, 2 of 60 days
    # ann 1 and ben 2 older than a year (Trash is aged by when it was saved: today).
    assert {len(v) for k, v in own.items() if k != vip} == {1, 2}


def test_wrong_master_password_fails_every_account_without_showing_it(
    tmp_path: Path, server: Dovecot, users: list[MailUser],
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    path = with_master(tmp_path, server, users, "imap", "authzid", monkeypatch)
    monkeypatch.setenv("MASTER_PW", "Wr0ng-master-zz")
    assert main(["run", "--dry-run", "--format", "json", "-c", str(path)]) == 1
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert [a["error_kind"] for a in report["accounts"]] == ["auth"] * 3
    assert "Wr0ng-master-zz" not in out + err


def test_usage_with_jobs_keeps_account_order(
    tmp_path: Path, server: Dovecot, users: list[MailUser],
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    path = with_master(tmp_path, server, users, "imap", "separator", monkeypatch)
    capsys.readouterr()
    assert main(["usage", "--jobs", "3", "--format", "json", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    rows = json.loads(out)
    got = rows["accounts"] if isinstance(rows, dict) else rows
    assert [r["account"] for r in got] == [u.name for u in users]
    assert err == ""  # stderr is not a terminal here: no progress line
    # Messages of every folder, counted by one LIST-STATUS: INBOX i+1 old + 2 + 1, Trash 1.
    assert [r["messages"] for r in got] == [5, 6, 7]
    assert all(r["source"] == "quota" for r in got)


def test_doveadm_source_on_a_userdb_that_cannot_iterate(
    tmp_path: Path, server: Dovecot, users: list[MailUser], capsys: pytest.CaptureFixture[str],
) -> None:
    # The rig keeps one passwd-file per user (a path with %u): Dovecot cannot list those.
    path = write_policy(tmp_path, {"sources": [{
        "name": "dove", "type": "doveadm",
        "command": ["doveadm", "-c", str(server.config_file), "user", "*"],
        "account": {**_account(server, "imap"), "credentials": "admin", "policy": "std"}}],
        "credentials": {"admin": {"username": MASTER, "password_env": "MASTER_PW",
                                  "login_as": "separator"}}})
    assert main(["check", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "source dove" in err and "the userdb cannot list its users" in err
    assert "Traceback" not in err
