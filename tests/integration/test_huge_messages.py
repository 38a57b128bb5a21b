"""Huge messages on a real Dovecot (issue 8, review F11).

Bodies above the spool threshold (``message_memory`` / 16) are fetched in
``BODY.PEEK[]<offset.length>`` pieces into a private temporary file and archived from it
(mbox plain/gzip/zstd, Maildir, IMAP APPEND), verified by streaming: the archive copy is
byte-identical (mbox: the LF-normalised form) and the source is gone. In a subprocess, the
peak RSS of a run that archives a 48 MiB message stays within the default 64 MiB bound
over the same run archiving a small message.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys

import pytest

from retention.archive.mbox import normalise
from retention.testing.dovecot import SeedMessage
from tests.integration.helpers import REPO, PolicyFile, ago, env_var_for
from tests.integration.test_archive_full import _vault_bodies, mbox_entries

MiB = 1024 * 1024


def _policy() -> dict:
    return {"standard": {"protect": [], "rules": [
        {"name": "old", "folders": ["INBOX"], "older_than": "365d",
         "allow_empty_folder": True, "action": {"archive": "vault"}}]}}


def _huge(size: int, tag: str) -> SeedMessage:
    # Long base64 lines, lines starting with "From " (escaped in mbox) and CRLF.
    lines = base64.encodebytes(os.urandom(size * 3 // 4)).replace(b"\n", b"\r\n")
    body = (b"From the start\r\n>From quoted\r\n.dot-stuffed on POP3\r\n" + lines
            + b"no final newline")
    return SeedMessage(received=ago(days=400), subject=f"huge {tag}", body=body,
                       flags=frozenset({"\\Seen"}))


@pytest.mark.parametrize("kind", ["mbox", "mbox-gzip", "mbox-zstd", "maildir", "imap"])
def test_huge_messages_archive_byte_identical(tmp_path, make_user, kind):
    user = make_user(200 * MiB)
    # 2 MiB of message memory: bodies above 128 KiB are spooled, in 128 KiB pieces.
    originals = user.seed("INBOX", [_huge(1_500_000, "a"), _huge(700_000, "b"),
                                    SeedMessage(received=ago(days=500), size=3000,
                                                flags=frozenset({"\\Seen"}))])
    assert all(len(o) > 128 * 1024 for o in originals[:2])
    pf = PolicyFile(tmp_path, _policy())
    vault = None
    if kind.startswith("mbox"):
        codec = {"mbox": "none", "mbox-gzip": "gzip", "mbox-zstd": "zstd"}[kind]
        target = {"type": "mbox", "path": "./archive/{account}.mbox", "compress": codec}
    elif kind == "maildir":
        target = {"type": "maildir", "path": "./archive/md"}
    else:
        vault = make_user(200 * MiB)
        pf.env[env_var_for("vault")] = vault.password
        target = {"type": "imap", "host": vault.server.host, "port": vault.server.imaps_port,
                  "security": "tls", "ca_file": str(vault.server.ca_file),
                  "username": vault.name, "password_env": env_var_for("vault"),
                  "folder": "Archive/{folder}"}
    pf.extra = {"archives": {"vault": target}, "message_memory": "2MiB"}
    name = pf.add_imap(user)
    result = pf.run()
    assert result.code == 0, result
    acct = result.account(name)
    assert acct["status"] == "ok", acct
    assert user.folder_state().get("INBOX", {}) == {}  # all three archived and removed
    if kind.startswith("mbox"):
        copies = sorted(mbox_entries(tmp_path / "archive"))
        assert copies == sorted(normalise(o) for o in originals)
    elif kind == "maildir":
        copies = sorted(p.read_bytes() for p in (tmp_path / "archive" / "md").rglob("*")
                        if p.is_file() and p.parent.name in ("cur", "new"))
        assert copies == sorted(originals)
    else:
        assert vault is not None
        assert sorted(_vault_bodies(vault)) == sorted(originals)
    # Nothing is left in the spool folder (the files are unlinked at creation).
    spool = tmp_path / "state" / "tmp"
    assert not spool.exists() or list(spool.iterdir()) == []


# VmHWM, not ru_maxrss: Linux carries ru_maxrss over execve from the forked parent (here
# pytest, holding the seeded message), while VmHWM belongs to this process's own memory.
_MEASURE = (
    "import re, sys\n"
    "from retention.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "hwm = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)\n"
    "print('MAXRSS_KIB', hwm, file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def _peak_rss(pf: PolicyFile) -> int:
    proc = subprocess.run([sys.executable, "-c", _MEASURE, "run", "-c", str(pf.path),
                           "--format", "json"], capture_output=True, text=True,
                          env=pf.subprocess_env(), cwd=REPO, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return int(re.findall(r"MAXRSS_KIB (\d+)", proc.stderr)[-1]) * 1024


def test_peak_memory_stays_bounded_whatever_the_message_size(tmp_path, make_user):
    """Default message_memory (64 MiB): archiving a 48 MiB message costs less than 64 MiB
    of peak RSS over archiving a small one (before: about 5-6x the message)."""
    rss = {}
    for tag, size in (("small", 20_000), ("big", 48 * MiB)):
        user = make_user(500 * MiB)
        user.seed("INBOX", [_huge(size, tag),
                            SeedMessage(received=ago(days=1), size=2000)])
        pf = PolicyFile(tmp_path / tag, _policy())
        pf.extra = {"archives": {"vault": {"type": "mbox", "path": "./archive/{account}.mbox",
                                           "compress": "gzip"}}}
        pf.add_imap(user)
        rss[tag] = _peak_rss(pf)
        assert len(user.folder_state()["INBOX"]) == 1  # the huge one was archived
    growth = rss["big"] - rss["small"]
    print(f"peak RSS: small {rss['small'] / MiB:.1f} MiB, 48 MiB message "
          f"{rss['big'] / MiB:.1f} MiB, growth {growth / MiB:.1f} MiB")
    assert growth < 64 * MiB, f"peak RSS grew by {growth / MiB:.1f} MiB for a 48 MiB message"


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_peak_memory_bounded_for_bodies_just_below_the_spool_threshold(
        tmp_path, make_user, protocol):
    """message_memory 16 MiB (spool threshold 1 MiB): 35 messages of 900 kB, each held in
    memory, stay within 16 MiB of peak RSS over archiving one small message: the fetch and
    archive batches follow message_memory too (before: fixed 32 MiB and 16 MiB batches,
    all 35 at once, about +40 MiB)."""
    rss = {}
    for tag, sizes in (("small", [20_000]), ("batch", [900_000] * 35)):
        user = make_user(500 * MiB)
        user.seed("INBOX", [_huge(n, f"{tag}{i}") for i, n in enumerate(sizes)])
        user.seed("INBOX", [SeedMessage(received=ago(days=1), size=2000)])
        policy = _policy()
        if protocol == "pop3":
            policy["standard"]["rules"][0]["age_by"] = "sent"
        pf = PolicyFile(tmp_path / tag, policy)
        pf.extra = {"archives": {"vault": {"type": "mbox", "path": "./archive/{account}.mbox",
                                           "compress": "gzip"}},
                    "message_memory": "16MiB"}
        (pf.add_imap if protocol == "imap" else pf.add_pop3)(user)
        rss[tag] = _peak_rss(pf)
        assert len(user.folder_state()["INBOX"]) == 1  # every old one was archived
    growth = rss["batch"] - rss["small"]
    print(f"{protocol} peak RSS: small {rss['small'] / MiB:.1f} MiB, 35 x 900 kB "
          f"{rss['batch'] / MiB:.1f} MiB, growth {growth / MiB:.1f} MiB")
    assert growth < 16 * MiB, f"peak RSS grew by {growth / MiB:.1f} MiB"


def test_huge_pop3_message_archived_byte_identical(tmp_path, make_user):
    """POP3: a RETR reply above the threshold is read into a spool file, dot-unstuffed."""
    user = make_user(200 * MiB)
    originals = user.seed("INBOX", [_huge(1_500_000, "p"),
                                    SeedMessage(received=ago(days=500), size=3000)])
    policy = _policy()
    policy["standard"]["rules"][0]["age_by"] = "sent"
    pf = PolicyFile(tmp_path, policy)
    pf.extra = {"archives": {"vault": {"type": "mbox", "path": "./archive/{account}.mbox",
                                       "compress": "zstd"}},
                "message_memory": "2MiB"}
    name = pf.add_pop3(user)
    result = pf.run()
    assert result.code == 0, result
    assert result.account(name)["status"] == "ok"
    assert sorted(mbox_entries(tmp_path / "archive")) == sorted(normalise(o) for o in originals)
