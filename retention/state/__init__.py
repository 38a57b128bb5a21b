"""``state_dir``: the only code that reads or writes the agent's own state.

``StateDir`` is the one owner of the folder's layout and modes: ``journal.sqlite3`` (the
journal and audit history, ``state.journal``), ``observations.sqlite3`` (first-seen times
and usage samples, ``state.observations``), ``notices.sqlite3`` (notices to the owners
and their warning levels, ``state.notices``) and ``locks/<account>.lock`` (one agent per
account at a time). Folders are created 0700 and files 0600; nothing else in the package
spells these names. ``history`` queries the journal for ``retention history``.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from retention.errors import AccountLocked
from retention.state.journal import Journal
from retention.state.notices import NoticeStore
from retention.state.observations import Observations

JOURNAL_FILE = "journal.sqlite3"
OBSERVATIONS_FILE = "observations.sqlite3"
NOTICES_FILE = "notices.sqlite3"
LOCKS_DIR = "locks"


class StateDir:
    """The agent's ``state_dir`` (see the module docstring)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

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
        return Journal.open(self.journal_path)

    def observations(self) -> Observations:
        """Open (creating when missing) the observation store."""
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return Observations.open(self.observations_path)

    @contextmanager
    def lock(self, account: str) -> Iterator[None]:
        """Hold the per-account lock (a timer's ``run`` and a ``serve`` race for it).

        Raises ``AccountLocked`` at once when another agent holds it.
        """
        locks = self.path / LOCKS_DIR
        locks.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(locks / f"{account}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise AccountLocked("another agent is processing this account") from None
            yield
        finally:
            os.close(fd)  # closing releases the flock


__all__ = ["JOURNAL_FILE", "NOTICES_FILE", "OBSERVATIONS_FILE", "StateDir"]
