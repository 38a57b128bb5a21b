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

from retention.adapters import MailSession
from retention.model import FolderInfo, FolderSnapshot
from retention.state.scancache import ScanCache, merge

log = logging.getLogger("retention.scan")


def scan_folder(session: MailSession, info: FolderInfo, *, with_sent: bool,
                cache: ScanCache | None) -> FolderSnapshot:
    """The folder's snapshot, exactly what a full ``session.scan`` would give."""
    changes_of = getattr(session, "scan_changes", None)
    if cache is None or with_sent or changes_of is None:
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
