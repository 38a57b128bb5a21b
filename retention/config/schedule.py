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
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

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


def parse_schedule(
    text: str, *, timezone: tzinfo | str | None = None, jitter: float | None = None
) -> CronTrigger:
    """The trigger for a 5-field (crontab) or 6-field (seconds first) cron string.

    Raises:
        ScheduleError: wrong number of fields or a field APScheduler cannot read.
    """
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
    try:
        return CronTrigger(timezone=timezone, jitter=jitter or None, **kwargs)
    except (ValueError, TypeError) as e:
        raise ScheduleError(f"schedule {text!r}: {e}") from None


def schedule_period(
    text: str, *, now: datetime | None = None, timezone: tzinfo | str | None = None
) -> float:
    """Seconds between the next two fire times of a schedule (86400 for ``0 3 * * *``).

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
    return float((second - first) / timedelta(seconds=1))
