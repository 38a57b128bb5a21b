"""TLS client contexts and TLS error classification, shared by the IMAP and POP3 adapters.

This module owns how the agent trusts a server: certificate and hostname verification are
on unless a policy says ``tls_verify: false`` (the only way to turn them off), TLS 1.2 is
the minimum, and a ``ca_file`` replaces the system trust store (a private CA is trusted
for that account only, the public ones are then not). It also turns ``ssl`` exceptions
into ``TlsError`` messages a mail admin can act on, without any secret in them.
"""

from __future__ import annotations

import logging
import ssl
import threading
from pathlib import Path

from retention.errors import TlsError

log = logging.getLogger("retention.tls")

_warned_lock = threading.Lock()
_warned_unverified = False


def make_context(ca_file: Path | None, verify: bool = True) -> ssl.SSLContext:
    """A client context: TLS 1.2+, verification on unless ``verify`` is False.

    ``ca_file`` (PEM) becomes the only trust anchor when given. An unreadable or invalid
    ``ca_file`` raises ``TlsError``: it is a TLS setup problem of that account.
    """
    try:
        ctx = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(ca_file) if ca_file is not None else None
        )
    except (OSError, ssl.SSLError) as exc:
        # FileNotFoundError / PermissionError / "no certificate or crl found".
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise TlsError(f"cannot load ca_file {ca_file}: {reason}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        _warn_unverified_once()
        # Order matters: check_hostname must be off before verify_mode can be CERT_NONE.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _warn_unverified_once() -> None:
    global _warned_unverified
    with _warned_lock:
        if _warned_unverified:
            return
        _warned_unverified = True
    log.warning(
        "tls_verify: false - server certificates are NOT verified; "
        "anyone on the network path can read the password"
    )


def classify_ssl_error(exc: BaseException, where: str | None = None) -> TlsError:
    """A ``TlsError`` with a one-line cause for an ``ssl`` failure (or a STARTTLS refusal).

    ``where`` (``host:port``) prefixes the message when given.
    """
    prefix = f"{where}: " if where else ""
    if isinstance(exc, ssl.SSLCertVerificationError):
        # verify_message says e.g. "unable to get local issuer certificate" or
        # "Hostname mismatch, certificate is not valid for 'x'".
        detail = exc.verify_message or exc.reason or str(exc)
        return TlsError(f"{prefix}certificate verification failed: {detail}")
    if isinstance(exc, ssl.SSLError):
        detail = exc.reason or _one_line(str(exc))
        if "WRONG_VERSION_NUMBER" in str(detail).upper():
            detail = f"{detail} (is the port plaintext? try security: starttls)"
        return TlsError(f"{prefix}TLS handshake failed: {detail}")
    return TlsError(f"{prefix}TLS failed: {_one_line(str(exc)) or type(exc).__name__}")


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
