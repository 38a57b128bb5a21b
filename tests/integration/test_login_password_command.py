"""``password_command`` against a real Dovecot: the login works with the password a
program prints, and a failing program fails that account only, without the password in
any output or state file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from retention.testing.dovecot import MailUser
from tests.integration.helpers import PolicyFile


def test_login_with_a_password_from_a_command(tmp_path: Path, mail_user: MailUser) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    (secrets / "pw").write_text(mail_user.password + "\n", encoding="utf-8")
    helper = tmp_path / "get-password.py"
    # Like `pass show`: reads a store, prints the password first; "fail" mimics a locked
    # store that echoes the password to stderr on its way out (we must not repeat it).
    helper.write_text(
        "import sys\n"
        "pw = open(sys.argv[1]).read().strip()\n"
        "if len(sys.argv) > 2:\n"
        "    print(pw)\n"
        "    print('store locked; last value ' + pw, file=sys.stderr)\n"
        "    sys.exit(2)\n"
        "print(pw)\nprint('url: imap://example')\n", encoding="utf-8")
    pf = PolicyFile(tmp_path / "p", {"p": {"rules": []}})
    good = pf.add_imap(mail_user, name="good", password_env=None,
                       password_command=[sys.executable, str(helper), str(secrets / "pw")])
    bad = pf.add_imap(mail_user, name="bad", password_env=None,
                      password_command=[sys.executable, str(helper), str(secrets / "pw"),
                                        "fail"])

    result = pf.cli("-vv", "usage", "-c", str(pf.path), "--format", "json")
    assert result.stdout.strip(), str(result)
    rows = {r["account"]: r for r in json.loads(result.stdout)["accounts"]}
    assert rows[good]["status"] == "ok", result.stderr
    assert rows[good]["usage_bytes"] == mail_user.usage()[0]
    assert rows[bad]["status"] == "error" and result.code == 1
    assert "password_command" in rows[bad]["error"]
    assert "exited with status 2" in rows[bad]["error"]
    assert "store locked; last value ***" in rows[bad]["error"]

    check = pf.cli("check")
    assert check.code == 0, str(check)
    everything = (result.stdout + result.stderr + check.stdout + check.stderr).encode()
    state = [p for p in (tmp_path / "p").rglob("*") if p.is_file()]
    assert mail_user.password.encode() not in everything
    leaks = [p for p in state if mail_user.password.encode() in p.read_bytes()]
    assert not leaks, leaks
