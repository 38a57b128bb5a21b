"""``service.timezone``: schedules read in an IANA zone (default UTC), across DST changes.

Europe/Paris in 2026: the clocks go forward on 29 March (02:00 -> 03:00) and back on
25 October (03:00 -> 02:00).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from retention.config.load import load_config
from retention.config.schedule import ScheduleError, parse_schedule, schedule_period
from retention.config.schema import Config
from retention.errors import ConfigError

PARIS = ZoneInfo("Europe/Paris")


def fires(schedule: str, start: datetime, n: int, tz: str = "Europe/Paris") -> list[datetime]:
    trigger = parse_schedule(schedule, timezone=tz)
    out: list[datetime] = []
    prev, now = None, start
    for _ in range(n):
        nxt = trigger.get_next_fire_time(prev, now)
        assert nxt is not None
        out.append(nxt.astimezone(UTC))
        prev = now = nxt
    return out


def z(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_the_default_is_utc_not_the_hosts_zone(monkeypatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    assert parse_schedule("0 3 * * *").timezone is UTC
    first = parse_schedule("0 3 * * *").get_next_fire_time(None, z("2026-06-01T00:00:00"))
    assert first == z("2026-06-01T03:00:00")
    config = Config.model_validate({"policies": {"p": {}}, "accounts": [
        {"name": "a", "host": "h", "username": "u", "password_env": "P", "policy": "p"}]})
    assert config.service.timezone == "UTC"


def test_a_daily_schedule_keeps_its_wall_clock_when_the_clocks_go_forward() -> None:
    got = fires("0 3 * * *", z("2026-03-27T00:00:00"), 4)
    assert [t.astimezone(PARIS).hour for t in got] == [3, 3, 3, 3]
    assert got == [z("2026-03-27T02:00:00"), z("2026-03-28T02:00:00"),
                   z("2026-03-29T01:00:00"), z("2026-03-30T01:00:00")]
    assert got[2] - got[1] == timedelta(hours=23)


def test_a_time_that_does_not_exist_that_night_fires_once() -> None:
    got = fires("30 2 * * *", z("2026-03-28T00:00:00"), 3)
    # 02:30 does not exist on 29 March: it fires once, at 03:30 summer time.
    assert got == [z("2026-03-28T01:30:00"), z("2026-03-29T01:30:00"), z("2026-03-30T00:30:00")]
    assert got[1].astimezone(PARIS).strftime("%H:%M") == "03:30"


def test_a_fixed_time_fires_once_when_the_clocks_go_back() -> None:
    """02:30 happens twice on 25 October; APScheduler 3 alone fires at both."""
    got = fires("30 2 * * *", z("2026-10-24T00:00:00"), 3)
    assert got == [z("2026-10-24T00:30:00"), z("2026-10-25T00:30:00"), z("2026-10-26T01:30:00")]
    on_the_day = [t for t in got if t.astimezone(PARIS).date().isoformat() == "2026-10-25"]
    assert len(on_the_day) == 1


def test_an_hourly_schedule_runs_by_real_time_through_the_repeated_hour() -> None:
    got = fires("0 * * * *", z("2026-10-24T23:30:00"), 4)
    assert got == [z("2026-10-25T00:00:00"), z("2026-10-25T01:00:00"),
                   z("2026-10-25T02:00:00"), z("2026-10-25T03:00:00")]
    assert [t.astimezone(PARIS).strftime("%H:%M") for t in got] == [
        "02:00", "02:00", "03:00", "04:00"]


def test_the_period_of_a_daily_schedule_near_a_change() -> None:
    assert schedule_period("0 3 * * *", now=z("2026-03-27T12:00:00"),
                           timezone="Europe/Paris") == 23 * 3600
    assert schedule_period("0 3 * * *", now=z("2026-06-01T12:00:00"),
                           timezone="Europe/Paris") == 24 * 3600


def test_utc_and_another_zone_differ() -> None:
    start = z("2026-06-01T00:00:00")
    assert fires("0 3 * * *", start, 1, "UTC") == [z("2026-06-01T03:00:00")]
    assert fires("0 3 * * *", start, 1, "Europe/Paris") == [z("2026-06-01T01:00:00")]
    assert fires("0 3 * * *", start, 1, "America/New_York") == [z("2026-06-01T07:00:00")]


def test_an_unknown_zone_is_a_file_line_error(tmp_path: Path) -> None:
    with pytest.raises(ScheduleError, match="unknown time zone"):
        parse_schedule("0 3 * * *", timezone="Mars/Olympus")
    policy = tmp_path / "p.yaml"
    policy.write_text("policies: {p: {}}\nservice:\n  timezone: Europe/Pariss\n",
                      encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(policy, env={})
    (problem,) = e.value.problems
    assert str(problem).startswith(f"{policy}:3: service.timezone: ")
    assert "unknown time zone 'Europe/Pariss'" in str(problem)
    for bad in ("../../etc/passwd", "", "Europe/"):
        with pytest.raises(ScheduleError):
            parse_schedule("0 3 * * *", timezone=bad)


def test_the_service_schedules_in_its_timezone(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from retention.config.settings import ServiceSettings
    from retention.service.serve import RetentionService

    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"state_dir: {tmp_path / 's'}\npolicies: {{p: {{schedule: '0 3 * * *'}}}}\n"
        "service: {timezone: Europe/Paris}\n"
        "accounts: [{name: a, host: h, username: u, password_env: RT_PW, policy: p}]\n",
        encoding="utf-8")
    config = load_config(policy, env={})
    settings = ServiceSettings(**{**config.service.model_dump(), "jitter": 0,
                                  "measure_every": "1h"})
    svc = RetentionService(policy, settings, registry=CollectorRegistry(),
                           run_account=lambda c, a: None, measure_account=lambda c, a: None)
    try:
        svc._schedule(svc.loaded, previous=None)
        (job,) = [j for j in svc._scheduler.get_jobs() if j.id.startswith("sweep:")]
        assert str(job.trigger.timezone) == "Europe/Paris"
    finally:
        svc.shutdown(timeout=2)


def test_check_prints_the_timezone(tmp_path: Path, capsys) -> None:
    from retention.cli import main

    policy = tmp_path / "p.yaml"
    policy.write_text(
        f"state_dir: {tmp_path / 's'}\npolicies: {{p: {{schedule: '0 3 * * *'}}}}\n"
        "service: {timezone: Europe/Paris}\n"
        "accounts: [{name: a, host: h, username: u, password_env: RT_PW, policy: p}]\n",
        encoding="utf-8")
    assert main(["check", "-c", str(policy)]) == 0
    assert "schedule: 0 3 * * * (Europe/Paris)" in capsys.readouterr().out


def test_no_zone_data_at_all_says_how_to_get_it(monkeypatch) -> None:
    import retention.config.schedule as schedule

    def no_data(key: str) -> None:
        raise schedule.ZoneInfoNotFoundError(key)

    monkeypatch.setattr(schedule, "ZoneInfo", no_data)
    monkeypatch.setattr(schedule, "available_timezones", set)
    with pytest.raises(ScheduleError, match="no time zone data: install the OS package tzdata"):
        parse_schedule("0 3 * * *", timezone="Europe/Paris")
    assert parse_schedule("0 3 * * *", timezone="UTC").timezone is UTC  # needs no data
