"""Crash safety: the agent killed at every step of an archive-and-delete run loses nothing.

The real CLI (``python -m retention run``) runs in a subprocess against a real Dovecot with
``RETENTION_TEST_CRASH_AFTER=N``: the journal SIGKILLs the process right after its N-th
step (a journal commit, an archive batch made durable, or a source deletion sent). Then the
agent is run again normally. For every N from 1 to the number of steps of a full run (more
than 20), on a fresh mailbox each time, the end state must be:

* right after the kill, every message the archive rule selected is in the source or the
  archive (or both: copied and verified, not yet deleted) and never twice in either;
* after the clean rerun, each is exactly once in source + archive (in the archive),
  byte-identical;
* the messages of the delete rule are gone;
* the audit history lists each removal exactly once.

A second series kills the agent again while the rerun is recovering.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from retention.archive.mbox import normalise, read_all, unescape
from retention.testing.dovecot import MailUser, SeedMessage
from tests.integration.helpers import CliResult, PolicyFile, ago, env_var_for

pytestmark = pytest.mark.slow

ARCHIVED_FOLDERS = ("INBOX", "Lists/a", "Lists/b", "Lists/c")
POLICY = {"standard": {"protect": [], "rules": [
    {"name": "trash", "folders": ["\\Trash"], "older_than": "30d", "age_by": "received",
     "action": "delete"},
    {"name": "old", "folders": ["INBOX", "Lists/*"], "older_than": "365d",
     "allow_empty_folder": True, "action": {"archive": "vault"}},
]}}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class World:
    """One fresh mailbox + policy file + archive for one crash scenario."""

    def __init__(self, root: Path, user: MailUser, target: str, vault: MailUser | None):
        self.user = user
        self.vault = vault
        self.target = target
        self.archived: list[bytes] = []
        for i, folder in enumerate(ARCHIVED_FOLDERS):
            self.archived += user.seed(folder, [
                SeedMessage(received=ago(days=500 + 10 * j), flags={"\\Seen"} if j else set(),
                            subject=f"{folder} {j}",
                            body=b"From here\r\n>From there\r\n" + b"y" * (300 * (i + j)))
                for j in range(3)])
        self.trashed = user.seed("Trash", [SeedMessage(received=ago(days=60 + j))
                                           for j in range(3)])
        self.pf = PolicyFile(root, POLICY)
        if target == "imap":
            assert vault is not None
            self.pf.env[env_var_for("vault")] = vault.password
            archive: dict[str, Any] = {
                "type": "imap", "host": vault.server.host, "port": vault.server.imaps_port,
                "security": "tls", "ca_file": str(vault.server.ca_file),
                "username": vault.name, "password_env": env_var_for("vault"),
                "folder": "Archive/{folder}"}
        else:
            archive = {"type": "mbox", "path": "./archive/{folder}/{year}.mbox",
                       "compress": "gzip"}
        self.pf.extra = {"archives": {"vault": archive}}
        self.name = self.pf.add_imap(user)

    def run(self, crash_after: int | None = None, step_log: Path | None = None) -> CliResult:
        env = {}
        if crash_after is not None:
            env["RETENTION_TEST_CRASH_AFTER"] = str(crash_after)
            env["RETENTION_TEST_HOOKS"] = "1"
        if step_log is not None:
            env["RETENTION_TEST_STEP_LOG"] = str(step_log)
            env["RETENTION_TEST_HOOKS"] = "1"
        return self.pf.run(env=env)

    def copies(self) -> Counter[str]:
        """SHA-256 of every archived copy (mbox: of the LF-normalised message)."""
        if self.target == "imap":
            assert self.vault is not None
            return Counter(m.sha256 for f in self.vault.folder_state().values()
                           for m in f.values())
        out: Counter[str] = Counter()
        for path in (self.pf.directory / "archive").rglob("*.mbox.gz"):
            text = read_all(path)
            for part in re.split(rb"(?m)^From MAILER-DAEMON [^\n]*\n", text)[1:]:
                out[sha(unescape(part[:-1]))] += 1
        return out

    def check(self, *, finished: bool) -> None:
        source = Counter(m.sha256 for f in self.user.folder_state().values()
                         for m in f.values())
        copies = self.copies()
        norm = (lambda b: b) if self.target == "imap" else normalise
        for raw in self.archived:
            in_source, in_archive = source[sha(raw)], copies[sha(norm(raw))]
            # Killed mid-run, a message may be both archived and not yet deleted; never
            # lost, never archived twice. Finished: exactly once, in the archive.
            assert in_source + in_archive >= 1, "message lost"
            assert in_source <= 1 and in_archive <= 1, (in_source, in_archive)
            if finished:
                assert (in_source, in_archive) == (0, 1)
        assert sum(copies.values()) <= len(self.archived)  # nothing foreign, nothing twice
        if finished:
            assert not any(source[sha(raw)] for raw in self.trashed)
            hist = self.pf.cli("history", "--format", "json")
            assert hist.code == 0, hist
            entries = json.loads(hist.stdout)["entries"]
            removed = Counter((e["folder"], e["uid"]) for e in entries)
            assert set(removed.values()) == {1}
            assert len(entries) == len(self.archived) + len(self.trashed)
            assert Counter(e["action"] for e in entries) == {
                "archive": len(self.archived), "delete": len(self.trashed)}


def _count_steps(tmp_path: Path, make_user: Any, target: str) -> list[str]:
    vault = make_user() if target == "imap" else None
    world = World(tmp_path / "count", make_user(), target, vault)
    log = tmp_path / "steps.log"
    result = world.run(step_log=log)
    assert result.code == 0, result
    world.check(finished=True)
    return [line.split(" ", 1)[1] for line in log.read_text().splitlines()]


@pytest.mark.parametrize("target", ["mbox-gzip", "imap"])
def test_killed_at_every_step(tmp_path, make_user, target):
    steps = _count_steps(tmp_path, make_user, target)
    assert len(steps) >= 20, steps
    assert {"archive-written", "source-removed", "journal:planned", "journal:archived",
            "journal:verified", "journal:removed"} <= set(steps)
    for n in range(1, len(steps) + 1):
        vault = make_user() if target == "imap" else None
        world = World(tmp_path / f"crash-{n}", make_user(), target, vault)
        killed = world.run(crash_after=n)
        assert killed.code == -9, f"step {n} ({steps[n - 1]}): {killed}"
        world.check(finished=False)
        again = world.run()
        assert again.code == 0, f"after a kill at step {n} ({steps[n - 1]}): {again}"
        world.check(finished=True)


@pytest.mark.parametrize("target", ["mbox-gzip"])
def test_killed_again_while_recovering(tmp_path, make_user, target):
    for first in (4, 9, 16, 22):
        for second in (1, 2, 3):
            world = World(tmp_path / f"c-{first}-{second}", make_user(), target, None)
            assert world.run(crash_after=first).code == -9
            again = world.run(crash_after=second)
            assert again.code in (-9, 0), again
            world.check(finished=False)
            final = world.run()
            assert final.code == 0, final
            world.check(finished=True)
