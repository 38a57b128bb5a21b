"""The runner (retention.run.account) against the in-memory fake server: outcomes, retries, locks.

Faults a real server cannot produce on demand (a connection refused twice and then accepted,
a drop in the middle of a scan) are injected through the connector.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from retention import report
from retention.adapters.fake import FakeServer, FakeSession
from retention.config.schema import Account, Config
from retention.errors import AuthError, ConnectError, ProtocolError, TlsError
from retention.model import FLAGGED, SEEN
from retention.result import RunResult
from retention.run.account import (
    BACKOFF,
    RETRIES,
    measure_account,
    run_account,
    run_all,
)
from retention.state import StateDir

NOW = datetime(2026, 11, 28, 3, 0, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SECRET = "s3cret-Pa55word-zz"


def make_config(tmp_path: Path, *, policy: dict[str, Any] | None = None,
                accounts: tuple[str, ...] = ("alice",), **account_fields: Any) -> Config:
    policy = policy if policy is not None else {"rules": [
        {"name": "old", "folders": ["INBOX"], "older_than": "1y", "action": "delete"},
        {"name": "trash", "folders": ["\\Trash"], "older_than": "30d", "age_by": "received",
         "action": "delete"},
    ]}
    return Config.model_validate({
        "state_dir": tmp_path / "state",
        "policies": {"p": policy},
        "accounts": [
            {"name": name, "host": f"{name}.example", "username": name,
             "password_env": "RT_UNIT_PW", "policy": "p", **account_fields}
            for name in accounts
        ],
    })


@pytest.fixture(autouse=True)
def password(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("RT_UNIT_PW", SECRET)
    return SECRET


def populated(quota_bytes: int | None = 1_000_000) -> tuple[FakeServer, dict[str, Any]]:
    """INBOX: two old read, one old flagged, one young; Trash: one old, one young."""
    server = FakeServer.standard(quota_bytes=quota_bytes)
    refs = {
        "old1": server.add("INBOX", size=1000, received=NOW - 800 * DAY, flags={SEEN}),
        "old2": server.add("INBOX", size=2000, received=NOW - 500 * DAY, flags={SEEN}),
        "flagged": server.add("INBOX", size=4000, received=NOW - 900 * DAY,
                              flags={SEEN, FLAGGED}),
        "young": server.add("INBOX", size=8000, received=NOW - 3 * DAY, flags={SEEN}),
        "trash_old": server.add("Trash", size=16_000, received=NOW - 60 * DAY, flags={SEEN}),
        "trash_young": server.add("Trash", size=32_000, received=NOW - 2 * DAY, flags={SEEN}),
    }
    return server, refs


class Connector:
    """A connector that fails the first calls with the given errors, then connects."""

    def __init__(self, server: FakeServer, *errors: BaseException,
                 session_faults: list[dict[str, Any]] | None = None) -> None:
        self.server = server
        self.errors = list(errors)
        self.session_faults = list(session_faults or [])
        self.calls: list[tuple[str, str, bool]] = []
        self.sessions: list[FakeSession] = []

    def __call__(self, account: Account, password: str, readonly: bool) -> FakeSession:
        self.calls.append((account.name, password, readonly))
        if self.errors:
            raise self.errors.pop(0)
        faults = self.session_faults.pop(0) if self.session_faults else None
        session = self.server.session(readonly=readonly, fail_on=faults)
        self.sessions.append(session)
        return session


def run(config: Config, connect: Callable[..., Any], *, dry_run: bool = False,
        sleeps: list[float] | None = None, name: str = "alice") -> Any:
    sink = sleeps if sleeps is not None else []
    return run_account(config, config.account(name), dry_run=dry_run, now=NOW,
                       connect=connect, sleep=sink.append)


def uids(server: FakeServer, folder: str) -> list[int]:
    return server.uids(folder)


# ------------------------------------------------------------------ happy paths


def test_dry_run_plans_and_changes_nothing(tmp_path: Path) -> None:
    server, refs = populated()
    before = server.state()
    connect = Connector(server)

    result = run(make_config(tmp_path), connect, dry_run=True)

    assert result.status == "ok", result.error
    assert server.state() == before
    assert [c[2] for c in connect.calls] == [True]  # a read-only session
    assert connect.calls[0][1] == SECRET
    assert {r.action.message.ref for r in result.results} == {
        refs["old1"], refs["old2"], refs["trash_old"]}
    assert {r.result for r in result.results} == {"planned"}
    assert result.usage_bytes == server.usage_bytes()
    assert result.limit_bytes == 1_000_000
    assert result.usage_after_bytes == server.usage_bytes() - 19_000
    assert result.dry_run is True
    assert all(s.closed for s in connect.sessions)


def test_real_run_does_the_plan_and_measures_again(tmp_path: Path) -> None:
    server, refs = populated()
    usage_before = server.usage_bytes()

    result = run(make_config(tmp_path), Connector(server))

    assert result.status == "ok", result.error
    assert {r.result for r in result.results} == {"done"}
    assert uids(server, "INBOX") == [refs["flagged"].uid, refs["young"].uid]
    assert uids(server, "Trash") == [refs["trash_young"].uid]
    assert result.usage_bytes == usage_before
    assert result.usage_after_bytes == server.usage_bytes() == usage_before - 19_000
    assert result.freed_bytes == 19_000
    doc = report.account_dict(result)
    assert doc["usage_after_bytes"] == server.usage_bytes()


def test_no_quota_uses_the_policy_limit(tmp_path: Path) -> None:
    server, _ = populated(quota_bytes=None)
    policy = {"quota": {"limit": "1MiB"}, "rules": []}
    result = run(make_config(tmp_path, policy=policy), Connector(server), dry_run=True)
    assert result.status == "ok", result.error
    assert result.usage_source == "sum"
    assert result.limit_bytes == 1024 * 1024
    assert result.usage_bytes == server.usage_bytes()


# ------------------------------------------------------------------ retries


def test_connect_error_is_retried_twice_then_fails(tmp_path: Path) -> None:
    server, _ = populated()
    before = server.state()
    connect = Connector(server, *(ConnectError(f"refused #{i}") for i in range(5)))
    sleeps: list[float] = []

    result = run(make_config(tmp_path), connect, sleeps=sleeps)

    assert RETRIES == 2
    assert len(connect.calls) == 3  # the first try and two retries
    assert sleeps == list(BACKOFF[:2]) and all(s > 0 for s in sleeps)
    assert result.status == "error"
    assert result.error_kind == "connect"
    assert result.error == "refused #2"
    assert server.state() == before


def test_connect_error_then_success(tmp_path: Path) -> None:
    server, refs = populated()
    connect = Connector(server, ConnectError("refused"), ConnectError("reset"))
    sleeps: list[float] = []

    result = run(make_config(tmp_path), connect, sleeps=sleeps)

    assert result.status == "ok", result.error
    assert len(connect.calls) == 3 and len(sleeps) == 2
    assert refs["old1"].uid not in uids(server, "INBOX")


def test_connection_dropped_mid_scan_is_retried(tmp_path: Path) -> None:
    server, _ = populated()
    connect = Connector(server, session_faults=[{"scan": ConnectError("dropped")}])
    sleeps: list[float] = []

    result = run(make_config(tmp_path), connect, dry_run=True, sleeps=sleeps)

    assert result.status == "ok", result.error
    assert len(connect.sessions) == 2 and len(sleeps) == 1
    assert connect.sessions[0].closed  # the broken session was closed, not leaked


@pytest.mark.parametrize(("error", "kind"), [
    (AuthError("login rejected by alice.example"), "auth"),
    (TlsError("certificate verify failed for alice.example"), "tls"),
    (ProtocolError("NO [UNAVAILABLE] try later"), "protocol"),
])
def test_non_connection_errors_are_not_retried(tmp_path: Path, error: Exception,
                                               kind: str) -> None:
    server, _ = populated()
    connect = Connector(server, error, ConnectError("never reached"))
    sleeps: list[float] = []

    result = run(make_config(tmp_path), connect, sleeps=sleeps)

    assert len(connect.calls) == 1, "a rejected login must not be retried in the same run"
    assert sleeps == []
    assert result.status == "error"
    assert result.error_kind == kind
    assert result.error == str(error)
    assert SECRET not in (result.error or "")


# ------------------------------------------------------------------ skip, hold, secrets


def test_locked_account_is_skipped(tmp_path: Path) -> None:
    server, _ = populated()
    before = server.state()
    config = make_config(tmp_path)
    connect = Connector(server)

    with StateDir(config.state_dir).lock("alice"):
        result = run(config, connect)

    assert result.status == "skipped" and result.skip_reason == "locked"
    assert result.error and "another agent" in result.error
    assert connect.calls == []
    assert server.state() == before
    # Skipped is not failed, but the account was not cleaned: exit 1 unless the caller
    # says another agent holding it is fine (issue 15).
    assert RunResult(False, NOW, (result,)).exit_code == 1
    assert RunResult(False, NOW, (result,)).exit_code_for(skip_locked_ok=True) == 0
    # The lock is released afterwards: the next run works.
    assert run(config, connect).status == "ok"


@pytest.mark.parametrize("where", ["account", "policy"])
def test_hold_is_report_only(tmp_path: Path, where: str) -> None:
    server, refs = populated()
    before = server.state()
    if where == "account":
        config = make_config(tmp_path, hold=True)
    else:
        config = make_config(tmp_path, policy={"hold": True, "rules": [
            {"name": "old", "folders": ["INBOX"], "older_than": "1y", "action": "delete"}]})
    connect = Connector(server)

    result = run(config, connect, dry_run=False)

    assert result.status == "ok", result.error
    assert [c[2] for c in connect.calls] == [True]  # read-only although not a dry-run
    assert server.state() == before
    assert result.results and {r.result for r in result.results} == {"planned"}
    assert refs["old1"] in {r.action.message.ref for r in result.results}
    assert result.plan is not None and result.plan.hold
    assert report.account_dict(result)["hold"] is True
    assert "HOLD" in report.to_text(RunResult(False, NOW, (result,)))


def test_missing_secret_fails_only_that_account(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RT_UNIT_PW")
    server, _ = populated()
    connect = Connector(server)
    result = run(make_config(tmp_path), connect)
    assert result.status == "error"
    assert result.error_kind == "config"
    assert "RT_UNIT_PW" in (result.error or "")
    assert connect.calls == []


def test_unexpected_bug_fails_the_account_not_the_run(tmp_path: Path) -> None:
    server, _ = populated()
    connect = Connector(server, session_faults=[{"list_folders": RuntimeError("oops")}])
    result = run(make_config(tmp_path), connect)
    assert result.status == "error"
    assert result.error_kind == "other"
    assert "oops" in (result.error or "")
    assert all(s.closed for s in connect.sessions)


# ------------------------------------------------------------------ run_all, measure


def test_run_all_one_failure_others_still_run(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    servers = {"alice": populated()[0], "bob": populated()[0], "carol": populated()[0]}

    def connect(account: Account, password: str, readonly: bool) -> FakeSession:
        if account.name == "bob":
            raise AuthError("login rejected by bob.example")
        return servers[account.name].session(readonly=readonly)

    config = make_config(tmp_path, accounts=("alice", "bob", "carol"))

    result = run_all(config, dry_run=False, now=NOW, connect=connect)

    assert [a.account for a in result.accounts] == ["alice", "bob", "carol"]
    assert [a.status for a in result.accounts] == ["ok", "error", "ok"]
    assert result.exit_code == 1
    assert result.accounts[1].error_kind == "auth"
    assert len(servers["carol"].uids("INBOX")) == 2

    only = run_all(config, ["carol"], dry_run=True, now=NOW, connect=connect)
    assert [a.account for a in only.accounts] == ["carol"]
    assert only.exit_code == 0


def test_measure_account(tmp_path: Path) -> None:
    server, _ = populated()
    before = server.state()
    connect = Connector(server)
    config = make_config(tmp_path)
    result = measure_account(config, config.account("alice"), now=NOW, connect=connect)
    assert result.status == "ok", result.error
    assert result.usage_bytes == server.usage_bytes()
    assert result.limit_bytes == 1_000_000
    assert result.usage_source == "quota"
    assert [c[2] for c in connect.calls] == [True]
    assert server.state() == before

    failing = Connector(server, AuthError("rejected"))
    bad = measure_account(config, config.account("alice"), now=NOW, connect=failing)
    assert bad.status == "error" and bad.error_kind == "auth"


@pytest.mark.parametrize("dry_run", [True, False])
def test_move_to_a_special_use_the_server_lacks_fails_those_actions(
    tmp_path: Path, dry_run: bool
) -> None:
    """The rule's would-be actions are reported failed with the reason; nothing moves."""
    server, refs = populated()
    config = make_config(tmp_path, policy={"rules": [
        {"name": "to-all", "folders": ["INBOX"], "older_than": "1y",
         "action": {"move_to": "\\All"}},
    ]})
    before = server.state()
    result = run_account(config, config.accounts[0], dry_run=dry_run, now=NOW,
                         connect=Connector(server))
    assert result.status == "ok"
    failed = [r for r in result.results if r.result == "failed"]
    assert {r.action.message.ref for r in failed} == {refs["old1"], refs["old2"]}
    assert all("special use" in (r.detail or "") for r in failed)
    assert server.state() == before
    assert result.plan is not None and result.plan.failed_rules[0][0] == "to-all"


# ------------------------------------------------------------------ Message-IDs


class Recorder:
    """A ``fail_on`` value that records the refs each ``message_ids`` call was given."""

    def __init__(self, exc: BaseException | None = None) -> None:
        self.calls: list[list[Any]] = []
        self.exc = exc

    def __call__(self, refs: Any) -> None:
        self.calls.append(list(refs))
        if self.exc is not None:
            raise self.exc


def fake_id(ref: Any) -> str:
    return f"<fake-{ref.uidvalidity}-{ref.uid}@fake.example>"


@pytest.mark.parametrize("dry_run", [True, False])
def test_message_ids_are_read_for_the_acted_on_messages_only(
    tmp_path: Path, dry_run: bool
) -> None:
    """A received-clock scan reads no header: the runner reads the Message-IDs of the
    planned messages, per folder, and the report and the audit history carry them."""
    server, refs = populated()
    # Also a move whose target the server lacks: a failed action, reported with its id.
    config = make_config(tmp_path, policy={"rules": [
        {"name": "old", "folders": ["INBOX"], "older_than": "1y", "action": "delete"},
        {"name": "trash", "folders": ["\\Trash"], "older_than": "30d", "age_by": "received",
         "action": {"move_to": "\\All"}},
    ]})
    recorder = Recorder()
    connect = Connector(server, session_faults=[{"message_ids": recorder}])
    before = server.state()

    result = run(config, connect, dry_run=dry_run)

    assert result.status == "ok", result.error
    acted = {refs["old1"], refs["old2"], refs["trash_old"]}
    assert sorted(map(sorted, recorder.calls)) == [
        sorted([refs["old1"], refs["old2"]]), [refs["trash_old"]]]
    by_ref = {r.action.message.ref: r for r in result.results}
    assert set(by_ref) == acted
    for ref in acted:  # FakeServer.add's Message-IDs
        assert by_ref[ref].action.message.message_id == fake_id(ref)
    doc = report.account_dict(result)
    assert all(a["message_id"] for a in doc["actions"])
    if dry_run:
        assert server.state() == before and connect.sessions[0].readonly
    else:
        from retention.state.journal import Journal

        with Journal.open(tmp_path / "state" / "journal.sqlite3") as journal:
            removed = journal.removals(account="alice")
        assert sorted((r.uid, r.message_id) for r in removed) == sorted(
            (r.uid, fake_id(r)) for r in (refs["old1"], refs["old2"]))


def test_a_sent_clock_scan_already_read_the_message_ids(tmp_path: Path) -> None:
    server, refs = populated()
    config = make_config(tmp_path, policy={"rules": [
        {"name": "old", "folders": ["INBOX"], "older_than": "1y", "age_by": "sent",
         "action": "delete"},
    ]})
    connect = Connector(server)
    result = run(config, connect, dry_run=True)
    assert result.status == "ok", result.error
    assert connect.sessions[0].calls["message_ids"] == 0
    assert {r.action.message.ref for r in result.results} == {refs["old1"], refs["old2"]}
    assert all(r.action.message.message_id for r in result.results)


@pytest.mark.parametrize("dry_run", [True, False])
def test_message_ids_only_when_the_report_shows_them_or_the_pass_acts(
    tmp_path: Path, dry_run: bool
) -> None:
    """A dry-run whose report does not show Message-IDs (text, HTML) does not read them;
    a real pass always does (its journal and audit history carry them)."""
    server, refs = populated()
    connect = Connector(server)
    config = make_config(tmp_path)
    result = run_account(config, config.account("alice"), dry_run=dry_run, now=NOW,
                         connect=connect, sleep=lambda _: None, message_ids=False)
    assert result.status == "ok", result.error
    assert {r.action.message.ref for r in result.results} >= {refs["old1"], refs["old2"]}
    assert (connect.sessions[0].calls["message_ids"] == 0) is dry_run
    assert all((r.action.message.message_id is None) is dry_run for r in result.results)


def test_a_folder_changed_before_its_message_ids_are_read_is_a_warning(
    tmp_path: Path,
) -> None:
    from retention.errors import UidValidityChanged

    server, refs = populated()
    recorder = Recorder(UidValidityChanged("INBOX", "UIDVALIDITY changed"))
    connect = Connector(server, session_faults=[{"message_ids": recorder}])
    result = run(make_config(tmp_path), connect, dry_run=True)
    assert result.status == "ok", result.error
    assert any("INBOX" in w and "Message-IDs not read" in w for w in result.warnings)
    ids = {r.action.message.ref: r.action.message.message_id for r in result.results}
    assert ids == {refs["old1"]: None, refs["old2"]: None, refs["trash_old"]: None}


def test_pop3_message_ids_of_the_acted_on_messages(tmp_path: Path) -> None:
    server = FakeServer(protocol="pop3")
    old = server.add(size=100)
    server.add(size=200)
    config = make_config(tmp_path, protocol="pop3", policy={"rules": [
        {"name": "all", "folders": ["INBOX"], "older_than": "1d", "action": "delete"},
    ]})
    first = run(config, Connector(server), dry_run=True)  # first seen now: nothing is old
    assert first.status == "ok" and first.results == ()
    server.add(size=300)  # first seen by the second run
    recorder = Recorder()
    connect = Connector(server, session_faults=[{"message_ids": recorder}])
    result = run_account(config, config.account("alice"), dry_run=True, now=NOW + 2 * DAY,
                         connect=connect)
    assert result.status == "ok", result.error
    assert len(recorder.calls) == 1 and len(recorder.calls[0]) == 2 and old in recorder.calls[0]
    assert [r.action.message.message_id for r in result.results] == [
        server.message(r.action.message.ref).message_id  # type: ignore[union-attr]
        for r in result.results]
    assert all(r.action.message.message_id for r in result.results)


def test_a_session_without_message_ids_still_runs(tmp_path: Path) -> None:
    """A MailSession written before ``message_ids`` existed: the run goes on without ids."""
    server, refs = populated()

    class OldSession(FakeSession):
        message_ids = None  # type: ignore[assignment]

    def connect(account: Account, password: str, readonly: bool) -> FakeSession:
        return OldSession(server, readonly=readonly)

    result = run(make_config(tmp_path), connect)
    assert result.status == "ok", result.error
    assert {r.result for r in result.results} == {"done"}
    assert all(r.action.message.message_id is None for r in result.results)
