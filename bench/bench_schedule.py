"""Benchmark: a policy file with 10,000 accounts must load, validate and schedule in under
10 s and 300 MB (README "Performance"). Measured by hand, not asserted in tests.

    .venv/bin/python bench/bench_schedule.py [--accounts 10000] [--runs 5]

Each run is a fresh subprocess (so peak RSS is that run's own), which:

1. ``load``: reads and validates the YAML (``service.load_policy``: schema, cross checks,
   grouping by schedule, every schedule's period);
2. ``schedule``: builds the service (metrics for every account, worker pool, one sweep job
   per distinct schedule, the measurement job) and starts it, HTTP server included;
3. ``measure_sweep``/``dispatch``: the start-up measurement sweep, then one sweep per
   schedule, submit every account to the pool with no-op run/measure functions, until the
   pool is idle (the scheduling overhead per account, without any mail server);
4. ``scrape``: one ``/metrics`` rendering with 10,000 accounts' series.

The parent prints each run and the medians. The limits apply to load + schedule (wall
clock; ``load_schedule_cpu_s`` is the same span in CPU time, which shows how much of the
wall time a busy machine added) and to the peak RSS (``ru_maxrss``) of the whole run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCHEDULES = ["0 3 * * *", "30 2 * * *", "0 */6 * * *", "15 4 * * 1-5"]


def write_policy(path: Path, accounts: int) -> None:
    lines = [
        "state_dir: ./state",
        "service:",
        "  jitter: 0",
        "  concurrency: 8",
        "  metrics_port: 0",
        "  metrics_address: 127.0.0.1",
        "policies:",
    ]
    for i, schedule in enumerate(SCHEDULES[:3]):
        lines += [
            f"  p{i}:",
            f"    schedule: '{schedule}'",
            "    quota: {limit: 2GiB, warn_above: 85%}",
            "    rules:",
            "      - {name: old-trash, folders: [\\Trash], older_than: 30d, action: delete}",
            "      - {name: big-old, older_than: 2y, larger_than: 5MB, action: delete}",
        ]
    lines.append("accounts:")
    for i in range(accounts):
        extra = f", schedule: '{SCHEDULES[3]}'" if i % 10 == 0 else ""
        lines.append(
            f"  - {{name: user{i:05d}, host: mx{i % 20}.example.net, port: 993, "
            f"username: user{i:05d}@example.net, password_env: PW_{i % 50}, "
            f"policy: p{i % 3}{extra}}}"
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def one_run(path: Path) -> dict[str, float]:
    from prometheus_client import CollectorRegistry, generate_latest

    from retention.config.settings import resolve_settings
    from retention.result import AccountResult
    from retention.service.serve import RetentionService, load_policy

    def fake(config, account, **_kw) -> AccountResult:
        now = datetime.now(UTC)
        return AccountResult(account=account.name, protocol="imap", run_id="b",
                             dry_run=False, status="ok", started=now, finished=now,
                             usage_bytes=1, usage_after_bytes=1, limit_bytes=2, messages=1)

    c0 = time.process_time()
    t0 = time.perf_counter()
    loaded = load_policy(path)
    t1 = time.perf_counter()
    settings = resolve_settings(loaded.config.service, secrets_dir=[])
    service = RetentionService(path, settings, loaded=loaded, registry=CollectorRegistry(),
                               run_account=fake, measure_account=fake)
    service._update_forecast = lambda *a, **k: None  # type: ignore[method-assign]
    service.start()
    jobs = len(service._scheduler.get_jobs())
    t2 = time.perf_counter()
    c2 = time.process_time()
    service._measuring_started.wait(30)  # the start-up measurement sweep ...
    service.pool.wait_idle(120)  # ... has submitted every account, and they are done
    t3 = time.perf_counter()
    for schedule in loaded.groups:
        service.sweep(schedule)
    service.pool.wait_idle(120)
    t4 = time.perf_counter()
    body = generate_latest(service.registry)
    t5 = time.perf_counter()
    code = service.shutdown(timeout=10)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "accounts": len(loaded.config.accounts), "jobs": jobs, "exit": code,
        "load_s": t1 - t0, "schedule_s": t2 - t1, "load_schedule_s": t2 - t0,
        "load_schedule_cpu_s": c2 - c0,
        "measure_sweep_s": t3 - t2, "dispatch_s": t4 - t3, "scrape_s": t5 - t4,
        "scrape_kb": len(body) / 1024, "peak_rss_mb": rss_mb,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "policy.yaml"
        write_policy(policy, args.accounts)
        size_kb = policy.stat().st_size / 1024
        print(f"{args.accounts} accounts, {size_kb:.0f} KiB of YAML, {args.runs} runs")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        results = []
        for i in range(args.runs):
            out = subprocess.run([sys.executable, __file__, "--one", str(policy)],
                                 capture_output=True, text=True, env=env, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(r)
            print(f"run {i + 1}: " + " ".join(
                f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    keys = [k for k, v in results[0].items() if isinstance(v, float)]
    med = {k: statistics.median(r[k] for r in results) for k in keys}
    print("median: " + " ".join(f"{k}={v:.3f}" for k, v in med.items()))
    ok = med["load_schedule_s"] < 10 and med["peak_rss_mb"] < 300
    print(f"limits (load+schedule < 10 s, peak RSS < 300 MB): {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
