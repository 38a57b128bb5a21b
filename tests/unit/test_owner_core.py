"""Pure parts of issue 14: the planner's restore exemptions, mbox byte reconstruction for
restore, and the HTML page (structure and escaping; Chromium renders it in integration)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from retention.archive import sha256
from retention.archive.mbox import decode_entry, encode_entry
from retention.archive.read import original
from retention.model import exempt_key
from retention.page.html import to_html
from retention.planner import explain, plan
from retention.result import AccountResult, ActionResult, RunResult
from tests.strategies import DAY, NOW, by_folder, msg, policy, rule, snapshot


def test_exempt_messages_are_never_planned_not_even_over_quota() -> None:
    pol = policy(rule("old", older_than="30d"),
                 rule("full", when="over_quota", folders=["*"]),
                 quota={"limit": 3000, "clean_above": "50%", "clean_to": "10%"})
    a, b, c = (msg("INBOX", u, age=400 * DAY, size=1000) for u in (1, 2, 3))
    why = "restored from the archive on 2026-12-01: exempt from every rule until 2026-12-31"
    exempt = ((exempt_key("INBOX", a.ref.uidvalidity, 1), why),
              ("mid:<two@x>", why))
    b = b.replace(message_id="<two@x>")
    snap = snapshot(*by_folder(a, b, c), limit=3000)
    snap = dataclasses.replace(snap, exempt=exempt)
    p = plan(pol, snap, NOW)
    assert [x.message.ref.uid for x in p.actions] == [3]
    assert [(m.ref.uid, w) for m, w in p.exempted] == [(1, why), (2, why)]
    reasons = {d.message.ref.uid: d.reason for d in explain(pol, snap, NOW)}
    assert reasons[1] == why and reasons[2] == why


def _crlf_messages() -> st.SearchStrategy[bytes]:
    line = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
    return st.lists(line, max_size=8).map(lambda ls: b"".join(x + b"\r\n" for x in ls))


@given(_crlf_messages(), st.booleans())
def test_mbox_copies_turn_back_into_the_exact_crlf_original(data: bytes, trim: bool) -> None:
    if trim and data.endswith(b"\r\n"):
        data = data[:-2]  # no final newline: the mbox writer adds one
    entry = encode_entry(data, NOW)
    copy = decode_entry(entry)

    row = SimpleNamespace(locator={"type": "mbox"}, sha256=sha256(data))
    got, exact = original(copy, row)  # type: ignore[arg-type]
    assert exact and got == data


def test_html_page_is_self_contained_and_escaped() -> None:
    m = msg("<script>x</script>", 7, age=100 * DAY)
    m = m.replace(received=datetime(2025, 1, 2, tzinfo=UTC))
    from retention.plan import Action, ActionKind, Clock

    a = Action(m, ActionKind.DELETE, "r&d", Clock.RECEIVED, "older than 30d <b>")
    acct = AccountResult("alice", "imap", "R1", True, "ok", NOW, NOW + timedelta(seconds=1),
                         results=(ActionResult(a, "planned"),), usage_bytes=900,
                         limit_bytes=1000, usage_after_bytes=500)
    page = to_html(RunResult(True, NOW, (acct,)), {"alice": (0.8, 0.9, 0.75)})
    assert "<script>x</script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "r&amp;d" in page and "older than 30d &lt;b&gt;" in page
    assert 'data-now="90.0"' in page and 'data-after="50.0"' in page
    assert 'class="level-warn"' in page and "default-src 'none'" in page
    assert "http" not in page.replace('http-equiv', '')


def test_notify_settings_validate() -> None:
    import pytest
    from pydantic import ValidationError

    from retention.config.schema import Notify, Policy

    assert Policy().restore_grace == timedelta(days=30) and Policy().notify is None
    n = Notify.model_validate({"smtp": {"host": "relay", "from": "A <a@x>"}})
    assert n.smtp is not None and n.smtp.sender == "A <a@x>"
    assert (n.smtp.security, n.smtp.effective_port(), n.smtp.tls_verify) == ("starttls", 587, True)
    with pytest.raises(ValidationError, match="delivery: smtp needs"):
        Notify.model_validate({"delivery": "smtp"})
    with pytest.raises(ValidationError, match="clear text"):
        Notify.model_validate({"smtp": {"host": "relay", "security": "none"}})
    with pytest.raises(ValidationError, match="password_env"):
        Notify.model_validate({"smtp": {"host": "relay", "username": "u"}})
    with pytest.raises(ValidationError):
        Notify.model_validate({"language": "fr"})
