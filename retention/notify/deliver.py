"""Delivering one journalled notice: IMAP APPEND into the owner's INBOX, or SMTP submission.

``append``: through the IMAP adapter (a writable session of the account itself). The
INBOX is searched for the notice's Message-ID first, so a notice a crashed run already
appended is found instead of appended again. A full mailbox answers ``NO [OVERQUOTA]``:
then, when ``notify.smtp`` is configured, the row is re-journalled as ``smtp-fallback``
*before* the hand-off and the notice goes by SMTP, and the outcome says so. ``smtp``:
``adapters.smtp.submit``. An SMTP hand-off interrupted by a crash cannot be checked at
the relay, so a ``pending`` SMTP row found at the start of a later run is looked for in
the INBOX (it may have arrived) and otherwise marked ``unknown``, never sent twice. A
delivery that failed where nothing can have arrived (the relay down or refusing, APPEND
refused) is ``retry``: the next runs deliver it again (``NoticeStore.to_retry``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import getaddresses
from typing import TYPE_CHECKING, Any

from retention.adapters.smtp import PartlyRefused, Uncertain
from retention.errors import AccountError, ProtocolError, RetentionError
from retention.state.notices import (
    FAILED,
    PENDING,
    RETRY,
    SENT,
    UNKNOWN,
    NoticeRow,
    NoticeStore,
)

if TYPE_CHECKING:
    from retention.config.schema import Account, Notify, SmtpSettings

# (account, password, readonly) -> an ImapSession-like object (append, find_by_message_id)
ImapConnect = Callable[["Account", str, bool], Any]
SmtpSubmit = Callable[["SmtpSettings", "str | None", str, "list[str]", bytes], str]


def _default_imap(account: Account, password: str, readonly: bool) -> Any:
    from retention.adapters.imap.session import ImapSession

    return ImapSession.connect(account, password, readonly=readonly)


def _default_smtp(settings: SmtpSettings, password: str | None, sender: str,
                  to: list[str], message: bytes) -> str:
    from retention.adapters.smtp import submit

    return submit(settings, password, sender, to, message)


@dataclass
class Delivery:
    """Everything delivery needs for one account (injectable for tests)."""

    account: Account
    notify: Notify
    store: NoticeStore
    password: Callable[[Any], str]
    imap_connect: ImapConnect = _default_imap
    smtp_submit: SmtpSubmit = _default_smtp

    # -- the two channels ----------------------------------------------------------------

    def _in_inbox(self, message_id: str) -> bool:
        if self.account.protocol != "imap":
            return False
        session = self.imap_connect(self.account, self.password(self.account), True)
        try:
            return bool(session.find_by_message_id("INBOX", message_id))
        finally:
            session.close()

    def _append(self, row: NoticeRow) -> str:
        session = self.imap_connect(self.account, self.password(self.account), False)
        try:
            if session.find_by_message_id("INBOX", row.message_id):
                return "already in INBOX (appended by an earlier, interrupted run)"
            uid = session.append("INBOX", row.message, [], datetime.now(UTC))
        finally:
            session.close()
        return f"appended to INBOX (UID {uid})" if uid is not None else "appended to INBOX"

    def _smtp(self, row: NoticeRow) -> str:
        smtp = self.notify.smtp
        assert smtp is not None
        password = None
        if smtp.username:
            from retention.config.secrets import read_secret

            password = read_secret(smtp.password_env, smtp.password_file)
        to = [addr for _name, addr in getaddresses([row.recipient]) if addr]
        sender = next((a for _n, a in getaddresses([row.sender]) if a), "")
        where = self.smtp_submit(smtp, password, sender, to, row.message)
        return f"submitted to {where} for {', '.join(to)}"

    # -- one row -------------------------------------------------------------------------

    def send(self, row: NoticeRow) -> tuple[str, str, str]:
        """Deliver a fresh pending row; journals and returns (state, channel, detail)."""
        channel, state, detail = row.channel, FAILED, ""
        try:
            if channel == "append" and self.account.protocol != "imap":
                if self.notify.smtp is None:  # no retry can help: the policy must change
                    detail = "POP3 has no APPEND and notify.smtp is not configured"
                    self.store.mark(row.event, FAILED, channel=channel, detail=detail)
                    return FAILED, channel, detail
                channel = "smtp-fallback"
                self.store.mark(row.event, PENDING, channel=channel,
                                detail="POP3 account: no IMAP APPEND")
            if channel == "append":
                try:
                    detail = self._append(row)
                except ProtocolError as e:
                    if "OVERQUOTA" not in str(e).upper():
                        raise
                    if self.notify.smtp is None:
                        raise ProtocolError(
                            f"APPEND refused, mailbox over quota ({e}); no notify.smtp to "
                            "fall back to"
                        ) from None
                    channel = "smtp-fallback"
                    # Journalled before the hand-off: a crash now never sends it twice.
                    self.store.mark(row.event, PENDING, channel=channel,
                                    detail="APPEND refused: [OVERQUOTA]")
                    detail = ("APPEND refused: [OVERQUOTA] (mailbox over quota); "
                              + self._smtp(row))
                else:
                    state = SENT
            if channel != "append":
                if not detail:
                    detail = self._smtp(row)
                    if channel == "smtp-fallback" and self.account.protocol != "imap":
                        detail = "POP3 account, no APPEND; " + detail
                state = SENT
        except (Uncertain, PartlyRefused) as e:
            # The relay may have it (or has it for some): never again.
            state, detail = (UNKNOWN if isinstance(e, Uncertain) else FAILED), str(e)
        except (AccountError, RetentionError) as e:
            # Known not delivered: an APPEND is looked for by Message-ID before it is
            # tried again, an SMTP error before the hand-off left nothing at the relay.
            state, detail = RETRY, str(e) or type(e).__name__
        self.store.mark(row.event, state, channel=channel, detail=detail)
        return state, channel, detail

    def finish_interrupted(self, row: NoticeRow) -> tuple[str, str, str]:
        """A row a crashed run left pending: find it, or re-deliver only when that is safe."""
        if row.channel == "append":
            return self.send(row)  # _append looks for the Message-ID first
        try:
            found = self._in_inbox(row.message_id)
        except (AccountError, RetentionError):
            found = False
        if found:
            state, detail = SENT, "found in INBOX after an interrupted run"
        else:
            state, detail = UNKNOWN, ("interrupted during SMTP submission: not sent again "
                                      "(a notice is never sent twice)")
        self.store.mark(row.event, state, detail=detail)
        return state, row.channel, detail
