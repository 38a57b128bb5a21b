"""SMTP submission of one message (notices to the mailbox owner), TLS verified by default.

This module owns the only SMTP client of the agent: ``submit`` connects to the relay with
implicit TLS (``tls``) or ``STARTTLS`` (refused when the relay does not offer it: never a
silent downgrade), verifies the certificate (``adapters.tls.make_context``), logs in when
the settings name a user, sends one message to its recipients and quits. Failures become
typed errors (``ConnectError``, ``TlsError``, ``AuthError``, ``ProtocolError``) whose text
names the relay and its reply, never the password.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Sequence
from typing import TYPE_CHECKING

from retention.adapters.tls import classify_ssl_error, make_context
from retention.errors import AuthError, ConnectError, ProtocolError, TlsError

if TYPE_CHECKING:
    from retention.config.schema import SmtpSettings


def submit(
    settings: SmtpSettings,
    password: str | None,
    sender: str,
    recipients: Sequence[str],
    message: bytes,
) -> str:
    """Send ``message``; returns a short description (``smtp://host:port``)."""
    port = settings.effective_port()
    label = f"smtp://{settings.host}:{port}"
    timeout = settings.timeout.total_seconds() or 60.0
    plain = settings.security == "none"
    ctx = None if plain else make_context(settings.ca_file, settings.tls_verify)
    client: smtplib.SMTP
    try:
        if settings.security == "tls":
            client = smtplib.SMTP_SSL(settings.host, port, timeout=timeout, context=ctx)
        else:
            client = smtplib.SMTP(settings.host, port, timeout=timeout)
    except ssl.SSLError as exc:
        raise classify_ssl_error(exc, label) from None
    except (OSError, smtplib.SMTPException) as exc:
        raise ConnectError(f"{label}: cannot connect: {_reason(exc)}") from None
    try:
        client.ehlo_or_helo_if_needed()
        if settings.security == "starttls":
            if not client.has_extn("starttls"):
                raise TlsError(f"{label}: the relay does not offer STARTTLS")
            client.starttls(context=ctx)
            client.ehlo()
        if settings.username:
            if password is None:
                raise AuthError(f"{label}: no password for {settings.username}")
            client.login(settings.username, password)
        refused = client.sendmail(sender, list(recipients), message)
        if refused:
            who = ", ".join(f"{r} ({c[0]} {c[1]!r})" for r, c in sorted(refused.items()))
            raise ProtocolError(f"{label}: recipients refused: {who}")
        client.quit()
    except ssl.SSLError as exc:
        raise classify_ssl_error(exc, label) from None
    except smtplib.SMTPAuthenticationError as exc:
        raise AuthError(f"{label}: login refused: {exc.smtp_code}") from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise ProtocolError(f"{label}: recipients refused: {sorted(exc.recipients)}") from None
    except smtplib.SMTPResponseException as exc:
        raise ProtocolError(f"{label}: {exc.smtp_code} {_reason(exc)}") from None
    except (TimeoutError, smtplib.SMTPException, OSError) as exc:
        raise ConnectError(f"{label}: {_reason(exc)}") from None
    finally:
        try:
            client.close()
        except OSError:
            pass
    return label


def _reason(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error
        msg = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        return " ".join(msg.split())[:300]
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split())[:300] or type(exc).__name__
