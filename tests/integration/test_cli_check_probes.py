"""``retention check --connect`` and ``check --archives`` on a real Dovecot.

``--connect`` logs in to every account read-only: a wrong password is reported for that
account (exit 1) and the others are still checked; nothing changes on the server and no
state is written. ``--archives`` re-reads the archived copies of the audit history: a
tampered byte is found (exit 1), an intact archive passes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from retention.testing.dovecot import MailUser, SeedMessage
from tests.integration.helpers import PolicyFile, ago

SEEN = frozenset({"\\Seen"})
OLD_INBOX = {"p": {"rules": [
    {"name": "old", "folders": ["INBOX"], "older_than": "1y", "action": "delete"}]}}
ARCHIVE_OLD = {"p": {"rules": [
    {"name": "old", "folders": ["INBOX"], "older_than": "1y", "action": {"archive": "vault"}}]}}


def _seed(user: MailUser, n: int = 2) -> None:
    user.seed("INBOX", [SeedMessage(received=ago(days=800), flags=SEEN, size=2500)
                        for _ in range(n)] + [SeedMessage(received=ago(days=1), size=1500)])


def test_connect_reports_a_wrong_password_and_still_checks_the_others(
        tmp_path: Path, make_user: Callable[..., MailUser]) -> None:
    bad, good = make_user(), make_user()
    for u in (bad, good):
        _seed(u)
    before = {u.name: u.folder_state() for u in (bad, good)}
    pf = PolicyFile(tmp_path, OLD_INBOX)
    wrong = "Wr0ng-Pr0be-Z9q"
    bad_name = pf.add_imap(bad, password=wrong)  # first: the one after it is still checked
    good_name = pf.add_imap(good)
    pop_name = pf.add_pop3(good, name="good-pop3")
    vault = make_user()  # an IMAP archive target is logged in to as well
    pf.env["VAULT_PASSWORD"] = vault.password
    pf.extra = {"archives": {"vault": {
        "type": "imap", "host": vault.server.host, "port": vault.server.imaps_port,
        "security": "tls", "ca_file": str(vault.server.ca_file), "username": vault.name,
        "password_env": "VAULT_PASSWORD"}}}
    pf.write()

    result = pf.cli("check", "--connect")

    assert result.code == 1, str(result)
    assert "Traceback" not in result.stderr
    lines = {line.strip().split(":")[0]: line for line in result.stdout.splitlines()
             if line.startswith("  ")}
    assert "FAILED (auth)" in lines[bad_name], str(result)
    assert f"{good_name}: imap " in lines[good_name] and ": ok; has " in lines[good_name]
    for cap in ("UIDPLUS", "MOVE", "QUOTA", "SPECIAL-USE"):
        assert cap in lines[good_name].split("has ", 1)[1], str(result)
    assert "quota: " in result.stdout and "\\Trash" in result.stdout
    assert f"{pop_name}: pop3 " in lines[pop_name] and ": ok; has UIDL" in lines[pop_name]
    assert bad_name in result.stderr and good_name not in result.stderr
    assert pop_name not in result.stderr
    assert "archive vault: imap " in result.stdout and ": ok; has UIDPLUS" in lines["archive vault"]
    assert vault.password not in result.stdout + result.stderr
    for text in (result.stdout, result.stderr):
        assert wrong not in text and good.password not in text
    # Read-only: the mailboxes are as they were, and no state folder was made.
    assert {u.name: u.folder_state() for u in (bad, good)} == before
    assert not (tmp_path / "state").exists()

    only_good = pf.cli("check", "--connect", "--account", good_name)
    assert only_good.code == 0, str(only_good)
    assert bad_name not in only_good.stdout.split("connect (read-only logins):")[1]


@pytest.mark.parametrize("kind", ["maildir", "mbox"])
def test_archives_detects_a_tampered_byte(tmp_path: Path, mail_user: MailUser,
                                          kind: str) -> None:
    _seed(mail_user, 3)
    pf = PolicyFile(tmp_path, ARCHIVE_OLD)
    target = ({"type": "maildir", "path": "./archive/md"} if kind == "maildir"
              else {"type": "mbox", "path": "./archive/{account}.mbox"})
    pf.extra = {"archives": {"vault": target}}
    name = pf.add_imap(mail_user)
    ran = pf.run()
    assert ran.code == 0, str(ran)
    assert len(ran.account(name)["actions"]) == 3

    intact = pf.cli("check", "--archives")
    assert intact.code == 0, str(intact)
    assert f"{name}: 3 copies intact" in intact.stdout, str(intact)

    files = sorted(p for p in (tmp_path / "archive").rglob("*") if p.is_file())
    victim = files[0]
    data = bytearray(victim.read_bytes())
    at = data.index(b"\n\n") + 5 if kind == "mbox" else len(data) - 3  # inside a body
    data[at] ^= 0x01  # one bit of one byte
    victim.write_bytes(bytes(data))

    tampered = pf.cli("check", "--archives")
    assert tampered.code == 1, str(tampered)
    assert f"{name}: FAILED: 1 of 3 copies not intact" in tampered.stdout, str(tampered)
    assert "SHA-256" in tampered.stdout and "differs" in tampered.stdout
    assert name in tampered.stderr and "Traceback" not in tampered.stderr
