"""``Message`` is written by hand for memory (one object a message, rare fields in one
slot): it must behave exactly as the frozen dataclass it replaced."""

from __future__ import annotations

import copy
import pickle
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retention.model import Message, MessageRef, new_ref

T = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def test_fields_read_back_and_ref_is_a_value() -> None:
    ref = MessageRef("ゴミ箱", 7, 42)
    m = Message(ref, 100, T, frozenset({"\\Seen"}), sent=T - timedelta(1), saved=T,
                message_id="<a@x>", date_header="garbage", global_id="g1")
    assert (m.folder, m.uidvalidity, m.uid, m.uidl) == ("ゴミ箱", 7, 42, None)
    assert m.ref == ref and hash(m.ref) == hash(ref) and m.ref.key() == ref.key()
    assert (m.size, m.received, m.flags, m.saved) == (100, T, frozenset({"\\Seen"}), T)
    assert (m.sent, m.message_id, m.date_header, m.global_id) == (
        T - timedelta(1), "<a@x>", "garbage", "g1")
    assert not m.deleted and Message(ref, 1, T, frozenset({"\\Deleted"})).deleted


def test_pop3_ref() -> None:
    ref = MessageRef("INBOX", 0, None, "uidl-1")
    m = Message(ref, 5, T)
    assert m.ref == ref and m.uid is None and m.uidl == "uidl-1"


def test_immutable() -> None:
    m = Message(MessageRef("INBOX", 1, 1), 1, T)
    with pytest.raises(FrozenInstanceError):
        m.size = 2  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        del m.received
    with pytest.raises(AttributeError):
        m.other = 1  # type: ignore[attr-defined]


def test_replace_and_unknown_fields() -> None:
    m = Message(MessageRef("INBOX", 1, 1), 1, T, message_id="<a@x>")
    r = m.replace(saved=T, global_id="g")
    assert (r.saved, r.global_id, r.message_id, r.ref) == (T, "g", "<a@x>", m.ref)
    assert m.saved is None  # the original is untouched
    assert m.replace(ref=MessageRef("Trash", 2, 3)).ref == MessageRef("Trash", 2, 3)
    with pytest.raises(TypeError):
        m.replace(colour="red")


def test_scanned_is_the_constructor_without_keywords() -> None:
    a = Message.scanned("INBOX", 9, 5, 400, T, frozenset(), T)
    b = Message(MessageRef("INBOX", 9, 5), 400, T, frozenset(), None, T)
    assert a == b and hash(a) == hash(b) and repr(a) == repr(b)
    assert new_ref("INBOX", 9, 5) == MessageRef("INBOX", 9, 5)


def test_pickle_and_copy() -> None:
    m = Message(MessageRef("INBOX", 1, 1), 1, T, sent=T, message_id="<a@x>")
    assert pickle.loads(pickle.dumps(m)) == m
    assert copy.copy(m) == m and copy.deepcopy(m) == m


def test_not_equal_to_other_types() -> None:
    m = Message(MessageRef("INBOX", 1, 1), 1, T)
    assert m != m.ref and m != (m.ref, 1, T) and m is not None


optional_text = st.none() | st.text(max_size=5)
optional_date = st.none() | st.just(T) | st.just(T + timedelta(seconds=1))


@given(uid=st.integers(1, 5), size=st.integers(0, 3), flags=st.sampled_from(
    [frozenset(), frozenset({"\\Seen"})]), sent=optional_date, saved=optional_date,
    mid=optional_text, dh=optional_text, gid=optional_text)
def test_equality_is_field_by_field(uid, size, flags, sent, saved, mid, dh, gid) -> None:  # type: ignore[no-untyped-def]
    args = (MessageRef("INBOX", 1, uid), size, T, flags, sent, saved, mid, dh, gid)
    a, b = Message(*args), Message(*args)
    assert a == b and hash(a) == hash(b)
    base = Message(MessageRef("INBOX", 1, 1), 0, T)
    same = args == (base.ref, 0, T, frozenset(), None, None, None, None, None)
    assert (a == base) is same
