"""``retention restore`` on a real Dovecot, from every archive type.

A real run archives old mail (mbox plain/gzip/zstd, Maildir, a second Dovecot user over
IMAP) and deletes it; ``restore`` puts every message back into its folder byte-identical,
with its flags and INTERNALDATE; a second restore adds nothing; the next run keeps the
restored messages (``restore_grace``) and says why. POP3: restore refuses, and
``--export-mbox`` writes the selection to an mbox.
"""

from __future__ import annotations

import json
import mailbox
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from retention.testing.dovecot import MailUser, SeedMessage
from tests.integration.helpers import PolicyFile, ago
from tests.integration.test_archive_imap import NASTY, target_for

POLICY = {"standard": {"protect": [], "rules": [
    {"name": "old-mail", "folders": ["INBOX", "Lists/*"], "older_than": "365d",
     "allow_empty_folder": True, "action": {"archive": "vault"}}]}}
FLAGS = [set(), {"\\Seen"}, {"\\Seen", "\\Answered"}, {"\\Flagged"}, {"\\Seen", "\\Draft"}]


def seed_old(user: MailUser) -> None:
    for folder in ("INBOX", "Lists/python"):
        user.seed(folder, [
            SeedMessage(received=ago(days=400 + 31 * i), flags=FLAGS[i % len(FLAGS)],
                        subject=f"old {folder} {i}", body=NASTY[i % len(NASTY)] + b"y" * i)
            for i in range(6)
        ])
        user.seed(folder, [SeedMessage(received=ago(days=5), subject="young")])


def content(state: dict[str, Any]) -> Counter[tuple[str, str, frozenset[str], Any]]:
    """(folder, sha256, flags, INTERNALDATE) of every message: what restore must bring back."""
    return Counter((f, m.sha256, m.flags, m.internaldate)
                   for f, msgs in state.items() for m in msgs.values())


@pytest.mark.parametrize("kind", ["mbox", "mbox-gzip", "mbox-zstd", "maildir", "imap"])
def test_restore_is_exact_idempotent_and_survives_the_next_run(
    tmp_path: Path, make_user: Any, kind: str
) -> None:
    user = make_user()
    vault = make_user() if kind == "imap" else None
    seed_old(user)
    before = content(user.folder_state())
    pf = PolicyFile(tmp_path, POLICY)
    pf.extra = {"archives": {"vault": target_for(kind, pf, vault)}}
    name = pf.add_imap(user)

    run = pf.run()
    assert run.code == 0, run
    archived = [a for a in run.account(name)["actions"] if a["result"] == "done"]
    assert len(archived) == 12
    assert content(user.folder_state()) != before

    dry = pf.cli("restore", "--account", name, "--dry-run", "--format", "json")
    assert dry.code == 0, dry
    assert Counter(m["status"] for m in json.loads(dry.stdout)["messages"]) == {
        "would_restore": 12}
    assert content(user.folder_state()) != before  # a dry-run restores nothing

    first = pf.cli("restore", "--account", name, "--format", "json")
    assert first.code == 0, first
    assert Counter(m["status"] for m in json.loads(first.stdout)["messages"]) == {
        "restored": 12}
    assert content(user.folder_state()) == before  # bytes, flags, INTERNALDATE, folder
    hist = json.loads(pf.cli("history", "--format", "json").stdout)["entries"]
    assert Counter(e["action"] for e in hist) == {"archive": 12, "restore": 12}

    again = pf.cli("restore", "--account", name, "--format", "json")
    assert again.code == 0, again
    assert Counter(m["status"] for m in json.loads(again.stdout)["messages"]) == {
        "already_restored": 12}
    assert content(user.folder_state()) == before

    nxt = pf.run()
    assert nxt.code == 0, nxt
    acct = nxt.account(name)
    assert acct["actions"] == []
    assert len(acct["exempted"]) == 12
    assert all("restore_grace" in e["reason"] for e in acct["exempted"])
    assert content(user.folder_state()) == before
    text = pf.run(dry_run=True, fmt="text")
    assert "restored from the archive on" in text.stdout


def test_restore_selection_to_folder_and_present_messages(tmp_path: Path,
                                                          make_user: Any) -> None:
    user = make_user()
    seed_old(user)
    pf = PolicyFile(tmp_path, POLICY)
    pf.extra = {"archives": {"vault": target_for("mbox-gzip", pf, None)}}
    name = pf.add_imap(user)
    run = pf.run()
    done = [a for a in run.account(name)["actions"] if a["result"] == "done"]
    pick = [a["message_id"] for a in done[:2]]
    args = ["restore", "--account", name, "--to-folder", "Restored", "--format", "json"]
    for mid in pick:
        args += ["--message-id", mid]
    out = pf.cli(*args)
    assert out.code == 0, out
    rows = json.loads(out.stdout)["messages"]
    assert [r["status"] for r in rows] == ["restored", "restored"]
    assert {r["message_id"] for r in rows} == set(pick)
    assert len(user.folder_state()["Restored"]) == 2
    none = pf.cli("restore", "--account", name, "--run", "no-such-run")
    assert none.code == 0 and "no archived messages match" in none.stdout


def test_pop3_restore_refuses_and_exports_mbox(tmp_path: Path, make_user: Any) -> None:
    user = make_user()
    user.seed("INBOX", [SeedMessage(received=ago(days=400), subject=f"p{i}") for i in range(3)])
    pol = {"standard": {"rules": [{"name": "all", "folders": ["INBOX"], "older_than": "365d",
                                   "age_by": "sent", "allow_empty_folder": True,
                                   "action": {"archive": "vault"}}]}}
    pf = PolicyFile(tmp_path, pol)
    pf.extra = {"archives": {"vault": target_for("maildir", pf, None)}}
    name = pf.add_pop3(user)
    run = pf.run()
    assert run.code == 0, run
    originals = {a["message_id"] for a in run.account(name)["actions"]
                 if a["result"] == "done"}
    assert len(originals) == 3
    refused = pf.cli("restore", "--account", name)
    assert refused.code == 2, refused
    assert "POP3" in refused.stderr and "--export-mbox" in refused.stderr
    out_box = tmp_path / "export.mbox"
    export = pf.cli("restore", "--account", name, "--export-mbox", str(out_box))
    assert export.code == 0, export
    box = mailbox.mbox(str(out_box))
    try:
        assert {m["Message-ID"] for m in box} == originals
    finally:
        box.close()


class Crash(BaseException):
    """Stands for the process dying between the APPEND and its journal entry."""


def test_a_restore_cut_after_the_append_is_never_appended_twice(
    tmp_path: Path, make_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retention.run.restore import Selection, restore
    from retention.state.restores import RESTORED, RestoreLog
    from tests.integration.helpers import patched_env

    user = make_user()
    seed_old(user)
    before = content(user.folder_state())
    pf = PolicyFile(tmp_path, POLICY)
    pf.extra = {"archives": {"vault": target_for("maildir", pf, None)}}
    name = pf.add_imap(user)
    assert pf.run().code == 0
    real_finish = RestoreLog.finish

    def die_on_third(self: Any, row_id: int, state: str, **kw: Any) -> None:
        if state == RESTORED and row_id == 3:
            raise Crash
        real_finish(self, row_id, state, **kw)

    monkeypatch.setattr(RestoreLog, "finish", die_on_third)
    config = pf.load()
    with patched_env(pf.env), pytest.raises(Crash):
        restore(config, config.account(name), Selection())
    monkeypatch.setattr(RestoreLog, "finish", real_finish)

    again = pf.cli("restore", "--account", name, "--format", "json")
    assert again.code == 0, again
    assert Counter(m["status"] for m in json.loads(again.stdout)["messages"]) == {
        "already_restored": 2, "present": 1, "restored": 9}
    assert content(user.folder_state()) == before  # nothing twice
    nxt = pf.run()
    assert nxt.account(name)["actions"] == [] and len(nxt.account(name)["exempted"]) == 12
