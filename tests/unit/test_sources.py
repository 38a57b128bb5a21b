"""Sources and credentials: policy_by, templates, passwd-file/csv/doveadm readers,
duplicate names, the lazy account list, and the errors each bad input gives."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from retention.cli import main
from retention.config.load import load_config
from retention.config.schema import Config
from retention.errors import ConfigError, SourceError
from retention.sources import load_fleet, source_lists
from retention.sources.model import FleetAccounts

POLICIES = """\
policies:
  std: {rules: [{name: old, older_than: 365d, action: delete}]}
  keep: {}
  isp: {}
  moving: {rules: [{name: mv, older_than: 30d, action: {move_to: Old}}]}
credentials:
  master: {username: admin, password_env: MASTER_PW, login_as: separator}
  proxy: {username: admin, password_env: MASTER_PW, login_as: authzid}
  shared: {password_env: SHARED_PW}
"""


def write(tmp_path: Path, body: str, files: dict[str, str] | None = None) -> Path:
    for name, text in (files or {}).items():
        (tmp_path / name).write_text(textwrap.dedent(text), encoding="utf-8")
    path = tmp_path / "policy.yaml"
    path.write_text(POLICIES + textwrap.dedent(body), encoding="utf-8")
    return path


def fleet(path: Path) -> Config:
    return load_fleet(load_config(path, env={}))


PASSWD = """\
# Dovecot users
alice@example.org:{PLAIN}secret1:1000:1000::/home/alice::userdb_quota_rule=*:storage=1G
bob@vip.example.com:{SHA512-CRYPT}$6$x::::::

carol@example.net::::::
"""

SOURCE = """\
sources:
  - name: dovecot
    type: passwd-file
    path: users
    account: {host: mail.example.org, credentials: master, policy: std}
    policy_by:
      - {match: '*@VIP.example.com', policy: keep}
      - {domain: example.net, policy: isp}
"""


def test_policy_by_first_match_wins_then_the_template(tmp_path: Path) -> None:
    config = fleet(write(tmp_path, SOURCE, {"users": PASSWD}))
    got = {a.name: (a.policy, a.username, a.login_names()) for a in config.accounts}
    assert got == {
        "alice@example.org": ("std", "alice@example.org", ("alice@example.org*admin", None)),
        "bob@vip.example.com": ("keep", "bob@vip.example.com",
                                ("bob@vip.example.com*admin", None)),
        "carol@example.net": ("isp", "carol@example.net", ("carol@example.net*admin", None)),
    }
    src = source_lists(config)["dovecot"]
    assert [src.chosen_by(i) for i in range(len(src))] == [
        "template", "policy_by[0] match *@VIP.example.com", "policy_by[1] domain example.net"]
    # The password comes from the credential; the passwd-file's passwords are never read.
    assert {a.password_env for a in config.accounts} == {"MASTER_PW"}
    assert "secret1" not in repr(src.__dict__)


def test_attribute_rules_read_passwd_extra_fields(tmp_path: Path) -> None:
    body = SOURCE.replace(
        "      - {match:", "      - {attribute: userdb_quota_rule, value: '*1G', policy: isp}\n"
        "      - {match:")
    config = fleet(write(tmp_path, body, {"users": PASSWD}))
    assert config.account("alice@example.org").policy == "isp"
    assert config.account("bob@vip.example.com").policy == "keep"


def test_authzid_and_plain_credentials(tmp_path: Path) -> None:
    body = SOURCE.replace("credentials: master", "credentials: proxy")
    config = fleet(write(tmp_path, body + textwrap.dedent("""\
        accounts:
          - {name: me, host: h, username: me@x, credentials: shared, policy: std}
        """), {"users": PASSWD}))
    assert config.account("alice@example.org").login_names() == ("admin", "alice@example.org")
    me = config.account("me")
    assert me.login_names() == ("me@x", None) and me.password_env == "SHARED_PW"


def test_csv_columns_override_the_template(tmp_path: Path) -> None:
    csv_text = """\
    name,username,host,port,policy,ou
    a1,a1@example.org,,,,sales
    a2,a2@example.org,other.example.org,1993,keep,
    a3,a3@example.org,,,,eng
    """
    body = """\
    sources:
      - name: people
        type: csv
        path: people.csv
        account: {host: mail.example.org, credentials: master, policy: std}
        policy_by: [{attribute: ou, value: sales, policy: isp}]
    """
    config = fleet(write(tmp_path, body, {"people.csv": csv_text}))
    a1, a2, a3 = (config.account(n) for n in ("a1", "a2", "a3"))
    assert (a1.host, a1.effective_port(), a1.policy) == ("mail.example.org", 993, "isp")
    assert (a2.host, a2.port, a2.policy) == ("other.example.org", 1993, "keep")
    assert a3.policy == "std"
    # Two distinct column combinations: two prototypes, validated once each.
    assert len(source_lists(config)["people"].prototypes) == 2


def test_bad_entries_are_skipped_with_file_and_line(tmp_path: Path) -> None:
    csv_text = """\
    username,port,policy
    ok@example.org,,
    bad name,,
    p@example.org,notaport,
    q@example.org,,nosuch
    """
    body = """\
    sources:
      - {name: people, type: csv, path: people.csv, account: {host: h, credentials: master}}
    """
    config = fleet(write(tmp_path, body, {"people.csv": csv_text}))
    src = source_lists(config)["people"]
    # No policy from anywhere for ok@: skipped too.
    assert len(src) == 0 and src.skipped_count == 4
    text = "\n".join(src.skipped)
    assert f"{tmp_path}/people.csv:3: 'bad name' cannot be an account name" in text
    assert "people.csv:4: port: must be a number" in text
    assert "people.csv:5: unknown policy 'nosuch'" in text
    assert "people.csv:2: no policy" in text


def test_pop3_template_with_a_move_rule_skips_those_entries(tmp_path: Path) -> None:
    body = SOURCE.replace("policy: std}", "policy: std, protocol: pop3}").replace(
        "policy: keep}", "policy: moving}")
    config = fleet(write(tmp_path, body, {"users": PASSWD}))
    src = source_lists(config)["dovecot"]
    assert "bob@vip.example.com" not in src.names
    assert any("not possible over POP3" in s for s in src.skipped)


def test_duplicate_names_name_both_places(tmp_path: Path) -> None:
    body = SOURCE + textwrap.dedent("""\
      - name: again
        type: csv
        path: again.csv
        account: {host: h, credentials: master, policy: std}
    accounts:
      - {name: carol@example.net, host: h, username: c, password_env: X, policy: std}
    """)
    path = write(tmp_path, body, {"users": PASSWD, "again.csv": "username\nalice@example.org\n"})
    with pytest.raises(ConfigError) as e:
        fleet(path)
    text = str(e.value)
    assert (f"account 'carol@example.net' is listed twice: accounts.0 and source dovecot "
            f"({tmp_path}/users:5)") in text
    assert (f"account 'alice@example.org' is listed twice: source dovecot ({tmp_path}/users:2)"
            f" and source again ({tmp_path}/again.csv:2)") in text


def test_template_errors_name_file_line_field(tmp_path: Path) -> None:
    body = """\
    sources:
      - name: dovecot
        type: passwd-file
        path: users
        account: {host: h, credentials: nosuch, policy: std, colour: blue}
        policy_by: [{domain: x, policy: unknown}]
      - name: dovecot
        type: passwd-file
        path: users
        account: {host: h, username: x, password_env: P, policy: std}
    """
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, body), env={})
    text = str(e.value)
    assert "sources.0.account.colour: unknown key" in text
    assert "sources.0.policy_by.0.policy: unknown policy 'unknown'" in text
    assert "sources.1.name: duplicate source name 'dovecot'" in text
    assert "sources.1.account.username: comes from each entry" in text
    assert "policy.yaml:" in text


def test_unknown_credential_on_an_account(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, """\
        accounts:
          - {name: me, host: h, username: u, credentials: nope, policy: std}
        """), env={})
    assert "accounts.0.credentials: unknown credential 'nope'" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, """        accounts:
          - {name: me2, host: h, username: u, credentials: shared, password_env: P, policy: std}
        """), env={})
    assert "accounts.0.credentials: give either credentials or password_env" in str(e.value)


def test_credential_needs_admin_for_master_logins(tmp_path: Path) -> None:
    path = write(tmp_path, "accounts: [{name: a, host: h, username: u, password_env: P, "
                 "policy: std}]\n")
    path.write_text(path.read_text().replace("master: {username: admin, ", "master: {"))
    with pytest.raises(ConfigError) as e:
        load_config(path, env={})
    assert "credentials.master.username: login_as separator needs the admin's username" in str(
        e.value)


def test_no_accounts_and_no_sources_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "accounts: []\n"), env={})
    assert "accounts: list at least one account or add a source" in str(e.value)


def test_doveadm_source_runs_a_command_without_a_shell(tmp_path: Path) -> None:
    script = tmp_path / "list.py"
    script.write_text("print('u1@example.org')\nprint('')\nprint('u2@example.org')\n")
    body = f"""\
    sources:
      - name: dove
        type: doveadm
        command: [{sys.executable!r}, {str(script)!r}]
        account: {{host: h, credentials: master, policy: std}}
    """
    config = fleet(write(tmp_path, body))
    assert [a.name for a in config.accounts] == ["u1@example.org", "u2@example.org"]


def test_doveadm_failure_is_a_source_error(tmp_path: Path) -> None:
    script = tmp_path / "fail.py"
    script.write_text("import sys\nsys.stderr.write('Error: User listing returned failure\\n')\n"
                      "sys.exit(75)\n")
    body = f"""\
    sources:
      - name: dove
        type: doveadm
        command: [{sys.executable!r}, {str(script)!r}]
        account: {{host: h, credentials: master, policy: std}}
    """
    with pytest.raises(SourceError) as e:
        fleet(write(tmp_path, body))
    assert "the userdb cannot list its users" in str(e.value)
    assert "static, prefetch and checkpassword" in str(e.value)


def test_lazy_list_is_a_sequence_with_a_name_index(tmp_path: Path) -> None:
    config = fleet(write(tmp_path, SOURCE + "accounts: [{name: me, host: h, username: u, "
                         "password_env: P, policy: std}]\n", {"users": PASSWD}))
    accounts = config.accounts
    assert isinstance(accounts, FleetAccounts)
    assert len(accounts) == 4 and accounts[0].name == "me"
    assert accounts[-1].name == "carol@example.net"
    assert accounts.index(accounts[2]) == 2
    assert "bob@vip.example.com" in accounts and "nobody" not in accounts
    with pytest.raises(KeyError):
        config.account("nobody")


def test_accounts_command_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, SOURCE, {"users": PASSWD})
    assert main(["accounts", "-c", str(path), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[1] == {
        "name": "bob@vip.example.com", "username": "bob@vip.example.com", "protocol": "imap",
        "host": "mail.example.org", "port": 993, "policy": "keep",
        "policy_from": "policy_by[0] match *@VIP.example.com", "credentials": "master",
        "login_as": "separator", "source": "dovecot",
    }
    assert main(["accounts", "-c", str(path), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("name,username,protocol,host,port,policy,policy_from")
    assert len(lines) == 4
    assert main(["accounts", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "carol@example.net: imap mail.example.org:993" in out
    assert "policy=isp (from policy_by[1] domain example.net) credentials=master" in out


def test_check_reports_sources_and_never_a_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MASTER_PW", "hunter2-master")
    path = write(tmp_path, SOURCE, {"users": PASSWD})
    assert main(["check", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "source dovecot: passwd-file" in out
    assert "yields 3 accounts: isp=1, keep=1, std=1" in out
    assert "logs in with: master" in out
    assert "hunter2" not in out + err and "secret1" not in out + err


def test_check_fails_for_an_unreadable_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, SOURCE)
    assert main(["check", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:" in err and "sources.0: source dovecot: cannot read" in err
