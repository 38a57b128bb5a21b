"""Archive targets: where a message is copied, durably and verifiably, before it is deleted.

This package owns writing archive copies (``mbox``, ``maildir``, ``imap`` modules), reading
them back to verify them, and finding the copies an interrupted run may have made. It never
deletes a source message and never decides what to archive: the executor drives it, and
journals every step (``retention.state.journal``) before and after each call here.

A writer works in batches, in four calls the executor interleaves with journal commits::

    batch = writer.place(items)     # choose where each copy goes; take locks; no writes
    # journal: 'planned' rows (+ mbox intents: file and offset before the append)
    result = writer.write(batch)    # write and make durable (fsync file + folder; APPENDUID)
    # journal: 'archived' (location) for result.stored, 'failed' for the rest
    writer.release(batch)           # drop locks
    ok = writer.verify(copies)      # read back, SHA-256 compare; journal 'verified'

``write`` never raises for an archive failure: it returns what was stored before the
failure plus the ``ArchiveError``, so copies already durable are not orphaned; items whose
outcome is unknown (an APPEND that timed out and could not be reconciled, an mbox append
whose truncation failed) are listed in ``unresolved`` and stay ``planned`` for recovery.

Full filesystems: writes past RLIMIT_FSIZE raise SIGXFSZ, whose default action kills the
process. ``ignore_sigxfsz()`` sets it to SIG_IGN so such writes fail with EFBIG and become
an ``ArchiveError`` like ENOSPC. It is called once, in the main thread, at start-up (the CLI's
``main`` and ``serve``); dispositions cannot be set from the worker threads that build an
``ArchiveSet``, so doing it here would silently not work under the service.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from retention.archive.base import (
    ArchiveWriter,
    Batch,
    Copy,
    Item,
    PasswordReader,
    Placed,
    WriteResult,
    describe_os_error,
    fsync_dir,
    ignore_sigxfsz,
    make_dirs,
    sha256,
    write_all,
)
from retention.errors import ArchiveError

if TYPE_CHECKING:
    from retention.config.schema import ArchiveTarget
    from retention.state.journal import Journal

__all__ = [
    "ArchiveWriter",
    "Batch",
    "Copy",
    "Item",
    "PasswordReader",
    "Placed",
    "WriteResult",
    "describe_os_error",
    "fsync_dir",
    "ignore_sigxfsz",
    "make_dirs",
    "sha256",
    "write_all",
    "ArchiveSet",
]


class ArchiveSet:
    """The archive targets of one account, opened lazily by name."""

    def __init__(
        self,
        targets: Mapping[str, ArchiveTarget],
        *,
        account: str,
        secrets: PasswordReader | None = None,
        imap_connect: Callable[..., Any] | None = None,
    ) -> None:
        self.targets = dict(targets)
        self.account = account
        self._secrets = secrets
        self._imap_connect = imap_connect
        self._writers: dict[str, ArchiveWriter] = {}

    def writer(self, name: str, journal: Journal, run_id: str) -> ArchiveWriter:
        if name in self._writers:
            return self._writers[name]
        target = self.targets.get(name)
        if target is None:
            raise ArchiveError(f"archive target {name!r} is not configured")
        # The writers are imported when first used: most runs archive nothing, and every
        # start-up (``retention run``, ``usage``, ``check``) would pay for all three.
        w: ArchiveWriter
        if target.type == "mbox":
            from retention.archive.mbox import MboxWriter

            w = MboxWriter(name, target, account=self.account, journal=journal, run_id=run_id)
        elif target.type == "maildir":
            from retention.archive.maildir import MaildirWriter

            w = MaildirWriter(name, target, account=self.account)
        else:
            from retention.archive.imap import ImapWriter

            if self._secrets is None:
                from retention.config.secrets import read_password

                self._secrets = read_password
            w = ImapWriter(
                name, target, account=self.account, password=self._secrets,
                connect=self._imap_connect,
            )
        self._writers[name] = w
        return w

    def close(self) -> None:
        """Close files and connections (releases mbox locks); never touches the journal."""
        writers, self._writers = self._writers, {}
        for w in writers.values():
            w.close()

    def __enter__(self) -> ArchiveSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
