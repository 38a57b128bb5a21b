"""The scan cache (issue 10): the pure merge against a model server, and the file format.

The model is a folder as RFC 7162 describes it: every change (a new message, a flag
change, an expunge) gets the next modseq; ``changes(since)`` answers what QRESYNC's
``UID FETCH 1:* (...) (CHANGEDSINCE since VANISHED)`` would (changed and new messages in
full, the UIDs expunged since, possibly with extra UIDs, as a server may report). The
property: merging any earlier full scan with the changes since gives exactly the full
scan of now, and the same plan; a report that misses an expunge is refused, never
merged wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retention.model import (
    FolderChanges,
    FolderInfo,
    FolderSnapshot,
    Message,
    MessageRef,
    Snapshot,
    Usage,
)
from retention.planner import plan
from retention.state.scancache import MAGIC, ScanCache, merge
from tests.strategies import policy

NOW = datetime(2026, 12, 1, tzinfo=UTC)
INFO = FolderInfo("INBOX")
VALIDITY = 77
POLICY = policy({"name": "old", "folders": ["*"], "older_than": "30d", "action": "delete"},
                protect=["flagged"], keep_within="0d")
FLAG_SETS = [frozenset(), frozenset({"\\Seen"}), frozenset({"\\Seen", "\\Flagged"}),
             frozenset({"\\Deleted"}), frozenset({"$Label", "\\Seen"})]


@dataclass
class Model:
    """A folder with modseqs: uid -> (message, modseq of its last change)."""

    messages: dict[int, tuple[Message, int]] = field(default_factory=dict)
    expunged: dict[int, int] = field(default_factory=dict)  # uid -> modseq of the expunge
    modseq: int = 1
    next_uid: int = 1

    def append(self, age_days: int, size: int, flags: int, saved: bool) -> None:
        self.modseq += 1
        uid = self.next_uid
        self.next_uid += 1
        received = NOW - timedelta(days=age_days, seconds=uid)
        m = Message(MessageRef("INBOX", VALIDITY, uid), size, received, FLAG_SETS[flags],
                    saved=received + timedelta(hours=1) if saved else None)
        self.messages[uid] = (m, self.modseq)

    def set_flags(self, pick: int, flags: int) -> None:
        if self.messages:
            uid = sorted(self.messages)[pick % len(self.messages)]
            self.modseq += 1
            m = self.messages[uid][0]
            self.messages[uid] = (Message(m.ref, m.size, m.received, FLAG_SETS[flags],
                                          saved=m.saved), self.modseq)

    def expunge(self, pick: int) -> None:
        if self.messages:
            uid = sorted(self.messages)[pick % len(self.messages)]
            self.modseq += 1
            del self.messages[uid]
            self.expunged[uid] = self.modseq

    def full(self) -> FolderSnapshot:
        msgs = tuple(self.messages[u][0] for u in sorted(self.messages))
        return FolderSnapshot(INFO, VALIDITY, msgs, has_savedate=True, modseq=self.modseq)

    def changes(self, since: int, extra: list[int]) -> FolderChanges:
        changed = tuple(m for u, (m, ms) in sorted(self.messages.items()) if ms > since)
        gone = [u for u, ms in self.expunged.items() if ms > since]
        gone += [u for u in extra if u not in self.messages]  # a server may say more
        return FolderChanges(VALIDITY, self.modseq, len(self.messages), changed,
                             tuple((u, u) for u in gone), has_savedate=True)


OPS = st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers(0, 90), st.integers(1, 5000),
              st.integers(0, len(FLAG_SETS) - 1), st.booleans()),
    st.tuples(st.just("flags"), st.integers(0, 1000), st.integers(0, len(FLAG_SETS) - 1)),
    st.tuples(st.just("expunge"), st.integers(0, 1000)),
), max_size=30)


def apply(model: Model, ops: list[tuple[object, ...]]) -> None:
    for op in ops:
        if op[0] == "append":
            model.append(*op[1:])  # type: ignore[arg-type]
        elif op[0] == "flags":
            model.set_flags(*op[1:])  # type: ignore[arg-type]
        else:
            model.expunge(*op[1:])  # type: ignore[arg-type]


def plan_of(snap: FolderSnapshot):  # type: ignore[no-untyped-def]
    return plan(POLICY, Snapshot("a", "imap", Usage(10**9, None, "sum"), (snap,), (INFO,)), NOW)


@settings(max_examples=300, deadline=None)
@given(before=OPS, after=OPS, extra=st.lists(st.integers(1, 80), max_size=4))
def test_merge_of_any_history_is_the_full_scan(before, after, extra) -> None:  # type: ignore[no-untyped-def]
    model = Model()
    apply(model, before)
    base = model.full()
    apply(model, after)
    merged = merge(base, model.changes(base.modseq or 0, extra))
    assert merged is not None
    assert merged == model.full()
    assert plan_of(merged) == plan_of(model.full())


@settings(max_examples=200, deadline=None)
@given(before=OPS, after=OPS, drop=st.integers(0, 100))
def test_a_missed_expunge_is_refused(before, after, drop) -> None:  # type: ignore[no-untyped-def]
    model = Model()
    apply(model, before)
    base = model.full()
    apply(model, after)
    changes = model.changes(base.modseq or 0, [])
    in_base = [r for r in changes.vanished if any(m.ref.uid == r[0] for m in base.messages)]
    if not in_base:
        return
    missing = in_base[drop % len(in_base)]
    partial = FolderChanges(changes.uidvalidity, changes.modseq, changes.exists,
                            changes.changed, tuple(r for r in changes.vanished if r != missing),
                            has_savedate=True)
    assert merge(base, partial) is None


def test_merge_refuses_another_uidvalidity_or_older_modseq() -> None:
    model = Model()
    model.append(40, 100, 1, True)
    base = model.full()
    other = FolderChanges(VALIDITY + 1, model.modseq, 1)
    assert merge(base, other) is None
    older = FolderChanges(VALIDITY, model.modseq - 1, 1)
    assert merge(base, older) is None
    no_modseq = FolderSnapshot(INFO, VALIDITY, base.messages, has_savedate=True)
    assert merge(no_modseq, FolderChanges(VALIDITY, model.modseq, 1, has_savedate=True)) is None


def test_vanished_ranges_overlapping_and_reversed() -> None:
    model = Model()
    for i in range(10):
        model.append(40, 100 + i, 1, False)
    base = FolderSnapshot(INFO, VALIDITY, model.full().messages, modseq=model.modseq)
    changes = FolderChanges(VALIDITY, model.modseq + 3, 4, (),
                            ((2, 4), (3, 6), (1, 1)))
    merged = merge(base, changes)
    assert merged is not None
    assert [m.ref.uid for m in merged.messages] == [7, 8, 9, 10]


# -- the file --------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(ops=OPS)
def test_file_round_trip(tmp_path_factory: pytest.TempPathFactory, ops) -> None:  # type: ignore[no-untyped-def]
    model = Model()
    apply(model, ops)
    cache = ScanCache(tmp_path_factory.mktemp("c"), "mailbox")
    cache.save(model.full())
    assert cache.load(INFO) == model.full()


def test_any_truncation_or_other_mailbox_is_refused(tmp_path: Path) -> None:
    model = Model()
    for i in range(20):
        model.append(i, 1000 + i, i % len(FLAG_SETS), i % 2 == 0)
    cache = ScanCache(tmp_path, "mailbox")
    cache.save(model.full())
    data = cache.path("INBOX").read_bytes()
    assert data.startswith(MAGIC)
    for cut in range(len(data)):
        cache.path("INBOX").write_bytes(data[:cut])
        assert cache.load(INFO) is None
    cache.path("INBOX").write_bytes(data)
    assert ScanCache(tmp_path, "another").load(INFO) is None
    assert cache.load(FolderInfo("Other")) is None
    assert cache.load(INFO) == model.full()


def test_snapshot_without_modseq_is_not_kept(tmp_path: Path) -> None:
    cache = ScanCache(tmp_path, "mailbox")
    model = Model()
    model.append(3, 10, 0, False)
    cache.save(model.full())
    assert cache.path("INBOX").exists()
    cache.save(FolderSnapshot(INFO, VALIDITY, model.full().messages))
    assert not cache.path("INBOX").exists()


def test_message_ids_are_read_once_per_uidvalidity(tmp_path: Path) -> None:
    from retention.run.scanning import cached_message_ids

    asked: list[list[int]] = []

    def read(refs):  # type: ignore[no-untyped-def]
        asked.append([r.uid for r in refs])
        return {r: f"<{r.uid}@x>" for r in refs}

    cache = ScanCache(tmp_path, "mailbox")
    refs = [MessageRef("INBOX", 5, uid) for uid in (1, 2, 3)]
    through = cached_message_ids(read, cache)
    assert through(refs) == {r: f"<{r.uid}@x>" for r in refs}
    assert through(refs[:2] + [MessageRef("INBOX", 5, 9)])[MessageRef("INBOX", 5, 9)] == "<9@x>"
    assert asked == [[1, 2, 3], [9]]
    other = [MessageRef("INBOX", 6, 1)]  # another UIDVALIDITY: read again
    assert through(other) == {other[0]: "<1@x>"}
    assert asked[-1] == [1]
    cache.path("INBOX").with_suffix(".ids").write_bytes(b"{garbage")
    through(refs[:1])
    assert asked[-1] == [1]
