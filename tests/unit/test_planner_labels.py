"""Gmail's labels in the planner: one stored message shown in several folders (same
``global_id``, X-GM-MSGID) is counted once for quota and removed once."""

from __future__ import annotations

from datetime import timedelta

from retention.model import FLAGGED, Message
from retention.planner import plan
from tests.strategies import DAY, NOW, STANDARD, by_folder, msg, policy, rule, snapshot

MB = 1_000_000


def labelled(m: Message, gid: str) -> Message:
    return m.replace(global_id=gid)


def filler() -> tuple[Message, ...]:
    return tuple(msg(f.name, 999, age=timedelta(0), flags={FLAGGED}) for f in STANDARD)


def test_same_message_in_two_folders_is_removed_once() -> None:
    pol = policy(rule("old", older_than="30d", folders=["INBOX", "Lists/*"]))
    a = labelled(msg("INBOX", 1, age=90 * DAY, size=MB), "gm-1")
    b = labelled(msg("Lists/python", 7, age=90 * DAY, size=MB), "gm-1")
    other = labelled(msg("INBOX", 2, age=90 * DAY, size=MB), "gm-2")
    p = plan(pol, snapshot(*by_folder(a, b, other, *filler()), usage=10 * MB), NOW)
    assert [(x.message.ref.folder, x.message.ref.uid) for x in p.actions] == [
        ("INBOX", 1), ("INBOX", 2)]
    assert p.freed_bytes == 2 * MB and p.usage_after_bytes == 8 * MB
    assert any("counted once" in w for w in p.warnings)


def test_a_copy_kept_in_another_folder_keeps_the_message() -> None:
    # Deleting on Gmail removes every label: a copy no rule lets go keeps the message.
    pol = policy(rule("lists", older_than="30d", folders=["Lists/*"]))
    a = labelled(msg("INBOX", 1, age=90 * DAY, size=MB), "gm-1")
    b = labelled(msg("Lists/python", 7, age=90 * DAY, size=MB), "gm-1")
    p = plan(pol, snapshot(*by_folder(a, b, *filler())), NOW)
    assert p.actions == ()
    assert any("kept in another label folder" in w for w in p.warnings)


def test_over_quota_counts_each_message_once() -> None:
    pol = policy(rule("full", when="over_quota", folders=["INBOX", "Lists/*"]),
                 quota={"limit": 10 * MB, "clean_above": "90%", "clean_to": "80%"})
    # 9.5 MB used; 1.5 MB must go. Three 1 MB messages, the oldest shown in two folders:
    # counting its copies twice would stop after it (2 MB "freed") with only 1 MB freed.
    old = [labelled(msg("INBOX", 1, age=300 * DAY, size=MB), "gm-old"),
           labelled(msg("Lists/python", 5, age=300 * DAY, size=MB), "gm-old")]
    rest = [labelled(msg("INBOX", 2, age=200 * DAY, size=MB), "gm-2"),
            labelled(msg("INBOX", 3, age=100 * DAY, size=MB), "gm-3")]
    p = plan(pol, snapshot(*by_folder(*old, *rest, *filler()), usage=int(9.5 * MB)), NOW)
    assert sorted((a.message.ref.folder, a.message.ref.uid) for a in p.actions) == [
        ("INBOX", 1), ("INBOX", 2)]
    assert p.usage_after_bytes == int(7.5 * MB)


def test_without_global_ids_nothing_changes() -> None:
    pol = policy(rule("old", older_than="30d", folders=["INBOX", "Lists/*"]))
    a, b = msg("INBOX", 1, age=90 * DAY), msg("Lists/python", 7, age=90 * DAY)
    p = plan(pol, snapshot(*by_folder(a, b, *filler())), NOW)
    assert len(p.actions) == 2
