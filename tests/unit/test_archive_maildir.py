"""Maildir targets: layout, flags, byte-exact copies, recovery lookups."""

import mailbox
import os
import stat
from datetime import UTC, datetime

from retention.archive import Copy, Item, sha256
from retention.archive.maildir import MaildirWriter, info_for
from retention.config.schema import MaildirTarget
from retention.model import Message, MessageRef
from retention.plan import Action, ActionKind, Clock
from retention.state.journal import Journal, NewRow

WHEN = datetime(2022, 2, 3, 4, 5, 6, tzinfo=UTC)


def _item(uid, data, flags=(), folder="Lists/python"):
    m = Message(MessageRef(folder, 9, uid), len(data), WHEN, frozenset(flags),
                message_id=f"<{uid}@x>")
    return Item(Action(m, ActionKind.ARCHIVE, "old", Clock.RECEIVED, "r", archive="files"),
                data, sha256(data))


def test_info_for():
    assert info_for(frozenset()) == ""
    assert info_for(frozenset({"\\Seen", "\\Flagged", "\\Deleted", "\\Recent", "$x"})) == ":2,FS"
    assert info_for(frozenset({"\\Answered", "\\Draft"})) == ":2,DR"


def test_write_verify_layout(tmp_path):
    w = MaildirWriter("files", MaildirTarget(type="maildir", path=str(tmp_path / "{account}")),
                      account="alice")
    data1 = b"Subject: a\r\n\r\nbody\r\n"
    data2 = b"Subject: b\n\nbare LF kept\n"
    batch = w.place([_item(1, data1, {"\\Seen"}), _item(2, data2)])
    res = w.write(batch)
    assert res.error is None and sorted(res.stored) == [0, 1]
    md = tmp_path / "alice" / "Lists" / "python"
    assert sorted(p.name for p in md.iterdir()) == ["cur", "new", "tmp"]
    [seen] = list((md / "cur").iterdir())
    [new] = list((md / "new").iterdir())
    assert seen.name.endswith(":2,S") and seen.read_bytes() == data1
    assert new.read_bytes() == data2
    assert seen.stat().st_mtime == WHEN.timestamp()
    assert stat.S_IMODE(seen.stat().st_mode) == 0o600
    assert stat.S_IMODE(md.stat().st_mode) == 0o700
    assert not list((md / "tmp").iterdir())
    copies = [Copy(res.stored[k][1], batch.placed[k].copy_sha256) for k in (0, 1)]
    assert w.verify(copies) == [True, True]
    # A mail reader moves new -> cur and adds a flag: still found.
    os.rename(new, md / "cur" / (new.name + ":2,S"))
    assert w.verify(copies) == [True, True]
    seen.write_bytes(b"changed")
    assert w.verify(copies) == [False, True]
    box = mailbox.Maildir(str(md), create=False)
    assert len(box) == 2


def test_find_adopts_complete_copy_and_removes_tmp(tmp_path):
    journal = Journal.open(tmp_path / "j.sqlite3")
    w = MaildirWriter("files", MaildirTarget(type="maildir", path=str(tmp_path / "m")),
                      account="alice")
    batch = w.place([_item(1, b"one\r\n"), _item(2, b"two\r\n")])
    ids = journal.add_planned("r", "alice", [
        NewRow(p.item.action, sha256=p.item.sha256, copy_sha256=p.copy_sha256,
               location=p.location, locator=p.locator) for p in batch.placed])
    res = w.write(batch)
    assert res.error is None
    # Simulate the second write never having been renamed: back into tmp/.
    os.rename(batch.placed[1].locator["path"], batch.placed[1].locator["tmp"])
    r1, r2 = journal.rows(ids)
    found = w.find(r1)
    assert found is not None and found[0] == batch.placed[0].location
    assert w.find(r2) is None
    assert not os.path.exists(batch.placed[1].locator["tmp"])


def test_write_error_keeps_earlier_copies(tmp_path, monkeypatch):
    w = MaildirWriter("files", MaildirTarget(type="maildir", path=str(tmp_path / "m")),
                      account="alice")
    batch = w.place([_item(1, b"one\r\n"), _item(2, b"two\r\n")])
    import errno

    import retention.archive.maildir as md_mod

    real = md_mod.write_all
    calls = []

    def flaky(fd, data):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.EFBIG, "File too large")
        real(fd, data)

    monkeypatch.setattr(md_mod, "write_all", flaky)
    res = w.write(batch)
    assert sorted(res.stored) == [0]
    assert "EFBIG" in str(res.error)
    tmp = tmp_path / "m" / "Lists" / "python" / "tmp"
    assert not list(tmp.iterdir())
