"""``retention run --metrics-textfile``: the one-shot run's metrics for node_exporter.

The file has the service's names and labels, is replaced atomically (a temporary file in
the same folder, renamed), and carries counters and the last success over from the
previous file, so the alert rules written for ``serve`` work for a timer too.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from retention.config.schema import Config
from retention.model import Message, MessageRef
from retention.plan import Action, ActionKind, Clock, Plan
from retention.result import AccountResult, ActionResult
from retention.service.metrics import hashed
from retention.service.textfile import write_run_metrics

T0 = datetime(2026, 12, 3, 3, 0, tzinfo=UTC)


def config(**service: object) -> Config:
    return Config.model_validate({
        "policies": {"p": {"schedule": "0 3 * * *"}},
        "accounts": [{"name": n, "host": "h", "username": "u", "password_env": "P",
                      "policy": "p"} for n in ("alice", "bob")],
        "service": service,
    })


def done(uid: int, size: int) -> ActionResult:
    msg = Message(ref=MessageRef("INBOX", 1, uid), size=size, received=T0 - timedelta(days=400))
    action = Action(message=msg, kind=ActionKind.DELETE, rule="old", clock=Clock.RECEIVED,
                    reason="old")
    return ActionResult(action=action, result="done")


def result(name: str, status: str = "ok", *, at: datetime = T0, results=(),
           usage: int = 500) -> AccountResult:
    plan = Plan(account=name, actions=tuple(r.action for r in results), short_by_bytes=0)
    return AccountResult(
        account=name, protocol="imap", run_id="r", dry_run=False, status=status,
        started=at, finished=at + timedelta(seconds=3),
        error_kind="auth" if status == "error" else None,
        error="refused" if status == "error" else None,
        plan=plan if status == "ok" else None, results=tuple(results),
        usage_bytes=usage if status == "ok" else None,
        usage_after_bytes=usage if status == "ok" else None,
        limit_bytes=1000 if status == "ok" else None, messages=10 if status == "ok" else None,
    )


def samples(path: Path) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(path.read_text(encoding="utf-8")):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def get(path: Path, name: str, **labels: str) -> float | None:
    return samples(path).get((name, frozenset(labels.items())))


def test_the_file_has_the_services_names_and_values(tmp_path: Path) -> None:
    cfg = config()
    path = tmp_path / "retention.prom"
    write_run_metrics(path, cfg, cfg.accounts,
                      [result("alice", results=[done(1, 100), done(2, 50)]),
                       result("bob", "error")], dry_run=False)
    assert get(path, "retention_mailbox_usage_bytes", account="alice") == 500
    assert get(path, "retention_mailbox_limit_bytes", account="alice") == 1000
    assert get(path, "retention_last_success_timestamp_seconds",
               account="alice") == (T0 + timedelta(seconds=3)).timestamp()
    assert get(path, "retention_last_success_timestamp_seconds", account="bob") is None
    assert get(path, "retention_actions_total", account="alice", action="delete",
               rule="old") == 2
    assert get(path, "retention_freed_bytes_total", account="alice", action="delete") == 150
    assert get(path, "retention_account_errors_total", account="bob", reason="auth") == 1
    assert get(path, "retention_account_errors_total", account="alice", reason="auth") == 0
    assert get(path, "retention_schedule_period_seconds", account="bob") == 86400
    assert get(path, "retention_config_last_reload_successful") == 1
    assert get(path, "retention_run_duration_seconds_count") == 2
    assert [p.name for p in tmp_path.iterdir()] == ["retention.prom"]  # no temporary left


def test_counters_and_the_last_success_carry_over_from_the_previous_file(tmp_path):
    cfg = config()
    path = tmp_path / "retention.prom"
    write_run_metrics(path, cfg, cfg.accounts,
                      [result("alice", results=[done(1, 100)]), result("bob", "error")],
                      dry_run=False)
    later = T0 + timedelta(days=1)
    write_run_metrics(path, cfg, cfg.accounts,
                      [result("alice", "error", at=later),
                       result("bob", "error", at=later)], dry_run=False)
    # alice failed this time: her last success is still yesterday's, so "no success within
    # twice the schedule" can fire; the errors add up run after run (increase() sees them).
    assert get(path, "retention_last_success_timestamp_seconds",
               account="alice") == (T0 + timedelta(seconds=3)).timestamp()
    assert get(path, "retention_last_run_timestamp_seconds",
               account="alice") == (later + timedelta(seconds=3)).timestamp()
    assert get(path, "retention_account_errors_total", account="bob", reason="auth") == 2
    assert get(path, "retention_account_errors_total", account="alice", reason="auth") == 1
    assert get(path, "retention_actions_total", account="alice", action="delete",
               rule="old") == 1
    write_run_metrics(path, cfg, cfg.accounts,
                      [result("alice", at=later, results=[done(5, 7)])], dry_run=False)
    assert get(path, "retention_actions_total", account="alice", action="delete",
               rule="old") == 2
    assert get(path, "retention_freed_bytes_total", account="alice", action="delete") == 107


def test_hashed_labels_carry_over_too_and_names_never_appear(tmp_path):
    cfg = config(account_label="hash")
    path = tmp_path / "retention.prom"
    for _ in range(2):
        write_run_metrics(path, cfg, cfg.accounts, [result("bob", "error")], dry_run=False)
    assert get(path, "retention_account_errors_total", account=hashed("bob"),
               reason="auth") == 2
    assert "bob" not in path.read_text(encoding="utf-8")


def test_a_dry_run_only_measures(tmp_path):
    cfg = config()
    path = tmp_path / "retention.prom"
    write_run_metrics(path, cfg, cfg.accounts, [result("alice", results=[done(1, 100)])],
                      dry_run=True)
    assert get(path, "retention_mailbox_usage_bytes", account="alice") == 500
    assert get(path, "retention_last_success_timestamp_seconds", account="alice") is None
    assert get(path, "retention_actions_total", account="alice", action="delete",
               rule="old") is None


@pytest.fixture
def strict_umask():
    old = os.umask(0o077)  # the shipped systemd units' UMask=0077
    yield
    os.umask(old)


def test_written_atomically_by_a_rename_in_the_same_folder(tmp_path, monkeypatch, strict_umask):
    cfg = config()
    path = tmp_path / "retention.prom"
    path.write_text("# the previous file\n", encoding="utf-8")
    renames: list[tuple[str, str]] = []
    real = os.replace

    def rename(src, dst):
        renames.append((os.fspath(src), os.fspath(dst)))
        assert path.read_text(encoding="utf-8") == "# the previous file\n"  # still whole
        real(src, dst)

    monkeypatch.setattr(os, "replace", rename)
    write_run_metrics(path, cfg, cfg.accounts, [result("alice")], dry_run=False)
    ((src, dst),) = renames
    assert dst == os.fspath(path) and src != dst
    assert Path(src).parent == path.parent and not Path(src).name.endswith(".prom")
    assert get(path, "retention_mailbox_usage_bytes", account="alice") == 500
    assert path.stat().st_mode & 0o777 == 0o644  # node_exporter reads it, whatever the umask

    # A write that fails leaves the previous file as it was and no temporary behind.
    def full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    before = path.read_text(encoding="utf-8")
    with pytest.raises(OSError):
        write_run_metrics(path, cfg, cfg.accounts, [result("bob")], dry_run=False)
    assert path.read_text(encoding="utf-8") == before
    assert [p.name for p in tmp_path.iterdir()] == ["retention.prom"]


def test_an_unreadable_previous_file_starts_from_zero(tmp_path):
    cfg = config()
    path = tmp_path / "retention.prom"
    path.write_text("this is { not the exposition format\n", encoding="utf-8")
    write_run_metrics(path, cfg, cfg.accounts, [result("bob", "error")], dry_run=False)
    assert get(path, "retention_account_errors_total", account="bob", reason="auth") == 1


@pytest.mark.parametrize("name, message", [
    ("metrics.txt", "must end in .prom"),
    ("missing/metrics.prom", "does not exist"),
])
def test_an_unusable_path_is_exit_two_before_any_account(tmp_path, capsys, name, message):
    from retention.cli import main

    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        "policies: {p: {}}\n"
        "accounts: [{name: a, host: 127.0.0.1, port: 9, username: u, password_env: NOPE_X,"
        " policy: p, security: none, allow_plaintext: true}]\n", encoding="utf-8")
    assert main(["run", "-c", str(policy), "--metrics-textfile", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert "--metrics-textfile" in err and message in err and "Traceback" not in err
