"""``state_dir``: the only code that reads or writes the agent's own state.

``StateDir`` is the one owner of the folder's layout and modes: ``journal.sqlite3`` (the
journal and audit history, ``state.journal``), ``observations.sqlite3`` (first-seen times
and usage samples, ``state.observations``), ``notices.sqlite3`` (notices to the owners
and their warning levels, ``state.notices``) and ``locks/<account>.lock`` (one agent per
account at a time). Folders are created 0700 and files 0600; nothing else in the package
spells these names. ``history`` queries the journal for ``retention history``.

With ``state_url`` (``StateDir(path, state_url)``) the journal and the restore record are
in that PostgreSQL instead of ``journal.sqlite3`` (``retention.state.journaldb``), shared by
every agent; everything else stays in the folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from retention.errors import AccountLocked
from retention.state.journal import Journal
from retention.state.notices import NoticeStore
from retention.state.observations import Observations
from retention.state.restores import RestoreLog

JOURNAL_FILE = "journal.sqlite3"
OBSERVATIONS_FILE = "observations.sqlite3"
NOTICES_FILE = "notices.sqlite3"
LOCKS_DIR = "locks"


class StateDir:
    """The agent's ``state_dir`` (see the module docstring)."""

    def __init__(self, path: Path | str, state_url: str | None = None) -> None:
        self.path = Path(path)
        self.state_url = state_url or None

    @property
    def journal_path(self) -> Path:
        return self.path / JOURNAL_FILE

    @property
    def observations_path(self) -> Path:
        return self.path / OBSERVATIONS_FILE

    @property
    def notices_path(self) -> Path:
        return self.path / NOTICES_FILE

    def notices(self) -> NoticeStore:
        """Open (creating when missing) the notice journal (``state.notices``)."""
        return NoticeStore.open(self.notices_path)

    def journal(self) -> Journal:
        """Open (creating when missing) the journal."""
        if self.state_url:
            return Journal.open_url(self.state_url)
        return Journal.open(self.journal_path)

    def has_journal(self) -> bool:
        """Whether a journal may hold rows (a shared one always may)."""
        return bool(self.state_url) or self.journal_path.exists()

    def restore_log(self) -> RestoreLog:
        """Open the restore record, next to the journal."""
        if self.state_url:
            return RestoreLog.open_url(self.state_url)
        return RestoreLog.open(self.journal_path)

    def observations(self) -> Observations:
        """Open (creating when missing) the observation store."""
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return Observations.open(self.observations_path)

    @contextmanager
    def lock(self, account: str, mailbox: str | None = None) -> Iterator[None]:
        """Hold the per-account lock (a timer's ``run`` and a ``serve`` race for it), and
        with ``mailbox`` (``Account.mailbox_identity``) the per-mailbox lock too, so two
        entries with different names for one mailbox never run at once (review F4).

        Raises ``AccountLocked`` at once when another agent holds either.
        """
        locks = self.path / LOCKS_DIR
        locks.mkdir(parents=True, exist_ok=True, mode=0o700)
        names = [f"{account}.lock"]
        if mailbox is not None:
            digest = hashlib.sha256(mailbox.encode()).hexdigest()[:32]
            names.append(f"mailbox-{digest}.lock")
        fds: list[int] = []
        try:
            for name in names:
                fd = os.open(locks / name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
                fds.append(fd)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    what = "account" if name == names[0] else "mailbox"
                    raise AccountLocked(f"another agent is processing this {what}") from None
            yield
        finally:
            for fd in fds:
                os.close(fd)  # closing releases the flock


__all__ = ["JOURNAL_FILE", "NOTICES_FILE", "OBSERVATIONS_FILE", "StateDir"]
