"""Building blocks shared by the policy file's models (``schema``, ``sources``).

Kept apart so that ``schema`` can import ``sources`` (a ``Config`` holds its sources)
without the two importing each other.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict

from retention.config.units import parse_duration

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@+-]*$"


class Strict(BaseModel):
    """Unknown keys are errors; every model is frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def duration_or_seconds(value: object) -> timedelta:
    """Service durations also take plain seconds (``30``) and ``30s``."""
    if isinstance(value, timedelta):
        return value
    try:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return timedelta(seconds=value)
        if isinstance(value, str) and re.fullmatch(r"\d+s", value):
            return timedelta(seconds=int(value[:-1]))
    except OverflowError:
        # pydantic turns only ValueError into a FILE:LINE problem; an OverflowError from a
        # huge number would escape as a traceback (and kill a reload).
        raise ValueError(f"invalid duration {str(value)[:40]}: too large") from None
    return parse_duration(value)


ServiceDuration = Annotated[timedelta, BeforeValidator(duration_or_seconds)]
