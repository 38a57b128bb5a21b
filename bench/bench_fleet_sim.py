"""Plan a 1,000,000-mailbox daily sweep from per-account costs measured on a real Dovecot.

    .venv/bin/python bench/bench_fleet_sim.py [--usage-accounts 60] [--cleanup-accounts 20]
        [--mailboxes 1000000] [--window-hours 24] [--rtt-ms 1] [--servers 4]
        [--server-cores 8] [--server-share 0.25] [--login-limit 100] [--per-ip-limit 0]

Measured by hand, never asserted in tests. Two parts.

**Measure** (one private Dovecot 2.3 on 127.0.0.1, implicit TLS with certificate
verification as in production, in this process so CPU can be split between the agent
and the server):

* *usage only*: ``measure_account`` (connect, TLS, LOGIN, GETQUOTAROOT, LOGOUT) over
  ``--usage-accounts`` empty mailboxes, one after another, then again with 8 threads;
* *typical cleanup*: ``run_account`` over ``--cleanup-accounts`` mailboxes each holding
  400 INBOX messages (40 older than two years) and 50 in Trash (all 60 days old): the
  policy deletes the 40 + 50, journal and audit history written, usage measured before
  and after. Recovery, scan, plan, execute: a real pass.

For each: wall seconds per account (sequential), agent CPU seconds per account
(``time.process_time``), and Dovecot CPU seconds per account (every process of its
session, reaped children included, from ``/proc``).

**Plan**: the sweep must visit ``--mailboxes`` in ``--window-hours``. One agent process
runs ``k`` accounts at once; its rate is ``min(k / L, 1 / a)`` accounts per second, where
``L`` is the per-account latency (measured on loopback, plus ``--rtt-ms`` for each of an
assumed 8 round trips for usage and 40 for a cleanup) and ``a`` the agent CPU per account
(one Python process uses about one core: the GIL). The servers bound the total: at most
``--login-limit`` TLS sessions in flight per server (Dovecot's high-security login mode
keeps one imap-login process per TLS connection, ``default_process_limit = 100``), at
most ``--per-ip-limit`` per agent IP when set (Cyrus ``maxlogins_per_host``; Dovecot's
``mail_max_userip_connections`` is per user, and a sweep opens one connection per user),
and the share ``--server-share`` of ``--servers`` x ``--server-cores`` the sweep may use.
Printed: per concurrency, the replicas needed, the sessions in flight and which limit
binds first.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retention.config.load import load_config  # noqa: E402
from retention.run.account import measure_account, run_account  # noqa: E402
from retention.testing.dovecot import (  # noqa: E402
    Dovecot,
    SeedMessage,
    dovecot_unavailable_reason,
)

PASSWORD = "bench-fleet-sim-pw"
SEEN = frozenset({"\\Seen"})
ROUND_TRIPS = {"usage": 8, "cleanup": 40}
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Cost:
    name: str
    wall: float  # seconds per account, sequential, loopback
    agent_cpu: float  # seconds per account
    server_cpu: float  # seconds per account
    parallel_rate: float  # accounts/s with 8 threads on this machine


def server_cpu(dc: Dovecot) -> float:
    """CPU seconds of every process in the Dovecot's session (reaped children included)."""
    master = int((dc.base_dir / "master.pid").read_text().strip())
    sid = os.getsid(master)
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) != sid:  # field 6 (session), counted after "pid (comm)"
            continue
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / TICKS


def measure(dc: Dovecot, name: str, fn, accounts: list) -> tuple[float, float, float]:
    s0, c0, t0 = server_cpu(dc), time.process_time(), time.perf_counter()
    for account in accounts:
        result = fn(account)
        assert result.status == "ok", (name, result.status, result.error)
    wall = time.perf_counter() - t0
    return (wall / len(accounts), (time.process_time() - c0) / len(accounts),
            (server_cpu(dc) - s0) / len(accounts))


def parallel(fn, accounts: list, jobs: int = 8) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(fn, accounts))
    assert all(r.status == "ok" for r in results), [r.error for r in results if r.error]
    return len(accounts) / (time.perf_counter() - t0)


def seed_cleanup(dc: Dovecot, name: str) -> None:
    now = datetime.now(UTC)
    recent = [SeedMessage(received=now - timedelta(days=1 + i % 600), flags=SEEN,
                          size=4000 + 37 * i) for i in range(360)]
    old = [SeedMessage(received=now - timedelta(days=800 + i), flags=SEEN, size=9000 + i)
           for i in range(40)]
    trash = [SeedMessage(received=now - timedelta(days=60), flags=SEEN, size=3000 + i)
             for i in range(50)]
    dc.seed(name, "INBOX", recent + old)
    dc.seed(name, "Trash", trash, recalc_quota=True)


def measure_costs(args: argparse.Namespace) -> list[Cost]:
    os.environ["BENCH_FLEET_PW"] = PASSWORD
    with tempfile.TemporaryDirectory(prefix="bench-fleet-sim-") as tmp, Dovecot() as dc:
        usage_names = [f"su{i:04d}" for i in range(args.usage_accounts)]
        clean_names = [f"sc{i:04d}" for i in range(2 * args.cleanup_accounts)]
        for n in usage_names + clean_names:
            dc.add_user(n, PASSWORD, quota_bytes=50 * 1024 * 1024)
        for n in clean_names:
            seed_cleanup(dc, n)
        policy = {
            "state_dir": str(Path(tmp) / "state"),
            "policies": {"typical": {
                "protect": ["flagged"],
                "quota": {"warn_above": "80%", "clean_above": "90%", "clean_to": "75%"},
                "rules": [
                    {"name": "trash", "folders": ["\\Trash"], "older_than": "30d",
                     "age_by": "received", "action": "delete"},
                    {"name": "old", "folders": ["INBOX"], "older_than": "2y",
                     "action": "delete"},
                ],
            }},
            "accounts": [{"name": n, "host": dc.host, "port": dc.imaps_port,
                          "security": "tls", "ca_file": str(dc.ca_file), "username": n,
                          "password_env": "BENCH_FLEET_PW", "policy": "typical"}
                         for n in usage_names + clean_names],
        }
        path = Path(tmp) / "policy.yaml"
        path.write_text(yaml.safe_dump(policy), encoding="utf-8")
        config = load_config(path)
        by_name = {a.name: a for a in config.accounts}
        usage_accts = [by_name[n] for n in usage_names]
        seq_clean = [by_name[n] for n in clean_names[: args.cleanup_accounts]]
        par_clean = [by_name[n] for n in clean_names[args.cleanup_accounts:]]

        def usage(a):  # noqa: ANN001, ANN202
            return measure_account(config, a)

        def clean(a):  # noqa: ANN001, ANN202
            r = run_account(config, a, dry_run=False)
            done = sum(1 for x in r.results if x.result == "done")
            assert done == 90, (a.name, done, r.error)
            return r

        measure(dc, "warm-up", usage, usage_accts[:5])
        u = measure(dc, "usage", usage, usage_accts)
        u_par = statistics.median(parallel(usage, usage_accts) for _ in range(3))
        c = measure(dc, "cleanup", clean, seq_clean)
        c_par = parallel(clean, par_clean)
        return [Cost("usage", *u, u_par), Cost("cleanup", *c, c_par)]


def plan(cost: Cost, args: argparse.Namespace) -> list[str]:
    needed = args.mailboxes / (args.window_hours * 3600)
    latency = cost.wall + ROUND_TRIPS[cost.name] * args.rtt_ms / 1000
    server_budget = args.servers * args.server_cores * args.server_share
    server_rate = server_budget / cost.server_cpu if cost.server_cpu > 0 else math.inf
    cpu_rate = 1 / cost.agent_cpu if cost.agent_cpu > 0 else math.inf
    in_flight_cap = args.servers * args.login_limit
    lines = [
        f"{cost.name}: wall {cost.wall * 1000:.1f} ms/account on loopback "
        f"(+{ROUND_TRIPS[cost.name]} x {args.rtt_ms:g} ms RTT = {latency * 1000:.1f} ms), "
        f"agent CPU {cost.agent_cpu * 1000:.1f} ms, Dovecot CPU {cost.server_cpu * 1000:.1f} ms"
        f"; 8 threads here: {cost.parallel_rate:.0f} accounts/s",
        f"  need {needed:.1f} accounts/s ({args.mailboxes:,} in {args.window_hours:g} h); "
        f"one agent process tops out at {cpu_rate:.0f}/s (its CPU); the servers' CPU share "
        f"allows {server_rate:.0f}/s; at most {in_flight_cap} TLS sessions in flight "
        f"({args.servers} servers x {args.login_limit} login processes)",
        f"  {'k':>4} {'per replica/s':>14} {'replicas':>9} {'in flight':>10}  bound by",
    ]
    for k in (2, 4, 8, 16, 32, 64):
        per_ip_k = min(k, args.per_ip_limit) if args.per_ip_limit else k
        rate = min(per_ip_k / latency, cpu_rate)
        replicas = max(1, math.ceil(needed / rate))
        in_flight = needed * latency  # Little's law: what the sweep keeps open on average
        binds = []
        if args.per_ip_limit and k > args.per_ip_limit:
            binds.append(f"per-IP limit {args.per_ip_limit}")
        binds.append("agent CPU" if per_ip_k / latency > cpu_rate else "latency x concurrency")
        if needed > server_rate:
            binds.append("SERVER CPU: no replica count fits")
        if replicas * per_ip_k > in_flight_cap:
            binds.append(f"login processes ({replicas * per_ip_k} > {in_flight_cap}"
                         " if all run at once)")
        lines.append(f"  {k:>4} {rate:>14.1f} {replicas:>9} {in_flight:>10.1f}  "
                     + "; ".join(binds))
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--usage-accounts", type=int, default=60)
    ap.add_argument("--cleanup-accounts", type=int, default=20)
    ap.add_argument("--mailboxes", type=int, default=1_000_000)
    ap.add_argument("--window-hours", type=float, default=24)
    ap.add_argument("--rtt-ms", type=float, default=1.0)
    ap.add_argument("--servers", type=int, default=4)
    ap.add_argument("--server-cores", type=int, default=8)
    ap.add_argument("--server-share", type=float, default=0.25)
    ap.add_argument("--login-limit", type=int, default=100)
    ap.add_argument("--per-ip-limit", type=int, default=0)
    args, ignored = ap.parse_known_args(argv)
    if ignored:
        print(f"ignoring arguments for other benchmarks: {' '.join(ignored)}")
    reason = dovecot_unavailable_reason()
    if reason:
        print(f"bench_fleet_sim: cannot start Dovecot: {reason}", file=sys.stderr)
        return 1
    print(f"measuring on {os.cpu_count()} CPUs (shared; Dovecot and agent on one machine)",
          flush=True)
    for cost in measure_costs(args):
        print("\n".join(plan(cost, args)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
