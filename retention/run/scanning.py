"""Scanning a folder through the scan cache: only what changed since the last run.

This module owns the choice between an incremental and a full scan of one folder. With
a cached scan that has a HIGHESTMODSEQ and a session that offers ``scan_changes``
(IMAP with QRESYNC), it asks for the changes since and merges them
(``state.scancache.merge``); anything that does not prove exact (no cache, another
UIDVALIDITY, a gap, a corrupt file) falls back to a full ``scan``. Either way the result
is written back for the next run. Folders scanned with the Date header (a ``sent``
clock) are always scanned in full: the cache does not hold headers.

A scan is two steps (``FolderScans``): what the server must answer, then the merge, so
that decoding a big cached scan (our CPU) runs while the server answers (its CPU).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from retention.adapters import MailSession
from retention.model import FolderChanges, FolderInfo, FolderSnapshot, MessageRef
from retention.state.scancache import CachedScan, ScanCache, merge

log = logging.getLogger("retention.scan")


# A cached scan this big is decoded in a background thread while the server answers
# (a 200,000-message folder: about 0.25 s of our CPU, against 0.15-0.2 s of Dovecot's for
# the GETQUOTAROOT that measures its usage); a small one is not worth a thread.
BACKGROUND_DECODE = 5_000


@dataclass
class PendingScan:
    """One folder between ``FolderScans.ask`` (the server has answered) and ``finish``:
    a full scan already made (``snap``), or the changes since a cached scan, decoded
    by ``finish`` or meanwhile in the background (``base``, see ``FolderScans.decode``)."""

    info: FolderInfo
    snap: FolderSnapshot | None = None
    cached: CachedScan | None = None
    changes: FolderChanges | None = None
    base: Future[FolderSnapshot | None] | None = None

    def listed_as(self, info: FolderInfo) -> PendingScan:
        """This scan, for the folder as LIST names it (asked before the LIST)."""
        return dataclasses.replace(self, info=info)

    @property
    def count(self) -> int | None:
        """The folder's message count as the server gave it, None when not known exactly
        (a full scan that left messages out)."""
        if self.changes is not None:
            return self.changes.exists
        if self.snap is not None and not self.snap.warnings:
            return len(self.snap.messages)
        return None


class FolderScans:
    """One account's folder scans, each exactly what a full ``session.scan`` would give,
    in two steps: ``ask`` each folder (the server's part), then ``finish`` each (merging
    the changes into the cached scan). Between them a caller that asks the server for more
    (the usage) calls ``decode`` first: the cached scans are then decoded in one background
    thread while the server answers, so that its time and ours overlap instead of adding
    up. Not earlier: each reply read while the thread runs waits for the GIL (up to
    ``sys.getswitchinterval()``, 5 ms), a round trip it would slow for nothing. Use as a
    context manager (the thread ends with it)."""

    def __init__(self, session: MailSession, *, with_sent: bool,
                 cache: ScanCache | None) -> None:
        self.session = session
        self.with_sent = with_sent
        self.cache = cache
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> FolderScans:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def ask(self, info: FolderInfo) -> PendingScan:
        """The server's part of the folder's scan: the changes since its cached scan
        (QRESYNC), else a full scan. Raises ``FolderSkipped`` as ``session.scan`` does."""
        if not self._cacheable():
            return PendingScan(info, snap=self.session.scan(info, with_sent=self.with_sent))
        pending = self.ask_cached(info)
        return pending if pending is not None else self._full(info)

    def ask_cached(self, info: FolderInfo) -> PendingScan | None:
        """``ask`` when the folder has a usable cached scan and the server says what
        changed since; None otherwise (no server round trip without a cached scan)."""
        if not self._cacheable():
            return None
        assert self.cache is not None
        cached = self.cache.open(info)
        if cached is None:
            return None
        changes = self.session.scan_changes(  # type: ignore[attr-defined]
            info, uidvalidity=cached.uidvalidity, modseq=cached.modseq)
        if changes is None:
            log.debug("folder %s: no changes known since the cached scan", info.name)
            return None
        return PendingScan(info, cached=cached, changes=changes)

    def decode(self, pending: Sequence[PendingScan]) -> None:
        """Start decoding the big cached scans of ``pending`` in the background."""
        for p in pending:
            if p.cached is not None and p.base is None and p.cached.count >= BACKGROUND_DECODE:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(1, thread_name_prefix="scancache")
                p.base = self._pool.submit(p.cached.snapshot)

    def _cacheable(self) -> bool:
        # Label folders (Gmail) need each message's global id, which the cache does not
        # hold; a scan with the Date header (a sent clock) reads headers the cache lacks.
        return not (self.cache is None or self.with_sent
                    or getattr(self.session, "scan_changes", None) is None
                    or getattr(self.session, "labels", False))

    def finish(self, pending: PendingScan) -> FolderSnapshot:
        """The folder's snapshot: the full scan, or the cached scan merged with the
        changes (a full scan when that does not prove exact: a corrupt file, a gap)."""
        if pending.snap is not None:
            return pending.snap
        assert pending.cached is not None and pending.changes is not None
        base = pending.base.result() if pending.base is not None else pending.cached.snapshot()
        changes = pending.changes
        snap = merge(base, changes) if base is not None else None
        if snap is not None and snap.info != pending.info:  # asked before the LIST
            snap = dataclasses.replace(snap, info=pending.info)
        if snap is None:
            log.debug("folder %s: scan cache not usable: full scan", pending.info.name)
            full = self._full(pending.info)
            assert full.snap is not None
            return full.snap
        moved = changes.changed or changes.vanished or changes.modseq != pending.cached.modseq
        if moved and self.cache is not None:
            _save(self.cache, snap)
        log.debug("folder %s: incremental scan (%d changed)", pending.info.name,
                  len(changes.changed))
        return snap

    def _full(self, info: FolderInfo) -> PendingScan:
        snap = self.session.scan(info, with_sent=False)
        if self.cache is not None:
            _save(self.cache, snap)
        return PendingScan(info, snap=snap)


def scan_folder(session: MailSession, info: FolderInfo, *, with_sent: bool,
                cache: ScanCache | None) -> FolderSnapshot:
    """The folder's snapshot, exactly what a full ``session.scan`` would give."""
    with FolderScans(session, with_sent=with_sent, cache=cache) as scans:
        return scans.finish(scans.ask(info))


def _save(cache: ScanCache, snap: FolderSnapshot) -> None:
    try:
        cache.save(snap)
    except OSError as e:  # an optimisation only: the run goes on, the next scans in full
        log.warning("folder %s: scan cache not written: %s", snap.name, e.strerror or e)


IdReader = Callable[[Sequence[MessageRef]], dict[MessageRef, str | None]]


def cached_message_ids(read: IdReader, cache: ScanCache) -> IdReader:
    """``MailSession.message_ids`` that asks the server only for Message-IDs it has not
    given before under the same (folder, UIDVALIDITY) (IMAP refs; others pass through)."""

    def read_through(refs: Sequence[MessageRef]) -> dict[MessageRef, str | None]:
        if not refs or refs[0].uid is None:
            return read(refs)
        folder, validity = refs[0].folder, refs[0].uidvalidity
        known = cache.load_ids(folder, validity)
        found = {r: known[r.uid] for r in refs if r.uid is not None and r.uid in known}
        missing = [r for r in refs if r not in found]
        if missing:
            fresh = read(missing)
            found.update(fresh)
            known.update({r.uid: mid for r, mid in fresh.items() if r.uid is not None})
            try:
                cache.save_ids(folder, validity, known)
            except OSError as e:
                log.warning("folder %s: Message-IDs not cached: %s", folder, e.strerror or e)
        return found

    return read_through
