"""Archiving from a real Dovecot: every copy byte-identical to what the server held.

A real ``retention run`` (the CLI in a subprocess) archives mail to mbox (plain and gzip),
Maildir and an IMAP target (a second Dovecot user); the SHA-256 of every message before
the run is compared with the copies afterwards (mbox: line endings normalised on both
sides, as the format stores LF). Also: flags and INTERNALDATE carried to the IMAP target,
nothing else touched, the audit history, and an APPEND timeout that is reconciled rather
than duplicated.
"""

from __future__ import annotations

import hashlib
import json
import mailbox
import re
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from retention.archive.mbox import normalise, read_all, unescape
from retention.testing.dovecot import MailUser, SeedMessage
from tests.integration.helpers import PolicyFile, ago, env_var_for

POLICY = {
    "standard": {
        "protect": ["flagged"],
        "rules": [
            {"name": "old-mail", "folders": ["INBOX", "Lists/*"], "older_than": "365d",
             "action": {"archive": "vault"}},
        ],
    }
}

NASTY = [
    b"From the beginning of a line\r\n>From already quoted\r\n>>From twice\r\nFrom\r\n",
    b"no final newline",
    b"bare\nLF\nlines\n",
    bytes(range(1, 256)).replace(b"\r", b"").replace(b"\n", b"") + b"\r\n",
    b"",
]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def seed_mail(user: MailUser) -> tuple[list[bytes], list[bytes]]:
    """Old (archived) and young / flagged (kept) messages in INBOX and Lists/python."""
    old, kept = [], []
    for folder in ("INBOX", "Lists/python"):
        msgs = [
            SeedMessage(received=ago(days=400 + 30 * i), flags={"\\Seen"} if i % 2 else set(),
                        subject=f"old {i}", body=NASTY[i % len(NASTY)] + b"x" * (100 * i))
            for i in range(12)
        ]
        old += user.seed(folder, msgs)
        kept += user.seed(folder, [
            SeedMessage(received=ago(days=10), subject="young"),
            SeedMessage(received=ago(days=900), flags={"\\Flagged"}, subject="flagged"),
        ])
    return old, kept


def mbox_contents(root: Path) -> list[bytes]:
    out = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        text = read_all(path)
        # Standard tools read it: Python's mailbox finds the same entries.
        plain = path.with_name(path.name + ".plain")
        plain.write_bytes(text)
        box = mailbox.mbox(str(plain), create=False)
        try:
            parsed = [unescape(box.get_bytes(k)) for k in box.keys()]
        finally:
            box.close()
            plain.unlink()
        entries = [unescape(p[:-1]) for p in re.split(rb"(?m)^From MAILER-DAEMON [^\n]*\n",
                                                      text)[1:]]
        assert parsed == entries, path
        out += entries
    return out


def target_for(kind: str, pf: PolicyFile, vault: MailUser | None) -> dict[str, Any]:
    if kind == "imap":
        assert vault is not None
        server = vault.server
        pf.env[env_var_for("vault")] = vault.password
        return {"type": "imap", "host": server.host, "port": server.imaps_port,
                "security": "tls", "ca_file": str(server.ca_file), "username": vault.name,
                "password_env": env_var_for("vault"), "folder": "Archive/{account}/{folder}"}
    if kind == "maildir":
        return {"type": "maildir", "path": "./archive/{account}"}
    compress = {"mbox": "none", "mbox-gzip": "gzip", "mbox-zstd": "zstd"}[kind]
    return {"type": "mbox", "path": "./archive/{account}/{folder}/{year}.mbox",
            "compress": compress}


@pytest.mark.parametrize("kind", ["mbox", "mbox-gzip", "mbox-zstd", "maildir", "imap"])
def test_archives_are_byte_identical(tmp_path, make_user, kind):
    user = make_user()
    vault = make_user() if kind == "imap" else None
    old, kept = seed_mail(user)
    pf = PolicyFile(tmp_path, POLICY)
    pf.extra = {"archives": {"vault": target_for(kind, pf, vault)}}
    name = pf.add_imap(user)
    before = user.folder_state()
    result = pf.run()
    assert result.code == 0, result
    acct = result.account(name)
    assert acct["status"] == "ok"
    assert Counter(a["result"] for a in acct["actions"]) == {"done": len(old)}
    assert all(a["action"] == "archive" for a in acct["actions"])

    after = user.folder_state()
    # Only the old, unflagged messages left; everything kept is untouched.
    left = Counter(m.sha256 for f in after.values() for m in f.values())
    assert left == Counter(map(sha, kept))
    for folder, msgs in after.items():
        for uid, state in msgs.items():
            assert before[folder][uid] == state

    source = [m for f in ("INBOX", "Lists/python") for m in before[f].values()]
    archived_hashes = Counter(m.sha256 for m in source if m.sha256 in set(map(sha, old)))
    assert sum(archived_hashes.values()) == len(old)
    if kind.startswith("mbox"):
        copies = mbox_contents(tmp_path / "archive")
        assert Counter(map(sha, copies)) == Counter(sha(normalise(b)) for b in old)
        year = (ago(days=400)).year
        assert any(p.name.startswith(str(year)) for p in (tmp_path / "archive").rglob("*"))
        assert (tmp_path / "archive" / name / "Lists" / "python").is_dir()
    elif kind == "maildir":
        files = [p for p in (tmp_path / "archive").rglob("*") if p.is_file()]
        assert Counter(sha(p.read_bytes()) for p in files) == Counter(map(sha, old))
        assert (tmp_path / "archive" / name / "Lists" / "python" / "cur").is_dir()
    else:
        assert vault is not None
        vstate = vault.folder_state()
        assert set(vstate) >= {f"Archive/{name}/INBOX", f"Archive/{name}/Lists/python"}
        copies = {m.sha256: m for f, msgs in vstate.items() if f.startswith("Archive/")
                  for m in msgs.values()}
        assert Counter(m.sha256 for f, msgs in vstate.items() if f.startswith("Archive/")
                       for m in msgs.values()) == Counter(map(sha, old))
        by_hash = {m.sha256: m for m in source}
        for digest, copy in copies.items():
            orig = by_hash[digest]
            assert copy.flags == orig.flags  # \Seen carried over; nothing else added
            assert abs(copy.internaldate - orig.internaldate) < timedelta(seconds=1)

    hist = pf.cli("history", "--format", "json")
    assert hist.code == 0, hist
    entries = json.loads(hist.stdout)["entries"]
    assert len(entries) == len(old) and {e["action"] for e in entries} == {"archive"}
    assert Counter(e["sha256"] for e in entries) == Counter(map(sha, old))
    assert all(e["archive_location"] and e["run_id"] == acct["run_id"] for e in entries)

    # A second run finds nothing more to do and archives nothing twice.
    again = pf.run()
    assert again.code == 0 and again.account(name)["actions"] == []
    assert len(json.loads(pf.cli("history", "--format", "json").stdout)["entries"]) == len(old)


def test_append_timeout_reconciled_on_real_server(tmp_path, make_user):
    """APPEND reaches the server but the answer is lost: the retry finds it, no duplicate."""
    from retention.adapters.imap.session import ImapSession
    from retention.archive import ArchiveSet
    from retention.config.load import load_config
    from retention.errors import ConnectError
    from retention.planner import plan as make_plan
    from retention.run.executor import Executor
    from retention.state.journal import Journal

    user, vault = make_user(), make_user()
    old, _kept = seed_mail(user)
    pf = PolicyFile(tmp_path, POLICY)
    pf.extra = {"archives": {"vault": target_for("imap", pf, vault)}}
    name = pf.add_imap(user)
    config = load_config(pf.path, env=pf.env)
    account = config.account(name)
    target = config.archives["vault"]
    connections: list[Any] = []

    def connect(t: Any, password: str) -> Any:
        s = ImapSession.connect(t, password, readonly=False)
        if not connections:
            real = s.append
            count = {"n": 0}

            def append(folder: str, message: bytes, flags: Any, internal_date: Any) -> Any:
                count["n"] += 1
                uid = real(folder, message, flags, internal_date)
                if count["n"] == 5:
                    s.close()  # the connection is gone before the answer was read
                    raise ConnectError("vault: no answer within 60s to APPEND")
                return uid

            s.append = append  # type: ignore[method-assign]
        connections.append(s)
        return s

    session = ImapSession.connect(account, user.password, readonly=False)
    try:
        snapshot = _snapshot(session, name)
        plan = make_plan(config.policy_of(account), snapshot, ago(seconds=0))
        with Journal.open(tmp_path / "j.sqlite3") as journal:
            archives = ArchiveSet({"vault": target}, account=name,
                                  secrets=lambda c: vault.password, imap_connect=connect)
            results = Executor(session, journal, archives=archives, run_id="r1",
                               account=name).execute(plan)
            archives.close()
    finally:
        session.close()
    assert len(connections) == 2
    assert Counter(r.result for r in results) == {"done": len(old)}
    vstate = vault.folder_state()
    copies = [m.sha256 for f, msgs in vstate.items() for m in msgs.values()]
    assert Counter(copies) == Counter(map(sha, old))  # each exactly once


def _snapshot(session: Any, account: str) -> Any:
    from retention.model import Snapshot

    folders = session.list_folders()
    scanned = tuple(session.scan(f) for f in folders if f.name in ("INBOX", "Lists/python"))
    return Snapshot(account=account, protocol="imap", usage=session.usage(folders),
                    folders=scanned, all_folders=tuple(folders))
