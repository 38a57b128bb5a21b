"""A small local OAuth2 token service for tests and demos (127.0.0.1 only, no network).

It issues HS256 JWT access tokens that a ``Dovecot(oauth2_key=...)`` validates locally, so
tests can prove a real server accepts the agent's XOAUTH2/OAUTHBEARER logins. It speaks
the grants the agent uses and records every request (form fields, headers) so tests can
assert what a client library actually sent:

* ``client_credentials`` (client secret in the form or HTTP Basic, or an RFC 7523 client
  assertion as MSAL sends for a certificate),
* ``refresh_token`` (optionally rotating: each use returns a new refresh token and the old
  one becomes ``invalid_grant``),
* RFC 7523 ``jwt-bearer`` assertions (Google service accounts: ``sub`` = the mailbox),
* the device-code flow (RFC 8628) with an immediately approved code,
* the endpoints MSAL looks up first (``/{tenant}/v2.0/.well-known/openid-configuration``)
  and Graph's ``getMailboxUsageDetail`` report (a 302 to a CSV, as the real one does).

Dovecot binds a token to one user (its ``email`` claim must equal the SASL user), so a
client-credentials client here is bound to a subject, unlike Exchange's app-only tokens.

Faults: ``fail_next`` (an OAuth error answer such as ``invalid_grant``), ``expired_next``
(tokens whose ``exp`` is already past while ``expires_in`` says an hour: a token the
server rejects although the client believes it valid, like Exchange's
``AccessTokenExpired``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_hs256(claims: dict[str, Any], key: bytes) -> str:
    """A compact JWS with ``typ: JWT`` (Dovecot 2.3 requires it) signed with HMAC-SHA256."""
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(key, f"{header}.{body}".encode("ascii"), hashlib.sha256).digest()
    return f"{header}.{body}.{b64url(sig)}"


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of a JWT, signature not checked (for asserting what was sent)."""
    head, body, _sig = token.split(".")
    return json.loads(b64url_decode(head)), json.loads(b64url_decode(body))


@dataclass
class Request:
    """One request the server received."""

    method: str
    path: str
    form: dict[str, str]
    headers: dict[str, str]


@dataclass
class _Client:
    secret: str | None
    subject: str


@dataclass
class TokenServer:
    """Start with ``with TokenServer(key) as ts:``; ``ts.url`` is its base URL.

    ``tls``: (certificate, key) PEM files to serve HTTPS (MSAL requires an https
    authority); ``lifetime``: seconds in ``expires_in`` and ``exp``; ``rotate``: refresh
    tokens are single-use.
    """

    key: bytes
    tls: tuple[Path, Path] | None = None
    lifetime: int = 3600
    rotate: bool = False
    issuer: str = "https://tokens.test"
    requests: list[Request] = field(default_factory=list)
    fail_next: list[tuple[int, str]] = field(default_factory=list)
    expired_next: int = 0
    usage_csv: str = ""
    device_subject: str = "device-user"  # whom an approved device code logs in
    issued: list[str] = field(default_factory=list)  # every access/refresh token handed out
    _clients: dict[str, _Client] = field(default_factory=dict)
    _refresh: dict[str, str] = field(default_factory=dict)
    _httpd: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- setup ----------------------------------------------------------------------

    def add_client(self, client_id: str, secret: str | None, subject: str) -> None:
        """A confidential client (``secret`` None: assertion-only) bound to ``subject``."""
        self._clients[client_id] = _Client(secret, subject)

    def add_refresh_token(self, subject: str) -> str:
        token = "rt-" + secrets.token_urlsafe(16)
        self._refresh[token] = subject
        self.issued.append(token)
        return token

    def mint(self, subject: str, *, lifetime: int | None = None, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.issuer, "sub": subject, "email": subject, "iat": now - 5,
                "nbf": now - 5, "exp": now + (self.lifetime if lifetime is None else lifetime),
                "jti": secrets.token_hex(8), **claims}
        token = jwt_hs256(body, self.key)
        self.issued.append(token)
        return token

    def grants(self) -> list[Request]:
        """The token requests received (POSTs to a token endpoint)."""
        return [r for r in self.requests if r.path.endswith("/token")]

    # -- lifecycle ------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._httpd is not None, "not started"
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{HOST}:{self._httpd.server_address[1]}"

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    def __enter__(self) -> TokenServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # quiet: tests read ts.requests instead

            def do_GET(self) -> None:  # noqa: N802
                server._handle(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                server._handle(self, "POST")

        httpd = ThreadingHTTPServer((HOST, 0), Handler)
        httpd.daemon_threads = True
        if self.tls:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(self.tls[0]), str(self.tls[1]))
            httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
        self._httpd = httpd
        threading.Thread(target=httpd.serve_forever, name="token-server", daemon=True).start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    # -- requests -------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length).decode("utf-8") if length else ""
        path, _, query = h.path.partition("?")
        form = dict(urllib.parse.parse_qsl(raw or query))
        headers = {k.lower(): v for k, v in h.headers.items()}
        with self._lock:
            self.requests.append(Request(method, urllib.parse.unquote(path), form, headers))
            status, body, ctype, extra = self._answer(method, urllib.parse.unquote(path),
                                                      form, headers)
        data = body.encode("utf-8")
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        for k, v in extra.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def _answer(self, method: str, path: str, form: dict[str, str],
                headers: dict[str, str]) -> tuple[int, str, str, dict[str, str]]:
        js = "application/json"
        if path.endswith("/.well-known/openid-configuration"):
            tenant = path.strip("/").split("/")[0]
            base = f"{self.url}/{tenant}"
            doc: dict[str, Any] = {"token_endpoint": f"{base}/oauth2/v2.0/token",
                   "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                   "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                   "issuer": f"{base}/v2.0", "token_endpoint_auth_methods_supported": [
                       "client_secret_post", "private_key_jwt", "client_secret_basic"]}
            return 200, json.dumps(doc), js, {}
        if path.endswith("/devicecode"):
            doc = {"device_code": "dc-" + secrets.token_hex(8), "user_code": "ABCD-EFGH",
                   "verification_uri": "https://microsoft.com/devicelogin",
                   "expires_in": 900, "interval": 1,
                   "message": "To sign in, open https://microsoft.com/devicelogin and enter "
                              "the code ABCD-EFGH."}
            return 200, json.dumps(doc), js, {}
        if "getMailboxUsageDetail" in path:
            return 302, "", "text/plain", {"Location": f"{self.url}/reports/usage.csv"}
        if path.endswith("/reports/usage.csv"):
            return 200, self.usage_csv, "application/octet-stream", {}
        if method == "POST" and path.endswith("/token"):
            return self._token(form, headers)
        return 404, json.dumps({"error": "not_found"}), js, {}

    def _error(self, status: int, error: str) -> tuple[int, str, str, dict[str, str]]:
        doc = {"error": error, "error_description": f"AADSTS70000: {error} (test server)"}
        return status, json.dumps(doc), "application/json", {}

    def _token(self, form: dict[str, str],
               headers: dict[str, str]) -> tuple[int, str, str, dict[str, str]]:
        if self.fail_next:
            status, error = self.fail_next.pop(0)
            return self._error(status, error)
        grant = form.get("grant_type", "")
        refresh: str | None = None
        if grant == "client_credentials":
            client_id, secret = form.get("client_id", ""), form.get("client_secret")
            auth = headers.get("authorization", "")
            if auth.lower().startswith("basic "):
                user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
                client_id, secret = urllib.parse.unquote(user), urllib.parse.unquote(pw)
            client = self._clients.get(client_id)
            if client is None:
                return self._error(400, "invalid_client")
            if "client_assertion" not in form and secret != client.secret:
                return self._error(401, "invalid_client")
            subject = client.subject
        elif grant == "refresh_token":
            old = form.get("refresh_token", "")
            if old not in self._refresh:
                return self._error(400, "invalid_grant")
            subject = self._refresh[old]
            if self.rotate:
                del self._refresh[old]
                refresh = self.add_refresh_token(subject)
        elif grant == JWT_BEARER:
            try:
                _head, claims = jwt_parts(form.get("assertion", ""))
            except ValueError:
                return self._error(400, "invalid_grant")
            subject = str(claims.get("sub") or claims.get("iss"))
        elif grant == DEVICE_GRANT:
            subject = self.device_subject
            refresh = self.add_refresh_token(subject)
        else:
            return self._error(400, "unsupported_grant_type")
        lifetime = self.lifetime
        if self.expired_next > 0:
            self.expired_next -= 1
            lifetime = -60  # the JWT is already expired; expires_in below still says fresh
        doc: dict[str, Any] = {"access_token": self.mint(subject, lifetime=lifetime),
                               "token_type": "Bearer", "expires_in": self.lifetime}
        if form.get("scope"):
            doc["scope"] = form["scope"]
        if refresh is not None:
            doc["refresh_token"] = refresh
        return 200, json.dumps(doc), "application/json", {}
