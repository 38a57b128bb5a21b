"""Time bounds on talking to a mail server: no wait is ever "forever" (review M3).

This module owns two rules the adapters share:

* ``io_timeout``: the seconds one socket operation may wait. ``timeout: 0`` in a policy
  file means the default (30 s), never "block forever" (imaplib) or "do not wait at all"
  (a non-blocking socket, poplib).
* ``Watchdog``: a deadline for a whole command. A socket timeout bounds each ``recv``
  only, so a server that trickles one byte every 29 s defeats a 30 s timeout and holds the
  account "in flight" for ever. While a command runs, a watchdog thread waits for its
  deadline (``COMMAND_FACTOR`` x the timeout) and, when it passes, shuts the socket down:
  the blocked read returns, the adapter sees ``expired`` and reports the command as not
  answered in time (a ``ConnectError``: the account is retried, then reported).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from retention.config.schema import Connection

DEFAULT_TIMEOUT = 30.0
# A whole command (its complete answer, big literals included) must arrive within this
# many timeouts: 300 s with the default, i.e. a 32 MiB body batch at ~110 KB/s or more.
COMMAND_FACTOR = 10


def io_timeout(conn: Connection) -> float:
    """Seconds one read or write may wait: the account's ``timeout``, 0 meaning the default."""
    seconds = conn.timeout.total_seconds()
    return seconds if seconds > 0 else DEFAULT_TIMEOUT


class Watchdog:
    """Shuts ``sock()`` down when a command armed with ``command()`` outlives ``limit``."""

    def __init__(self, sock: Callable[[], socket.socket | None], limit: float) -> None:
        self.limit = limit
        self.expired = False  # the last command was cut by its deadline
        self._sock = sock
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._depth = 0
        self._closed = False
        self._thread: threading.Thread | None = None

    @contextmanager
    def command(self) -> Iterator[None]:
        with self._cond:
            self._depth += 1
            if self._depth == 1:
                self.expired = False
                self._deadline = time.monotonic() + self.limit
                if self._thread is None and not self._closed:
                    self._thread = threading.Thread(
                        target=self._watch, name="retention-deadline", daemon=True
                    )
                    self._thread.start()
                self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._depth -= 1
                if self._depth == 0:
                    self._deadline = None
                    self._cond.notify()

    def _watch(self) -> None:
        with self._cond:
            while not self._closed:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                self.expired = True
                self._deadline = None
                sock = self._sock()
                if sock is not None:
                    # socket.socket's own shutdown, also for an SSLSocket: it only wakes
                    # the reader, and never touches the TLS object another thread uses.
                    with contextlib.suppress(OSError):
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
