"""mbox archive files: mboxrd escaping, LF line endings, safe appends, gzip/zstd members.

This module owns the on-disk mbox format the agent writes and the append protocol that
keeps it intact across crashes:

* Entry format: ``From MAILER-DAEMON <asctime of the received time, UTC>`` then the message
  with CRLF turned into LF, ending in a newline (one is added when missing), every line
  matching ``^>*From `` quoted with one more ``>`` (mboxrd), then an empty line. Python's
  ``mailbox.mbox`` and mutt read it; ``decode_entry`` reverses it exactly, so verification
  compares SHA-256 of the read-back message with ``normalise(source)``.
* Locks: the ones Dovecot (``mbox_write_locks = dotlock fcntl``) and mutt honour, in their
  order: a ``FILE.lock`` dotlock (created ``O_EXCL``; one older than ``DOTLOCK_STALE`` is
  taken over), then a POSIX ``lockf`` of the whole file, then ``flock`` (which, unlike
  fcntl locks, also excludes other threads of this process). A batch locks its files in
  sorted order, so two writers sharing files can never deadlock. Paths are canonical
  (``realpath``), so two spellings of one file are one file.
* Appends: under those locks the file's size is journalled as an *intent* before anything
  is written, and an **intent sidecar** ``FILE.retention-intent`` (offset, length and the
  first bytes of the member, the run) is written next to the file and fsynced; the batch is
  written with one ``write`` series, the file and its folder are fsynced, the sidecar is
  marked ``durable``; the journal intent is cleared in the same transaction that marks the
  rows ``archived``, and the sidecar is removed before the locks are released. So a sidecar
  found under the lock belonged to a writer that died, whichever journal it used:
  - ``appending``: a torn append. Any writer truncates it back to its offset, but only if
    the file still ends within that append and begins there with its bytes;
  - ``durable``: a whole member whose rows may not be journalled. Only the journal that owns
    it (same run, same offset) truncates it, and only if the file still ends exactly where
    the append ended; otherwise the bytes stay (a duplicate copy at worst).
  With no sidecar, a journal intent truncates nothing: the bytes after its offset are not
  known to be its own (another agent repaired and appended, or nothing was ever written).
* Compression: ``gzip`` (stdlib) or ``zstd`` (python-zstandard); one complete member or
  frame per append batch, so the file stays a valid multi-member stream after every
  append and a truncation at a member boundary. ``.gz``/``.zst`` is appended to the path
  unless it already ends so.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retention.adapters.spool import Body, Limits, Spooled, body_chunks
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
    zstandard_module,
)
from retention.archive.mboxlock import (
    HEAD,
    Locks,
    drop_sidecar,
    lock,
    may_truncate,
    read_sidecar,
    write_sidecar,
)
from retention.archive.mboxstream import Sink, encode_into, from_line, member_digests
from retention.archive.paths import expand
from retention.errors import ArchiveError

if TYPE_CHECKING:
    from retention.config.schema import MboxTarget
    from retention.state.journal import Intent, Journal, JournalRow

_ESCAPE = re.compile(rb"(?m)^(>*From )")
_UNESCAPE = re.compile(rb"(?m)^>(>*From )")
_SUFFIX = {"gzip": ".gz", "zstd": ".zst", "none": ""}


# -- the format ----------------------------------------------------------------------------


def normalise(data: bytes) -> bytes:
    """The form an mbox entry keeps: ends with a newline (if non-empty), CRLF as LF."""
    if data and not data.endswith(b"\n"):
        data += b"\n"
    return data.replace(b"\r\n", b"\n")


def escape(text: bytes) -> bytes:
    """mboxrd: quote every line matching ``^>*From `` with one more ``>``."""
    return _ESCAPE.sub(rb">\1", text)


def unescape(text: bytes) -> bytes:
    return _UNESCAPE.sub(rb"\1", text)


def encode_entry(data: bytes, received: datetime) -> bytes:
    return from_line(received) + escape(normalise(data)) + b"\n"


def decode_entry(entry: bytes) -> bytes:
    """The normalised message back from one entry; ValueError if it is not one."""
    if not entry.startswith(b"From "):
        raise ValueError("entry does not start with a From_ line")
    nl = entry.find(b"\n")
    body = entry[nl + 1 :]
    if nl < 0 or not body.endswith(b"\n"):
        raise ValueError("entry does not end with an empty line")
    return unescape(body[:-1])


def compress(codec: str, payload: bytes) -> bytes:
    if codec == "gzip":
        return gzip.compress(payload, compresslevel=6, mtime=0)
    if codec == "zstd":
        zstandard = zstandard_module()

        return bytes(zstandard.ZstdCompressor(level=3).compress(payload))
    return payload


def decompress(codec: str, member: bytes) -> bytes:
    if codec == "gzip":
        return gzip.decompress(member)
    if codec == "zstd":
        zstandard = zstandard_module()

        return bytes(zstandard.ZstdDecompressor().decompress(member))
    return member


def read_all(path: Path | str, codec: str | None = None) -> bytes:
    """The whole mbox, decompressed (every member/frame): for tests and tools."""
    path = Path(path)
    if codec is None:
        codec = {".gz": "gzip", ".zst": "zstd"}.get(path.suffix, "none")
    raw = path.read_bytes()
    if codec == "gzip":
        return gzip.decompress(raw)
    if codec == "zstd":
        import io

        zstandard = zstandard_module()

        reader = zstandard.ZstdDecompressor().stream_reader(
            io.BytesIO(raw), read_across_frames=True
        )
        return bytes(reader.read())
    return raw


# -- locking and repair ------------------------------------------------------------------


def _repair_dead(journal: Journal | None, intents: Sequence[Intent], path: str,
                 fd: int) -> None:
    """Under the locks: roll back what a dead writer left (see the module doc)."""
    record = read_sidecar(path)
    cut: int | None = None
    if record is not None:
        owner = any(record.get("run_id") == i.run_id and record.get("offset") == i.offset
                    for i in intents)
        if may_truncate(fd, record, owner=owner):
            cut = int(record["offset"])
    if cut is not None:
        _truncate_to(fd, cut)
    if record is not None:
        drop_sidecar(path)
    if journal is not None and intents:
        _close_intents(journal, intents, truncated=cut is not None)


def _truncate_to(fd: int, offset: int) -> None:
    if os.fstat(fd).st_size > offset:
        os.ftruncate(fd, offset)
    os.fsync(fd)


def _close_intents(journal: Journal, intents: Sequence[Intent], *, truncated: bool) -> None:
    from retention.state.journal import DROPPED, PLANNED

    detail = ("interrupted while appending to the mbox: the partial append was truncated; "
              "the message was left in place" if truncated else
              "interrupted while appending to the mbox: nothing of it is known to be in the "
              "file (bytes after its offset were left alone); the message was left in place")
    with journal.transaction("mbox-repaired"):
        for intent in intents:
            ids = [r.id for r in journal.rows_of_intent(intent.id) if r.state == PLANNED]
            journal.mark(ids, DROPPED, detail=detail)
            journal.clear_intents([intent.id])


def repair_intent(journal: Journal, intent: Intent) -> None:
    """Recovery: roll back an interrupted append (the writer died holding the intent)."""
    path = intent.path
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        _resolve_missing(journal, intent)
        return
    except OSError as e:
        raise ArchiveError(f"mbox {path}: cannot open to repair: {describe_os_error(e)}") from None
    locks: Locks | None = None
    try:
        locks = lock(fd, path)
        # Re-read under the lock: another writer may have repaired it meanwhile.
        live = [i for i in journal.intents(path=path) if i.id == intent.id]
        _repair_dead(journal, live, path, fd)
    except OSError as e:
        raise ArchiveError(f"mbox {path}: cannot repair: {describe_os_error(e)}") from None
    finally:
        if locks is not None:
            locks.release()
        os.close(fd)


def _resolve_missing(journal: Journal, intent: Intent) -> None:
    from retention.state.journal import DROPPED, PLANNED

    with journal.transaction("mbox-repaired"):
        ids = [r.id for r in journal.rows_of_intent(intent.id) if r.state == PLANNED]
        journal.mark(ids, DROPPED, detail="interrupted before the mbox was created")
        journal.clear_intents([intent.id])


# -- the writer ----------------------------------------------------------------------------


# How each codec's files begin (an mbox: its first "From " line).
_MAGIC = {"gzip": b"\x1f\x8b", "zstd": b"\x28\xb5\x2f\xfd", "none": b"From "}


class _Open:
    """One locked mbox file of a batch."""

    def __init__(self, path: str, fd: int, offset: int, member: Body, locks: Locks) -> None:
        self.path = path
        self.fd = fd
        self.offset = offset
        self.member = member
        self.locks = locks
        self.indexes: list[int] = []
        self.sidecar = False  # ours is on disk: removed before the locks go


class MboxWriter:
    def __init__(
        self, name: str, target: MboxTarget, *, account: str, journal: Journal, run_id: str
    ) -> None:
        self.name = name
        self.target = target
        self.account = account
        self.journal = journal
        self.run_id = run_id
        self._held: list[_Open] = []

    def path_for(self, item: Item) -> str:
        m = item.action.message
        path = expand(self.target.path, account=self.account, folder=m.folder,
                      received=m.received)
        suffix = _SUFFIX[self.target.compress]
        path = path if not suffix or path.endswith(suffix) else path + suffix
        # One canonical spelling per file: intents and locks agree across symlinks.
        return os.path.realpath(path)

    def place(self, items: Sequence[Item]) -> Batch:
        by_path: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            by_path.setdefault(self.path_for(item), []).append(i)
        placed: list[Placed | None] = [None] * len(items)
        opened: list[_Open] = []
        codec = self.target.compress
        try:
            for path in sorted(by_path):  # sorted: writers sharing files never deadlock (M4)
                indexes = by_path[path]
                fd, locks = self._open_locked(path)
                try:
                    _repair_dead(self.journal, self.journal.intents(path=path), path, fd)
                    offset = os.fstat(fd).st_size
                    self._check_codec(path, fd, offset)
                except BaseException:
                    locks.release()
                    os.close(fd)
                    raise
                big = sum(len(items[i].data) for i in indexes) > Limits.spool_above() or any(
                    isinstance(items[i].data, Spooled) for i in indexes)
                sink = Sink(codec, spool=big)
                spans = [encode_into(sink, items[i].data, items[i].action.message.received)
                         for i in indexes]
                member = sink.finish()
                o = _Open(path, fd, offset, member, locks)
                o.indexes = indexes
                opened.append(o)
                for i, (start, length, digest) in zip(indexes, spans, strict=True):
                    locator: dict[str, Any] = {
                        "type": "mbox", "path": path, "compress": codec,
                        "member_offset": offset, "member_length": len(member),
                        "entry_offset": start, "entry_length": length,
                    }
                    placed[i] = Placed(items[i], digest, path, locator, intent_path=path)
        except OSError as e:
            self._close_all(opened)
            raise ArchiveError(
                f"archive {self.name}: cannot open mbox: {describe_os_error(e)}"
            ) from None
        except BaseException:
            self._close_all(opened)
            raise
        self._held.extend(opened)
        done = [p for p in placed if p is not None]
        return Batch(done, intents=[(o.path, o.offset) for o in opened], state=opened)

    def _check_codec(self, path: str, fd: int, size: int) -> None:
        """Refuse to append to a file written with another compression (review M5: a
        ``compress`` switched from gzip to none on a path ending in ``.gz`` would append
        plain entries into a gzip stream, and ``zcat`` would drop them)."""
        if size == 0:
            return
        head = os.pread(fd, 5, 0)
        found = next((c for c, magic in _MAGIC.items() if head.startswith(magic)), None)
        if found is not None and found != self.target.compress:
            raise ArchiveError(
                f"archive {self.name}: {path} holds {found} data but this target writes "
                f"compress: {self.target.compress}; appending would make the entries "
                "unreadable: give the new compression its own path")

    def _open_locked(self, path: str) -> tuple[int, Locks]:
        p = Path(path)
        make_dirs(p.parent)
        fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW,
                     0o600)
        try:
            return fd, lock(fd, path)
        except BaseException:
            os.close(fd)
            raise

    def write(self, batch: Batch) -> WriteResult:
        result = WriteResult()
        opened: list[_Open] = batch.state
        for o in opened:
            if os.fstat(o.fd).st_size != o.offset:
                # Someone who ignores our lock appended: those bytes are not ours to cut.
                result.error = ArchiveError(
                    f"archive {self.name}: {o.path} changed under the lock (another writer "
                    "that does not honour flock?); nothing written"
                )
                break  # not unresolved: we wrote nothing, so recovery must not truncate
            head = o.member.head(HEAD) if isinstance(o.member, Spooled) else o.member[:HEAD]
            record = {"offset": o.offset, "length": len(o.member), "run_id": self.run_id,
                      "head": head.hex(), "state": "appending",
                      "account": self.account, "pid": os.getpid()}
            try:
                write_sidecar(o.path, record)
                o.sidecar = True
                for piece in body_chunks(o.member):
                    write_all(o.fd, piece)
                os.fsync(o.fd)
                fsync_dir(Path(o.path).parent)
                write_sidecar(o.path, {**record, "state": "durable"})
            except OSError as e:
                result.error = ArchiveError(
                    f"archive {self.name}: writing {o.path} failed: {describe_os_error(e)}"
                )
                try:
                    _truncate_to(o.fd, o.offset)
                except OSError:
                    # Left for recovery: the intent stays, the rows stay planned, and so
                    # does the sidecar that lets recovery cut the torn bytes.
                    result.unresolved.update(o.indexes)
                    o.sidecar = False
                break
            for i in o.indexes:
                p = batch.placed[i]
                result.stored[i] = (p.location, p.locator)
        return result

    def release(self, batch: Batch) -> None:
        opened: list[_Open] = batch.state or []
        self._close_all(opened)
        self._held = [o for o in self._held if o not in opened]

    def _close_all(self, opened: Sequence[_Open]) -> None:
        open_intents: set[tuple[str, int]] | None = None
        for o in opened:
            if o.sidecar:
                # Dropped once the journal knows the outcome (its intent cleared with the
                # rows archived or failed). An intent still open means the run is dying
                # between the write and that commit: the sidecar stays for recovery.
                if open_intents is None:
                    open_intents = self._open_intents()
                if (o.path, o.offset) not in open_intents:
                    with contextlib.suppress(OSError):
                        drop_sidecar(o.path)
                o.sidecar = False
            o.locks.release()
            with contextlib.suppress(OSError):
                os.close(o.fd)
            if isinstance(o.member, Spooled):
                o.member.close()

    def _open_intents(self) -> set[tuple[str, int]]:
        try:
            return {(i.path, i.offset) for i in self.journal.intents(account=self.account)
                    if i.run_id == self.run_id}
        except Exception:  # noqa: BLE001 - unknown: keep the sidecar, recovery decides
            return {(o.path, o.offset) for o in self._held}

    def verify(self, copies: Sequence[Copy]) -> list[bool]:
        return verify_copies(copies)

    def find(self, row: JournalRow) -> tuple[str, dict[str, Any]] | None:
        # Never promote: an unfinished append is rolled back by its intent (repair_intent).
        return None

    def close(self) -> None:
        self._close_all(self._held)
        self._held = []


def verify_copies(copies: Sequence[Copy]) -> list[bool]:
    """Read each member back once, streamed, decode its entries and compare SHA-256."""
    by_member: dict[tuple[str, int, int, str], list[int]] = {}
    for k, c in enumerate(copies):
        loc = c.locator
        key = (loc["path"], loc["member_offset"], loc["member_length"], loc["compress"])
        by_member.setdefault(key, []).append(k)
    out = [False] * len(copies)
    for key, ks in by_member.items():
        spans = {(copies[k].locator["entry_offset"], copies[k].locator["entry_length"])
                 for k in ks}
        digests = member_digests(*key, sorted(spans))
        for k in ks:
            loc = copies[k].locator
            got = digests.get((loc["entry_offset"], loc["entry_length"]))
            out[k] = got is not None and got == copies[k].copy_sha256
    return out
