"""mbox format (mboxrd, LF), compressed members, the locked append and its crash repair."""

import gzip
import mailbox
import os
import stat
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retention.archive import Copy, Item, sha256
from retention.archive.mbox import (
    MboxWriter,
    decode_entry,
    encode_entry,
    normalise,
    read_all,
    repair_intent,
)
from retention.config.schema import MboxTarget
from retention.errors import ArchiveError
from retention.model import Message, MessageRef
from retention.plan import Action, ActionKind, Clock
from retention.state.journal import DROPPED, Journal, NewRow

WHEN = datetime(2021, 5, 6, 7, 8, 9, tzinfo=UTC)

lines = st.lists(
    st.one_of(
        st.sampled_from([b"From ", b">From ", b">>From x", b"From", b"", b"\r", b"From  \r"]),
        st.binary(max_size=20),
    ),
    max_size=12,
)
messages = st.builds(
    lambda parts, eol, tail: eol.join(parts) + tail,
    lines,
    st.sampled_from([b"\n", b"\r\n"]),
    st.sampled_from([b"", b"\n", b"\r\n", b"x"]),
)


@given(messages)
def test_entry_round_trip(data):
    entry = encode_entry(data, WHEN)
    assert entry.startswith(b"From MAILER-DAEMON Thu May  6 07:08:09 2021\n")
    assert decode_entry(entry) == normalise(data)
    body = entry.split(b"\n", 1)[1]
    # No line of the stored body can be taken for a separator.
    assert not any(line.startswith(b"From ") for line in body.split(b"\n"))


@settings(max_examples=50)
@given(st.lists(messages, min_size=1, max_size=5))
def test_python_mailbox_reads_every_entry(tmp_path_factory, msgs):
    path = tmp_path_factory.mktemp("mbox") / "x.mbox"
    path.write_bytes(b"".join(encode_entry(m, WHEN) for m in msgs))
    box = mailbox.mbox(str(path), create=False)
    try:
        got = [box.get_bytes(k) for k in box.keys()]
    finally:
        box.close()
    assert len(got) == len(msgs)
    from retention.archive.mbox import unescape

    for stored, original in zip(got, msgs, strict=True):
        # mailbox drops the From_ line and the empty line after; undo mboxrd quoting.
        assert unescape(stored) == normalise(original)


def test_normalise():
    assert normalise(b"a\r\nb") == b"a\nb\n"
    assert normalise(b"") == b""
    assert normalise(b"a\n") == b"a\n"


def _action(uid, data_received=WHEN, folder="INBOX"):
    m = Message(MessageRef(folder, 7, uid), 100, data_received, frozenset({"\\Seen"}),
                message_id=f"<{uid}@x>")
    return Action(m, ActionKind.ARCHIVE, "old", Clock.RECEIVED, "old", archive="cold")


def _item(uid, data, received=WHEN, folder="INBOX"):
    return Item(_action(uid, received, folder), data, sha256(data))


@pytest.mark.parametrize("codec", ["none", "gzip", "zstd"])
def test_writer_appends_members_and_verifies(tmp_path, codec):
    journal = Journal.open(tmp_path / "j.sqlite3")
    target = MboxTarget(type="mbox", path=str(tmp_path / "a/{account}/{folder}/{year}.mbox"),
                        compress=codec)
    w = MboxWriter("cold", target, account="alice", journal=journal, run_id="r1")
    datas = [b"Subject: one\r\n\r\nFrom here\r\n", b"Subject: two\r\n\r\n>From there", b""]
    for batch_no in range(2):
        items = [_item(10 * batch_no + i, d) for i, d in enumerate(datas)]
        batch = w.place(items)
        assert len(batch.intents) == 1
        res = w.write(batch)
        w.release(batch)
        assert res.error is None and sorted(res.stored) == [0, 1, 2]
        copies = [Copy(res.stored[k][1], batch.placed[k].copy_sha256) for k in res.stored]
        assert w.verify(copies) == [True, True, True]
    suffix = {"none": "", "gzip": ".gz", "zstd": ".zst"}[codec]
    path = tmp_path / "a/alice/INBOX" / f"2021.mbox{suffix}"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    plain = tmp_path / "plain.mbox"
    plain.write_bytes(read_all(path))
    box = mailbox.mbox(str(plain), create=False)
    assert len(box) == 6
    box.close()
    if codec == "gzip":
        assert gzip.decompress(path.read_bytes()) == plain.read_bytes()
    # A damaged copy fails verification.
    loc = dict(res.stored[0][1])
    loc["entry_offset"] += 1
    assert w.verify([Copy(loc, batch.placed[0].copy_sha256)]) == [False]
    w.close()


def test_a_path_written_with_another_compression_is_refused_not_appended_to(tmp_path):
    """M5: compress switched from gzip to none on a path ending in .gz: plain entries in a
    gzip stream would be dropped by zcat; the append is refused and the file unchanged."""
    journal = Journal.open(tmp_path / "j.sqlite3")
    path = str(tmp_path / "a.mbox.gz")

    def append(codec: str) -> None:
        w = MboxWriter("cold", MboxTarget(type="mbox", path=path, compress=codec),
                       account="alice", journal=journal, run_id="r1")
        try:
            batch = w.place([_item(1, b"Subject: one\r\n\r\nbody\r\n")])
            assert w.write(batch).error is None
            w.release(batch)
        finally:
            w.close()

    append("gzip")
    before = (tmp_path / "a.mbox.gz").read_bytes()
    with pytest.raises(ArchiveError, match="holds gzip data but this target writes"):
        append("none")
    assert (tmp_path / "a.mbox.gz").read_bytes() == before
    assert gzip.decompress(before).count(b"From MAILER-DAEMON") == 1
    append("gzip")  # the right codec still appends
    journal.close()


class Died(BaseException):
    """The process is killed here: no except, no finally of ours runs after it."""


def _die_mid_write(monkeypatch, batch, keep: int):
    """Run ``write`` until ``keep`` bytes of the member are on disk, then "die": the fds
    close (the kernel drops flock/lockf) but the dotlock and the sidecar stay behind."""
    import retention.archive.mbox as mbox_mod

    real = mbox_mod.write_all
    fds = {o.fd for o in batch.state}

    def partial(fd, data):
        if fd in fds:
            os.write(fd, bytes(data[:keep]))
            raise Died
        real(fd, data)

    monkeypatch.setattr(mbox_mod, "write_all", partial)
    return mbox_mod, real


def _killed(mbox_mod, real, monkeypatch, writer, batch):
    import retention.archive.mboxlock as mboxlock

    monkeypatch.setattr(mbox_mod, "write_all", real)
    for o in batch.state:
        os.close(o.fd)
    writer._held = []
    mboxlock._HELD.clear()  # a new process: the dead one's dotlocks are not held here


def _crash_in_write(monkeypatch, writer, journal, items, keep, run_id="r1", account="alice"):
    batch = writer.place(items)
    with journal.transaction("planned"):
        iids = {p: journal.add_intent(account, run_id, "cold", p, off)
                for p, off in batch.intents}
        rows = journal.add_planned(run_id, account, [
            NewRow(p.item.action, intent_id=iids[p.intent_path]) for p in batch.placed])
    mbox_mod, real = _die_mid_write(monkeypatch, batch, keep)
    with pytest.raises(Died):
        writer.write(batch)
    _killed(mbox_mod, real, monkeypatch, writer, batch)
    return batch, rows


def test_torn_append_is_truncated_by_repair(tmp_path, monkeypatch):
    journal = Journal.open(tmp_path / "j.sqlite3")
    target = MboxTarget(type="mbox", path=str(tmp_path / "{folder}.mbox"), compress="gzip")
    w = MboxWriter("cold", target, account="alice", journal=journal, run_id="r1")
    batch = w.place([_item(1, b"Subject: a\r\n\r\nbody\r\n")])
    res = w.write(batch)
    assert res.error is None
    w.release(batch)
    size = (tmp_path / "INBOX.mbox.gz").stat().st_size
    # A second append dies half-way: intent + planned rows journalled, 100 bytes written.
    batch, [row] = _crash_in_write(monkeypatch, w, journal,
                                   [_item(2, b"Subject: b\r\n\r\n" + os.urandom(5000))], 100)
    assert batch.intents[0][1] == size
    assert (tmp_path / "INBOX.mbox.gz").stat().st_size == size + 100
    [intent] = journal.intents(account="alice")
    repair_intent(journal, intent)
    assert (tmp_path / "INBOX.mbox.gz").stat().st_size == size
    assert journal.intents() == []
    assert journal.row(row).state == DROPPED
    text = gzip.decompress((tmp_path / "INBOX.mbox.gz").read_bytes())
    assert len(text.split(b"From MAILER")) == 2
    assert not list(tmp_path.glob("*.lock")) and not list(tmp_path.glob("*.retention-intent"))


def test_next_writer_repairs_a_dead_writers_intent(tmp_path, monkeypatch):
    """Another account appending to the same file first rolls back the torn append."""
    journal = Journal.open(tmp_path / "j.sqlite3")
    target = MboxTarget(type="mbox", path=str(tmp_path / "shared.mbox"))
    w = MboxWriter("cold", target, account="alice", journal=journal, run_id="r1")
    _crash_in_write(monkeypatch, w, journal, [_item(1, b"Subject: a\r\n\r\nbody\r\n")], 23)
    assert (tmp_path / "shared.mbox").stat().st_size == 23
    w2 = MboxWriter("cold", target, account="bob", journal=journal, run_id="r2")
    batch = w2.place([_item(5, b"Subject: b\r\n\r\nbody\r\n")])
    assert batch.intents[0][1] == 0
    assert journal.intents() == []
    w2.close()


def test_write_error_truncates(tmp_path, monkeypatch):
    journal = Journal.open(tmp_path / "j.sqlite3")
    target = MboxTarget(type="mbox", path=str(tmp_path / "x.mbox"))
    w = MboxWriter("cold", target, account="alice", journal=journal, run_id="r1")
    (tmp_path / "x.mbox").write_bytes(encode_entry(b"a\n", WHEN))
    before = (tmp_path / "x.mbox").read_bytes()
    batch = w.place([_item(1, b"x" * 10000)])
    import errno

    import retention.archive.mbox as mbox_mod

    def fail(fd, data):
        os.write(fd, bytes(data[:10]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mbox_mod, "write_all", fail)
    res = w.write(batch)
    w.release(batch)
    assert res.stored == {} and not res.unresolved
    assert "no space left" in str(res.error)
    assert (tmp_path / "x.mbox").read_bytes() == before


@settings(max_examples=60, deadline=None)
@given(st.lists(messages, min_size=1, max_size=4), st.sampled_from(["none", "gzip", "zstd"]),
       st.booleans())
def test_streamed_entries_equal_the_format_and_verify(tmp_path_factory, msgs, codec, spool):
    """F11: the streamed encoder/verifier (tiny reads, long lines cut) writes exactly
    ``encode_entry`` and verifies every copy, from memory or from a spool file."""
    import retention.archive.mboxstream as mboxstream
    from retention.adapters.spool import Spooled

    mp = pytest.MonkeyPatch()
    mp.setattr(mboxstream, "_READ", 7)
    mp.setattr(mboxstream, "_LONG_LINE", 16)
    try:
        d = tmp_path_factory.mktemp("stream")
        journal = Journal.open(d / "j.sqlite3")
        target = MboxTarget(type="mbox", path=str(d / "x.mbox"), compress=codec)
        w = MboxWriter("cold", target, account="a", journal=journal, run_id="r")
        items = []
        for i, m in enumerate(msgs):
            data: bytes | Spooled = m
            if spool:
                data = Spooled(d)
                for k in range(0, len(m), 5):
                    data.write(m[k : k + 5])
            items.append(Item(_action(i), data, sha256(m)))
        batch = w.place(items)
        res = w.write(batch)
        w.release(batch)
        assert res.error is None
        copies = [Copy(res.stored[k][1], batch.placed[k].copy_sha256) for k in sorted(res.stored)]
        assert w.verify(copies) == [True] * len(msgs)
        assert read_all(w.path_for(items[0])) == b"".join(encode_entry(m, WHEN) for m in msgs)
        assert [p.copy_sha256 for p in batch.placed] == [sha256(normalise(m)) for m in msgs]
        journal.close()
    finally:
        mp.undo()
