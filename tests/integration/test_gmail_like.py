"""Gmail semantics on a Dovecot set up like Gmail where it can be: ``[Gmail]/Trash`` with
``\\Trash``, ``[Gmail]/All Mail`` with ``\\All``, one message in two folders (COPY keeps
Dovecot's X-GUID, standing in for X-GM-MSGID), and ``provider: gmail`` on the account:
delete = move to Trash and expunge there by UID; a message is removed and counted once;
All Mail is only touched when named; the report says the quota is shared."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from retention.testing.dovecot import Dovecot, MailUser, SeedMessage
from tests.integration.helpers import SEEN, PolicyFile, ago, sha256

TRASH, ALL = "[Gmail]/Trash", "[Gmail]/All Mail"


@pytest.fixture(scope="module")
def gmail_dovecot(dovecot_factory: Callable[..., Dovecot]) -> Dovecot:
    return dovecot_factory(gmail=True)


_SUBJECT: dict[str, str] = {}  # sha256 of a seeded message -> its subject


def _seeded(dc: Dovecot, name: str) -> tuple[MailUser, list[bytes]]:
    user = dc.add_user(name)
    seeds = [SeedMessage(received=ago(days=90), flags=SEEN, subject=f"old {i}")
             for i in range(3)]
    seeds.append(SeedMessage(received=ago(days=1), flags=SEEN, subject="young"))
    raws = user.seed("INBOX", seeds)
    for seed, raw in zip(seeds, raws, strict=True):
        _SUBJECT[sha256(raw)] = seed.subject
    client = user.imap_client()
    try:
        client.create_folder("Lists/rust")
        client.select_folder("INBOX")
        uids = sorted(client.search(["ALL"]))
        client.copy(uids[:1], "Lists/rust")  # the oldest message, also labelled Lists/rust
        client.copy(uids, ALL)  # All Mail shows every message
    finally:
        client.logout()
    return user, raws


def _subjects(state: dict, folder: str) -> list[str]:
    return sorted(_SUBJECT[m.sha256] for m in state.get(folder, {}).values())


def test_delete_goes_through_trash_and_each_message_once(gmail_dovecot: Dovecot,
                                                         tmp_path: Path) -> None:
    user, _ = _seeded(gmail_dovecot, "gm_user")
    pf = PolicyFile(tmp_path, {"p": {"rules": [
        {"name": "old", "older_than": "30d", "folders": ["INBOX", "Lists/*"],
         "action": "delete"},
        {"name": "everything", "older_than": "30d", "folders": ["*"], "action": "delete"},
    ]}})
    pf.add_imap(user, provider="gmail", ca_file=str(gmail_dovecot.ca_file))
    dry = pf.run(dry_run=True)
    acct = dry.account(user.name.replace("_", "-"))
    # Three old messages, one of them shown in two folders: three deletions, not four.
    assert len(acct["actions"]) == 3, dry
    assert {a["folder"] for a in acct["actions"]} == {"INBOX"}
    assert any("counted once" in w for w in acct["warnings"])
    assert any("shared with Google Drive and Google Photos" in w for w in acct["warnings"])
    # Wildcards never reach All Mail (\All): only a rule naming it could.
    assert all(a["folder"] != ALL for a in acct["actions"])

    result = pf.run()
    assert result.code == 0, result
    acct = result.account(user.name.replace("_", "-"))
    assert [a["result"] for a in acct["actions"]] == ["done"] * 3
    state = user.folder_state()
    assert _subjects(state, "INBOX") == ["young"]
    assert state.get(TRASH, {}) == {}  # moved there, then expunged there by UID
    assert len(state[ALL]) == 4  # untouched
    gmail_dovecot.wait_for_log(f"imap({user.name})")


def test_a_copy_kept_elsewhere_keeps_the_message(gmail_dovecot: Dovecot,
                                                 tmp_path: Path) -> None:
    user, _ = _seeded(gmail_dovecot, "gm_keep")
    pf = PolicyFile(tmp_path, {"p": {"rules": [
        {"name": "lists", "older_than": "30d", "folders": ["Lists/*"], "action": "delete",
         "allow_empty_folder": True},
        {"name": "inbox-keep", "older_than": "9999d", "folders": ["INBOX"],
         "action": "delete"},
    ]}})
    pf.add_imap(user, provider="gmail", ca_file=str(gmail_dovecot.ca_file))
    result = pf.run()
    assert result.code == 0, result
    acct = result.account(user.name.replace("_", "-"))
    # Deleting it from Lists/rust on Gmail would delete it from INBOX too: kept.
    assert acct["actions"] == []
    assert any("kept in another label folder" in w for w in acct["warnings"])
    assert _subjects(user.folder_state(), "Lists/rust") == ["old 0"]


def test_all_mail_is_cleaned_when_named(gmail_dovecot: Dovecot, tmp_path: Path) -> None:
    user, _ = _seeded(gmail_dovecot, "gm_all")
    pf = PolicyFile(tmp_path, {"p": {"rules": [
        {"name": "all", "older_than": "30d", "folders": ["\\All", "INBOX", "Lists/*"],
         "action": "delete"},
    ]}})
    pf.add_imap(user, provider="gmail", ca_file=str(gmail_dovecot.ca_file))
    result = pf.run()
    assert result.code == 0, result
    acct = result.account(user.name.replace("_", "-"))
    assert len(acct["actions"]) == 3  # three messages, whatever folders show them
    state = user.folder_state()
    assert state.get(TRASH, {}) == {}
