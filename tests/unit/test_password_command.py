"""``password_command``: a password from a program (pass, vault CLIs, systemd-creds).

Run as an argv list (never a shell), stdin closed, with a timeout that kills its whole
process group; the first line of stdout is the password; failures say the exit status and
stderr's last line without the password; arguments are only what the policy file says.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from retention.config.load import load_config
from retention.config.load import warnings as config_warnings
from retention.config.schema import Account
from retention.config.secrets import command_secrets, read_password, run_password_command
from retention.errors import ConfigError, SecretError

PY = sys.executable
SECOND = timedelta(seconds=30)


def py(code: str, *args: str) -> list[str]:
    return [PY, "-c", code, *args]


def account(**fields) -> Account:
    return Account.model_validate({"name": "a", "host": "h", "username": "u", "policy": "p",
                                   **fields})


def test_the_first_line_of_stdout_is_the_password() -> None:
    acct = account(password_command=py("print('s3cret-Line1  '); print('line2')"))
    assert read_password(acct) == "s3cret-Line1  "  # only the line break goes
    crlf = py("import sys; sys.stdout.write('pw\\r\\nmore')")
    assert run_password_command(crlf, SECOND) == "pw"


def test_never_through_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    arg = f"x; touch {marker} $(touch {marker}) `touch {marker}`"
    got = run_password_command(py("import sys; print(sys.argv[1])", arg), SECOND)
    assert got == arg and not marker.exists()
    with pytest.raises(ValueError, match="list of arguments"):
        account(password_command="pass show mail/alice")


def test_the_arguments_are_exactly_what_the_file_says(tmp_path: Path) -> None:
    """The password travels over the pipe only: never in any process's arguments."""
    code = ("import os, sys; "
            "open(sys.argv[1] + '.self', 'wb').write(open('/proc/self/cmdline', 'rb').read()); "
            "open(sys.argv[1] + '.parent', 'wb').write("
            "open(f'/proc/{os.getppid()}/cmdline', 'rb').read()); print('Pw-9f3kQ')")
    argv = py(code, str(tmp_path / "cmdline"))
    before = Path(f"/proc/{os.getpid()}/cmdline").read_bytes()
    assert run_password_command(argv, SECOND) == "Pw-9f3kQ"
    child = (tmp_path / "cmdline.self").read_bytes()
    parent = (tmp_path / "cmdline.parent").read_bytes()
    assert child.split(b"\0")[:-1] == [a.encode() for a in argv]
    assert parent == before and b"Pw-9f3kQ" not in parent


def test_stdin_is_closed() -> None:
    # A command that would prompt (read stdin) gets EOF at once instead of hanging.
    code = "import sys; print(repr(sys.stdin.read()) + 'x')"
    assert run_password_command(py(code), SECOND) == "''x"


def test_a_failure_reports_status_and_stderr_without_the_password() -> None:
    code = ("import sys; print('hunter2-Zz'); "
            "print('gpg: decryption failed for hunter2-Zz', file=sys.stderr); "
            "print('pass: password=hunter2-Zz wrong', file=sys.stderr); sys.exit(3)")
    with pytest.raises(SecretError) as e:
        run_password_command(py(code), SECOND)
    text = str(e.value)
    assert "exited with status 3" in text and "pass: password=" in text
    assert "hunter2-Zz" not in text
    assert repr(PY) in text and "-c" not in text  # the program's name, not its arguments


def test_empty_output_missing_program_and_timeout(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="printed nothing"):
        run_password_command(py("print(); print('second line')"), SECOND)
    with pytest.raises(SecretError, match="cannot be run: No such file or directory"):
        run_password_command([str(tmp_path / "no-such-program")], SECOND)
    # A hung command (and a child it started) is killed at the timeout.
    pidfile = tmp_path / "grandchild.pid"
    code = ("import subprocess, sys, time; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
            f"open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(600)")
    with pytest.raises(SecretError, match=r"did not finish within 2 s \(killed\)"):
        run_password_command(py(code), timedelta(seconds=2))
    if pidfile.exists():  # it got that far: its child went with it
        pid = int(pidfile.read_text())
        deadline = time.monotonic() + 30
        while _alive(pid):
            assert time.monotonic() < deadline, "the command's child outlived the timeout"
            time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead (not yet reaped)


def test_one_password_source_per_account_and_credential() -> None:
    with pytest.raises(ValueError, match="give exactly one of password_env, password_file or "
                                         "password_command"):
        account(password_env="P", password_command=["pass", "x"])
    with pytest.raises(ValueError, match="password_command"):
        account(password_command=[])
    with pytest.raises(ValueError, match="empty"):
        account(password_command=["", "x"])


def test_the_policy_file(tmp_path: Path, monkeypatch) -> None:
    helper = tmp_path / "bin" / "get-password"
    helper.parent.mkdir()
    helper.write_text(f"#!{PY}\nimport sys\nprint('from-' + sys.argv[1])\n", encoding="utf-8")
    helper.chmod(0o755)
    monkeypatch.setenv("CREDS", str(tmp_path / "creds"))
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"state_dir: {tmp_path / 's'}\n"
        "policies: {p: {}}\n"
        "credentials:\n"
        "  master: {username: admin, login_as: authzid,\n"
        "           password_command: [./bin/get-password, master],\n"
        "           password_command_timeout: 5s}\n"
        "accounts:\n"
        "  - {name: a, host: h, username: a, policy: p,\n"
        "     password_command: [./bin/get-password, '${CREDS}/a.cred']}\n"
        "  - {name: b, host: h, username: b, policy: p, credentials: master}\n"
        "  - {name: c, host: h, username: c, policy: p, password_command: [no-such-prog-x]}\n",
        encoding="utf-8")
    config = load_config(policy, env={})
    a, b, c = config.accounts
    assert a.password_command == [str(helper.parent.parent / "bin/get-password"),
                                  f"{tmp_path / 'creds'}/a.cred"]
    assert read_password(a) == f"from-{tmp_path / 'creds'}/a.cred"
    assert read_password(b) == "from-master"
    assert b.password_command_timeout == timedelta(seconds=5)
    warned = config_warnings(config, env={})
    assert any("account c: password_command program 'no-such-prog-x' is not found" in w
               for w in warned), warned
    assert not any("account a" in w or "master" in w for w in warned), warned
    bad = tmp_path / "bad.yaml"
    bad.write_text("policies: {p: {}}\naccounts:\n"
                   "  - {name: a, host: h, username: a, policy: p,\n"
                   "     password_command: pass show a}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(bad, env={})
    assert "password_command" in str(e.value) and "list of arguments" in str(e.value)


def test_the_log_filter_scrubs_a_password_once_a_command_gave_it(caplog) -> None:
    from retention.service.logs import RedactionFilter

    secret = "Cmd-Secret-7QpL"
    run_password_command(py(f"print({secret!r})"), SECOND)
    assert secret in command_secrets()
    record = logging.LogRecord("retention", logging.ERROR, __file__, 1,
                               "server said: %s", (f"bad {secret}",), None)
    RedactionFilter().filter(record)
    assert secret not in record.getMessage() and "***" in record.getMessage()
