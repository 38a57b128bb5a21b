"""End-to-end runs against a real Dovecot: what a run removes, keeps and reports.

Every test seeds a fresh user, runs the real CLI (``python -m retention run``, password in
an environment variable) or ``retention.run.account.run_all``, and compares the mailbox before
and after with ``Dovecot.folder_state`` (flags, SHA-256 of the bytes, INTERNALDATE per UID).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from retention.testing.dovecot import Dovecot, MailUser, SeedMessage
from tests.integration.helpers import (
    ACCOUNT_KEYS,
    ACTION_KEYS,
    FLAGGED,
    SEEN,
    UNREAD,
    PolicyFile,
    Seeded,
    ago,
    planned,
    sha256,
    state_diff,
    uid_of,
)

MiB = 1024 * 1024


def seed(user: MailUser, folder: str, specs: Sequence[tuple[str, datetime, frozenset[str]]],
         **kw: Any) -> dict[str, Seeded]:
    """Seed ``(tag, received, flags)`` messages (Message-ID ``<tag@retention.test>``)."""
    msgs = [
        SeedMessage(received=received, flags=flags, subject=f"test {tag}",
                    message_id=f"<{tag}@retention.test>", size=2000 + 97 * i, **kw)
        for i, (tag, received, flags) in enumerate(specs)
    ]
    raws = user.seed(folder, msgs)
    return {tag: Seeded(tag, folder, raw, flags)
            for (tag, _, flags), raw in zip(specs, raws, strict=True)}


# --------------------------------------------------------------- the standard mailbox

STANDARD = {
    "standard": {
        "protect": ["flagged", "unread"],
        "keep_within": "7d",
        "rules": [
            {"name": "trash", "folders": ["\\Trash"], "older_than": "30d",
             "age_by": "received", "action": "delete"},
            {"name": "old-mail", "folders": ["*"],
             "exclude_folders": ["\\Trash", "\\Junk", "\\Sent"], "older_than": "2y",
             "action": {"move_to": "\\Archive"}},
        ],
    }
}

# tag -> (action, rule, to_folder) for the messages STANDARD selects.
STANDARD_SELECTS = {
    "inbox-old": ("move", "old-mail", "Archive"),
    "inbox-old-2": ("move", "old-mail", "Archive"),
    "lists-old": ("move", "old-mail", "Archive"),
    "trash-old": ("delete", "trash", None),
}


def seed_standard(user: MailUser) -> dict[str, Seeded]:
    out: dict[str, Seeded] = {}
    out |= seed(user, "INBOX", [
        ("inbox-old", ago(days=3 * 365), SEEN),
        ("inbox-old-2", ago(days=800), SEEN),
        ("inbox-flagged", ago(days=3 * 365), FLAGGED),
        ("inbox-unread", ago(days=3 * 365), UNREAD),
        ("inbox-recent", ago(days=100), SEEN),
        ("inbox-new", ago(days=1), SEEN),
    ])
    out |= seed(user, "Lists/python", [
        ("lists-old", ago(days=3 * 365), SEEN),
        ("lists-young", ago(days=30), SEEN),
    ])
    out |= seed(user, "Trash", [
        ("trash-old", ago(days=60), SEEN),
        ("trash-old-unread", ago(days=60), UNREAD),
        ("trash-young", ago(days=10), SEEN),
    ])
    out |= seed(user, "Junk", [("junk-old", ago(days=3 * 365), SEEN)])
    out |= seed(user, "Sent", [("sent-old", ago(days=3 * 365), SEEN)])
    out |= seed(user, "Archive", [("archive-old", ago(days=3 * 365), SEEN)])
    return out


def expected_actions(state: dict[str, Any], seeded: dict[str, Seeded],
                     selects: dict[str, tuple[str, str, str | None]]
                     ) -> set[tuple[str, int, str, str]]:
    return {
        (seeded[tag].folder, uid_of(state, seeded[tag].folder, seeded[tag].raw), action, rule)
        for tag, (action, rule, _to) in selects.items()
    }


def by_uid(account: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(a["folder"], a["uid"]): a for a in account["actions"]}


def assert_run_ok(result: Any, account: str) -> dict[str, Any]:
    assert result.code == 0, str(result)
    acct: dict[str, Any] = result.account(account)
    assert acct["status"] == "ok", str(result)
    assert acct["error"] is None and acct["error_kind"] is None
    return acct


# ------------------------------------------------------------------------- 1. dry-run


def test_dry_run_changes_nothing_and_reports_exactly_the_selection(
        tmp_path: Path, mail_user: MailUser) -> None:
    seeded = seed_standard(mail_user)
    pf = PolicyFile(tmp_path, STANDARD)
    name = pf.add_imap(mail_user)
    before = mail_user.folder_state()
    usage_before, limit = mail_user.usage()

    result = pf.run(dry_run=True)

    assert mail_user.folder_state() == before  # byte-identical, flags included
    acct = assert_run_ok(result, name)
    report = result.report
    assert report["dry_run"] is True
    generated = datetime.fromisoformat(report["generated_at"])
    assert generated.tzinfo is not None
    assert abs((datetime.now(UTC) - generated).total_seconds()) < 600
    assert ACCOUNT_KEYS <= set(acct), ACCOUNT_KEYS - set(acct)
    assert acct["protocol"] == "imap"
    assert isinstance(acct["run_id"], str) and acct["run_id"]

    assert planned(acct) == expected_actions(before, seeded, STANDARD_SELECTS)
    tags_by_uid = {(s.folder, uid_of(before, s.folder, s.raw)): s for s in seeded.values()}
    for (folder, uid), action in by_uid(acct).items():
        assert ACTION_KEYS <= set(action), ACTION_KEYS - set(action)
        s = tags_by_uid[(folder, uid)]
        kind, rule, to_folder = STANDARD_SELECTS[s.tag]
        assert action["result"] == "planned"
        assert action["clock"] == "received"
        assert action["to_folder"] == to_folder
        assert action["uidl"] is None
        assert isinstance(action["uidvalidity"], int) and action["uidvalidity"] > 0
        assert action["message_id"] == s.message_id
        assert action["size"] == len(s.raw)
        internal = datetime.fromisoformat(action["internal_date"])
        assert internal.tzinfo is not None
        assert internal == before[folder][uid].internaldate
        assert "received" in action["reason"] and "older than" in action["reason"]
        assert ("30d" if rule == "trash" else "2y") in action["reason"]

    deleted = [s for s in seeded.values() if STANDARD_SELECTS.get(s.tag, ("",))[0] == "delete"]
    moved = [s for s in seeded.values() if STANDARD_SELECTS.get(s.tag, ("",))[0] == "move"]
    freed = sum(len(s.raw) for s in deleted)
    assert acct["usage_bytes"] == usage_before
    assert acct["limit_bytes"] == limit == 50 * MiB
    assert acct["ratio"] == pytest.approx(usage_before / limit, rel=1e-4)
    assert acct["freed_bytes"] == freed  # moves inside the account free nothing
    assert acct["usage_after_bytes"] == usage_before - freed  # projected
    assert acct["totals"] == {
        "delete": {"messages": len(deleted), "bytes": freed},
        "move": {"messages": len(moved), "bytes": sum(len(s.raw) for s in moved)},
    }


# ------------------------------------------------------------------------ 2. real run


def test_real_run_removes_exactly_the_selection(tmp_path: Path, mail_user: MailUser) -> None:
    seeded = seed_standard(mail_user)
    pf = PolicyFile(tmp_path, STANDARD)
    name = pf.add_imap(mail_user)
    before = mail_user.folder_state()

    result = pf.run()

    after = mail_user.folder_state()
    acct = assert_run_ok(result, name)
    assert result.report["dry_run"] is False
    assert planned(acct) == expected_actions(before, seeded, STANDARD_SELECTS)
    assert {a["result"] for a in acct["actions"]} == {"done"}, acct["actions"]

    moved = [s for s in seeded.values() if STANDARD_SELECTS.get(s.tag, ("",))[0] == "move"]
    deleted = [s for s in seeded.values() if STANDARD_SELECTS.get(s.tag, ("",))[0] == "delete"]
    diff = state_diff(before, after)
    assert set(diff) == {"INBOX", "Lists/python", "Trash", "Archive"}, diff
    for folder in ("INBOX", "Lists/python", "Trash"):
        gone = {uid_of(before, s.folder, s.raw) for s in moved + deleted if s.folder == folder}
        assert diff[folder].removed == gone, folder
        assert not diff[folder].added and not diff[folder].changed, folder
    archive = diff["Archive"]
    assert not archive.removed and not archive.changed
    # Moved messages arrive byte-identical, with their flags and INTERNALDATE.
    arrived = {after["Archive"][uid].sha256: after["Archive"][uid] for uid in archive.added}
    assert set(arrived) == {sha256(s.raw) for s in moved}
    for s in moved:
        original = before[s.folder][uid_of(before, s.folder, s.raw)]
        assert arrived[sha256(s.raw)].flags == original.flags
        assert arrived[sha256(s.raw)].internaldate == original.internaldate

    usage_after, _ = mail_user.usage()
    assert acct["usage_after_bytes"] == usage_after
    assert acct["freed_bytes"] == sum(len(s.raw) for s in deleted)

    # A second run finds nothing more to do (old mail already in \Archive is left alone).
    again = pf.run()
    assert assert_run_ok(again, name)["actions"] == []
    assert mail_user.folder_state() == after


# ----------------------------------------------- 3. \Deleted set by another client survives


@pytest.mark.parametrize("action", ["delete", {"move_to": "Old mail"}], ids=["delete", "move"])
def test_message_flagged_deleted_by_another_client_survives(
        tmp_path: Path, mail_user: MailUser, monkeypatch: pytest.MonkeyPatch,
        action: Any) -> None:
    from retention.run.account import run_all

    seeded = seed(mail_user, "INBOX", [
        ("gone-1", ago(days=400), SEEN),
        ("theirs", ago(days=400), SEEN),
        ("gone-2", ago(days=400), SEEN),
        ("young", ago(days=2), SEEN),
    ])
    state = mail_user.folder_state()
    theirs = uid_of(state, "INBOX", seeded["theirs"].raw)
    other = mail_user.imap_client()  # another mail client: flags, does not expunge
    try:
        other.select_folder("INBOX")
        other.add_flags([theirs], [b"\\Deleted"], silent=True)
        other.unselect_folder()
    finally:
        other.logout()
    before = mail_user.folder_state()
    assert "\\Deleted" in before["INBOX"][theirs].flags

    pf = PolicyFile(tmp_path, {"p": {"rules": [
        {"name": "old", "folders": ["INBOX"], "older_than": "1y", "action": action}]}})
    name = pf.add_imap(mail_user)
    for var, value in pf.env.items():
        monkeypatch.setenv(var, value)
    run = run_all(pf.load(), dry_run=False)

    (acct,) = run.accounts
    assert acct.account == name
    assert acct.status == "ok", (acct.error, acct.warnings)
    assert run.exit_code == 0
    done = {(r.action.message.ref.folder, r.action.message.ref.uid): r.result
            for r in acct.results}
    gone = {uid_of(before, "INBOX", seeded[t].raw) for t in ("gone-1", "gone-2")}
    assert done == {("INBOX", uid): "done" for uid in gone}
    after = mail_user.folder_state()
    assert theirs in after["INBOX"], "a message another client flagged \\Deleted was expunged"
    assert after["INBOX"][theirs] == before["INBOX"][theirs]  # still flagged \Deleted
    assert set(after["INBOX"]) == set(before["INBOX"]) - gone
    if action != "delete":  # the named target folder was created and got exactly those two
        assert {m.sha256 for m in after["Old mail"].values()} == {
            sha256(seeded[t].raw) for t in ("gone-1", "gone-2")}


# -------------------------------------------------- 4. Japanese Trash and Japanese folders


@pytest.fixture(scope="module")
def jp_dovecot(dovecot_factory: Callable[..., Dovecot]) -> Iterator[Dovecot]:
    yield dovecot_factory(trash_name="ゴミ箱")


JAPANESE = {
    "jp": {
        "rules": [
            {"name": "trash", "folders": ["\\Trash"], "older_than": "30d",
             "age_by": "received", "action": "delete"},
            {"name": "work", "folders": ["仕事/古い"], "older_than": "1y", "action": "trash"},
        ]
    }
}


def test_japanese_trash_and_folder_names(
        tmp_path: Path, make_user: Callable[..., MailUser], jp_dovecot: Dovecot) -> None:
    user = make_user(server=jp_dovecot)
    seeded = seed(user, "仕事/古い", [
        ("work-old", ago(days=3 * 365), SEEN),
        ("work-old-2", ago(days=400), SEEN),
        ("work-young", ago(days=10), SEEN),
    ])
    seeded |= seed(user, "ゴミ箱", [
        ("trash-old", ago(days=60), SEEN),
        ("trash-young", ago(days=5), SEEN),
    ])
    seeded |= seed(user, "INBOX", [("inbox-old", ago(days=3 * 365), SEEN)])
    selects = {
        "work-old": ("trash", "work", "ゴミ箱"),
        "work-old-2": ("trash", "work", "ゴミ箱"),
        "trash-old": ("delete", "trash", None),
    }
    pf = PolicyFile(tmp_path, JAPANESE)
    name = pf.add_imap(user)
    before = user.folder_state()
    assert "ゴミ箱" in before and "仕事/古い" in before and "Trash" not in before

    text = pf.run(dry_run=True, fmt="text")
    assert text.code == 0, str(text)
    assert "仕事/古い" in text.stdout and "ゴミ箱" in text.stdout
    assert user.folder_state() == before

    result = pf.run()
    acct = assert_run_ok(result, name)
    assert planned(acct) == expected_actions(before, seeded, selects)
    for action in acct["actions"]:
        assert action["result"] == "done"
        assert action["to_folder"] == ("ゴミ箱" if action["rule"] == "work" else None)
    after = user.folder_state()
    diff = state_diff(before, after)
    assert set(diff) == {"仕事/古い", "ゴミ箱"}, diff
    assert diff["仕事/古い"].removed == {
        uid_of(before, "仕事/古い", seeded[t].raw) for t in ("work-old", "work-old-2")}
    assert diff["ゴミ箱"].removed == {uid_of(before, "ゴミ箱", seeded["trash-old"].raw)}
    assert {after["ゴミ箱"][u].sha256 for u in diff["ゴミ箱"].added} == {
        sha256(seeded[t].raw) for t in ("work-old", "work-old-2")}


# ------------------------------------------------------------- 5. a 20,000-message folder


@pytest.mark.slow
@pytest.mark.parametrize("mail_user", [1024 * MiB], indirect=True)
def test_twenty_thousand_messages_in_batches(tmp_path: Path, mail_user: MailUser) -> None:
    # Old and young interleaved, so the old UIDs form 5,000 separate ranges: no single
    # UID set can carry them within an 8 KB command line.
    old_at, young_at = ago(days=3 * 365), ago(days=10)
    msgs = [
        SeedMessage(received=young_at if i % 4 == 0 else old_at, flags=SEEN,
                    subject=f"bulk {i}", message_id=f"<bulk-{i}@retention.test>")
        for i in range(20_000)
    ]
    raws = mail_user.seed("INBOX", msgs)
    before = mail_user.folder_state()
    assert len(before["INBOX"]) == 20_000
    uid_by_sha = {m.sha256: uid for uid, m in before["INBOX"].items()}
    old = {uid_by_sha[sha256(r)] for i, r in enumerate(raws) if i % 4}
    young = set(before["INBOX"]) - old
    assert len(old) == 15_000

    pf = PolicyFile(tmp_path, {"bulk": {
        "quota": {"max_delete_per_run": "100%"},
        "rules": [{"name": "old", "folders": ["INBOX"], "older_than": "1y",
                   "action": "delete"}],
    }})
    name = pf.add_imap(mail_user)

    dry = pf.run(dry_run=True)
    acct = assert_run_ok(dry, name)
    assert {a["uid"] for a in acct["actions"]} == old
    assert len(acct["actions"]) == 15_000
    assert {a["result"] for a in acct["actions"]} == {"planned"}
    assert mail_user.folder_state() == before

    real = pf.run()
    acct = assert_run_ok(real, name)
    assert len(acct["actions"]) == 15_000
    assert {a["uid"] for a in acct["actions"] if a["result"] == "done"} == old
    after = mail_user.folder_state()
    assert set(after["INBOX"]) == young
    assert all(after["INBOX"][u] == before["INBOX"][u] for u in young)
    assert acct["usage_after_bytes"] == mail_user.usage()[0]


# ---------------------------------------------- 8. the saved clock: trashed today survives


def test_trashed_today_survives_thirty_day_trash_rule(tmp_path: Path,
                                                      mail_user: MailUser) -> None:
    seeded = seed(mail_user, "INBOX", [
        ("ancient", ago(days=3 * 365), SEEN),
        ("stays", ago(days=1), SEEN),
    ])
    state = mail_user.folder_state()
    client = mail_user.imap_client()
    try:
        assert b"MOVE" in client.capabilities()
        client.select_folder("INBOX")
        client.move([uid_of(state, "INBOX", seeded["ancient"].raw)], "Trash")
        client.unselect_folder()
    finally:
        client.logout()
    before = mail_user.folder_state()
    trashed_uid = uid_of(before, "Trash", seeded["ancient"].raw)
    assert before["Trash"][trashed_uid].internaldate < ago(days=3 * 365 - 1)

    trash_rule = {"name": "trash", "folders": ["\\Trash"], "older_than": "30d",
                  "action": "delete"}
    # Control: by its received time the message is long overdue.
    control = PolicyFile(tmp_path, {"p": {"rules": [{**trash_rule, "age_by": "received"}]}},
                         name="control.yaml", state_dir="control-state")
    control_name = control.add_imap(mail_user)
    acct = assert_run_ok(control.run(dry_run=True), control_name)
    assert planned(acct) == {("Trash", trashed_uid, "delete", "trash")}

    pf = PolicyFile(tmp_path, {"p": {"rules": [trash_rule]}})
    name = pf.add_imap(mail_user)
    check = pf.cli("check")
    assert check.code == 0, str(check)
    assert "clock=saved" in check.stdout

    result = pf.run()
    acct = assert_run_ok(result, name)
    assert acct["actions"] == []
    assert mail_user.folder_state() == before


# --------------------------------------- 9. age_by sent, odd headers, huge messages


NON_UTF8 = (
    b"From: J\xe9r\xf4me <jerome@example.com>\r\n"
    b"To: r\xfcdiger@example.com\r\n"
    b"Subject: caf\xe9 \xff\xfe\x80 r\xe9sum\xe9\r\n"
    b"Date: \xa9\xa9 le 3 f\xe9vrier\r\n"
    b"Message-ID: <non-utf8@retention.test>\r\n"
    b"\r\n"
    b"Corps du message en Latin-1: \xe9\xe8\xe0\r\n"
)


@pytest.mark.parametrize("mail_user", [200 * MiB], indirect=True)
def test_sent_clock_and_odd_messages(tmp_path: Path, mail_user: MailUser) -> None:
    long_ago, recent = ago(days=3 * 365), ago(days=20)
    specs = [
        SeedMessage(received=long_ago, flags=SEEN, date_header="not a date at all",
                    message_id="<garbage-date@retention.test>"),
        SeedMessage(received=long_ago, flags=SEEN, date_header=None, message_id=None),
        SeedMessage(received=long_ago, flags=SEEN, raw=NON_UTF8),
        SeedMessage(received=long_ago, flags=SEEN, size=40 * MiB,
                    message_id="<huge@retention.test>"),
        SeedMessage(received=long_ago, flags=SEEN,
                    date_header=format_datetime(ago(days=10)),
                    message_id="<sent-young@retention.test>"),
        SeedMessage(received=recent, flags=SEEN,
                    date_header=format_datetime(ago(days=5 * 365)),
                    message_id="<sent-old@retention.test>"),
        SeedMessage(received=ago(days=1), flags=SEEN, message_id="<young@retention.test>"),
    ]
    raws = mail_user.seed("INBOX", specs)
    garbage, no_date, non_utf8, huge, sent_young, sent_old, young = raws
    before = mail_user.folder_state()
    uid = {name: uid_of(before, "INBOX", raw) for name, raw in [
        ("garbage", garbage), ("no_date", no_date), ("non_utf8", non_utf8), ("huge", huge),
        ("sent_young", sent_young), ("sent_old", sent_old), ("young", young)]}
    selected = {uid[n] for n in ("garbage", "no_date", "non_utf8", "huge", "sent_old")}

    pf = PolicyFile(tmp_path, {"p": {"rules": [
        {"name": "old", "folders": ["INBOX"], "age_by": "sent", "older_than": "1y",
         "action": "delete"}]}})
    name = pf.add_imap(mail_user)

    dry = pf.run(dry_run=True)
    acct = assert_run_ok(dry, name)
    actions = {a["uid"]: a for a in acct["actions"]}
    assert set(actions) == selected
    assert {a["clock"] for a in actions.values()} == {"sent"}
    reason = {n: actions[uid[n]]["reason"] for n in ("garbage", "no_date", "sent_old")}
    assert "unparseable" in reason["garbage"] and "received" in reason["garbage"]
    assert "missing" in reason["no_date"] and "received" in reason["no_date"]
    assert "received" in actions[uid["non_utf8"]]["reason"]  # its Date is garbage too
    assert reason["sent_old"].startswith("sent "), reason["sent_old"]
    assert "received" not in reason["sent_old"]
    assert actions[uid["no_date"]]["message_id"] is None
    assert actions[uid["huge"]]["size"] == len(huge) == 40 * MiB
    assert actions[uid["non_utf8"]]["message_id"] == "<non-utf8@retention.test>"
    assert mail_user.folder_state() == before

    real = pf.run()
    acct = assert_run_ok(real, name)
    assert {a["uid"] for a in acct["actions"] if a["result"] == "done"} == selected
    after = mail_user.folder_state()
    assert set(after["INBOX"]) == {uid["sent_young"], uid["young"]}


# ----------------------------------------------------- 10. protect and keep_within win


PROTECTIVE = {
    "careful": {
        "protect": ["flagged", "unread"],
        "keep_within": "30d",
        "rules": [
            # Spam is usually unread: this rule protects only flagged messages.
            {"name": "junk", "folders": ["\\Junk"], "age_by": "received",
             "older_than": "1d", "protect": ["flagged"], "action": "delete"},
            {"name": "sent", "folders": ["\\Sent"], "age_by": "sent", "older_than": "1d",
             "action": "delete"},
            {"name": "everything", "folders": ["*"], "older_than": "1d", "action": "delete",
             "allow_empty_folder": True},
        ],
    }
}


def test_protect_and_keep_within_win_over_every_rule(tmp_path: Path,
                                                     mail_user: MailUser) -> None:
    answered = frozenset({"\\Seen", "\\Answered"})
    unread_flagged = frozenset({"\\Flagged"})
    seeded = seed(mail_user, "INBOX", [
        ("old-read", ago(days=100), SEEN),
        ("old-answered", ago(days=100), answered),
        ("old-flagged", ago(days=100), FLAGGED),
        ("old-unread", ago(days=100), UNREAD),
        ("within", ago(days=10), SEEN),
        ("edge", ago(days=29, hours=23), SEEN),
    ])
    seeded |= seed(mail_user, "Junk", [
        ("junk-unread", ago(days=100), UNREAD),
        ("junk-flagged", ago(days=100), unread_flagged),
        ("junk-young", ago(days=5), UNREAD),
    ])
    # keep_within is measured on the received time even when the rule's clock is sent.
    seeded |= seed(mail_user, "Sent", [("sent-recv-young", ago(days=5), SEEN)],
                   date_header=format_datetime(ago(days=3 * 365)))
    seeded |= seed(mail_user, "Sent", [("sent-old", ago(days=100), SEEN)])
    selects = {
        "old-read": ("delete", "everything", None),
        "old-answered": ("delete", "everything", None),
        "junk-unread": ("delete", "junk", None),
        "sent-old": ("delete", "sent", None),
    }
    pf = PolicyFile(tmp_path, PROTECTIVE)
    name = pf.add_imap(mail_user)
    before = mail_user.folder_state()

    result = pf.run()

    acct = assert_run_ok(result, name)
    assert planned(acct) == expected_actions(before, seeded, selects)
    after = mail_user.folder_state()
    diff = state_diff(before, after)
    assert set(diff) == {"INBOX", "Junk", "Sent"}, diff
    for folder, d in diff.items():
        assert d.removed == {uid_of(before, folder, seeded[t].raw)
                             for t in selects if seeded[t].folder == folder}
        assert not d.added and not d.changed
    # Protected unread messages are still unread: nothing fetched them without PEEK.
    assert "\\Seen" not in after["INBOX"][uid_of(before, "INBOX", seeded["old-unread"].raw)].flags
