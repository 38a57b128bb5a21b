"""Pure parts of retention.auth: SASL initial responses, mechanism choice, the token cache."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

from retention.auth.sasl import BearerLogin, challenge_status, choose, oauthbearer, xoauth2
from retention.auth.tokens import AccessToken, TokenCache


def test_xoauth2_is_the_documented_form() -> None:
    # Google's and Microsoft's documented example shape: user=..^Aauth=Bearer ..^A^A
    assert xoauth2("someuser@example.com", "ya29.vF9dft4") == (
        b"user=someuser@example.com\x01auth=Bearer ya29.vF9dft4\x01\x01")


def test_oauthbearer_gs2_header_host_port_and_escaping() -> None:
    assert oauthbearer("u@x", "tok", "imap.example.com", 993) == (
        b"n,a=u@x,\x01host=imap.example.com\x01port=993\x01auth=Bearer tok\x01\x01")
    assert oauthbearer("a,b=c", "t").startswith(b"n,a=a=2Cb=3Dc,\x01")


def test_choose_follows_preference_among_offered() -> None:
    assert choose(["PLAIN", "xoauth2"], ("OAUTHBEARER", "XOAUTH2")) == "XOAUTH2"
    assert choose(["PLAIN", "XOAUTH2", "OAUTHBEARER"], ("OAUTHBEARER", "XOAUTH2")) == \
        "OAUTHBEARER"
    assert choose(["PLAIN"], ("OAUTHBEARER", "XOAUTH2")) is None


def test_challenge_status_keeps_only_the_status() -> None:
    assert challenge_status(b'{"status":"401","schemes":"bearer","scope":"mail"}') == "401"
    assert challenge_status(b"not json") is None and challenge_status(b"[1]") is None


def test_login_never_shows_the_token() -> None:
    login = BearerLogin("u@x", "secret-token-value", source="m365")
    assert "secret-token-value" not in repr(login)
    assert "secret-token-value" not in login.describe()
    b64 = base64.b64encode(xoauth2("u@x", "secret-token-value")).decode()
    assert "secret-token-value" in login.secrets() and b64 in login.secrets()


class _Src:
    def __init__(self, shared: bool, lifetime: timedelta | None = None) -> None:
        self._shared = shared
        self.lifetime = lifetime
        self.calls: list[str] = []
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    @property
    def shared(self) -> bool:
        return self._shared

    def fetch(self, subject: str) -> Any:
        self.calls.append(subject)
        exp = self.now + self.lifetime if self.lifetime else None
        return AccessToken(f"t-{subject}-{len(self.calls)}", exp)


def test_cache_shares_one_app_token_but_not_delegated_ones() -> None:
    app, per_user = _Src(True), _Src(False)
    c1, c2 = TokenCache(app), TokenCache(per_user)
    assert c1.token("a") == c1.token("b") and app.calls == ["a"]
    assert c2.token("a") != c2.token("b") and per_user.calls == ["a", "b"]
    # force with a stale token another worker already replaced: reuse the newer one.
    newer = c1.token("a", force=True)
    assert c1.token("a", force=True, stale="t-a-1") == newer and len(app.calls) == 2


def test_cache_refreshes_inside_the_margin_only() -> None:
    src = _Src(True, timedelta(hours=1))
    cache = TokenCache(src, clock=lambda: src.now, margin=timedelta(minutes=5))
    first = cache.token("a")
    src.now += timedelta(minutes=54)
    assert cache.token("a") == first
    src.now += timedelta(minutes=2)  # 4 minutes left: inside the margin
    assert cache.token("a") != first and cache.fetches == 2


def test_log_redaction_covers_bearer_tokens() -> None:
    from retention.service.logs import redact

    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    for line in (f"Authorization: Bearer {jwt}", f"token {jwt} refused",
                 "AUTHENTICATE XOAUTH2 dXNlcj1hbGljZQFhdXRoPUJlYXJlciB4",
                 '{"refresh_token": "rt-secret-value"}', "refresh_token=rt-secret-value&x=1",
                 "Bearer ya29.a0AfH6SM-opaque"):
        out = redact(line)
        assert jwt not in out and "rt-secret-value" not in out and "ya29" not in out
        assert "dXNlcj1hbGljZQFhdXRo" not in out


def test_provider_hosts_get_more_connections_unless_set_explicitly() -> None:
    from retention.config.providers import host_limits
    from retention.service.pool import HostPool

    assert host_limits(False)["outlook.office365.com"] > 2
    assert host_limits(True) == {}
    pool = HostPool(4, 2, host_limits=host_limits(False))
    assert pool.host_limits["imap.gmail.com"] == 8
