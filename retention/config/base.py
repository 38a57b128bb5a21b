"""Building blocks shared by the policy file's models (``schema``, ``sources``).

Kept apart so that ``schema`` can import ``sources`` (a ``Config`` holds its sources)
without the two importing each other.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict

from retention.config.units import parse_seconds_or_duration

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@+-]*$"


class Strict(BaseModel):
    """Unknown keys are errors; every model is frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# Service durations also take plain seconds (``30``, ``30s``): one parser, in units
# (it turns a huge number's OverflowError into a ValueError, which pydantic reports).
ServiceDuration = Annotated[timedelta, BeforeValidator(parse_seconds_or_duration)]
