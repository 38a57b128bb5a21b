"""Benchmark: the journal's cost per account pass, SQLite file against PostgreSQL (state_url).

    .venv/bin/python bench/bench_journal.py [--deletes 90] [--archives 90] [--runs 5]

Measured by hand, never asserted in tests. Replays the journal calls of one typical
cleanup pass (``bind_mailbox``, ``latest_by_key`` of the plan, one ``planned`` commit
and one ``deleted`` commit for ``--deletes`` messages; for ``--archives`` messages an
intent, ``planned``, ``archived``, ``verified`` and ``deleted``; then ``open_rows``) on
a fresh journal of each backend, ``--runs`` times, and prints the median wall time per
pass. SQLite: ``synchronous=FULL`` on the local disk. PostgreSQL: the test rig
(``retention.testing.postgres``) on 127.0.0.1, which runs with ``fsync=off``, so its
figure is the statements' and round trips' cost without the server's disk flush (a real
server adds one WAL flush per commit, like SQLite's fsync).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retention.model import Message, MessageRef  # noqa: E402
from retention.plan import Action, ActionKind, Clock  # noqa: E402
from retention.state.journal import (  # noqa: E402
    ARCHIVED,
    DELETED,
    VERIFIED,
    Journal,
    NewRow,
)
from retention.testing.postgres import Postgres  # noqa: E402

T0 = datetime(2026, 12, 4, 3, 0, tzinfo=UTC)


def _action(uid: int, kind: ActionKind) -> Action:
    m = Message(MessageRef("INBOX", 1733300000, uid), 20_000 + uid, T0 - timedelta(days=800),
                frozenset({"\\Seen"}), message_id=f"<bench-{uid}@example.org>")
    return Action(m, kind, "old", Clock.RECEIVED, "received more than 2y ago",
                  archive="cold" if kind is ActionKind.ARCHIVE else None)


def one_pass(j: Journal, account: str, deletes: int, archives: int) -> None:
    j.bind_mailbox(account, f"imap://{account}@mail.example.org:993")
    dels = [_action(u, ActionKind.DELETE) for u in range(1, deletes + 1)]
    arcs = [_action(u, ActionKind.ARCHIVE) for u in range(10_000, 10_000 + archives)]
    j.latest_by_key(account, {a.message.ref.key() for a in dels + arcs})
    if dels:
        ids = j.add_planned("bench", account, [NewRow(a) for a in dels])
        j.mark(ids, DELETED, name="removed")
    if arcs:
        with j.transaction("planned"):
            intent = j.add_intent(account, "bench", "cold", f"/arch/{account}.mbox", 0)
            ids = j.add_planned("bench", account, [
                NewRow(a, sha256="a" * 64, copy_sha256="b" * 64, location="/arch/x.mbox",
                       locator={"offset": 0}, intent_id=intent) for a in arcs])
        with j.transaction("archived"):
            j.mark(ids, ARCHIVED)
            j.clear_intents([intent])
        j.mark(ids, VERIFIED)
        j.mark(ids, DELETED, name="removed")
    assert j.open_rows(account) == []


def measure(open_journal: object, runs: int, deletes: int, archives: int) -> float:
    times = []
    for run in range(runs):
        j = open_journal()  # type: ignore[operator]
        try:
            start = time.perf_counter()
            one_pass(j, f"bench{run}", deletes, archives)
            times.append(time.perf_counter() - start)
        finally:
            j.close()
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deletes", type=int, default=90)
    ap.add_argument("--archives", type=int, default=0)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-journal-") as tmp:
        lite = measure(lambda: Journal.open(Path(tmp) / "journal.sqlite3"), args.runs,
                       args.deletes, args.archives)
    with Postgres() as pg:
        os.environ["PGPASSWORD"] = pg.superuser_password
        url = f"postgresql://{pg.superuser}@127.0.0.1:{pg.port}/{pg.database}"
        Journal.open_url(url).close()  # engine and schema: once per process, not per pass
        pgsql = measure(lambda: Journal.open_url(url), args.runs, args.deletes, args.archives)
    what = f"{args.deletes} deletes + {args.archives} archives per pass, median of {args.runs}"
    print(f"journal per pass ({what}):")
    print(f"  SQLite (synchronous=FULL)          {lite * 1000:8.1f} ms")
    print(f"  PostgreSQL 127.0.0.1 (rig, fsync off) {pgsql * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
