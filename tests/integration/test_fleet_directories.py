"""LDAP and SQL sources end to end: a policy file whose accounts come from the real slapd
and the real PostgreSQL, through ``retention check``, ``retention accounts`` and the
service's source refresh (which keeps the last good list when the server goes away)."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from retention.testing.postgres import Postgres, postgres_unavailable_reason
from retention.testing.slapd import Slapd, make_users, slapd_unavailable_reason
from tests.integration.helpers import run_cli
from tests.integration.sources_support import (  # noqa: F401 - fixtures
    USERS,
    postgres_fixture,
    require,
    slapd_fixture,
)

POLICIES = """\
policies:
  std: {rules: [{name: old, older_than: 365d, action: delete}]}
  keep: {}
  students: {rules: [{name: old, older_than: 90d, action: delete}]}
credentials:
  master: {username: admin, password_env: MASTER_PW, login_as: authzid}
"""


def policy_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICIES + textwrap.dedent(body), encoding="utf-8")
    return path


def ldap_source(slapd: Slapd, **extra: str) -> str:
    lines = "".join(f"    {k}: {v}\n" for k, v in extra.items())
    return f"""\
sources:
  - name: directory
    type: ldap
    url: {slapd.ldaps_url}
    ca_file: {slapd.ca_file}
    bind_dn: "{slapd.reader_dn}"
    bind_password_env: BIND_PW
    base: "{slapd.people}"
    filter: "(objectClass=inetOrgPerson)"
    page_size: 40
    attributes: {{username: mail}}
    account: {{host: mail.example.org, credentials: master, policy: std}}
    policy_by:
      - {{attribute: departmentNumber, value: vip, policy: keep}}
      - {{attribute: departmentNumber, value: stud*, policy: students}}
{lines}"""


@pytest.fixture
def env(slapd: Slapd) -> dict[str, str]:
    return {**os.environ, "BIND_PW": slapd.reader_password, "MASTER_PW": "unused-here"}


def test_ldap_accounts_and_their_policies(tmp_path: Path, slapd: Slapd,
                                          env: dict[str, str]) -> None:
    path = policy_file(tmp_path, ldap_source(slapd))
    res = run_cli(["accounts", "-c", str(path), "--format", "json"], env=env)
    assert res.code == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert len(rows) == USERS  # 300 entries in pages of 40
    assert rows["user0000@example.org"]["policy"] == "std"  # staff: the template
    assert rows["user0001@example.org"]["policy"] == "keep"  # vip
    assert rows["user0002@example.org"]["policy"] == "students"
    assert rows["first@example.org"]["policy"] == "keep"  # two mail values: the first
    assert rows["user0001@example.org"]["policy_from"].startswith("policy_by[0]")
    assert {r["credentials"] for r in rows.values()} == {"master"}
    assert {r["host"] for r in rows.values()} == {"mail.example.org"}


def test_ldap_check_reports_the_source(tmp_path: Path, slapd: Slapd,
                                       env: dict[str, str]) -> None:
    res = run_cli(["check", "-c", str(policy_file(tmp_path, ldap_source(slapd)))], env=env)
    assert res.code == 0, res.stderr
    assert f"yields {USERS} accounts" in res.stdout
    assert slapd.reader_password not in res.stdout + res.stderr


def test_ldap_wrong_bind_password_at_check_exits_2_without_it(
    tmp_path: Path, slapd: Slapd, env: dict[str, str]
) -> None:
    path = policy_file(tmp_path, ldap_source(slapd))
    res = run_cli(["check", "-c", str(path)], env={**env, "BIND_PW": "Not-The-Pw-42"})
    assert res.code == 2
    out = res.stdout + res.stderr
    assert "directory" in out and "Invalid credentials" in out
    assert "Not-The-Pw-42" not in out
    assert "Traceback" not in out


def test_ldap_unknown_ca_at_check_exits_2(tmp_path: Path, slapd: Slapd,
                                          env: dict[str, str]) -> None:
    body = ldap_source(slapd).replace(f"    ca_file: {slapd.ca_file}\n", "")
    res = run_cli(["check", "-c", str(policy_file(tmp_path, body))], env=env)
    assert res.code == 2
    assert "TLS" in res.stdout + res.stderr


SQL_ROWS = 1200


@pytest.fixture(scope="module")
def fleet_table(postgres: Postgres) -> Postgres:
    postgres.execute(
        "DROP TABLE IF EXISTS mailboxes",
        "CREATE TABLE mailboxes (email text PRIMARY KEY, server text, plan text)",
        "INSERT INTO mailboxes SELECT 'box' || lpad(g::text, 4, '0') || '@example.net', "
        "CASE WHEN g % 2 = 0 THEN 'imap2.example.net' ELSE 'imap1.example.net' END, "
        "CASE WHEN g % 100 = 0 THEN 'keep' END "
        f"FROM generate_series(0, {SQL_ROWS - 1}) g",
        f"GRANT SELECT ON mailboxes TO {postgres.reader}",
    )
    return postgres


def sql_source(pg: Postgres, query: str) -> str:
    url = pg.url().replace("postgresql+psycopg://", "postgresql://")
    return f"""\
sources:
  - name: database
    type: sql
    url: "{url}"
    password_env: DB_PW
    batch_size: 100
    query: "{query}"
    account: {{host: imap.example.net, credentials: master, policy: std}}
"""


def test_sql_accounts_with_per_row_host_and_policy(tmp_path: Path,
                                                   fleet_table: Postgres) -> None:
    query = ("SELECT email AS username, server AS host, plan AS policy FROM mailboxes "
             "ORDER BY email")
    path = policy_file(tmp_path, sql_source(fleet_table, query))
    env = {**os.environ, "DB_PW": fleet_table.reader_password, "MASTER_PW": "unused-here"}
    res = run_cli(["accounts", "-c", str(path), "--format", "json"], env=env)
    assert res.code == 0, res.stderr
    rows = json.loads(res.stdout)
    assert len(rows) == SQL_ROWS
    assert [r["name"] for r in rows[:2]] == ["box0000@example.net", "box0001@example.net"]
    assert rows[0]["host"] == "imap2.example.net" and rows[0]["policy"] == "keep"
    assert rows[1]["host"] == "imap1.example.net" and rows[1]["policy"] == "std"
    res = run_cli(["check", "-c", str(path)], env=env)
    assert res.code == 0, res.stderr
    assert f"yields {SQL_ROWS} accounts" in res.stdout


def test_sql_bad_query_at_check_exits_2(tmp_path: Path, fleet_table: Postgres) -> None:
    path = policy_file(tmp_path, sql_source(fleet_table, "SELECT email FROM nowhere"))
    env = {**os.environ, "DB_PW": fleet_table.reader_password, "MASTER_PW": "unused-here"}
    res = run_cli(["check", "-c", str(path)], env=env)
    assert res.code == 2
    out = res.stdout + res.stderr
    assert 'relation "nowhere" does not exist' in out
    assert fleet_table.reader_password not in out
    assert "Traceback" not in out


# -- serve: a directory that goes away keeps its last good list -------------------------


def _service(path: Path) -> Any:
    from prometheus_client import CollectorRegistry

    from retention.config.settings import ServiceSettings
    from retention.service.serve import RetentionService

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("no account runs in this test")

    return RetentionService(path, ServiceSettings(jitter=0, measure_every="1h"),
                            registry=CollectorRegistry(), run_account=never,
                            measure_account=never)


def test_serve_keeps_the_last_ldap_list_when_slapd_goes_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require("slapd", slapd_unavailable_reason())
    with Slapd(make_users(50)) as server:
        monkeypatch.setenv("BIND_PW", server.reader_password)
        monkeypatch.setenv("MASTER_PW", "unused-here")
        path = policy_file(tmp_path, f"state_dir: {tmp_path / 'state'}\n" + ldap_source(server))
        svc = _service(path)
        assert len(svc.loaded.config.accounts) == 50
        assert svc.refresh_source("directory") is True
    # slapd is gone: the refresh fails, the 50 accounts stay, the failure is recorded.
    assert svc.refresh_source("directory") is False
    assert len(svc.loaded.config.accounts) == 50
    assert svc.watch.up["directory"] is False
    assert svc.watch.failures["directory"] == 1


def test_serve_refreshes_from_postgres_and_keeps_the_list_when_it_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require("PostgreSQL", postgres_unavailable_reason())
    with Postgres() as pg:
        pg.execute("CREATE TABLE mailboxes (email text)",
                   "INSERT INTO mailboxes SELECT 'm' || g || '@example.net' "
                   "FROM generate_series(1, 30) g",
                   f"GRANT SELECT ON mailboxes TO {pg.reader}")
        monkeypatch.setenv("DB_PW", pg.reader_password)
        monkeypatch.setenv("MASTER_PW", "unused-here")
        body = sql_source(pg, "SELECT email AS username FROM mailboxes")
        svc = _service(policy_file(tmp_path, f"state_dir: {tmp_path / 'state'}\n" + body))
        assert len(svc.loaded.config.accounts) == 30
        pg.execute("INSERT INTO mailboxes VALUES ('late@example.net')")
        assert svc.refresh_source("database") is True
        assert len(svc.loaded.config.accounts) == 31
    assert svc.refresh_source("database") is False
    assert len(svc.loaded.config.accounts) == 31
    assert svc.watch.up["database"] is False
