"""SMTP submission of one message (notices to the mailbox owner), TLS verified by default.

This module owns the only SMTP client of the agent: ``submit`` connects to the relay with
implicit TLS (``tls``) or ``STARTTLS`` (refused when the relay does not offer it: never a
silent downgrade), verifies the certificate (``adapters.tls.make_context``), logs in when
the settings name a user, sends one message to its recipients and quits. Failures become
typed errors (``ConnectError``, ``TlsError``, ``AuthError``, ``ProtocolError``) whose text
names the relay and its reply, never the password. Two of them say the message may have
reached the relay, so the caller must not send it again: ``Uncertain`` (the connection
was lost during DATA) and ``PartlyRefused`` (some recipients took it); any other error
means the relay does not have it.
"""

from __future__ import annotations

import contextlib
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
        _transaction(client, label, sender, recipients, message)
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.quit()  # the relay has the message: a failed QUIT changes nothing
    except (Uncertain, PartlyRefused):
        raise
    except ssl.SSLError as exc:
        raise classify_ssl_error(exc, label) from None
    except smtplib.SMTPAuthenticationError as exc:
        raise AuthError(f"{label}: login refused: {exc.smtp_code}") from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise ProtocolError(f"{label}: recipients refused: {_refused(exc.recipients)}") from None
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


class Uncertain(ConnectError):
    """The connection failed after the message was handed over, before the relay's
    answer: it may have been delivered, so it is never sent again."""


class PartlyRefused(ProtocolError):
    """The relay accepted the message for some recipients and refused others: it was
    delivered, so it is never sent again."""


def _transaction(client: smtplib.SMTP, label: str, sender: str, recipients: Sequence[str],
                 message: bytes) -> None:
    """MAIL, RCPT, DATA step by step (``sendmail`` in one call cannot tell a failure
    before the hand-off, safe to retry, from one after it)."""
    code, resp = client.mail(sender)
    if code != 250:
        raise smtplib.SMTPSenderRefused(code, resp, sender)
    refused: dict[str, tuple[int, bytes]] = {}
    for rcpt in recipients:
        code, resp = client.rcpt(rcpt)
        if code not in (250, 251):
            refused[rcpt] = (code, resp)
    if len(refused) == len(recipients):
        raise smtplib.SMTPRecipientsRefused(refused)
    try:
        client.data(message)
    except smtplib.SMTPResponseException:
        raise  # the relay answered: it did not take the message
    except (TimeoutError, smtplib.SMTPException, OSError) as exc:
        raise Uncertain(f"{label}: connection lost while handing over the message "
                        f"({_reason(exc)}); it may have been delivered") from None
    if refused:
        raise PartlyRefused(f"{label}: delivered, but recipients refused: {_refused(refused)}")


def _refused(refused: dict[str, tuple[int, bytes]]) -> str:
    def text(reply: bytes) -> str:
        return " ".join(reply.decode("utf-8", "replace").split())[:200]

    return ", ".join(f"{r} ({code} {text(reply)})" for r, (code, reply) in sorted(refused.items()))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error
        msg = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        return " ".join(msg.split())[:300]
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split())[:300] or type(exc).__name__
