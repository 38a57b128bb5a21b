"""The one small interface through which the agent talks to a mail server.

``adapters/imap.py`` and ``adapters/pop3.py`` implement ``MailSession``; ``adapters/fake.py``
is an in-memory implementation for unit tests. No other module opens a socket to a mail
server, and no adapter decides policy: adapters read what is there and do exactly what
they are told to exactly the messages they are named.

Invariants every implementation keeps:

* Identity. Every ``MessageRef`` carries the UIDVALIDITY it was read under (RFC 3501
  2.3.1.1). ``delete``/``move``/``fetch`` first re-check the folder's UIDVALIDITY and raise
  ``UidValidityChanged`` (a ``FolderSkipped``) rather than act on a ref that may now name
  another message. POP3 refs carry a UIDL; message numbers are mapped from UIDL within
  the same session only.
* Exactness. ``delete`` removes exactly the named messages and nothing else: IMAP uses
  ``UID STORE +FLAGS.SILENT (\\Deleted)`` then ``UID EXPUNGE`` of exactly those UIDs
  (RFC 4315), never a bare ``EXPUNGE`` or ``CLOSE``, which would also remove messages
  another client flagged ``\\Deleted``. A server without UIDPLUS makes ``delete`` raise
  ``ProtocolError``. ``move`` uses ``UID MOVE`` (RFC 6851) or ``UID COPY`` + ``COPYUID``
  check + the same exact delete.
* Read-only sessions. A session opened with ``readonly=True`` (dry-run) uses ``EXAMINE``
  and ``BODY.PEEK`` only and refuses every state-changing call with ``ProtocolError``:
  nothing on the server changes, flags included.
* Commit. IMAP changes are durable when the call returns. POP3 ``DELE`` is committed only
  by ``commit()`` (a successful ``QUIT``); ``close()`` without ``commit()`` ends the session
  without committing (RFC 1939 section 6), so nothing is half-deleted.
* Errors. Failures are raised as the typed errors of ``retention.errors``; messages name
  host and server reply, never a password.
* Logins. ``connect`` takes a password (LOGIN/USER+PASS, or SASL PLAIN) or a ``SaslLogin``
  (OAuth2 bearer tokens from ``retention.auth``): the adapter picks the mechanism from the
  server's ``AUTH=``/``SASL`` capabilities, sends the initial response and, on failure,
  answers the server's error challenge with an empty response. A refusal is ``AuthError``
  (its message names the mechanism and the server's status, never the token).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Protocol

from retention.adapters.spool import Body
from retention.model import FolderInfo, FolderSnapshot, MailProtocol, MessageRef, Protection, Usage


class SaslLogin(Protocol):
    """A login other than a password: the hook ``retention.auth.BearerLogin`` implements."""

    username: str

    def choose(self, offered: Iterable[str]) -> str | None:
        """The mechanism to use among those the server offers (None: none fits)."""
        ...

    def initial_response(self, mechanism: str, host: str | None = None,
                         port: int | None = None) -> bytes:
        """The raw (not yet base64) SASL initial response for ``mechanism``."""
        ...

    def secrets(self) -> list[str]:
        """What must never appear in a message (scrubbed from server replies)."""
        ...

    def describe(self) -> str:
        """A name for messages (e.g. ``OAuth2 (m365)``), never a secret."""
        ...


#: What ``connect`` takes to log in: a password, or a SASL login.
Secret = str | SaslLogin


class MailSession(Protocol):
    """One authenticated session on one account (see the module docstring for invariants)."""

    protocol: MailProtocol
    readonly: bool

    def capabilities(self) -> frozenset[str]:
        """Server capabilities, upper-case (``UIDPLUS``, ``MOVE``, ``QUOTA``; POP3 ``CAPA``)."""
        ...

    def list_folders(self) -> list[FolderInfo]:
        """Every folder, decoded names with ``/`` as separator, special-use attributes.

        POP3: a single ``INBOX``.
        """
        ...

    def usage(self, folders: Sequence[FolderInfo] | None = None, *,
              counted: Mapping[str, int] | None = None) -> Usage:
        """Storage in use: the server's quota (``GETQUOTAROOT INBOX``, bytes) where offered.

        Otherwise the summed sizes of ``folders`` (all folders when None) with
        ``limit_bytes=None`` and ``source="sum"``; the caller applies the policy's limit.
        POP3: ``STAT`` octets, ``source="sum"``. ``counted``: the message counts of folders
        the caller has just read in full, by name; where messages would be counted one
        folder at a time (``STATUS``), these are taken instead of asking again.
        """
        ...

    def scan(self, folder: FolderInfo, *, with_sent: bool = True) -> FolderSnapshot:
        """Metadata of every message in ``folder``, read-only (EXAMINE, BODY.PEEK, TOP).

        Fetched in batches (bounded memory per round trip, command lines under 8 KB).
        ``with_sent`` asks for the Date header (IMAP: cheap; POP3: one ``TOP n 0`` each).
        Messages whose headers are missing or garbage are returned with ``sent=None``.
        ``message_id`` is read only along with the Date header (``with_sent``); otherwise
        it is None and ``message_ids`` reads it for the messages that need it.
        """
        ...

    def message_ids(self, refs: Sequence[MessageRef]) -> dict[MessageRef, str | None]:
        """The Message-ID header of each ref (all in one folder), read-only.

        IMAP: EXAMINE (UIDVALIDITY re-checked: ``UidValidityChanged``) and
        ``BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]`` in batches; POP3: ``TOP n 0``. Every ref
        is a key; a message without the header, or no longer there, maps to None.
        """
        ...

    def fetch(
        self, refs: Sequence[MessageRef], *, skipped: dict[MessageRef, str] | None = None
    ) -> Iterator[tuple[MessageRef, Body]]:
        """The exact bytes of each message (``BODY.PEEK[]``; POP3 ``RETR``), in batches.

        A body larger than the spool threshold may come as a ``spool.Spooled`` file
        instead of ``bytes`` (review F11); consumers use ``spool.body_chunks``/``body_sha256``.

        All refs are in one folder. Raises ``UidValidityChanged`` when it moved on; a ref
        that no longer exists is simply not yielded. Only whole messages are yielded: a
        body whose length is not the size the server announced (RFC822.SIZE; POP3 LIST,
        after dot-unstuffing) is left out and put into ``skipped`` with the reason.
        """
        ...

    def delete(
        self, refs: Sequence[MessageRef], *, protect: Protection | None = None,
        skipped: dict[MessageRef, str] | None = None,
    ) -> set[MessageRef]:
        """Remove exactly these messages (all in one folder); return the refs removed.

        ``protect``: what forbids removal, re-checked on the server right before acting
        (IMAP: FLAGS re-read, and with CONDSTORE a ``UID STORE ... (UNCHANGEDSINCE m)``);
        a message another client flagged or marked unread since the scan is left alone
        and put into ``skipped`` with the reason. POP3 has no flags: nothing to re-check.
        """
        ...

    def move(
        self, refs: Sequence[MessageRef], to_folder: str, *, protect: Protection | None = None,
        skipped: dict[MessageRef, str] | None = None,
    ) -> set[MessageRef]:
        """Move exactly these messages to ``to_folder`` (created when missing); ``protect``
        and ``skipped`` as for ``delete``."""
        ...

    def commit(self) -> None:
        """Make pending changes durable (POP3: ``QUIT``); IMAP: a no-op."""
        ...

    def close(self) -> None:
        """Leave without committing anything still pending (POP3: no ``QUIT``). Idempotent."""
        ...
