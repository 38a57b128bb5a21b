"""A fleet on a real Cyrus IMAP with an admin credential (issue 9).

``login_as: authzid`` naming the Cyrus admin (SASL PLAIN: authorization identity = the
user, authentication identity = ``admin``, which Cyrus allows for its ``admins``) must plan
exactly what per-user password logins plan for the same mailboxes, and a real run through
the admin deletes exactly the planned messages, nothing else. Both of Cyrus's namespace
layouts: Debian's (``user.alice``, ``INBOX.Trash``) and upstream's (``unixhierarchysep``
and ``altnamespace``: ``user/alice``, ``Trash``). Usage comes from Cyrus's QUOTA
(``GETQUOTAROOT``) as set by the admin (``SETQUOTA user.alice (STORAGE ...)``).

The server: ``retention.testing.cyrus``. Without Cyrus these skip, except under CI=true,
where that is a failure (``scripts/install-deps.sh`` installs it).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from retention.cli import main
from retention.testing.cyrus import (
    Cyrus,
    CyrusUser,
    cyrus_pop3_unavailable_reason,
    cyrus_unavailable_reason,
)
from retention.testing.dovecot import SeedMessage
from tests.integration.helpers import ago
from tests.integration.sources_support import require

SEEN = frozenset({"\\Seen"})
QUOTA_KIB = 1024
_names = itertools.count(1)

POLICIES = {
    "std": {"protect": [], "rules": [
        {"name": "old", "folders": ["INBOX"], "older_than": "365d", "action": "delete"},
        # By INTERNALDATE: by default \\Trash ages by SAVEDATE (Cyrus has it): today here.
        {"name": "trash", "folders": ["\\Trash"], "older_than": "30d", "action": "delete",
         "age_by": "received"}]},
    "short": {"protect": [], "rules": [
        {"name": "month", "folders": ["INBOX"], "older_than": "30d", "action": "delete"}]},
}
# POP3: INBOX only, aged by the Date header (first_seen would make nothing old yet).
POP3_POLICIES = {"pop": {"protect": [], "rules": [
    {"name": "old", "folders": ["INBOX"], "older_than": "365d", "action": "delete",
     "age_by": "sent"}]}}


@pytest.fixture
def users(cyrus: Cyrus) -> list[CyrusUser]:
    """Two fresh users (a run deletes mail): i+1 messages older than a year, two of 60
    days and one new in INBOX; one in Trash, aged 90 days by its INTERNALDATE."""
    out = []
    for i in range(2):
        user = cyrus.add_user(f"u{next(_names)}x{i}", quota_kib=QUOTA_KIB)
        user.append("INBOX", [
            *(SeedMessage(received=ago(days=400 + d), flags=SEEN, size=2000) for d in range(i + 1)),
            *(SeedMessage(received=ago(days=60), flags=SEEN, size=2000) for _ in range(2)),
            SeedMessage(received=ago(days=1), size=2000)])
        user.append("Trash", [SeedMessage(received=ago(days=90), flags=SEEN, size=1000)])
        out.append(user)
    return out


def _account(cyrus: Cyrus, *, tls: str | None = None, pop3: bool = False) -> dict[str, Any]:
    """Plaintext on loopback; ``tls``: ``tls`` (IMAPS) or ``starttls``, verified by the CA."""
    if pop3:
        return {"protocol": "pop3", "host": cyrus.host, "port": cyrus.pop3_port,
                "security": "none", "allow_plaintext": True, "timeout": "60s"}
    if tls:
        return {"protocol": "imap", "host": cyrus.host, "security": tls,
                "port": cyrus.imaps_port if tls == "tls" else cyrus.imap_port,
                "ca_file": str(cyrus.ca_file), "timeout": "60s"}
    return {"protocol": "imap", "host": cyrus.host, "port": cyrus.imap_port,
            "security": "none", "allow_plaintext": True, "timeout": "60s"}


def write_policy(tmp_path: Path, body: dict[str, Any]) -> Path:
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"),
                                    "policies": POLICIES | POP3_POLICIES, **body}),
                    encoding="utf-8")
    return path


def per_user(tmp_path: Path, cyrus: Cyrus, users: list[CyrusUser],
             monkeypatch: pytest.MonkeyPatch, *, pop3: bool = False) -> Path:
    accounts = []
    for i, u in enumerate(users):
        monkeypatch.setenv(f"CYRUS_PW_{i}", u.password)
        accounts.append({**_account(cyrus, pop3=pop3), "name": u.name, "username": u.name,
                         "password_env": f"CYRUS_PW_{i}", "policy": "pop" if pop3 else "std"})
    return write_policy(tmp_path, {"accounts": accounts})


def with_admin(tmp_path: Path, cyrus: Cyrus, users: list[CyrusUser],
               monkeypatch: pytest.MonkeyPatch, *, admin: str | None = None,
               password: str | None = None, tls: str | None = None, pop3: bool = False) -> Path:
    monkeypatch.setenv("CYRUS_ADMIN_PW", password or cyrus.admin_password)
    tmp_path.mkdir(exist_ok=True)
    passwd = tmp_path / "users.passwd"
    passwd.write_text("".join(f"{u.name}:x:::::\n" for u in users))
    return write_policy(tmp_path, {
        "credentials": {"cyrus-admin": {"username": admin or cyrus.admin,
                                        "password_env": "CYRUS_ADMIN_PW",
                                        "login_as": "authzid"}},
        "sources": [{"name": "cyrus", "type": "passwd-file", "path": str(passwd),
                     "account": {**_account(cyrus, tls=tls, pop3=pop3),
                                 "credentials": "cyrus-admin",
                                 "policy": "pop" if pop3 else "std"}}],
    })


def run(path: Path, capsys: pytest.CaptureFixture[str], *extra: str,
        expect: int = 0) -> dict[str, Any]:
    capsys.readouterr()
    code = main(["run", "--format", "json", "-c", str(path), *extra])
    out, err = capsys.readouterr()
    assert code == expect, err
    return json.loads(out)  # type: ignore[no-any-return]


def planned(report: dict[str, Any]) -> dict[str, list[tuple[Any, ...]]]:
    return {a["account"]: sorted((x["folder"], x["uid"] or x["uidl"], x["action"], x["rule"])
                                 for x in a["actions"]) for a in report["accounts"]}


def test_admin_authzid_plans_what_user_logins_plan_and_deletes_only_that(
    tmp_path: Path, cyrus: Cyrus, users: list[CyrusUser],
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    before = {u.name: u.folder_state() for u in users}
    own = planned(run(per_user(tmp_path / "own", cyrus, users, monkeypatch), capsys,
                      "--dry-run"))
    admin_path = with_admin(tmp_path / "admin", cyrus, users, monkeypatch)
    dry = run(admin_path, capsys, "--dry-run")
    assert [a["status"] for a in dry["accounts"]] == ["ok", "ok"]
    assert planned(dry) == own
    # Each user: i+1 INBOX messages older than a year and the Trash message of 90 days.
    # Folder names are relative to the personal namespace: INBOX.Trash is "Trash" too.
    assert [sorted({(x[0], x[3]) for x in own[u.name]}) for u in users] == [
        [("INBOX", "old"), ("Trash", "trash")]] * 2
    assert [len(own[u.name]) for u in users] == [2, 3]
    assert {u.name: u.folder_state() for u in users} == before  # the dry run changed nothing

    report = run(admin_path, capsys)
    assert [a["status"] for a in report["accounts"]] == ["ok", "ok"]
    assert planned(report) == own
    for u in users:
        after = u.folder_state()
        gone = {(folder, uid) for folder, uid, _action, _rule in own[u.name]}
        expected = {
            server_name: {uid: m for uid, m in messages.items()
                          if (_agent_name(cyrus, server_name), uid) not in gone}
            for server_name, messages in before[u.name].items()}
        assert after == expected


def _agent_name(cyrus: Cyrus, server_name: str) -> str:
    # The agent's names: "/" between levels, without the personal namespace's "INBOX.".
    if not cyrus.altnamespace and server_name.startswith("INBOX."):
        server_name = server_name[len("INBOX."):]
    return server_name.replace(cyrus.separator, "/")


def test_usage_through_the_admin_is_cyrus_quota(
    tmp_path: Path, cyrus: Cyrus, users: list[CyrusUser],
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    # The second user also has a MESSAGE limit: (STORAGE u l MESSAGE n m) in one line.
    cyrus.set_quota(users[1].name, QUOTA_KIB, messages=100)
    path = with_admin(tmp_path, cyrus, users, monkeypatch)
    capsys.readouterr()
    assert main(["usage", "--jobs", "2", "--format", "json", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    rows = json.loads(out)
    got = rows["accounts"] if isinstance(rows, dict) else rows
    assert [r["account"] for r in got] == [u.name for u in users]
    for row, user in zip(got, users, strict=True):
        used, limit = user.usage()  # the admin's GETQUOTA user.NAME
        assert row["source"] == "quota"
        assert (row["usage_bytes"], row["limit_bytes"]) == (used, limit)
        assert limit == QUOTA_KIB * 1024 and used > 0
    # Messages of every folder: INBOX i+1 old + 2 + 1, Trash 1.
    assert [r["messages"] for r in got] == [5, 6]
    assert cyrus.admin_password not in out + err


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_admin_over_tls_verified_against_the_rig_ca(
    tmp_path: Path, cyrus: Cyrus, users: list[CyrusUser], security: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    own = planned(run(per_user(tmp_path / "own", cyrus, users, monkeypatch), capsys,
                      "--dry-run"))
    report = run(with_admin(tmp_path / "tls", cyrus, users, monkeypatch, tls=security),
                 capsys, "--dry-run")
    assert planned(report) == own


def test_wrong_admin_password_or_a_non_admin_fails_every_account_as_auth(
    tmp_path: Path, cyrus: Cyrus, users: list[CyrusUser],
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    wrong = with_admin(tmp_path / "wrong", cyrus, users, monkeypatch, password="Wr0ng-cy-zz")
    report = run(wrong, capsys, "--dry-run", expect=1)
    assert [a["error_kind"] for a in report["accounts"]] == ["auth", "auth"]
    assert "Wr0ng-cy-zz" not in json.dumps(report)
    # A user that is no admin may not act for another user: Cyrus refuses the authzid.
    other = cyrus.add_user(f"u{next(_names)}plain")
    report = run(with_admin(tmp_path / "notadmin", cyrus, users, monkeypatch,
                            admin=other.name, password=other.password),
                 capsys, "--dry-run", expect=1)
    assert [a["error_kind"] for a in report["accounts"]] == ["auth", "auth"]
    assert other.password not in json.dumps(report)


def test_move_to_a_new_folder_lands_in_the_personal_namespace(
    tmp_path: Path, cyrus: Cyrus, users: list[CyrusUser],
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """Regression: with altnamespace off a user may only create folders under ``INBOX.``;
    ``move_to: Archive/2023`` was sent as CREATE Archive.2023 (Cyrus: "Permission denied")
    and failed the account. The folder is now INBOX.Archive.2023, named Archive/2023, and
    the next scan finds it under that name."""
    user = users[0]
    before = user.folder_state()
    old = {uid for uid, m in before["INBOX"].items() if m.internaldate < ago(days=365)}
    policies = {"archive": {"protect": [], "rules": [
        {"name": "file", "folders": ["INBOX"], "older_than": "365d",
         "action": {"move_to": "Archive/2023"}}]},
        "archived": {"protect": [], "rules": [
            {"name": "purge", "folders": ["Archive/*"], "older_than": "365d",
             "action": "delete", "allow_empty_folder": True}]}}
    monkeypatch.setenv("CYRUS_ADMIN_PW", cyrus.admin_password)
    account = {**_account(cyrus), "name": user.name, "username": user.name,
               "credentials": "cyrus-admin"}
    credentials = {"cyrus-admin": {"username": cyrus.admin, "password_env": "CYRUS_ADMIN_PW",
                                   "login_as": "authzid"}}

    def policy(name: str) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"),
                                        "policies": policies, "credentials": credentials,
                                        "accounts": [{**account, "policy": name}]}))
        return path

    report = run(policy("archive"), capsys)
    assert report["accounts"][0]["status"] == "ok", report["accounts"][0].get("error")
    after = user.folder_state()
    target = cyrus.user_folder("Archive/2023")
    assert sorted(m.sha256 for m in after[target].values()) == sorted(
        m.sha256 for uid, m in before["INBOX"].items() if uid in old)
    assert set(after["INBOX"]) == set(before["INBOX"]) - set(old)
    again = planned(run(policy("archived"), capsys, "--dry-run"))
    assert [(x[0], x[3]) for x in again[user.name]] == [("Archive/2023", "purge")] * len(old)


def test_usage_without_a_quota_root_sums_the_folders(
    tmp_path: Path, cyrus: Cyrus, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # No SETQUOTA: Cyrus answers GETQUOTAROOT INBOX with no root; the agent sums sizes.
    user = cyrus.add_user(f"u{next(_names)}noquota")
    user.append("INBOX", [SeedMessage(received=ago(days=3), size=3000)])
    user.append("Trash", [SeedMessage(received=ago(days=3), size=1000)])
    path = with_admin(tmp_path, cyrus, [user], monkeypatch)
    capsys.readouterr()
    assert main(["usage", "--format", "json", "-c", str(path)]) == 0
    rows = json.loads(capsys.readouterr().out)
    row = (rows["accounts"] if isinstance(rows, dict) else rows)[0]
    assert (row["source"], row["usage_bytes"], row["limit_bytes"], row["messages"]) == (
        "sum", 4000, None, 2)


def test_pop3_admin_auth_plain_plans_and_deletes_what_user_logins_plan(
    tmp_path: Path, cyrus: Cyrus, users: list[CyrusUser],
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    # POP3 AUTH PLAIN with an initial response, authzid = the user (the agent's own lines:
    # poplib has no SASL), against Cyrus's pop3d.
    require("Cyrus POP3", cyrus_pop3_unavailable_reason())
    before = {u.name: u.folder_state()["INBOX"] for u in users}
    own = planned(run(per_user(tmp_path / "own", cyrus, users, monkeypatch, pop3=True),
                      capsys, "--dry-run"))
    admin_path = with_admin(tmp_path / "admin", cyrus, users, monkeypatch, pop3=True)
    assert planned(run(admin_path, capsys, "--dry-run")) == own
    assert [len(own[u.name]) for u in users] == [1, 2]  # i+1 older than a year (Date header)
    report = run(admin_path, capsys)
    assert [a["status"] for a in report["accounts"]] == ["ok", "ok"]
    assert planned(report) == own
    for u in users:
        # Exactly the old ones are gone: what is left is the 60-day and the new messages.
        after = u.folder_state()["INBOX"]
        assert set(after) < set(before[u.name]) and len(after) == len(before[u.name]) - len(
            own[u.name])
        assert all(m.internaldate > ago(days=365) for m in after.values())


def test_quota_cleanup_through_the_admin_reaches_its_target_in_cyrus_quota(
    tmp_path: Path, cyrus: Cyrus, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # 88 KiB of a 100 KiB STORAGE quota, clean_above 80% to 50%: the oldest go, and
    # Cyrus's own QUOTA after the run (it drops at UID EXPUNGE) is what the plan projected.
    user = cyrus.add_user(f"u{next(_names)}full", quota_kib=100)
    user.append("INBOX", [SeedMessage(received=ago(days=100 + i), flags=SEEN, size=9000)
                          for i in range(10)])
    user.append("INBOX", [SeedMessage(received=ago(days=1), size=500)])
    path = with_admin(tmp_path, cyrus, [user], monkeypatch)
    body = yaml.safe_load(path.read_text())
    body["policies"]["std"] = {"protect": [], "quota": {"clean_above": "80%", "clean_to": "50%"},
                               "rules": [{"name": "full", "when": "over_quota",
                                          "folders": ["INBOX"], "action": "delete"}]}
    path.write_text(yaml.safe_dump(body))
    used_before, limit = user.usage()
    account = run(path, capsys)["accounts"][0]
    assert account["status"] == "ok"
    assert (account["usage_bytes"], account["limit_bytes"]) == (used_before, limit)
    used_after, _ = user.usage()
    assert used_after <= limit // 2 < used_before
    # Cyrus counts whole KiB: the projection is the same to within one.
    assert abs(account["usage_after_bytes"] - used_after) < 1024
    assert [x["rule"] for x in account["actions"]] == ["full"] * 5



@pytest.fixture(scope="module")
def cyrus_domains() -> Iterator[Cyrus]:
    """A Cyrus with ``virtdomains: userid`` (users ``ann@fleet.example.org``), Debian layout."""
    require("Cyrus IMAP", cyrus_unavailable_reason())
    with Cyrus(virtdomains=True) as server:
        yield server


def test_virtual_domains_admin_and_policy_by_plan_what_user_logins_plan(
    tmp_path: Path, cyrus_domains: Cyrus, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An ISP's Cyrus: email-style users in two domains, a global admin acting for all,
    policy_by by address; the same plans as the users' own logins."""
    cy = cyrus_domains
    users = []
    for i, name in enumerate(("ann@fleet.example.org", "ben@fleet.example.org",
                              "cat@vip.example.com")):
        user = cy.add_user(name, quota_kib=QUOTA_KIB)
        user.append("INBOX", [
            *(SeedMessage(received=ago(days=400 + d), flags=SEEN, size=2000) for d in range(i + 1)),
            *(SeedMessage(received=ago(days=60), flags=SEEN, size=2000) for _ in range(2)),
            SeedMessage(received=ago(days=1), size=2000)])
        users.append(user)
    own_path = per_user(tmp_path / "own", cy, users, monkeypatch)
    body = yaml.safe_load(own_path.read_text())
    body["accounts"][2]["policy"] = "short"
    own_path.write_text(yaml.safe_dump(body))
    own = planned(run(own_path, capsys, "--dry-run"))
    admin_path = with_admin(tmp_path / "admin", cy, users, monkeypatch)
    body = yaml.safe_load(admin_path.read_text())
    body["sources"][0]["policy_by"] = [{"match": "*@vip.example.com", "policy": "short"}]
    admin_path.write_text(yaml.safe_dump(body))
    report = run(admin_path, capsys, "--dry-run")
    assert [a["status"] for a in report["accounts"]] == ["ok"] * 3
    assert planned(report) == own
    # ann 1 and ben 2 older than a year; cat (vip: 30 days) 3 + the two of 60 days.
    assert [len(own[u.name]) for u in users] == [1, 2, 5]
    assert {x[3] for x in own["cat@vip.example.com"]} == {"month"}


def test_a_shared_folder_named_like_a_users_own_is_never_touched(
    tmp_path: Path, cyrus: Cyrus, users: list[CyrusUser],
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """Debian's layout has the shared namespace at "" next to the user's "INBOX.": a
    public top-level ``Trash`` and the user's ``INBOX.Trash`` are both shown as Trash.
    Which one a rule means is unknowable, so neither is touched (the INBOX still is).
    Upstream's layout lists the public one as ``Shared Folders/Trash``: no clash."""
    with cyrus.admin_session() as admin:
        assert admin.create("Trash")[0] == "OK"
        assert admin.setacl("Trash", "anyone", "lrs")[0] == "OK"
    try:
        own = planned(run(per_user(tmp_path, cyrus, users, monkeypatch), capsys, "--dry-run"))
    finally:
        with cyrus.admin_session() as admin:
            admin.setacl("Trash", cyrus.admin, "lrswipkxtecda")
            assert admin.delete("Trash")[0] == "OK"
    expected = [("INBOX", "old")] + ([("Trash", "trash")] if cyrus.altnamespace else [])
    assert [sorted({(x[0], x[3]) for x in own[u.name]}) for u in users] == [expected] * 2
