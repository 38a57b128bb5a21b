"""A TCP proxy on 127.0.0.1 that injects the faults a real server cannot produce on demand.

Put it between an adapter and a real Dovecot (plaintext ports: the proxy reads the
client's command lines, so it cannot see inside TLS; byte-count drops work with TLS too)::

    with FaultProxy(dovecot.host, dovecot.imap_port) as proxy:
        proxy.drop_on(rb"UID FETCH .*BODY\\.PEEK\\[\\]", after_reply_bytes=100)
        session = ImapSession.connect(conn_via(proxy.port), password, readonly=True)
        ...

Faults (each is armed once by default; ``times=None`` keeps it armed, ``reset()`` disarms):

* ``drop_after_bytes(n)``: let the next ``n`` bytes server -> client through (counted from
  when it is armed, on whichever connection carries them), then close that connection.
* ``drop_on(pattern, after_reply_bytes=0)``: when a client line matches ``pattern`` (a
  regex on the raw line, tag included), forward it, then close the connection after
  ``after_reply_bytes`` bytes of the server's answer (0: before any answer).
* ``reply_on(pattern, reply)``: answer a matching client line ourselves instead of
  forwarding it. ``reply`` is bytes, or a function of the line returning bytes; use
  ``imap_bad`` for an IMAP tagged ``BAD`` and ``pop3_err`` for a POP3 ``-ERR``.

* ``call_on(pattern, callback)``: when a client line matches, run ``callback(line)`` (in the
  proxy's thread, while that connection waits), then forward the line: e.g. another client
  flags a message right before the agent's ``UID STORE`` reaches the server.
* ``stall_on(pattern, release)``: forward a matching line, then hold back everything the
  server answers until the ``threading.Event`` ``release`` is set (a server that stalls).

* ``trickle_on(pattern, interval)``: after a matching line, pass the server's bytes one at a
  time, ``interval`` seconds apart (each read gets a byte well within any socket timeout,
  yet the answer never completes in time).

* ``replace_down(old, new)``: rewrite server -> client bytes (e.g. strip ``STARTTLS`` from a
  capability list, to prove a client then refuses to log in); per received chunk.

``lines`` records every client line seen (so a test can assert what was sent, e.g. that
no bare ``EXPUNGE`` ever went out), ``connections`` counts accepted connections.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

Reply = bytes | Callable[[bytes], bytes]


def imap_bad(text: str = "injected fault") -> Callable[[bytes], bytes]:
    """A tagged ``BAD`` for the IMAP command line it answers."""

    def reply(line: bytes) -> bytes:
        tag = line.split(b" ", 1)[0]
        return tag + b" BAD " + text.encode() + b"\r\n"

    return reply


def pop3_err(text: str = "injected fault") -> bytes:
    return b"-ERR " + text.encode() + b"\r\n"


@dataclass
class _Rule:
    kind: str  # "drop_bytes" | "drop_on" | "reply_on" | "call_on" | "stall_on"
    pattern: re.Pattern[bytes] | None
    count: int  # bytes (drop_bytes, drop_on) - unused for reply_on
    reply: Reply | None
    times: int | None
    remaining: int = 0  # drop_bytes: bytes still to let through
    callback: Callable[[bytes], object] | None = None  # call_on
    release: threading.Event | None = None  # stall_on
    interval: float = 0.0  # trickle_on

    def use(self) -> None:
        if self.times is not None:
            self.times -= 1
        self.remaining = self.count

    @property
    def armed(self) -> bool:
        return self.times is None or self.times > 0


class _Conn:
    def __init__(self, proxy: FaultProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.down_bytes = 0  # server -> client, over the connection's life
        self.cut_at: int | None = None  # absolute down_bytes at which to drop
        self.stall: threading.Event | None = None  # hold server bytes until it is set
        self.trickle: float | None = None  # pass server bytes one by one, this far apart
        self.closed = threading.Event()
        self.lock = threading.Lock()

    def close(self) -> None:
        with self.lock:
            if self.closed.is_set():
                return
            self.closed.set()
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def up(self) -> None:
        """client -> server, line-aware so rules can match commands.

        A partial line (TLS records, a literal without its final line break) is forwarded
        at once so nothing stalls; its line is matched when it completes, but can then
        only be dropped, not answered instead (clients send command lines in one write).
        """
        head = b""  # the start of the current line, already forwarded
        try:
            while not self.closed.is_set():
                data = self.client.recv(65536)
                if not data:
                    break
                while b"\n" in data and not self.closed.is_set():
                    line, data = data.split(b"\n", 1)
                    self._line(head + line + b"\n", line + b"\n", forwarded=bool(head))
                    head = b""
                if data and not self.closed.is_set():
                    self.server.sendall(data)
                    head = (head + data)[-4096:]
        except OSError:
            pass
        finally:
            self.close()

    def _line(self, line: bytes, rest: bytes, forwarded: bool) -> None:
        self.proxy._record(line)
        rule = self.proxy._match(line)
        if rule is not None and rule.kind == "reply_on" and not forwarded:
            assert rule.reply is not None
            reply = rule.reply(line) if callable(rule.reply) else rule.reply
            with self.lock:
                self.client.sendall(reply)
                self.down_bytes += len(reply)
            return
        if rule is not None and rule.kind == "call_on":
            assert rule.callback is not None
            rule.callback(line)
        if rule is not None and rule.kind == "stall_on":
            self.stall = rule.release
        if rule is not None and rule.kind == "trickle_on":
            self.trickle = rule.interval
        if rule is not None and rule.kind == "drop_on":
            if rule.count <= 0:
                self.close()
                return
            self.cut_at = self.down_bytes + rule.count
        self.server.sendall(rest)

    def down(self) -> None:
        """server -> client, counting bytes for the byte-based drops."""
        try:
            while not self.closed.is_set():
                data = self.server.recv(65536)
                if not data:
                    break
                data = self.proxy._rewrite(data)
                stall = self.stall
                if stall is not None:
                    while not stall.wait(0.1):
                        if self.closed.is_set():
                            return
                if self.trickle is not None:
                    for i in range(len(data)):
                        if self.closed.wait(self.trickle):
                            return
                        with self.lock:
                            self.client.sendall(data[i:i + 1])
                    continue
                keep = self._allowed(len(data))
                if keep is not None:
                    with self.lock:
                        self.client.sendall(data[:keep])
                    self.close()
                    return
                with self.lock:
                    self.client.sendall(data)
                    self.down_bytes += len(data)
        except OSError:
            pass
        finally:
            self.close()

    def _allowed(self, n: int) -> int | None:
        """None: pass all ``n`` bytes; else how many to pass before cutting."""
        if self.cut_at is not None and self.down_bytes + n >= self.cut_at:
            return max(0, self.cut_at - self.down_bytes)
        return self.proxy._spend_bytes(n)


class FaultProxy:
    """Forward 127.0.0.1:<port> to (host, target_port), injecting the armed faults."""

    def __init__(self, target_host: str, target_port: int, *, timeout: float = 10.0) -> None:
        self.target = (target_host, target_port)
        self.timeout = timeout
        self.lines: list[bytes] = []
        self.connections = 0
        self._rules: list[_Rule] = []
        self._replacements: list[tuple[bytes, bytes]] = []
        self._lock = threading.Lock()
        self._conns: list[_Conn] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="faultproxy", daemon=True)
        self._thread.start()

    # -- faults ------------------------------------------------------------------------

    def drop_after_bytes(self, n: int, *, times: int | None = 1) -> None:
        self._add(_Rule("drop_bytes", None, n, None, times, remaining=n))

    def drop_on(self, pattern: bytes | str, *, after_reply_bytes: int = 0,
                times: int | None = 1) -> None:
        self._add(_Rule("drop_on", _compile(pattern), after_reply_bytes, None, times))

    def reply_on(self, pattern: bytes | str, reply: Reply, *, times: int | None = 1) -> None:
        self._add(_Rule("reply_on", _compile(pattern), 0, reply, times))

    def call_on(self, pattern: bytes | str, callback: Callable[[bytes], object], *,
                times: int | None = 1) -> None:
        self._add(_Rule("call_on", _compile(pattern), 0, None, times, callback=callback))

    def stall_on(self, pattern: bytes | str, release: threading.Event, *,
                 times: int | None = 1) -> None:
        self._add(_Rule("stall_on", _compile(pattern), 0, None, times, release=release))

    def trickle_on(self, pattern: bytes | str, interval: float, *,
                   times: int | None = 1) -> None:
        self._add(_Rule("trickle_on", _compile(pattern), 0, None, times, interval=interval))

    def replace_down(self, old: bytes, new: bytes) -> None:
        with self._lock:
            self._replacements.append((old, new))

    def reset(self) -> None:
        with self._lock:
            self._rules.clear()
            self._replacements.clear()

    def sent(self, pattern: bytes | str) -> list[bytes]:
        """Client lines matching ``pattern`` (a regex), in order."""
        regex = _compile(pattern)
        with self._lock:
            return [line for line in self.lines if regex.search(line)]

    # -- plumbing ----------------------------------------------------------------------

    def _add(self, rule: _Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    def _rewrite(self, data: bytes) -> bytes:
        with self._lock:
            for old, new in self._replacements:
                data = data.replace(old, new)
        return data

    def _record(self, line: bytes) -> None:
        with self._lock:
            self.lines.append(line)

    def _match(self, line: bytes) -> _Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.pattern is not None and rule.armed and rule.pattern.search(line):
                    rule.use()
                    return rule
        return None

    def _spend_bytes(self, n: int) -> int | None:
        with self._lock:
            for rule in self._rules:
                if rule.kind == "drop_bytes" and rule.armed:
                    if n >= rule.remaining:
                        keep = rule.remaining
                        rule.use()
                        return keep
                    rule.remaining -= n
                    return None
        return None

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _addr = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=self.timeout)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            conn = _Conn(self, client, server)
            with self._lock:
                self.connections += 1
                self._conns.append(conn)
            for target in (conn.up, conn.down):
                threading.Thread(target=target, daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        # close() alone does not wake a thread blocked in accept() on Linux; shutdown does.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            conn.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _compile(pattern: bytes | str) -> re.Pattern[bytes]:
    return re.compile(pattern.encode() if isinstance(pattern, str) else pattern)
