"""Benchmark: dry-run of one huge INBOX against the protocol floor, fresh and repeated.

    .venv/bin/python bench/bench_scan.py [--messages 200000] [--runs 3] [--size 400]
    .venv/bin/python bench/bench_scan.py --messages 1000000 --runs 1 --warmup 0 \\
        --tools retention-fresh,floor            # the 1,000,000-message RSS scenario

Measured by hand, never asserted in tests. One private Dovecot (retention.testing.dovecot)
with one user whose INBOX holds ``--messages`` messages of ``--size`` bytes, written
straight into the maildir (no copy kept in memory) and indexed by ``doveadm
force-resync``; half were received more than 365 days ago. The mailbox never changes
(every command is read-only), so all commands share it. Three commands, alternating:

* ``floor``: the protocol floor of a scan, stdlib imaplib in a fresh interpreter:
  LOGIN, EXAMINE INBOX, one ``UID FETCH 1:* (INTERNALDATE RFC822.SIZE FLAGS)`` read raw
  (imaplib's list of responses, nothing parsed), LOGOUT;
* ``retention-fresh``: ``retention run --dry-run`` with a new, empty ``state_dir`` (full
  scan, plan, Message-IDs of the planned messages, text report to a file);
* ``retention-repeat``: the same with one ``state_dir`` kept across runs (filled by the
  untimed warm-up round): the scan cache makes the scan an EXAMINE whose HIGHESTMODSEQ
  has not moved.

The user has a 64 GiB quota (so usage is one GETQUOTAROOT). The policy: one rule, INBOX, ``older_than: 365d``, delete, ``protect: []``; the default
``max_delete_per_run`` (10,000), as a real site would run it. Wall time, CPU and peak RSS
of each command's own process (GNU time, see bench_cleanup.timed), then the medians and
the ratios to the floor's median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cleanup import ROOT, byte_compile, rusage_method, timed  # noqa: E402

from retention.testing.dovecot import Dovecot, MailUser, dovecot_unavailable_reason  # noqa: E402

TOOLS = ("floor", "retention-fresh", "retention-repeat")
FLOOR = """\
import imaplib, sys
host, port, user, password = sys.argv[1:5]
m = imaplib.IMAP4(host, int(port))
m.login(user, password)
m.select("INBOX", readonly=True)
typ, data = m.uid("FETCH", "1:*", "(INTERNALDATE RFC822.SIZE FLAGS)")
assert typ == "OK", typ
print(len(data), "responses")
m.logout()
"""


@dataclass
class Sample:
    tool: str
    wall_s: float
    cpu_s: float
    rss_mib: float
    exit_code: int


def seed_fast(dc: Dovecot, user: MailUser, n: int, size: int) -> None:
    """``n`` messages of ``size`` bytes straight into INBOX's maildir, half older than a
    year, in arrival order (like ``Dovecot.seed``, without building SeedMessages or
    keeping the bytes: a million of them would not fit in memory)."""
    cur = dc.maildir(user.name) / "cur"
    owner = cur.stat()
    now = time.time()
    base, pid = int(now) - 10 * 365 * 86400, os.getpid()
    old = n - n // 2
    for i in range(n):
        if i < old:  # 367 days .. ~5 years, oldest first
            age = 367 * 86400 + (1460 * 86400 * (old - 1 - i)) // max(old, 1)
        else:
            age = 86400 + (362 * 86400 * (n - 1 - i)) // max(n - old, 1)
        stamp = now - age
        head = (f"From: Sender <sender@example.com>\r\nTo: bench@example.com\r\n"
                f"Subject: bench {i}\r\nMessage-ID: <{i}.{pid}@bench.example>\r\n"
                f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime(stamp))}"
                "\r\n\r\n").encode()
        body = b"x" * max(0, size - len(head) - 2) + b"\r\n"
        raw = head + body
        secs, usecs = divmod(i, 1_000_000)
        name = f"{base + secs}.M{usecs}P{pid}.bench,S={len(raw)},W={len(raw)}:2,S"
        fd = os.open(cur / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, raw)
            os.fchown(fd, owner.st_uid, owner.st_gid)
            os.utime(fd, (stamp, stamp))
        finally:
            os.close(fd)
    dc.doveadm("force-resync", "-u", user.name, "INBOX")


def policy_file(directory: Path, dc: Dovecot, user: MailUser, state: Path) -> Path:
    doc = {
        "state_dir": str(state),
        "policies": {"bench": {
            "protect": [], "keep_within": "0d",
            "rules": [{"name": "older-than-a-year", "folders": ["INBOX"],
                       "older_than": "365d", "action": "delete"}],
        }},
        "accounts": [{
            "name": "bench", "protocol": "imap", "host": dc.host, "port": dc.imap_port,
            "security": "none", "allow_plaintext": True, "username": user.name,
            "password_env": "BENCH_PASSWORD", "policy": "bench", "timeout": "600s",
        }],
    }
    path = directory / "policy.yaml"
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=400, help="bytes per message (default 400)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--json", type=Path)
    args, ignored = ap.parse_known_args()
    byte_compile()
    if ignored:
        print(f"ignoring arguments for other benchmarks: {' '.join(ignored)}")
    reason = dovecot_unavailable_reason()
    if reason:
        print(f"bench_scan: cannot start Dovecot: {reason}", file=sys.stderr)
        return 1
    tools = [t for t in args.tools.split(",") if t in TOOLS]
    print(f"{args.messages} messages of {args.size} bytes in INBOX; {args.runs} runs; "
          f"{os.cpu_count()} CPUs; Python {sys.version.split()[0]}; "
          f"peak RSS by {rusage_method()}", flush=True)
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="bench-scan-") as tmp, Dovecot() as dc:
        work = Path(tmp)
        # A quota-managed mailbox (the agent's case): GETQUOTAROOT answers the usage.
        user = dc.add_user("bench", quota_bytes=64 * 1024**3)
        started = time.perf_counter()
        seed_fast(dc, user, args.messages, args.size)
        print(f"seeded and indexed in {time.perf_counter() - started:.1f} s", flush=True)
        env = {k: v for k, v in os.environ.items()
               if k not in ("RETENTION_STATE_DIR", "STATE_DIRECTORY", "RETENTION_CONFIG")}
        env["BENCH_PASSWORD"] = user.password
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        kept_state = work / "kept-state"
        count = 0

        def command(tool: str) -> list[str]:
            nonlocal count
            count += 1
            directory = work / f"{count:03d}-{tool}"
            directory.mkdir()
            if tool == "floor":
                return [sys.executable, "-c", FLOOR, dc.host, str(dc.imap_port), user.name,
                        user.password]
            state = kept_state if tool == "retention-repeat" else directory / "state"
            policy = policy_file(directory, dc, user, state)
            return [sys.executable, "-m", "retention", "run", "-c", str(policy), "--dry-run",
                    "--output", str(directory / "report.txt")]

        def measure(tool: str, label: str) -> Sample:
            argv = command(tool)
            out = work / f"{count:03d}-{tool}" / "output.txt"
            wall, cpu, rss, code = timed(argv, env, out, args.timeout)
            sample = Sample(tool, wall, cpu, rss, code)
            status = "ok" if code == 0 else "FAILED: " + out.read_text(errors="replace")[-300:]
            print(f"{label} {tool:<17} wall={wall:.2f}s cpu={cpu:.2f}s rss={rss:.1f}MiB "
                  f"{status}", flush=True)
            return sample

        for i in range(args.warmup):
            for tool in tools:
                measure(tool, f"warm-up {i + 1}")
        for run in range(1, args.runs + 1):
            shift = (run - 1) % len(tools)
            for tool in tools[shift:] + tools[:shift]:
                samples.append(measure(tool, f"run {run}"))
    medians: dict[str, dict[str, float]] = {}
    print("\nmedian [min - max]")
    for tool in tools:
        mine = [s for s in samples if s.tool == tool]
        if not mine:
            continue
        medians[tool] = {}
        print(f"  {tool}")
        for key in ("wall_s", "cpu_s", "rss_mib"):
            values = [getattr(s, key) for s in mine]
            medians[tool][key] = statistics.median(values)
            print(f"    {key:<8} {medians[tool][key]:9.2f}  [{min(values):.2f} - {max(values):.2f}]")
    if "floor" in medians:
        floor = medians["floor"]["wall_s"]
        for tool in tools:
            if tool != "floor" and tool in medians:
                print(f"ratio {tool} / floor (wall, medians): {medians[tool]['wall_s'] / floor:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"messages": args.messages, "size": args.size,
                                         "samples": [vars(s) for s in samples],
                                         "medians": medians,
                                         "when": datetime.now(UTC).isoformat()}, indent=2))
    return 0 if all(s.exit_code == 0 for s in samples) else 1


if __name__ == "__main__":
    raise SystemExit(main())
