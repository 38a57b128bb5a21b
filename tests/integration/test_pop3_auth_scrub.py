"""POP3 AUTH PLAIN: the password never comes back out, in any form (review F13).

The fault proxy takes ``USER`` out of Dovecot's CAPA, so the agent logs in with
``AUTH PLAIN <base64 of \\0user\\0password>``, and answers that line with an ``-ERR`` that
echoes what it was sent: the token, the decoded password, or the password quoted. A real
``retention run`` (the CLI) then fails the account; nothing it writes (stdout, stderr,
the state directory) may hold the password, its base64 or the SASL token.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import pytest

from retention.testing.dovecot import MailUser
from retention.testing.faultproxy import FaultProxy
from tests.integration.helpers import PolicyFile

Echo = Callable[[bytes, MailUser], bytes]


def _token(line: bytes) -> bytes:
    return line.split()[-1]


ECHOES: dict[str, Echo] = {
    "token": lambda line, _u: b"-ERR bad credentials " + _token(line) + b"\r\n",
    "command": lambda line, _u: b"-ERR unknown: " + line.strip() + b"\r\n",
    "decoded": lambda line, _u: b"-ERR no such login: "
    + base64.b64decode(_token(line)).replace(b"\0", b" ") + b"\r\n",
    "quoted": lambda line, u: b'-ERR bad password "' + u.password.encode() + b'"\r\n',
}


@pytest.mark.parametrize("echo", sorted(ECHOES))
def test_auth_plain_echo_never_leaks_the_password(
    echo: str, mail_user: MailUser, tmp_path: Path
) -> None:
    user = mail_user
    forms = [user.password, base64.b64encode(user.password.encode()).decode(),
             base64.b64encode(f"\0{user.name}\0{user.password}".encode()).decode()]
    with FaultProxy(user.server.host, user.server.pop3_port) as proxy:
        proxy.replace_down(b"\r\nUSER\r\n", b"\r\n")
        proxy.reply_on(rb"^AUTH PLAIN ", lambda line: ECHOES[echo](line, user), times=None)
        pf = PolicyFile(tmp_path, {"p": {"rules": [
            {"name": "old", "older_than": "30d", "action": "delete"}]}})
        pf.add_pop3(user, security="none", port=proxy.port, host="127.0.0.1")
        result = pf.run(fmt="json")
        assert proxy.sent(rb"^AUTH PLAIN "), "the agent did not use AUTH PLAIN"
    account = result.account(pf.accounts[0]["name"])
    assert account["status"] == "error" and account["error_kind"] == "auth", account
    outputs = {"stdout": result.stdout, "stderr": result.stderr}
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file():
            outputs[str(path)] = path.read_bytes().decode("utf-8", "replace")
    leaks = {where: form for where, text in outputs.items() for form in forms if form in text}
    assert not leaks, f"secret forms found in {sorted(leaks)}"
