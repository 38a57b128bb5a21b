"""POP3 accounts end to end: policy file, runner / ``retention run``, journal, archive.

The age tests call ``retention.run.account.run_account`` in-process with an injected clock (no
sleeping): POP3 age is the agent's first sighting, so moving ``now`` forward is the only
way to age a message. The rest go through ``python -m retention run --format json`` as a
user would, with ``age_by: sent`` (the Date header, read with TOP) so no clock is needed.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from retention.run.account import run_account
from retention.testing.dovecot import MailUser, SeedMessage
from tests.integration.helpers import PolicyFile, ago, env_var_for, patched_env

KiB = 1024
T0 = datetime.now(UTC).replace(microsecond=0)


def add_pop3(pf: PolicyFile, user: MailUser, *, name: str = "pop", security: str = "tls",
             port: int | None = None, **fields: Any) -> str:
    if port is not None:
        fields["port"] = port
    return pf.add_pop3(user, name=name, security=security, **fields)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def inbox(user: MailUser) -> list[str]:
    """SHA-256 of every INBOX message, in UID order."""
    return [m.sha256 for _, m in sorted(user.folder_state()["INBOX"].items())]


def run_at(pf: PolicyFile, now: datetime, *, dry_run: bool = False) -> Any:
    config = pf.load()
    with patched_env(pf.env):
        return run_account(config, config.accounts[0], dry_run=dry_run, now=now,
                           sleep=lambda _s: None)


def maildir_files(root: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and p.parent.name in ("cur", "new")]


# --- the first-seen clock ------------------------------------------------------------------


def test_leave_on_server_for_n_days(mail_user, tmp_path):
    """Thunderbird's "leave messages on the server for at most 14 days", from the server side."""
    pf = PolicyFile(tmp_path, {"p": {"rules": [
        {"name": "leave-14d", "older_than": "14d", "action": "delete"},
    ]}})
    add_pop3(pf, mail_user)
    # Their Date headers and INTERNALDATEs are years old: only the first sighting counts.
    first = mail_user.seed("INBOX", [SeedMessage(received=ago(days=900)) for _ in range(3)])
    dry = run_at(pf, T0, dry_run=True)  # the dry-run records the first sightings...
    assert dry.status == "ok", dry.error
    assert dry.results == ()
    assert inbox(mail_user) == [sha(r) for r in first]  # ...and changes nothing else
    assert (tmp_path / "state" / "observations.sqlite3").exists()

    second = mail_user.seed("INBOX", [SeedMessage(received=ago(days=900)) for _ in range(2)])
    young = run_at(pf, T0 + timedelta(days=5))
    assert young.status == "ok", young.error
    assert young.results == ()
    assert young.plan is not None and young.plan.actions == ()

    # Each run opens the ledger afresh (a restart in between changes nothing).
    old = run_at(pf, T0 + timedelta(days=14, seconds=1))
    assert old.status == "ok", old.error
    assert [r.result for r in old.results] == ["done"] * 3
    assert all(r.action.message.ref.uid is None and r.action.message.ref.uidl
               for r in old.results)
    assert inbox(mail_user) == [sha(r) for r in second]
    assert old.usage_after_bytes == sum(len(r) for r in second)

    later = run_at(pf, T0 + timedelta(days=19, seconds=1))
    assert [r.result for r in later.results] == ["done"] * 2
    assert inbox(mail_user) == []


def test_quota_mode_frees_oldest_first_to_clean_to(mail_user, tmp_path):
    size = 10 * KiB
    pf = PolicyFile(tmp_path, {"p": {
        "quota": {"limit": 100 * size, "clean_above": "90%", "clean_to": "75%"},
        "rules": [{"name": "make-room", "when": "over_quota", "action": "delete"}],
    }})
    add_pop3(pf, mail_user)
    days = [mail_user.seed("INBOX", [SeedMessage(received=ago(days=1), size=size)
                                     for _ in range(31)])]
    run_at(pf, T0, dry_run=True)
    days.append(mail_user.seed("INBOX", [SeedMessage(received=ago(days=1), size=size)
                                         for _ in range(31)]))
    run_at(pf, T0 + timedelta(days=1), dry_run=True)
    days.append(mail_user.seed("INBOX", [SeedMessage(received=ago(days=1), size=size)
                                         for _ in range(31)]))
    # 93 messages of 10 KiB = 93% of the limit: clean to 75% by deleting the 18 oldest.
    res = run_at(pf, T0 + timedelta(days=2))
    assert res.status == "ok", res.error
    assert res.usage_bytes == 93 * size and res.limit_bytes == 100 * size
    assert [r.result for r in res.results] == ["done"] * 18
    assert res.usage_after_bytes == 75 * size
    everything = [sha(r) for day in days for r in day]
    assert inbox(mail_user) == everything[18:]


# --- through the command line --------------------------------------------------------------


def sent_policy(action: Any) -> dict[str, Any]:
    return {"p": {"rules": [
        {"name": "old-mail", "older_than": "30d", "age_by": "sent", "action": action},
    ]}}


def test_cli_dry_run_then_run_reports_pop3_actions(mail_user, tmp_path):
    old = mail_user.seed("INBOX", [SeedMessage(received=ago(days=400)) for _ in range(2)])
    new = mail_user.seed("INBOX", [SeedMessage(received=ago(days=2))])
    pf = PolicyFile(tmp_path, sent_policy("delete"))
    add_pop3(pf, mail_user, security="starttls")
    before = mail_user.folder_state()
    dry = pf.run(dry_run=True)
    assert dry.code == 0, dry
    acct = dry.account("pop")
    assert acct["protocol"] == "pop3" and acct["status"] == "ok"
    assert acct["usage_bytes"] == sum(len(r) for r in old + new)
    assert len(acct["actions"]) == 2
    for a in acct["actions"]:
        assert a["uid"] is None and a["uidl"] and a["folder"] == "INBOX"
        assert a["action"] == "delete" and a["clock"] == "sent" and a["result"] == "planned"
    assert mail_user.folder_state() == before  # flags included
    real = pf.run()
    assert real.code == 0, real
    assert [a["result"] for a in real.account("pop")["actions"]] == ["done", "done"]
    assert inbox(mail_user) == [sha(r) for r in new]


def test_archive_then_delete_is_byte_identical(mail_user, tmp_path):
    raws = mail_user.seed("INBOX", [
        SeedMessage(received=ago(days=400), size=20 * KiB),
        SeedMessage(received=ago(days=500), raw=b"From: a@b\r\nDate: Mon, 1 Jan 2024 00:00:00 "
                    b"+0000\r\nSubject: dots\r\n\r\n.\r\n..\r\n.x\r\n" + b"z" * 5000 + b"\r\n"),
    ])
    keep = mail_user.seed("INBOX", [SeedMessage(received=ago(days=1))])
    pf = PolicyFile(tmp_path, sent_policy({"archive": "files"}),
                    extra={"archives": {"files": {"type": "maildir",
                                                  "path": "./archive/{account}"}}})
    add_pop3(pf, mail_user)
    res = pf.run()
    assert res.code == 0, res
    assert [a["result"] for a in res.account("pop")["actions"]] == ["done", "done"]
    assert sorted(sha(b) for b in maildir_files(tmp_path / "archive")) == sorted(
        sha(r) for r in raws)
    assert inbox(mail_user) == [sha(r) for r in keep]


def test_dropped_before_quit_then_next_run_finishes_without_duplicates(mail_user, tmp_path):
    from retention.testing.faultproxy import FaultProxy

    raws = mail_user.seed("INBOX", [SeedMessage(received=ago(days=400 + i), size=8 * KiB)
                                    for i in range(5)])
    keep = mail_user.seed("INBOX", [SeedMessage(received=ago(days=1))])
    before = inbox(mail_user)
    pf = PolicyFile(tmp_path, sent_policy({"archive": "files"}),
                    extra={"archives": {"files": {"type": "maildir",
                                                  "path": "./archive/{account}"}}})
    server = mail_user.server
    with FaultProxy(server.host, server.pop3_port) as proxy:
        add_pop3(pf, mail_user, security="none", port=proxy.port)
        proxy.drop_on(rb"^QUIT", times=None)  # every attempt of this run loses its QUIT
        first = pf.run()
        assert first.code == 1, first
        acct = first.account("pop")
        assert acct["status"] == "error" and acct["error_kind"] == "connect"
        assert inbox(mail_user) == before  # nothing deleted...
        assert len(maildir_files(tmp_path / "archive")) == 5  # ...but safely archived
        proxy.reset()
        second = pf.run()
    assert second.code == 0, second
    assert inbox(mail_user) == [sha(r) for r in keep]
    archived = [sha(b) for b in maildir_files(tmp_path / "archive")]
    assert sorted(archived) == sorted(sha(r) for r in raws)  # each exactly once
    # The second run's report shows the interrupted removals as finished, and the audit
    # history lists each removal exactly once.
    history = pf.cli("history", "--format", "json")
    assert history.code == 0, history
    entries = history.report["entries"]
    assert sorted(e["sha256"] for e in entries) == sorted(sha(r) for r in raws)
    assert all(e["uid"] is None and e["uidl"] and e["action"] == "archive" for e in entries)


def test_uidl_refused_and_wrong_password_fail_only_that_account(mail_user, make_user, tmp_path):
    from retention.testing.faultproxy import FaultProxy, pop3_err

    other = make_user()
    other.seed("INBOX", [SeedMessage(received=ago(days=400))])
    mail_user.seed("INBOX", [SeedMessage(received=ago(days=400))])
    pf = PolicyFile(tmp_path, sent_policy("delete"))
    server = mail_user.server
    with FaultProxy(server.host, server.pop3_port) as proxy:
        proxy.reply_on(rb"^UIDL", pop3_err("not implemented"), times=None)
        add_pop3(pf, mail_user, name="no-uidl", security="none", port=proxy.port)
        add_pop3(pf, other, name="bad-password")
        pf.env[env_var_for("bad-password")] = "not-the-password-123"
        add_pop3(pf, other, name="fine")
        res = pf.run(dry_run=True)
    assert res.code == 1, res
    no_uidl = res.account("no-uidl")
    assert no_uidl["status"] == "error" and no_uidl["error_kind"] == "protocol"
    assert "no safe retention without stable message ids" in no_uidl["error"]
    bad = res.account("bad-password")
    assert bad["status"] == "error" and bad["error_kind"] == "auth"
    assert "not-the-password-123" not in res.stdout + res.stderr
    assert res.account("fine")["status"] == "ok"
    assert len(res.account("fine")["actions"]) == 1


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_usage_command(mail_user, tmp_path, security):
    raws = mail_user.seed("INBOX", [SeedMessage(received=ago(days=3), size=3000)
                                    for _ in range(4)])
    pf = PolicyFile(tmp_path, {"p": {"quota": {"limit": "100KB"}, "rules": []}})
    add_pop3(pf, mail_user, security=security)
    res = pf.usage()
    assert res.code == 0, res
    (acct,) = res.report["accounts"]
    assert acct["usage_bytes"] == sum(len(r) for r in raws) == 12000
    assert acct["limit_bytes"] == 100_000 and acct["source"] == "sum"
    assert acct["ratio"] == pytest.approx(0.12)
