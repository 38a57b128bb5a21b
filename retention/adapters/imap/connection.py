"""The IMAP connection under ``ImapSession``: connecting, TLS, login, errors, selection.

This module owns everything about one imapclient connection that is not a mailbox
operation: opening it with the account's security (implicit TLS, STARTTLS without any
plaintext fallback, or plaintext only with ``allow_plaintext``), logging in without the
password ever reaching a message or a log, mapping every failure to the typed errors of
``retention.errors``, selecting folders (``EXAMINE`` for reading, ``SELECT`` only to act,
UIDVALIDITY re-checked) and leaving them with ``UNSELECT`` (never ``CLOSE``), the folder
name map, and a per-command counter that tests use to bound round trips.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import logging
import re
import socket
import ssl
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from imapclient.exceptions import LoginError

from retention.adapters.deadline import COMMAND_FACTOR, Watchdog, io_timeout
from retention.adapters.imap.fetch import parse_fetch
from retention.adapters.imap.greeting import ImapClient
from retention.adapters.imap.namespaces import (
    Namespaces,
    namespace_reply,
    parse_namespaces,
    virtual_prefix,
)
from retention.adapters.imap.pipeline import Reply
from retention.adapters.imap.wire import (
    compress_uids,
    display_name,
    expand_uid_set,
    one_line,
    prefixed_name,
    relative_name,
    reply_text,
    selectable,
    server_name,
    special_uses,
)
from retention.adapters.tls import classify_ssl_error, make_context
from retention.auth.sasl import challenge_status
from retention.config.secrets import redact, secret_forms
from retention.errors import (
    AccountError,
    AuthError,
    ConnectError,
    FolderSkipped,
    ProtocolError,
    Throttled,
    TlsError,
    UidValidityChanged,
)
from retention.model import FolderInfo, MailProtocol, Namespace

if TYPE_CHECKING:
    from retention.adapters import SaslLogin
    from retention.config.schema import Connection

log = logging.getLogger("retention.imap")

# imaplib refuses response lines over 1 MB; a plain "UID SEARCH ALL" answer for a
# 200,000-message folder is larger. ESEARCH answers are compact, but not every server
# has it: allow lines up to 64 MB (still a bound against a runaway server).
_MAX_LINE = 64 * 1024 * 1024
if getattr(imaplib, "_MAXLINE", 0) < _MAX_LINE:
    imaplib._MAXLINE = _MAX_LINE  # type: ignore[attr-defined]


def default_port(conn: Connection) -> int:
    """The IMAP port of ``conn`` (``Connection.port_for`` owns the defaults)."""
    return conn.port_for("imap")


def open_client(conn: Connection, password: str | SaslLogin, label: str) -> Any:
    """A logged-in ``IMAPClient`` for ``conn`` (normalise_times off, tz-aware dates)."""
    if conn.security == "none" and not conn.allow_plaintext:
        # Policy validation rejects this already; an adapter never trusts that alone.
        raise TlsError(
            f"{label}: security: none would send the password in clear text "
            "(allow_plaintext: true is not set)"
        )
    ctx = make_context(conn.ca_file, conn.tls_verify) if conn.security != "none" else None
    timeout = io_timeout(conn)
    log.debug("connecting to %s (security %s)", label, conn.security)
    try:
        client = ImapClient(
            conn.host, port=default_port(conn), ssl=conn.security == "tls",
            ssl_context=ctx, timeout=timeout,
        )
    except ssl.SSLError as exc:
        raise classify_ssl_error(exc, label) from None
    except TimeoutError:
        after = f" after {timeout:g}s" if timeout else ""
        raise ConnectError(f"{label}: timed out{after} (connect or greeting)") from None
    except ConnectionRefusedError:
        raise ConnectError(f"{label}: connection refused") from None
    except socket.gaierror as exc:
        raise ConnectError(f"{label}: cannot resolve host: {exc.strerror or exc}") from None
    except OSError as exc:
        raise ConnectError(f"{label}: cannot connect: {exc.strerror or exc}") from None
    except imaplib.IMAP4.error as exc:
        raise ConnectError(f"{label}: unexpected greeting: {reply_text(exc)}") from None
    try:
        client.normalise_times = False  # tz-aware INTERNALDATE (never local-time naive)
        # imaplib's own line tracing costs a format per line even when nobody listens.
        client._imap.debug = 0
        if conn.security == "starttls":
            _starttls(client, ctx, label)
        if isinstance(password, str):
            _login(client, *conn.login_names(), password=password, label=label)
        else:
            sasl_login(client, password, label, conn.host, default_port(conn))
    except BaseException:
        with contextlib.suppress(Exception):
            client.shutdown()
        raise
    return client


def _starttls(client: Any, ctx: ssl.SSLContext | None, label: str) -> None:
    caps = {bytes(c).upper() for c in client.capabilities()}
    if b"STARTTLS" not in caps:
        raise TlsError(
            f"{label}: the server does not offer STARTTLS; refusing to log in without TLS"
        )
    try:
        client.starttls(ctx)
    except ssl.SSLError as exc:
        raise classify_ssl_error(exc, label) from None
    except imaplib.IMAP4.error as exc:
        raise TlsError(f"{label}: STARTTLS failed: {reply_text(exc)}") from None
    except OSError as exc:
        raise TlsError(f"{label}: STARTTLS failed: {exc.strerror or exc}") from None
    _forget_plaintext(client, label)


def _forget_plaintext(client: Any, label: str) -> None:
    """A clean start after STARTTLS (RFC 3501 6.2.1, RFC 2595 3.1): nothing the peer said
    before TLS is believed.

    imaplib keeps every untagged response until a SELECT, and imapclient caches the
    capabilities: a ``* LIST (\\Junk) "/" INBOX`` or ``* QUOTA`` an on-path attacker
    slipped into the plaintext greeting would otherwise reach ``list_folders`` and
    ``usage`` after login (review F1). So the queue and the caches are dropped and
    CAPABILITY is asked again, over TLS.
    """
    client._imap.untagged_responses.clear()
    client._cached_capabilities = None
    try:
        caps = client.capabilities()  # NONAUTH after STARTTLS: imapclient asks the server
    except (imaplib.IMAP4.error, OSError) as exc:
        raise TlsError(f"{label}: CAPABILITY after STARTTLS failed: {reply_text(exc)}") from None
    client._imap.capabilities = tuple(
        (c.decode("ascii", "replace") if isinstance(c, bytes) else str(c)).upper() for c in caps
    )


def _login(
    client: Any, username: str, authzid: str | None, *, password: str, label: str
) -> None:
    # A server that echoes our command back would show the password as LOGIN quotes it
    # (RFC 3501 quoted string) or as AUTHENTICATE PLAIN's base64: scrub those forms too.
    secrets = secret_forms(password, username)
    if authzid is not None:
        secrets.append(base64.b64encode(f"{authzid}\0{username}\0{password}".encode()).decode())
    try:
        if authzid is not None:
            # login_as: authzid (Dovecot master user, Cyrus admin): SASL PLAIN with an
            # authorization identity; the session then has the target user's rights.
            client.plain_login(username, password, authorization_identity=authzid)
        elif not (username.isascii() and password.isascii()):
            # LOGIN's quoted strings are 7-bit in imaplib; SASL PLAIN carries UTF-8.
            client.plain_login(username, password)
        else:
            client.login(username, password)
    except LoginError as exc:
        text = redact(reply_text(exc), secrets)
        if isinstance(exc.__context__, imaplib.IMAP4.abort | OSError):
            # imapclient turns every failure of LOGIN into LoginError, a dropped
            # connection included: that one is retryable, not a rejected password.
            raise ConnectError(f"{label}: connection lost during login: {text}") from None
        raise AuthError(f"{label}: login as {username} rejected: {text}") from None
    except imaplib.IMAP4.abort as exc:
        text = redact(reply_text(exc), secrets)
        raise ConnectError(f"{label}: connection lost during login: {text}") from None
    except ssl.SSLError as exc:
        raise ConnectError(f"{label}: TLS error during login: {exc.reason or 'unknown'}") from None
    except OSError as exc:
        reason = exc.strerror or exc
        raise ConnectError(f"{label}: connection lost during login: {reason}") from None
    # RFC 3501 6.2.3: the capabilities may differ after login. A CAPABILITY code in the
    # tagged OK (over TLS, or plaintext by choice) stays queued for ``capabilities()``;
    # without one it asks again: nothing cached from before login is used.
    client._cached_capabilities = None
    log.debug("%s: logged in as %s", label, username)


# Response codes and texts that mean "slow down", not "wrong credentials" (RFC 5530
# UNAVAILABLE; Gmail's bandwidth/connection limits; Exchange Online's throttling).
_THROTTLED = re.compile(
    r"\[(UNAVAILABLE|THROTTLED|LIMIT|INUSE)\]|too many (simultaneous )?connections"
    r"|exceeded command or bandwidth limits|throttl", re.IGNORECASE,
)


def throttled(text: str) -> bool:
    """Whether a server's refusal says "slow down" (retry later) rather than "no"."""
    return bool(_THROTTLED.search(text))


def sasl_login(client: Any, login: SaslLogin, label: str, host: str, port: int) -> None:
    """AUTHENTICATE with the mechanism ``login`` picks from the server's ``AUTH=`` list.

    After a refusal, XOAUTH2 and OAUTHBEARER servers send a JSON error as a challenge that
    must be answered (empty; OAUTHBEARER: ``^A``) before the final NO: its ``status`` is
    kept for the message, nothing else of it.
    """
    caps = {bytes(c).decode("ascii", "replace").upper() for c in client.capabilities()}
    offered = [c[5:] for c in caps if c.startswith("AUTH=")]
    mech = login.choose(offered)
    if mech is None:
        raise AuthError(
            f"{label}: the server offers no SASL mechanism for {login.describe()} "
            f"(AUTH={', '.join(sorted(offered)) or 'none'})"
        )
    first = login.initial_response(mech, host, port)
    statuses: list[str] = []

    def respond(challenge: bytes) -> bytes:
        if not statuses and not challenge:
            statuses.append("")
            return first
        status = challenge_status(challenge)
        statuses.append(status or "")
        return b"\x01" if mech == "OAUTHBEARER" else b""

    secrets = login.secrets()
    try:
        client._command_and_check("authenticate", mech, respond)
    except (imaplib.IMAP4.abort, OSError) as exc:
        text = redact(str(exc), secrets)
        raise ConnectError(f"{label}: connection lost during AUTHENTICATE {mech}: {text}") \
            from None
    except Exception as exc:  # noqa: BLE001 - imapclient/imaplib NO and BAD
        text = redact(reply_text(exc), secrets)
        status = next((s for s in statuses[1:] if s), None)
        why = f"{text} (status {status})" if status else text
        if throttled(text):
            raise Throttled(f"{label}: login throttled by the server: {why}") from None
        raise AuthError(
            f"{label}: {login.describe()} login as {login.username} ({mech}) rejected: {why}"
        ) from None
    with contextlib.suppress(Exception):
        client._cached_capabilities = None  # they may differ after login (RFC 3501 6.2.2)
    log.debug("%s: logged in as %s with %s", label, login.username, mech)


class ImapConnection:
    """State shared by the mailbox operations of ``ImapSession`` (see its docstring)."""

    protocol: MailProtocol = "imap"

    def __init__(self, client: Any, *, readonly: bool, label: str, timeout: float | None) -> None:
        self._client = client
        self.readonly = readonly
        self.label = label
        self._timeout = timeout
        #: Commands sent, by name ("UID FETCH": 21): tests bound round trips with it.
        self.commands: Counter[str] = Counter()
        self._caps: frozenset[str] | None = None
        self._names: dict[str, str] | None = None  # agent name -> server name (decoded)
        self._folders: list[FolderInfo] | None = None
        self._namespaces: Namespaces | None = None
        #: A pipelined NAMESPACE's reply, judged by ``namespaces()`` when first needed.
        self.namespace_answer: Reply | None = None
        #: The account's ``virtual_prefixes`` (set by ``ImapSession.connect``).
        self.virtual_prefixes: tuple[str, ...] = ()
        self._delimiter: str | None = "/"
        self._selected: tuple[str, bool] | None = None  # (server name, readonly)
        #: HIGHESTMODSEQ of the last SELECT/EXAMINE (RFC 7162), None when not offered.
        self.selected_modseq: int | None = None
        self._qresync = False  # ENABLE QRESYNC done in this session
        self._existing: set[str] = set()  # server names known to exist (ensure_folder)
        self._broken = False
        self._closed = False
        #: ``auto`` (detect), ``gmail``, ``exchange`` or ``generic`` (the account's
        #: ``provider`` key; set by ``ImapSession.connect``).
        self.provider_hint = "auto"
        self.greeting = b""
        # A whole command's answer must arrive by a deadline, not only each read (M3).
        self._watchdog = Watchdog(lambda: getattr(client._imap, "sock", None),
                                  COMMAND_FACTOR * (timeout or 30.0))

    # -- the provider ----------------------------------------------------------------

    @property
    def provider(self) -> str:
        """``gmail`` (``X-GM-EXT-1``), ``exchange`` (its greeting) or ``generic``."""
        if self.provider_hint != "auto":
            return self.provider_hint
        if self.has("X-GM-EXT-1"):
            return "gmail"
        if b"Microsoft Exchange" in self.greeting:
            return "exchange"
        return "generic"

    @property
    def labels(self) -> bool:
        """Folders are labels of one stored message (Gmail): delete = Trash, then expunge."""
        return self.provider == "gmail"

    def global_id_item(self) -> str | None:
        """The FETCH item naming a message across folders, when folders are labels.

        ``X-GM-MSGID`` on Gmail, RFC 8474 ``EMAILID`` where offered, else Dovecot's
        ``X-GUID`` (kept by COPY: how a Dovecot set up like Gmail is tested).
        """
        if not self.labels:
            return None
        if self.has("X-GM-EXT-1"):
            return "X-GM-MSGID"
        if self.has("OBJECTID"):
            return "EMAILID"
        return "X-GUID"

    # -- errors ----------------------------------------------------------------------

    @contextmanager
    def guard(self, what: str, *, counts: Sequence[str] | None = None) -> Iterator[None]:
        """Run one command; map whatever fails to the typed errors (one line, no secret).

        ``counts``: the commands counted (default ``what``): a pipelined write
        (``pipeline``) counts each command it carries.
        """
        if self._closed:
            raise ConnectError(f"{self.label}: the session is closed")
        if self._broken:
            raise ConnectError(f"{self.label}: the connection was lost earlier in this session")
        self.commands.update(counts if counts is not None else [what])
        log.debug("%s: %s", self.label, what)
        where = f"{self.label}: "
        try:
            with self._guarded(what), self._watchdog.command():
                yield
        except BaseException as exc:
            if self._watchdog.expired and not isinstance(exc, FolderSkipped):
                self._broken = True
                raise ConnectError(
                    f"{where}no complete answer to {what} within "
                    f"{self._watchdog.limit:g}s (the server stalls or trickles)"
                ) from exc
            raise

    @contextmanager
    def _guarded(self, what: str) -> Iterator[None]:
        where = f"{self.label}: "
        try:
            yield
        except (AccountError, FolderSkipped):
            raise
        except imaplib.IMAP4.readonly as exc:  # before abort: readonly subclasses it
            raise ProtocolError(f"{where}{what} refused: read-only ({reply_text(exc)})") from exc
        except imaplib.IMAP4.abort as exc:
            self._broken = True
            text = reply_text(exc)
            if throttled(text):  # Exchange: "BYE ... throttled"; Gmail: bandwidth limits
                raise Throttled(f"{where}{what}: throttled by the server: {text}") from exc
            raise ConnectError(f"{where}connection lost during {what}: {text}") from exc
        except imaplib.IMAP4.error as exc:  # NO / BAD, and imapclient's own errors
            raise self.refusal(what, reply_text(exc)) from exc
        except ssl.SSLError as exc:
            self._broken = True
            raise ConnectError(f"{where}TLS error during {what}: {exc.reason or exc}") from exc
        except TimeoutError as exc:
            self._broken = True
            after = f" within {self._timeout:g}s" if self._timeout else ""
            raise ConnectError(f"{where}no answer{after} to {what}") from exc
        except OSError as exc:
            self._broken = True
            reason = exc.strerror or exc
            raise ConnectError(f"{where}connection lost during {what}: {reason}") from exc

    def refusal(self, what: str, text: str) -> Throttled | ProtocolError:
        """The typed error of a NO or BAD to ``what`` (server words ``text``): Throttled
        when they say "slow down", else ProtocolError. ``guard`` raises it for a refusal
        imaplib raised, a pipelined command's caller for a ``Reply``."""
        text = one_line(text)
        if throttled(text):
            return Throttled(f"{self.label}: {what}: throttled by the server: {text}")
        return ProtocolError(f"{self.label}: {what} failed: {text}")

    def _untagged(self) -> dict[str, list[Any]]:
        return self._client._imap.untagged_responses  # type: ignore[no-any-return]

    def _drain(self) -> None:
        """Forget untagged replies (EXPUNGE, FETCH of STORE...): imaplib keeps them forever."""
        self._untagged().clear()

    # -- capabilities and folders ----------------------------------------------------

    def capabilities(self) -> frozenset[str]:
        if self._caps is None:
            with self.guard("CAPABILITY"):
                raw = self._client.capabilities()
            self._caps = frozenset(
                (c.decode("ascii", "replace") if isinstance(c, bytes) else str(c)).upper()
                for c in raw
            )
        return self._caps

    def has(self, capability: str) -> bool:
        return capability.upper() in self.capabilities()

    def namespaces(self) -> Namespaces:
        """``NAMESPACE`` (RFC 2342) when advertised, once a session (review F2).

        Without it, or when the server refuses it, every folder counts as the user's own.
        A reply already read (``namespace_answer``, from a pipelined NAMESPACE) is judged
        here as the command's own would be: same warning, same errors.
        """
        if self._namespaces is None:
            reply = None
            if self.has("NAMESPACE"):
                try:
                    reply = self._namespace_reply()
                except ProtocolError as exc:
                    log.warning("%s: %s: every folder counts as the user's own",
                                self.label, exc)
                finally:
                    self._drain()
            self._namespaces = parse_namespaces(reply)
        return self._namespaces

    def _namespace_reply(self) -> Any:
        answer, self.namespace_answer = self.namespace_answer, None
        if answer is None:
            with self.guard("NAMESPACE"):
                return self._client.namespace()
        if not answer.ok:
            raise self.refusal("NAMESPACE", f"{answer.status} {answer.text}")
        with self._guarded("NAMESPACE"):  # a garbled reply: as imapclient's parse would
            return namespace_reply(answer.data.get("NAMESPACE"))

    def namespace_of(self, name: str, shown: str | None = None) -> Namespace:
        """The namespace of decoded server name ``name`` (agent name ``shown``): what
        NAMESPACE says, or the account's ``virtual_prefixes`` where it says nothing."""
        found = self.namespaces().classify(name)
        if not self.virtual_prefixes or not found.own:
            return found
        if shown is None:
            if self._names is None:
                self.list_folders()  # the delimiter
            shown = display_name(relative_name(
                name, self.namespaces().inbox_level_prefix(), self._delimiter), self._delimiter)
        prefix = virtual_prefix(shown, self.virtual_prefixes)
        return found if prefix is None else Namespace("personal", prefix, inbox=False)

    def list_folders(self) -> list[FolderInfo]:
        """``LIST "" "*"`` -> decoded names with ``/`` levels, special-use attributes and
        the namespace each lies in (``namespace_of``)."""
        spaces = self.namespaces()
        with self.guard("LIST"):
            rows = self._client.list_folders()
        if self.has("SPECIAL-USE") and not any(special_uses(r[0]) for r in rows):
            rows = self._with_special_use_return(rows)
        infos: list[FolderInfo] = []
        names: dict[str, str] = {}
        delimiters: list[str] = []
        # Cyrus (altnamespace: no), Courier: the user's folders are under "INBOX.".
        prefix = spaces.inbox_level_prefix()
        clashes: set[str] = set()
        for flags, delim, raw_name in rows:
            name = raw_name if isinstance(raw_name, str) else _text(raw_name)
            delimiter = _text(delim) if delim else None
            if delimiter:
                delimiters.append(delimiter)
            usable = selectable(flags)
            if _SURROGATE.search(name):
                # Invalid modified UTF-7 (a lone surrogate, "&2D0-"): it cannot be sent
                # back to the server nor stored, so it is listed but never selected.
                name = _SURROGATE.sub("\ufffd", name)
                log.warning("%s: folder %r has an invalid modified UTF-7 name: not touched",
                            self.label, name)
                usable = False
                shown = display_name(name, delimiter)
            else:
                shown = display_name(relative_name(name, prefix, delimiter), delimiter)
                if shown in names and names[shown] != name:
                    # Two server names shown alike ("a/b" inside one level vs a real
                    # U+2215): which one a rule means is unknowable, so neither is touched.
                    log.warning("%s: folders %r and %r look alike: neither is touched",
                                self.label, names[shown], name)
                    clashes.add(shown)
                names[shown] = name
            infos.append(FolderInfo(shown, special_uses(flags), usable, "/",
                                    self.namespace_of(name, shown)))
        if clashes:
            infos = [replace(i, selectable=False) if i.name in clashes else i for i in infos]
        self._delimiter = delimiters[0] if delimiters else None
        self._names = names
        self._folders = infos
        return list(infos)

    def _with_special_use_return(self, rows: list[Any]) -> list[Any]:
        """RFC 6154: some servers give special-use attributes only on request."""
        if not self.has("LIST-EXTENDED"):
            return rows
        with self.guard("LIST RETURN (SPECIAL-USE)"):
            imap = self._client._imap
            typ, data = imap._simple_command("LIST", '""', '"*"', "RETURN", "(SPECIAL-USE)")
            typ, data = imap._untagged_response(typ, data, "LIST")
            if typ != "OK":
                return rows
            extended = self._client._proc_folder_list(data)
        return extended if extended else rows

    def folders(self) -> list[FolderInfo]:
        return list(self._folders) if self._folders is not None else self.list_folders()

    def server(self, name: str) -> str:
        """The server's (decoded) name of an agent folder name, listed or not."""
        if self._names is None and _key(name) == "INBOX":
            # INBOX is INBOX on every server, in any case (RFC 3501 5.1): no LIST needed,
            # so that it can be a session's first mailbox (on Dovecot with its list index,
            # an EXAMINE after a LIST costs a 200,000-message INBOX 0.15 s more).
            return "INBOX"
        if self._names is None:
            self.list_folders()
        assert self._names is not None
        if name in self._names:
            return self._names[name]
        wanted = _key(name)
        for shown, real in self._names.items():
            if _key(shown) == wanted:
                return real
        real = server_name(name, self._delimiter)
        if _key(name) == "INBOX":
            return real
        # A folder to create goes under the user's own prefix (Cyrus refuses one outside).
        return prefixed_name(real, self.namespaces().inbox_level_prefix())

    def resolve(self, name: str) -> str:
        """A special-use attribute (``\\Trash``) or a name -> the agent name of the folder
        (an attribute: the user's own folder having it, never another user's)."""
        if not name.startswith("\\"):
            return name
        for info in self.folders():
            if info.namespace.own and any(u.lower() == name.lower() for u in info.special_use):
                return info.name
        raise ProtocolError(f"{self.label}: the server has no {name} folder")

    # -- selection -------------------------------------------------------------------

    def select(self, folder: str, *, readonly: bool, expect: int | None = None) -> tuple[int, int]:
        """EXAMINE (readonly) or SELECT ``folder``; (UIDVALIDITY, EXISTS).

        ``expect``: the UIDVALIDITY the caller's refs were read under; a different one
        raises ``UidValidityChanged`` before anything is done.
        """
        if not readonly and self.readonly:
            raise ProtocolError(f"{self.label}: read-only session: refusing to SELECT {folder}")
        real = self.server(folder)
        verb = "EXAMINE" if readonly else "SELECT"
        try:
            with self.guard(verb):
                self._selected = None
                resp = self._client.select_folder(real, readonly=readonly)
        except ProtocolError as exc:
            if "NONEXISTENT" in str(exc).upper() or "DOESN'T EXIST" in str(exc).upper():
                raise FolderSkipped(folder, "the folder no longer exists") from None
            raise
        self._selected = (real, readonly)
        self._drain()
        modseq = resp.get(b"HIGHESTMODSEQ")
        self.selected_modseq = modseq if isinstance(modseq, int) else None
        validity = resp.get(b"UIDVALIDITY")
        if validity is None:
            self.leave(quiet=True)
            raise ProtocolError(f"{self.label}: {verb} {folder}: no UIDVALIDITY in the reply")
        if not readonly and b"READ-WRITE" not in resp:
            self.leave(quiet=True)
            raise ProtocolError(f"{self.label}: {folder} is read-only on the server")
        if expect is not None and int(validity) != expect:
            self.leave(quiet=True)
            raise UidValidityChanged(
                folder, f"UIDVALIDITY changed from {expect} to {validity} (the folder was "
                "recreated); its planned actions are skipped",
            )
        return int(validity), int(resp.get(b"EXISTS", 0))

    def leave(self, *, quiet: bool = False) -> None:
        """Deselect without expunging: ``UNSELECT`` (RFC 3691), never ``CLOSE``.

        Without UNSELECT a read-write folder is re-opened with EXAMINE: it stays selected,
        but read-only, so nothing can expunge it implicitly.
        """
        if self._selected is None or self._broken or self._closed:
            self._selected = None
            return
        real, readonly = self._selected
        try:
            if self.has("UNSELECT"):
                with self.guard("UNSELECT"):
                    # imaplib's unselect(), not a bare command: it also puts imaplib's own
                    # state back to AUTH, or a later ENABLE is refused as "illegal in state
                    # SELECTED" before it is sent.
                    typ, data = self._client._imap.unselect()
                    if typ != "OK":
                        raise imaplib.IMAP4.error(f"UNSELECT command error: {typ} {data!r}")
            elif not readonly:
                with self.guard("EXAMINE"):
                    self._client.select_folder(real, readonly=True)
            self._selected = None
            self._drain()
        except AccountError:
            if not quiet:
                raise

    def ensure_selected(self, folder: str, readonly: bool, expect: int) -> None:
        """Re-open ``folder`` when something else changed the selection (between yields)."""
        real = self.server(folder)
        if self._selected is None or self._selected[0] != real or self._selected[1] != readonly:
            self.select(folder, readonly=readonly, expect=expect)

    def enable_qresync(self) -> bool:
        """``ENABLE QRESYNC`` once (RFC 7162): EXAMINE then reports HIGHESTMODSEQ and
        ``UID FETCH ... (CHANGEDSINCE n VANISHED)`` works. False when not offered."""
        if self._qresync:
            return True
        if not (self.has("QRESYNC") and self.has("ENABLE")):
            return False
        with self.guard("ENABLE"):
            typ, _data = self._client._imap._simple_command("ENABLE", "QRESYNC")
        self._drain()
        self._qresync = typ == "OK"
        return self._qresync

    # -- searching -------------------------------------------------------------------

    def search_all(self) -> list[int]:
        """Every UID of the selected folder, in one round trip (ESEARCH: compact)."""
        return self.search_uids("ALL")

    def search_uids(self, *criteria: str) -> list[int]:
        imap = self._client._imap
        if self.has("ESEARCH"):
            with self.guard("UID SEARCH"):
                imap.untagged_responses.pop("ESEARCH", None)
                typ, data = imap.uid("SEARCH", "RETURN", "(ALL)", *criteria)
                if typ != "OK":
                    raise imaplib.IMAP4.error(f"SEARCH command error: {typ} {data!r}")
                lines = imap.untagged_responses.pop("ESEARCH", [])
            uids: list[int] = []
            for line in lines:
                m = re.search(rb"\bALL\s+([0-9:,]+)", bytes(line))
                if m:
                    uids.extend(expand_uid_set(m.group(1).decode("ascii")))
            return sorted(set(uids))
        with self.guard("UID SEARCH"):
            found = self._client.search([c.encode("ascii") for c in criteria])
        return sorted(int(u) for u in found)

    def present(self, uids: Sequence[int]) -> list[int]:
        """Which of ``uids`` exist in the selected folder (``UID SEARCH UID set``)."""
        if not uids:
            return []
        wanted = set(uids)
        return [u for u in self.search_uids("UID", compress_uids(uids)) if u in wanted]

    def _fetch(self, batch: Sequence[int], items: list[str]) -> dict[int, dict[bytes, Any]]:
        """One ``UID FETCH`` of a batch (its set compressed) -> ``{uid: {item: value}}``.

        Parsed by ``imap_fetch.parse_fetch``, which never lets an unsolicited FETCH about
        another message change the data of a requested one. Only the requested UIDs are
        returned: an unsolicited FETCH that carries the UID of a message we did not ask
        about (another client's flag change, RFC 3501 7.4.2) is not an answer, so no caller
        counts it, fetches its body or looks up a ref for it.
        """
        with self.guard("UID FETCH"):
            imap = self._client._imap
            typ, data = imap.uid("FETCH", compress_uids(batch), "(" + " ".join(items) + ")")
            if typ != "OK":
                raise imaplib.IMAP4.error(f"FETCH command error: {typ} {data!r}")
            result = parse_fetch(data)
        self._drain()
        wanted = set(batch)
        if len(result) > len(wanted) or not wanted.issuperset(result):
            result = {uid: fields for uid, fields in result.items() if uid in wanted}
        return result

    # -- closing ---------------------------------------------------------------------

    def close(self) -> None:
        """LOGOUT; errors swallowed; idempotent. Nothing is pending on IMAP."""
        if self._closed:
            return
        self._closed = True
        self._watchdog.close()
        client = self._client
        try:
            if self._broken:
                client.shutdown()
            else:
                client.logout()
        except Exception:  # noqa: BLE001 - a dead connection is closed either way
            with contextlib.suppress(Exception):
                client.shutdown()
        log.debug("%s: closed (%s)", self.label, dict(self.commands))


_SURROGATE = re.compile("[\ud800-\udfff]")


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _key(name: str) -> str:
    name = unicodedata.normalize("NFC", name)
    head, sep, rest = name.partition("/")
    return (head.upper() if head.upper() == "INBOX" else head) + sep + rest
