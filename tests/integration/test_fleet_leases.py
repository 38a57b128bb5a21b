"""Leases on a real PostgreSQL, and two agents on overlapping shards against one
PostgreSQL and one Dovecot: every mailbox is processed exactly once per sweep, and the
shared journal's history (either agent's ``retention history``) lists each removal once."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retention.config.shard import owner
from retention.state.leases import Lease, LeaseStore, Refused, held
from retention.testing.dovecot import SeedMessage
from retention.testing.postgres import Postgres
from tests.integration.helpers import REPO, PolicyFile
from tests.integration.sources_support import postgres_fixture  # noqa: F401 - fixture

SEEN = frozenset({"\\Seen"})


def agent_url(pg: Postgres) -> str:
    """The URL an agent is given: no password (that comes from PGPASSWORD)."""
    return f"postgresql://{pg.superuser}@127.0.0.1:{pg.port}/{pg.database}"


def test_postgres_lease_store(postgres: Postgres, monkeypatch: pytest.MonkeyPatch,
                              tmp_path: Path) -> None:
    monkeypatch.setenv("PGPASSWORD", postgres.superuser_password)
    now = [2_000_000.0]
    a_store = LeaseStore.open(tmp_path, agent_url(postgres), clock=lambda: now[0])
    b_store = LeaseStore.open(tmp_path, agent_url(postgres), clock=lambda: now[0])
    try:
        assert "***" not in a_store.where and postgres.superuser_password not in a_store.where
        a = a_store.acquire("pg-box", "A", ttl=60)
        assert isinstance(a, Lease)
        assert isinstance(b_store.acquire("pg-box", "B", ttl=60), Refused)
        now[0] += 61
        b = b_store.acquire("pg-box", "B", ttl=60, once_within=3600)
        assert isinstance(b, Lease) and b.token == a.token + 1
        assert a_store.renew(a) is None  # fenced off
        assert b_store.release(b, done=True)
        refused = a_store.acquire("pg-box", "A", once_within=3600)
        assert isinstance(refused, Refused) and refused.reason == "done"

        # Many threads over two connection pools: never two holders of one account.
        inside: Counter[str] = Counter()
        passes: Counter[str] = Counter()
        bad: list[str] = []
        lock = threading.Lock()

        def worker(n: int) -> None:
            store = a_store if n % 2 else b_store
            for account in (f"pg-race-{i}" for i in range(15)):
                with held(store, account, f"w{n}", ttl=600, once_within=3600) as h:
                    if isinstance(h, Refused):
                        continue
                    with lock:
                        inside[account] += 1
                        bad.extend([account] if inside[account] > 1 else [])
                    with lock:
                        inside[account] -= 1
                        passes[account] += 1
                    h.succeeded = True

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not bad
        assert passes == Counter({f"pg-race-{i}": 1 for i in range(15)})
    finally:
        a_store.close()
        b_store.close()


def test_unreachable_state_url_fails_the_account_without_the_password(
        tmp_path: Path, make_user) -> None:
    user = make_user()
    pf = PolicyFile(tmp_path, {"p": {"rules": [{"name": "old", "older_than": "30d",
                                                "action": "delete"}]}},
                    extra={"state_url": "postgresql://u:hunter2-secret@127.0.0.1:1/x"})
    pf.add_imap(user)
    res = pf.run()
    assert res.code == 1
    report = json.loads(res.stdout)
    assert report["accounts"][0]["status"] == "error"
    assert "hunter2-secret" not in res.stdout + res.stderr


def test_two_agents_on_overlapping_shards_process_each_mailbox_once(
        tmp_path: Path, make_user, postgres: Postgres) -> None:
    old = datetime.now(UTC) - timedelta(days=400)
    users = [make_user() for _ in range(8)]
    for u in users:
        u.seed("INBOX", [SeedMessage(received=old, flags=SEEN, size=3000 + i) for i in range(3)]
               + [SeedMessage(received=datetime.now(UTC), flags=SEEN, size=2000)])
    policies = {"p": {"protect": ["flagged"],
                      "rules": [{"name": "old", "older_than": "30d", "action": "delete"}]}}
    shared = {"state_url": agent_url(postgres), "leases": {"once_within": "12h"}}
    # Two agents, each with its own state_dir (its own volume), one PostgreSQL.
    agents = [PolicyFile(tmp_path / n, policies, extra=shared) for n in ("a", "b")]
    names = [agents[0].add_imap(u) for u in users]
    for u in users:
        agents[1].add_imap(u)
    env = {"PGPASSWORD": postgres.superuser_password}
    # Agent a takes every account (1 shard); agent b shard 1 of 2: about half overlap.
    shards = ["0/1", "1/2"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "retention", "run", "-c", str(pf.path), "--format", "json",
             "--shard", shard, "--jobs", "4", "--output", str(pf.directory / "report.json"),
             # The overlap is meant: an account the other agent holds is no failure here.
             "--skip-locked-ok"],
            cwd=REPO, env=pf.subprocess_env(env), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )
        for pf, shard in zip(agents, shards, strict=True)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        assert postgres.superuser_password not in err
    reports = [json.loads((pf.directory / "report.json").read_text())["accounts"]
               for pf in agents]
    b_expected = {n for n in names if owner(n, 2) == 1}
    assert {r["account"] for r in reports[0]} == set(names)
    assert {r["account"] for r in reports[1]} == b_expected
    processed = Counter(r["account"] for rep in reports for r in rep if r["status"] == "ok")
    assert processed == Counter({n: 1 for n in names}), reports
    skipped = [r for rep in reports for r in rep if r["status"] == "skipped"]
    assert len(skipped) == len(b_expected)  # each overlap: one agent ran, the other skipped
    # And the mail: every mailbox lost its three old messages, once; the new one stays.
    for u in users:
        state = u.folder_state()
        assert len(state["INBOX"]) == 1, u.name
    # One journal for both (state_url): either agent's history lists every mailbox's
    # removals, each exactly once, whichever agent made them; none is in a state_dir.
    histories = []
    for pf in agents:
        hist = pf.cli("history", "--format", "json", env=env)
        assert hist.code == 0, hist.stderr
        histories.append(json.loads(hist.stdout)["entries"])
        assert not (pf.directory / pf.state_dir / "journal.sqlite3").exists()
    assert histories[0] == histories[1]
    entries = histories[0]
    assert Counter(e["account"] for e in entries) == Counter({n: 3 for n in names})
    assert len({(e["account"], e["folder"], e["uidvalidity"], e["uid"])
                for e in entries}) == len(entries)
    ran = {r["account"]: r["run_id"] for rep in reports for r in rep if r["status"] == "ok"}
    assert {(e["account"], e["run_id"]) for e in entries} == set(ran.items())
    # A second sweep within once_within does nothing anywhere; done recently is no
    # failure, even without --skip-locked-ok.
    again = agents[0].cli("run", "--format", "json", "--shard", "0/1", env=env)
    assert again.code == 0, again.stderr
    assert {(r["status"], r["skip_reason"]) for r in json.loads(again.stdout)["accounts"]} == {
        ("skipped", "recent")}
