"""mbox archive files: mboxrd escaping, LF line endings, safe appends, gzip/zstd members.

This module owns the on-disk mbox format the agent writes and the append protocol that
keeps it intact across crashes:

* Entry format: ``From MAILER-DAEMON <asctime of the received time, UTC>`` then the message
  with CRLF turned into LF, ending in a newline (one is added when missing), every line
  matching ``^>*From `` quoted with one more ``>`` (mboxrd), then an empty line. Python's
  ``mailbox.mbox`` and mutt read it; ``decode_entry`` reverses it exactly, so verification
  compares SHA-256 of the read-back message with ``normalise(source)``.
* Appends: under an exclusive ``flock`` of the file, the file's size is journalled as an
  *intent* before anything is written; the batch is written with one ``write`` series,
  then the file and its folder are fsynced; the intent is cleared in the same journal
  transaction that marks the rows ``archived``. An intent still open when a later writer
  (or ``recover``) takes the lock belonged to a writer that died: the file is truncated
  back to the journalled offset, so a torn entry never survives.
* Compression: ``gzip`` (stdlib) or ``zstd`` (python-zstandard); one complete member or
  frame per append batch, so the file stays a valid multi-member stream after every
  append and a truncation at a member boundary. ``.gz``/``.zst`` is appended to the path
  unless it already ends so.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import os
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retention.archive.base import (
    Batch,
    Copy,
    Item,
    Placed,
    WriteResult,
    describe_os_error,
    fsync_dir,
    make_dirs,
    sha256,
    write_all,
)
from retention.archive.paths import expand
from retention.errors import ArchiveError

if TYPE_CHECKING:
    from retention.config.schema import MboxTarget
    from retention.state.journal import Intent, Journal, JournalRow

LOCK_TIMEOUT = 120.0
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


def from_line(received: datetime) -> bytes:
    stamp = time.asctime(received.astimezone(UTC).timetuple())
    return f"From MAILER-DAEMON {stamp}\n".encode("ascii")


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
        import zstandard

        return bytes(zstandard.ZstdCompressor(level=3).compress(payload))
    return payload


def decompress(codec: str, member: bytes) -> bytes:
    if codec == "gzip":
        return gzip.decompress(member)
    if codec == "zstd":
        import zstandard

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

        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(
            io.BytesIO(raw), read_across_frames=True
        )
        return bytes(reader.read())
    return raw


# -- locking and repair ------------------------------------------------------------------


def _lock(fd: int, path: str, timeout: float = LOCK_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise ArchiveError(f"mbox {path} stays locked by another process") from None
            time.sleep(0.05)


def _truncate_to(fd: int, offset: int) -> None:
    if os.fstat(fd).st_size > offset:
        os.ftruncate(fd, offset)
    os.fsync(fd)


def _resolve_intents(journal: Journal, intents: Sequence[Intent], fd: int) -> None:
    """Truncate a file (locked by us) to the lowest offset of dead writers' intents."""
    if not intents:
        return
    _truncate_to(fd, min(i.offset for i in intents))
    from retention.state.journal import DROPPED, PLANNED

    with journal.transaction("mbox-repaired"):
        for intent in intents:
            ids = [r.id for r in journal.rows_of_intent(intent.id) if r.state == PLANNED]
            journal.mark(
                ids, DROPPED,
                detail="interrupted while appending to the mbox: the partial append was "
                "truncated; the message was left in place",
            )
            journal.clear_intents([intent.id])


def repair_intent(journal: Journal, intent: Intent) -> None:
    """Recovery: roll back an interrupted append (the writer died holding the intent)."""
    path = intent.path
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        _resolve_missing(journal, intent)
        return
    except OSError as e:
        raise ArchiveError(f"mbox {path}: cannot open to repair: {describe_os_error(e)}") from None
    try:
        _lock(fd, path)
        # Re-read under the lock: another writer may have repaired it meanwhile.
        live = [i for i in journal.intents(path=path) if i.id == intent.id]
        _resolve_intents(journal, live, fd)
    except OSError as e:
        raise ArchiveError(f"mbox {path}: cannot repair: {describe_os_error(e)}") from None
    finally:
        os.close(fd)


def _resolve_missing(journal: Journal, intent: Intent) -> None:
    from retention.state.journal import DROPPED, PLANNED

    with journal.transaction("mbox-repaired"):
        ids = [r.id for r in journal.rows_of_intent(intent.id) if r.state == PLANNED]
        journal.mark(ids, DROPPED, detail="interrupted before the mbox was created")
        journal.clear_intents([intent.id])


# -- the writer ----------------------------------------------------------------------------


class _Open:
    """One locked mbox file of a batch."""

    def __init__(self, path: str, fd: int, offset: int, member: bytes) -> None:
        self.path = path
        self.fd = fd
        self.offset = offset
        self.member = member
        self.indexes: list[int] = []


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
        path = expand(self.target.path, account=self.account, folder=m.ref.folder,
                      received=m.received)
        suffix = _SUFFIX[self.target.compress]
        return path if not suffix or path.endswith(suffix) else path + suffix

    def place(self, items: Sequence[Item]) -> Batch:
        by_path: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            by_path.setdefault(self.path_for(item), []).append(i)
        placed: list[Placed | None] = [None] * len(items)
        opened: list[_Open] = []
        codec = self.target.compress
        try:
            for path, indexes in by_path.items():
                fd = self._open_locked(path)
                try:
                    _resolve_intents(self.journal, self.journal.intents(path=path), fd)
                    offset = os.fstat(fd).st_size
                except BaseException:
                    os.close(fd)
                    raise
                payload = bytearray()
                spans: list[tuple[int, int, str]] = []
                for i in indexes:
                    item = items[i]
                    entry = encode_entry(item.data, item.action.message.received)
                    spans.append((len(payload), len(entry), sha256(normalise(item.data))))
                    payload += entry
                member = compress(codec, bytes(payload))
                o = _Open(path, fd, offset, member)
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

    def _open_locked(self, path: str) -> int:
        p = Path(path)
        make_dirs(p.parent)
        fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            _lock(fd, path)
        except BaseException:
            os.close(fd)
            raise
        return fd

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
            try:
                write_all(o.fd, o.member)
                os.fsync(o.fd)
                fsync_dir(Path(o.path).parent)
            except OSError as e:
                result.error = ArchiveError(
                    f"archive {self.name}: writing {o.path} failed: {describe_os_error(e)}"
                )
                try:
                    _truncate_to(o.fd, o.offset)
                except OSError:
                    # Left for recovery: the intent stays, the rows stay planned.
                    result.unresolved.update(o.indexes)
                break
            for i in o.indexes:
                p = batch.placed[i]
                result.stored[i] = (p.location, p.locator)
        return result

    def release(self, batch: Batch) -> None:
        opened: list[_Open] = batch.state or []
        self._close_all(opened)
        self._held = [o for o in self._held if o not in opened]

    @staticmethod
    def _close_all(opened: Sequence[_Open]) -> None:
        for o in opened:
            with contextlib.suppress(OSError):
                os.close(o.fd)  # also releases the flock

    def verify(self, copies: Sequence[Copy]) -> list[bool]:
        return verify_copies(copies)

    def find(self, row: JournalRow) -> tuple[str, dict[str, Any]] | None:
        # Never promote: an unfinished append is rolled back by its intent (repair_intent).
        return None

    def close(self) -> None:
        self._close_all(self._held)
        self._held = []


def verify_copies(copies: Sequence[Copy]) -> list[bool]:
    """Read each entry back (one read per member), decode and compare SHA-256."""
    members: dict[tuple[str, int, int, str], bytes | None] = {}
    out: list[bool] = []
    for c in copies:
        loc = c.locator
        key = (loc["path"], loc["member_offset"], loc["member_length"], loc["compress"])
        if key not in members:
            members[key] = _read_member(*key)
        payload = members[key]
        if payload is None:
            out.append(False)
            continue
        entry = payload[loc["entry_offset"] : loc["entry_offset"] + loc["entry_length"]]
        try:
            out.append(sha256(decode_entry(entry)) == c.copy_sha256)
        except ValueError:
            out.append(False)
    return out


def _read_member(path: str, offset: int, length: int, codec: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ArchiveError(f"mbox {path}: cannot read back: {describe_os_error(e)}") from None
    try:
        raw = os.pread(fd, length, offset)
    except OSError as e:
        raise ArchiveError(f"mbox {path}: cannot read back: {describe_os_error(e)}") from None
    finally:
        os.close(fd)
    if len(raw) != length:
        return None
    try:
        return decompress(codec, raw)
    except Exception:  # noqa: BLE001 - any decoding failure means "not a valid copy"
        return None
