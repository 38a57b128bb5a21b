"""The demo: a local Dovecot with aged, nearly full mailboxes, and the agent cleaning them.

Run with ``make demo``. It starts a private Dovecot on 127.0.0.1 (IMAP, POP3, quota plugin)
in a temporary folder, seeds two accounts with years of mail up to ~93% of their quota,
writes a policy file, then runs the real ``retention`` command: ``check``, ``usage``, a
``--dry-run``, the real run, ``usage`` again and ``history``. Nothing outside the demo's
folder is touched; the server is stopped at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

from retention.testing.dovecot import Dovecot, SeedMessage

ROOT = Path(__file__).resolve().parent.parent


MiB = 1024 * 1024
QUOTA = 20 * MiB


def _aged(
    now: datetime,
    count: int,
    *,
    start_days: int,
    end_days: int,
    size: int,
    flags: frozenset[str] = frozenset({"\\Seen"}),
) -> list[SeedMessage]:
    """``count`` messages received evenly between ``start_days`` and ``end_days`` ago."""
    step = (start_days - end_days) / max(count - 1, 1)
    return [
        SeedMessage(
            received=now - timedelta(days=start_days - i * step),
            size=size,
            flags=flags,
            subject=f"Message {i}",
        )
        for i in range(count)
    ]


def seed_alice(dc: Dovecot, now: datetime) -> None:
    """An office mailbox at ~93% of 20 MiB: years of INBOX, Junk, Trash, some flagged."""
    dc.seed("alice", "INBOX", _aged(now, 152, start_days=1500, end_days=2, size=100_000))
    dc.seed(
        "alice",
        "INBOX",
        _aged(
            now,
            6,
            start_days=1400,
            end_days=700,
            size=150_000,
            flags=frozenset({"\\Seen", "\\Flagged"}),
        ),
    )
    dc.seed(
        "alice",
        "INBOX",
        _aged(now, 5, start_days=900, end_days=400, size=80_000, flags=frozenset()),
    )  # old but unread: protected
    dc.seed(
        "alice", "Junk", _aged(now, 20, start_days=60, end_days=1, size=60_000, flags=frozenset())
    )
    dc.seed("alice", "Trash", _aged(now, 15, start_days=900, end_days=40, size=90_000))
    dc.seed("alice", "Sent", _aged(now, 10, start_days=800, end_days=10, size=50_000))


def seed_bob(dc: Dovecot, now: datetime) -> None:
    """A POP3 user who leaves copies on the server: the mailbox only ever grows."""
    dc.seed("bob", "INBOX", _aged(now, 195, start_days=1000, end_days=1, size=100_000))


POLICY = """\
state_dir: ./state
archives:
  cold:
    type: mbox
    path: './archive/{{account}}/{{folder}}/{{year}}.mbox'
    compress: gzip
policies:
  office:
    protect: [flagged, unread]
    keep_within: 7d
    quota: {{warn_above: 80%, clean_above: 90%, clean_to: 75%}}
    rules:
      - name: archive-4y
        folders: ['*']
        exclude_folders: ['\\Trash', '\\Junk', '\\Sent']
        older_than: 4y
        action: {{archive: cold}}
      - name: junk-when-full
        when: over_quota
        folders: ['\\Junk']
        protect: [flagged]
        action: delete
      - name: trash-when-full
        when: over_quota
        folders: ['\\Trash']
        action: delete
      - name: archive-when-full
        when: over_quota
        folders: ['INBOX']
        older_than: 1y
        action: {{archive: cold}}
  pop3-leave-on-server:
    quota: {{limit: 20MiB, clean_above: 90%, clean_to: 75%}}
    rules:
      - name: oldest-when-full
        when: over_quota
        action: delete
accounts:
  - name: alice
    protocol: imap
    host: 127.0.0.1
    port: {imap_port}
    security: starttls
    ca_file: {ca_file}
    username: alice
    password_env: DEMO_ALICE_PASSWORD
    policy: office
  - name: bob
    protocol: pop3
    host: 127.0.0.1
    port: {pop3s_port}
    security: tls
    ca_file: {ca_file}
    username: bob
    password_env: DEMO_BOB_PASSWORD
    policy: pop3-leave-on-server
"""


def retention(*args: str, env: dict[str, str], cwd: Path) -> int:
    cmd = [sys.executable, "-m", "retention", *args]
    print(f"\n$ retention {' '.join(args)}", flush=True)
    return subprocess.run(cmd, env=env, cwd=cwd, check=False).returncode


def main() -> int:
    now = datetime.now(UTC)
    workdir = ROOT / "demo-run"
    if workdir.exists():
        subprocess.run(["rm", "-rf", str(workdir)], check=True)
    workdir.mkdir()
    with Dovecot() as dc:
        print(f"Dovecot started on 127.0.0.1 (IMAP {dc.imap_port}, POP3S {dc.pop3s_port})")
        alice = dc.add_user("alice", quota_bytes=QUOTA).password
        bob = dc.add_user("bob", quota_bytes=QUOTA).password
        seed_alice(dc, now)
        seed_bob(dc, now)
        policy = workdir / "policy.yaml"
        policy.write_text(
            POLICY.format(imap_port=dc.imap_port, pop3s_port=dc.pop3s_port, ca_file=dc.ca_file)
        )
        env = dict(
            os.environ, DEMO_ALICE_PASSWORD=alice, DEMO_BOB_PASSWORD=bob, PYTHONPATH=str(ROOT)
        )
        print(
            textwrap.dedent(f"""
            Two mailboxes of 20 MiB, seeded with years of mail up to ~93% full:
              alice (IMAP): 4 years of INBOX, Junk, Trash, Sent; some flagged or unread.
              bob (POP3, leaves copies on the server): 195 messages over 3 years.
            Policy: {policy}""")
        )
        rc = retention("check", "-c", str(policy), env=env, cwd=workdir)
        rc |= retention("usage", "-c", str(policy), env=env, cwd=workdir)
        rc |= retention("run", "-c", str(policy), "--dry-run", env=env, cwd=workdir)
        print("\n(the dry-run changed nothing; now the real run)")
        report = workdir / "report.json"
        rc |= retention("run", "-c", str(policy), "--format", "json", "--output", str(report),
                        env=env, cwd=workdir)
        print(f"(the real run's JSON report, message by message: {report})")
        for acct in json.loads(report.read_text())["accounts"]:
            done = sum(1 for a in acct["actions"] if a["result"] == "done")
            print(f"  {acct['account']}: status {acct['status']}, {done} messages removed, "
                  f"{acct['freed_bytes']} bytes freed, usage {acct['usage_bytes']} -> "
                  f"{acct['usage_after_bytes']} of {acct['limit_bytes']}")
        rc |= retention("usage", "-c", str(policy), env=env, cwd=workdir)
        rc |= retention("history", "-c", str(policy), "--account", "alice", env=env, cwd=workdir)
        archived = (
            sorted(p.relative_to(workdir) for p in (workdir / "archive").rglob("*") if p.is_file())
            if (workdir / "archive").exists()
            else []
        )
        print("\nArchive files (gzip mbox, readable by mutt and Python's mailbox):")
        for p in archived:
            print(f"  {p}")
    print("\nDovecot stopped. The demo's files are in", workdir)
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
