"""Shared pytest wiring: real Dovecot servers for the session, and per-test mail users.

Fixtures (all lazy: a run that uses none of them starts no server):
  dovecot          session-scoped Dovecot with the quota plugin (count backend)
  dovecot_noquota  session-scoped Dovecot with no quota plugin at all
  dovecot_factory  session-scoped; dovecot_factory(**Dovecot kwargs) starts another
                   server (e.g. trash_name="ゴミ箱"), stopped at session end
  require_dovecot  no value; just the skip-or-fail check, for tests that run
                   their own `Dovecot()` (e.g. in a `with` block)
  make_user        make_user(quota_bytes=50 MiB, *, server=None, quota=True) -> MailUser,
                   a fresh uniquely named user on `dovecot` (quota=False: dovecot_noquota)
  mail_user        a fresh MailUser on `dovecot`, 50 MiB limit; override the limit with
                   @pytest.mark.parametrize("mail_user", [10 * MiB], indirect=True)
                   (None = no limit)

When Dovecot is not installed these skip, except under CI=true where that is a
failure: CI must never go green by skipping the integration suite.

Every test under tests/integration/, and every test using a Dovecot fixture, gets
the `dovecot` marker, so `-m "not dovecot"` runs the pure unit tests only.

Import the library as `retention.testing.dovecot` (one module object, so its AUTO sentinel
compares correctly everywhere); the repository root is put on sys.path for that.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from retention.testing.dovecot import Dovecot, MailUser, dovecot_unavailable_reason  # noqa: E402

MiB = 1024 * 1024
DEFAULT_QUOTA_BYTES = 50 * MiB
_INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"
_DOVECOT_FIXTURES = {
    "dovecot", "dovecot_noquota", "dovecot_factory", "make_user", "mail_user", "require_dovecot",
}
_user_counter = itertools.count(1)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        in_integration = _INTEGRATION_DIR in Path(str(item.path)).resolve().parents
        uses_server = bool(_DOVECOT_FIXTURES & set(getattr(item, "fixturenames", ())))
        if in_integration or uses_server:
            item.add_marker(pytest.mark.dovecot)


def _require_dovecot() -> None:
    reason = dovecot_unavailable_reason()
    if reason is None:
        return
    if _in_ci():
        pytest.fail(f"CI=true but Dovecot is unavailable: {reason}", pytrace=False)
    pytest.skip(f"Dovecot unavailable: {reason}")


@pytest.fixture
def require_dovecot() -> None:
    _require_dovecot()


def _serve(**kwargs: Any) -> Iterator[Dovecot]:
    _require_dovecot()
    server = Dovecot(**kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    yield from _serve(quota=True)


@pytest.fixture(scope="session")
def dovecot_noquota() -> Iterator[Dovecot]:
    yield from _serve(quota=False)


@pytest.fixture(scope="session")
def dovecot_factory() -> Iterator[Callable[..., Dovecot]]:
    started: list[Dovecot] = []

    def start(**kwargs: Any) -> Dovecot:
        _require_dovecot()
        server = Dovecot(**kwargs)
        server.start()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def _unique_name(nodeid: str) -> str:
    # Readable-ish and unique across the session (Dovecot lowercases usernames).
    return f"u_{hashlib.sha1(nodeid.encode()).hexdigest()[:8]}_{next(_user_counter)}"


@pytest.fixture
def make_user(request: pytest.FixtureRequest) -> Callable[..., MailUser]:
    def make(
        quota_bytes: int | None = DEFAULT_QUOTA_BYTES,
        *,
        server: Dovecot | None = None,
        quota: bool = True,
    ) -> MailUser:
        if server is None:
            server = request.getfixturevalue("dovecot" if quota else "dovecot_noquota")
        return server.add_user(_unique_name(request.node.nodeid), quota_bytes=quota_bytes)

    return make


@pytest.fixture
def mail_user(request: pytest.FixtureRequest, make_user: Callable[..., MailUser]) -> MailUser:
    quota_bytes = getattr(request, "param", DEFAULT_QUOTA_BYTES)
    return make_user(quota_bytes)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach the Dovecot log tail to the report of a failing test that used a server."""
    report = yield
    if report.failed:
        funcargs = getattr(item, "funcargs", {})
        for name in ("dovecot", "dovecot_noquota"):
            server = funcargs.get(name)
            if isinstance(server, Dovecot):
                report.sections.append((f"{name} log ({server.log_path})", server.log_tail(40)))
        user = funcargs.get("mail_user")
        if isinstance(user, MailUser) and "dovecot" not in funcargs:
            report.sections.append(("dovecot log", user.server.log_tail(40)))
    return report
