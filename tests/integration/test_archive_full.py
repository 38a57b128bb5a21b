"""A full archive target never costs a message: nothing unverified is deleted.

Three ways to fill the target, each with a real ``retention run`` against a real Dovecot:

* the IMAP archive account has a tiny quota (Dovecot answers ``NO [OVERQUOTA]``);
* the archive folder is a 1 MiB tmpfs (ENOSPC) - where mounting is allowed;
* the agent runs under RLIMIT_FSIZE (EFBIG; SIGXFSZ is ignored by the archive code).

Each time: exit 1, the account's error names the cause, and every message that left the
source is in the archive (byte-identical, exactly once); the rest are still in the source.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import resource
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from retention.archive.mbox import normalise, read_all, unescape
from retention.testing.dovecot import MailUser, SeedMessage
from tests.integration.helpers import REPO, CliResult, PolicyFile, ago, env_var_for

POLICY = {"standard": {"protect": [], "rules": [
    {"name": "old", "folders": ["INBOX"], "older_than": "365d",
     "allow_empty_folder": True, "action": {"archive": "vault"}}]}}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def seed(user: MailUser, count: int, size: int) -> list[bytes]:
    return user.seed("INBOX", [SeedMessage(received=ago(days=400 + i), size=size,
                                           subject=f"m{i}") for i in range(count)])


def source_hashes(user: MailUser) -> Counter[str]:
    return Counter(m.sha256 for f in user.folder_state().values() for m in f.values())


def mbox_entries(root: Path) -> list[bytes]:
    out = []
    for path in root.rglob("*.mbox*"):
        text = read_all(path)
        out += [unescape(p[:-1]) for p in re.split(rb"(?m)^From MAILER-DAEMON [^\n]*\n",
                                                   text)[1:]]
    return out


def check_nothing_lost(originals: list[bytes], user: MailUser, copies: list[bytes],
                       normalised: bool) -> int:
    """Every original exactly once in source + archive; returns how many were archived."""
    left = source_hashes(user)
    by_norm = {sha(normalise(o) if normalised else o): sha(o) for o in originals}
    archived = Counter(by_norm[sha(c)] for c in copies)
    assert left + archived == Counter(map(sha, originals))
    return sum(archived.values())


def test_imap_target_over_quota(tmp_path, make_user):
    user = make_user()
    vault = make_user(quota_bytes=60_000)
    originals = seed(user, 30, 5_000)
    pf = PolicyFile(tmp_path, POLICY)
    pf.env[env_var_for("vault")] = vault.password
    pf.extra = {"archives": {"vault": {
        "type": "imap", "host": vault.server.host, "port": vault.server.imaps_port,
        "security": "tls", "ca_file": str(vault.server.ca_file), "username": vault.name,
        "password_env": env_var_for("vault"), "folder": "Archive/{folder}"}}}
    name = pf.add_imap(user)
    result = pf.run()
    assert result.code == 1, result
    acct = result.account(name)
    assert acct["status"] == "error" and acct["error_kind"] == "archive"
    assert "OVERQUOTA" in acct["error"] or "quota" in acct["error"].lower(), acct["error"]
    copies = _vault_bodies(vault)
    archived = check_nothing_lost(originals, user, copies, normalised=False)
    assert 0 < archived < len(originals)
    # The audit history lists exactly the archived ones.
    hist = pf.cli("history", "--format", "csv")
    assert hist.code == 0 and len(hist.stdout.strip().splitlines()) == 1 + archived


def _vault_bodies(vault: MailUser) -> list[bytes]:
    client = vault.imap_client()
    try:
        out = []
        for _flags, _delim, name in client.list_folders():
            client.select_folder(name, readonly=True)
            uids = client.search("ALL")
            if uids:
                out += [d[b"BODY[]"] for d in client.fetch(uids, ["BODY.PEEK[]"]).values()]
        return out
    finally:
        client.logout()


def _run_limited(pf: PolicyFile, fsize: int | None) -> CliResult:
    def limit() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    proc = subprocess.run(
        [sys.executable, "-m", "retention", "run", "-c", str(pf.path), "--format", "json"],
        capture_output=True, text=True, env=pf.subprocess_env(), cwd=REPO, timeout=600,
        preexec_fn=limit, check=False,
    )
    return CliResult(["run"], proc.returncode, proc.stdout, proc.stderr)


def test_file_size_limit(tmp_path, make_user):
    """RLIMIT_FSIZE: the mbox hits EFBIG part-way; the agent reports it and carries on."""
    user = make_user()
    originals = seed(user, 250, 8_000)  # ~2 MB: the first batch of 100 fits, then EFBIG
    pf = PolicyFile(tmp_path, POLICY)
    pf.extra = {"archives": {"vault": {"type": "mbox", "path": "./archive/{account}.mbox"}}}
    name = pf.add_imap(user)
    result = _run_limited(pf, 1_200_000)
    assert result.code == 1, result
    acct = result.account(name)
    assert acct["status"] == "error" and acct["error_kind"] == "archive", acct
    assert "file size limit" in acct["error"], acct["error"]
    archive = tmp_path / "archive" / f"{name}.mbox"
    assert archive.stat().st_size <= 1_200_000
    archived = check_nothing_lost(originals, user, mbox_entries(tmp_path / "archive"), True)
    assert 0 < archived < len(originals)
    # Without the limit the next run finishes the job; nothing is archived twice.
    again = pf.run()
    assert again.code == 0, again
    assert check_nothing_lost(originals, user, mbox_entries(tmp_path / "archive"),
                              True) == len(originals)


@pytest.fixture
def tiny_fs(tmp_path: Path):
    mnt = tmp_path / "full"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs",
                           str(mnt)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not allowed here ({proc.stderr.strip()}); "
                    "test_file_size_limit covers the full-disk case")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("kind", ["mbox-gzip", "maildir"])
def test_full_filesystem(tmp_path, make_user, tiny_fs, kind):
    user = make_user()
    # Random-ish bodies so gzip cannot squeeze 2 MB into the 1 MiB tmpfs.
    originals = user.seed("INBOX", [
        SeedMessage(received=ago(days=400 + i), subject=f"m{i}",
                    body=base64.encodebytes(os.urandom(6_000)))
        for i in range(250)])
    pf = PolicyFile(tmp_path, POLICY)
    target = ({"type": "mbox", "path": str(tiny_fs / "{account}.mbox"), "compress": "gzip"}
              if kind == "mbox-gzip" else {"type": "maildir", "path": str(tiny_fs / "md")})
    pf.extra = {"archives": {"vault": target}}
    name = pf.add_imap(user)
    result = pf.run()
    assert result.code == 1, result
    acct = result.account(name)
    assert acct["error_kind"] == "archive" and "no space left" in acct["error"], acct
    if kind == "mbox-gzip":
        copies, norm = mbox_entries(tiny_fs), True
    else:
        copies = [p.read_bytes() for p in (tiny_fs / "md").rglob("*") if p.is_file()]
        norm = False
        assert not list((tiny_fs / "md" / "INBOX" / "tmp").iterdir())
    archived = check_nothing_lost(originals, user, copies, norm)
    assert 0 < archived < len(originals)
