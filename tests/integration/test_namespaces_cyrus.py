"""Other users' and shared folders on a real Cyrus IMAP (review F2), in both layouts.

What Cyrus 3 answers (settled on the rig): Debian's layout ``(("INBOX." ".")) (("user."
".")) (("" "."))``, bob's shared INBOX listed as ``user.bob``, a public folder as
``shared.news``; upstream's (``unixhierarchysep``, ``altnamespace``) ``(("" "/"))
(("Other Users/" "/")) (("Shared Folders/" "/"))``, ``Other Users/bob`` and ``Shared
Folders/shared/news``. None of them carries an attribute. A rule ``*`` run for alice
deletes her old mail and leaves bob's and the public folder's alone; a rule naming bob's
folder exactly acts on it, and on no other. (Cyrus keeps ``\\Seen`` per user: bob's mail
is unread for alice, so the policy protects nothing, as a careless one might.)
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from retention.cli import main
from retention.testing.cyrus import Cyrus, CyrusUser
from retention.testing.dovecot import SeedMessage
from tests.integration.helpers import ago

SEEN = frozenset({"\\Seen"})
_names = itertools.count(1)


def _messages(old: int) -> list[SeedMessage]:
    return [*(SeedMessage(received=ago(days=90), flags=SEEN, size=1500) for _ in range(old)),
            SeedMessage(received=ago(days=1), flags=SEEN, size=1500)]


def _setup(cyrus: Cyrus) -> tuple[CyrusUser, CyrusUser, str, str]:
    """alice and bob, each with 2 old + 1 young INBOX messages; bob's INBOX shared with
    alice (every right), and a public folder everyone may expunge in with 2 old + 1
    young. Returns (alice, bob, bob's INBOX and the public folder as alice names them)."""
    n = next(_names)
    alice, bob = cyrus.add_user(f"alice{n}", trash=None), cyrus.add_user(f"bob{n}", trash=None)
    alice.append("INBOX", _messages(2))
    bob.append("INBOX", _messages(2))
    sep = cyrus.separator
    public = f"public{n}{sep}news"
    with cyrus.admin_session() as admin:
        for folder in (f"public{n}", public):
            assert admin.create(folder)[0] == "OK"
        assert admin.setacl(public, "anyone", "lrswipkxte")[0] == "OK"
    client = bob.imap_client()
    try:
        client.setacl("INBOX", alice.name, "lrswipkxte")
    finally:
        client.logout()
    client = alice.imap_client()
    try:
        shown = {name for _flags, _d, name in client.list_folders()}
        theirs = next(f for f in shown if f.endswith(f"{sep}{bob.name}"))
        public_shown = next(f for f in shown if f.endswith(public))
        for msg in _messages(2):
            client.append(public_shown, msg.build(), flags=msg.imap_flags(),
                          msg_time=msg.received)
    finally:
        client.logout()
    return alice, bob, theirs.replace(sep, "/"), public_shown.replace(sep, "/")


def _count(user: CyrusUser, folder: str) -> int:
    client = user.imap_client()
    try:
        return int(client.folder_status(folder, ["MESSAGES"])[b"MESSAGES"])
    finally:
        client.logout()


def _run(tmp_path: Path, cyrus: Cyrus, alice: CyrusUser, folders: list[str],
         monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    monkeypatch.setenv("ALICE_PW", alice.password)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({
        "state_dir": str(tmp_path / "state"),
        # protect: [] because Cyrus keeps \\Seen per user: bob's mail is unread for alice.
        "policies": {"p": {"protect": [], "rules": [
            {"name": "old", "folders": folders, "older_than": "30d", "action": "delete"}]}},
        "accounts": [{"name": "alice", "protocol": "imap", "host": cyrus.host,
                      "port": cyrus.imap_port, "security": "none", "allow_plaintext": True,
                      "timeout": "60s", "username": alice.name, "password_env": "ALICE_PW",
                      "policy": "p"}],
    }), encoding="utf-8")
    capsys.readouterr()
    code = main(["run", "--format", "json", "-c", str(path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    (acct,) = json.loads(out)["accounts"]
    return dict(acct)


def test_cyrus_star_rule_leaves_other_users_and_shared_folders_alone(
        cyrus: Cyrus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    alice, bob, _theirs, public = _setup(cyrus)
    acct = _run(tmp_path, cyrus, alice, ["*", "%"], monkeypatch, capsys)
    assert [a["folder"] for a in acct["actions"]] == ["INBOX", "INBOX"], acct
    assert _count(alice, "INBOX") == 1
    assert _count(bob, "INBOX") == 3
    assert _count(alice, public.replace("/", cyrus.separator)) == 3


def test_cyrus_a_rule_naming_another_users_folder_acts_on_it_and_on_no_other(
        cyrus: Cyrus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    alice, bob, theirs, public = _setup(cyrus)
    acct = _run(tmp_path, cyrus, alice, ["*", theirs], monkeypatch, capsys)
    done = sorted((a["folder"], a["result"]) for a in acct["actions"])
    assert done == [("INBOX", "done")] * 2 + [(theirs, "done")] * 2, json.dumps(acct)
    assert _count(bob, "INBOX") == 1
    assert _count(alice, "INBOX") == 1
    assert _count(alice, public.replace("/", cyrus.separator)) == 3  # not named: untouched
