"""The service's HTTP endpoints: ``/metrics``, ``/healthz``, ``/readyz`` and ``/``.

This module owns the HTTP server only: what the metrics mean is ``service.metrics``, and
whether the service is healthy or ready is asked of callables the scheduler passes in.

``/metrics`` is prometheus-client's own WSGI app (``make_wsgi_app``): content negotiation
(OpenMetrics or the text format), gzip when the scraper sends ``Accept-Encoding: gzip``,
and ``?name[]=`` filters, exactly as every other client_python exporter serves them. What
is added around it, in :func:`make_app`: the two probes, a landing page at ``/`` linking
the endpoints (as exporters have), ``HEAD`` (the same headers as ``GET``, no body; the
library's app answers 405 to it), a 404 naming the endpoints for any other path (the
library's app would serve metrics on every path), and a 500 instead of a dropped
connection when a collector raises. The server is the stdlib ``wsgiref`` one, one thread
per request, on IPv4 or IPv6, with no TLS and no authentication, as before: the metrics
address is meant for the Prometheus network (see ``service.metrics_address``).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

log = logging.getLogger("retention.service")

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

LANDING = b"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>retention</title></head>
<body><h1>retention</h1><p>Mailbox quota and retention agent.</p><ul>
<li><a href="metrics">/metrics</a>: Prometheus metrics</li>
<li><a href="healthz">/healthz</a>: liveness (200 while the scheduler runs)</li>
<li><a href="readyz">/readyz</a>: readiness (200 once the first measurement started)</li>
</ul></body></html>
"""
NOT_FOUND = b"not found: try /metrics, /healthz or /readyz\n"


def make_app(
    registry: CollectorRegistry, healthy: Callable[[], bool], ready: Callable[[], bool]
) -> WsgiApp:
    """The WSGI app of every endpoint (tests call it without a socket)."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        head = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return _reply(start_response, "405 Method Not Allowed",
                          b"use GET or HEAD\n", extra=[("Allow", "GET, HEAD")])
        if path == "/metrics":
            return _metrics(metrics, environ, start_response, head)
        if path == "/healthz":
            ok = healthy()
            body = b"ok\n" if ok else b"unhealthy\n"
        elif path == "/readyz":
            ok = ready()
            body = b"ready\n" if ok else b"not ready\n"
        elif path == "/":
            return _reply(start_response, "200 OK", LANDING, head=head,
                          content_type="text/html; charset=utf-8")
        else:
            return _reply(start_response, "404 Not Found", NOT_FOUND, head=head)
        return _reply(start_response, "200 OK" if ok else "503 Service Unavailable", body,
                      head=head)

    return app


def _metrics(metrics: WsgiApp, environ: dict[str, Any], start_response: StartResponse,
             head: bool) -> Iterable[bytes]:
    captured: list[tuple[str, list[tuple[str, str]]]] = []

    def capture(status: str, headers: list[tuple[str, str]], *_: Any) -> None:
        captured.append((status, headers))

    try:
        # The library's app answers HEAD with 405: ask it for GET, then drop the body.
        body = b"".join(metrics({**environ, "REQUEST_METHOD": "GET"}, capture))
    except Exception:  # a broken collector must not kill the server
        log.exception("event=metrics_failed")
        return _reply(start_response, "500 Internal Server Error",
                      b"metrics collection failed\n", head=head)
    status, headers = captured[0]
    headers = [*headers, ("Content-Length", str(len(body)))]
    if any(k.lower() == "content-encoding" for k, _ in headers):
        headers.append(("Vary", "Accept-Encoding"))
    start_response(status, headers)
    return [] if head else [body]


def _reply(start_response: StartResponse, status: str, body: bytes, *, head: bool = False,
           content_type: str = "text/plain; charset=utf-8",
           extra: list[tuple[str, str]] | None = None) -> Iterable[bytes]:
    start_response(status, [("Content-Type", content_type),
                            ("Content-Length", str(len(body))), *(extra or [])])
    return [] if head else [body]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _V6Server(_Server):
    address_family = socket.AF_INET6


class _Handler(WSGIRequestHandler):
    server_version = "retention"
    sys_version = ""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        log.debug("event=http %s", format % args)


class MetricsServer:
    """``/metrics``, ``/healthz``, ``/readyz`` and ``/`` on a background thread.

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
        server_cls = _V6Server if ":" in address else _Server
        self._server = make_server(address, port, make_app(registry, healthy, ready),
                                   server_class=server_cls, handler_class=_Handler)
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
