"""``serve`` and its sources: refresh jobs, a source that disappears keeps its last good list
(with a metric and a log line), recovery, reload while a source is down (fake runs, no
mail server)."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from retention.config.settings import ServiceSettings
from retention.errors import SourceError
from retention.service.serve import RetentionService, load_policy
from retention.service.sources import SourceWatch
from tests.unit.test_service_unit import Fake, wait_active

NEVER = "0 0 1 1 *"


def write(tmp_path: Path, users: list[str], *, refresh: str = "10m") -> Path:
    (tmp_path / "users").write_text("".join(f"{u}:{{PLAIN}}pw::::::\n" for u in users))
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(f"""\
        state_dir: {tmp_path / 'state'}
        policies:
          default: {{schedule: '{NEVER}'}}
        credentials:
          master: {{username: admin, password_env: RT_PW, login_as: separator}}
        sources:
          - name: fleet
            type: passwd-file
            path: users
            refresh: {refresh}
            account: {{host: h, credentials: master, policy: default}}
        accounts:
          - {{name: own, host: h, username: u, password_env: RT_PW, policy: default}}
        """))
    return path


@pytest.fixture
def service(tmp_path: Path):
    made: list[RetentionService] = []

    def make(path: Path, fake: Fake) -> RetentionService:
        settings = ServiceSettings(jitter=0, measure_every="1h", concurrency=2,
                                   max_connections_per_host=2, shutdown_timeout=5)
        svc = RetentionService(path, settings, registry=CollectorRegistry(),
                               run_account=fake.run, measure_account=fake.measure)
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.shutdown(timeout=2)


def names(svc: RetentionService) -> list[str]:
    return [a.name for a in svc.loaded.config.accounts]


def up(svc: RetentionService) -> tuple[float | None, float | None]:
    get = svc.registry.get_sample_value
    return (get("retention_source_up", {"source": "fleet"}),
            get("retention_source_accounts", {"source": "fleet"}))


def test_a_source_that_disappears_keeps_its_last_list(
    tmp_path: Path, service, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, ["a@x.org", "b@x.org"])
    fake = Fake()
    svc = service(path, fake)
    svc.start(http=False)
    job = svc._scheduler.get_job("source:fleet")
    assert job is not None and job.trigger.interval.total_seconds() == 600
    assert names(svc) == ["own", "a@x.org", "b@x.org"]
    assert up(svc) == (1.0, 2.0)

    (tmp_path / "users").unlink()
    with caplog.at_level(logging.ERROR, logger="retention.service"):
        assert svc.refresh_source("fleet") is False
    assert names(svc) == ["own", "a@x.org", "b@x.org"]  # kept
    assert up(svc) == (0.0, 2.0)
    assert svc.registry.get_sample_value("retention_source_refresh_failures_total",
                                         {"source": "fleet"}) == 1
    assert "event=source_failed source=fleet kept=2" in caplog.text
    assert "cannot read" in caplog.text

    # The kept accounts still run at the next sweep.
    svc.sweep(NEVER)
    wait_active(fake, 0)
    assert svc.pool.wait_idle(10)
    assert sorted(r[0] for r in fake.runs) == ["a@x.org", "b@x.org", "own"]

    # A reload while the source is still gone keeps the list too.
    assert svc.reload() is True
    assert names(svc) == ["own", "a@x.org", "b@x.org"]

    # Back, with one more user: the refresh adopts it.
    (tmp_path / "users").write_text("a@x.org::::::\nb@x.org::::::\nc@x.org::::::\n")
    assert svc.refresh_source("fleet") is True
    assert names(svc) == ["own", "a@x.org", "b@x.org", "c@x.org"]
    assert up(svc) == (1.0, 3.0)
    assert svc.registry.get_sample_value("retention_schedule_period_seconds",
                                         {"account": "c@x.org"}) is not None


def test_a_refresh_that_would_list_a_name_twice_keeps_the_old_list(
    tmp_path: Path, service, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, ["a@x.org"])
    svc = service(path, Fake())
    (tmp_path / "users").write_text("a@x.org::::::\nown::::::\n")
    with caplog.at_level(logging.ERROR, logger="retention.service"):
        assert svc.refresh_source("fleet") is False
    assert names(svc) == ["own", "a@x.org"]
    assert "listed twice" in caplog.text


def test_serve_starts_with_a_source_down_and_says_so(tmp_path: Path) -> None:
    path = write(tmp_path, ["a@x.org"])
    (tmp_path / "users").unlink()
    with pytest.raises(SourceError):
        load_policy(path)  # check/run: a source that cannot be read is an error
    watch = SourceWatch()
    loaded = load_policy(path, watch=watch)  # serve: start without it, retry on refresh
    assert [a.name for a in loaded.config.accounts] == ["own"]
    assert watch.up == {"fleet": False}
