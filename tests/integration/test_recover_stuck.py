"""``retention recover`` on a real Dovecot: the escape hatch when recovery is stuck (M9).

A run archives three messages to an IMAP archive account and verifies the copies, then
its connection to the source is cut at ``UID STORE`` (every retry too): the journal keeps
three ``verified`` rows. The operator then removes the IMAP target from the policy (a new
mbox target takes over). From then on recovery cannot re-verify those copies and every run
fails the account, naming ``retention recover``. ``--list`` shows the rows; ``--abandon``
alone changes nothing; ``--abandon --yes`` marks them abandoned without deleting anything;
``history`` lists them; the next run succeeds and archives the messages to the new target.
At no point is a message lost: each is in the source or in an archive.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from retention.archive.mbox import read_all
from retention.testing.dovecot import MailUser, SeedMessage
from retention.testing.faultproxy import FaultProxy
from tests.integration.helpers import PolicyFile, ago, env_var_for, sha256

RULE = {"name": "old", "folders": ["INBOX"], "older_than": "30d", "age_by": "received",
        "allow_empty_folder": True}


def _policy(target: str) -> dict[str, Any]:
    return {"p": {"protect": ["flagged"], "rules": [{**RULE, "action": {"archive": target}}]}}


def _vault(vault: MailUser) -> dict[str, Any]:
    return {"type": "imap", "host": vault.server.host, "port": vault.server.imap_port,
            "security": "none", "allow_plaintext": True, "username": vault.name,
            "password_env": env_var_for("vault"), "folder": "Archive"}


def _mbox_ids(path: Path) -> list[bytes]:
    if not path.exists():
        return []
    return [line.split(b" ", 1)[1] for line in read_all(path).splitlines()
            if line.startswith(b"Message-ID: ")]


def test_stuck_recovery_is_listed_abandoned_and_the_account_runs_again(
    make_user: Any, tmp_path: Path
) -> None:
    user, vault = make_user(), make_user()
    go = user.seed("INBOX", [SeedMessage(received=ago(days=100 + i), flags={"\\Seen"},
                                         message_id=f"<go{i}@stuck>") for i in range(3)])
    keep = user.seed("INBOX", [SeedMessage(received=ago(days=1), message_id="<keep@stuck>")])
    with FaultProxy(user.server.host, user.server.imap_port) as proxy:
        # The account stays behind the proxy throughout (its host and port are part of the
        # mailbox identity); only the first run meets the fault.
        pf = PolicyFile(tmp_path, _policy("vault"), extra={"archives": {"vault": _vault(vault)}})
        pf.env[env_var_for("vault")] = vault.password
        name = pf.add_imap(user, security="none", host="127.0.0.1", port=proxy.port)
        proxy.drop_on(rb"UID STORE", times=None)
        first = pf.run()
        proxy.reset()
        _after_the_cut(pf, name, user, vault, go, keep, first)


def _after_the_cut(pf: PolicyFile, name: str, user: MailUser, vault: MailUser,
                   go: list[bytes], keep: list[bytes], first: Any) -> None:
    mbox = pf.directory / "archive" / "new.mbox"

    def everything_somewhere() -> None:
        source = {m.sha256 for m in user.folder_state()["INBOX"].values()}
        copies = {m.sha256 for f in vault.folder_state().values() for m in f.values()}
        local = _mbox_ids(mbox)
        for i, raw in enumerate(go):
            assert (sha256(raw) in source or sha256(raw) in copies
                    or f"<go{i}@stuck>".encode() in local), f"go{i} lost"
        assert {sha256(r) for r in keep} <= source

    assert first.code == 1, first
    everything_somewhere()
    listed = pf.cli("recover", "--account", name, "--list", "--format", "json")
    assert listed.code == 0, listed
    rows = json.loads(listed.stdout)["open"]
    assert len(rows) == 3 and {r["state"] for r in rows} == {"verified"}, rows

    # The IMAP target leaves the policy (an mbox target takes over).
    pf.policies = _policy("local")
    pf.extra = {"archives": {"local": {"type": "mbox", "path": "./archive/new.mbox",
                                       "compress": "none"}}}
    pf.write()
    for _ in range(2):  # stuck: every run fails the account the same way, deleting nothing
        stuck = pf.run()
        assert stuck.code == 1, stuck
        account = stuck.account(name)
        assert account["status"] == "error", account
        assert "no longer configured" in account["error"], account["error"]
        assert f"retention recover --account {name} --list" in account["error"]
        assert f"retention recover --account {name} --abandon --yes" in account["error"]
        everything_somewhere()

    text = pf.cli("recover", "--account", name)
    assert text.code == 0, text
    assert text.stdout.count("  verified  archive  INBOX UID ") == 3, text
    assert "if abandoned: the copy at " in text.stdout and "was verified" in text.stdout

    unconfirmed = pf.cli("recover", "--account", name, "--abandon")
    assert unconfirmed.code == 2, unconfirmed
    assert "add --yes" in unconfirmed.stderr and "Traceback" not in unconfirmed.stderr
    still = json.loads(pf.cli("recover", "--account", name, "--format", "json").stdout)
    assert len(still["open"]) == 3

    bad_row = pf.cli("recover", "--account", name, "--abandon", "--yes", "--row", "999999")
    assert bad_row.code == 2 and "not an open action" in bad_row.stderr, bad_row

    done = pf.cli("recover", "--account", name, "--abandon", "--yes")
    assert done.code == 0, done
    assert "3 action(s) abandoned" in done.stdout, done
    everything_somewhere()
    assert len(user.folder_state()["INBOX"]) == 4  # abandoning deleted nothing
    assert json.loads(pf.cli("recover", "--account", name, "--format", "json").stdout) == {
        "open": []}

    history = pf.cli("history", "--account", name, "--format", "json")
    assert history.code == 0, history
    entries = json.loads(history.stdout)["entries"]
    assert [e["action"] for e in entries] == ["abandoned"] * 3, entries
    assert all("nothing was deleted" in e["reason"] for e in entries)

    # Unblocked: the new target takes the three; the copies in the old vault stay.
    again = pf.run()
    assert again.code == 0, again
    assert again.account(name)["status"] == "ok"
    everything_somewhere()
    assert {sha256(r) for r in keep} == {m.sha256 for m in user.folder_state()["INBOX"].values()}
    assert sorted(_mbox_ids(mbox)) == sorted(f"<go{i}@stuck>".encode() for i in range(3))
