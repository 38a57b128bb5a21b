"""A real SMTP server for tests: aiosmtpd in a thread on 127.0.0.1, collecting what it gets.

``SmtpSink(tls_cert=..., tls_key=...)`` offers STARTTLS with that certificate (tests use
the Dovecot rig's leaf, signed by its CA, so the agent verifies it as in production);
``require_starttls=True`` refuses mail before STARTTLS. ``messages`` holds one
``Received`` per accepted message (envelope and the exact bytes). ``implicit_tls=True``
serves TLS from the first byte (port 465 style). Faults, switchable while it runs:
``refuse = "451 ..."`` answers every RCPT with that reply; ``drop_in_data = True`` takes
the message and closes the connection before answering DATA (the client cannot know
whether it was delivered). aiosmtpd is a test dependency only (``pip install .[test]``).
"""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Received:
    sender: str
    recipients: tuple[str, ...]
    data: bytes


@dataclass
class SmtpSink:
    tls_cert: Path | None = None
    tls_key: Path | None = None
    require_starttls: bool = False
    implicit_tls: bool = False
    refuse: str | None = None
    drop_in_data: bool = False
    host: str = "127.0.0.1"
    messages: list[Received] = field(default_factory=list)
    _controller: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        return int(self._controller.port)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any,  # noqa: N802
                          address: str, rcpt_options: Any) -> str:
        if self.refuse:
            return self.refuse
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        with self._lock:
            self.messages.append(Received(envelope.mail_from, tuple(envelope.rcpt_tos),
                                          bytes(envelope.original_content)))
        if self.drop_in_data:
            server.transport.close()
        return "250 OK"

    def start(self) -> SmtpSink:
        from aiosmtpd.controller import Controller

        ctx = None
        if self.tls_cert is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(self.tls_cert), str(self.tls_key))
        with socket.socket() as probe:  # aiosmtpd cannot bind port 0 and report it
            probe.bind((self.host, 0))
            port = probe.getsockname()[1]
        if self.implicit_tls:
            self._controller = Controller(self, hostname=self.host, port=port,
                                          ssl_context=ctx, ready_timeout=30)
        else:
            self._controller = Controller(
                self, hostname=self.host, port=port, tls_context=ctx,
                require_starttls=self.require_starttls, ready_timeout=30,
            )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
