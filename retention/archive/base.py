"""The archive writers' common ground: value types, the ``ArchiveWriter`` protocol, and the
small filesystem helpers every writer needs (durable directories, whole writes, OS errors
in words). See the package docstring for the batch protocol.
"""

from __future__ import annotations

import errno
import os
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from retention.adapters.spool import Body, body_sha256
from retention.errors import ArchiveError
from retention.plan import Action

if TYPE_CHECKING:
    from retention.config.schema import Connection
    from retention.state.journal import JournalRow


def sha256(data: Body) -> str:
    """SHA-256 of a body in memory or spooled (``adapters.spool``), never read whole."""
    return body_sha256(data)


def ignore_sigxfsz() -> bool:
    """Make writes beyond RLIMIT_FSIZE fail with EFBIG instead of killing the process.

    Signal dispositions can only be set from the main thread; returns whether it was set.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return True


def describe_os_error(e: OSError) -> str:
    """A short, clear cause for an archive write failure."""
    if e.errno == errno.ENOSPC:
        return "no space left on the archive device"
    if e.errno == errno.EFBIG:
        return "file size limit reached (EFBIG)"
    if e.errno == errno.EDQUOT:
        return "disk quota exceeded on the archive device"
    return e.strerror or type(e).__name__


# -- filesystem helpers shared by mbox and maildir ---------------------------------------


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    """Create ``path`` and missing parents, each new one 0700 and fsynced into its parent.

    (``os.makedirs`` applies ``mode`` to the leaf only.) Existing folders are left alone.
    """
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(d, 0o700)  # umask may have removed bits we want; never add group/other
        fsync_dir(d.parent)


def write_all(fd: int, data: bytes) -> None:
    """Write every byte (a partial write before ENOSPC/EFBIG is followed by the error)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.EIO, "write returned 0")
        view = view[n:]


# -- the batch protocol ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Item:
    """One message to archive: the action and the exact bytes fetched from the source."""

    action: Action
    data: Body  # bytes, or a Spooled file for a body larger than the spool threshold
    sha256: str


@dataclass(slots=True)
class Placed:
    """Where one item will go, decided before anything is written (journalled as planned)."""

    item: Item
    copy_sha256: str  # hash of what the target keeps (mbox: LF-normalised bytes)
    location: str
    locator: dict[str, Any]
    intent_path: str | None = None  # mbox: the file whose append intent covers this item


@dataclass(slots=True)
class Batch:
    placed: list[Placed]
    # mbox: (file, offset before the append), journalled with the planned rows.
    intents: list[tuple[str, int]] = field(default_factory=list)
    state: Any = None  # writer-private (open files, locks)


@dataclass(slots=True)
class WriteResult:
    stored: dict[int, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    error: ArchiveError | None = None
    unresolved: set[int] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Copy:
    """An archived copy to verify: where (locator) and what it must hash to."""

    locator: dict[str, Any]
    copy_sha256: str


class ArchiveWriter(Protocol):
    name: str

    def place(self, items: Sequence[Item]) -> Batch: ...

    def write(self, batch: Batch) -> WriteResult: ...

    def release(self, batch: Batch) -> None: ...

    def verify(self, copies: Sequence[Copy]) -> list[bool]:
        """Read each copy back and compare its SHA-256; False when missing or different.

        Raises ArchiveError only when the target cannot be read at all.
        """
        ...

    def find(self, row: JournalRow) -> tuple[str, dict[str, Any]] | None:
        """Recovery of a ``planned`` row: the copy an interrupted run made, if any.

        Removes a partial copy it finds (Maildir ``tmp/``); returns (location, locator) of a
        complete copy whose hash matches, else None.
        """
        ...

    def close(self) -> None: ...


PasswordReader = Callable[["Connection"], str]


def zstandard_module() -> Any:
    """python-zstandard, or an ``ArchiveError`` naming the extra that installs it.

    ``check`` reports a zstd target without it already (``config.load``); this covers a
    package removed after the policy was loaded.
    """
    try:
        import zstandard
    except ImportError:
        from retention.config.load import ZSTD_MISSING

        raise ArchiveError(ZSTD_MISSING) from None
    return zstandard
