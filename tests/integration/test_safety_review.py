"""Regression tests from the safety review: each demonstrates one finding.

Real Dovecot (tests/dovecot.py) plus tests/integration/faultproxy.py for the faults a real
server cannot produce on demand (a connection lost between two commands).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from retention.model import DELETED
from retention.runner import run_account
from tests.dovecot import MailUser, SeedMessage
from tests.integration.faultproxy import FaultProxy
from tests.integration.helpers import PolicyFile, ago

NOW = datetime.now(UTC).replace(microsecond=0)

DELETE_OLD = {"p": {"protect": [], "rules": [
    {"name": "old", "folders": ["INBOX"], "older_than": "30d", "age_by": "received",
     "allow_empty_folder": True, "action": "delete"},
]}}


@contextmanager
def env(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


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
