"""State belongs to a mailbox, not to a name (issue 8, review F4), on a real Dovecot.

A run is killed right after its archive copies were verified (``journal:verified``), so
the next run's recovery would delete the sources. Before it runs:

* the account entry is edited to reach another user whose INBOX has the same UIDVALIDITY
  and UIDs: recovery must not touch that mailbox (before: it expunged messages that were
  never archived);
* the user flags one of the messages: recovery leaves it (protected now);
* the admin removes the rule: recovery finishes nothing.

Plus the lock: two entries with different names for one mailbox never run at once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from retention.errors import AccountLocked
from retention.state import StateDir
from retention.state.journal import Journal
from retention.testing.dovecot import MailUser, SeedMessage
from tests.integration.helpers import PolicyFile, ago, env_var_for

POLICY = {"standard": {"protect": ["flagged"], "rules": [
    {"name": "old", "folders": ["INBOX"], "older_than": "365d",
     "action": {"archive": "vault"}}]}}


def _seed_old(user: MailUser) -> list[bytes]:
    return user.seed("INBOX", [SeedMessage(received=ago(days=400 + i), size=2000,
                                           subject=f"old {i}", flags=frozenset({"\\Seen"}))
                               for i in range(3)]
                     + [SeedMessage(received=ago(days=1), size=1000, subject="new",
                                    flags=frozenset({"\\Seen"}))])


def _policy_file(root: Path, user: MailUser) -> PolicyFile:
    pf = PolicyFile(root, {k: {**v, "rules": list(v["rules"])} for k, v in POLICY.items()})
    pf.extra = {"archives": {"vault": {"type": "mbox", "path": "./archive/{account}.mbox"}}}
    pf.add_imap(user, name="acct")
    return pf


def _killed_after_verified(tmp_path: Path, make_user) -> tuple[PolicyFile, MailUser]:
    control = make_user()
    _seed_old(control)
    cpf = _policy_file(tmp_path / "control", control)
    log = tmp_path / "steps.log"
    assert cpf.run(env={"RETENTION_TEST_STEP_LOG": str(log),
                        "RETENTION_TEST_HOOKS": "1"}).code == 0
    steps = [line.split(" ", 1)[1] for line in log.read_text().splitlines()]
    n = steps.index("journal:verified") + 1
    user = make_user()
    _seed_old(user)
    pf = _policy_file(tmp_path / "real", user)
    killed = pf.run(env={"RETENTION_TEST_CRASH_AFTER": str(n), "RETENTION_TEST_HOOKS": "1"})
    assert killed.code == -9, killed
    with Journal.open(pf.directory / "state" / "journal.sqlite3") as j:
        assert {r.state for r in j.open_rows("acct")} == {"verified"}
    assert len(user.folder_state()["INBOX"]) == 4  # nothing deleted yet
    return pf, user


def _uidvalidity(user: MailUser) -> int:
    client = user.imap_client()
    try:
        return int(client.select_folder("INBOX", readonly=True)[b"UIDVALIDITY"])
    finally:
        client.logout()


def test_repointed_entry_never_inherits_the_old_mailboxs_rows(tmp_path, make_user):
    pf, user1 = _killed_after_verified(tmp_path, make_user)
    user2 = make_user()
    # Recent mail: the policy chooses none of it, so any removal would be recovery's.
    user2.seed("INBOX", [SeedMessage(received=ago(days=2), size=1500, subject=f"keep {i}",
                                     flags=frozenset({"\\Seen"})) for i in range(4)])
    user2.server.doveadm("mailbox", "update", "-u", user2.name, "--uid-validity",
                         str(_uidvalidity(user1)), "INBOX")
    assert _uidvalidity(user2) == _uidvalidity(user1)
    before = user2.folder_state()["INBOX"]
    pf.accounts[0]["username"] = user2.name
    pf.env[env_var_for("acct")] = user2.password
    pf.write()
    result = pf.run()
    assert result.code == 0, result
    assert user2.folder_state()["INBOX"] == before  # not one message of user2 touched
    assert len(user1.folder_state()["INBOX"]) == 4  # and user1's are left alone too
    with Journal.open(pf.directory / "state" / "journal.sqlite3") as j:
        assert j.open_rows("acct") == []
        assert j.removals(account="acct") == []
    # Pointed back at user1, a later run archives and removes user1's old mail normally.
    pf.accounts[0]["username"] = user1.name
    pf.env[env_var_for("acct")] = user1.password
    pf.write()
    assert pf.run().code == 0
    assert len(user1.folder_state()["INBOX"]) == 1


def test_recovery_leaves_a_message_flagged_since_the_crash(tmp_path, make_user):
    pf, user = _killed_after_verified(tmp_path, make_user)
    uids = sorted(user.folder_state()["INBOX"])
    client = user.imap_client()
    try:
        client.select_folder("INBOX")
        client.add_flags([uids[0]], [b"\\Flagged"])
    finally:
        client.logout()
    result = pf.run()
    assert result.code == 0, result
    left = user.folder_state()["INBOX"]
    assert uids[0] in left and len(left) == 2  # the flagged one and the recent one


def test_recovery_finishes_nothing_for_a_removed_rule(tmp_path, make_user):
    pf, user = _killed_after_verified(tmp_path, make_user)
    pf.policies["standard"] = {**pf.policies["standard"], "rules": []}
    pf.write()
    result = pf.run()
    assert result.code == 0, result
    assert len(user.folder_state()["INBOX"]) == 4


def test_two_names_for_one_mailbox_share_a_lock(tmp_path):
    state = StateDir(tmp_path / "state")
    mailbox = "imap://alice@mail.example:993"
    with state.lock("alice", mailbox):
        with pytest.raises(AccountLocked, match="mailbox"), state.lock("alice-2", mailbox):
            pass
        with state.lock("bob", "imap://bob@mail.example:993"):
            pass  # another mailbox: not excluded


def test_journal_schema_1_is_migrated_and_its_rows_claimed(tmp_path):
    import sqlite3

    path = tmp_path / "journal.sqlite3"
    with Journal.open(path) as j:
        pass
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE actions DROP COLUMN mailbox")
    conn.execute("PRAGMA user_version=1")
    conn.execute(
        "INSERT INTO actions (run_id, account, msg_key, folder, uidvalidity, uid, size, rule,"
        " action, state, created, updated) VALUES ('r', 'a', 'k', 'INBOX', 1, 1, 10, 'old',"
        " 'delete', 'planned', '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00')")
    conn.commit()
    conn.close()
    with Journal.open(path) as j:
        j.bind_mailbox("a", "imap://u@h:993")
        assert [r.uid for r in j.open_rows("a")] == [1]  # claimed by the first bind
    with Journal.open(path) as j:
        j.bind_mailbox("a", "imap://other@h:993")
        assert j.open_rows("a") == [] and [r.uid for r in j.foreign_rows("a")] == [1]
