"""Cron strings of the policy file (``schedule:``) turned into APScheduler 3 triggers.

This module owns what a ``schedule`` string means: five fields (``minute hour day month
day-of-week``, as in crontab) or six with seconds first (``second minute hour day month
day-of-week``, for tests and demos). It also derives a schedule's period, which the
service exports so alert rules ("no success within twice the schedule") need no
per-account constants.

Why not ``CronTrigger.from_crontab`` alone: APScheduler 3 numbers weekdays from Monday
(0 = Monday) while crontab numbers them from Sunday (0 and 7 = Sunday); 3.x keeps the
mismatch for compatibility (APScheduler issue 286). A policy author writes crontab, so a
numeric day-of-week field is rewritten into weekday *names*, which both agree on.
One crontab rule is not reproduced: when both day-of-month and day-of-week are restricted,
crontab fires when *either* matches, APScheduler when *both* do.

Time zone (``service.timezone``, an IANA name): UTC unless the policy says otherwise,
never the host's local zone. Across daylight-saving changes a schedule keeps its wall
clock ("0 3 * * *" is 03:00 local before and after). On the night clocks go forward, a
time that does not exist that night (02:30 in Europe/Paris) fires once, an hour later by
the wall clock. On the night they go back, APScheduler 3 would fire a fixed-hour
schedule twice (02:30 summer time, then 02:30 winter time): here such a schedule fires
once, as cron does; schedules whose hour is ``*`` or a step (``*/2``) keep running by
real time through the repeated hour.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from apscheduler.triggers.cron import CronTrigger

# Index = crontab weekday number (0 = Sunday), value = APScheduler weekday name.
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_ITEM = re.compile(r"^(\*|[0-7a-z]+(?:-[0-7a-z]+)?)(?:/([0-9]+))?$")


class ScheduleError(ValueError):
    """A ``schedule`` string that is not a valid 5- or 6-field cron expression."""


def _day(token: str, text: str) -> int:
    if token.isdigit():
        value = int(token)
        if value > 7:
            raise ScheduleError(f"day-of-week {token} in {text!r} is not 0-7")
        return value % 7  # 7 is Sunday too
    if token in _DAYS:
        return _DAYS.index(token)
    raise ScheduleError(f"unknown day-of-week {token!r} in {text!r}")


def crontab_weekdays(field: str, text: str = "") -> str:
    """A crontab day-of-week field as APScheduler weekday names (``1-5`` -> ``mon,...,fri``)."""
    field = field.lower()
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for item in field.split(","):
        m = _ITEM.match(item)
        if m is None:
            raise ScheduleError(f"cannot read day-of-week {field!r} in {text!r}")
        span, step_text = m.group(1), m.group(2)
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ScheduleError(f"step 0 in day-of-week of {text!r}")
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            a, b = span.split("-")
            first, last = _day(a, text), _day(b, text)
            if b == "7":
                last = 7  # "5-7" is Friday to Sunday, not an empty range
            if last < first:
                raise ScheduleError(f"day-of-week range {span!r} in {text!r} runs backwards")
        else:
            first = last = _day(span, text)
            if step_text:  # "1/2" means "from Monday, every other day" in cron
                last = 6
        days.update(d % 7 for d in range(first, last + 1, step))
    return ",".join(_DAYS[d] for d in sorted(days))


def zone(name: str) -> tzinfo:
    """The time zone of an IANA name (``Europe/Paris``, ``UTC``).

    Raises:
        ScheduleError: not a time zone this system knows.
    """
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        # A slim container may ship no zone data at all: then say where it comes from.
        missing = "" if available_timezones() else (
            " (this system has no time zone data: install the OS package tzdata or "
            "pip install tzdata)")
        raise ScheduleError(
            f"unknown time zone {name!r}: use an IANA name such as Europe/Paris, "
            f"America/New_York or UTC{missing}") from None


class _CronTrigger(CronTrigger):  # type: ignore[misc]  # APScheduler 3 is untyped
    """A fixed-hour schedule fires once on the night the clocks go back (as cron does)."""

    def __init__(self, *, once_per_wall_clock: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._once = once_per_wall_clock
        # Only across a change of UTC offset: a fire time whose wall clock is within the
        # jitter (plus a minute) of the previous one is that time again, not a new one.
        self._repeat_within = timedelta(seconds=60 + (self.jitter or 0))

    def get_next_fire_time(self, previous_fire_time: datetime | None,
                           now: datetime) -> datetime | None:
        nxt: datetime | None = super().get_next_fire_time(previous_fire_time, now)
        if (self._once and nxt is not None and previous_fire_time is not None
                and nxt.utcoffset() != previous_fire_time.astimezone(self.timezone).utcoffset()
                and _wall(nxt, self.timezone) - _wall(previous_fire_time, self.timezone)
                < self._repeat_within):
            # The clocks went back between the two and the wall clock did not move on:
            # the same local time a second time.
            nxt = super().get_next_fire_time(nxt, nxt)
        return nxt


def _wall(moment: datetime, tz: tzinfo) -> datetime:
    return moment.astimezone(tz).replace(tzinfo=None)


def parse_schedule(
    text: str, *, timezone: tzinfo | str | None = None, jitter: float | None = None
) -> CronTrigger:
    """The trigger for a 5-field (crontab) or 6-field (seconds first) cron string, read
    in ``timezone`` (an IANA name or a tzinfo; default UTC).

    Raises:
        ScheduleError: wrong number of fields, a field APScheduler cannot read, or an
            unknown time zone.
    """
    tz = zone(timezone) if isinstance(timezone, str) else (timezone or UTC)
    fields = text.split()
    if len(fields) == 5:
        second, (minute, hour, day, month, dow) = "0", fields
    elif len(fields) == 6:
        second, minute, hour, day, month, dow = fields
    else:
        raise ScheduleError(
            f"schedule {text!r} has {len(fields)} fields: use 5 (minute hour day month "
            "weekday) or 6 (second first)"
        )
    kwargs: dict[str, Any] = {
        "second": second, "minute": minute, "hour": hour, "day": day, "month": month,
        "day_of_week": crontab_weekdays(dow, text),
    }
    fixed_hour = not (hour == "*" or hour.startswith("*/"))
    try:
        return _CronTrigger(once_per_wall_clock=fixed_hour, timezone=tz, jitter=jitter or None,
                            **kwargs)
    except (ValueError, TypeError) as e:
        raise ScheduleError(f"schedule {text!r}: {e}") from None


def schedule_period(
    text: str, *, now: datetime | None = None, timezone: tzinfo | str | None = None
) -> float:
    """Seconds between the next two fire times of a schedule (86400 for ``0 3 * * *``),
    read in ``timezone`` (default UTC; near a daylight-saving change a daily schedule's
    period is 23 or 25 hours).

    A schedule that never fires twice (e.g. a date in the past) gives ``inf``.
    """
    trigger = parse_schedule(text, timezone=timezone)
    now = now or datetime.now(UTC)
    first = trigger.get_next_fire_time(None, now)
    if first is None:
        return float("inf")
    second = trigger.get_next_fire_time(first, first)
    if second is None:
        return float("inf")
    # In UTC: two datetimes of the same zone subtract by their wall clocks (Python's rule),
    # which would make the day the clocks change 24 hours long.
    return float((second.astimezone(UTC) - first.astimezone(UTC)) / timedelta(seconds=1))
