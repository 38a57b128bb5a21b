"""Rendering of run results (retention.report): the JSON contract (README "Reports"), the table."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

from retention import report
from retention.model import SEEN, Message, MessageRef
from retention.plan import Action, ActionKind, Clock, Kept, KeptReason, KeptTotal, Plan
from retention.result import AccountResult, ActionResult, RunResult

NOW = datetime(2026, 11, 28, 3, 0, 0, tzinfo=UTC)

ACCOUNT_KEYS = {
    "account", "protocol", "status", "error", "error_kind", "run_id", "usage_bytes",
    "limit_bytes", "ratio", "usage_after_bytes", "freed_bytes", "actions", "totals",
}
ACTION_KEYS = {
    "folder", "uid", "uidvalidity", "uidl", "message_id", "internal_date", "size", "action",
    "to_folder", "rule", "clock", "reason", "result",
}


def message(folder: str = "Trash", uid: int = 17, size: int = 2048,
            message_id: str | None = "<x@y>") -> Message:
    return Message(
        ref=MessageRef(folder, 1700000000, uid),
        size=size,
        received=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        flags=frozenset({SEEN}),
        message_id=message_id,
    )


def delete(uid: int = 17, size: int = 2048) -> Action:
    return Action(message(uid=uid, size=size), ActionKind.DELETE, "trash", Clock.SAVED,
                  "saved 2025-01-02, older than 30d")


def move(uid: int = 5, size: int = 1000) -> Action:
    return Action(message("INBOX", uid, size, message_id=None), ActionKind.MOVE, "old-mail",
                  Clock.RECEIVED, "received 2025-01-02, older than 2y", to_folder="Archive")


def account(results: tuple[ActionResult, ...], *, dry_run: bool = True, **kw: object
            ) -> AccountResult:
    fields: dict[str, object] = {
        "account": "alice", "protocol": "imap", "run_id": "20261128T030000Z-abc123",
        "dry_run": dry_run, "status": "ok", "started": NOW,
        "finished": NOW + timedelta(seconds=2), "results": results,
        "plan": Plan("alice", tuple(r.action for r in results), usage_bytes=800_000,
                     limit_bytes=1_000_000, usage_after_bytes=800_000 - 2048),
        "usage_bytes": 800_000, "limit_bytes": 1_000_000,
        "usage_after_bytes": 800_000 - 2048, "usage_source": "quota",
    }
    fields.update(kw)
    return AccountResult(**fields)  # type: ignore[arg-type]


def test_json_has_the_contract_shape_for_a_dry_run() -> None:
    results = (ActionResult(delete(), "planned"), ActionResult(move(), "planned"))
    run = RunResult(dry_run=True, generated_at=NOW, accounts=(account(results),))
    doc = json.loads(report.to_json(run))

    assert doc["dry_run"] is True
    assert doc["generated_at"] == "2026-11-28T03:00:00+00:00"
    (acct,) = doc["accounts"]
    assert ACCOUNT_KEYS <= set(acct)
    assert acct["account"] == "alice" and acct["protocol"] == "imap"
    assert acct["status"] == "ok" and acct["error"] is None and acct["error_kind"] is None
    assert acct["run_id"] == "20261128T030000Z-abc123"
    assert acct["usage_bytes"] == 800_000 and acct["limit_bytes"] == 1_000_000
    assert acct["ratio"] == 0.8
    assert acct["usage_after_bytes"] == 800_000 - 2048
    assert acct["freed_bytes"] == 2048  # the move frees nothing
    assert acct["totals"] == {"delete": {"messages": 1, "bytes": 2048},
                              "move": {"messages": 1, "bytes": 1000}}
    first, second = acct["actions"]
    assert ACTION_KEYS <= set(first) and ACTION_KEYS <= set(second)
    assert first == first | {
        "folder": "Trash", "uid": 17, "uidvalidity": 1700000000, "uidl": None,
        "message_id": "<x@y>", "internal_date": "2025-01-02T03:04:05+00:00", "size": 2048,
        "action": "delete", "to_folder": None, "rule": "trash", "clock": "saved",
        "reason": "saved 2025-01-02, older than 30d", "result": "planned",
    }
    assert second["action"] == "move" and second["to_folder"] == "Archive"
    assert second["message_id"] is None and second["clock"] == "received"


def test_json_real_run_results_and_totals_count_only_what_was_done() -> None:
    results = (
        ActionResult(delete(1, 100), "done"),
        ActionResult(delete(2, 200), "skipped", "UIDVALIDITY changed"),
        ActionResult(delete(3, 400), "failed", "NO [SERVERBUG]"),
    )
    run = RunResult(dry_run=False, generated_at=NOW, accounts=(account(results, dry_run=False),))
    doc = json.loads(report.to_json(run))
    assert doc["dry_run"] is False
    (acct,) = doc["accounts"]
    assert [a["result"] for a in acct["actions"]] == ["done", "skipped", "failed"]
    assert acct["freed_bytes"] == 100
    assert acct["totals"] == {"delete": {"messages": 1, "bytes": 100}}


def test_json_error_account_has_nulls_not_missing_keys() -> None:
    failed = AccountResult(
        account="bob", protocol="imap", run_id="r1", dry_run=False, status="error",
        started=NOW, finished=NOW, error="login rejected by mail.example.com",
        error_kind="auth",
    )
    doc = json.loads(report.to_json(RunResult(False, NOW, (failed,))))
    (acct,) = doc["accounts"]
    assert ACCOUNT_KEYS <= set(acct)
    assert acct["status"] == "error" and acct["error_kind"] == "auth"
    assert acct["usage_bytes"] is None and acct["limit_bytes"] is None
    assert acct["ratio"] is None and acct["usage_after_bytes"] is None
    assert acct["actions"] == [] and acct["totals"] == {} and acct["freed_bytes"] == 0


def test_json_unknown_limit_is_null_and_unicode_is_kept() -> None:
    a = Action(message("仕事/古い", 3), ActionKind.TRASH, "work", Clock.RECEIVED, "r",
               to_folder="ゴミ箱")
    acct = account((ActionResult(a, "planned"),), limit_bytes=None)
    text = report.to_json(RunResult(True, NOW, (acct,)))
    assert "仕事/古い" in text and "ゴミ箱" in text  # not \u-escaped
    (row,) = json.loads(text)["accounts"]
    assert row["limit_bytes"] is None and row["ratio"] is None
    assert row["actions"][0]["to_folder"] == "ゴミ箱"


def test_text_report_has_the_facts_and_totals() -> None:
    results = (ActionResult(delete(), "planned"), ActionResult(move(), "planned"))
    text = report.to_text(RunResult(True, NOW, (account(results),)))
    assert "DRY RUN" in text
    assert "alice" in text
    assert "Trash" in text and "Archive" in text and "old-mail" in text
    assert "saved 2025-01-02, older than 30d" in text
    assert "total delete: 1 messages" in text
    assert "total move: 1 messages" in text
    assert "would free" in text
    assert "1 accounts, 0 failed" in text


def test_text_report_shows_errors_and_failures() -> None:
    failed = AccountResult(
        account="bob", protocol="imap", run_id="r1", dry_run=False, status="error",
        started=NOW, finished=NOW, error="connection refused by mail.example.com:993",
        error_kind="connect",
    )
    ok = account((ActionResult(delete(), "done"),), dry_run=False)
    text = report.to_text(RunResult(False, NOW, (failed, ok)))
    assert "connection refused by mail.example.com:993" in text
    assert "connect" in text
    assert "freed" in text
    assert "2 accounts, 1 failed" in text


def test_usage_json_shape() -> None:
    ok = account((), usage_bytes=500, limit_bytes=1000)
    summed = account((), usage_bytes=300, limit_bytes=None, usage_source="sum")
    doc = json.loads(report.usage_json([ok, summed]))
    assert set(doc) == {"accounts"}
    first, second = doc["accounts"]
    keys = {"account", "protocol", "status", "error", "usage_bytes", "limit_bytes", "ratio",
            "source"}
    assert keys <= set(first)
    assert first == first | {"account": "alice", "protocol": "imap", "status": "ok",
                             "error": None, "usage_bytes": 500, "limit_bytes": 1000,
                             "ratio": 0.5, "source": "quota"}
    assert second["source"] == "sum" and second["ratio"] is None


def _kept_plan(listed: bool) -> Plan:
    kept = (KeptTotal("INBOX", KeptReason.PROTECTED_UNREAD, 2, 3000),
            KeptTotal("Trash", KeptReason.CAPPED, 1, 2048))
    messages = (Kept(message("INBOX", 3), KeptReason.PROTECTED_UNREAD, "old-mail"),
                Kept(message("INBOX", 4, size=952), KeptReason.PROTECTED_UNREAD, "old-mail"),
                Kept(message("Trash", 9), KeptReason.CAPPED, "trash"))
    return Plan("alice", (delete(),), usage_bytes=800_000, limit_bytes=1_000_000,
                usage_after_bytes=800_000 - 2048, kept=kept,
                kept_messages=messages if listed else None)


def test_reports_count_what_is_kept_per_folder_and_reason() -> None:
    acct = account((ActionResult(delete(), "planned"),), plan=_kept_plan(listed=False))
    text = report.to_text(RunResult(True, NOW, (acct,)))
    assert "kept: 3 messages, 4.9 KiB" in text
    assert re.search(r"INBOX\s+protected: unread\s+2\s+2\.9 KiB", text), text
    assert re.search(r"Trash\s+capped: deferred by max_delete_per_run\s+1\s+2\.0 KiB", text)
    assert "UID 3" not in text and "\n   kept  " not in text  # counted, not listed
    (row,) = json.loads(report.to_json(RunResult(True, NOW, (acct,))))["accounts"]
    assert row["kept"] == [
        {"folder": "INBOX", "reason": "protected_unread", "messages": 2, "bytes": 3000},
        {"folder": "Trash", "reason": "capped", "messages": 1, "bytes": 2048}]
    assert row["kept_messages"] is None


def test_list_kept_lists_each_kept_message() -> None:
    acct = account((ActionResult(delete(), "planned"),), plan=_kept_plan(listed=True))
    text = report.to_text(RunResult(True, NOW, (acct,)))
    listed = [line.split() for line in text.splitlines() if line.startswith("   kept  ")]
    assert [(w[1], w[2], w[-1]) for w in listed] == [
        ("INBOX", "3", "unread"), ("INBOX", "4", "unread"), ("Trash", "9", "max_delete_per_run")]
    (row,) = json.loads(report.to_json(RunResult(True, NOW, (acct,))))["accounts"]
    assert [(k["folder"], k["uid"], k["reason"], k["rule"], k["size"])
            for k in row["kept_messages"]] == [
        ("INBOX", 3, "protected_unread", "old-mail", 2048),
        ("INBOX", 4, "protected_unread", "old-mail", 952),
        ("Trash", 9, "capped", "trash", 2048)]
    from retention.page.html import to_html

    page = to_html(RunResult(True, NOW, (acct,)))
    assert page.count('<tr data-reason="protected_unread">') == 2
    assert 'data-folder="Trash" data-reason="capped"' in page
