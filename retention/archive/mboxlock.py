"""Locks and intent sidecars of mbox archive files (review F5, M4).

The locks Dovecot (``mbox_write_locks = dotlock fcntl``) and mutt honour, in their order: a
``FILE.lock`` dotlock, a POSIX ``lockf`` of the whole file, then ``flock`` (which, unlike
fcntl locks, also excludes other threads of this process). The intent sidecar
``FILE.retention-intent`` records an append in progress next to the file, so whichever
journal the next writer uses, it knows which bytes a dead writer left (``mbox`` module doc).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from retention.archive.base import fsync_dir
from retention.errors import ArchiveError

LOCK_TIMEOUT = 120.0
DOTLOCK_STALE = 300.0  # seconds: a dotlock untouched this long belonged to a dead writer
SIDECAR = ".retention-intent"
HEAD = 64  # bytes of the member kept in the sidecar to recognise our own append


class Locks:
    """dotlock + lockf + flock on one mbox file, taken in that order, released in reverse."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd
        self._dotlock: tuple[int, int] | None = None  # (st_dev, st_ino) of our lock file

    def acquire(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (LOCK_TIMEOUT if timeout is None else timeout)
        try:
            self._take_dotlock(deadline)
            self._wait(deadline, lambda: fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB))
            self._wait(deadline, lambda: fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB))
        except BaseException:
            self.release()
            raise

    def _wait(self, deadline: float, attempt: Any) -> None:
        while True:
            try:
                attempt()
                return
            except (BlockingIOError, PermissionError):  # lockf may say EACCES or EAGAIN
                if time.monotonic() > deadline:
                    raise ArchiveError(
                        f"mbox {self.path} stays locked by another process") from None
                time.sleep(0.05)

    def _take_dotlock(self, deadline: float) -> None:
        lock = self.path + ".lock"
        body = f"{os.getpid()} {socket.gethostname()}\n".encode()
        while True:
            try:
                fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                with contextlib.suppress(FileNotFoundError):
                    if _dotlock_is_stale(lock):
                        os.unlink(lock)  # its writer died (Dovecot and mutt do the same)
                        continue
                if time.monotonic() > deadline:
                    raise ArchiveError(
                        f"mbox {self.path} stays locked by another process ({lock})") from None
                time.sleep(0.05)
                continue
            try:
                _put(fd, body)
                st = os.fstat(fd)
                self._dotlock = (st.st_dev, st.st_ino)
                with _HELD_LOCK:
                    _HELD.add(lock)
            finally:
                os.close(fd)
            return

    def release(self) -> None:
        """Unlock (closing ``fd`` also does); remove the dotlock if it is still ours."""
        with contextlib.suppress(OSError):
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            fcntl.lockf(self.fd, fcntl.LOCK_UN)
        if self._dotlock is not None:
            lock = self.path + ".lock"
            with contextlib.suppress(OSError):
                st = os.lstat(lock)
                if (st.st_dev, st.st_ino) == self._dotlock:
                    os.unlink(lock)
            with _HELD_LOCK:
                _HELD.discard(lock)
            self._dotlock = None


_HELD: set[str] = set()  # dotlocks this process holds (a pid match alone is not proof)
_HELD_LOCK = threading.Lock()


def _dotlock_is_stale(lock: str) -> bool:
    """Old enough, or written on this host by a process that is gone (or by this process,
    restarted with the same pid in a new container, when no thread here holds it)."""
    if time.time() - os.lstat(lock).st_mtime > DOTLOCK_STALE:
        return True
    try:
        with open(lock, "rb") as fh:
            words = fh.read(256).split()
        pid, host = int(words[0]), words[1].decode()
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return False  # not ours to judge (mutt writes nothing): wait for it to go stale
    if host != socket.gethostname():
        return False
    if pid == os.getpid():
        with _HELD_LOCK:
            return lock not in _HELD
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, someone else's
    return False


def lock(fd: int, path: str, timeout: float | None = None) -> Locks:
    locks = Locks(path, fd)
    locks.acquire(timeout)
    return locks


# -- the intent sidecar --------------------------------------------------------------------


def _put(fd: int, data: bytes) -> None:
    """A small write of our own bookkeeping (``write_all`` is kept for archive bytes)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _sidecar(path: str) -> str:
    return path + SIDECAR


def write_sidecar(path: str, record: dict[str, Any]) -> None:
    """Atomically (tmp + rename) and durably (file + folder fsync) write the sidecar."""
    side = _sidecar(path)
    tmp = side + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        _put(fd, json.dumps(record, sort_keys=True).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, side)
    fsync_dir(Path(path).parent)


def read_sidecar(path: str) -> dict[str, Any] | None:
    try:
        with open(_sidecar(path), "rb") as fh:
            record = json.loads(fh.read(65536))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable: treated as foreign, never as a licence to truncate
    return record if isinstance(record, dict) else {}


def drop_sidecar(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_sidecar(path))
        fsync_dir(Path(path).parent)


def may_truncate(fd: int, record: dict[str, Any], *, owner: bool) -> bool:
    """Whether the bytes from the sidecar's offset to the end are this append's own."""
    try:
        offset, length = int(record["offset"]), int(record["length"])
        head = bytes.fromhex(str(record["head"]))
    except (KeyError, TypeError, ValueError):
        return False
    size = os.fstat(fd).st_size
    if size <= offset:
        return False  # nothing after the offset: nothing to cut
    if record.get("state") == "durable":
        # A whole member: cut only by its own journal, and only if nobody appended since.
        if not owner or size != offset + length:
            return False
    elif size > offset + length:
        return False  # the file goes on past our append: someone else wrote after it
    got = os.pread(fd, min(len(head), size - offset), offset)
    return head.startswith(got) and bool(got)

