"""Reading archived copies back for ``retention restore``: mbox (plain/gzip/zstd), Maildir, IMAP.

This module owns finding one journalled copy from its ``locator`` and turning it back
into the exact bytes that were removed:

* ``read_copy`` returns what the target keeps; the caller compares its SHA-256 with the
  journal's ``copy_sha256`` (a copy that changed since it was verified is never restored).
* ``original`` rebuilds the source bytes: Maildir and IMAP keep them exactly; mbox keeps
  them LF-normalised (``mbox.normalise``), so CRLF is put back (and a newline the writer
  added is taken off) and the result must hash to the journal's ``sha256``. When no
  candidate matches (a message with mixed line endings), the normalised copy is returned
  with ``exact=False`` and the restore says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from retention.archive.base import sha256
from retention.errors import AccountError, ArchiveError, FolderSkipped

if TYPE_CHECKING:
    from retention.state.journal import JournalRow


def read_copy(row: JournalRow, imap_session: Callable[[str], Any] | None = None) -> bytes:
    """The archived copy of ``row`` as the target keeps it; ArchiveError when missing.

    ``imap_session(target_name)`` gives a session on an IMAP archive target.
    """
    loc = row.locator
    kind = loc.get("type")
    if kind == "mbox":
        return _mbox_entry(loc)
    if kind == "maildir":
        from retention.archive.maildir import current_path

        path = current_path(loc)
        if path is None:
            raise ArchiveError(f"maildir {loc['dir']}: the archived file {loc['name']} is gone")
        try:
            return path.read_bytes()
        except OSError as e:
            raise ArchiveError(f"maildir {path}: cannot read: {e.strerror}") from None
    if kind == "imap":
        if imap_session is None or row.target is None:
            raise ArchiveError("an IMAP archive copy needs a connection to its target")
        folder, uid = loc["folder"], int(loc["uid"])
        try:
            got = imap_session(row.target).fetch_uids(folder, [uid])
        except FolderSkipped as e:
            raise ArchiveError(f"archive {row.target}: {e}") from None
        except AccountError as e:
            raise ArchiveError(f"archive {row.target}: reading {folder}: {e}") from None
        if uid not in got:
            raise ArchiveError(f"archive {row.target}: {folder} UID {uid} is gone")
        return bytes(got[uid])
    raise ArchiveError(f"journal row {row.id}: no archive locator (type {kind!r})")


def _mbox_entry(loc: dict[str, Any]) -> bytes:
    """The message of one mbox entry (its member decompressed as a stream)."""
    import os

    from retention.archive.base import describe_os_error
    from retention.archive.mbox import decode_entry
    from retention.archive.mboxstream import payload_chunks, slices

    path = loc["path"]
    span = (loc["entry_offset"], loc["entry_length"])
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise ArchiveError(f"mbox {path}: cannot read: {describe_os_error(e)}") from None
    try:
        if os.fstat(fd).st_size < loc["member_offset"] + loc["member_length"]:
            raise ArchiveError(f"mbox {path}: the archived entry is missing (file too short)")
        chunks = payload_chunks(fd, loc["member_offset"], loc["member_length"], loc["compress"])
        entry = b"".join(b"".join(pieces) for _, pieces in slices(chunks, [span]))
    except OSError as e:
        raise ArchiveError(f"mbox {path}: cannot read: {describe_os_error(e)}") from None
    except ArchiveError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged member is a missing copy
        raise ArchiveError(f"mbox {path}: the archived entry is damaged ({e})") from None
    finally:
        os.close(fd)
    if len(entry) != span[1]:
        raise ArchiveError(f"mbox {path}: the archived entry is truncated")
    try:
        return decode_entry(entry)
    except ValueError as e:
        raise ArchiveError(f"mbox {path}: {e}") from None


def original(copy: bytes, row: JournalRow) -> tuple[bytes, bool]:
    """(the bytes to restore, whether they hash to the journal's source ``sha256``)."""
    if row.sha256 is None or sha256(copy) == row.sha256:
        return copy, row.sha256 is not None
    if row.locator.get("type") == "mbox":
        crlf = copy.replace(b"\n", b"\r\n")
        for candidate in (crlf, crlf[:-2], copy[:-1]):
            if sha256(candidate) == row.sha256:
                return candidate, True
    return copy, False
