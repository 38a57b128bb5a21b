"""Notices: pure rendering (en/ja, own templates), the crossing rule, the notice journal and
delivery decisions (APPEND, OVERQUOTA fallback, crash recovery) with fake servers."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retention.config.schema import Account, Notify
from retention.errors import ConfigError, ProtocolError
from retention.model import Message, MessageRef
from retention.notify import render
from retention.notify.deliver import Delivery
from retention.notify.templates import load
from retention.plan import Action, ActionKind, Clock
from retention.result import ActionResult
from retention.state.notices import (
    FAILED,
    PENDING,
    RETRY,
    RETRY_FOR,
    SENT,
    UNKNOWN,
    NoticeRow,
    NoticeStore,
)

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def warning(language: str, override: Path | None = None) -> render.Notice:
    return render.warning(load(language, override), account="alice", username="alice@x",
                          language=language, crossing=1, usage_bytes=850, limit_bytes=1000,
                          warn_above=0.8, clean_above=0.9, restore_contact="it@x", now=NOW)


def result(rule: str, kind: ActionKind, folder: str, size: int, detail: str | None,
           outcome: str = "done") -> ActionResult:
    m = Message(MessageRef(folder, 1, size), size, NOW)
    return ActionResult(Action(m, kind, rule, Clock.RECEIVED, "old",
                               archive="vault" if kind is ActionKind.ARCHIVE else None),
                        outcome, detail)  # type: ignore[arg-type]


def test_warning_in_english_and_japanese() -> None:
    en, ja = warning("en"), warning("ja")
    assert en.subject == "Your mailbox alice is 85% full"
    assert "above the warning\nlevel of 80%" in en.body and "it@x" in en.body
    assert "85%" in ja.subject and "使用量" in ja.subject and "警告レベル" in ja.body
    assert en.event == ja.event == "warning:alice:1"
    assert en.message_id == ja.message_id  # one event, one Message-ID


def test_notice_bytes_are_a_proper_utf8_message() -> None:
    n = warning("ja")
    raw = n.to_bytes(sender="A <a@x>", to="alice@x", now=NOW)
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Subject"] == n.subject and msg["Message-ID"] == n.message_id
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg.get_content().replace("\r\n", "\n") == n.body


def test_own_templates_override_file_by_file(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "warning.txt").write_text(
        "Subject: $account at $percent\n\nDear $username, $unknown stays.\n", encoding="utf-8")
    n = warning("en", tmp_path)
    assert n.subject == "alice at 85%"
    assert n.body == "Dear alice@x, $unknown stays.\n"  # a typo shows, never fails
    assert load("en", tmp_path)["archived.txt"] == load("en")["archived.txt"]
    with pytest.raises(ConfigError):
        load("fr")


def test_archived_summary_groups_by_rule_and_names_places() -> None:
    results = [
        result("old", ActionKind.ARCHIVE, "INBOX", 1000, "/a/INBOX.mbox"),
        result("old", ActionKind.ARCHIVE, "Lists/x", 2000, "/a/Lists/x.mbox"),
        result("trash", ActionKind.DELETE, "Trash", 500, None),
        result("old", ActionKind.ARCHIVE, "INBOX", 7, "imap://v@h:993/Arch;UID=4", "failed"),
        result("mv", ActionKind.MOVE, "INBOX", 9, "moved to X"),
    ]
    lines = render.summarise(results, ("done",))
    assert [(x.rule, x.action, x.count, x.size, x.folders) for x in lines] == [
        ("old", "archive", 2, 3000, ("INBOX", "Lists/x")), ("trash", "delete", 1, 500, ("Trash",))]
    places = render.archive_places(results, ("done",))
    assert places == ["/a/INBOX.mbox", "/a/Lists/x.mbox"]
    n = render.archived(load("en"), account="alice", username="a", language="en", run_id="R1",
                        lines=lines, places=places, restore_contact="it@x",
                        restore_command="retention restore ... --run R1", now=NOW)
    assert n.subject == "3 messages (3.4 KiB) were cleaned up in your mailbox alice"
    assert '  - 2 messages (2.9 KiB) from INBOX, Lists/x: rule "old", archived' in n.body
    assert '  - 1 messages (500 B) from Trash: rule "trash", deleted' in n.body
    assert "    /a/INBOX.mbox" in n.body and "run R1" in n.body
    ja = render.archived(load("ja"), account="alice", username="a", language="ja",
                         run_id="R1", lines=lines, places=places, restore_contact="it@x",
                         restore_command="x", now=NOW)
    assert "ルール「old」、アーカイブ" in ja.body and "アーカイブの保存先" in ja.body


def test_maildir_and_imap_places_name_the_folder() -> None:
    rs = [result("o", ActionKind.ARCHIVE, "INBOX", 1, "/m/alice/INBOX/cur/123.x:2,S"),
          result("o", ActionKind.ARCHIVE, "INBOX", 1, "/m/alice/INBOX/new/124.x"),
          result("o", ActionKind.ARCHIVE, "INBOX", 1, "imap://v@h:993/Archive/INBOX;UID=9")]
    assert render.archive_places(rs, ("done",)) == ["/m/alice/INBOX",
                                                    "imap://v@h:993/Archive/INBOX"]


@given(st.lists(st.one_of(st.none(), st.floats(0, 2)), max_size=30))
def test_a_warning_fires_once_per_upward_crossing(ratios: list[float | None]) -> None:
    above, fired, crossings = False, 0, 0
    for r in ratios:
        was = above
        above, fire = render.crossed(above, r, 0.8)
        if fire:
            fired += 1
            assert not was and r is not None and r >= 0.8
        if r is not None and r >= 0.8 and not was:
            crossings += 1
        if r is None:
            assert above == was and not fire
    assert fired == crossings


# -- journal and delivery ----------------------------------------------------------------


class FakeImap:
    """INBOX of one account: append (or refuse over quota), search by Message-ID."""

    def __init__(self, over_quota: bool = False, crash_after_append: bool = False) -> None:
        self.inbox: list[bytes] = []
        self.over_quota = over_quota
        self.crash_after_append = crash_after_append

    def connect(self, account: Any, password: str, readonly: bool) -> FakeImap:
        return self

    def find_by_message_id(self, folder: str, mid: str) -> list[int]:
        return [i + 1 for i, m in enumerate(self.inbox) if mid.encode() in m]

    def append(self, folder: str, data: bytes, flags: Any, when: Any) -> int:
        if self.over_quota:
            raise ProtocolError("127.0.0.1:143: APPEND: [OVERQUOTA] Quota exceeded")
        self.inbox.append(data)
        if self.crash_after_append:
            raise Crash
        return len(self.inbox)

    def close(self) -> None:
        pass


class Crash(BaseException):
    pass


ACCOUNT = Account(name="alice", host="h", username="alice@x", password_env="P", policy="p")


def row(channel: str = "append") -> NoticeRow:
    n = warning("en")
    return NoticeRow(n.event, "alice", n.kind, PENDING, channel, n.message_id, "a@x",
                     "alice@x", n.to_bytes(sender="a@x", to="alice@x", now=NOW), None)


def delivery(tmp_path: Path, imap: FakeImap, sent: list[bytes], **notify: Any) -> Delivery:
    def smtp(settings: Any, password: Any, sender: str, to: list[str], data: bytes) -> str:
        sent.append(data)
        return "smtp://relay:587"

    store = NoticeStore.open(tmp_path / "notices.sqlite3")
    return Delivery(ACCOUNT, Notify(**notify), store, lambda c: "pw",
                    imap_connect=imap.connect, smtp_submit=smtp)


def test_an_event_is_journalled_once(tmp_path: Path) -> None:
    with NoticeStore.open(tmp_path / "notices.sqlite3") as store:
        assert store.add_pending(row(), level=(True, 1))
        assert not store.add_pending(row(), level=(True, 2))  # the same event: never again
        assert store.level("alice") == (True, 1)


def test_over_quota_append_falls_back_to_smtp(tmp_path: Path) -> None:
    imap, sent = FakeImap(over_quota=True), []
    d = delivery(tmp_path, imap, sent, smtp={"host": "relay"})
    r = row()
    d.store.add_pending(r)
    state, channel, detail = d.send(r)
    assert (state, channel) == (SENT, "smtp-fallback") and "OVERQUOTA" in detail
    assert len(sent) == 1 and imap.inbox == []
    without = delivery(tmp_path / "b", FakeImap(over_quota=True), [])
    without.store.add_pending(r)
    state, _, detail = without.send(r)
    assert state == RETRY and "no notify.smtp" in detail  # the next run tries again


def test_a_crash_after_append_never_appends_twice(tmp_path: Path) -> None:
    imap, sent = FakeImap(crash_after_append=True), []
    d = delivery(tmp_path, imap, sent)
    r = row()
    d.store.add_pending(r)
    with pytest.raises(Crash):
        d.send(r)
    (left,) = d.store.pending("alice")
    imap.crash_after_append = False
    state, _, detail = delivery(tmp_path, imap, sent).finish_interrupted(left)
    assert state == SENT and "already in INBOX" in detail
    assert len(imap.inbox) == 1


def test_an_interrupted_smtp_hand_off_is_not_repeated(tmp_path: Path) -> None:
    imap, sent = FakeImap(), []
    d = delivery(tmp_path, imap, sent, delivery="smtp", smtp={"host": "relay"})
    r = row("smtp")
    d.store.add_pending(r)
    state, _, detail = d.finish_interrupted(r)
    assert state == UNKNOWN and "never sent twice" in detail and sent == []


def test_a_notice_that_failed_before_the_hand_off_is_retried_then_given_up(
    tmp_path: Path,
) -> None:
    imap, sent = FakeImap(over_quota=True), []
    d = delivery(tmp_path, imap, sent)
    r = row()
    d.store.add_pending(r)
    assert d.send(r)[0] == RETRY
    (again,) = d.store.to_retry("alice", now=NOW)
    imap.over_quota = False  # the run freed space: the APPEND now goes in, once
    assert d.send(again)[0] == SENT and len(imap.inbox) == 1
    assert d.store.to_retry("alice", now=NOW) == []
    # A notice that cannot be delivered for RETRY_FOR is given up, with the reason.
    later = delivery(tmp_path / "b", FakeImap(over_quota=True), [])
    later.store.add_pending(r)
    later.send(r)
    assert later.store.to_retry("alice", now=NOW + RETRY_FOR + RETRY_FOR) == []
    gone = later.store.get(r.event)
    assert gone is not None and gone.state == FAILED and "gave up" in (gone.detail or "")


@pytest.mark.parametrize(("error", "state"), [
    ("uncertain", UNKNOWN), ("partly", FAILED), ("refused", RETRY)])
def test_smtp_errors_say_whether_the_relay_may_have_the_notice(
    tmp_path: Path, error: str, state: str
) -> None:
    from retention.adapters.smtp import PartlyRefused, Uncertain

    def smtp(*_: Any) -> str:
        raise {"uncertain": Uncertain("lost during DATA"),
               "partly": PartlyRefused("delivered, some refused"),
               "refused": ProtocolError("451 try later")}[error]

    store = NoticeStore.open(tmp_path / "notices.sqlite3")
    d = Delivery(ACCOUNT, Notify(delivery="smtp", smtp={"host": "relay"}), store,
                 lambda c: "pw", imap_connect=FakeImap().connect, smtp_submit=smtp)
    r = row("smtp")
    store.add_pending(r)
    assert d.send(r)[0] == state
    assert [x.event for x in store.to_retry("alice", now=NOW)] == (
        [r.event] if state == RETRY else [])
