"""The POP3 side of ``MailSession`` (RFC 1939, CAPA RFC 2449, STLS RFC 2595).

This module owns every byte the agent sends to and reads from a POP3 server. POP3 has one
folder (``INBOX``), no flags and no server dates, so:

* Identity is the ``UIDL``; message numbers are mapped from this session's own UIDL listing
  and never carried across sessions. A server without UIDL fails the account: no safe
  retention without stable ids.
* Age comes from the agent's first-seen ledger (``retention.state.observations``): ``scan`` returns
  ``received`` = the time this session was opened ("first seen now", which can never make a
  message old) and the runner replaces it with the ledger's first-seen time. ``with_sent``
  reads each message's header with ``TOP n 0`` (pipelined where the server offers
  PIPELINING), which, unlike ``RETR``, does not mark it read; ``message_ids`` does the same
  for just the messages it is given.
* ``DELE`` only marks: the deletions are committed by ``commit()`` (a successful ``QUIT``).
  ``close()`` without ``commit()`` sends ``RSET`` and drops the connection without ``QUIT``
  (RFC 1939 section 6: the server then removes nothing), as does any error.
* A read-only session (dry-run) never sends ``DELE``, ``RETR`` or ``QUIT``: it reads with
  ``UIDL``, ``LIST``, ``STAT`` and ``TOP`` only.

poplib is used to connect, to run STLS and to log in; after that the session reads the
socket itself, so that message bytes come back exactly as sent (CRLF kept, dot-unstuffed,
lines of any length) rather than as poplib's stripped lines capped at 2,048 bytes.
"""

from __future__ import annotations

import base64
import logging
import poplib
import re
import socket
import ssl
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import IO, NoReturn

from retention.adapters import SaslLogin
from retention.adapters.deadline import io_timeout
from retention.adapters.spool import Body, Limits, Spooled
from retention.adapters.tls import classify_ssl_error, make_context
from retention.auth.sasl import challenge_status
from retention.config.schema import Connection
from retention.config.secrets import redact, secret_forms
from retention.errors import (
    AuthError,
    ConnectError,
    FolderSkipped,
    ProtocolError,
    TlsError,
)
from retention.model import (
    FolderInfo,
    FolderSnapshot,
    MailProtocol,
    Message,
    MessageRef,
    Protection,
    Usage,
)

log = logging.getLogger("retention.pop3")

INBOX = "INBOX"
NO_UIDL = "server does not support UIDL: no safe retention without stable message ids"
_STATUS_MAX = 8192  # a status line; RFC 1939 allows 512 bytes
_CHUNK = 65536  # message lines are read in pieces of at most this many bytes
_PIPELINE = 64  # commands in flight at once when the server offers PIPELINING
_WHOLE = 999_999_999  # TOP n _WHOLE: the whole message without RETR's side effects


# --- pure parsing (unit-tested without a server) ------------------------------------------


def read_multiline(file: IO[bytes]) -> bytes:
    """Read a multi-line response body up to its ``.`` line: the exact bytes, unstuffed."""
    body = read_multiline_into(file, None)
    assert isinstance(body, bytes)
    return body


def read_multiline_into(file: IO[bytes], spool: Spooled | None) -> Body:
    """Read a multi-line response body up to its ``.`` line: the exact bytes, unstuffed.

    Line endings are kept as sent; one leading dot is removed from dot-stuffed lines
    (RFC 1939 section 3). Lines of any length are read in bounded pieces. With ``spool``
    the bytes go into that file instead of memory (a big message, review F11).
    """
    out = bytearray()
    at_line_start = True
    while True:
        piece = file.readline(_CHUNK)
        if not piece:
            raise EOFError("connection closed in the middle of a response")
        if at_line_start:
            if piece in (b".\r\n", b".\n"):
                if spool is not None:
                    spool.write(out)
                    return spool
                return bytes(out)
            if piece.startswith(b"."):
                piece = piece[1:]
        out += piece
        at_line_start = piece.endswith(b"\n")
        if spool is not None and len(out) >= _CHUNK:
            spool.write(out)
            out.clear()


def _not_whole(data: Body, size: int | None) -> str | None:
    """Why a retrieved message is not the whole message LIST announced (None: it is).

    RFC 1939 ends a multi-line reply with CRLF "." CRLF, so a message that does not end
    with a line break comes back with one added: that one CRLF more is still whole.
    """
    if size is None:
        return "no LIST size for this message: it cannot be checked whole"
    tail = data.tail(2) if isinstance(data, Spooled) else data[-2:]
    if len(data) == size or (len(data) == size + 2 and tail == b"\r\n"):
        return None
    return f"the server sent {len(data)} bytes of a {size}-byte message (LIST): not whole"


def parse_capa(body: bytes) -> dict[str, tuple[str, ...]]:
    """CAPA lines -> {KEYWORD: (args...)}, keywords upper-cased."""
    caps: dict[str, tuple[str, ...]] = {}
    for line in body.decode("ascii", errors="replace").splitlines():
        words = line.split()
        if words:
            caps[words[0].upper()] = tuple(words[1:])
    return caps


def parse_listing(body: bytes, what: str) -> dict[int, str]:
    """``UIDL``/``LIST`` lines (``n value``) -> {n: value}. Malformed lines are errors."""
    out: dict[int, str] = {}
    for line in body.splitlines():
        words = line.split()
        if not words:
            continue
        if len(words) < 2 or not words[0].isdigit():
            raise ValueError(f"malformed {what} line {line[:80]!r}")
        out[int(words[0])] = words[1].decode("ascii", errors="replace")
    return out


def unique_uidls(uidls: dict[int, str]) -> dict[str, int]:
    """UIDL -> message number, leaving out UIDLs that name more than one message.

    RFC 1939 requires them unique; a server that repeats one gives us no way to tell which
    message a ref meant, so those messages are never touched.
    """
    count: dict[str, int] = {}
    for uidl in uidls.values():
        count[uidl] = count.get(uidl, 0) + 1
    dupes = {u for u, c in count.items() if c > 1}
    if dupes:
        log.warning("server repeats %d UIDL(s); those messages are left alone", len(dupes))
    return {u: n for n, u in uidls.items() if u not in dupes}


def parse_headers(raw: bytes) -> tuple[datetime | None, str | None, str | None]:
    """(sent, raw Date header if unparseable, Message-ID) from a header block.

    Never raises: missing or garbage headers give None (the clock falls back to first-seen).
    """
    fields: dict[str, str] = {}
    name: str | None = None
    for line in raw.decode("utf-8", errors="replace").splitlines():
        if not line.strip():
            break  # end of the header
        if line[0] in " \t" and name is not None:
            fields[name] += " " + line.strip()  # unfold (RFC 5322 2.2.3)
            continue
        key, sep, value = line.partition(":")
        name = key.strip().lower() if sep else None
        if name is not None and name not in fields:
            fields[name] = value.strip()
        elif name is not None:
            name = None  # a repeated field: the first one counts, ignore continuations too
    date_raw = fields.get("date")
    sent: datetime | None = None
    if date_raw:
        try:
            sent = parsedate_to_datetime(date_raw)
            if sent.tzinfo is None:  # "-0000": UTC with no claim about the local zone
                sent = sent.replace(tzinfo=UTC)
            sent.astimezone(UTC)  # out-of-range offsets fail here, not later
        except (TypeError, ValueError, IndexError, OverflowError):
            sent = None
    mid = fields.get("message-id") or None
    if mid is not None:
        start, end = mid.find("<"), mid.find(">")
        mid = (mid[start:end + 1] if 0 <= start < end else mid)[:998] or None
    return sent, (date_raw[:998] if date_raw and sent is None else None), mid


def received_stamp(raw: bytes) -> datetime | None:
    """The date of the topmost ``Received:`` field (the stamp the last server that took the
    message put on it, by its clock: RFC 5321 4.4); None without one that parses. Evidence
    of the server's time (review M10); the ``Date:`` is not (the sender's clock, or an old
    message migrated in). Never raises."""
    text = raw.decode("utf-8", errors="replace")
    head = text.split("\r\n\r\n", 1)[0].split("\n\n", 1)[0]
    unfolded = re.sub(r"\r?\n[ \t]+", " ", head)
    for line in unfolded.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() == "received" and ";" in value:
            try:
                when = parsedate_to_datetime(value.rsplit(";", 1)[1].strip())
                return when if when.tzinfo else when.replace(tzinfo=UTC)
            except (TypeError, ValueError, IndexError, OverflowError):
                return None
    return None


# --- the session -----------------------------------------------------------------------------


def _reply_text(reply: object) -> str:
    raw = reply.args[0] if isinstance(reply, Exception) and reply.args else reply
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return text.strip()[:300]


def _login_error(where: str, reply: object, user: str, password: str) -> NoReturn:
    """Classify a refused login by its RFC 2449/3206 response code."""
    # A server that echoes what it was sent must not put the password into our errors,
    # in any of its wire forms (AUTH PLAIN's base64 included).
    text = redact(_reply_text(reply), secret_forms(password, user))
    if text == "-ERR EOF":
        # poplib's own words for a connection that closed: not the server refusing us.
        raise ConnectError(f"{where}: connection lost during login")
    upper = text.upper()
    if "[IN-USE]" in upper or "[SYS/TEMP]" in upper or "[LOGIN-DELAY]" in upper:
        raise ConnectError(f"{where}: login refused for now: {text}")
    if "[SYS/PERM]" in upper:
        raise ProtocolError(f"{where}: login refused: {text}")
    raise AuthError(f"{where}: login rejected: {text}")


class Pop3Session:
    """One authenticated POP3 session (see the module docstring and ``MailSession``)."""

    protocol: MailProtocol = "pop3"

    def __init__(
        self, client: poplib.POP3, *, where: str, readonly: bool,
        capa: dict[str, tuple[str, ...]], opened: datetime,
    ) -> None:
        self._client = client
        self.where = where
        self.readonly = readonly
        self.capa = capa
        self.opened = opened
        self._numbers: dict[str, int] | None = None  # UIDL -> message number, this session
        self._sizes: dict[int, int] = {}
        self._marked: dict[int, MessageRef] = {}  # DELE'd in this session, not yet committed
        self._retrieved = False  # RETR sent: Dovecot sets \Seen even without QUIT, RSET undoes
        self._broken = False  # the stream is out of step or gone: never QUIT
        self._closed = False

    # -- connecting ------------------------------------------------------------------------

    @classmethod
    def connect(
        cls, conn: Connection, password: str | SaslLogin, *, readonly: bool
    ) -> Pop3Session:
        """Connect, secure and log in (no plaintext credentials unless ``allow_plaintext``)."""
        port = conn.port_for("pop3")
        where = f"pop3 {conn.host}:{port}"
        if conn.security == "none" and not conn.allow_plaintext:
            raise TlsError(f"{where}: security none needs allow_plaintext: true")
        user, authzid = conn.login_names()
        if isinstance(password, str) and any(
            c in s for s in (user, authzid or "", password) for c in "\r\n\0"
        ):
            raise AuthError(f"{where}: the username or password contains a line break or NUL")
        timeout = io_timeout(conn)  # 0 is the default, never a non-blocking socket
        opened = datetime.now(UTC)
        ctx = None
        if conn.security != "none":
            try:
                ctx = make_context(conn.ca_file, conn.tls_verify)
            except TlsError as e:
                raise TlsError(f"{where}: {e}") from None
        client: poplib.POP3 | None = None
        try:
            if ctx is not None and conn.security == "tls":
                client = poplib.POP3_SSL(conn.host, port, timeout=timeout, context=ctx)
            else:
                client = poplib.POP3(conn.host, port, timeout=timeout)
                if ctx is not None:
                    cls._starttls(client, where, ctx)
            caps = cls._capa(client)
            if isinstance(password, str):
                cls._login(client, where, caps, user, password, authzid)
            else:
                cls._sasl_login(client, where, caps, password, conn.host, port)
            caps = cls._capa(client) or caps  # RFC 2449: may change after login
        except BaseException as e:
            if client is not None:
                _drop(client)
            if isinstance(e, ssl.SSLError):
                raise classify_ssl_error(e, where) from None
            if isinstance(e, OSError):
                raise ConnectError(f"{where}: {e.strerror or e}") from None
            if isinstance(e, poplib.error_proto):
                raise ConnectError(f"{where}: server refused the session: {_reply_text(e)}") \
                    from None
            raise
        return cls(client, where=where, readonly=readonly, capa=caps, opened=opened)

    @staticmethod
    def _starttls(client: poplib.POP3, where: str, ctx: ssl.SSLContext) -> None:
        # Never fall back to plaintext: no STLS, or a refused one, fails the account.
        try:
            client.stls(ctx)
        except poplib.error_proto as e:
            raise TlsError(f"{where}: STARTTLS (STLS) not available: {_reply_text(e)}") from None

    @staticmethod
    def _capa(client: poplib.POP3) -> dict[str, tuple[str, ...]]:
        try:
            return {k.upper(): tuple(v) for k, v in client.capa().items()}
        except poplib.error_proto:
            return {}  # an RFC 1939-only server: no CAPA

    @staticmethod
    def _login(
        client: poplib.POP3, where: str, caps: dict[str, tuple[str, ...]], user: str,
        password: str, authzid: str | None = None,
    ) -> None:
        sasl = {m.upper() for m in caps.get("SASL", ())}
        try:
            # An authorization identity (login_as: authzid) needs SASL PLAIN (RFC 4616),
            # sent as AUTH with an initial response (RFC 5034): poplib has no SASL helper.
            if authzid is not None or (caps and "USER" not in caps and "PLAIN" in sasl):
                token = base64.b64encode(
                    f"{authzid or ''}\0{user}\0{password}".encode()
                ).decode("ascii")
                client.sock.sendall(b"AUTH PLAIN " + token.encode("ascii") + b"\r\n")
                del token
                reply = client.file.readline(_STATUS_MAX)
                if not reply.startswith(b"+OK"):
                    _login_error(where, reply, user, password)
                return
            client.user(user)
            client.pass_(password)
        except poplib.error_proto as e:
            _login_error(where, e, user, password)

    @staticmethod
    def _sasl_login(
        client: poplib.POP3, where: str, caps: dict[str, tuple[str, ...]], login: SaslLogin,
        host: str, port: int,
    ) -> None:
        """RFC 5034 ``AUTH``: mechanism from CAPA's SASL line, the response on its own line.

        The initial response goes after a ``+`` rather than on the AUTH line: a bearer token
        exceeds the 255 octets RFC 5034 allows a command line (Microsoft documents the same
        two-step form). A refusal may come as a ``+`` JSON challenge first: answered empty.
        """
        offered = caps.get("SASL", ())
        mech = login.choose(offered)
        if mech is None:
            raise AuthError(f"{where}: the server offers no SASL mechanism for "
                            f"{login.describe()} (SASL {' '.join(offered) or 'none'})")
        secrets = login.secrets()

        def text_of(reply: bytes) -> str:
            return redact(_reply_text(reply), secrets)

        client.sock.sendall(f"AUTH {mech}\r\n".encode("ascii"))
        reply = client.file.readline(_STATUS_MAX)
        if not reply.startswith(b"+") or reply.startswith(b"+OK"):
            _login_error(where, text_of(reply), login.username, "")
        first = base64.b64encode(login.initial_response(mech, host, port))
        client.sock.sendall(first + b"\r\n")
        del first
        reply = client.file.readline(_STATUS_MAX)
        status = None
        if reply.startswith(b"+ ") or reply.rstrip(b"\r\n") == b"+":
            try:
                status = challenge_status(base64.b64decode(reply[2:].strip(), validate=False))
            except ValueError:
                status = None
            empty = base64.b64encode(b"\x01") if mech == "OAUTHBEARER" else b""
            client.sock.sendall(empty + b"\r\n")
            reply = client.file.readline(_STATUS_MAX)
        if not reply:
            raise ConnectError(f"{where}: connection lost during AUTH {mech}")
        if not reply.startswith(b"+OK"):
            text = text_of(reply) + (f" (status {status})" if status else "")
            if "[IN-USE]" in text.upper() or "[SYS/TEMP]" in text.upper() or \
                    "[LOGIN-DELAY]" in text.upper():
                raise ConnectError(f"{where}: login refused for now: {text}")
            raise AuthError(f"{where}: {login.describe()} login as {login.username} ({mech}) "
                            f"rejected: {text}")

    # -- wire helpers ----------------------------------------------------------------------

    @contextmanager
    def _io(self, what: str) -> Iterator[None]:
        """Map transport failures to ConnectError; the stream is then unusable."""
        if self._closed or self._broken:
            raise ConnectError(f"{self.where}: {what}: the session is closed")
        try:
            yield
        except (OSError, EOFError, ssl.SSLError) as e:
            self._broken = True
            raise ConnectError(f"{self.where}: {what}: connection lost ({e})") from None
        except ProtocolError:
            raise
        except BaseException:
            self._broken = True
            raise

    def _send(self, *commands: str) -> None:
        self._client.sock.sendall(b"".join(c.encode("ascii") + b"\r\n" for c in commands))

    def _status(self, what: str) -> tuple[bool, str]:
        line = self._client.file.readline(_STATUS_MAX)
        if not line.endswith(b"\n") and len(line) < _STATUS_MAX:
            raise EOFError("connection closed" + (" mid-reply" if line else ""))
        if line.startswith(b"+OK"):
            return True, _reply_text(line)
        if line.startswith(b"-ERR"):
            return False, _reply_text(line)
        self._broken = True
        raise ProtocolError(f"{self.where}: {what}: unexpected reply {_reply_text(line)!r}")

    def _command(self, command: str, *, multiline: bool) -> bytes:
        """One command; ``-ERR`` raises ProtocolError naming the command (not its arguments)."""
        verb = command.split()[0]
        with self._io(verb):
            self._send(command)
            ok, text = self._status(verb)
            if not ok:
                raise ProtocolError(f"{self.where}: {verb} failed: {text}")
            return read_multiline(self._client.file) if multiline else b""

    def _pipelined(
        self, commands: Sequence[str], *, multiline: bool, sizes: Sequence[int] = ()
    ) -> Iterator[tuple[int, bool, Body, str]]:
        """(index, ok, body, status text) per command, several in flight if PIPELINING.

        ``sizes`` (expected reply sizes) bound the bytes held per batch to
        ``Limits.batch_bytes()`` (message_memory / 8).
        """
        most = _PIPELINE if "PIPELINING" in self.capa else 1
        start = 0
        while start < len(commands):
            end, budget = start + 1, sizes[start] if sizes else 0
            while end < len(commands) and end - start < most:
                budget += sizes[end] if sizes else 0
                if budget > Limits.batch_bytes():
                    break
                end += 1
            chunk = commands[start:end]
            with self._io(chunk[0].split()[0]):
                self._send(*chunk)
                # Read every reply of the batch before yielding, so that a caller that
                # stops early never leaves the stream out of step.
                replies: list[tuple[int, bool, Body, str]] = []
                for i, command in enumerate(chunk, start):
                    ok, text = self._status(command.split()[0])
                    big = bool(sizes) and sizes[i] > Limits.spool_above()
                    body: Body = (read_multiline_into(self._client.file,
                                                      Spooled() if big else None)
                                  if ok and multiline else b"")
                    replies.append((i, ok, body, text))
            yield from replies
            start = end

    def _listing(self) -> dict[str, int]:
        """This session's UIDL -> message number map (and LIST sizes), read once."""
        if self._numbers is None:
            try:
                uidl_body = self._command("UIDL", multiline=True)
            except ProtocolError as e:
                # Say what the server answered: it may list UIDL in CAPA and still refuse.
                raise ProtocolError(f"{self.where}: {NO_UIDL} (UIDL answered: {e})") from None
            list_body = self._command("LIST", multiline=True)
            try:
                uidls = parse_listing(uidl_body, "UIDL")
                sizes = {n: int(v) for n, v in parse_listing(list_body, "LIST").items()}
            except ValueError as e:
                raise ProtocolError(f"{self.where}: {e}") from None
            self._sizes = sizes
            self._numbers = {u: n for u, n in unique_uidls(uidls).items() if n in sizes}
        return self._numbers

    def _number(self, ref: MessageRef) -> int | None:
        if ref.uid is not None or ref.uidl is None or ref.folder.upper() != INBOX:
            raise ProtocolError(f"{self.where}: not a POP3 message ref: {ref}")
        return self._listing().get(ref.uidl)

    # -- MailSession ----------------------------------------------------------------------

    def capabilities(self) -> frozenset[str]:
        return frozenset(self.capa)

    def list_folders(self) -> list[FolderInfo]:
        return [FolderInfo(INBOX)]

    def usage(self, folders: Sequence[FolderInfo] | None = None, *,
              counted: Mapping[str, int] | None = None) -> Usage:
        """``STAT``: octets and count, excluding messages DELE'd in this session."""
        count, octets = self._stat()
        return Usage(usage_bytes=octets, limit_bytes=None, source="sum", messages=count)

    def _stat(self) -> tuple[int, int]:
        with self._io("STAT"):
            self._send("STAT")
            ok, text = self._status("STAT")
        if not ok:
            raise ProtocolError(f"{self.where}: STAT failed: {text}")
        words = text.split()
        try:
            return int(words[1]), int(words[2])
        except (IndexError, ValueError):
            raise ProtocolError(f"{self.where}: malformed STAT reply {text!r}") from None

    def scan(self, folder: FolderInfo, *, with_sent: bool = True) -> FolderSnapshot:
        """Every message of the maildrop: UIDL, LIST size and, with ``with_sent``, TOP n 0.

        ``received`` is this session's opening time; the runner replaces it with the
        ledger's first-seen time (``Observations.first_seen`` keyed by UIDL).
        """
        if folder.name.upper() != INBOX:
            raise FolderSkipped(folder.name, "POP3 has only INBOX")
        numbers = self._listing()
        # Like the server's own listings, leave out what this session has DELE'd.
        order = sorted(
            ((u, n) for u, n in numbers.items() if n not in self._marked),
            key=lambda item: item[1],
        )
        headers: dict[int, tuple[datetime | None, str | None, str | None]] = {}
        if with_sent and order:
            headers = self._headers([n for _, n in order])
        messages = []
        for uidl, n in order:
            sent, date_raw, mid = headers.get(n, (None, None, None))
            messages.append(Message(
                ref=MessageRef(folder=INBOX, uidvalidity=0, uid=None, uidl=uidl),
                size=self._sizes[n], received=self.opened,
                sent=sent, date_header=date_raw, message_id=mid,
            ))
        return FolderSnapshot(info=folder, uidvalidity=0, messages=tuple(messages))

    def _headers(
        self, numbers: list[int]
    ) -> dict[int, tuple[datetime | None, str | None, str | None]]:
        out: dict[int, tuple[datetime | None, str | None, str | None]] = {}
        if self.capa and "TOP" not in self.capa:
            # TOP is optional (RFC 1939): without it every message has sent=None and the
            # sent clock falls back to first-seen.
            log.info("%s: no TOP: Date headers not read", self.where)
            return out
        refused: list[str] = []
        commands = [f"TOP {n} 0" for n in numbers]
        for i, ok, body, text in self._pipelined(commands, multiline=True):
            if ok:
                out[numbers[i]] = parse_headers(body if isinstance(body, bytes)
                                                else body.head(64 * 1024))
            else:
                refused.append(text)
        if refused:
            log.info("%s: TOP refused for %d message(s) (%s): no Date header for them",
                     self.where, len(refused), refused[0])
        return out

    def server_date(self) -> datetime | None:
        """The newest message's ``received_stamp`` (``TOP n 0`` of the highest message
        number), read-only: evidence of the server's clock for the account pass's clock
        check (review M10). None without TOP, messages, or a parseable stamp."""
        if self.capa and "TOP" not in self.capa:
            return None
        numbers = self._listing().values()
        if not numbers:
            return None
        try:
            raw = self._command(f"TOP {max(numbers)} 0", multiline=True)
        except ProtocolError:
            return None
        return received_stamp(raw)

    def message_ids(self, refs: Sequence[MessageRef]) -> dict[MessageRef, str | None]:
        """The Message-ID of each ref, read with ``TOP n 0`` (pipelined), read-only.

        A ref not in this session's listing, or DELE'd in it, maps to None, as does every
        ref when the server offers no TOP.
        """
        found: dict[MessageRef, str | None] = dict.fromkeys(refs)
        todo: dict[int, MessageRef] = {}
        for ref in found:
            n = self._number(ref)
            if n is not None and n not in self._marked:
                todo[n] = ref
        if todo:
            for n, (_sent, _raw, mid) in self._headers(sorted(todo)).items():
                found[todo[n]] = mid
        return found

    def fetch(
        self, refs: Sequence[MessageRef], *, skipped: dict[MessageRef, str] | None = None
    ) -> Iterator[tuple[MessageRef, Body]]:
        """The exact bytes of each message (``RETR``; ``TOP n <all>`` when read-only).

        A ref whose UIDL is not in this session's listing, or that was DELE'd in it, or that
        the server no longer finds, is not yielded. Nor is one whose bytes (dot-unstuffed)
        are not its LIST size: it is not whole (review F6); ``skipped`` gets the reason.
        """
        use_top = self.readonly or self.capa.get("EXPIRE", ("",))[:1] == ("0",)
        if use_top and "TOP" not in self.capa:
            raise ProtocolError(
                f"{self.where}: RETR would mark messages read (or, with EXPIRE 0, expire "
                "them) and the server offers no TOP"
            )
        todo: list[tuple[int, MessageRef]] = []
        for ref in dict.fromkeys(refs):
            n = self._number(ref)
            if n is not None and n not in self._marked:
                todo.append((n, ref))
        verb = "TOP" if use_top else "RETR"
        self._retrieved = self._retrieved or (verb == "RETR" and bool(todo))
        commands = [f"TOP {n} {_WHOLE}" if use_top else f"RETR {n}" for n, _ in todo]
        sizes = [self._sizes.get(n, 0) for n, _ in todo]
        for i, ok, data, text in self._pipelined(commands, multiline=True, sizes=sizes):
            n, ref = todo[i]
            if not ok:
                log.warning("%s: message %s not retrieved: %s", self.where, ref.uidl, text)
                if skipped is not None:
                    skipped[ref] = f"{verb} refused: {text}"
                continue
            problem = _not_whole(data, self._sizes.get(n))
            if problem is not None:
                log.warning("%s: message %s: %s", self.where, ref.uidl, problem)
                if skipped is not None:
                    skipped[ref] = problem
                continue
            yield ref, data

    def delete(
        self, refs: Sequence[MessageRef], *, protect: Protection | None = None,
        skipped: dict[MessageRef, str] | None = None,
    ) -> set[MessageRef]:
        """Mark exactly these messages with ``DELE``; they go only when ``commit()`` succeeds.

        Returns the refs marked (including any marked earlier in this session); a UIDL not
        in this session's listing is left out. Any ``-ERR`` raises ProtocolError: the caller
        then closes without committing, so nothing at all is deleted.
        """
        if self.readonly:
            raise ProtocolError(f"{self.where}: read-only session: DELE refused")
        todo: list[tuple[int, MessageRef]] = []
        already: set[MessageRef] = set()  # marked earlier in this session: still pending
        for ref in dict.fromkeys(refs):
            n = self._number(ref)
            if n is not None and n in self._marked:
                already.add(ref)
            elif n is not None:
                todo.append((n, ref))
        failed: list[str] = []
        for i, ok, _, text in self._pipelined([f"DELE {n}" for n, _ in todo], multiline=False):
            n, ref = todo[i]
            if ok:
                self._marked[n] = ref
            else:
                failed.append(f"{ref.uidl}: {text}")
        if failed:
            raise ProtocolError(
                f"{self.where}: DELE refused for {len(failed)} message(s) "
                f"(nothing committed): {failed[0]}"
            )
        return {ref for _, ref in todo} | already

    def move(
        self, refs: Sequence[MessageRef], to_folder: str, *, protect: Protection | None = None,
        skipped: dict[MessageRef, str] | None = None,
    ) -> set[MessageRef]:
        raise ProtocolError(f"{self.where}: POP3 has no folders: cannot move to {to_folder!r}")

    @property
    def pending(self) -> frozenset[MessageRef]:
        """Refs marked with DELE and not yet committed."""
        return frozenset(self._marked.values())

    def commit(self) -> None:
        """``QUIT``: the server removes the DELE'd messages. The session is closed after.

        Raises ConnectError when the connection was lost before or during QUIT, and
        ProtocolError on ``-ERR``: then the deletions are not confirmed (RFC 1939: none, or
        for some servers some, were made) and the next run's listing tells which.
        """
        if self.readonly:
            self.close()  # nothing can be pending; never QUIT a read-only session
            return
        pending = len(self._marked)
        if self._broken or self._closed:
            self.close()
            raise ConnectError(
                f"{self.where}: connection lost before QUIT: none of the {pending} "
                "deletion(s) was committed"
            )
        try:
            with self._io("QUIT"):
                self._send("QUIT")
                ok, text = self._status("QUIT")
        except ConnectError:
            self.close()
            raise ConnectError(
                f"{self.where}: connection lost during QUIT: the {pending} deletion(s) are "
                "not confirmed; the next run checks which messages are still there"
            ) from None
        self._closed = True
        _drop(self._client)
        if not ok:
            raise ProtocolError(
                f"{self.where}: QUIT failed ({text}): the {pending} deletion(s) are not "
                "confirmed; the next run checks which messages are still there"
            )
        self._marked.clear()

    def close(self) -> None:
        """End without committing: ``RSET`` (best effort), then drop the connection, no QUIT.

        RSET unmarks the DELEs and, on Dovecot, the ``\\Seen`` flags RETR would otherwise
        set even on a dropped session; dropping without QUIT commits no deletion anyway.
        """
        if self._closed:
            return
        self._closed = True
        if (self._marked or self._retrieved) and not self._broken:
            try:
                self._send("RSET")
                self._status("RSET")
            except (OSError, EOFError, ProtocolError):
                pass  # dropping without QUIT commits nothing either way
        self._marked.clear()
        _drop(self._client)

    def __enter__(self) -> Pop3Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drop(client: poplib.POP3) -> None:
    """Close the socket without QUIT (RFC 1939 section 6: nothing is committed)."""
    try:
        client.sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        client.close()
    except OSError:
        pass

