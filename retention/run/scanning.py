"""Scanning a folder through the scan cache: only what changed since the last run.

This module owns the choice between an incremental and a full scan of one folder. With
a cached scan that has a HIGHESTMODSEQ and a session that offers ``scan_changes``
(IMAP with QRESYNC), it asks for the changes since and merges them
(``state.scancache.merge``); anything that does not prove exact (no cache, another
UIDVALIDITY, a gap, a corrupt file) falls back to a full ``scan``. Either way the result
is written back for the next run. Folders scanned with the Date header (a ``sent``
clock) are always scanned in full: the cache does not hold headers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from retention.adapters import MailSession
from retention.model import FolderInfo, FolderSnapshot, MessageRef
from retention.state.scancache import ScanCache, merge

log = logging.getLogger("retention.scan")


def scan_folder(session: MailSession, info: FolderInfo, *, with_sent: bool,
                cache: ScanCache | None) -> FolderSnapshot:
    """The folder's snapshot, exactly what a full ``session.scan`` would give."""
    changes_of = getattr(session, "scan_changes", None)
    # Label folders (Gmail) need each message's global id, which the cache does not hold.
    if cache is None or with_sent or changes_of is None or getattr(session, "labels", False):
        return session.scan(info, with_sent=with_sent)
    base = cache.load(info)
    if base is not None and base.modseq is not None:
        changes = changes_of(info, uidvalidity=base.uidvalidity, modseq=base.modseq)
        snap = merge(base, changes) if changes is not None else None
        if snap is not None:
            if changes is not None and (changes.changed or changes.vanished
                                        or changes.modseq != base.modseq):
                _save(cache, snap)
            log.debug("folder %s: incremental scan (%d changed)", info.name,
                      len(changes.changed) if changes else 0)
            return snap
        log.debug("folder %s: scan cache not usable: full scan", info.name)
    snap = session.scan(info, with_sent=False)
    _save(cache, snap)
    return snap


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
