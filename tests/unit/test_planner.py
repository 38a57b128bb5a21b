"""Table-driven tests of the planner's semantics, without a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from retention.model import ANSWERED, DELETED, DRAFT, FLAGGED, SEEN, FolderInfo
from retention.plan import ActionKind, Clock, Plan
from retention.planner import explain, plan
from tests.strategies import (
    ALL_MAIL,
    DAY,
    INBOX,
    NOW,
    STANDARD,
    by_folder,
    folder,
    msg,
    policy,
    rule,
    snapshot,
)

S = timedelta(seconds=1)
KiB = 1024


def uids(p: Plan) -> list[tuple[str, int | None]]:
    return [(a.message.ref.folder, a.message.ref.uid) for a in p.actions]


def run(pol, *messages, filler=True, **snap):
    """Plan for ``messages``; ``filler`` adds to every folder a young, flagged, unread
    message no rule can take, so that the empty-folder rail stays out of the way."""
    if filler:
        messages += tuple(msg(f.name, 999, age=timedelta(0), flags={FLAGGED}) for f in STANDARD)
    return plan(pol, snapshot(*by_folder(*messages), **snap), NOW)


# ----------------------------------------------------------------- rule conditions


@pytest.mark.parametrize(
    ("rules", "message", "expected"),
    [
        # no rule: kept
        ([], msg(age=999 * DAY), None),
        # older_than is strict, at second precision
        ([rule(older_than="30d")], msg(age=30 * DAY), None),
        ([rule(older_than="30d")], msg(age=30 * DAY + S), "r"),
        ([rule(older_than="90m")], msg(age=timedelta(minutes=90, seconds=1)), "r"),
        # folders default to INBOX
        ([rule(older_than="1d")], msg("Trash", age=9 * DAY), None),
        ([rule(older_than="1d", folders=["inbox"])], msg(age=9 * DAY), "r"),
        # exclude_folders
        ([rule(older_than="1d", folders=["*"], exclude_folders=["\\Junk"])],
         msg("Junk", age=9 * DAY), None),
        ([rule(older_than="1d", folders=["*"], exclude_folders=["\\Junk"])],
         msg("Archive", age=9 * DAY), "r"),
        # sizes are strict
        ([rule(older_than="1d", larger_than=1000)], msg(age=9 * DAY, size=1000), None),
        ([rule(older_than="1d", larger_than=1000)], msg(age=9 * DAY, size=1001), "r"),
        ([rule(older_than="1d", smaller_than=1000)], msg(age=9 * DAY, size=1000), None),
        ([rule(older_than="1d", smaller_than=1000)], msg(age=9 * DAY, size=999), "r"),
        # before: 00:00 UTC of that date, strict
        ([rule(before="2024-01-01")],
         msg(received=datetime(2023, 12, 31, 23, 59, 59, tzinfo=UTC)), "r"),
        ([rule(before="2024-01-01")],
         msg(received=datetime(2024, 1, 1, 0, 0, 0, tzinfo=UTC)), None),
        ([rule(before="2024-01-01", older_than="1d")],
         msg(received=datetime(2023, 12, 1, tzinfo=UTC)), "r"),
        # first rule whose conditions all hold decides
        ([rule("a", older_than="1y"), rule("b", older_than="1d")], msg(age=400 * DAY), "a"),
        ([rule("a", older_than="1y"), rule("b", older_than="1d")], msg(age=40 * DAY), "b"),
        ([rule("a", older_than="1d", larger_than=5000), rule("b", older_than="1d")],
         msg(age=40 * DAY), "b"),
    ],
)
def test_rule_conditions(rules, message, expected):
    p = run(policy(*rules), message)
    assert [a.rule for a in p.actions] == ([expected] if expected else [])


@pytest.mark.parametrize(
    ("age_by", "message", "expected_reason"),
    [
        ("received", msg(received=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)),
         "received 2025-01-02, older than 30d"),
        ("sent", msg(age=10 * DAY, sent=datetime(2023, 5, 1, tzinfo=UTC)),
         "sent 2023-05-01, older than 30d"),
        ("sent", msg(received=datetime(2023, 5, 1, 12, tzinfo=UTC), date_header="garbage"),
         "sent 2023-05-01 (Date header unparseable, used received), older than 30d"),
        ("sent", msg(received=datetime(2023, 5, 1, 12, tzinfo=UTC)),
         "sent 2023-05-01 (Date header missing, used received), older than 30d"),
        ("saved", msg(age=900 * DAY, saved=datetime(2026, 10, 1, tzinfo=UTC)),
         "saved 2026-10-01, older than 30d"),
    ],
)
def test_clocks_and_reasons(age_by, message, expected_reason):
    p = run(policy(rule(older_than="30d", age_by=age_by)), message)
    assert [a.reason for a in p.actions] == [expected_reason]
    assert p.actions[0].clock == Clock(age_by)


@pytest.mark.parametrize(
    ("age_by", "message"),
    [
        # Sent long ago but received recently: the sent clock sees it old, received does not.
        ("received", msg(age=10 * DAY, sent_age=900 * DAY)),
        # Received long ago, saved here recently.
        ("saved", msg(age=900 * DAY, saved_age=DAY)),
        # Unknown saved time is "now": never old enough (fail safe).
        ("saved", msg(age=900 * DAY)),
    ],
)
def test_clock_not_old_enough(age_by, message):
    assert run(policy(rule(older_than="30d", age_by=age_by)), message).actions == ()


def test_trash_rule_defaults_to_saved_clock():
    pol = policy(rule("trash", folders=["\\Trash"], older_than="30d"))
    trashed_today = msg("Trash", 1, age=3 * 365 * DAY, saved_age=timedelta(hours=1))
    trashed_long_ago = msg("Trash", 2, age=3 * 365 * DAY, saved_age=60 * DAY)
    unknown = msg("Trash", 3, age=3 * 365 * DAY)
    p = run(pol, trashed_today, trashed_long_ago, unknown)
    assert uids(p) == [("Trash", 2)]
    assert p.actions[0].clock is Clock.SAVED


def test_before_with_sent_clock_and_size_in_reason():
    pol = policy(rule(before="2024-01-01", age_by="sent", larger_than="1KiB"))
    m = msg(age=10 * DAY, sent=datetime(2023, 5, 1, tzinfo=UTC), size=4096)
    (a,) = run(pol, m).actions
    assert a.reason == "sent 2023-05-01, before 2024-01-01, larger than 1KiB"


def test_pop3_first_seen_clock_and_no_protect():
    pol = policy(rule(older_than="30d"))  # default protect: flagged, unread
    m = msg(age=40 * DAY, flags=())  # unread, but POP3 has no flags
    p = plan(pol, snapshot(folder("INBOX", m), protocol="pop3"), NOW)
    (a,) = p.actions
    assert a.clock is Clock.FIRST_SEEN
    assert a.reason.startswith("first seen ")


def test_naive_now_is_refused():
    with pytest.raises(AssertionError):
        plan(policy(), snapshot(), datetime(2026, 1, 1))  # noqa: DTZ001


# -------------------------------------------------------------------- protection


@pytest.mark.parametrize(
    ("protect", "flags", "kept"),
    [
        (None, {SEEN}, False),
        (None, {SEEN, FLAGGED}, True),  # default protect: flagged, unread
        (None, set(), True),
        (["flagged"], set(), False),  # spam is usually unread
        (["answered"], {SEEN, ANSWERED}, True),
        (["draft"], {SEEN, DRAFT}, True),
        ([], {FLAGGED}, False),
        (None, {SEEN, DELETED}, True),  # someone else's pending delete: never planned
        ([], {DELETED}, True),
    ],
)
def test_protect(protect, flags, kept):
    r = rule(older_than="1d") | ({"protect": protect} if protect is not None else {})
    p = run(policy(r), msg(age=9 * DAY, flags=flags))
    assert (p.actions == ()) is kept


def test_policy_protect_is_overridden_by_rule():
    pol = policy(rule(older_than="1d", protect=["draft"]), protect=["flagged"])
    assert len(run(pol, msg(age=9 * DAY, flags={FLAGGED})).actions) == 1
    assert run(pol, msg(age=9 * DAY, flags={DRAFT})).actions == ()


def test_protected_message_stops_rule_evaluation():
    # The first rule whose conditions hold decides; it protects, so the message is kept
    # even though a later rule without protection would take it.
    pol = policy(rule("a", older_than="1d"), rule("b", older_than="1d", protect=[]))
    assert run(pol, msg(age=9 * DAY, flags=())).actions == ()


def test_keep_within_is_measured_on_received_whatever_the_clock():
    pol = policy(rule(older_than="30d", age_by="sent"), keep_within="7d")
    young = msg("INBOX", 1, age=3 * DAY, sent_age=900 * DAY)
    old = msg("INBOX", 2, age=8 * DAY, sent_age=900 * DAY)
    assert uids(run(pol, young, old)) == [("INBOX", 2)]


# ----------------------------------------------------------------------- actions


def test_action_kinds_and_targets():
    pol = policy(
        rule("t", "trash", folders=["Lists/python"], older_than="1d"),
        rule("m", {"move_to": "\\Archive"}, older_than="1y"),
        rule("n", {"move_to": "Old/2020"}, older_than="200d"),
        rule("x", {"archive": "cold"}, folders=["\\Sent"], older_than="1d"),
        rule("d", older_than="1d", folders=["*"], exclude_folders=["\\Archive"]),
    )
    p = run(pol, msg("Lists/python", 1), msg("INBOX", 2, age=400 * DAY),
            msg("INBOX", 3, age=300 * DAY), msg("Sent", 4), msg("Junk", 5))
    got = [(a.rule, a.kind, a.to_folder, a.archive) for a in p.actions]
    assert got == [
        ("m", ActionKind.MOVE, "Archive", None),
        ("n", ActionKind.MOVE, "Old/2020", None),
        ("d", ActionKind.DELETE, None, None),
        ("x", ActionKind.ARCHIVE, None, "cold"),
        ("t", ActionKind.TRASH, "Trash", None),
    ]


def test_trash_resolves_a_localised_trash_folder():
    gomi = FolderInfo("ゴミ箱", frozenset({"\\Trash"}))
    m = msg(age=9 * DAY)
    snap = snapshot(folder(INBOX, m), all_folders=[INBOX, gomi])
    pol = policy(rule(action="trash", older_than="1d", allow_empty_folder=True))
    (a,) = plan(pol, snap, NOW).actions
    assert a.to_folder == "ゴミ箱"


def test_missing_special_use_target_fails_the_rule():
    pol = policy(rule("arch", {"move_to": "\\Archive"}, older_than="1d"),
                 rule("later", older_than="1d"))
    snap = snapshot(folder(INBOX, msg(uid=1), msg(uid=2)), all_folders=[INBOX])
    p = plan(pol, snap, NOW)
    assert p.actions == ()  # decided by 'arch' (not by 'later'), but cannot be done
    ((name, why),) = p.failed_rules
    assert name == "arch" and "\\Archive" in why and "2 message(s)" in why


def test_failed_rule_with_no_matching_message_is_not_reported():
    pol = policy(rule("arch", {"move_to": "\\Archive"}, older_than="1d"))
    snap = snapshot(folder(INBOX, msg(age=timedelta(0))), all_folders=[INBOX])
    assert plan(pol, snap, NOW).failed_rules == ()


def test_move_into_its_own_folder_is_not_planned():
    pol = policy(rule(action="trash", folders=["*"], older_than="1d"))
    p = run(pol, msg("Trash", 1), msg("INBOX", 2))
    assert uids(p) == [("INBOX", 2)]


def test_wildcards_skip_all_mail_but_a_name_does_not():
    m = msg("All Mail", 1)
    snap = snapshot(folder(ALL_MAIL, m), folder(INBOX))
    for folders, n in ((["*"], 0), (["%"], 0), (["All Mail"], 1), (["\\All"], 1)):
        pol = policy(rule(folders=folders, older_than="1d", allow_empty_folder=True))
        assert len(plan(pol, snap, NOW).actions) == n, folders


# ------------------------------------------------------------------ quota cleanup


def quota_policy(*rules, **quota):
    return policy(*rules, quota={"clean_above": "90%", "clean_to": "75%", **quota})


JUNK_OQ = rule("junk", folders=["\\Junk"], when="over_quota", protect=["flagged"])
TRASH_OQ = rule("trash", folders=["\\Trash"], when="over_quota")
OLD_OQ = rule("old", {"archive": "cold"}, folders=["*"], exclude_folders=["\\Junk", "\\Trash"],
              when="over_quota", older_than="1y")


def test_over_quota_takes_junk_then_trash_then_old_mail_oldest_first():
    mailbox = [
        msg("INBOX", 1, age=800 * DAY, size=10 * KiB),
        msg("INBOX", 2, age=500 * DAY, size=10 * KiB),
        msg("INBOX", 3, age=100 * DAY, size=10 * KiB),  # too young for 'old'
        msg("Junk", 7, age=2 * DAY, saved_age=2 * DAY, size=10 * KiB, flags=()),  # unread ok
        msg("Junk", 8, age=5 * DAY, saved_age=5 * DAY, size=10 * KiB),
        msg("Trash", 4, age=9 * DAY, saved_age=DAY, size=10 * KiB),
        msg("Trash", 5, age=9 * DAY, saved_age=3 * DAY, size=10 * KiB),
    ]
    pol = quota_policy(JUNK_OQ, TRASH_OQ, OLD_OQ)
    # 93 KiB of 100 KiB; target 75 KiB: 18 KiB must go, i.e. two 10 KiB messages.
    p = run(pol, *mailbox, usage=93 * KiB, limit=100 * KiB)
    assert p.over_quota
    assert uids(p) == [("Junk", 8), ("Junk", 7)]
    assert p.actions[0].reason == "over quota 93% > 90%: oldest in rule junk"
    assert all(a.over_quota for a in p.actions)
    assert p.usage_after_bytes == 73 * KiB and p.short_by_bytes == 0
    # 58 KiB to go: Junk (2), Trash oldest-saved first (5, 4), oldest old mail (1, 2).
    p = run(pol, *mailbox, usage=133 * KiB, limit=100 * KiB)
    assert uids(p) == [("Junk", 8), ("Junk", 7), ("Trash", 5), ("Trash", 4),
                       ("INBOX", 1), ("INBOX", 2)]
    assert [a.kind for a in p.actions][-2:] == [ActionKind.ARCHIVE] * 2
    assert p.short_by_bytes == 0 and p.usage_after_bytes == 73 * KiB


def test_over_quota_short_by_when_protected_mail_exceeds_target():
    mailbox = [
        msg("INBOX", 1, age=800 * DAY, size=50 * KiB, flags={SEEN, FLAGGED}),
        msg("INBOX", 2, age=800 * DAY, size=30 * KiB, flags=()),
        msg("INBOX", 3, age=800 * DAY, size=5 * KiB),
        msg("INBOX", 4, age=DAY, size=5 * KiB),  # keep_within
        msg("INBOX", 5, age=800 * DAY, size=5 * KiB, flags={SEEN, DELETED}),
    ]
    pol = policy(rule("any", folders=["*"], when="over_quota"), keep_within="7d",
                 quota={"clean_above": "90%", "clean_to": "75%"})
    p = run(pol, *mailbox, usage=95 * KiB, limit=100 * KiB)
    assert uids(p) == [("INBOX", 3)]
    assert p.usage_after_bytes == 90 * KiB
    assert p.short_by_bytes == 90 * KiB - 75 * KiB


@pytest.mark.parametrize(
    ("usage", "limit", "policy_limit", "over", "actions", "warned"),
    [
        (89 * KiB, 100 * KiB, None, False, 0, False),  # below clean_above: nothing
        (90 * KiB, 100 * KiB, None, True, 2, False),  # at clean_above: cleans
        (90 * KiB, None, "100KiB", True, 2, False),  # policy limit when server has none
        (90 * KiB, 200 * KiB, "100KiB", False, 0, False),  # server limit wins
        (90 * KiB, None, None, False, 0, True),  # no limit known: warn, do nothing
    ],
)
def test_over_quota_trigger(usage, limit, policy_limit, over, actions, warned):
    q = {"clean_above": "90%", "clean_to": "75%"}
    if policy_limit:
        q["limit"] = policy_limit
    pol = policy(TRASH_OQ, quota=q)
    trash = [msg("Trash", u, size=10 * KiB) for u in range(1, 5)]
    p = run(pol, *trash, usage=usage, limit=limit)
    assert p.over_quota is over
    assert len(p.actions) == actions
    assert bool(p.warnings) is warned
    assert p.limit_bytes == (limit or (100 * KiB if policy_limit else None))
    if warned:
        assert "over_quota rules do nothing" in p.warnings[0]


def test_always_rules_count_towards_target_and_moves_free_nothing():
    pol = quota_policy(
        rule("mv", {"move_to": "\\Archive"}, older_than="1y"),
        rule("del", folders=["Lists/python"], older_than="1d"),
        TRASH_OQ,
    )
    mailbox = [
        msg("INBOX", 1, age=800 * DAY, size=20 * KiB),  # moved: frees nothing
        msg("Lists/python", 2, size=5 * KiB),
        msg("Lists/python", 3, size=1 * KiB, age=timedelta(0)),  # too young
        msg("Trash", 4, size=6 * KiB),
        msg("Trash", 5, size=6 * KiB, age=300 * DAY),
        msg("Trash", 6, size=6 * KiB, age=100 * DAY),
    ]
    p = run(pol, *mailbox, usage=92 * KiB, limit=100 * KiB)
    # 92 - 5 (del) = 87; Trash by received time (no saved time: counted as now, so
    # ordered by folder/UID among them) until <= 75: 87 -> 81 -> 75.
    assert [(a.rule, a.message.ref.uid) for a in p.actions] == [
        ("mv", 1), ("del", 2), ("trash", 4), ("trash", 5)]
    assert p.usage_after_bytes == 75 * KiB and p.short_by_bytes == 0
    assert p.freed_bytes == 17 * KiB


def test_over_quota_order_within_rule_is_clock_then_folder_then_uid():
    pol = quota_policy(rule("any", folders=["*"], when="over_quota", age_by="received",
                            allow_empty_folder=True))
    t = NOW - 100 * DAY
    mailbox = [msg("Lists/python", 1, received=t), msg("INBOX", 9, received=t),
               msg("INBOX", 3, received=t), msg("Archive", 5, received=t - S)]
    p = run(pol, *mailbox, usage=10_000, limit=1_000)
    assert uids(p) == [("Archive", 5), ("INBOX", 3), ("INBOX", 9), ("Lists/python", 1)]


def test_message_taken_by_always_rule_is_not_an_over_quota_candidate_but_protected_is():
    pol = quota_policy(
        rule("keep-unread", folders=["\\Junk"], older_than="1d", age_by="received"),
        rule("junk", folders=["\\Junk"], when="over_quota", protect=["flagged"]),
    )
    mailbox = [msg("Junk", 1, flags=()), msg("Junk", 2), msg("Junk", 3, flags={FLAGGED})]
    p = run(pol, *mailbox, usage=99 * KiB, limit=100 * KiB)
    assert [(a.rule, a.message.ref.uid) for a in p.actions] == [("keep-unread", 2), ("junk", 1)]


@pytest.mark.parametrize(
    ("usage", "expected"),
    [(95 * KiB, "95% > 90%"), (90 * KiB, "90% >= 90%"), (90 * KiB + 500, "90.4% > 90%")],
)
def test_over_quota_reason_percentages(usage, expected):
    pol = quota_policy(TRASH_OQ)
    p = run(pol, msg("Trash", 1, size=50 * KiB), msg("Trash", 2), usage=usage, limit=100 * KiB)
    assert p.actions[0].reason == f"over quota {expected}: oldest in rule trash"


# --------------------------------------------------------------------- safety rails


def test_cap_counts_every_removal_always_first_then_over_quota():
    pol = quota_policy(
        rule("mv", {"move_to": "\\Archive"}, older_than="1y"),
        TRASH_OQ,
        max_delete_per_run=3,
    )
    mailbox = [msg("INBOX", u, age=800 * DAY) for u in (1, 2)] + [msg("INBOX", 9, age=DAY)] + [
        msg("Trash", u, size=10 * KiB) for u in (3, 4, 5, 6)]
    p = run(pol, *mailbox, usage=99 * KiB, limit=100 * KiB)
    assert uids(p) == [("INBOX", 1), ("INBOX", 2), ("Trash", 3)]
    # 99 - 10 = 89 > 75: two more would have been needed (89 -> 79 -> 69).
    assert p.deferred_by_cap == 2
    assert p.short_by_bytes == 89 * KiB - 75 * KiB


def test_cap_deferred_always_actions_free_nothing():
    pol = quota_policy(rule("del", folders=["*"], exclude_folders=["\\Trash"], older_than="1y"),
                       TRASH_OQ, max_delete_per_run=1)
    mailbox = [msg("INBOX", 1, age=800 * DAY, size=10 * KiB),
               msg("INBOX", 2, age=800 * DAY, size=10 * KiB),
               msg("INBOX", 9, age=DAY),
               msg("Trash", 3, size=10 * KiB)]
    p = run(pol, *mailbox, usage=95 * KiB, limit=100 * KiB)
    assert uids(p) == [("INBOX", 1)]
    assert p.usage_after_bytes == 85 * KiB
    assert p.deferred_by_cap == 2  # INBOX 2 (always) and Trash 3 (over quota)


@pytest.mark.parametrize(("cap", "allowed"), [("50%", 2), ("49%", 1), ("0%", 0), (0, 0)])
def test_cap_percentage_of_messages_rounded_down(cap, allowed):
    pol = policy(rule(folders=["*"], older_than="1d", allow_empty_folder=True),
                 quota={"max_delete_per_run": cap})
    mailbox = [msg("INBOX", 1), msg("INBOX", 2), msg("Junk", 3), msg("Junk", 4)]
    p = run(pol, *mailbox, filler=False)
    assert len(p.actions) == allowed
    assert p.deferred_by_cap == 4 - allowed


def test_empty_folder_rail_drops_the_rules_actions_in_that_folder():
    pol = policy(rule("old", folders=["*"], older_than="1d"))
    p = run(pol, msg("INBOX", 1), msg("INBOX", 2), msg("Lists/python", 3),
            msg("Lists/python", 4, age=timedelta(0)), filler=False)
    assert uids(p) == [("Lists/python", 3)]
    (d,) = p.dropped
    assert (d.rule, d.folder, d.count) == ("old", "INBOX", 2)
    assert "allow_empty_folder" in d.reason


@pytest.mark.parametrize(
    ("extra", "folder_name", "dropped"),
    [
        ({}, "Trash", False),  # Trash/Junk-only rules may empty them by default
        ({"allow_empty_folder": False}, "Trash", True),
        ({"allow_empty_folder": True}, "INBOX", False),
    ],
)
def test_empty_folder_rail_defaults(extra, folder_name, dropped):
    folders = ["\\Trash"] if folder_name == "Trash" else ["INBOX"]
    pol = policy(rule(folders=folders, older_than="1d", age_by="received", **extra))
    p = run(pol, msg(folder_name, 1), msg(folder_name, 2), filler=False)
    assert bool(p.dropped) is dropped
    assert len(p.actions) == (0 if dropped else 2)


def test_empty_folder_rail_counts_protected_and_deleted_messages():
    pol = policy(rule(older_than="1d"))
    p = run(pol, msg("INBOX", 1), msg("INBOX", 2, flags={FLAGGED}),
            msg("INBOX", 3, flags={DELETED}), filler=False)
    assert uids(p) == [("INBOX", 1)] and p.dropped == ()


def test_empty_folder_rail_sees_two_rules_emptying_a_folder_together():
    pol = policy(rule("a", older_than="1d", larger_than=500),
                 rule("b", older_than="1d", allow_empty_folder=True))
    p = run(pol, msg("INBOX", 1, size=1000), msg("INBOX", 2, size=100), filler=False)
    assert [a.rule for a in p.actions] == ["b"]
    assert [(d.rule, d.count) for d in p.dropped] == [("a", 1)]


def test_over_quota_rail_drops_all_the_rules_actions_in_that_folder():
    """Issue 3: when the rail fires, all of that rule's actions in that folder go."""
    pol = quota_policy(rule("any", folders=["INBOX"], when="over_quota"))
    p = run(pol, msg("INBOX", 1), msg("INBOX", 2), usage=10_000, limit=1_000, filler=False)
    assert uids(p) == []
    assert [(d.rule, d.folder, d.count) for d in p.dropped] == [("any", "INBOX", 2)]
    assert p.short_by_bytes > 0
    pol = quota_policy(rule("any", folders=["INBOX"], when="over_quota",
                            allow_empty_folder=True))
    p = run(pol, msg("INBOX", 1), msg("INBOX", 2), usage=10_000, limit=1_000, filler=False)
    assert uids(p) == [("INBOX", 1), ("INBOX", 2)] and p.dropped == ()


# ------------------------------------------------------------------ plan and explain


def test_plan_fields_and_order():
    pol = quota_policy(rule("del", folders=["*"], exclude_folders=["\\Trash"], older_than="1y"),
                       TRASH_OQ)
    mailbox = [msg("Junk", 1, age=800 * DAY), msg("INBOX", 2, age=800 * DAY),
               msg("Trash", 3, size=50_000, saved_age=10 * DAY),
               msg("Trash", 4, size=50_000, saved_age=500 * DAY)]
    p = run(pol, *mailbox, usage=200_000, limit=200_000)
    # always-actions in snapshot order (INBOX, Trash, Junk, ...), then over-quota ones.
    assert uids(p) == [("INBOX", 2), ("Junk", 1), ("Trash", 4)]
    assert [a.over_quota for a in p.actions] == [False, False, True]
    assert (p.account, p.usage_bytes, p.limit_bytes, p.over_quota) == (
        "alice", 200_000, 200_000, True)
    assert p.usage_after_bytes == 148_000 and p.short_by_bytes == 0 and p.hold is False
    assert p.deferred_by_cap == 0 and p.dropped == () and p.warnings == ()


def test_deterministic():
    pol = quota_policy(JUNK_OQ, TRASH_OQ, OLD_OQ)
    mailbox = [msg(f.name, u, age=u * 17 * DAY) for f in STANDARD for u in range(1, 6)]
    a = run(pol, *mailbox, usage=10**6, limit=10**5)
    b = run(pol, *mailbox, usage=10**6, limit=10**5)
    assert a == b


def test_explain_says_why_each_message_is_kept():
    pol = policy(rule("a", older_than="30d"), keep_within="7d")
    mailbox = [msg("INBOX", 1, age=40 * DAY), msg("INBOX", 2, age=DAY),
               msg("INBOX", 3, flags=()), msg("INBOX", 4, flags={SEEN, DELETED}),
               msg("INBOX", 5, age=10 * DAY), msg("Junk", 6)]
    got = [(d.message.ref.uid, d.rule, d.action, d.reason)
           for d in explain(pol, snapshot(*by_folder(*mailbox)), NOW)]
    assert got == [
        (1, "a", ActionKind.DELETE, "received 2026-10-19, older than 30d"),
        (2, None, None, "received 2026-11-27, within keep_within 7d"),
        (3, "a", None, "protected (unread) under rule a"),
        (4, None, None, "flagged \\Deleted by another client"),
        (5, None, None, "no rule applies"),
        (6, None, None, "no rule applies"),
    ]


def test_cap_room_the_rail_gives_back_goes_to_the_deferred_candidates():
    """The rail drops a rule's actions in a folder it would empty; the cap room that frees
    goes to the candidates the cap had deferred (found by the cap property test)."""
    pol = quota_policy(rule("any", folders=["*"], when="over_quota"), max_delete_per_run=1)
    mailbox = [msg("Lists/python", 1, age=900 * DAY, size=10 * KiB),  # oldest: taken, then dropped
               msg("Lists/python", 2, age=800 * DAY, size=10 * KiB),  # would empty Lists: the rail
               msg("INBOX", 3, age=850 * DAY, size=10 * KiB),  # deferred by the cap at first
               msg("INBOX", 9, age=DAY, flags={FLAGGED})]
    p = run(pol, *mailbox, filler=False, usage=99 * KiB, limit=100 * KiB)
    assert uids(p) == [("INBOX", 3)]
    assert p.deferred_by_cap == 0


def test_kept_messages_are_counted_per_folder_and_reason():
    """Each kept message under one reason; counts always, the listing only when asked."""
    pol = policy(rule("a", older_than="30d", protect=["flagged", "unread"]),
                 rule("t", folders=["\\Trash"], older_than="30d", allow_empty_folder=True,
                      age_by="received"),
                 keep_within="7d", quota={"max_delete_per_run": 1})
    mailbox = [msg("INBOX", 1, age=40 * DAY), msg("INBOX", 2, age=DAY),
               msg("INBOX", 3, flags=()), msg("INBOX", 4, flags={FLAGGED}),
               msg("INBOX", 5, flags={SEEN, DELETED}), msg("INBOX", 6, age=10 * DAY),
               msg("Trash", 7, age=40 * DAY, size=500), msg("Trash", 8, age=50 * DAY)]
    p = plan(pol, snapshot(*by_folder(*mailbox)), NOW)
    assert uids(p) == [("INBOX", 1)]
    assert p.kept_messages is None
    assert [(t.folder, t.reason.value, t.messages, t.bytes) for t in p.kept] == [
        ("INBOX", "deleted", 1, 1000), ("INBOX", "keep_within", 1, 1000),
        ("INBOX", "protected_flagged", 1, 1000), ("INBOX", "protected_unread", 1, 1000),
        ("INBOX", "no_rule", 1, 1000), ("Trash", "capped", 2, 1500)]
    listed = plan(pol, snapshot(*by_folder(*mailbox)), NOW, list_kept=True).kept_messages
    assert listed is not None
    assert [(k.message.ref.uid, k.reason.value, k.rule) for k in listed] == [
        (5, "deleted", None), (2, "keep_within", None), (4, "protected_flagged", "a"),
        (3, "protected_unread", "a"), (6, "no_rule", None), (7, "capped", "t"),
        (8, "capped", "t")]
