"""``retention check --connect`` and ``--archives``: read-only probes of servers and archives.

This module owns the two checks that look beyond the policy file:

* ``probe_account`` logs in to one account read-only and reports what the agent relies on:
  the IMAP capabilities that matter (``UIDPLUS`` for exact removal, ``MOVE``, ``QUOTA``,
  ``CONDSTORE``, ``SPECIAL-USE``), the special-use folders ``LIST`` shows and the quota
  (``GETQUOTAROOT``, only where ``QUOTA`` is offered); POP3: its ``CAPA`` (``UIDL``).
  Nothing is selected, nothing is written: no journal, no observation, no lock.
* ``check_archives`` re-reads every archived copy in the audit history (the journal's
  ``deleted`` archive rows) and compares its SHA-256 with the one recorded when it was
  verified, as ``restore`` does (``retention.archive.read``); IMAP targets are read through
  an ``EXAMINE``-only session.

Both return value types the CLI renders; neither raises for one account's or one copy's
failure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from retention.errors import AccountError, ArchiveError, ErrorKind, RetentionError

if TYPE_CHECKING:
    from retention.adapters import MailSession, Secret
    from retention.config.schema import Account, Config, ImapTarget
    from retention.state.journal import JournalRow

#: The IMAP capabilities the agent relies on, with what their absence costs.
IMAP_CAPABILITIES: tuple[tuple[str, str], ...] = (
    ("UIDPLUS", "no exact removal: UID EXPUNGE is impossible, so nothing can be deleted, "
     "archived or moved without MOVE"),
    ("MOVE", "moves are UID COPY + exact delete (needs UIDPLUS)"),
    ("QUOTA", "no server limit: usage is the summed sizes against quota.limit"),
    ("CONDSTORE", "every run re-reads every folder's flags (no scan cache by MODSEQ)"),
    ("SPECIAL-USE", "\\Trash, \\Junk, ... are found by name only, if at all"),
)
POP3_CAPABILITIES: tuple[tuple[str, str], ...] = (
    ("UIDL", "no stable message identity: the agent cannot act on this mailbox"),
    ("TOP", "the Date header cannot be read: sent-clock rules use the first-seen time"),
)
REQUIRED = frozenset({"UIDPLUS", "UIDL"})  # without these the agent removes nothing


@dataclass(frozen=True, slots=True)
class Probe:
    """What one read-only login found (``error`` set: the login or a read failed)."""

    account: str
    protocol: str
    where: str  # host:port, never a secret
    error: str | None = None
    error_kind: ErrorKind | None = None
    present: tuple[str, ...] = ()  # of the capabilities that matter
    missing: tuple[tuple[str, str], ...] = ()  # (capability, what its absence costs)
    special_use: tuple[tuple[str, str], ...] = ()  # (attribute, folder)
    usage_bytes: int | None = None
    limit_bytes: int | None = None

    @property
    def failed(self) -> bool:
        """The login failed, or the server lacks what the agent needs to remove anything."""
        return self.error is not None or any(c in REQUIRED for c, _ in self.missing)


Connect = Callable[["Account", "Secret", bool], "MailSession"]


def probe_account(config: Config, account: Account, connect: Connect | None = None) -> Probe:
    """Log in to ``account`` read-only and report what matters; never raises for it."""
    from retention.run.logins import LOGINS

    if connect is None:
        from retention.run.account import default_connect

        connect = default_connect
    opener = connect
    where = f"{account.host}:{account.effective_port()}"
    base = Probe(account.name, account.protocol, where)
    try:
        # A password or an OAuth2 login, exactly as a run logs in (read-only session).
        session = LOGINS.connect(account, config.state_dir,
                                 lambda secret: opener(account, secret, True))
    except AccountError as e:
        return _failed(base, str(e) or type(e).__name__, e.kind)
    except RetentionError as e:
        return _failed(base, str(e), "config")
    try:
        return _inspect(base, session)
    except AccountError as e:
        return _failed(base, str(e) or type(e).__name__, e.kind)
    finally:
        try:
            session.close()
        except AccountError:
            pass


def probe_target(name: str, target: ImapTarget) -> Probe:
    """Log in to an IMAP archive target read-only: it needs UIDPLUS to verify copies."""
    from retention.adapters.imap.session import ImapSession
    from retention.config.secrets import read_password

    base = Probe(f"archive {name}", "imap", f"{target.host}:{target.effective_port()}")
    try:
        session = ImapSession.connect(target, read_password(target), readonly=True)
    except AccountError as e:
        return _failed(base, str(e) or type(e).__name__, e.kind)
    try:
        caps = session.capabilities()
    except AccountError as e:
        return _failed(base, str(e) or type(e).__name__, e.kind)
    finally:
        session.close()
    present = tuple(c for c, _ in IMAP_CAPABILITIES if c in caps)
    missing = tuple((c, "archived copies cannot be verified (no APPENDUID)")
                    for c in ("UIDPLUS",) if c not in caps)
    return Probe(base.account, base.protocol, base.where, present=present, missing=missing)


def _failed(base: Probe, error: str, kind: ErrorKind) -> Probe:
    return Probe(base.account, base.protocol, base.where, error=error, error_kind=kind)


def _inspect(base: Probe, session: MailSession) -> Probe:
    caps = session.capabilities()
    wanted = IMAP_CAPABILITIES if base.protocol == "imap" else POP3_CAPABILITIES
    present = tuple(c for c, _ in wanted if c in caps)
    missing = tuple((c, why) for c, why in wanted if c not in caps)
    uses: list[tuple[str, str]] = []
    usage = limit = None
    if base.protocol == "imap":
        uses = sorted((use, f.name) for f in session.list_folders() for use in f.special_use
                      if use.lower() not in ("\\noselect", "\\haschildren", "\\hasnochildren"))
        if "QUOTA" in caps:  # GETQUOTAROOT only: summing sizes would read every folder
            u = session.usage()
            usage, limit = u.usage_bytes, u.limit_bytes
    return Probe(base.account, base.protocol, base.where, present=present, missing=missing,
                 special_use=tuple(uses), usage_bytes=usage, limit_bytes=limit)


# ------------------------------------------------------------------------------ archives


@dataclass(frozen=True, slots=True)
class CopyProblem:
    """One archived copy that is not as it was verified."""

    row_id: int
    folder: str
    message_id: str | None
    location: str | None
    problem: str


@dataclass
class ArchiveCheck:
    """One account's archived copies: how many were read back and which are not intact."""

    account: str
    checked: int = 0
    problems: list[CopyProblem] = field(default_factory=list)
    error: str | None = None  # the history itself could not be read


def check_archives(config: Config, accounts: Sequence[str] = ()) -> list[ArchiveCheck]:
    """Re-hash every archived copy of the audit history (only ``accounts`` if given)."""
    from retention.archive import ArchiveSet
    from retention.state import StateDir
    from retention.state.journal import Journal

    state = StateDir(config.state_dir)
    if not state.journal_path.exists():  # no history yet: nothing to check, nothing created
        return []
    out: dict[str, ArchiveCheck] = {a: ArchiveCheck(a) for a in accounts}
    with Journal.open(state.journal_path) as journal:
        rows = [r for r in journal.removals()
                if r.action == "archive" and r.state == "deleted"
                and (not accounts or r.account in accounts)]
        for account, group in _by_account(rows):
            result = out.setdefault(account, ArchiveCheck(account))
            with ArchiveSet(config.archives, account=account,
                            imap_connect=_examine_only) as archives:
                def session(name: str, archives: Any = archives) -> Any:
                    return archives.writer(name, journal, "check").session()

                for row in group:
                    result.checked += 1
                    why = _verify(row, session)
                    if why is not None:
                        result.problems.append(CopyProblem(row.id, row.folder, row.message_id,
                                                           row.location, why))
    return sorted(out.values(), key=lambda c: c.account)


def _by_account(rows: Sequence[JournalRow]) -> Iterator[tuple[str, list[JournalRow]]]:
    groups: dict[str, list[JournalRow]] = {}
    for r in rows:
        groups.setdefault(r.account, []).append(r)
    yield from sorted(groups.items())


def _examine_only(target: ImapTarget, password: str) -> Any:
    """An IMAP archive target's session that can only read (EXAMINE, BODY.PEEK)."""
    from retention.adapters.imap.session import ImapSession

    return ImapSession.connect(target, password, readonly=True)


def _verify(row: JournalRow, session: Callable[[str], Any]) -> str | None:
    """Why the archived copy of ``row`` is not the one verified, or None (intact)."""
    from retention.archive.base import sha256
    from retention.archive.read import read_copy

    want = row.copy_sha256 or row.sha256
    if want is None:
        return "no SHA-256 in the history for this copy"
    try:
        copy = read_copy(row, session)
    except ArchiveError as e:
        return str(e)
    got = sha256(copy)
    if got != want:
        return f"SHA-256 {got[:12]}... differs from the history's {want[:12]}..."
    return None
