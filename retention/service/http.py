"""The service's HTTP endpoints: ``/metrics``, ``/healthz`` and ``/readyz``.

This module owns the HTTP server only: what the metrics mean is ``service.metrics``, and
whether the service is healthy or ready is asked of callables the scheduler passes in.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger("retention.service")


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on a background thread.

    Port 0 binds a free port; ``port`` tells which. The probes are callables so the HTTP
    layer knows nothing of the scheduler.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        address: str,
        port: int,
        *,
        healthy: Callable[[], bool],
        ready: Callable[[], bool],
    ) -> None:
        handler = _handler(registry, healthy, ready)
        server_cls = _V6Server if ":" in address else ThreadingHTTPServer
        self._server = server_cls((address, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="retention-metrics", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def address(self) -> str:
        return str(self._server.server_address[0])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class _V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _handler(
    registry: CollectorRegistry, healthy: Callable[[], bool], ready: Callable[[], bool]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "retention"
        sys_version = ""

        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                try:
                    body = encoder(registry)
                except Exception:  # a broken collector must not kill the server
                    log.exception("event=metrics_failed")
                    self._send(500, b"metrics collection failed\n")
                    return
                self._send(200, body, content_type)
            elif path == "/healthz":
                ok = healthy()
                self._send(200 if ok else 503, b"ok\n" if ok else b"unhealthy\n")
            elif path == "/readyz":
                ok = ready()
                self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

        def _send(self, code: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            log.debug("event=http %s", format % args)

    return Handler
