"""Property tests of the planner safety, quota target, ordering, cap, determinism."""

from __future__ import annotations

import math
from datetime import datetime
from fractions import Fraction
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from retention.config.schema import Policy, effective_clock, effective_protect
from retention.folders import select
from retention.model import ANSWERED, DRAFT, FLAGGED, SEEN, Message, Snapshot
from retention.plan import ActionKind, Clock, KeptReason
from retention.planner import plan
from tests.strategies import LEVELS, NOW, PROTECT_SETS, policies, policy, snapshots

# Local settings, not a global profile: other test modules keep theirs.
props = settings(max_examples=100, deadline=None)


def _protected(m: Message, protect: frozenset[str]) -> bool:
    return (
        ("flagged" in protect and FLAGGED in m.flags)
        or ("unread" in protect and SEEN not in m.flags)
        or ("answered" in protect and ANSWERED in m.flags)
        or ("draft" in protect and DRAFT in m.flags)
    )


def _time(m: Message, clock: Clock) -> datetime:
    if clock is Clock.SENT:
        return m.sent or m.received
    if clock is Clock.SAVED:
        return m.saved or NOW  # unknown: "now", the youngest
    return m.received


def _target(pol: Policy, limit: int) -> int:
    return math.floor(Fraction(repr(pol.quota.clean_to)) * limit)


def _rules(pol: Policy) -> dict[str, Any]:
    return {r.name: r for r in pol.rules}


@props
@given(pol=policies(), snap=snapshots())
def test_never_selects_protected_keep_within_or_deleted(pol: Policy, snap: Snapshot) -> None:
    rules = _rules(pol)
    for a in plan(pol, snap, NOW).actions:
        m = a.message
        assert not m.deleted
        assert not (pol.keep_within and NOW - m.received < pol.keep_within)
        assert not _protected(m, effective_protect(rules[a.rule], pol, snap.protocol))


@props
@given(pol=policies(), snap=snapshots())
def test_never_exceeds_the_cap(pol: Policy, snap: Snapshot) -> None:
    p = plan(pol, snap, NOW)
    cap = pol.quota.max_delete_per_run.resolve(snap.message_count)
    assert len(p.actions) <= cap
    if p.deferred_by_cap:
        assert len(p.actions) == cap


@props
@given(pol=policies(), snap=snapshots())
def test_deterministic(pol: Policy, snap: Snapshot) -> None:
    assert plan(pol, snap, NOW) == plan(pol, snap, NOW)


@props
@given(pol=policies(), snap=snapshots())
def test_every_action_is_explained_and_consistent(pol: Policy, snap: Snapshot) -> None:
    rules = _rules(pol)
    p = plan(pol, snap, NOW)
    refs = [a.message.ref for a in p.actions]
    assert len(refs) == len(set(refs))  # one action per message at most
    flags = [a.over_quota for a in p.actions]
    assert flags == sorted(flags)  # always-actions first, then over-quota ones
    for a in p.actions:
        r = rules[a.rule]
        assert a.reason
        assert r.action.kind is a.kind
        assert a.clock is effective_clock(r, snap.protocol)
        assert a.over_quota == (r.when == "over_quota")
        if a.over_quota:
            assert p.over_quota and a.reason.startswith("over quota ")
        assert (a.to_folder is not None) == (a.kind in (ActionKind.TRASH, ActionKind.MOVE))
        assert (a.archive is not None) == (a.kind is ActionKind.ARCHIVE)
        assert a.to_folder != a.message.ref.folder


@props
@given(pol=policies(), snap=snapshots())
def test_moves_free_nothing_and_short_by_follows_the_plan(pol: Policy, snap: Snapshot) -> None:
    p = plan(pol, snap, NOW)
    freed = sum(a.message.size for a in p.actions
                if a.kind in (ActionKind.DELETE, ActionKind.ARCHIVE))
    assert p.freed_bytes == freed
    assert p.usage_after_bytes == snap.usage.usage_bytes - freed
    limit = snap.usage.limit_bytes or pol.quota.limit
    assert p.limit_bytes == limit
    if p.over_quota:
        assert limit is not None
        assert p.short_by_bytes == max(0, p.usage_after_bytes - _target(pol, limit))
    else:
        assert p.short_by_bytes == 0
        assert not any(a.over_quota for a in p.actions)


@props
@given(pol=policies(), snap=snapshots())
def test_over_quota_order_is_rule_order_then_age(pol: Policy, snap: Snapshot) -> None:
    index = {r.name: i for i, r in enumerate(pol.rules)}
    p = plan(pol, snap, NOW)
    keys = [
        (index[a.rule], _time(a.message, a.clock), a.message.ref.folder, a.message.ref.uid)
        for a in p.actions if a.over_quota
    ]
    assert keys == sorted(keys)


# With only over-quota rules that have no condition but their folders, every cap and rail
# out of the way, the expected selection has a simple independent definition.


@st.composite
def cleanup_policies(draw: st.DrawFn) -> Policy:
    n = draw(st.integers(min_value=1, max_value=3))
    rules = []
    for i in range(n):
        r: dict[str, Any] = {
            "name": f"q{i}", "when": "over_quota", "allow_empty_folder": True,
            "folders": draw(st.sampled_from([["\\Junk"], ["\\Trash"], ["*"], ["INBOX"]])),
            "action": draw(st.sampled_from(["delete", {"archive": "cold"}])),
        }
        if draw(st.booleans()):
            r["age_by"] = draw(st.sampled_from(["received", "sent", "saved"]))
        if draw(st.booleans()):
            r["protect"] = draw(PROTECT_SETS)
        rules.append(r)
    clean_to, clean_above = draw(LEVELS)
    return policy(
        *rules,
        protect=draw(PROTECT_SETS),
        keep_within=draw(st.sampled_from(["0d", "7d", "90d"])),
        quota={"clean_above": f"{clean_above}%",
               "clean_to": f"{clean_to}%", "max_delete_per_run": 100_000},
    )


def _candidates(pol: Policy, snap: Snapshot) -> list[Message]:
    infos = [f.info for f in snap.folders]
    per_rule = [
        (i, r, {f.name for f in select(r.folders, r.exclude_folders, infos)})
        for i, r in enumerate(pol.rules)
    ]
    keyed = []
    for m in snap.messages():
        if m.deleted or (pol.keep_within and NOW - m.received < pol.keep_within):
            continue
        for i, r, folders in per_rule:
            if m.ref.folder in folders:
                if not _protected(m, effective_protect(r, pol, snap.protocol)):
                    clock = effective_clock(r, snap.protocol)
                    keyed.append(((i, _time(m, clock), m.ref.folder, m.ref.uid), m))
                break
    return [m for _, m in sorted(keyed, key=lambda km: km[0])]


@settings(max_examples=300, deadline=None)
@given(pol=cleanup_policies(), snap=snapshots())
def test_reaches_clean_to_whenever_the_candidates_suffice(pol: Policy, snap: Snapshot) -> None:
    p = plan(pol, snap, NOW)
    usage, limit = snap.usage.usage_bytes, snap.usage.limit_bytes
    if limit is None:
        assert p.actions == () and not p.over_quota and p.warnings
        return
    if usage < Fraction(repr(pol.quota.clean_above)) * limit:
        assert p.actions == () and not p.over_quota
        return
    assert p.over_quota
    candidates = _candidates(pol, snap)
    target = _target(pol, limit)
    # The expected selection: the shortest prefix of the ordered candidates that brings
    # usage to the target, or all of them when they do not suffice.
    expected: list[Message] = []
    projected = usage
    for m in candidates:
        if projected <= target:
            break
        expected.append(m)
        projected -= m.size
    assert [a.message for a in p.actions] == expected
    enough = usage - sum(m.size for m in candidates) <= target
    assert (p.short_by_bytes == 0) == enough
    assert (p.short_by_bytes > 0) == (p.usage_after_bytes > target)
    if enough:
        assert p.usage_after_bytes <= target


# ------------------------------------------------------------------ what is kept, and why


def _partition_holds(pol: Policy, snap: Snapshot) -> None:
    p = plan(pol, snap, NOW, list_kept=True)
    assert p.kept_messages is not None
    acted = [a.message.ref for a in (*p.actions, *p.failed_actions)]
    kept = [k.message.ref for k in p.kept_messages]
    # Every message is acted on, or kept for exactly one reason: never both, never neither.
    assert sorted(acted + kept, key=repr) == sorted((m.ref for m in snap.messages()), key=repr)
    assert len(set(acted + kept)) == snap.message_count
    # The per-folder counts are the listing's, and cost no listing.
    by: dict[tuple[str, KeptReason], list[int]] = {}
    for k in p.kept_messages:
        c = by.setdefault((k.message.ref.folder, k.reason), [0, 0])
        c[0] += 1
        c[1] += k.message.size
    assert {(t.folder, t.reason): [t.messages, t.bytes] for t in p.kept} == by
    unlisted = plan(pol, snap, NOW)
    assert unlisted.kept == p.kept and unlisted.kept_messages is None
    assert unlisted.actions == p.actions
    # The reasons agree with the plan's own figures and with the messages.
    count = {r: sum(t.messages for t in p.kept if t.reason is r) for r in KeptReason}
    assert count[KeptReason.CAPPED] == p.deferred_by_cap
    assert count[KeptReason.EMPTY_FOLDER] == sum(d.count for d in p.dropped)
    assert count[KeptReason.RESTORED] == len(p.exempted)
    rules = _rules(pol)
    for k in p.kept_messages:
        m = k.message
        if k.reason is KeptReason.DELETED:
            assert m.deleted
        elif k.reason is KeptReason.KEEP_WITHIN:
            assert pol.keep_within and NOW - m.received < pol.keep_within
        elif k.reason.value.startswith("protected_"):
            word = k.reason.value.removeprefix("protected_")
            assert k.rule is not None
            protect = effective_protect(rules[k.rule], pol, snap.protocol)
            assert word in protect and _protected(m, frozenset({word}))
        elif k.reason is KeptReason.NOT_NEEDED:
            assert k.rule is not None and rules[k.rule].when == "over_quota"
        elif k.reason is KeptReason.NO_RULE:
            assert k.rule is None


@props
@given(pol=policies(), snap=snapshots())
def test_every_message_is_acted_on_or_kept_for_exactly_one_reason(
        pol: Policy, snap: Snapshot) -> None:
    _partition_holds(pol, snap)


@props
@given(pol=cleanup_policies(), snap=snapshots())
def test_every_message_is_acted_on_or_kept_under_quota_pressure(
        pol: Policy, snap: Snapshot) -> None:
    _partition_holds(pol, snap)


@props
@given(pol=policies(), snap=snapshots(), data=st.data())
def test_every_label_copy_is_acted_on_or_kept_for_one_reason(
        pol: Policy, snap: Snapshot, data: st.DataObject) -> None:
    # Gmail: a few global ids shared across folders.
    import dataclasses

    gids = st.none() | st.sampled_from(["g1", "g2", "g3"])
    folders = tuple(
        dataclasses.replace(f, messages=tuple(
            m.replace(global_id=data.draw(gids)) for m in f.messages))
        for f in snap.folders)
    _partition_holds(pol, dataclasses.replace(snap, folders=folders))
