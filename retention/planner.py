"""The planner: ``plan(policy, snapshot, now) -> Plan``. Pure, deterministic, no I/O, no clock.

This module owns the semantics of rules (README "The policy file"). Per message, in snapshot order:

1. Never planned, by any rule, over quota included: a message already flagged ``\\Deleted``
   by another client, one received within ``keep_within`` (always measured on
   ``Message.received``, whatever the rule's clock), and one the snapshot exempts
   (``Snapshot.exempt``: restored mail within ``restore_grace``; listed in
   ``Plan.exempted`` with the reason).
2. Always phase. The ``when: always`` rules are tried in order; the first whose conditions
   all hold (folder, ``older_than``, ``before``, ``larger_than``, ``smaller_than``) decides.
   Protection is part of that decision, not a condition: if the deciding rule's ``protect``
   set covers the message, it is kept and no later always-rule is tried.
3. Rails on the always-actions, in this order (documented in ``plan``): empty-folder rail,
   then ``max_delete_per_run``.
4. Over-quota phase, when the limit is known and usage >= ``clean_above``: messages no
   always-rule decided an action for (unmatched, or kept as protected by the deciding
   always-rule) go to the first ``when: over_quota`` rule whose conditions hold (again
   protected under that rule = kept), ordered by rule, then the rule's clock time, folder,
   UID (oldest first), and are taken until the projected usage is <= ``clean_to``. The
   rails still hold: the cap continues counting, and a candidate that would remove the last
   message of a folder is skipped unless its rule allows emptying folders. Only the
   user's own folders count (review F2): removing mail from another user's or a shared
   folder a rule names frees none of this account's storage, so it is neither projected
   as freed nor taken by over-quota cleanup.

Every message no action takes is kept for exactly one ``KeptReason``: the first step above
that keeps it names it (an over-quota rule's rails, cap and empty folder, name it over the
always-rule's protection; "not needed" does not). ``Plan.kept`` counts them per folder and
reason; ``plan(..., list_kept=True)`` also lists them, which costs an object per message.

Unknown times fail safe: a ``saved`` clock without a saved time counts as "now" (never old
enough, youngest when ordering). Ages are compared at full (sub-second) precision against a
timezone-aware ``now``; "older than" is strict.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import UTC, datetime, time
from fractions import Fraction
from typing import overload

from retention import folders as fl
from retention.config.schema import (
    Policy,
    Rule,
    effective_allow_empty,
    effective_clock,
    effective_protect,
)
from retention.config.units import format_duration, format_percent, format_size
from retention.model import (
    ANSWERED,
    DELETED,
    DRAFT,
    FLAGGED,
    SEEN,
    FolderInfo,
    FolderSnapshot,
    Message,
    Protection,
    Snapshot,
    exempt_key,
)
from retention.plan import Action, ActionKind, Clock, Dropped, Kept, KeptReason, KeptTotal, Plan

__all__ = ["Decision", "clock_time", "explain", "plan", "protected_by"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What happens to one message and why (``action`` None: kept); see ``explain``."""

    message: Message
    rule: str | None
    action: ActionKind | None
    reason: str


@dataclass(frozen=True, slots=True)
class _Rule:
    """A rule with its defaults applied and its folders and target resolved."""

    index: int
    rule: Rule
    clock: Clock
    protect: frozenset[str]
    folders: frozenset[str]
    allow_empty: bool
    to_folder: str | None  # trash / move: resolved target
    failure: str | None  # why the target cannot be resolved
    # Built once per rule, not once per message (10,000 actions: ~0.1 s):
    name: str = ""
    protection: Protection = Protection()
    conditions: str = ""  # the reason after the clock's part (", older than 1y")


@functools.lru_cache(maxsize=64)
def _protection(words: frozenset[str]) -> Protection:
    return Protection.of(words)


def _day(t: datetime) -> str:
    return _day_of(t)


@functools.lru_cache(maxsize=4096)
def _day_of(t: datetime) -> str:
    # Cached: a scan shares one datetime per run of equal dates, and a plan of 10,000
    # actions names only a few hundred days.
    return t.astimezone(UTC).date().isoformat()


def clock_time(message: Message, clock: Clock) -> tuple[datetime | None, str]:
    """The time ``clock`` reads for ``message`` (None: unknown) and how the report names it."""
    if clock is Clock.SENT:
        if message.sent is not None:
            return message.sent, f"sent {_day(message.sent)}"
        why = "missing" if message.date_header is None else "unparseable"
        return message.received, f"sent {_day(message.received)} (Date header {why}, used received)"
    if clock is Clock.SAVED:
        if message.saved is None:
            return None, "saved time unknown"
        return message.saved, f"saved {_day(message.saved)}"
    if clock is Clock.FIRST_SEEN:  # the runner puts the POP3 first-seen time in received
        return message.received, f"first seen {_day(message.received)}"
    return message.received, f"received {_day(message.received)}"


_PROTECT_TESTS: dict[str, Callable[[frozenset[str]], bool]] = {
    "flagged": lambda flags: FLAGGED in flags,
    "unread": lambda flags: SEEN not in flags,
    "answered": lambda flags: ANSWERED in flags,
    "draft": lambda flags: DRAFT in flags,
}


def protected_by(message: Message, protect: Iterable[str]) -> list[str]:
    """The ``protect`` words that cover ``message`` (empty: not protected)."""
    return [p for p in sorted(protect) if _PROTECT_TESTS[p](message.flags)]


def _time(m: Message, clock: Clock) -> datetime | None:
    """``clock_time`` without the label (the hot loop reads it for every message)."""
    if clock is Clock.SENT:
        return m.sent if m.sent is not None else m.received
    if clock is Clock.SAVED:
        return m.saved
    return m.received


_PROTECTED = (  # the reason a protected message counts under: the user's own mark first
    ("flagged", KeptReason.PROTECTED_FLAGGED), ("unread", KeptReason.PROTECTED_UNREAD),
    ("answered", KeptReason.PROTECTED_ANSWERED), ("draft", KeptReason.PROTECTED_DRAFT),
)


def _protected_reason(m: Message, protect: frozenset[str]) -> KeptReason | None:
    for word, reason in _PROTECTED:
        if word in protect and _PROTECT_TESTS[word](m.flags):
            return reason
    return None


class _Tally:
    """The kept messages: two integers per (folder, reason); a ``Kept`` per message only
    when listing (bench_scan's 200,000-message dry-run keeps 190,000 of them)."""

    __slots__ = ("counts", "listed")

    def __init__(self, listing: bool) -> None:
        self.counts: dict[tuple[str, KeptReason], list[int]] = {}
        self.listed: list[Kept] | None = [] if listing else None

    def add(self, m: Message, reason: KeptReason, rule: str | None = None) -> None:
        c = self.counts.get((m.folder, reason))
        if c is None:
            self.counts[(m.folder, reason)] = [1, m.size]
        else:
            c[0] += 1
            c[1] += m.size
        if self.listed is not None:
            self.listed.append(Kept(m, reason, rule))

    def bulk(self, messages: Sequence[Message], reason: KeptReason,
             rules: Iterable[str | None]) -> None:
        """``add`` for many messages (``rules``: each one's rule name), at a fraction of the
        cost a message: they come grouped by folder, so one count is kept until the folder
        changes."""
        counts = self.counts
        folder: str | None = None
        n = size = 0
        for m in messages:
            f = m.folder
            if f != folder:
                if folder is not None:
                    c = counts.setdefault((folder, reason), [0, 0])
                    c[0] += n
                    c[1] += size
                folder, n, size = f, 0, 0
            n += 1
            size += m.size
        if folder is not None:
            c = counts.setdefault((folder, reason), [0, 0])
            c[0] += n
            c[1] += size
        if self.listed is not None:
            # not strict: ``rules`` may be itertools.repeat (one rule for the group)
            self.listed += (Kept(m, reason, name)
                            for m, name in zip(messages, rules, strict=False))

    def hits(self, hits: _HitList, start: int, reason: KeptReason) -> None:
        """``bulk`` for ``hits[start:]``."""
        self.bulk(hits.messages[start:], reason, (r.name for r in hits.rules[start:]))

    def totals(self, folder_order: Sequence[str]) -> tuple[KeptTotal, ...]:
        order = {f: i for i, f in enumerate(folder_order)}
        reasons = list(KeptReason)
        keys = sorted(self.counts, key=lambda k: (order.get(k[0], len(order)), k[0],
                                                  reasons.index(k[1])))
        return tuple(KeptTotal(f, why, *self.counts[(f, why)]) for f, why in keys)

    def kept(self, folder_order: Sequence[str]) -> tuple[Kept, ...] | None:
        """The listed messages by folder, then reason, in snapshot order within each."""
        if self.listed is None:
            return None
        order = {f: i for i, f in enumerate(folder_order)}
        reasons = {r: i for i, r in enumerate(KeptReason)}
        return tuple(sorted(self.listed, key=lambda k: (order.get(k.message.folder, -1),
                                                        reasons[k.reason])))


# Why an open message (no always-action) is kept, unless the over-quota phase takes it.
_Why = tuple[KeptReason, str | None]
_NO_RULE: _Why = (KeptReason.NO_RULE, None)


class _Whys(dict[_Why, _Why]):
    """One shared ``_Why`` per (reason, rule): a million protected messages then hold a
    million references to a handful of tuples, not a million tuples (56 B each)."""

    def of(self, reason: KeptReason, rule: str | None) -> _Why:
        key = (reason, rule)
        return self.setdefault(key, key)


def _matches(r: _Rule, m: Message, now: datetime) -> bool:
    """Whether every condition of ``r`` other than its folders holds for ``m``."""
    rule = r.rule
    if rule.larger_than is not None and not m.size > rule.larger_than:
        return False
    if rule.smaller_than is not None and not m.size < rule.smaller_than:
        return False
    if rule.older_than is not None or rule.before is not None:
        t = _time(m, r.clock)
        if t is None:
            return False
        if rule.older_than is not None and not now - t > rule.older_than:
            return False
        if rule.before is not None and not t < datetime.combine(rule.before, time(0),
                                                                tzinfo=UTC):
            return False
    return True


def _reason(r: _Rule, m: Message) -> str:
    """Why ``r`` holds for ``m`` (built only for the messages a plan or report shows)."""
    return clock_time(m, r.clock)[1] + r.conditions


def _conditions(rule: Rule) -> str:
    """The clock-independent part of ``_reason`` (", older than 1y, larger than 1 MiB")."""
    parts = [""]
    if rule.older_than is not None:
        parts.append(f"older than {format_duration(rule.older_than)}")
    if rule.before is not None:
        parts.append(f"before {rule.before.isoformat()}")
    if rule.larger_than is not None:
        parts.append(f"larger than {format_size(rule.larger_than)}")
    if rule.smaller_than is not None:
        parts.append(f"smaller than {format_size(rule.smaller_than)}")
    return ", ".join(parts)


def _matcher(r: _Rule, now: datetime) -> Callable[[Message], bool]:
    """``_matches(r, m, now)`` as a function of ``m`` alone, specialised for the common
    rule (an age by the received clock, nothing else): one comparison per message, since
    ``now - t > older_than`` is ``t < now - older_than`` (exact timedelta arithmetic)."""
    rule = r.rule
    if (rule.older_than is not None and rule.before is None and rule.larger_than is None
            and rule.smaller_than is None and r.clock in (Clock.RECEIVED, Clock.FIRST_SEEN)):
        cut = now - rule.older_than
        return lambda m: m.received < cut
    return lambda m: _matches(r, m, now)


def _hit(rules: Sequence[_Rule], m: Message, now: datetime) -> _Rule | None:
    """The first of ``rules`` that decides ``m`` (``_first`` without the reason)."""
    folder = m.folder
    for r in rules:
        if folder in r.folders and _matches(r, m, now):
            return r
    return None


def _first(rules: Sequence[_Rule], m: Message, now: datetime) -> tuple[_Rule, str] | None:
    r = _hit(rules, m, now)
    return None if r is None else (r, _reason(r, m))


def _prepare(policy: Policy, snapshot: Snapshot) -> list[_Rule]:
    infos: dict[str, FolderInfo] = {f.name: f for f in snapshot.all_folders}
    for f in snapshot.folders:
        infos.setdefault(f.name, f.info)
    known = list(infos.values())
    scanned = [f.info for f in snapshot.folders]
    out = []
    for i, rule in enumerate(policy.rules):
        to_folder = failure = None
        kind, target = rule.action.kind, rule.action.target
        if kind is ActionKind.TRASH:
            target = "\\Trash"
        if kind in (ActionKind.TRASH, ActionKind.MOVE):
            assert target is not None
            to_folder = fl.resolve_target(target, known)
            if to_folder is None:
                failure = (
                    f"{kind.value} target {target}: the server has no folder with that "
                    "special use" if fl.is_attribute(target) else f"invalid target {target!r}"
                )
        out.append(_Rule(
            index=i, rule=rule,
            clock=effective_clock(rule, snapshot.protocol),
            protect=effective_protect(rule, policy, snapshot.protocol),
            folders=frozenset(f.name for f in fl.select(rule.folders, rule.exclude_folders,
                                                         scanned)),
            allow_empty=effective_allow_empty(rule, snapshot.protocol),
            to_folder=to_folder, failure=failure,
            name=rule.name, conditions=_conditions(rule),
            protection=_protection(effective_protect(rule, policy, snapshot.protocol)),
        ))
    return out


def _action(r: _Rule, m: Message, reason: str, over_quota: bool = False) -> Action:
    kind = r.rule.action.kind
    return Action(
        message=m, kind=kind, rule=r.name, clock=r.clock, reason=reason,
        to_folder=r.to_folder, over_quota=over_quota,
        archive=r.rule.action.target if kind is ActionKind.ARCHIVE else None,
        protect=r.protection,
    )


@dataclass
class _State:
    """What the phases share: the plan being built and the rails' counters."""

    actions: list[Action]
    removed: Counter[str]  # per folder: removals planned
    counts: dict[str, int]  # per folder: every message in the snapshot
    cap_left: int
    deferred: int = 0


def exemption(m: Message, exempt: Mapping[str, str]) -> str | None:
    """Why ``m`` is exempt from every rule (restored mail), or None."""
    if not exempt:
        return None
    why = exempt.get(exempt_key(m.folder, m.uidvalidity, m.uid))
    if why is None and m.message_id:
        why = exempt.get("mid:" + m.message_id)
    return why


# An always-rule's decision before the rails: the Action (and its reason) is built only
# for the ones that stay in the plan (a 1,000,000-message folder can have 500,000 hits
# of which the cap keeps 10,000).
_Hit = tuple[_Rule, Message]


class _HitList(Sequence[_Hit]):
    """The hits as two parallel lists: 16 bytes a hit where a tuple each takes 64 (the
    500,000 hits of a 1,000,000-message folder: 8 MB instead of 32)."""

    __slots__ = ("messages", "rules")

    def __init__(self) -> None:
        self.rules: list[_Rule] = []
        self.messages: list[Message] = []

    def append(self, hit: _Hit) -> None:
        self.rules.append(hit[0])
        self.messages.append(hit[1])

    def __len__(self) -> int:
        return len(self.messages)

    def __iter__(self) -> Iterator[_Hit]:
        return zip(self.rules, self.messages, strict=True)

    @overload
    def __getitem__(self, index: int) -> _Hit: ...
    @overload
    def __getitem__(self, index: slice) -> list[_Hit]: ...
    def __getitem__(self, index: int | slice) -> _Hit | list[_Hit]:
        if isinstance(index, slice):
            return list(zip(self.rules[index], self.messages[index], strict=True))
        return self.rules[index], self.messages[index]


def _always_phase(
    rules: Sequence[_Rule], policy: Policy, snapshot: Snapshot, now: datetime,
    exempted: list[tuple[Message, str]], tally: _Tally,
) -> tuple[Sequence[_Hit], list[Message], list[_Why], list[Action]]:
    """Decide every message by the always-rules: (hits, open messages and why each is kept
    so far, impossible ones)."""
    # (rule, its test): built once per plan, not per message (200,000 messages).
    always = [(r, _matcher(r, now)) for r in rules if r.rule.when == "always"]
    hits = _HitList()
    open_: list[Message] = []
    why_open: list[_Why] = []
    failed: list[Action] = []
    whys = _Whys()
    keep_within = policy.keep_within
    exempt = dict(snapshot.exempt)
    for m in snapshot.messages():
        if DELETED in m.flags:
            tally.add(m, KeptReason.DELETED)
            continue
        if keep_within and now - m.received < keep_within:
            tally.add(m, KeptReason.KEEP_WITHIN)
            continue
        if exempt:
            why = exemption(m, exempt)
            if why is not None:
                exempted.append((m, why))  # never planned, over quota included
                tally.add(m, KeptReason.RESTORED)
                continue
        folder = m.folder
        for r, test in always:  # the first rule that decides m (``_hit``); r is read after
            if folder in r.folders and test(m):
                break
        else:
            open_.append(m)
            why_open.append(_NO_RULE)
            continue
        kept = _protected_reason(m, r.protect) if r.protect else None
        if kept is None and m.folder == r.to_folder:
            kept = KeptReason.IN_TARGET
        if kept is not None:
            open_.append(m)  # kept by this rule; an over-quota rule may still take it
            why_open.append(whys.of(kept, r.name))
        elif r.failure is not None:
            failed.append(_action(r, m, _reason(r, m)))
        else:
            hits.append((r, m))
    return hits, open_, why_open, failed


def _one_per_message(
    hits: Sequence[_Hit], open_: list[Message], why_open: list[_Why], counts: dict[str, int],
    tally: _Tally,
) -> tuple[Sequence[_Hit], list[Message], list[_Why], list[str]]:
    """Where folders are labels of one stored message (``global_id``: Gmail), act once.

    Removing a Gmail message from one label folder really deletes it (the adapter moves it
    to Trash and expunges it there), so it leaves every label. Hence: when every copy the
    scan saw is planned, only one action stays (its size counted once); when some
    copy is kept, none is acted on and the copies go back to the open messages.
    """
    if not any(m.global_id is not None for _, m in hits):
        return hits, open_, why_open, []  # not a label server: nothing to do
    kept_ids = {m.global_id for m in open_ if m.global_id is not None}
    # The copy acted on: the one in the fullest folder (any copy removes them all), so a
    # one-message label folder does not trip the empty-folder rail for nothing.
    best: dict[str, _Hit] = {}
    for r, m in hits:
        gid = m.global_id
        if gid is not None and gid not in kept_ids:
            have = best.get(gid)
            if have is None or counts.get(m.folder, 0) > counts.get(have[1].folder, 0):
                best[gid] = (r, m)
    out: list[_Hit] = []
    back: list[Message] = []
    back_why: list[_Why] = []
    for r, m in hits:
        gid = m.global_id
        if gid is None:
            out.append((r, m))
        elif gid in kept_ids:
            back.append(m)
            back_why.append((KeptReason.LABEL_KEPT, r.name))
        elif best[gid][1] is m:
            out.append((r, m))
        else:
            tally.add(m, KeptReason.LABEL_COPY, r.name)
    notes: list[str] = []
    copies = len(hits) - len(out) - len(back)
    if copies:
        notes.append(f"{copies} planned copies are the same message in another label "
                     "folder: removed and counted once")
    if back:
        notes.append(f"{len(back)} message(s) not removed: the same message is kept in "
                     "another label folder, and deleting it on Gmail would remove every label")
    return out, open_ + back, why_open + back_why, notes


def _whole_messages(candidates: Sequence[Message], over: Sequence[_Rule],
                    now: datetime) -> set[str]:
    """Global ids whose every open copy an over-quota rule may take (labels: see above)."""
    hits: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for m in candidates:
        if m.global_id is None:
            continue
        total[m.global_id] += 1
        r = _hit(over, m, now)
        if r is not None and not protected_by(m, r.protect):
            hits[m.global_id] += 1
    return {gid for gid, n in total.items() if hits[gid] == n}


def _empty_folder_rail(
    hits: Sequence[_Hit], rules: Sequence[_Rule], counts: dict[str, int], tally: _Tally,
) -> tuple[Sequence[_Hit], list[Dropped]]:
    """Drop a rule's actions in a folder the plan would empty, unless the rule allows it.

    Checked per folder over all rules together (two rules emptying a folder between them
    trip it too); every rule involved that does not allow emptying loses its actions there.
    """
    per_folder = Counter(m.folder for _, m in hits)
    emptied = {f for f, n in per_folder.items() if n >= counts.get(f, 0)}
    if not emptied:
        return hits, []
    doomed = Counter(
        (r.name, m.folder) for r, m in hits
        if m.folder in emptied and not r.allow_empty
    )
    kept = [(r, m) for r, m in hits if (r.name, m.folder) not in doomed]
    for r, m in hits:
        if (r.name, m.folder) in doomed:
            tally.add(m, KeptReason.EMPTY_FOLDER, r.name)
    dropped = [
        Dropped(rule, folder, n, f"would remove every message of {folder}; "
                "set allow_empty_folder: true on the rule to allow it")
        for (rule, folder), n in sorted(doomed.items())
    ]
    return kept, dropped


def _percent(usage: int, limit: int, level: float) -> str:
    """``93% > 90%``: as many decimals (up to 4) as it takes for the text to be true."""
    threshold = Fraction(repr(level)) * limit
    op = ">" if usage > threshold else ">="
    level_pct = Fraction(repr(level)) * 100
    for decimals in range(5):
        scale = 10**decimals
        value = Fraction(usage * 100 * scale // limit, scale)  # rounded down, never up
        if value > level_pct or (op == ">=" and value >= level_pct):
            break
    return f"{float(value):.{decimals}f}% {op} {format_percent(level)}"


def _over_quota_phase(
    rules: Sequence[_Rule], candidates: Iterable[Message], state: _State,
    projected: int, target: int, headline: str, now: datetime, overrides: dict[int, _Why],
) -> tuple[int, list[Dropped]]:
    """Take over-quota candidates until ``projected`` <= ``target``; return the projection.

    ``overrides`` gets why a candidate this phase held back is kept (by ``id``: cap, empty
    folder, another label), over the reason the always phase gave it.
    """
    over = [r for r in rules if r.rule.when == "over_quota"]
    chosen: list[tuple[tuple[int, datetime, str, int, int], _Rule, Message]] = []
    candidates = list(candidates)
    eligible = _whole_messages(candidates, over, now)
    for position, m in enumerate(candidates):
        r = _hit(over, m, now)
        if r is None or protected_by(m, r.protect):
            continue
        if m.global_id is not None and m.global_id not in eligible:
            overrides[id(m)] = (KeptReason.LABEL_KEPT, r.name)
            continue
        t = _time(m, r.clock) or now  # unknown counts as now: youngest
        # POP3 has no UIDs: ties (all first seen on the same run) go by position, i.e. the
        # server's message order, which is arrival order; UIDLs are opaque and unordered.
        key = (r.index, t, m.folder, m.uid or 0, position)
        chosen.append((key, r, m))
    chosen.sort(key=lambda c: c[0])
    rail: Counter[tuple[str, str]] = Counter()
    banned: set[tuple[str, str]] = set()
    deferred: dict[tuple[str, str], list[int]] = {}  # sizes the cap deferred, per key
    held: list[tuple[tuple[int, datetime, str, int, int], _Rule, Message]] = []  # deferred
    wanted = projected  # also counts what the cap defers, to count the deferrals
    taken = {a.message.global_id for a in state.actions if a.message.global_id is not None}
    todo = chosen
    i = 0
    while i < len(todo):
        _, r, m = todo[i]
        i += 1
        if wanted <= target:
            break
        if m.global_id is not None:
            if m.global_id in taken:
                # another label of the same message: removed (and counted) once
                overrides[id(m)] = (KeptReason.LABEL_COPY, r.name)
                continue
            taken.add(m.global_id)
        folder = m.folder
        rf = (r.name, folder)
        if rf in banned:
            rail[rf] += 1
            overrides[id(m)] = (KeptReason.EMPTY_FOLDER, r.name)
            continue
        if not r.allow_empty and state.removed[folder] + 1 >= state.counts.get(folder, 0):
            # The rail fires: all of this rule's actions in this folder leave the plan
            # (README "Quota"), and what they would have freed is wanted again from other
            # rules.
            mine = [a for a in state.actions
                    if a.over_quota and a.rule == r.name and a.message.folder == folder]
            state.actions[:] = [a for a in state.actions if a not in mine]
            for gone in (*(a.message for a in mine), m,
                         *(h[2] for h in held if (h[1].name, h[2].folder) == rf)):
                overrides[id(gone)] = (KeptReason.EMPTY_FOLDER, r.name)
            back = sum(a.message.size for a in mine)
            projected += back
            wanted += back + sum(deferred.get(rf, ()))
            state.cap_left += len(mine)
            state.removed[folder] -= len(mine)
            state.deferred -= len(deferred.get(rf, ()))
            rail[rf] += len(mine) + len(deferred.pop(rf, ())) + 1
            banned.add(rf)
            if mine and held:
                # The cap room given back goes to the candidates it had deferred, in their
                # order (they come before the rest: the list is sorted).
                redo = [h for h in held if (h[1].name, h[2].folder) not in banned]
                held = []
                for _, hr, hm in redo:
                    overrides.pop(id(hm), None)
                    wanted += hm.size
                    state.deferred -= 1
                    deferred[(hr.name, hm.folder)].remove(hm.size)
                    if hm.global_id is not None:
                        taken.discard(hm.global_id)  # considered again, as itself
                todo = redo + todo[i:]
                i = 0
            continue
        wanted -= m.size
        if state.cap_left <= 0:
            state.deferred += 1
            deferred.setdefault(rf, []).append(m.size)
            held.append((todo[i - 1][0], r, m))
            overrides[id(m)] = (KeptReason.CAPPED, r.name)
            continue
        state.cap_left -= 1
        state.removed[folder] += 1
        projected -= m.size
        state.actions.append(_action(r, m, f"{headline}: oldest in rule {r.name}", True))
    dropped = [
        Dropped(rule, folder, n, f"over-quota cleanup would remove every message of "
                f"{folder}; this rule's actions there are dropped (allow_empty_folder is "
                "false)")
        for (rule, folder), n in sorted(rail.items())
    ]
    return projected, dropped


def plan(policy: Policy, snapshot: Snapshot, now: datetime, *,
         list_kept: bool = False) -> Plan:
    """What one run does to ``snapshot``'s account under ``policy`` at ``now``.

    ``Plan.kept`` always counts the kept messages per folder and reason; ``list_kept``
    also lists them one by one in ``Plan.kept_messages`` (``run --list-kept``).

    Rail order: the empty-folder rail judges the always-rules' full intent first (a rule
    that would empty a folder is suspicious whatever the cap); the cap then keeps the first
    ``max_delete_per_run`` removals in plan order; only the always-actions that survive both
    free space before the over-quota phase starts, which honours both rails too.
    """
    assert now.tzinfo is not None, "now must be timezone-aware"
    rules = _prepare(policy, snapshot)
    quota = policy.quota
    counts = {f.name: len(f.messages) for f in snapshot.folders}
    exempted: list[tuple[Message, str]] = []
    tally = _Tally(list_kept)
    hits, open_, why_open, failed = _always_phase(rules, policy, snapshot, now, exempted,
                                                  tally)
    hits, open_, why_open, label_notes = _one_per_message(hits, open_, why_open, counts,
                                                          tally)
    hits, dropped = _empty_folder_rail(hits, rules, counts, tally)
    # A percentage is of the account's messages, not only of the folders the rules scan.
    total = snapshot.usage.messages
    cap = quota.max_delete_per_run.resolve(
        total if total is not None and total >= snapshot.message_count
        else snapshot.message_count
    )
    actions = [_action(r, m, _reason(r, m)) for r, m in hits[:cap]]
    if isinstance(hits, _HitList):
        tally.hits(hits, cap, KeptReason.CAPPED)
    else:
        for r, m in hits[cap:]:
            tally.add(m, KeptReason.CAPPED, r.name)
    state = _State(
        actions=actions,
        removed=Counter(a.message.folder for a in actions),
        counts=counts, cap_left=max(0, cap - len(hits)),
        deferred=max(0, len(hits) - cap),
    )
    usage = snapshot.usage.usage_bytes
    limit = snapshot.usage.limit_bytes or quota.limit
    foreign = {f.name for f in snapshot.folders if not f.info.namespace.own}
    projected = usage - sum(a.freed_bytes for a in state.actions
                            if a.message.folder not in foreign)
    # What the scan left out (unreadable metadata: kept, never acted on) is reported.
    warnings: list[str] = [f"folder {f.name}: {w}" for f in snapshot.folders for w in f.warnings]
    warnings += label_notes
    over_quota = False
    short_by = 0
    overrides: dict[int, _Why] = {}
    has_over_rules = any(r.rule.when == "over_quota" for r in rules)
    for r in rules:
        names = sorted(r.folders & foreign)
        if r.rule.when == "over_quota" and names:
            warnings.append(f"rule {r.name}: {', '.join(names)} is not this account's own "
                            "storage (another user's, shared or virtual): over-quota "
                            "cleanup takes nothing there")
    if not limit:
        limit = None
        if has_over_rules:
            warnings.append("no quota limit known (the server reports none and quota.limit "
                            "is not set): over_quota rules do nothing")
    elif usage >= Fraction(repr(quota.clean_above)) * limit:
        over_quota = True
        target = math.floor(Fraction(repr(quota.clean_to)) * limit)
        headline = f"over quota {_percent(usage, limit, quota.clean_above)}"
        projected, more = _over_quota_phase(
            rules, [m for m in open_ if m.folder not in foreign], state, projected,
            target, headline, now, overrides)
        dropped += more
        short_by = max(0, projected - target)
    _keep_open(rules, open_, why_open, state.actions, overrides, tally, now, foreign)
    failed_count = Counter(a.rule for a in failed)
    failed_rules = tuple(
        (r.name, f"{r.failure}; {failed_count[r.name]} message(s) not acted on")
        for r in rules if failed_count[r.name]
    )
    return Plan(
        account=snapshot.account, actions=tuple(state.actions), usage_bytes=usage,
        limit_bytes=limit, usage_after_bytes=max(0, projected), short_by_bytes=short_by,
        deferred_by_cap=state.deferred, over_quota=over_quota, dropped=tuple(dropped),
        warnings=tuple(warnings), failed_rules=failed_rules, failed_actions=tuple(failed),
        exempted=tuple(exempted),
        kept=tally.totals([f.name for f in snapshot.folders]),
        kept_messages=tally.kept([f.name for f in snapshot.folders]),
    )


def newest_server_date(snapshot: Snapshot, now: datetime) -> tuple[Message, datetime] | None:
    """The scanned message with the newest date the *server* stamped, and that date, not
    after ``now``:
    IMAP INTERNALDATE, or SAVEDATE where the folder has it (without it ``saved`` is the
    agent's own first sighting). POP3: None, its dates are all the agent's first sightings.
    A date after ``now`` proves nothing about a clock that runs ahead (it may be forged by a
    client's APPEND), so it is left out."""
    if snapshot.protocol == "pop3":
        return None
    best: Message | None = None
    best_at: datetime | None = None
    for folder in snapshot.folders:
        found = _newest_in(folder, now)
        if found is not None and (best_at is None or found[1] > best_at):
            best, best_at = found
    return None if best is None or best_at is None else (best, best_at)


_RECEIVED = operator.attrgetter("received")
_SAVED = operator.attrgetter("saved")


def _newest_in(folder: FolderSnapshot, now: datetime) -> tuple[Message, datetime] | None:
    """``newest_server_date`` of one folder: the first (message, date) in scan order with
    the newest date not after ``now``, a message's INTERNALDATE before its SAVEDATE.
    By ``max`` and ``index`` (C speed: 200,000 messages in a few ms); a folder with a
    date after ``now`` is walked message by message."""
    msgs = folder.messages
    if not msgs:
        return None
    received = list(map(_RECEIVED, msgs))
    top_r = max(received)
    saved = list(map(_SAVED, msgs)) if folder.has_savedate else []
    top_s = max(filter(None, saved), default=None)
    if top_r > now or (top_s is not None and top_s > now):
        return _newest_walk(folder, now)
    if top_s is None or top_r >= top_s:
        i = received.index(top_r)
        if top_s is not None and top_s == top_r:
            i = min(i, saved.index(top_s))
        return msgs[i], top_r
    return msgs[saved.index(top_s)], top_s


def _newest_walk(folder: FolderSnapshot, now: datetime) -> tuple[Message, datetime] | None:
    best: Message | None = None
    best_at: datetime | None = None
    for m in folder.messages:
        for at in (m.received, m.saved if folder.has_savedate else None):
            if at is not None and at <= now and (best_at is None or at > best_at):
                best, best_at = m, at
    return None if best is None or best_at is None else (best, best_at)


def clock_refusal(policy: Policy, snapshot: Snapshot, now: datetime) -> str | None:
    """Why nothing may be removed at ``now``, or None (review M10). The account pass asks
    it for every plan that removes something (an error, or a dry-run's warning).

    A clock that jumped forward (a VM restored from a snapshot, a bad RTC) ages every
    message at once, and Trash/Junk and POP3 rules may empty whole folders. The agent acts
    only when it can show that ``now`` is at most ``clock_skew_limit`` ahead of the
    server's clock; ``snapshot.server_time`` is the best lower bound on that clock the pass
    found (see ``retention.run.clock``): the newest server-stamped date, or a moment the
    server confirmed. A mailbox that got no mail for longer than the limit on a server
    that cannot confirm its time is refused too: fail-safe, and the message says which
    setting to raise. POP3 mail without a ``Received:`` stamp cannot be checked.
    """
    limit = policy.clock_skew_limit
    floor = snapshot.server_time
    if not limit or (floor is None and snapshot.protocol == "pop3"):
        # POP3 without a server stamp (no TOP, no Received: field): no evidence either way,
        # so no check (README, Limitations). IMAP always has INTERNALDATEs.
        return None
    if floor is not None and now - floor <= limit:
        return None
    if floor is None:
        seen = "no date stamped by the server was found"
    else:
        stamp = f"{floor.astimezone(UTC):%Y-%m-%d %H:%M}"
        seen = (f"the newest date stamped by the server is {stamp} UTC, "
                f"{(now - floor).total_seconds() / 86400:.1f} days earlier")
    return (f"clock check: nothing removed: the agent's clock says "
            f"{now.astimezone(UTC):%Y-%m-%d %H:%M} UTC, but {seen} (clock_skew_limit "
            f"{format_duration(limit)}); if the system clock jumped ahead (a VM restore, a "
            "bad RTC), fix it; if the mailbox really got no mail for that long, raise "
            "clock_skew_limit (0d turns the check off)")


def _keep_open(
    rules: Sequence[_Rule], open_: Sequence[Message], why_open: Sequence[_Why],
    actions: Sequence[Action], overrides: Mapping[int, _Why], tally: _Tally, now: datetime,
    foreign: Set[str],
) -> None:
    """Count the open messages the over-quota phase did not take, each for one reason."""
    over = [r for r in rules if r.rule.when == "over_quota"]
    taken = {id(a.message) for a in actions if a.over_quota}
    removed_ids = {a.message.global_id for a in actions if a.message.global_id is not None}
    groups: dict[_Why, list[Message]] = {}  # counted by group: see _Tally.bulk
    whys = _Whys()
    for m, why in zip(open_, why_open, strict=True):
        if taken and id(m) in taken:
            continue
        o = overrides.get(id(m)) if overrides else None
        if o is not None and (o[0] is not KeptReason.LABEL_COPY or m.global_id in removed_ids):
            why = o
        elif why is _NO_RULE and over:  # an over-quota rule may match: protected, or unneeded
            r = _hit(over, m, now)
            if r is not None:
                why = whys.of(_protected_reason(m, r.protect) or (
                    KeptReason.NOT_OWN if m.folder in foreign else KeptReason.NOT_NEEDED),
                              r.name)
        group = groups.get(why)
        if group is None:
            groups[why] = group = []
        group.append(m)
    for (reason, rule), messages in groups.items():
        tally.bulk(messages, reason, itertools.repeat(rule))


def explain(policy: Policy, snapshot: Snapshot, now: datetime) -> list[Decision]:
    """Per message, in snapshot order: its planned action and reason, or why it is kept."""
    result = plan(policy, snapshot, now)
    planned = {a.message.ref: a for a in result.actions}
    rules = _prepare(policy, snapshot)
    out = []
    for m in snapshot.messages():
        a = planned.get(m.ref)
        if a is not None:
            out.append(Decision(m, a.rule, a.kind, a.reason))
        else:
            out.append(Decision(m, *_why_kept(rules, policy, m, now, dict(snapshot.exempt))))
    return out


def _why_kept(
    rules: Sequence[_Rule], policy: Policy, m: Message, now: datetime,
    exempt: Mapping[str, str],
) -> tuple[str | None, None, str]:
    if m.deleted:
        return None, None, "flagged \\Deleted by another client"
    if policy.keep_within and now - m.received < policy.keep_within:
        return None, None, (f"received {_day(m.received)}, within keep_within "
                            f"{format_duration(policy.keep_within)}")
    why = exemption(m, exempt)
    if why is not None:
        return None, None, why
    for phase in ("always", "over_quota"):
        hit = _first([r for r in rules if r.rule.when == phase], m, now)
        if hit is None:
            continue
        r, reason = hit
        words = protected_by(m, r.protect)
        if words:
            return r.name, None, f"protected ({', '.join(words)}) under rule {r.name}"
        if m.folder == r.to_folder:
            return r.name, None, f"already in {r.to_folder}"
        if r.failure is not None:
            return r.name, None, r.failure
        if phase == "always":
            return r.name, None, f"{reason}; held back by a safety rail (dropped or deferred)"
        return r.name, None, f"{reason}; over-quota candidate: not needed, or held back by a rail"
    return None, None, "no rule applies"
