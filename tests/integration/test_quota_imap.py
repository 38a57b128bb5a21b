"""Quota-driven cleanup against a real Dovecot (README "Quota").

Every mailbox here is seeded with messages whose sizes are whole KiB (CRLF only, so
Dovecot's virtual size equals the size), which makes Dovecot's quota (counted in KiB, with
``quota_vsizes``) exact: the planner's projection, the report and ``doveadm quota get`` can
then be compared byte for byte. Runs go through the real CLI in a subprocess; the mailbox
is compared before and after with ``Dovecot.folder_state`` (flags, SHA-256, INTERNALDATE).

The main scenario (a mailbox at 93% of 20 MiB) is set up once per module: a dry run, then
a real run, then ``retention history``; the tests below it check one aspect each.
"""

from __future__ import annotations

import csv
import io
import mailbox
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from math import floor
from pathlib import Path
from typing import Any

import pytest

from retention.testing.dovecot import Dovecot, MailUser, SeedMessage
from tests.integration.helpers import (
    FLAGGED,
    SEEN,
    UNREAD,
    CliResult,
    PolicyFile,
    Seeded,
    State,
    ago,
    sha256,
    state_diff,
)

KiB = 1024
MiB = 1024 * KiB


# ------------------------------------------------------------------------------ seeding

Spec = tuple[str, float, int, frozenset[str]]  # (tag, age in days, size in KiB, flags)


def seed(user: MailUser, folder: str, specs: Sequence[Spec]) -> dict[str, Seeded]:
    """Seed ``specs`` into ``folder`` in list order (so UIDs follow the list, not the age)."""
    msgs = [
        SeedMessage(received=ago(days=days), size=kib * KiB, flags=flags,
                    subject=f"quota test {tag}", message_id=f"<{tag}@quota.test>")
        for tag, days, kib, flags in specs
    ]
    raws = user.seed(folder, msgs)
    out = {}
    for (tag, _days, kib, flags), raw in zip(specs, raws, strict=True):
        assert len(raw) == kib * KiB and b"\n" not in raw.replace(b"\r\n", b"")
        out[tag] = Seeded(tag, folder, raw, flags, domain="quota.test")
    return out


def filler(user: MailUser, total_kib: int, parts: int) -> None:
    """``total_kib`` of old, read mail in a folder no rule looks at (it only uses quota)."""
    base, extra = divmod(total_kib, parts)
    specs = [(f"fill-{secrets.token_hex(4)}", 30.0, base + (1 if i < extra else 0), SEEN)
             for i in range(parts)]
    seed(user, "Projects", specs)


def quota_policy(*, old_mail: Any = "delete", cap: int | str | None = None,
                 hold: bool = False) -> dict[str, Any]:
    """The issue's policy: Junk, then Trash, then INBOX, only while over quota."""
    quota: dict[str, Any] = {"clean_above": "90%", "clean_to": "75%"}
    if cap is not None:
        quota["max_delete_per_run"] = cap
    policy: dict[str, Any] = {
        "keep_within": "7d",
        "protect": ["flagged", "unread"],
        "quota": quota,
        # age_by received: the messages are seeded today, so their SAVEDATE is today and
        # "oldest first" would otherwise just be seeding order.
        "rules": [
            {"name": "junk", "folders": ["\\Junk"], "when": "over_quota",
             "age_by": "received", "protect": ["flagged"], "action": "delete"},
            {"name": "trash", "folders": ["\\Trash"], "when": "over_quota",
             "age_by": "received", "action": "delete"},
            {"name": "old-mail", "folders": ["INBOX"], "when": "over_quota",
             "action": old_mail},
        ],
    }
    if hold:
        policy["hold"] = True
    return {"quota": policy}


def actions(acct: dict[str, Any]) -> list[tuple[str, int]]:
    """(folder, uid) of the report's actions, in report (= plan) order."""
    return [(a["folder"], a["uid"]) for a in acct["actions"]]


def ok(result: CliResult, name: str) -> dict[str, Any]:
    assert result.code == 0, str(result)
    acct = result.account(name)
    assert acct["status"] == "ok", str(result)
    assert acct["error"] is None
    return acct


def quota_target(limit: int) -> int:
    return floor(limit * 3 / 4)


# ------------------------------------------------------------- the 93% mailbox, once

LIMIT_1 = 20 * MiB

# Seeding order is deliberately not age order, so UID order != oldest first.
JUNK_1: list[Spec] = [
    ("junk-200d-unread", 200, 500, UNREAD),  # the junk rule protects flagged only: taken
    ("junk-400d", 400, 500, SEEN),
    ("junk-flagged", 600, 300, FLAGGED),  # protected by the rule
    ("junk-new", 2, 200, SEEN),  # keep_within
]
TRASH_1: list[Spec] = [
    ("trash-50d", 50, 600, SEEN),
    ("trash-100d", 100, 600, SEEN),
    ("trash-unread", 300, 300, UNREAD),  # protected by the policy
    ("trash-new", 1, 100, SEEN),  # keep_within
]
INBOX_1: list[Spec] = [
    ("inbox-2y", 730, 500, SEEN),
    ("inbox-5y", 1825, 500, SEEN),
    ("inbox-flagged", 2200, 1000, FLAGGED),
    ("inbox-3y", 1095, 500, SEEN),
    ("inbox-unread", 2200, 1000, UNREAD),
    ("inbox-4y", 1460, 500, SEEN),
    ("inbox-1y", 400, 500, SEEN),
    ("inbox-30d", 30, 500, SEEN),
    ("inbox-new", 3, 500, SEEN),  # keep_within
]
USAGE_1_KIB = 19050  # 93.02% of 20 MiB; 75% is 15360 KiB, so >= 3690 KiB must go
# Junk + Trash free 2200 KiB; two INBOX messages (1000) would not be enough, three are.
EXPECTED_1 = ["junk-400d", "junk-200d-unread", "trash-100d", "trash-50d",
              "inbox-5y", "inbox-4y", "inbox-3y"]
RULE_OF = {"junk": "junk", "trash": "trash", "inbox": "old-mail"}
UNTOUCHED_1 = ["junk-flagged", "junk-new", "trash-unread", "trash-new", "inbox-flagged",
               "inbox-unread", "inbox-new", "inbox-2y", "inbox-1y", "inbox-30d"]


@dataclass
class QuotaRun:
    user: MailUser
    pf: PolicyFile
    name: str
    seeded: dict[str, Seeded]
    usage_seeded: tuple[int, int | None]
    before: State
    dry: CliResult
    after_dry: State
    usage_after_dry: tuple[int, int | None]
    archive_after_dry: list[Path]
    history_after_dry: CliResult
    real: CliResult
    after: State
    usage_after: tuple[int, int | None]
    history_json: CliResult
    history_csv: CliResult
    history_since: CliResult
    history_text: CliResult


@pytest.fixture(scope="module")
def quota_run(dovecot: Dovecot, tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuotaRun]:
    user = dovecot.add_user(f"u_quota_{secrets.token_hex(4)}", quota_bytes=LIMIT_1)
    seeded = seed(user, "Junk", JUNK_1) | seed(user, "Trash", TRASH_1) | seed(user, "INBOX",
                                                                                INBOX_1)
    seeded_kib = sum(s.size for s in seeded.values()) // KiB
    filler(user, USAGE_1_KIB - seeded_kib, parts=10)
    usage_seeded = user.usage()

    tmp = tmp_path_factory.mktemp("quota93")
    pf = PolicyFile(tmp, quota_policy(old_mail={"archive": "cold"}), extra={
        "archives": {"cold": {"type": "mbox", "path": "./archive/{account}/{folder}.mbox"}},
    })
    name = pf.add_imap(user)
    before = user.folder_state()
    dry = pf.run(dry_run=True)
    after_dry = user.folder_state()
    usage_after_dry = user.usage()
    archive_after_dry = sorted((tmp / "archive").rglob("*")) if (tmp / "archive").exists() else []
    history_after_dry = pf.cli("history", "--format", "json")
    real = pf.run()
    after = user.folder_state()
    usage_after = user.usage()
    yield QuotaRun(
        user=user, pf=pf, name=name, seeded=seeded, usage_seeded=usage_seeded,
        before=before, dry=dry, after_dry=after_dry, usage_after_dry=usage_after_dry,
        archive_after_dry=archive_after_dry, history_after_dry=history_after_dry,
        real=real, after=after,
        usage_after=usage_after,
        history_json=pf.cli("history", "--format", "json"),
        history_csv=pf.cli("history", "--format", "csv"),
        history_since=pf.cli("history", "--since", "30d", "--format", "json"),
        history_text=pf.cli("history"),
    )


def test_seeded_mailbox_is_at_93_percent(quota_run: QuotaRun) -> None:
    assert quota_run.usage_seeded == (USAGE_1_KIB * KiB, LIMIT_1)
    assert USAGE_1_KIB * KiB / LIMIT_1 == pytest.approx(0.93, abs=0.001)


def test_dry_run_plans_junk_then_trash_then_oldest_inbox(quota_run: QuotaRun) -> None:
    r = quota_run
    acct = ok(r.dry, r.name)
    assert r.dry.report["dry_run"] is True
    assert acct["usage_bytes"] == USAGE_1_KIB * KiB
    assert acct["limit_bytes"] == LIMIT_1
    assert acct["over_quota"] is True
    assert acct["hold"] is False
    expected = [(r.seeded[t].folder, r.seeded[t].uid(r.before)) for t in EXPECTED_1]
    assert actions(acct) == expected  # rule order, then oldest first, then stop
    for tag, a in zip(EXPECTED_1, acct["actions"], strict=True):
        rule = RULE_OF[tag.split("-")[0]]
        assert a["rule"] == rule
        assert a["reason"] == f"over quota 93% > 90%: oldest in rule {rule}"
        assert a["result"] == "planned"
        assert a["message_id"] == r.seeded[tag].message_id
        assert a["size"] == r.seeded[tag].size
        if rule == "old-mail":
            assert (a["action"], a["archive"]) == ("archive", "cold")
        else:
            assert a["action"] == "delete"
    freed = sum(r.seeded[t].size for t in EXPECTED_1)
    assert acct["freed_bytes"] == freed
    assert acct["usage_after_bytes"] == USAGE_1_KIB * KiB - freed
    assert acct["usage_after_bytes"] <= 0.75 * LIMIT_1
    assert acct["short_by_bytes"] == 0
    assert acct["deferred_by_cap"] == 0
    assert acct["dropped"] == []


def test_dry_run_changed_nothing(quota_run: QuotaRun) -> None:
    r = quota_run
    assert r.after_dry == r.before
    assert r.usage_after_dry == r.usage_seeded
    assert r.archive_after_dry == []  # not even an empty archive file
    assert _entries(r.history_after_dry) == []  # and no removal in the audit log


def test_real_run_reaches_clean_to_and_matches_dovecot(quota_run: QuotaRun) -> None:
    r = quota_run
    acct = ok(r.real, r.name)
    assert r.real.report["dry_run"] is False
    used, limit = r.usage_after
    assert limit == LIMIT_1
    assert used <= 0.75 * LIMIT_1
    assert acct["usage_after_bytes"] == used  # the report measured, not guessed
    # The projection was exact (whole-KiB sizes): plan and server agree.
    assert used == ok(r.dry, r.name)["usage_after_bytes"]
    assert acct["usage_bytes"] == USAGE_1_KIB * KiB
    assert acct["short_by_bytes"] == 0
    assert [a["result"] for a in acct["actions"]] == ["done"] * len(EXPECTED_1)


def test_real_run_removes_exactly_the_planned_messages_in_order(quota_run: QuotaRun) -> None:
    r = quota_run
    acct = ok(r.real, r.name)
    expected = [(r.seeded[t].folder, r.seeded[t].uid(r.before)) for t in EXPECTED_1]
    assert actions(acct) == expected
    assert actions(acct) == actions(ok(r.dry, r.name))
    diff = state_diff(r.before, r.after)
    removed = {(folder, uid) for folder, d in diff.items() for uid in d.removed}
    assert removed == set(expected)
    assert all(not d.added and not d.changed for d in diff.values()), diff


def test_protected_and_recent_mail_untouched(quota_run: QuotaRun) -> None:
    r = quota_run
    for tag in UNTOUCHED_1:
        s = r.seeded[tag]
        uid = s.uid(r.before)
        assert r.after[s.folder].get(uid) == r.before[s.folder][uid], tag  # bytes, flags, date
        assert r.after[s.folder][uid].sha256 == sha256(s.raw)
    # Within INBOX it stopped as soon as the target was reached: the younger old mail stays.
    assert {"inbox-2y", "inbox-1y", "inbox-30d"} <= set(UNTOUCHED_1)


def test_archived_inbox_mail_is_in_the_mbox(quota_run: QuotaRun) -> None:
    r = quota_run
    files = sorted((r.pf.directory / "archive").rglob("*.mbox"))
    assert [f.relative_to(r.pf.directory / "archive") for f in files] == [
        Path(r.name) / "INBOX.mbox"]
    box = mailbox.mbox(files[0], create=False)
    try:
        got = [box.get_bytes(key) for key in box.keys()]
    finally:
        box.close()
    want = [r.seeded[t].raw for t in EXPECTED_1 if t.startswith("inbox-")]
    norm = [w.replace(b"\r\n", b"\n") for w in want]
    assert sorted(sha256(g.rstrip(b"\n")) for g in got) == sorted(
        sha256(n.rstrip(b"\n")) for n in norm)


def _entries(result: CliResult) -> list[dict[str, Any]]:
    assert result.code == 0, str(result)
    entries: list[dict[str, Any]] = result.report["entries"]
    return entries


def test_history_lists_each_removal_once(quota_run: QuotaRun) -> None:
    r = quota_run
    acct = ok(r.real, r.name)
    entries = _entries(r.history_json)
    got = sorted((e["folder"], e["uid"], e["message_id"], e["rule"], e["action"], e["run_id"],
                  e["account"]) for e in entries)
    want = sorted((a["folder"], a["uid"], a["message_id"], a["rule"], a["action"],
                   acct["run_id"], r.name) for a in acct["actions"])
    assert got == want
    for e in entries:
        assert e["size"] == r.seeded[e["message_id"][1:].split("@")[0]].size
        when = datetime.fromisoformat(e["when"])
        assert when.tzinfo is not None and abs((datetime.now(UTC) - when).days) < 1
        if e["action"] == "archive":
            assert e["archive"] == "cold" and e["archive_location"]
            assert e["sha256"] is not None


def test_history_csv_has_a_header_and_one_row_per_removal(quota_run: QuotaRun) -> None:
    r = quota_run
    assert r.history_csv.code == 0, str(r.history_csv)
    rows = list(csv.DictReader(io.StringIO(r.history_csv.stdout)))
    header = r.history_csv.stdout.splitlines()[0].split(",")
    assert {"when", "account", "folder", "message_id", "rule", "action", "run_id"} <= set(header)
    assert sorted(row["message_id"] for row in rows) == sorted(
        r.seeded[t].message_id for t in EXPECTED_1)


def test_history_since_includes_the_run(quota_run: QuotaRun) -> None:
    r = quota_run
    assert sorted(e["message_id"] for e in _entries(r.history_since)) == sorted(
        r.seeded[t].message_id for t in EXPECTED_1)
    assert r.history_text.code == 0, str(r.history_text)
    assert f"{len(EXPECTED_1)} removals" in r.history_text.stdout


# --------------------------------------------------- protected mail alone is over target


def test_short_by_bytes_when_protected_mail_exceeds_the_target(tmp_path: Path,
                                                               make_user: Any) -> None:
    limit = 10 * MiB
    user: MailUser = make_user(limit)
    seeded = seed(user, "INBOX", [
        ("p-flagged-1", 1000, 2000, FLAGGED),
        ("old-a", 900, 300, SEEN),
        ("p-unread-1", 1000, 2100, UNREAD),
        ("p-flagged-2", 800, 2000, FLAGGED),
        ("old-b", 800, 300, SEEN),
        ("p-unread-2", 700, 2100, UNREAD),
        ("recent", 2, 100, SEEN),
    ]) | seed(user, "Junk", [("junk-a", 200, 500, SEEN), ("junk-b", 100, 500, SEEN)])
    total = sum(s.size for s in seeded.values())
    assert user.usage() == (total, limit)  # 9900 KiB: 96.7%
    pf = PolicyFile(tmp_path, quota_policy())
    name = pf.add_imap(user)
    before = user.folder_state()

    dry = ok(pf.run(dry_run=True), name)
    text = pf.run(dry_run=True, fmt="text")
    assert text.code == 0, str(text)
    result = pf.run()
    acct = ok(result, name)
    after = user.folder_state()
    used, _ = user.usage()

    removable = ["junk-a", "junk-b", "old-a", "old-b"]
    assert actions(acct) == [(seeded[t].folder, seeded[t].uid(before)) for t in removable]
    assert [a["result"] for a in acct["actions"]] == ["done"] * 4
    assert acct["usage_after_bytes"] == used
    assert used == total - sum(seeded[t].size for t in removable)
    assert used > 0.75 * limit
    assert acct["short_by_bytes"] == used - quota_target(limit) > 0
    assert acct["short_by_bytes"] == dry["short_by_bytes"] == 620 * KiB
    assert dry["usage_after_bytes"] == used
    diff = state_diff(before, after)
    removed = {(f, uid) for f, d in diff.items() for uid in d.removed}
    assert removed == {(seeded[t].folder, seeded[t].uid(before)) for t in removable}
    assert all(not d.added and not d.changed for d in diff.values()), diff
    for tag in ("p-flagged-1", "p-flagged-2", "p-unread-1", "p-unread-2", "recent"):
        uid = seeded[tag].uid(before)
        assert after["INBOX"][uid] == before["INBOX"][uid], tag
    assert after["Junk"] == {}  # emptying Junk is allowed by default
    assert "short by 620.0 KiB" in text.stdout, str(text)


# ------------------------------------------------------------------ below clean_above


def test_below_clean_above_nothing_happens(tmp_path: Path, make_user: Any) -> None:
    limit = 10 * MiB
    user: MailUser = make_user(limit)
    seed(user, "Junk", [(f"junk-{i}", 100 + i, 500, SEEN) for i in range(4)])
    seed(user, "INBOX", [(f"old-{i}", 1000 + i, 500, SEEN) for i in range(4)])
    filler(user, 8704 - 4000, parts=4)  # 85% of 10 MiB
    usage = user.usage()
    assert usage == (8704 * KiB, limit)
    pf = PolicyFile(tmp_path, quota_policy())
    name = pf.add_imap(user)
    before = user.folder_state()

    for result in (pf.run(dry_run=True), pf.run()):
        acct = ok(result, name)
        assert acct["actions"] == []
        assert acct["over_quota"] is False
        assert acct["usage_bytes"] == acct["usage_after_bytes"] == 8704 * KiB
        assert acct["short_by_bytes"] == 0 and acct["deferred_by_cap"] == 0
    assert user.folder_state() == before
    assert user.usage() == usage


# ------------------------------------------------------------------- max_delete_per_run


def test_max_delete_per_run_caps_and_the_next_run_continues(tmp_path: Path,
                                                            make_user: Any) -> None:
    limit = 10 * MiB
    user: MailUser = make_user(limit)
    ages = [100 + (i * 7) % 30 for i in range(30)]  # a permutation of 100..129 days
    assert sorted(ages) == list(range(100, 130))
    junk = seed(user, "Junk", [(f"junk-{age}d", age, 100, SEEN) for age in ages])
    filler(user, 7000, parts=7)
    assert user.usage() == (10000 * KiB, limit)  # 97.7%: 24 junk messages would reach 75%
    pf = PolicyFile(tmp_path, quota_policy(cap=3))
    name = pf.add_imap(user)
    before = user.folder_state()
    oldest_first = [junk[f"junk-{age}d"] for age in range(129, 99, -1)]

    first = ok(pf.run(), name)
    mid = user.folder_state()
    assert actions(first) == [("Junk", s.uid(before)) for s in oldest_first[:3]]
    assert first["deferred_by_cap"] == 21
    assert {uid for d in state_diff(before, mid).values() for uid in d.removed} == {
        s.uid(before) for s in oldest_first[:3]}
    assert first["usage_after_bytes"] == user.usage()[0] == 9700 * KiB  # still >= 90%

    second = ok(pf.run(), name)
    assert actions(second) == [("Junk", s.uid(before)) for s in oldest_first[3:6]]
    assert second["deferred_by_cap"] == 18
    assert second["usage_after_bytes"] == user.usage()[0] == 9400 * KiB
    diff = state_diff(before, user.folder_state())
    assert set(diff) == {"Junk"} and diff["Junk"].removed == {
        s.uid(before) for s in oldest_first[:6]}


# ---------------------------------------------------------------- allow_empty_folder


def test_empty_folder_rail_drops_inbox_rule_but_trash_proceeds(tmp_path: Path,
                                                               make_user: Any) -> None:
    user: MailUser = make_user()
    inbox = seed(user, "INBOX", [(f"old-{i}", 1000 + i, 10, SEEN) for i in range(3)])
    trash = seed(user, "Trash", [(f"trash-{i}", 60 + i, 10, SEEN) for i in range(2)])
    rules: list[dict[str, Any]] = [
        {"name": "purge-inbox", "folders": ["INBOX"], "older_than": "1y", "action": "delete"},
        {"name": "empty-trash", "folders": ["\\Trash"], "older_than": "30d",
         "age_by": "received", "action": "delete"},
    ]
    pf = PolicyFile(tmp_path, {"p": {"rules": rules}})
    name = pf.add_imap(user)
    before = user.folder_state()

    dry = ok(pf.run(dry_run=True), name)
    assert sorted(actions(dry)) == sorted(("Trash", s.uid(before)) for s in trash.values())
    assert len(dry["dropped"]) == 1
    drop = dry["dropped"][0]
    assert (drop["rule"], drop["folder"], drop["messages"]) == ("purge-inbox", "INBOX", 3)
    assert "allow_empty_folder" in drop["reason"] and "every message" in drop["reason"]

    acct = ok(pf.run(), name)
    assert acct["dropped"] == dry["dropped"]
    after = user.folder_state()
    assert after["INBOX"] == before["INBOX"]
    assert after["Trash"] == {}
    assert {s.uid(before) for s in inbox.values()} == set(after["INBOX"])

    # Control: the same rule with allow_empty_folder: true would empty INBOX.
    rules[0]["allow_empty_folder"] = True
    control = PolicyFile(tmp_path, {"p": {"rules": rules}}, name="control.yaml",
                         state_dir="control-state")
    control_name = control.add_imap(user)
    cacct = ok(control.run(dry_run=True), control_name)
    assert cacct["dropped"] == []
    assert sorted(actions(cacct)) == sorted(("INBOX", s.uid(before)) for s in inbox.values())


# ------------------------------------------------------------------------------ hold


def _over_quota_user(make_user: Any) -> tuple[MailUser, dict[str, Seeded]]:
    """10 MiB, 95.7% used; the quota policy would remove some Junk and old INBOX mail."""
    user: MailUser = make_user(10 * MiB)
    seeded = seed(user, "Junk", [(f"junk-{i}", 100 + i, 500, SEEN) for i in range(3)])
    seeded |= seed(user, "INBOX", [(f"old-{i}", 1000 + i, 500, SEEN) for i in range(4)])
    filler(user, 9800 - 3500, parts=6)
    assert user.usage() == (9800 * KiB, 10 * MiB)
    return user, seeded


@pytest.mark.parametrize("where", ["account", "policy"])
def test_hold_reports_only(tmp_path: Path, make_user: Any, where: str) -> None:
    user, _seeded = _over_quota_user(make_user)
    pf = PolicyFile(tmp_path, quota_policy(hold=where == "policy"))
    fields: dict[str, Any] = {"hold": True} if where == "account" else {}
    name = pf.add_imap(user, **fields)
    before = user.folder_state()
    usage = user.usage()

    result = pf.run()
    acct = ok(result, name)
    assert result.report["dry_run"] is False
    assert acct["hold"] is True
    assert acct["over_quota"] is True
    assert acct["actions"], "a held account still reports what it would do"
    assert {a["result"] for a in acct["actions"]} == {"planned"}
    assert user.folder_state() == before
    assert user.usage() == usage
    text = pf.run(fmt="text")
    assert text.code == 0, str(text)
    assert "HOLD" in text.stdout
    assert user.folder_state() == before


# ---------------------------------------------------------------- two agents at once


def test_locked_account_is_skipped(tmp_path: Path, make_user: Any) -> None:
    """Another agent holds the account's lock: skipped, changed nothing, and exit 1 (the
    account was not cleaned) unless --skip-locked-ok; processed once the lock is free."""
    from retention.state import StateDir

    user, _seeded = _over_quota_user(make_user)
    pf = PolicyFile(tmp_path, quota_policy())
    name = pf.add_imap(user)
    before = user.folder_state()
    usage = user.usage()
    with StateDir(tmp_path / "state").lock(name):  # "another agent" holds the account
        result = pf.run()
        assert result.code == 1, str(result)
        acct = result.account(name)
        assert acct["status"] == "skipped" and acct["skip_reason"] == "locked", str(result)
        assert acct["error_kind"] is None and "another agent" in acct["error"]
        assert acct["actions"] == []
        assert f"event=account_skipped account={name} reason=locked" in result.stderr
        assert "Traceback" not in result.stderr

        text = pf.cli("run", "--format", "text")
        assert text.code == 1, str(text)
        assert "status=skipped" in text.stdout and "skipped (locked): another agent" in (
            text.stdout)
        assert "1 accounts, 0 failed, 1 skipped" in text.stdout

        tolerated = pf.cli("run", "--format", "json", "--skip-locked-ok")
        assert tolerated.code == 0, str(tolerated)
        assert tolerated.account(name)["status"] == "skipped"

        prom = tmp_path / "retention.prom"
        pf.cli("run", "--skip-locked-ok", "--metrics-textfile", str(prom))
        assert (f'retention_runs_skipped_total{{account="{name}",reason="locked"}}'
                in prom.read_text())
        assert user.folder_state() == before
        assert user.usage() == usage

    # Once the other agent is done, the account is processed as usual.
    acct = ok(pf.run(), name)
    assert acct["actions"] and {a["result"] for a in acct["actions"]} == {"done"}
    assert user.usage()[0] == acct["usage_after_bytes"] <= 0.75 * 10 * MiB
