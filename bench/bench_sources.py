"""Benchmark: read 1,000,000 accounts through the SQL source reader (and the LDAP one).

Scenario. A private PostgreSQL (``retention.testing.postgres``: initdb in a temp dir,
127.0.0.1, fsync off) gets a table ``users(username, host, policy)`` of ``--accounts`` rows
(default 1,000,000), made server-side by ``generate_series``. Then, in a fresh child
process per run, ``retention.sources.sql.entries`` streams
``SELECT username, host, policy FROM users`` (as the non-superuser ``reader``, password
from the environment, batch size ``--batch-size``) and the child only counts the rows, so
what is measured is the reader: connection, server-side cursor, row -> dict of text.

Printed per run: rows, wall time, rows/s, the child's peak RSS (``VmHWM``) and its RSS
after the imports, before the first row (so the difference is what the reader holds). The
issue-9 budget for the whole pipeline (fleet-core measures it) is 60 s and 500 MB for a
million accounts; the reader is one part of it.

With ``--source ldap`` the same is done against a private OpenLDAP slapd
(``retention.testing.slapd``, entries loaded by slapadd) with a paged search of
``--batch-size`` entries per page over ldaps://, as the non-admin reader DN.

    .venv/bin/python bench/bench_sources.py                 # 1,000,000 rows, 3 runs
    .venv/bin/python bench/bench_sources.py --accounts 100000 --runs 1 --batch-size 5000
    .venv/bin/python bench/bench_sources.py --source ldap --accounts 100000 --runs 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ENV = "BENCH_SOURCES_DB_PASSWORD"
QUERY = "SELECT username, host, policy FROM users"


def _rss_mib() -> float:
    """Peak RSS so far. VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a
    child would report its parent's peak (the parent builds the test data)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(spec: str, batch_size: int) -> None:
    """Stream every row/entry and print one JSON line with the measurements."""
    # Everything imported before the baseline, so the RSS difference is the reading.
    import ldap  # noqa: F401
    import psycopg  # noqa: F401
    import sqlalchemy  # noqa: F401

    from retention.sources import ldap as ldap_source
    from retention.sources import sql

    baseline = _rss_mib()
    started = time.perf_counter()
    rows = 0
    usernames = 0
    from retention.config.sources import LdapSource, SqlSource

    if spec.startswith("{"):  # LDAP: the settings as JSON
        entries = ldap_source.entries(LdapSource.model_validate({
            **json.loads(spec), "type": "ldap", "name": "bench", "bind_password_env": ENV,
            "filter": "(objectClass=inetOrgPerson)", "page_size": batch_size,
            "attributes": {"username": "mail", "policy": "departmentNumber"},
            "timeout": 60}))
        key = "mail"
    else:
        entries = sql.entries(SqlSource.model_validate({
            "type": "sql", "name": "bench", "url": spec, "query": QUERY,
            "password_env": ENV, "batch_size": batch_size}))
        key = "username"
    for entry in entries:
        rows += 1
        usernames += bool(entry[key])
    seconds = time.perf_counter() - started
    print(json.dumps({"rows": rows, "seconds": seconds, "peak_rss_mib": _rss_mib(),
                      "baseline_rss_mib": baseline, "usernames": usernames}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1000,
                        help="SQL rows per fetch, LDAP entries per page")
    parser.add_argument("--source", choices=("sql", "ldap"), default="sql")
    parser.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.batch_size)
        return 0

    if args.source == "ldap":
        return bench_ldap(args)
    from retention.testing.postgres import Postgres, postgres_unavailable_reason

    reason = postgres_unavailable_reason()
    if reason is not None:
        print(f"bench_sources: PostgreSQL unavailable: {reason}", file=sys.stderr)
        return 1
    with Postgres() as pg:
        started = time.perf_counter()
        pg.execute(
            "CREATE TABLE users (username text PRIMARY KEY, host text, policy text)",
            "INSERT INTO users SELECT 'user' || g || '@example.org', 'imap.example.org', "
            f"CASE WHEN g % 10 = 0 THEN 'vip' ELSE 'standard' END "
            f"FROM generate_series(1, {args.accounts}) g",
            "VACUUM ANALYZE users",
            f"GRANT SELECT ON users TO {pg.reader}",
        )
        print(f"table: {args.accounts:,} rows made in {time.perf_counter() - started:.1f} s "
              f"(PostgreSQL on 127.0.0.1:{pg.port})")
        return runs(args, pg.url(), pg.reader_password)


def bench_ldap(args: argparse.Namespace) -> int:
    from retention.testing.slapd import Slapd, make_users, slapd_unavailable_reason

    reason = slapd_unavailable_reason()
    if reason is not None:
        print(f"bench_sources: slapd unavailable: {reason}", file=sys.stderr)
        return 1
    started = time.perf_counter()
    with Slapd(make_users(args.accounts)) as server:
        print(f"directory: {args.accounts:,} entries loaded and slapd started in "
              f"{time.perf_counter() - started:.1f} s ({server.ldaps_url})")
        spec = json.dumps({"url": server.ldaps_url, "ca_file": str(server.ca_file),
                           "bind_dn": server.reader_dn, "base": server.people})
        return runs(args, spec, server.reader_password)


def runs(args: argparse.Namespace, spec: str, password: str) -> int:
    env = {**os.environ, ENV: password}
    for run in range(1, args.runs + 1):
        proc = subprocess.run(
            [sys.executable, __file__, "--child", spec, "--batch-size", str(args.batch_size)],
            capture_output=True, text=True, env=env, check=False,
        )
        if proc.returncode != 0:
            print(f"run {run}: reader failed:\n{proc.stderr}", file=sys.stderr)
            return 1
        m = json.loads(proc.stdout.strip().splitlines()[-1])
        if m["rows"] != args.accounts:
            print(f"run {run}: read {m['rows']} rows, expected {args.accounts}",
                  file=sys.stderr)
            return 1
        print(f"run {run}: {args.source} {m['rows']:,} accounts in {m['seconds']:.2f} s "
              f"({m['rows'] / m['seconds']:,.0f}/s), batch {args.batch_size}, "
              f"peak RSS {m['peak_rss_mib']:.0f} MiB "
              f"(after imports {m['baseline_rss_mib']:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
