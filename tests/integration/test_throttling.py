"""Provider throttling ("slow down" answers a real Dovecot never gives, injected by the
fault proxy in front of one): backed off and retried later in the sweep, not a failure."""

from __future__ import annotations

from pathlib import Path

from retention.run.account import run_all
from retention.testing.dovecot import MailUser, SeedMessage
from retention.testing.faultproxy import FaultProxy
from tests.integration.helpers import SEEN, PolicyFile, ago, patched_env

EXCHANGE = b" NO [UNAVAILABLE] Request is throttled. Suggested Backoff Time: 1000 ms\r\n"
POLICY = {"p": {"rules": [{"name": "old", "older_than": "30d", "action": "delete"}]}}


def _throttle(line: bytes) -> bytes:
    return line.split(b" ", 1)[0] + EXCHANGE


def _sweep(pf: PolicyFile, sleeps: list[float]) -> object:
    with patched_env(pf.env):
        return run_all(pf.load(), dry_run=False, sleep=sleeps.append)


def test_throttled_account_is_retried_at_the_end_of_the_sweep(
        make_user, tmp_path: Path) -> None:
    busy: MailUser = make_user()
    calm: MailUser = make_user()
    for u in (busy, calm):
        u.seed("INBOX", [SeedMessage(received=ago(days=90), flags=SEEN),
                         SeedMessage(received=ago(days=1), flags=SEEN)])
    with FaultProxy(busy.server.host, busy.server.imap_port) as proxy:
        # The first attempt and both in-run retries are throttled; the sweep's last try is not.
        proxy.reply_on(rb"^\S+ UID FETCH", _throttle, times=3)
        pf = PolicyFile(tmp_path, POLICY)
        pf.add_imap(busy, name="busy", security="none", port=proxy.port, host="127.0.0.1")
        pf.add_imap(calm, name="calm")
        sleeps: list[float] = []
        result = _sweep(pf, sleeps)
    by_name = {a.account: a for a in result.accounts}  # type: ignore[attr-defined]
    assert by_name["calm"].status == "ok"
    assert by_name["busy"].status == "ok", by_name["busy"].error
    assert [r.result for r in by_name["busy"].results] == ["done"]
    assert sleeps[-1] == 30.0 and len(sleeps) == 3  # two in-run backoffs, one for the sweep
    assert proxy.connections == 4


def test_still_throttled_is_reported_as_such(make_user, tmp_path: Path) -> None:
    busy: MailUser = make_user()
    busy.seed("INBOX", [SeedMessage(received=ago(days=1), flags=SEEN)])
    with FaultProxy(busy.server.host, busy.server.imap_port) as proxy:
        proxy.reply_on(rb"^\S+ UID FETCH", _throttle, times=None)
        pf = PolicyFile(tmp_path, POLICY)
        pf.add_imap(busy, name="busy", security="none", port=proxy.port, host="127.0.0.1")
        result = _sweep(pf, [])
    (acct,) = result.accounts  # type: ignore[attr-defined]
    assert acct.status == "error" and acct.error_kind == "connect" and acct.retry_later
    assert "throttled by the server" in acct.error
