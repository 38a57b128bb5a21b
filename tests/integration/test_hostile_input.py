"""Hostile server input (review F7, F8, F12, M14): a clear per-message skip, never a crash.

A real Dovecot answers, and the fault proxy rewrites its answer into what a broken or
hostile server could send: an INTERNALDATE no datetime holds, ``RFC822.SIZE NIL``,
``FLAGS NIL``, unsolicited FETCH responses that carry a UID we never asked about, and a
folder name in invalid modified UTF-7 (a lone surrogate). Each case must end with the
account ``ok``, the damaged message (or folder) left alone and reported, and every other
planned message handled as usual.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from retention.run.account import run_account
from retention.testing.dovecot import MailUser, SeedMessage
from retention.testing.faultproxy import FaultProxy
from tests.integration.helpers import PolicyFile, patched_env

NOW = datetime.now(UTC).replace(microsecond=0)
BASE = datetime(2001, 2, 3, 4, 5, 0, tzinfo=UTC)  # UID n is received at BASE + n seconds


def _policy(folders: list[str], action: Any = "delete") -> dict[str, Any]:
    return {"p": {"protect": [], "rules": [
        {"name": "old", "folders": folders, "older_than": "30d", "age_by": "received",
         "allow_empty_folder": True, "action": action},
    ]}}


def _internaldate(uid: int) -> bytes:
    return (BASE + timedelta(seconds=uid)).strftime('INTERNALDATE "%d-%b-%Y %H:%M:%S +0000"'
                                                    ).encode()


def _seed(user: MailUser, folder: str = "INBOX") -> None:
    user.seed(folder, [
        SeedMessage(received=BASE + timedelta(seconds=1)),
        # UID 2 is the one the proxy damages: a size and a flag nobody else has.
        SeedMessage(received=BASE + timedelta(seconds=2), size=1777, flags={"\\Answered"}),
        SeedMessage(received=BASE + timedelta(seconds=3)),
    ])


def _run(pf: PolicyFile) -> Any:
    config = pf.load()
    with patched_env(pf.env):
        return run_account(config, config.accounts[0], dry_run=False, now=NOW,
                           sleep=lambda _s: None)


def _outcome(result: Any) -> dict[int, str]:
    return {r.action.message.ref.uid: r.result for r in result.results}


CASES = {
    "internaldate-year-1": (_internaldate(2), b'INTERNALDATE " 1-Jan-0001 00:00:00 +0100"',
                            "INTERNALDATE out of range"),
    "internaldate-year-9999": (_internaldate(2), b'INTERNALDATE "31-Dec-9999 23:59:59 -0100"',
                               "INTERNALDATE out of range"),
    "rfc822-size-nil": (b"RFC822.SIZE 1777", b"RFC822.SIZE NIL", "no RFC822.SIZE"),
    "flags-nil": (b"FLAGS (\\Answered \\Recent)", b"FLAGS NIL", "no FLAGS"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_unreadable_metadata_leaves_the_message_out_and_says_why(
    case: str, mail_user: MailUser, tmp_path: Path
) -> None:
    old, new, why = CASES[case]
    _seed(mail_user)
    with FaultProxy(mail_user.server.host, mail_user.server.imap_port) as proxy:
        proxy.replace_down(old, new)
        pf = PolicyFile(tmp_path, _policy(["INBOX"]))
        pf.add_imap(mail_user, security="none", port=proxy.port, host="127.0.0.1")
        result = _run(pf)
    assert result.status == "ok", result.error
    assert _outcome(result) == {1: "done", 3: "done"}
    assert list(mail_user.folder_state()["INBOX"]) == [2], "the damaged message must stay"
    assert any("UID 2" in w and why in w for w in result.warnings), result.warnings


UNSOLICITED = b"* 40 FETCH (UID 99 FLAGS (\\Seen))\r\n"


@pytest.mark.parametrize("action", ["delete", "archive"])
def test_unsolicited_fetch_with_a_uid_is_not_an_answer(
    action: str, mail_user: MailUser, tmp_path: Path
) -> None:
    """Before every response about UID 1 the proxy puts an unsolicited FETCH about UID 99
    (another client's flag change, RFC 3501 7.4.2): Message-ID reads, size reads and body
    fetches must neither fail on it nor treat UID 99 as one of theirs."""
    _seed(mail_user)
    extra: dict[str, Any] = {}
    if action == "archive":
        extra = {"archives": {"vault": {"type": "mbox", "path": str(tmp_path / "a.mbox"),
                                        "compress": "none"}}}
    policy = _policy(["INBOX"], {"archive": "vault"} if action == "archive" else action)
    with FaultProxy(mail_user.server.host, mail_user.server.imap_port) as proxy:
        proxy.replace_down(b"* 1 FETCH (UID 1 ", UNSOLICITED + b"* 1 FETCH (UID 1 ")
        pf = PolicyFile(tmp_path, policy, extra=extra)
        pf.add_imap(mail_user, security="none", port=proxy.port, host="127.0.0.1")
        result = _run(pf)
        fetched = proxy.sent(rb"UID FETCH .*99")
    assert result.status == "ok", result.error
    assert _outcome(result) == {1: "done", 2: "done", 3: "done"}
    assert not mail_user.folder_state()["INBOX"]
    assert not fetched, f"asked about a UID nobody planned: {fetched}"


def test_unsolicited_fetch_is_not_counted_as_a_message(
    make_user: Any, dovecot_noquota: Any
) -> None:
    """M14: usage by sum without STATUS=SIZE counts RFC822.SIZE answers: an unsolicited
    FETCH about a UID we did not ask for is not one more message."""
    from retention.adapters.imap import ImapSession
    from retention.config.schema import Connection

    user = make_user(quota=False)
    _seed(user)
    with FaultProxy(user.server.host, user.server.imap_port) as proxy:
        proxy.replace_down(b"STATUS=SIZE ", b"")
        proxy.replace_down(b"* 1 FETCH (UID 1 RFC822.SIZE", UNSOLICITED.replace(
            b"FLAGS (\\Seen)", b"RFC822.SIZE 5000000") + b"* 1 FETCH (UID 1 RFC822.SIZE")
        conn = Connection(host="127.0.0.1", port=proxy.port, username=user.name,
                          security="none", allow_plaintext=True, password_env="UNUSED")
        with ImapSession.connect(conn, user.password, readonly=True) as session:
            assert not session.has("STATUS=SIZE")
            usage = session.usage()
    assert usage.messages == 3
    assert usage.usage_bytes < 5000000


def test_folder_name_with_a_lone_surrogate_is_left_alone(
    mail_user: MailUser, tmp_path: Path
) -> None:
    """F12: ``&2D0-`` decodes to a lone surrogate, which can be neither sent back nor
    stored: the folder is listed but never touched, and the rest of the account runs."""
    _seed(mail_user)
    _seed(mail_user, "Lists")
    with FaultProxy(mail_user.server.host, mail_user.server.imap_port) as proxy:
        proxy.replace_down(b'"/" Lists\r\n', b'"/" "&2D0-"\r\n')
        pf = PolicyFile(tmp_path, _policy(["*"]))
        pf.add_imap(mail_user, security="none", port=proxy.port, host="127.0.0.1")
        result = _run(pf)
    assert result.status == "ok", result.error
    state = mail_user.folder_state()
    assert not state["INBOX"] and len(state["Lists"]) == 3
