"""Benchmark: a usage sweep over many accounts, `retention usage --jobs 8` against a raw loop.

    .venv/bin/python bench/bench_usage.py [--accounts 1000] [--jobs 8] [--runs 3] [--baseline DIR]

Measured by hand, never asserted in tests. One private Dovecot with the quota plugin and
``--accounts`` users (empty mailboxes: a usage sweep is LOGIN, GETQUOTAROOT, LOGOUT).
Two commands, alternating, each in a fresh interpreter:

* ``raw``: stdlib imaplib in ``--jobs`` threads, per account LOGIN, ``GETQUOTAROOT
  INBOX``, LOGOUT: the protocol floor of a sweep;
* ``retention``: ``retention usage -c POLICY --format json`` with ``--jobs N`` when the
  CLI has it (``service.max_connections_per_host`` raised to N: every account is on
  127.0.0.1), else one account after another (the script says which).

``--baseline DIR`` adds a third command, ``baseline``: the same ``retention usage`` run from
another source tree (e.g. ``git archive main | tar -x -C DIR``), in the same alternation,
so a change is compared with what it changes under the same load.

It prints accounts per second of each (wall time of the whole command, start-up
included), the medians and retention's (and the baseline's) share of the raw loop's rate.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cleanup import ROOT, byte_compile, rusage_method, timed  # noqa: E402

from retention.testing.dovecot import Dovecot, dovecot_unavailable_reason  # noqa: E402

PASSWORD = "bench-usage-pw"
RAW = """\
import imaplib, sys
from concurrent.futures import ThreadPoolExecutor
host, port, jobs, names = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
def one(name):
    m = imaplib.IMAP4(host, port)
    m.login(name, %r)
    typ, data = m.getquotaroot("INBOX")
    assert typ == "OK", typ
    m.logout()
with ThreadPoolExecutor(jobs) as pool:
    list(pool.map(one, names))
print(len(names), "accounts")
""" % PASSWORD


def has_jobs() -> bool:
    out = subprocess.run([sys.executable, "-m", "retention", "usage", "--help"],
                         capture_output=True, text=True, cwd=ROOT, check=False)
    return "--jobs" in out.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--accounts", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--baseline", type=Path, default=None,
                    help="another source tree whose retention runs as a third command")
    args, ignored = ap.parse_known_args()
    byte_compile()
    if ignored:
        print(f"ignoring arguments for other benchmarks: {' '.join(ignored)}")
    reason = dovecot_unavailable_reason()
    if reason:
        print(f"bench_usage: cannot start Dovecot: {reason}", file=sys.stderr)
        return 1
    jobs_flag = has_jobs()
    print(f"{args.accounts} accounts, concurrency {args.jobs}; retention "
          f"{'--jobs ' + str(args.jobs) if jobs_flag else 'has no --jobs: sequential'}; "
          f"{args.runs} runs; {os.cpu_count()} CPUs; CPU/RSS by {rusage_method()}", flush=True)
    rates: dict[str, list[float]] = {"raw": [], "retention": []}
    with tempfile.TemporaryDirectory(prefix="bench-usage-") as tmp, Dovecot() as dc:
        work = Path(tmp)
        names = [f"u{i:05d}" for i in range(args.accounts)]
        for name in names:
            dc.add_user(name, PASSWORD, quota_bytes=100 * 1024 * 1024)
        policy = {
            "state_dir": str(work / "state"),
            "service": {"max_connections_per_host": max(args.jobs, 1)},
            "policies": {"p": {"rules": [{"name": "old", "older_than": "365d",
                                          "action": "delete"}]}},
            "accounts": [{"name": n, "protocol": "imap", "host": dc.host,
                          "port": dc.imap_port, "security": "none", "allow_plaintext": True,
                          "username": n, "password_env": "BENCH_PASSWORD", "policy": "p"}
                         for n in names],
        }
        path = work / "policy.yaml"
        path.write_text(json.dumps(policy) + "\n", encoding="utf-8")
        env = {k: v for k, v in os.environ.items()
               if k not in ("RETENTION_STATE_DIR", "STATE_DIRECTORY", "RETENTION_CONFIG")}
        env["BENCH_PASSWORD"] = PASSWORD
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        argvs = {
            "raw": [sys.executable, "-c", RAW, dc.host, str(dc.imap_port), str(args.jobs),
                    *names],
            "retention": [sys.executable, "-m", "retention", "usage", "-c", str(path),
                          "--format", "json",
                          *(["--jobs", str(args.jobs)] if jobs_flag else [])],
        }
        envs = dict.fromkeys(argvs, env)
        if args.baseline is not None:
            argvs["baseline"] = argvs["retention"]
            envs["baseline"] = dict(env, PYTHONPATH=str(args.baseline.resolve()))
            byte_compile(args.baseline.resolve())
            rates["baseline"] = []
        tools = list(argvs)
        count = 0
        for run in range(-args.warmup + 1, args.runs + 1):
            shift = run % len(tools)
            for tool in tools[shift:] + tools[:shift]:
                count += 1
                out = work / f"{count:03d}-{tool}.txt"
                wall, cpu, rss, code = timed(argvs[tool], envs[tool], out, args.timeout)
                rate = args.accounts / wall
                label = f"run {run}" if run > 0 else "warm-up"
                ok = "ok" if code == 0 else "FAILED: " + out.read_text(errors="replace")[-300:]
                print(f"{label} {tool:<10} wall={wall:.2f}s cpu={cpu:.2f}s rss={rss:.1f}MiB "
                      f"{rate:.0f} accounts/s {ok}", flush=True)
                if run > 0:
                    rates[tool].append(rate)
    med = {t: statistics.median(v) for t, v in rates.items() if v}
    for tool, values in rates.items():
        if values:
            print(f"{tool:<10} median {med[tool]:.0f} accounts/s "
                  f"[{min(values):.0f} - {max(values):.0f}]")
    for tool in ("baseline", "retention"):
        if tool in med and "raw" in med:
            print(f"{tool} / raw: {100 * med[tool] / med['raw']:.0f}% of the raw rate")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
