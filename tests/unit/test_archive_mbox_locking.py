"""mbox archives shared with other writers (issue 8, F5 and M4).

* Two agents with different journals (state_dirs) share a file: one dies mid-append, the
  other repairs the torn bytes through the intent sidecar and appends; the dead one's
  recovery later truncates nothing, so the other's verified entries survive.
* A foreign writer (mutt, Dovecot) appended after a crash: its bytes are never cut.
* The locks Dovecot and mutt take (fcntl/lockf and a dotlock) are honoured; a dead
  writer's dotlock is taken over; a batch locks its files in sorted order; two spellings
  of one path (a symlink) are one file.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import retention.archive.mboxlock as mboxlock
from retention.archive import Copy
from retention.archive.mbox import MboxWriter, encode_entry, read_all, repair_intent
from retention.config.schema import MboxTarget
from retention.errors import ArchiveError
from retention.state.journal import DROPPED, Journal
from tests.unit.test_archive_mbox import WHEN, _crash_in_write, _item


def _append(writer: MboxWriter, items) -> list[bool]:
    batch = writer.place(items)
    res = writer.write(batch)
    writer.release(batch)
    assert res.error is None, res.error
    return writer.verify([Copy(res.stored[k][1], batch.placed[k].copy_sha256)
                          for k in sorted(res.stored)])


@pytest.mark.parametrize("codec", ["none", "gzip"])
def test_dead_agent_never_truncates_another_journals_entries(tmp_path, monkeypatch, codec):
    target = MboxTarget(type="mbox", path=str(tmp_path / "shared.mbox"), compress=codec)
    j1 = Journal.open(tmp_path / "s1" / "j.sqlite3")
    j2 = Journal.open(tmp_path / "s2" / "j.sqlite3")
    a = MboxWriter("cold", target, account="alice", journal=j1, run_id="ra")
    _append(a, [_item(1, b"Subject: first\r\n\r\nbody\r\n")])
    path = Path(a.path_for(_item(1, b"")))
    size = path.stat().st_size
    # A dies with 40 bytes of a big append on disk (its intent in journal 1 only).
    _, [row] = _crash_in_write(monkeypatch, a, j1, [_item(2, b"Subject: torn\r\n\r\n" +
                                                          os.urandom(4000))], 40, run_id="ra")
    # B (another state_dir) appends to the same file: it rolls A's torn bytes back first.
    b = MboxWriter("cold", target, account="bob", journal=j2, run_id="rb")
    assert _append(b, [_item(7, b"Subject: bob\r\n\r\nkept\r\n")]) == [True]
    after_b = path.read_bytes()
    assert len(after_b) > size
    # A's recovery: its sidecar is gone, so the bytes after its offset are not its own.
    [intent] = j1.intents()
    repair_intent(j1, intent)
    assert path.read_bytes() == after_b
    assert j1.row(row).state == DROPPED and j1.intents() == []
    text = read_all(path)
    assert text.count(b"From MAILER-DAEMON") == 2 and b"kept" in text
    assert b"torn" not in text


def test_foreign_bytes_after_a_torn_append_are_never_cut(tmp_path, monkeypatch):
    target = MboxTarget(type="mbox", path=str(tmp_path / "shared.mbox"))
    journal = Journal.open(tmp_path / "j.sqlite3")
    w = MboxWriter("cold", target, account="alice", journal=journal, run_id="r1")
    _append(w, [_item(1, b"Subject: first\r\n\r\nbody\r\n")])
    path = tmp_path / "shared.mbox"
    _crash_in_write(monkeypatch, w, journal, [_item(2, b"Subject: t\r\n\r\n" + b"x" * 300)], 30)
    # mutt appends (it honours the dotlock... which a dead writer left: it took it over).
    with path.open("ab") as fh:
        fh.write(b"From someone@example.org Thu Jan  1 00:00:00 2026\n" + b"y" * 2000 + b"\n\n")
    before = path.read_bytes()
    [intent] = journal.intents()
    repair_intent(journal, intent)
    assert path.read_bytes() == before  # nothing cut: those bytes were not ours
    # A sidecar whose head does not match the file is no licence to truncate either.
    size = path.stat().st_size
    mboxlock.write_sidecar(str(path), {"offset": size - 10, "length": 100, "run_id": "x",
                                        "head": (b"Z" * 10).hex(), "state": "appending"})
    _append(w, [_item(3, b"Subject: later\r\n\r\nbody\r\n")])
    assert path.read_bytes().startswith(before)


def test_a_durable_unjournalled_append_is_cut_only_by_its_own_journal(tmp_path, monkeypatch):
    """Killed after the write was durable, before the rows were journalled ``archived``:
    the owner's recovery cuts it (no duplicate copy); nobody else does."""
    target = MboxTarget(type="mbox", path=str(tmp_path / "x.mbox"))
    journal = Journal.open(tmp_path / "j.sqlite3")
    w = MboxWriter("cold", target, account="alice", journal=journal, run_id="r1")
    _append(w, [_item(1, b"Subject: first\r\n\r\nbody\r\n")])
    size = (tmp_path / "x.mbox").stat().st_size
    batch = w.place([_item(2, b"Subject: whole\r\n\r\nbody\r\n")])
    path, offset = batch.intents[0]
    iid = journal.add_intent("alice", "r1", "cold", path, offset)
    res = w.write(batch)
    assert res.error is None
    # Killed now: fds closed by the kernel, sidecar (durable) and dotlock left behind.
    for o in batch.state:
        os.close(o.fd)
    w._held = []
    mboxlock._HELD.clear()
    assert mboxlock.read_sidecar(path)["state"] == "durable"
    [intent] = [i for i in journal.intents() if i.id == iid]
    repair_intent(journal, intent)
    assert (tmp_path / "x.mbox").stat().st_size == size


def _hold_in_child(script: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_fcntl_lock_of_another_process_is_honoured(tmp_path, monkeypatch):
    path = tmp_path / "x.mbox"
    path.write_bytes(encode_entry(b"a\n", WHEN))
    proc = _hold_in_child(
        "import fcntl, os, sys\n"
        f"fd = os.open({str(path)!r}, os.O_RDWR)\n"
        "fcntl.lockf(fd, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\nsys.stdin.read()\n")
    try:
        monkeypatch.setattr(mboxlock, "LOCK_TIMEOUT", 0.5)
        w = MboxWriter("cold", MboxTarget(type="mbox", path=str(path)), account="a",
                       journal=Journal.open(tmp_path / "j.sqlite3"), run_id="r")
        with pytest.raises(ArchiveError, match="stays locked"):
            w.place([_item(1, b"x\n")])
        assert not (tmp_path / "x.mbox.lock").exists()  # our dotlock was given back
    finally:
        proc.communicate("", timeout=30)
    assert _append(w, [_item(1, b"x\n")]) == [True]


def test_dotlocks_live_and_dead(tmp_path, monkeypatch):
    path = tmp_path / "x.mbox"
    lock = tmp_path / "x.mbox.lock"
    w = MboxWriter("cold", MboxTarget(type="mbox", path=str(path)), account="a",
                   journal=Journal.open(tmp_path / "j.sqlite3"), run_id="r")
    monkeypatch.setattr(mboxlock, "LOCK_TIMEOUT", 0.5)
    # A live writer on this host (a sleeping child) holds the dotlock: we wait, then fail.
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        lock.write_text(f"{child.pid} {socket.gethostname()}\n")
        with pytest.raises(ArchiveError, match="stays locked"):
            w.place([_item(1, b"x\n")])
        assert lock.exists()  # not ours: left alone
    finally:
        child.communicate(b"", timeout=30)
    # Its writer is gone: the dotlock is stale and taken over; ours is removed afterwards.
    assert _append(w, [_item(1, b"x\n")]) == [True]
    assert not lock.exists()
    # mutt's empty dotlock, fresh: honoured.
    lock.write_text("")
    with pytest.raises(ArchiveError, match="stays locked"):
        w.place([_item(2, b"y\n")])
    os.utime(lock, (0, 0))  # ... until it is older than DOTLOCK_STALE
    assert _append(w, [_item(2, b"y\n")]) == [True]


def test_files_are_locked_in_sorted_order_and_paths_are_canonical(tmp_path, monkeypatch):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    target = MboxTarget(type="mbox", path=str(tmp_path / "link" / "{folder}.mbox"))
    w = MboxWriter("cold", target, account="a", journal=Journal.open(tmp_path / "j.sqlite3"),
                   run_id="r")
    assert w.path_for(_item(1, b"", folder="INBOX")) == str(real / "INBOX.mbox")
    order: list[str] = []
    acquire = mboxlock.Locks.acquire

    def spy(self, *args):
        order.append(self.path)
        return acquire(self, *args)

    monkeypatch.setattr(mboxlock.Locks, "acquire", spy)
    items = [_item(1, b"z\n", folder="Zeta"), _item(2, b"a\n", folder="Alpha"),
             _item(3, b"m\n", folder="Mid")]
    assert _append(w, items) == [True, True, True]
    assert order == sorted(order) and len(order) == 3


def test_threads_sharing_a_file_exclude_each_other(tmp_path):
    """fcntl locks do not exclude threads of one process; flock and the dotlock do."""
    target = MboxTarget(type="mbox", path=str(tmp_path / "x.mbox"))
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            w = MboxWriter("cold", target, account=f"a{n}",
                           journal=Journal.open(tmp_path / f"j{n}.sqlite3"), run_id=f"r{n}")
            for k in range(10):
                assert _append(w, [_item(k, f"Subject: {n}-{k}\n\nbody\n".encode())]) == [True]
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert read_all(tmp_path / "x.mbox").count(b"From MAILER-DAEMON") == 30
    assert not (tmp_path / "x.mbox.lock").exists()
    # Unlocking works on a descriptor whose lock was never taken.
    fd = os.open(tmp_path / "x.mbox", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
