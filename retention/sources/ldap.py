"""Reading account entries from an LDAP directory: a paged subtree search, streamed.

This module owns the LDAP I/O of a source: connecting (``ldaps://``, or ``ldap://`` with
StartTLS, or plain ``ldap://`` only with ``allow_plaintext``), binding, and a search under
``base`` with ``filter`` in pages of ``page_size`` entries (the RFC 2696 simple paged
results control), so a directory of a million users is never held in memory. Each entry
becomes a mapping of the requested attribute names (as the settings spell them, whatever
case the server answers in) to their values, plus ``dn``. The username, name and policy
attributes are always one string (the first value); any other attribute with several
values (``memberOf``, ``ou``) is a tuple of strings, so ``policy_by`` can match any value.

Library: python-ldap (the maintained binding of OpenLDAP's libldap, used by
django-auth-ldap; ldap3 is pure Python but has had no release since 2021). TLS is then
libldap's: certificates and the host name are always checked unless ``tls_verify: false``,
TLS 1.2 is the minimum, and ``ca_file`` replaces the system trust (``TLS_CACERT`` in
``ldap.conf``) for this source only.

Errors are ``SourceError`` with the kind of failure; they are built from the server's
diagnostic and the URL, never from the bind password.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from retention.config.secrets import read_secret
from retention.errors import SecretError, SourceError
from retention.sources.extras import require

#: The value of an entry's attribute: one string, or several for a multi-valued one.
Value = str | tuple[str, ...]

_PAGED_OID = "1.2.840.113556.1.4.319"
_TLS1_2 = 0x0303  # LDAP_OPT_X_TLS_PROTOCOL_TLS1_2


class LdapAttributeSettings(Protocol):
    """Which attribute is the username, the account name and the policy name."""

    @property
    def username(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def policy(self) -> str | None: ...


class LdapSettings(Protocol):
    """What the reader needs of an ``ldap`` source (``config.sources.LdapSource``)."""

    @property
    def name(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def bind_dn(self) -> str | None: ...
    @property
    def bind_password_env(self) -> str | None: ...
    @property
    def bind_password_file(self) -> Path | None: ...
    @property
    def base(self) -> str: ...
    @property
    def filter(self) -> str: ...
    @property
    def attributes(self) -> LdapAttributeSettings: ...
    @property
    def starttls(self) -> bool: ...
    @property
    def ca_file(self) -> Path | None: ...
    @property
    def tls_verify(self) -> bool: ...
    @property
    def allow_plaintext(self) -> bool: ...
    @property
    def page_size(self) -> int: ...
    @property
    def timeout(self) -> timedelta: ...

    def wanted_attributes(self) -> list[str]: ...


def entries(settings: LdapSettings) -> Iterator[Mapping[str, Value]]:
    """Every entry the search finds, one page in memory at a time.

    Raises:
        SourceError: the URL, TLS, bind or search failed (also while iterating).
    """
    wanted = settings.wanted_attributes()
    conn = _connect(settings)
    try:
        for page, _more in _pages(conn, settings, wanted):
            yield from page
    finally:
        _unbind(conn)


def probe(settings: LdapSettings) -> int | None:
    """Connect, bind and read the first page; the entry count if that page was the last.

    LDAP has no cheap count of a search, so a directory bigger than one page gives None.
    """
    wanted = settings.wanted_attributes()
    conn = _connect(settings)
    try:
        first, more = next(_pages(conn, settings, wanted))
        return None if more else len(first)
    finally:
        _unbind(conn)


# -- connection -------------------------------------------------------------------


def _connect(settings: LdapSettings) -> Any:
    require("ldap", "ldap", settings.name)
    import ldap

    plain = settings.url.lower().startswith("ldap://") and not settings.starttls
    if plain and settings.bind_dn is not None and not settings.allow_plaintext:
        raise SourceError(settings.name, "config", (
            f"{settings.url} without starttls sends the bind password in clear text; "
            "use ldaps://, starttls: true, or allow_plaintext: true"))
    password = _password(settings)
    seconds = max(1.0, settings.timeout.total_seconds())
    try:
        conn = ldap.initialize(settings.url)
    except ldap.LDAPError as exc:
        raise SourceError(settings.name, "config", f"bad url {settings.url}: "
                          f"{_describe(exc)}") from None
    conn.set_option(ldap.OPT_PROTOCOL_VERSION, 3)
    conn.set_option(ldap.OPT_REFERRALS, 0)  # never chase a referral with our bind password
    conn.set_option(ldap.OPT_NETWORK_TIMEOUT, seconds)
    conn.set_option(ldap.OPT_TIMEOUT, seconds)
    # Explicit per connection, so an ~/.ldaprc or ldap.conf saying TLS_REQCERT never
    # cannot turn verification off behind the policy's back.
    conn.set_option(
        ldap.OPT_X_TLS_REQUIRE_CERT,
        ldap.OPT_X_TLS_DEMAND if settings.tls_verify else ldap.OPT_X_TLS_NEVER,
    )
    conn.set_option(ldap.OPT_X_TLS_PROTOCOL_MIN, _TLS1_2)
    if settings.ca_file is not None:
        if not settings.ca_file.is_file():
            raise SourceError(settings.name, "tls", f"cannot read ca_file {settings.ca_file}")
        conn.set_option(ldap.OPT_X_TLS_CACERTFILE, str(settings.ca_file))
    conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)  # last: builds the TLS context from the above
    during = "starttls"
    try:
        if settings.starttls:
            conn.start_tls_s()
        during = "bind"
        conn.simple_bind_s(settings.bind_dn or "", password or "")
    except ldap.LDAPError as exc:
        _unbind(conn)
        raise _error(settings, exc, during=during) from None
    return conn


def _password(settings: LdapSettings) -> str | None:
    if settings.bind_dn is None:
        return None  # anonymous bind
    try:
        return read_secret(settings.bind_password_env, settings.bind_password_file,
                           what="bind_password_file")
    except SecretError as exc:
        raise SourceError(settings.name, "config", f"bind password: {exc}") from None


def _unbind(conn: Any) -> None:
    try:
        conn.unbind_s()
    except Exception:  # noqa: BLE001, S110 - closing a broken connection is best effort
        pass


# -- search -----------------------------------------------------------------------


def _pages(conn: Any, settings: LdapSettings,
           wanted: Sequence[str]) -> Iterator[tuple[list[Mapping[str, Value]], bool]]:
    """Each page of entries, and whether the server has more after it."""
    import ldap
    from ldap.controls import SimplePagedResultsControl

    scalar = {a.lower() for a in (settings.attributes.username, settings.attributes.name,
                                  settings.attributes.policy) if a}
    spelling = {a.lower(): a for a in wanted}
    control = SimplePagedResultsControl(True, size=settings.page_size, cookie=b"")
    seconds = max(1.0, settings.timeout.total_seconds())
    while True:
        try:
            msgid = conn.search_ext(settings.base, ldap.SCOPE_SUBTREE, settings.filter,
                                    list(wanted) or ["1.1"], serverctrls=[control])
            # An explicit timeout per page: a server that stops answering mid-search is a
            # (retryable) error after `timeout`, not a refresh that hangs forever.
            _rtype, data, _msgid, controls = conn.result3(msgid, timeout=seconds)
        except ldap.TIMEOUT:
            raise SourceError(settings.name, "connect", (
                f"{settings.url}: no answer to the search within {seconds:g} s")) from None
        except ldap.LDAPError as exc:
            raise _error(settings, exc, during="search") from None
        # An empty cookie: that was the last page. (The control is critical, so a server
        # without paging refuses the search instead of silently sending one size-limited
        # answer; no control in the answer is taken as the last page too.)
        cookie = next((c.cookie for c in controls or () if c.controlType == _PAGED_OID), None)
        page: list[Mapping[str, Value]] = [
            _entry(dn, attrs, spelling, scalar) for dn, attrs in data
            if dn is not None  # dn None: a search continuation reference, not an entry
        ]
        yield page, bool(cookie)
        if not cookie:
            break
        control.cookie = cookie


def _entry(dn: str, attrs: Mapping[str, list[bytes]], spelling: Mapping[str, str],
           scalar: set[str]) -> dict[str, Value]:
    entry: dict[str, Value] = {"dn": dn}
    for raw_name, raw_values in attrs.items():
        low = raw_name.lower()
        values = tuple(v.decode("utf-8", "replace") for v in raw_values)
        if not values:
            continue
        name = spelling.get(low, raw_name)
        entry[name] = values[0] if low in scalar or len(values) == 1 else values
    return entry


# -- errors -----------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    """``desc: info`` from a python-ldap error (a dict in args[0]); never the request."""
    detail = exc.args[0] if exc.args else None
    if isinstance(detail, dict):
        desc = str(detail.get("desc", "")).strip()
        info = str(detail.get("info", "")).strip()
        return f"{desc}: {info}" if desc and info else desc or info or type(exc).__name__
    return str(exc) or type(exc).__name__


def _error(settings: LdapSettings, exc: BaseException, *, during: str) -> SourceError:
    import ldap

    where = f"{settings.url}"
    text = _describe(exc)
    if isinstance(exc, ldap.INVALID_CREDENTIALS):
        who = settings.bind_dn or "anonymous"
        return SourceError(settings.name, "auth", f"{where}: bind as {who} rejected: {text}")
    if isinstance(exc, ldap.SERVER_DOWN | ldap.TIMEOUT | ldap.CONNECT_ERROR):
        # libldap reports a failed TLS handshake (an unknown CA, a wrong host name) as
        # "Can't contact LDAP server" with no detail; when the port does accept TCP, or
        # StartTLS itself failed, the handshake is what went wrong.
        tls_in_use = settings.starttls or settings.url.lower().startswith("ldaps://")
        if tls_in_use and (during == "starttls" or _looks_like_tls(text) or _reachable(settings)):
            return SourceError(settings.name, "tls", (
                f"{where}: TLS handshake or certificate verification failed; is the server's "
                f"certificate issued for this host and signed by "
                f"{'ca_file ' + str(settings.ca_file) if settings.ca_file else 'a system CA'}?"
                " (set ca_file to the directory's CA)"))
        return SourceError(settings.name, "connect", f"{where}: cannot connect: {text}")
    if _looks_like_tls(text):
        return SourceError(settings.name, "tls", f"{where}: TLS failed: {text}")
    if isinstance(exc, ldap.SIZELIMIT_EXCEEDED):
        return SourceError(settings.name, "query", (
            f"{where}: the server's size limit stopped the search: {text}; raise it for "
            f"{settings.bind_dn or 'anonymous'} (OpenLDAP, in the database section: limits "
            f"dn.exact=\"{settings.bind_dn or ''}\" size.prtotal=unlimited)"))
    if isinstance(exc, ldap.UNAVAILABLE_CRITICAL_EXTENSION):
        return SourceError(settings.name, "config", (
            f"{where}: the server does not support paged searches (simple paged results "
            f"control, RFC 2696): {text}"))
    if isinstance(exc, ldap.FILTER_ERROR):
        return SourceError(settings.name, "config", f"bad filter {settings.filter}: {text}")
    if isinstance(exc, ldap.NO_SUCH_OBJECT):
        return SourceError(settings.name, "config", f"base {settings.base} does not exist")
    if isinstance(exc, ldap.INSUFFICIENT_ACCESS | ldap.STRONG_AUTH_REQUIRED |
                  ldap.CONFIDENTIALITY_REQUIRED | ldap.INAPPROPRIATE_AUTH):
        return SourceError(settings.name, "auth", f"{where}: {during} refused: {text}")
    return SourceError(settings.name, "query", f"{where}: {during} failed: {text}")


def _reachable(settings: LdapSettings) -> bool:
    """Does the URL's host:port accept a TCP connection (used to tell TLS from network)?"""
    parts = urlsplit(settings.url)
    default = 636 if parts.scheme.lower() == "ldaps" else 389
    try:
        port = parts.port or default
        with socket.create_connection((parts.hostname or "localhost", port),
                                      timeout=min(5.0, settings.timeout.total_seconds())):
            return True
    except (OSError, ValueError):
        return False


def _looks_like_tls(text: str) -> bool:
    low = text.lower()
    return any(w in low for w in ("tls", "ssl", "certificate", "handshake"))
