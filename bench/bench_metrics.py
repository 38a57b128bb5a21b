"""Benchmark: ``/metrics`` of one agent owning 1,000,000 accounts (account_metrics top:100).

    .venv/bin/python bench/bench_metrics.py [--accounts 1000000] [--top 100] [--runs 5]

Measured by hand, never asserted in tests. Builds the service's ``Metrics`` exactly as
``serve`` does (``set_accounts`` from a policy, then one measurement and one run result
per account, with usage ratios spread over 0-110% and 1% of the accounts in error), then
renders ``--runs`` rounds of: the Prometheus text exposition (``generate_latest``), then
``GET /metrics`` through the service's WSGI app (``service.http.make_app``: client_python's
``make_wsgi_app``), plain and gzip. Prints the body size, the median times, the number of
series, and the cost of filling the state (the observations a real sweep would deliver
over a day).
With ``--mode all`` and fewer accounts it shows what the per-account series cost instead.
Target (issue 13): under 200 KB and 0.2 s at 1,000,000 accounts under top:100.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

from retention.config.schema import Account, Config, Policy  # noqa: E402
from retention.result import AccountResult  # noqa: E402
from retention.service.http import make_app  # noqa: E402
from retention.service.metrics import Metrics  # noqa: E402

SCHEDULE = "0 3 * * *"
T0 = datetime(2026, 12, 3, 3, 0, tzinfo=UTC)
LIMIT = 2 * 1024**3


def fleet(n: int) -> Config:
    # model_construct: a million validated Account models would time the schema, not this.
    policy = Policy.model_validate({"schedule": SCHEDULE})
    accounts = [Account.model_construct(name=f"user{i:07d}@example.net", host="imap",
                                        username=f"user{i:07d}", policy="std", schedule=None)
                for i in range(n)]
    return Config.model_construct(policies={"std": policy}, accounts=accounts,
                                  state_dir=Path("."), sources=[])


def result(name: str, i: int, status: str) -> AccountResult:
    usage = (i * 7919) % 1100 * LIMIT // 1000  # 0..110% of the limit, well spread
    return AccountResult(
        account=name, protocol="imap", run_id="r", dry_run=False, status=status,
        started=T0, finished=T0 + timedelta(seconds=2), usage_bytes=usage,
        usage_after_bytes=usage, limit_bytes=LIMIT, messages=1000,
        error="connection refused" if status == "error" else None,
        error_kind="connect" if status == "error" else None,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=1_000_000)
    ap.add_argument("--top", type=int, default=100)
    ap.add_argument("--mode", default=None, help="all | none | top:K (default top:--top)")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    mode = args.mode or f"top:{args.top}"

    config = fleet(args.accounts)
    t = time.perf_counter()
    registry = CollectorRegistry()
    metrics = Metrics(registry, account_metrics=mode, clock=lambda: T0.timestamp() + 3600)
    metrics.set_accounts(config, {SCHEDULE: 86400.0})
    metrics.begin_sweep(SCHEDULE, args.accounts)
    setup = time.perf_counter() - t
    t = time.perf_counter()
    for i, account in enumerate(config.accounts):
        status = "error" if i % 100 == 0 else "ok"
        metrics.observe_measurement(result(account.name, i, status))
        metrics.observe_run(result(account.name, i, status))
    fill = time.perf_counter() - t

    # generate_latest alone (what the hand-written handler sent), then GET /metrics through
    # the served app (client_python's make_wsgi_app behind service.http), plain and with
    # Accept-Encoding: gzip as Prometheus sends it. Interleaved round by round, so that a
    # busy machine slows all three alike.
    app = make_app(registry, lambda: True, lambda: True)
    kinds = {"plain": {}, "gzip": {"HTTP_ACCEPT_ENCODING": "gzip"}}
    times, body = [], b""
    served: dict[str, tuple[list[float], int]] = {k: ([], 0) for k in kinds}
    for _ in range(args.runs):
        t = time.perf_counter()
        body = generate_latest(registry)
        times.append(time.perf_counter() - t)
        for label, extra in kinds.items():
            environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", "QUERY_STRING": "",
                       **extra}
            t = time.perf_counter()
            size = len(b"".join(app(environ, lambda *a: None)))
            served[label][0].append(time.perf_counter() - t)
            served[label] = (served[label][0], size)
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"accounts={args.accounts} account_metrics={mode}")
    print(f"  /metrics body: {len(body) / 1024:.1f} KiB, {series} series")
    print(f"  render (generate_latest): median {statistics.median(times) * 1000:.1f} ms, "
          f"max {max(times) * 1000:.1f} ms over {args.runs} runs")
    for label, (app_times, size) in served.items():
        print(f"  GET /metrics ({label}): {size / 1024:.1f} KiB, median "
              f"{statistics.median(app_times) * 1000:.1f} ms, max {max(app_times) * 1000:.1f} ms")
    print(f"  set_accounts: {setup:.1f} s; 2 observations per account: {fill:.1f} s "
          f"({fill / max(1, 2 * args.accounts) * 1e6:.1f} us each); peak RSS {rss:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
