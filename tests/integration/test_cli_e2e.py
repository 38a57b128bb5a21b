"""The ``retention`` command end to end on a real Dovecot: exit codes, usage, failures.

Each test runs ``python -m retention`` in a subprocess with the passwords in environment
variables, exactly as an operator would, and checks what it prints and what it did.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from retention.testing.dovecot import MailUser, SeedMessage
from tests.integration.helpers import ACCOUNT_KEYS, USAGE_KEYS, PolicyFile, ago, uid_of

MiB = 1024 * 1024
SEEN = frozenset({"\\Seen"})

OLD_INBOX = {"p": {"rules": [
    {"name": "old", "folders": ["INBOX"], "older_than": "1y", "action": "delete"}]}}
PROBLEM_LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+): (?P<field>[\w.]+): (?P<msg>.+)$")


def seed_old_and_young(user: MailUser, old: int = 2, young: int = 1) -> list[bytes]:
    """``old`` read messages received 3 years ago, then ``young`` received yesterday."""
    return user.seed("INBOX", [
        *(SeedMessage(received=ago(days=3 * 365), flags=SEEN, size=3000) for _ in range(old)),
        *(SeedMessage(received=ago(days=1), flags=SEEN, size=3000) for _ in range(young)),
    ])


def no_traceback(*streams: str) -> None:
    for s in streams:
        assert "Traceback" not in s, s


# ------------------------------------------- 6. a wrong password fails that account only


def auth_failures(user: MailUser) -> int:
    log = user.server.log_path.read_text(errors="replace")
    return sum(1 for line in log.splitlines()
               if f"({user.name}," in line and "password mismatch" in line.lower())


def test_wrong_password_fails_only_that_account(
        tmp_path: Path, make_user: Callable[..., MailUser]) -> None:
    good, bad = make_user(), make_user()
    good_raws = seed_old_and_young(good)
    seed_old_and_young(bad)
    bad_before = bad.folder_state()
    wrong = "Wr0ng-S3cret-q8Zx"
    pf = PolicyFile(tmp_path, OLD_INBOX)
    # The failing account first: the one after it must still run.
    bad_name = pf.add_imap(bad, password=wrong)
    good_name = pf.add_imap(good)
    output = tmp_path / "out" / "report.json"
    failures_before = auth_failures(bad)

    result = pf.run(output=output)

    assert result.code == 1, str(result)
    no_traceback(result.stdout, result.stderr)
    report_text = output.read_text(encoding="utf-8")
    for text in (result.stdout, result.stderr, report_text):
        assert wrong not in text
        assert good.password not in text and bad.password not in text
    report = json.loads(report_text)
    accounts = {a["account"]: a for a in report["accounts"]}
    assert list(accounts) == [bad_name, good_name]
    failed = accounts[bad_name]
    assert ACCOUNT_KEYS <= set(failed)  # every key, null where unknown
    assert failed["status"] == "error"
    assert failed["error_kind"] == "auth"
    assert failed["error"] and "\n" not in failed["error"]
    assert failed["actions"] == []
    assert bad.folder_state() == bad_before
    assert bad_name in result.stderr  # the operator sees which account failed
    # A rejected login is never retried within the run (it could lock the account).
    time.sleep(0.6)  # Dovecot flushes auth failures on a 500 ms timer
    bad.server.wait_for_log(lambda _: auth_failures(bad) > failures_before)
    assert auth_failures(bad) - failures_before == 1, bad.server.log_tail(30)

    ok = accounts[good_name]
    assert ok["status"] == "ok" and ok["error"] is None and ok["error_kind"] is None
    assert {a["result"] for a in ok["actions"]} == {"done"}
    assert len(ok["actions"]) == 2
    good_after = good.folder_state()
    assert set(good_after["INBOX"]) == {uid_of(good_after, "INBOX", good_raws[2])}


def test_missing_secret_fails_only_that_account(
        tmp_path: Path, make_user: Callable[..., MailUser]) -> None:
    first, second = make_user(), make_user()
    pf = PolicyFile(tmp_path, OLD_INBOX)
    unset = pf.add_imap(first)
    fine = pf.add_imap(second)
    var = pf.accounts[0]["password_env"]
    del pf.env[var]

    check = pf.cli("check")
    assert check.code == 0, str(check)  # a warning, not an error
    assert var in check.stderr

    result = pf.run(dry_run=True)
    assert result.code == 1, str(result)
    no_traceback(result.stderr)
    assert result.account(unset)["status"] == "error"
    assert result.account(unset)["error_kind"] == "config"
    assert var in result.account(unset)["error"]
    assert result.account(fine)["status"] == "ok"


# ---------------------------------------- 7. no quota plugin: summed sizes, policy limit


def test_no_quota_plugin_falls_back_to_summed_sizes(
        tmp_path: Path, make_user: Callable[..., MailUser]) -> None:
    user = make_user(None, quota=False)
    raws = user.seed("INBOX", [SeedMessage(received=ago(days=d), flags=SEEN, size=5000 + d)
                               for d in (1, 2, 3)])
    raws += user.seed("Archive", [SeedMessage(received=ago(days=d), size=7000 + d)
                                  for d in (400, 500)])
    total = sum(len(r) for r in raws)
    assert user.usage() == (total, None)  # the rig's own sum of virtual sizes
    pf = PolicyFile(tmp_path, {"p": {"quota": {"limit": "10MiB"}, "rules": [
        {"name": "old", "folders": ["INBOX"], "older_than": "1y", "action": "delete"}]}})
    name = pf.add_imap(user)

    result = pf.usage()

    assert result.code == 0, str(result)
    (row,) = result.report["accounts"]
    assert USAGE_KEYS <= set(row)
    assert row["account"] == name and row["status"] == "ok" and row["error"] is None
    assert row["source"] == "sum"
    assert row["usage_bytes"] == total
    assert row["limit_bytes"] == 10 * MiB
    assert row["ratio"] == pytest.approx(total / (10 * MiB))

    dry = pf.run(dry_run=True)
    assert dry.code == 0, str(dry)
    acct = dry.account(name)
    assert acct["usage_bytes"] == total and acct["limit_bytes"] == 10 * MiB
    assert acct["ratio"] == pytest.approx(total / (10 * MiB), rel=1e-4)


# ----------------------------------------------------------------- 11. usage --format json


@pytest.mark.parametrize("security", ["tls", "starttls", "none"])
def test_usage_json_matches_doveadm_quota(tmp_path: Path, mail_user: MailUser,
                                          security: str) -> None:
    seed_old_and_young(mail_user, old=3, young=2)
    used, limit = mail_user.usage()  # doveadm quota get
    pf = PolicyFile(tmp_path, {"p": {"quota": {"limit": "1GiB"}, "rules": []}})
    name = pf.add_imap(mail_user, security=security)

    result = pf.usage()

    assert result.code == 0, str(result)
    doc = result.report
    assert set(doc) == {"accounts"}
    (row,) = doc["accounts"]
    assert USAGE_KEYS <= set(row), USAGE_KEYS - set(row)
    assert row == row | {
        "account": name, "protocol": "imap", "status": "ok", "error": None,
        "usage_bytes": used, "limit_bytes": limit, "source": "quota",
    }
    assert limit == 50 * MiB  # the server's quota wins over the policy's quota.limit
    assert row["ratio"] == pytest.approx(used / limit)

    text = pf.usage(fmt="text")
    assert text.code == 0, str(text)
    assert name in text.stdout


# -------------------------------------------------------------------------- 12. exit codes


def test_exit_zero_and_output_file(tmp_path: Path, mail_user: MailUser) -> None:
    seed_old_and_young(mail_user)
    before = mail_user.folder_state()
    pf = PolicyFile(tmp_path, OLD_INBOX)
    name = pf.add_imap(mail_user)
    output = tmp_path / "reports" / "dry.json"

    result = pf.run(dry_run=True, output=output)

    assert result.code == 0, str(result)
    assert result.stdout.strip() == ""  # the report went to the file
    report = json.loads(output.read_text(encoding="utf-8"))
    assert report["dry_run"] is True
    (acct,) = report["accounts"]
    assert acct["account"] == name and acct["status"] == "ok"
    assert len(acct["actions"]) == 2
    assert mail_user.folder_state() == before

    text = pf.run(dry_run=True, fmt="text", output=tmp_path / "reports" / "dry.txt")
    assert text.code == 0, str(text)
    body = (tmp_path / "reports" / "dry.txt").read_text(encoding="utf-8")
    assert name in body
    assert re.search(r"total delete: 2 messages", body), body


def test_text_report_on_stdout(tmp_path: Path, mail_user: MailUser) -> None:
    seed_old_and_young(mail_user, old=3)
    pf = PolicyFile(tmp_path, OLD_INBOX)
    name = pf.add_imap(mail_user)
    result = pf.run(dry_run=True, fmt="text")
    assert result.code == 0, str(result)
    assert name in result.stdout
    assert "total delete: 3 messages" in result.stdout
    assert "planned" in result.stdout


def test_unknown_account_is_exit_two(tmp_path: Path, mail_user: MailUser) -> None:
    pf = PolicyFile(tmp_path, OLD_INBOX)
    pf.add_imap(mail_user)
    for command in (["run", "--dry-run"], ["run"], ["usage"]):
        result = pf.cli(*command, "--account", "nobody-here")
        assert result.code == 2, str(result)
        assert "nobody-here" in result.stderr
        no_traceback(result.stdout, result.stderr)


BAD_POLICIES = [
    # (YAML text, dotted field, line)
    ("state_dir: ./s\npolicies:\n  p:\n    rules: []\n    colour: blue\n"
     "accounts:\n  - {name: a, host: h, username: u, password_env: X, policy: p}\n",
     "policies.p.colour", 5),
    ("policies:\n  p:\n    rules:\n      - name: r\n        older_than: 30 days\n"
     "        action: delete\n"
     "accounts:\n  - {name: a, host: h, username: u, password_env: X, policy: p}\n",
     "policies.p.rules.0.older_than", 5),
    ("policies:\n  p: {}\n"
     "accounts:\n  - name: a\n    host: h\n    username: u\n    password_env: X\n"
     "    policy: nope\n",
     "accounts.0.policy", 8),
]


@pytest.mark.parametrize(("text", "field", "line"), BAD_POLICIES)
def test_bad_policy_is_exit_two_with_file_line_field(tmp_path: Path, text: str, field: str,
                                                     line: int) -> None:
    from tests.integration.helpers import run_cli

    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    for args in (["check", "-c", str(path)], ["run", "--dry-run", "-c", str(path)],
                 ["usage", "-c", str(path)]):
        result = run_cli(args)
        assert result.code == 2, str(result)
        no_traceback(result.stdout, result.stderr)
        problems = [PROBLEM_LINE.match(ln) for ln in result.stderr.splitlines()]
        hits = [m for m in problems if m and m["field"] == field]
        assert hits, result.stderr
        assert hits[0]["file"] == str(path) and int(hits[0]["line"]) == line, result.stderr


def test_usage_error_is_exit_two(tmp_path: Path) -> None:
    from tests.integration.helpers import run_cli

    for args in (["run", "--format", "xml", "-c", str(tmp_path / "x.yaml")],
                 ["frobnicate"], ["run", "-c", str(tmp_path / "missing.yaml")]):
        result = run_cli(args)
        assert result.code == 2, str(result)
        no_traceback(result.stdout, result.stderr)


# ------------------------------------ timer mode: metrics for node_exporter's textfile


def test_run_writes_the_metrics_textfile(tmp_path: Path, mail_user: MailUser) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    seed_old_and_young(mail_user, old=2, young=1)
    pf = PolicyFile(tmp_path, OLD_INBOX)
    name = pf.add_imap(mail_user)
    collector = tmp_path / "textfile"
    collector.mkdir()
    prom = collector / "retention.prom"

    def values() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        text = prom.read_text(encoding="utf-8")
        return {(s.name, frozenset(s.labels.items())): s.value
                for f in text_string_to_metric_families(text) for s in f.samples}

    first = pf.cli("run", "--format", "json", "--metrics-textfile", str(prom))
    assert first.code == 0, str(first)
    got = values()
    deleted = ("retention_actions_total",
               frozenset({("account", name), ("action", "delete"), ("rule", "old")}))
    assert got[deleted] == 2
    used, _limit = mail_user.usage()
    assert got[("retention_mailbox_usage_bytes", frozenset({("account", name)}))] == used
    assert got[("retention_last_success_timestamp_seconds", frozenset({("account", name)}))] > 0
    assert [p.name for p in collector.iterdir()] == ["retention.prom"]

    # The next timer run carries the counters on (a fresh process every time).
    seed_old_and_young(mail_user, old=1, young=0)
    second = pf.cli("run", "--format", "json", "--metrics-textfile", str(prom))
    assert second.code == 0, str(second)
    assert values()[deleted] == 3


# --------------------------------------- log lines: logfmt or JSON, -v scoped to retention

LOG_LINE = re.compile(r"^ts=\S+ level=(debug|info|warning|error) logger=\S+ [A-Za-z_]\w*=")


def test_cli_log_lines_are_logfmt_or_json_and_scrubbed(
        tmp_path: Path, make_user: Callable[..., MailUser]) -> None:
    good, bad = make_user(), make_user()
    seed_old_and_young(good)
    pf = PolicyFile(tmp_path, OLD_INBOX)
    good_name = pf.add_imap(good)
    bad_name = pf.add_imap(bad, password="Wr0ng-S3cret-q8Zx")

    result = pf.cli("run", "--dry-run", "-v")

    assert result.code == 1, str(result)
    lines = result.stderr.splitlines()
    assert lines and all(LOG_LINE.match(line) for line in lines), result.stderr
    assert any(f"event=account_run account={good_name} " in ln for ln in lines), result.stderr
    assert any(f"level=error logger=retention.runs event=account_failed account={bad_name} "
               "error_kind=auth" in ln for ln in lines), result.stderr
    assert "Wr0ng-S3cret-q8Zx" not in result.stderr and good.password not in result.stderr

    pf.extra = {"service": {"log_format": "json"}}
    pf.write()
    as_json = pf.cli("run", "--dry-run", "-v")
    assert as_json.code == 1, str(as_json)
    docs = [json.loads(line) for line in as_json.stderr.splitlines()]
    assert {d["level"] for d in docs} <= {"debug", "info", "warning", "error"}
    assert {(d.get("event"), d.get("account")) for d in docs} >= {
        ("account_run", good_name), ("account_failed", bad_name)}
    # The environment wins over the file, as for serve.
    back = pf.cli("run", "--dry-run", "-q", env={"RETENTION_LOG_FORMAT": "logfmt"})
    assert back.stderr and all(LOG_LINE.match(ln) for ln in back.stderr.splitlines()), back
    assert "event=account_run" not in back.stderr  # -q: errors only


def test_vv_is_this_package_vvv_adds_the_libraries_wire_log(
        tmp_path: Path, mail_user: MailUser) -> None:
    pf = PolicyFile(tmp_path, OLD_INBOX)
    pf.add_imap(mail_user)

    ours = pf.cli("run", "--dry-run", "-vv")
    assert ours.code == 0, str(ours)
    assert "logger=retention." in ours.stderr
    assert "logger=imapclient" not in ours.stderr, ours.stderr[-3000:]
    assert "level=debug" in ours.stderr

    every = pf.cli("-v", "run", "-c", str(pf.path), "--dry-run", "-vv")  # -v + -vv: -vvv
    assert every.code == 0, str(every)
    assert "logger=imapclient" in every.stderr, every.stderr[-3000:]
    assert mail_user.password not in every.stderr
    assert all(LOG_LINE.match(ln) for ln in every.stderr.splitlines()), every.stderr[-3000:]
