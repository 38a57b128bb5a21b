"""Benchmark: a fleet of 1,000,000 accounts from a source, loaded and ready to schedule.

Scenario. A policy file with two policies, a master credential and one source of
``--accounts`` users (default 1,000,000), with an ``account:`` template and three
``policy_by`` rules (``match``, ``domain``, first match wins):

* ``--kind passwd-file``: a Dovecot passwd-file (``user:{PLAIN}pw::::::``), written first;
* ``--kind sql``: a PostgreSQL table ``users(username, host, policy)`` on a private
  PostgreSQL (``retention.testing.postgres``), read as the non-superuser ``reader``.

In a fresh child process per run, ``retention.service.serve.load_policy`` does what
``serve`` does at start-up: validate the file, read the source, resolve every entry
(template + entry + policy_by), check names for duplicates, and group the accounts by
schedule for the scheduler. Printed per run: wall time, the child's peak RSS
(``VmHWM``), RSS after imports, and the time to build every ``Account`` once
lazily (what a sweep does as it submits them; not part of "ready"), then what ``serve``
adds before its first sweep: the metric state of every owned account
(``Metrics.set_accounts``, under the default ``account_metrics``) and one ``/metrics``
rendering. The issue-9 budget: under 60 s and under 500 MB for a million.

    .venv/bin/python bench/bench_fleet.py                          # passwd-file, 1,000,000
    .venv/bin/python bench/bench_fleet.py --kind sql --runs 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ENV = "BENCH_FLEET_DB_PASSWORD"
POLICY = """\
state_dir: {state}
policies:
  standard: {{rules: [{{name: old, older_than: 365d, action: delete}}]}}
  vip: {{schedule: '30 2 * * *'}}
  isp: {{rules: [{{name: old, older_than: 90d, action: delete}}]}}
credentials:
  master: {{username: admin, password_env: BENCH_MASTER_PW, login_as: authzid}}
sources:
  - name: fleet
{source}
    account: {{host: imap.example.org, credentials: master, policy: standard}}
    policy_by:
      - {{match: '*7@example.org', policy: vip}}
      - {{domain: isp.example.net, policy: isp}}
      - {{match: 'nobody*', policy: vip}}
"""


def _rss_mib() -> float:
    # VmHWM, not ru_maxrss: Linux keeps the parent's peak in ru_maxrss across exec.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(path: str) -> None:
    from retention.service.serve import load_policy

    if os.environ.get("BENCH_FLEET_SQL"):
        import sqlalchemy  # noqa: F401  (imports before the baseline)

        import retention.sources.sql  # noqa: F401
    baseline = _rss_mib()
    started = time.perf_counter()
    loaded = load_policy(Path(path))
    ready = time.perf_counter() - started
    peak_ready = _rss_mib()
    started = time.perf_counter()
    n = 0
    for group in loaded.groups.values():
        for account in group:
            n += account.port is None
    built = time.perf_counter() - started
    after_build = _rss_mib()
    from prometheus_client import CollectorRegistry, generate_latest

    from retention.service.metrics import Metrics

    started = time.perf_counter()
    registry = CollectorRegistry()
    metrics = Metrics(registry, account_metrics=loaded.config.service.account_metrics)
    metrics.set_accounts(loaded.config, loaded.periods, loaded.accounts)
    body = generate_latest(registry)
    served = time.perf_counter() - started
    print(json.dumps({
        "serve_ready_seconds": ready + served, "metrics_seconds": served,
        "metrics_body_bytes": len(body), "peak_serve_mib": _rss_mib(),
        "accounts": len(loaded.config.accounts), "groups": {s: len(g) for s, g in
                                                            loaded.groups.items()},
        "ready_seconds": ready, "peak_rss_mib": peak_ready, "baseline_rss_mib": baseline,
        "build_all_seconds": built, "peak_after_build_mib": after_build, "built": n,
    }))


def _passwd(directory: Path, count: int) -> str:
    path = directory / "users.passwd"
    started = time.perf_counter()
    with path.open("w", encoding="utf-8") as f:
        for i in range(count):
            domain = "isp.example.net" if i % 5 == 0 else "example.org"
            f.write(f"user{i}@{domain}:{{PLAIN}}pw{i}::::::\n")
    print(f"passwd-file: {count:,} users written in {time.perf_counter() - started:.1f} s")
    return f"    type: passwd-file\n    path: {path}"


def _runs(policy: Path, runs: int, env: dict[str, str], expected: int) -> int:
    for run in range(1, runs + 1):
        proc = subprocess.run([sys.executable, __file__, "--child", str(policy)],
                              capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            print(f"run {run}: failed:\n{proc.stderr}", file=sys.stderr)
            return 1
        m = json.loads(proc.stdout.strip().splitlines()[-1])
        if m["accounts"] != expected:
            print(f"run {run}: {m['accounts']} accounts, expected {expected}", file=sys.stderr)
            return 1
        print(f"run {run}: {m['accounts']:,} accounts ready to schedule in "
              f"{m['ready_seconds']:.1f} s, peak RSS {m['peak_rss_mib']:.0f} MiB (after "
              f"imports {m['baseline_rss_mib']:.0f} MiB); groups {m['groups']}; building "
              f"every Account once lazily: {m['build_all_seconds']:.1f} s, peak RSS then "
              f"{m['peak_after_build_mib']:.0f} MiB; serve's metric state + one scrape "
              f"({m['metrics_body_bytes'] / 1024:.0f} KiB): {m['metrics_seconds']:.1f} s, "
              f"ready to serve in {m['serve_ready_seconds']:.1f} s, peak RSS "
              f"{m['peak_serve_mib']:.0f} MiB")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kind", choices=["passwd-file", "sql"], default="passwd-file")
    parser.add_argument("--child", metavar="POLICY", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return 0
    env = {**os.environ, "BENCH_MASTER_PW": "x"}
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        d = Path(tmp)
        if args.kind == "passwd-file":
            source = _passwd(d, args.accounts)
            (d / "policy.yaml").write_text(POLICY.format(state=d / "state", source=source))
            return _runs(d / "policy.yaml", args.runs, env, args.accounts)
        from retention.testing.postgres import Postgres, postgres_unavailable_reason

        reason = postgres_unavailable_reason()
        if reason is not None:
            print(f"bench_fleet: PostgreSQL unavailable: {reason}", file=sys.stderr)
            return 1
        with Postgres() as pg:
            started = time.perf_counter()
            pg.execute(
                "CREATE TABLE users (username text PRIMARY KEY, host text, policy text)",
                "INSERT INTO users SELECT 'user' || g || CASE WHEN g % 5 = 0 THEN "
                "'@isp.example.net' ELSE '@example.org' END, 'imap.example.org', NULL "
                f"FROM generate_series(1, {args.accounts}) g",
                "VACUUM ANALYZE users",
                f"GRANT SELECT ON users TO {pg.reader}",
            )
            print(f"table: {args.accounts:,} rows made in {time.perf_counter() - started:.1f} s")
            source = (f"    type: sql\n    url: '{pg.url()}'\n    password_env: {ENV}\n"
                      "    query: SELECT username, host, policy FROM users")
            (d / "policy.yaml").write_text(POLICY.format(state=d / "state", source=source))
            env.update({ENV: pg.reader_password, "BENCH_FLEET_SQL": "1"})
            return _runs(d / "policy.yaml", args.runs, env, args.accounts)


if __name__ == "__main__":
    sys.exit(main())
