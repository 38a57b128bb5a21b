"""The scan cache: each folder's last scan, so that the next one reads only what changed.

This module owns ``state_dir/scancache/``: one file per (mailbox, folder) holding the
metadata of the folder's last scan (UID, size, INTERNALDATE, SAVEDATE, flags) under its
(UIDVALIDITY, HIGHESTMODSEQ) (RFC 7162), and the pure ``merge`` of such a scan with the
changes a server reports since (``FolderChanges``: CHANGEDSINCE + VANISHED).

The cache is an optimisation only, never a source of truth:

* it is an observation (what the server showed), so a dry-run may write it;
* any doubt means a full scan: no file, another mailbox, another UIDVALIDITY, a
  HIGHESTMODSEQ that went backwards, a bad magic, header, length or checksum (a truncated
  or corrupt file), or a merge that does not end with exactly the folder's message count;
* nothing acts on it: the delete path re-checks UIDVALIDITY and flags when it acts.

File format (version 2): ``RSC2\\n``, five arrays of the machine's native int64/uint32
(UIDs, sizes, received and saved as UTC epoch microseconds, flag-set index), then the
JSON header (identity, UIDVALIDITY, HIGHESTMODSEQ, count, flag sets, body length and
CRC-32), ``\\n`` and its length as 16 hex digits: written last, so that the columns are
written one at a time. Native byte order: a file from another machine is refused by its
header and means one full scan.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import os
import sys
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from retention.model import FolderChanges, FolderInfo, FolderSnapshot, Message

MAGIC = b"RSC2\n"
MAX_IDS = 200_000  # Message-IDs kept per folder (of the planned messages only)
_NONE = -(2**63)  # a saved time the server did not give
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def merge(base: FolderSnapshot, changes: FolderChanges) -> FolderSnapshot | None:
    """``base`` brought up to date by ``changes``; None when that cannot be proven exact.

    Pure. Vanished UIDs leave, changed ones replace (or join) the base's; the result is in
    UID order and must hold exactly ``changes.exists`` messages, else None (a gap: the
    caller scans in full).
    """
    if (changes.uidvalidity != base.uidvalidity or base.modseq is None
            or changes.modseq < base.modseq or changes.has_savedate != base.has_savedate):
        return None
    starts, ends = _disjoint(changes.vanished)

    def gone(uid: int) -> bool:
        i = bisect.bisect_right(starts, uid) - 1
        return i >= 0 and uid <= ends[i]

    changed = {m.uid: m for m in changes.changed if m.uid is not None}
    if not changed and not starts:
        kept = list(base.messages)
    else:
        kept = [m for m in base.messages if m.uid not in changed and not gone(m.uid or 0)]
        kept += [m for uid, m in changed.items() if not gone(uid)]
        kept.sort(key=lambda m: m.uid or 0)
    if len(kept) != changes.exists:
        return None
    return FolderSnapshot(base.info, base.uidvalidity, tuple(kept),
                          has_savedate=base.has_savedate, modseq=changes.modseq)


def _disjoint(ranges: Iterable[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Ranges merged into disjoint ones in order: (starts, ends), both increasing."""
    starts: list[int] = []
    ends: list[int] = []
    for first, last in sorted((min(r), max(r)) for r in ranges):
        if ends and first <= ends[-1] + 1:
            ends[-1] = max(ends[-1], last)
        else:
            starts.append(first)
            ends.append(last)
    return starts, ends


class ScanCache:
    """The cached scans of one mailbox (``identity``: account, server, user) in ``root``."""

    def __init__(self, root: Path, identity: str) -> None:
        self.root = root
        self.identity = identity

    def path(self, folder: str) -> Path:
        digest = hashlib.sha256(f"{self.identity}\x00{folder}".encode()).hexdigest()[:32]
        return self.root / f"{digest}.bin"

    def load(self, info: FolderInfo) -> FolderSnapshot | None:
        """The folder's cached scan, or None (missing, another mailbox, corrupt...)."""
        cached = self.open(info)
        return cached.snapshot() if cached is not None else None

    def open(self, info: FolderInfo) -> CachedScan | None:
        """The folder's cached scan, its header read and checked but its columns not yet
        decoded (``CachedScan.snapshot``), or None (missing, another mailbox, a bad
        header...). The header is enough to ask a server what changed since."""
        try:
            data = self.path(info.name).read_bytes()
        except OSError:
            return None
        try:
            return self._open(info, data)
        except (ValueError, KeyError, TypeError, OverflowError, IndexError):
            return None

    def _open(self, info: FolderInfo, data: bytes) -> CachedScan | None:
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 17:
            return None
        size = int(data[-16:], 16)
        head_end = len(data) - 17
        if data[head_end:head_end + 1] != b"\n" or not 0 < size <= head_end - len(MAGIC):
            return None
        head = json.loads(data[head_end - size:head_end])
        body = memoryview(data)[len(MAGIC):head_end - size]
        n = int(head["count"])
        if (head.get("identity") != self.identity or head.get("folder") != info.name
                or head.get("byteorder") != sys.byteorder or len(body) != int(head["length"])
                or len(body) != n * 36):
            return None
        return CachedScan(info, int(head["uidvalidity"]), int(head["modseq"]), n,
                          bool(head["has_savedate"]), head, body)

    def save(self, snap: FolderSnapshot) -> None:
        """Write ``snap`` (atomically: a reader sees the old file or the new one)."""
        if snap.modseq is None or snap.warnings:  # left-out messages: always in full
            self.forget(snap.name)
            return
        flag_sets: dict[frozenset[str], int] = {}
        msgs = snap.messages
        columns: list[Callable[[], array[int]]] = [
            lambda: array("q", (m.uid or 0 for m in msgs)),
            lambda: array("q", (m.size for m in msgs)),
            lambda: _micros_column(m.received for m in msgs),
            lambda: _micros_column(m.saved for m in msgs),
            lambda: array("I", (flag_sets.setdefault(m.flags, len(flag_sets)) for m in msgs)),
        ]

        def parts() -> Iterator[bytes | array[int]]:
            # One column in memory at a time (a 1,000,000-message folder: 8 MB, not 36);
            # the header, which needs their CRC, goes last.
            yield MAGIC
            crc = length = 0
            for make in columns:
                col = make()
                crc = zlib.crc32(memoryview(col).cast("B"), crc)
                length += len(col) * col.itemsize
                yield col
                del col
            head = json.dumps({
                "identity": self.identity, "folder": snap.name, "byteorder": sys.byteorder,
                "uidvalidity": snap.uidvalidity, "modseq": snap.modseq,
                "has_savedate": snap.has_savedate, "count": len(msgs),
                "flags": [sorted(fs) for fs in flag_sets], "length": length, "crc": crc,
            }, separators=(",", ":")).encode()
            yield head + b"\n" + b"%016x" % len(head)

        _write(self.path(snap.name), parts())

    def forget(self, folder: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(folder).unlink()
        with contextlib.suppress(FileNotFoundError):
            self.path(folder).with_suffix(".ids").unlink()

    # Message-IDs: a message's bytes never change under one (UIDVALIDITY, UID) (RFC 3501
    # 2.3.1.1), so neither does its header; a repeat run needs none of them again.

    def load_ids(self, folder: str, uidvalidity: int) -> dict[int, str | None]:
        """The Message-IDs read earlier under ``uidvalidity`` (empty: none, or any doubt)."""
        try:
            doc = json.loads(self.path(folder).with_suffix(".ids").read_bytes())
            if (doc["identity"] != self.identity or doc["folder"] != folder
                    or doc["uidvalidity"] != uidvalidity):
                return {}
            return {int(uid): (None if mid is None else str(mid))
                    for uid, mid in doc["ids"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}

    def save_ids(self, folder: str, uidvalidity: int, ids: dict[int, str | None]) -> None:
        """Keep ``ids`` (the newest ``MAX_IDS`` UIDs) for ``folder`` under ``uidvalidity``."""
        keep = sorted(ids)[-MAX_IDS:]
        doc = {"identity": self.identity, "folder": folder, "uidvalidity": uidvalidity,
               "ids": {str(uid): ids[uid] for uid in keep}}
        _write(self.path(folder).with_suffix(".ids"),
               [json.dumps(doc, separators=(",", ":")).encode()])


@dataclass(frozen=True, eq=False)
class CachedScan:
    """One folder's cached scan as ``ScanCache.open`` found it: its header (UIDVALIDITY,
    HIGHESTMODSEQ, message count) checked, its columns decoded only by ``snapshot``. A
    caller can ask the server what changed while another thread decodes (``run.scanning``).
    """

    info: FolderInfo
    uidvalidity: int
    modseq: int
    count: int
    has_savedate: bool
    _head: dict[str, Any] = field(repr=False)
    _body: memoryview = field(repr=False)

    def snapshot(self) -> FolderSnapshot | None:
        """The cached scan's messages (built as a scan builds them), or None when the
        columns do not match their checksum (a corrupt file)."""
        try:
            return self._snapshot()
        except (ValueError, KeyError, TypeError, OverflowError, IndexError):
            return None

    def _snapshot(self) -> FolderSnapshot | None:
        body, n, head = self._body, self.count, self._head
        if zlib.crc32(body) != int(head["crc"]):
            return None
        # Views on the file's bytes, no copy: four int64 columns, then one uint32.
        uids, sizes, received, saved = (body[i * 8 * n:(i + 1) * 8 * n].cast("q")
                                        for i in range(4))
        flag_index = body[32 * n:].cast("I")
        flag_sets = [frozenset(str(f) for f in fs) for fs in head["flags"]]
        name, validity = self.info.name, self.uidvalidity
        epoch, us = _EPOCH, _US
        # Shared objects, as a scan makes them: runs of equal dates, repeated sizes.
        out: list[Message] = []
        append = out.append
        sizes_seen: dict[int, int] = {}
        last_r, last_rt, last_s, last_st = None, epoch, None, None
        scanned = Message.scanned
        for uid, size, r, s, fi in zip(uids, sizes, received, saved, flag_index, strict=True):
            if r != last_r:
                last_r, last_rt = r, epoch + r * us
            if s != last_s:
                last_s, last_st = s, (None if s == _NONE else
                                      last_rt if s == r else epoch + s * us)
            size = sizes_seen.setdefault(size, size)
            append(scanned(name, validity, uid, size, last_rt, flag_sets[fi], last_st))
        messages = tuple(out)
        del out
        return FolderSnapshot(self.info, validity, messages, has_savedate=self.has_savedate,
                              modseq=self.modseq)


def _write(path: Path, parts: Iterable[bytes | array[int]]) -> None:
    """Write ``path`` atomically (a reader sees the old file or the new one), mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            for part in parts:
                if isinstance(part, bytes):
                    f.write(part)
                else:
                    part.tofile(f)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _micros_column(dates: Iterable[datetime | None]) -> array[int]:
    """Microseconds since 1970 of each date (``_NONE`` for None). A scan shares one
    datetime among equal dates (and SAVEDATE with INTERNALDATE when equal): each object
    is converted once per run of it."""
    out = array("q")
    append = out.append
    last: object = out  # no date is this
    value = _NONE
    for when in dates:
        if when is not last:
            last, value = when, (_NONE if when is None else _micros(when))
        append(value)
    return out


def _micros(when: datetime) -> int:
    delta = when - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
