"""Maildir archive targets: byte-exact copies in the standard tmp/new/cur layout.

This module owns writing a message into a Maildir so that it is either completely there or
not there at all: the file is written under ``tmp/`` with a unique name, fsynced, given the
received time as its mtime (what Dovecot and others take as INTERNALDATE), renamed into
``new/`` (no flags) or ``cur/`` (with a ``:2,`` info part), and the folders are fsynced.
The final name is chosen and journalled before writing, so recovery can look for exactly
that file (and remove a leftover in ``tmp/``).

Layout: the target's ``path`` template is expanded per message (see ``paths``). When it
does not contain ``{folder}``, the source folder is appended as one directory level per
folder level (``archive/alice/Lists/python/{cur,new,tmp}``, like Dovecot's
``LAYOUT=fs``); a level named ``cur``, ``new`` or ``tmp`` is escaped so it never collides.

Flags: ``\\Draft`` D, ``\\Flagged`` F, ``\\Answered`` R, ``\\Seen`` S; ``\\Deleted`` and
``\\Recent`` are not carried over; keywords are not representable and are dropped.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import secrets
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retention.adapters.spool import CHUNK, body_chunks
from retention.archive.base import (
    Batch,
    Copy,
    Item,
    Placed,
    WriteResult,
    describe_os_error,
    fsync_dir,
    make_dirs,
    write_all,
)
from retention.archive.paths import expand, fs_folder
from retention.errors import ArchiveError

if TYPE_CHECKING:
    from retention.config.schema import MaildirTarget
    from retention.state.journal import JournalRow

_LETTERS = {"\\Draft": "D", "\\Flagged": "F", "\\Answered": "R", "\\Seen": "S"}
_SEQ = itertools.count(1)


def info_for(flags: frozenset[str]) -> str:
    """The ``:2,`` info suffix for IMAP flags ('' when none is representable)."""
    letters = sorted({_LETTERS[f] for f in flags if f in _LETTERS})
    return ":2," + "".join(letters) if letters else ""


def unique_name() -> str:
    """``<sec>.M<usec>P<pid>Q<seq>R<random>.<host>`` (the maildir.py/Dovecot style)."""
    now = time.time()
    sec = int(now)
    usec = int((now - sec) * 1_000_000)
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "localhost"
    return f"{sec}.M{usec}P{os.getpid()}Q{next(_SEQ)}R{secrets.token_hex(4)}.{host}"


class MaildirWriter:
    def __init__(self, name: str, target: MaildirTarget, *, account: str) -> None:
        self.name = name
        self.target = target
        self.account = account

    def maildir_for(self, item: Item) -> Path:
        m = item.action.message
        base = expand(self.target.path, account=self.account, folder=m.folder,
                      received=m.received, maildir=True)
        if "{folder}" in self.target.path:
            return Path(base)
        return Path(base) / fs_folder(m.folder, maildir=True)

    def place(self, items: Sequence[Item]) -> Batch:
        placed: list[Placed] = []
        for item in items:
            d = self.maildir_for(item)
            name = unique_name()
            info = info_for(item.action.message.flags)
            final = d / ("cur" if info else "new") / (name + info)
            locator: dict[str, Any] = {
                "type": "maildir", "path": str(final), "dir": str(d), "name": name,
                "tmp": str(d / "tmp" / name),
            }
            placed.append(Placed(item, item.sha256, str(final), locator))
        return Batch(placed)

    def write(self, batch: Batch) -> WriteResult:
        result = WriteResult()
        done: list[int] = []
        dirs: set[Path] = set()
        try:
            for i, p in enumerate(batch.placed):
                d = Path(p.locator["dir"])
                if d not in dirs:
                    for sub in ("tmp", "new", "cur"):
                        make_dirs(d / sub)
                    dirs.add(d)
                self._write_one(p)
                done.append(i)
        except OSError as e:
            result.error = ArchiveError(
                f"archive {self.name}: writing to {p.locator['dir']} failed: "
                f"{describe_os_error(e)}"
            )
        try:
            for d in dirs:
                for sub in ("tmp", "new", "cur"):
                    fsync_dir(d / sub)
        except OSError as e:
            # Renamed files may not be durable: remove them rather than trust them.
            for i in done:
                with contextlib.suppress(OSError):
                    os.unlink(batch.placed[i].locator["path"])
            result.error = result.error or ArchiveError(
                f"archive {self.name}: fsync failed: {describe_os_error(e)}"
            )
            return result
        for i in done:
            p = batch.placed[i]
            result.stored[i] = (p.location, p.locator)
        return result

    @staticmethod
    def _write_one(p: Placed) -> None:
        tmp = p.locator["tmp"]
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            for piece in body_chunks(p.item.data):  # a spooled body is copied piece by piece
                write_all(fd, piece)
            os.fsync(fd)
            stamp = p.item.action.message.received.timestamp()
            os.utime(fd, (stamp, stamp))
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(fd)
        os.rename(tmp, p.locator["path"])

    def release(self, batch: Batch) -> None:
        return None

    def verify(self, copies: Sequence[Copy]) -> list[bool]:
        return [matches(current_path(c.locator), c.copy_sha256) for c in copies]

    def find(self, row: JournalRow) -> tuple[str, dict[str, Any]] | None:
        loc = row.locator
        if not loc or row.copy_sha256 is None:
            return None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(loc["tmp"])  # an unfinished write: never complete, never renamed
        path = current_path(loc)
        if path is None:
            return None
        if matches(path, row.copy_sha256):
            return str(path), {**loc, "path": str(path)}
        with contextlib.suppress(OSError):
            os.unlink(path)  # our unique name, wrong content: a broken copy of ours
        return None

    def close(self) -> None:
        return None


def current_path(locator: dict[str, Any]) -> Path | None:
    """The file, also if a mail reader has since moved it to cur/ or changed its flags."""
    path = Path(locator["path"])
    if path.exists():
        return path
    d = Path(locator["dir"])
    name = locator["name"]
    for sub in ("cur", "new"):
        with contextlib.suppress(OSError):
            for entry in os.scandir(d / sub):
                if entry.name == name or entry.name.startswith(name + ":"):
                    return Path(entry.path)
    return None


def matches(path: Path | None, digest: str) -> bool:
    if path is None:
        return False
    digest_of = hashlib.sha256()
    try:
        with path.open("rb") as fh:  # streamed: a copy may be larger than memory
            for piece in iter(lambda: fh.read(CHUNK), b""):
                digest_of.update(piece)
    except FileNotFoundError:
        return False
    except OSError as e:
        raise ArchiveError(f"maildir {path}: cannot read back: {describe_os_error(e)}") from None
    return digest_of.hexdigest() == digest
