"""Regression tests from the safety review: each demonstrates one finding.

Real Dovecot (tests/dovecot.py) plus tests/integration/faultproxy.py for the faults a real
server cannot produce on demand (a connection lost between two commands).
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from retention.model import DELETED
from retention.run.account import run_account
from retention.testing.dovecot import MailUser, SeedMessage
from retention.testing.faultproxy import FaultProxy
from tests.integration.helpers import PolicyFile, ago, patched_env

NOW = datetime.now(UTC).replace(microsecond=0)

DELETE_OLD = {"p": {"protect": [], "rules": [
    {"name": "old", "folders": ["INBOX"], "older_than": "30d", "age_by": "received",
     "allow_empty_folder": True, "action": "delete"},
]}}


env = patched_env


def via_proxy(pf: PolicyFile, user: MailUser, proxy: FaultProxy) -> str:
    """A plaintext IMAP account whose connections go through ``proxy``."""
    return pf.add_imap(user, security="none", port=proxy.port, host="127.0.0.1")


def run(pf: PolicyFile, *, dry_run: bool = False) -> Any:
    config = pf.load()
    with env(pf.env):
        return run_account(config, config.accounts[0], dry_run=dry_run, now=NOW,
                           sleep=lambda _s: None)


# --- F1: our own \Deleted left behind after a lost connection ------------------------------


def test_lost_connection_between_store_and_expunge_leaves_no_deleted_flag_behind(
    mail_user: MailUser, tmp_path: Path
) -> None:
    """The connection drops after ``UID STORE +FLAGS (\\Deleted)``, before ``UID EXPUNGE``.

    The runner retries the pass (ConnectError is retryable). Recovery finds the message
    still present and journals its row ``dropped`` ("untouched"), and the new plan skips
    it as "flagged \\Deleted by another client". Result: the message the policy deletes
    stays in the mailbox forever with OUR \\Deleted flag on it, never removed by us, and
    any other client's bare EXPUNGE later removes it with no audit record.
    """
    raws = mail_user.seed("INBOX", [SeedMessage(received=ago(days=100 + i)) for i in range(3)])
    assert len(raws) == 3
    with FaultProxy(mail_user.server.host, mail_user.server.imap_port) as proxy:
        proxy.drop_on(rb"UID EXPUNGE")  # close before forwarding: STORE done, EXPUNGE never
        pf = PolicyFile(tmp_path, DELETE_OLD)
        via_proxy(pf, mail_user, proxy)
        result = run(pf)
    state = mail_user.folder_state()["INBOX"]
    left = {uid: m.flags for uid, m in state.items()}
    # The policy deletes all three: after a successful retry nothing should be left, and
    # in no case may a message we failed to expunge keep a \Deleted we set.
    flagged = [uid for uid, flags in left.items() if DELETED in flags]
    assert not flagged, (
        f"messages left flagged \\Deleted by the agent: {flagged}; "
        f"status={result.status} results={[r.result for r in result.results]}"
    )
    assert not left, f"retry did not finish the planned deletions: {left} {result}"


# --- F2: a retried pass reports only its own attempt ---------------------------------------


def test_retry_after_connect_error_still_reports_the_first_attempts_deletions(
    mail_user: MailUser, tmp_path: Path
) -> None:
    """The first attempt deletes INBOX's old messages, then loses the connection on the
    SELECT of the next folder. The retry re-plans from a fresh scan, which no longer has
    the INBOX messages: the AccountResult (JSON report, freed_bytes, metrics, the log
    line) lists only Lists/a, so messages the agent really deleted vanish from the report.
    """
    policy = {"p": {"protect": [], "rules": [
        {"name": "old", "folders": ["INBOX", "Lists/a"], "older_than": "30d",
         "age_by": "received", "allow_empty_folder": True, "action": "delete"},
    ]}}
    mail_user.seed("INBOX", [SeedMessage(received=ago(days=400 + i)) for i in range(2)])
    mail_user.seed("Lists/a", [SeedMessage(received=ago(days=100 + i)) for i in range(2)])
    with FaultProxy(mail_user.server.host, mail_user.server.imap_port) as proxy:
        proxy.drop_on(rb"^\S+ SELECT \"?INBOX")  # after Lists/a was done
        pf = PolicyFile(tmp_path, policy)
        via_proxy(pf, mail_user, proxy)
        result = run(pf)
    state = mail_user.folder_state()
    assert not state.get("INBOX") and not state.get("Lists/a"), "the retry did not finish"
    assert proxy.connections >= 2, "the fault did not trigger a retry"
    done = [(r.action.message.ref.folder, r.result) for r in result.results]
    assert sorted(f for f, res in done if res == "done") == ["INBOX", "INBOX", "Lists/a",
                                                              "Lists/a"], (
        f"the report lost deletions the first attempt made: {done}"
    )


# --- F3: the journal's WAL and shared-memory files follow the umask ------------------------


def test_journal_wal_and_shm_files_are_private(tmp_path: Path) -> None:
    """``Journal.open`` chmods only the main database file to 0600 after SQLite created
    it: ``journal.sqlite3-wal`` / ``-shm`` inherit the umask (0644 under the usual 022),
    and an existing state_dir (systemd's StateDirectory= default is 0755) is not
    tightened. The WAL holds every recent row: folders, Message-IDs, flags, archive
    locations of every message acted on, readable by any local user. (``Observations.open``
    pre-creates its file 0600, so its WAL/SHM are private: do the same here.)
    """
    from retention.state.journal import Journal

    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    old = os.umask(0o022)
    try:
        journal = Journal.open(state / "journal.sqlite3")
        try:
            journal.add_intent("acct", "run", "vault", "/x.mbox", 0)  # a write: WAL in use
            modes = {p.name: p.stat().st_mode & 0o777 for p in state.iterdir()}
        finally:
            journal.close()
    finally:
        os.umask(old)
    loose = {name: oct(mode) for name, mode in modes.items() if mode & 0o077}
    assert not loose, f"journal files readable by others: {loose}"


# --- (no finding) the password never reaches a DEBUG log line ------------------------------


def test_debug_logging_of_a_full_run_never_contains_the_password(
    mail_user: MailUser, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mail_user.seed("INBOX", [SeedMessage(received=ago(days=100 + i)) for i in range(2)])
    pf = PolicyFile(tmp_path, DELETE_OLD)
    pf.add_imap(mail_user, security="starttls")
    with caplog.at_level(logging.DEBUG):
        result = run(pf)
        bad = PolicyFile(tmp_path / "bad", DELETE_OLD)
        bad.add_imap(mail_user, password=mail_user.password + "-wrong")
        failed = run(bad)
    assert result.status == "ok" and failed.status == "error"
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert mail_user.password not in text
    assert mail_user.password not in (failed.error or "")


# --- F4: mbox "file changed under the lock" truncates someone else's bytes ----------------


def test_mbox_write_never_truncates_bytes_it_did_not_write(tmp_path: Path) -> None:
    """``MboxWriter.write`` (mbox.py ~303-313): if the file grew between ``place`` and
    ``write`` (a writer that does not honour flock: a mail client using fcntl/dotlock, an
    agent on another NFS client), it raises OSError("file changed under the lock") and
    then, in the except branch, ``_truncate_to(o.fd, o.offset)``: the other writer's
    bytes, possibly archive copies whose sources are already deleted, are cut off.
    When the size is not ours, nothing of ours was written: nothing may be truncated.
    """
    from retention.archive import Item, sha256
    from retention.archive.mbox import MboxWriter
    from retention.config.schema import MboxTarget
    from retention.model import Message, MessageRef
    from retention.plan import Action, ActionKind, Clock
    from retention.state.journal import Journal

    when = datetime(2021, 5, 6, tzinfo=UTC)
    data = b"Subject: a\r\n\r\nbody\r\n"
    msg = Message(MessageRef("INBOX", 7, 1), len(data), when, frozenset(), message_id="<1@x>")
    item = Item(Action(msg, ActionKind.ARCHIVE, "old", Clock.RECEIVED, "old", archive="cold"),
                data, sha256(data))
    path = tmp_path / "INBOX.mbox"
    journal = Journal.open(tmp_path / "j.sqlite3")
    w = MboxWriter("cold", MboxTarget(type="mbox", path=str(tmp_path / "{folder}.mbox"),
                                      compress="none"), account="a", journal=journal, run_id="r")
    batch = w.place([item])
    foreign = b"From someone Thu May  6 00:00:00 2021\nSubject: theirs\n\nkeep me\n\n"
    with open(path, "ab") as fh:  # a writer that ignores flock
        fh.write(foreign)
    res = w.write(batch)
    w.release(batch)
    journal.close()
    assert res.error is not None  # refusing to write is right...
    assert path.read_bytes() == foreign, "...but the other writer's bytes were truncated away"


# --- Acceptance pass 2 ------------------------------------------------------------------------


def test_removals_finished_by_a_retry_are_in_the_report(
    mail_user: MailUser, tmp_path: Path
) -> None:
    """The connection drops on UID EXPUNGE: the retry's recovery finishes those deletes,
    and the run's report (and so the metrics) counts them as done by this run."""
    mail_user.seed("INBOX", [SeedMessage(received=ago(days=400 + i)) for i in range(4)])
    mail_user.seed("INBOX", [SeedMessage(received=ago(days=1))])
    with FaultProxy(mail_user.server.host, mail_user.server.imap_port) as proxy:
        proxy.drop_on(rb"UID EXPUNGE", times=1)
        pf = PolicyFile(tmp_path, DELETE_OLD)
        via_proxy(pf, mail_user, proxy)
        result = run(pf)
    assert result.status == "ok"
    assert len(mail_user.folder_state()["INBOX"]) == 1
    done = [r for r in result.results if r.result == "done"]
    assert len(done) == 4, [(r.result, r.detail) for r in result.results]
    assert result.freed_bytes == sum(r.action.message.size for r in done) > 0


def test_pop3_connection_lost_during_login_is_a_connect_error(
    mail_user: MailUser, tmp_path: Path
) -> None:
    """poplib reports a closed connection as '-ERR EOF': not a rejected password."""
    with FaultProxy(mail_user.server.host, mail_user.server.pop3_port) as proxy:
        proxy.drop_on(rb"^PASS", times=None)
        pf = PolicyFile(tmp_path, {"p": {"rules": []}})
        pf.add_pop3(mail_user, security="none", port=proxy.port, host="127.0.0.1")
        result = run(pf)
    assert result.status == "error"
    assert result.error_kind == "connect", result.error
    assert proxy.connections == 3  # retried twice


def test_an_echoed_quoted_password_is_scrubbed(mail_user: MailUser, tmp_path: Path) -> None:
    """A server that echoes LOGIN shows the password IMAP-quoted (\\" and \\\\ escaped)."""
    password = 'Pw-Zebra-9917"Q\\x'
    with FaultProxy(mail_user.server.host, mail_user.server.imap_port) as proxy:
        proxy.reply_on(rb" LOGIN ", lambda line: line.split(b" ", 1)[0]
                       + b" NO [AUTHENTICATIONFAILED] rejected: " + line.rstrip(b"\r\n")
                       + b"\r\n")
        pf = PolicyFile(tmp_path, DELETE_OLD)
        pf.add_imap(mail_user, security="none", port=proxy.port, host="127.0.0.1",
                    password=password)
        result = run(pf)
    assert result.status == "error" and result.error_kind == "auth"
    assert result.error is not None and "***" in result.error
    quoted = password.replace("\\", "\\\\").replace('"', '\\"')
    assert password not in result.error and quoted not in result.error
