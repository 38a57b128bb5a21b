"""Sharding: rendezvous ownership, the I/N grammar, and --shard / service.shard at the edges."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retention.config.settings import resolve_settings
from retention.config.shard import Shard, ShardSpecError, owner, parse_shard, weight
from retention.errors import ConfigError

NAMES = [f"user{i:03d}@example.org" for i in range(300)]


def shards_of(names: list[str], n: int) -> list[set[str]]:
    return [set(Shard(i, n).select(names, lambda x: x)) for i in range(n)]


def test_three_shards_partition_three_hundred_accounts() -> None:
    parts = shards_of(NAMES, 3)
    assert set().union(*parts) == set(NAMES)  # every account is owned ...
    assert sum(len(p) for p in parts) == len(NAMES)  # ... by exactly one shard
    for p in parts:  # and the split is roughly even (100 each; HRW is not exact)
        assert 60 <= len(p) <= 140, [len(q) for q in parts]


def test_a_fourth_shard_takes_about_a_quarter_and_moves_nothing_else() -> None:
    before = {name: owner(name, 3) for name in NAMES}
    after = {name: owner(name, 4) for name in NAMES}
    moved = [n for n in NAMES if before[n] != after[n]]
    assert {after[n] for n in moved} == {3}  # only to the new shard
    assert 0.15 * len(NAMES) <= len(moved) <= 0.35 * len(NAMES)  # ~1/4 = 75


@given(st.text(min_size=1, max_size=40), st.integers(min_value=1, max_value=50))
def test_owner_is_the_highest_weight(name: str, n: int) -> None:
    expected = max(range(n), key=lambda j: (weight(name, j), -j))
    assert owner(name, n) == expected
    assert sum(Shard(i, n).owns(name) for i in range(n)) == 1


def test_ownership_is_stable_across_processes() -> None:
    # Fixed values: a change of the hash would silently reshuffle every deployment.
    assert owner("alice@example.org", 8) == owner("alice@example.org", 8)
    assert weight("alice", 0) == int.from_bytes(
        __import__("hashlib").blake2b(b"alice\x000", digest_size=8).digest(), "big"
    )
    assert [owner(f"u{i}", 5) for i in range(10)] == [owner(f"u{i}", 5) for i in range(10)]


def test_distribution_over_many_shards_is_even() -> None:
    counts = Counter(owner(f"m{i}", 16) for i in range(4800))
    assert set(counts) == set(range(16))
    assert max(counts.values()) < 2 * min(counts.values())


@pytest.mark.parametrize(("text", "shard"), [
    ("0/1", Shard(0, 1)), ("2/8", Shard(2, 8)), (" 3 / 4 ", Shard(3, 4)),
    ("retention-5/6", Shard(5, 6)), ("my-agent-sts-0/3", Shard(0, 3)),
])
def test_parse_shard(text: str, shard: Shard) -> None:
    assert parse_shard(text) == shard
    assert str(shard) == f"{shard.index}/{shard.count}"


@pytest.mark.parametrize("text", ["", "1", "4/4", "-1/4", "1/0", "a/b", "1/4/5", "retention/3"])
def test_bad_shard_specs(text: str) -> None:
    with pytest.raises(ShardSpecError):
        parse_shard(text)


def test_service_shard_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETENTION_SHARD", "retention-2/3")
    assert resolve_settings(secrets_dir=[]).shard == "retention-2/3"
    monkeypatch.setenv("RETENTION_SHARD", "3/3")
    with pytest.raises(ConfigError, match=r"service\.shard .*RETENTION_SHARD.*0\.\.2"):
        resolve_settings(secrets_dir=[])


def _policy(tmp_path, n: int = 30) -> str:
    lines = [f"state_dir: {tmp_path / 'state'}", "policies: {p: {}}", "accounts:"]
    lines += [f"  - {{name: acct{i:02d}, host: 127.0.0.1, port: 1, security: none, "
              f"allow_plaintext: true, username: u, password_env: RT_NOPE, policy: p}}"
              for i in range(n)]
    path = tmp_path / "policy.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_cli_usage_and_run_take_only_their_shard(tmp_path, capsys, monkeypatch) -> None:
    from retention.cli import main

    monkeypatch.delenv("RETENTION_SHARD", raising=False)
    policy = _policy(tmp_path)
    seen: set[str] = set()
    for i in range(3):
        code = main(["usage", "-c", policy, "--shard", f"{i}/3", "--format", "json"])
        assert code == 1  # every account fails (no server): each is still listed
        import json
        names = {r["account"] for r in json.loads(capsys.readouterr().out)["accounts"]}
        assert names == {f"acct{j:02d}" for j in range(30) if owner(f"acct{j:02d}", 3) == i}
        assert not names & seen
        seen |= names
    assert len(seen) == 30
    monkeypatch.setenv("RETENTION_SHARD", "1/3")  # the environment is the default
    assert main(["run", "-c", policy, "--dry-run", "--format", "json",
                 "--output", str(tmp_path / "r.json")]) == 1
    import json
    ran = {r["account"] for r in json.loads((tmp_path / "r.json").read_text())["accounts"]}
    assert ran == {f"acct{j:02d}" for j in range(30) if owner(f"acct{j:02d}", 3) == 1}
    assert main(["run", "-c", policy, "--shard", "3/3"]) == 2
    assert "--shard" in capsys.readouterr().err


def test_accounts_command_lists_the_shard(tmp_path, capsys, monkeypatch) -> None:
    import json

    from retention.cli import main

    monkeypatch.delenv("RETENTION_SHARD", raising=False)
    policy = _policy(tmp_path)
    assert main(["accounts", "-c", policy, "--shard", "2/3", "--format", "json"]) == 0
    listed = {row["name"] for row in json.loads(capsys.readouterr().out)}
    assert listed == {f"acct{j:02d}" for j in range(30) if owner(f"acct{j:02d}", 3) == 2}


def test_serve_owns_only_its_shard(tmp_path) -> None:
    from prometheus_client import CollectorRegistry

    from retention.config.settings import ServiceSettings
    from retention.service.serve import RetentionService
    from tests.unit.test_service_unit import Fake

    fake = Fake()
    svc = RetentionService(Path(_policy(tmp_path)),
                           ServiceSettings(jitter=0, measure_every="1h", shard="retention-1/3"),
                           registry=CollectorRegistry(), run_account=fake.run,
                           measure_account=fake.measure)
    try:
        mine = {f"acct{j:02d}" for j in range(30) if owner(f"acct{j:02d}", 3) == 1}
        assert {a.name for a in svc.loaded.accounts} == mine
        assert svc.registry.get_sample_value("retention_accounts") == len(mine)
        svc.start(http=False)
        for schedule in svc.loaded.groups:
            svc.sweep(schedule)
        assert svc.pool.wait_idle(30)
        assert {name for name, _, _ in fake.runs} == mine
        assert svc.reload() is True  # a reload keeps the shard
        assert {a.name for a in svc.loaded.accounts} == mine
    finally:
        svc.shutdown(timeout=5)


def test_a_password_in_state_url_is_warned_about(tmp_path) -> None:
    from retention.config.load import load_config, warnings

    path = Path(_policy(tmp_path, 1))
    path.write_text(path.read_text() + "state_url: postgresql://u:pw@db/x\n")
    assert any("state_url carries a password" in w for w in warnings(load_config(path)))


def test_file_archives_under_a_shared_journal_are_warned_about(tmp_path) -> None:
    from retention.config.load import load_config, warnings

    path = Path(_policy(tmp_path, 1))
    text = path.read_text()
    path.write_text(text + "state_url: postgresql://u@db/x\narchives:\n"
                    "  flat: {type: mbox, path: '/srv/archive/{folder}.mbox'}\n"
                    "  per: {type: maildir, path: '/srv/archive/{account}'}\n")
    got = [w for w in warnings(load_config(path)) if w.startswith("archive ")]
    assert len(got) == 2 and "put {account} in path" in got[0]
    assert "{account} in path" not in got[1] and "every replica mounts" in got[1]
    path.write_text(text + "archives:\n  flat: {type: mbox, path: '/srv/{folder}.mbox'}\n")
    assert not [w for w in warnings(load_config(path)) if w.startswith("archive ")]
