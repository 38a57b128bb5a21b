"""Value syntaxes used in policy files: durations, sizes, percentages, count-or-percent.

This module owns parsing and formatting of the small value languages a policy author
writes (``older_than: 30d``, ``quota: 2GiB``, ``high_water: 85%``,
``max_delete_per_run: 500`` or ``10%``). Each syntax has a ``parse_*`` function that
raises ``ValueError`` with a short, user-facing message, a ``format_*`` function that
produces the canonical spelling, and a pydantic ``Annotated`` type wiring the two
together so models can simply declare ``older_than: Duration``.

Design notes:

* Inputs come from YAML 1.1, so ``30d`` arrives as ``str`` and ``1024`` as ``int``, and
  ``yes``/``no`` arrive as ``bool``. ``bool`` is a subclass of ``int`` in Python, so every
  parser rejects it explicitly before any ``int`` check.
* Parsing is deliberately strict (no whitespace tolerance, case-sensitive units, no
  bare numbers where a unit is required): a policy that deletes mail must not have its
  thresholds guessed.
* Decimal inputs (``1.5GB``, ``12.5%``) are handled with exact arithmetic
  (``Fraction``/``Decimal``) so that ``1.1GB`` is exactly 1,100,000,000 bytes and
  ``29%`` of 100 is 29, not 28 through float rounding.
* pydantic prefixes validator messages with ``"Value error, "``; the messages here are
  written to read well once the caller strips that prefix.
"""

import math
import re
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Annotated, Final

from pydantic import BeforeValidator, PlainSerializer, PlainValidator, WithJsonSchema

__all__ = [
    "CountOrPercent",
    "CountOrPercentT",
    "Duration",
    "Percent",
    "Size",
    "format_count_or_percent",
    "format_duration",
    "format_percent",
    "format_size",
    "parse_count_or_percent",
    "parse_duration",
    "parse_seconds_or_duration",
    "parse_percent",
    "parse_size",
]

# [0-9] rather than \d: \d also matches non-ASCII digits such as '٣', which int()
# would happily accept but no policy author means.
_DURATION_RE: Final = re.compile(r"([0-9]+)([mhdwy])")
_SIZE_RE: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?) ?(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)")
_PERCENT_RE: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)%")
_DIGITS_RE: Final = re.compile(r"[0-9]+")

# Largest first: format_duration picks the first unit that divides exactly.
_DURATION_UNITS: Final[dict[str, int]] = {
    "y": 365 * 86_400,  # a policy "year" is 365 days; no calendar arithmetic
    "w": 7 * 86_400,
    "d": 86_400,
    "h": 3_600,
    "m": 60,
}

_BINARY_UNITS: Final[dict[str, int]] = {
    "TiB": 1024**4,
    "GiB": 1024**3,
    "MiB": 1024**2,
    "KiB": 1024,
}
_DECIMAL_UNITS: Final[dict[str, int]] = {
    "TB": 1000**4,
    "GB": 1000**3,
    "MB": 1000**2,
    "KB": 1000,
}
_SIZE_UNITS: Final[dict[str, int]] = {"B": 1, **_BINARY_UNITS, **_DECIMAL_UNITS}

# Anything longer is certainly a mistake; the cap also keeps int()/Decimal() away from
# pathological inputs (int() refuses more than 4300 digits with an unhelpful message).
_MAX_TEXT: Final = 64
# format_percent() writes tiny floats in full (5e-324 is 0.000...05%, ~330 characters);
# parse_percent() must accept whatever format_percent() writes.
_MAX_PERCENT_TEXT: Final = 400

_DURATION_HELP: Final = "use a number and one unit of m, h, d, w, y (e.g. 30d)"
_SIZE_HELP: Final = (
    "use a number and a unit of B, KB, MB, GB, TB, KiB, MiB, GiB, TiB (e.g. 2GiB), "
    "or a whole number of bytes"
)
_PERCENT_HELP: Final = "use a number from 0 to 100 followed by % (e.g. 85%)"
_COUNT_OR_PERCENT_HELP: Final = (
    "use a whole number (e.g. 500) or a percentage from 0% to 100% (e.g. 10%)"
)


def _show(value: object) -> str:
    """Render an offending input for an error message, short and YAML-flavoured."""
    if value is None:
        # `key:` with nothing after it is YAML null; "None" would confuse a YAML author.
        return "(empty)"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return text


# --------------------------------------------------------------------------- durations


def parse_duration(value: object) -> timedelta:
    """Parse ``<digits><m|h|d|w|y>`` (e.g. ``30d``) into a ``timedelta``.

    An existing ``timedelta`` is accepted as long as it is a non-negative whole number
    of minutes, so models can be built from Python code and re-validated.
    """
    if isinstance(value, timedelta):
        _check_whole_minutes(value)
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        # A bare number is the most likely mistake (`older_than: 30`); say what is missing
        # rather than guessing a unit.
        raise ValueError(f"invalid duration {value}: add a unit of m, h, d, w, y (e.g. {value}d)")
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        raise ValueError(f"invalid duration {_show(value)}: {_DURATION_HELP}")
    match = _DURATION_RE.fullmatch(value)
    if match is None:
        raise ValueError(f"invalid duration {_show(value)}: {_DURATION_HELP}")
    number, unit = int(match.group(1)), match.group(2)
    try:
        return timedelta(seconds=number * _DURATION_UNITS[unit])
    except OverflowError:
        raise ValueError(f"invalid duration {_show(value)}: too large") from None


_SECONDS_RE = re.compile(r"[0-9]{1,64}(\.[0-9]{1,64})?s?")


def parse_seconds_or_duration(value: object) -> timedelta:
    """A service duration: seconds as a number (``30``, ``1.5``, ``"30"``, ``"30s"``), or
    a policy duration (``15m``, ``1h``, see ``parse_duration``). Never negative.

    Raises ValueError (never OverflowError) for anything else, a too large value included.
    """
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise ValueError("must not be negative")
        return value
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30s, 15m or 1h")
    try:
        if isinstance(value, int | float):
            if value < 0:
                raise ValueError("must not be negative")
            return timedelta(seconds=value)
        if isinstance(value, str):
            text = value.strip()
            if _SECONDS_RE.fullmatch(text):
                return timedelta(seconds=float(text.rstrip("s")))
            return parse_duration(text)
    except OverflowError:
        raise ValueError(f"invalid duration {_show(value)}: too large") from None
    raise ValueError("must be a duration such as 30s, 15m or 1h")


def _whole_seconds(td: timedelta) -> int:
    # Exact integer arithmetic; td.total_seconds() is a float and loses precision for
    # very long durations.
    return td.days * 86_400 + td.seconds


def _check_whole_minutes(td: timedelta) -> None:
    if td < timedelta(0) or td.microseconds or _whole_seconds(td) % 60:
        raise ValueError(f"invalid duration {td}: must be a non-negative whole number of minutes")


def format_duration(td: timedelta) -> str:
    """Format a duration with the largest unit that divides it exactly (``'30d'``)."""
    # Refusing here (rather than emitting e.g. "30s") guarantees that whatever we write
    # back out can be parsed again.
    _check_whole_minutes(td)
    seconds = _whole_seconds(td)
    if seconds == 0:
        return "0d"  # "0y" would be correct but odd; "0d" is how people write it
    for unit, size in _DURATION_UNITS.items():
        # People write "7d" and "14d", rarely "1w": weeks only read back what was written.
        if unit == "w":
            continue
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    raise AssertionError("unreachable: whole minutes always divide by 'm'")


# ------------------------------------------------------------------------------ sizes


def parse_size(value: object) -> int:
    """Parse a size (``2GiB``, ``1.5 GB``, ``1024``, ``'1024'``) into whole bytes.

    KB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB powers of 1024; fractional results
    are rounded down to a whole byte.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"invalid size {value}: must not be negative")
        return int(value)  # normalise int subclasses (e.g. IntEnum) to plain int
    if isinstance(value, float):
        # YAML `quota: 1.5` is almost certainly a forgotten unit, not 1 byte.
        raise ValueError(f"invalid size {_show(value)}: {_SIZE_HELP}")
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        raise ValueError(f"invalid size {_show(value)}: {_SIZE_HELP}")
    if _DIGITS_RE.fullmatch(value):
        return int(value)
    match = _SIZE_RE.fullmatch(value)
    if match is None:
        raise ValueError(f"invalid size {_show(value)}: {_SIZE_HELP}")
    # Fraction parses the decimal literal exactly, so 1.1GB is exactly 1_100_000_000.
    return math.floor(Fraction(match.group(1)) * _SIZE_UNITS[match.group(2)])


def format_size(n: int) -> str:
    """Format bytes with the largest exact unit (``'1GiB'``, ``'1TB'``), else as ``'NB'``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"invalid size {_show(n)}: must be a non-negative whole number")
    if n == 0:
        return "0B"
    # The largest exact unit across both families, i.e. the smallest number: 1TB stays
    # "1TB" although it is also 976562500KiB, and 1GiB stays "1GiB". The two families
    # can never give the same number (1024**i != 1000**j), so there are no ties.
    best: str | None = None
    best_count = n
    for units in (_BINARY_UNITS, _DECIMAL_UNITS):
        for unit, size in units.items():
            if n % size == 0 and n // size < best_count:
                best, best_count = unit, n // size
    if best is not None:
        return f"{best_count}{best}"
    return f"{n}B"


# ------------------------------------------------------------------------ percentages


def parse_percent(value: object) -> float:
    """Parse ``<number>%`` (0% to 100% inclusive) into a fraction: ``'85%'`` -> ``0.85``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        # `0.85` vs `85` is exactly the ambiguity the % sign exists to remove.
        raise ValueError(f"invalid percentage {_show(value)}: write it with a % sign (e.g. 85%)")
    if not isinstance(value, str) or len(value) > _MAX_PERCENT_TEXT:
        raise ValueError(f"invalid percentage {_show(value)}: {_PERCENT_HELP}")
    match = _PERCENT_RE.fullmatch(value)
    if match is None:
        raise ValueError(f"invalid percentage {_show(value)}: {_PERCENT_HELP}")
    number = Decimal(match.group(1))
    if number > 100:
        raise ValueError(f"invalid percentage {_show(value)}: must be from 0% to 100%")
    # Divide in Decimal and convert once, so '85%' gives exactly float('0.85').
    return float(number / 100)


def format_percent(f: float) -> str:
    """Format a fraction in [0, 1] as a percentage: ``0.85`` -> ``'85%'``."""
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f <= 1:
        # `not 0 <= f <= 1` is also true for NaN.
        raise ValueError(f"invalid percentage {_show(f)}: must be a fraction from 0 to 1")
    # repr() is the shortest decimal that round-trips to the same float, so scaling it in
    # Decimal gives '85%' rather than '85.00000000000001%', and parse_percent() of the
    # result returns exactly f. format 'f' avoids exponent notation ('1E+2').
    scaled = (Decimal(repr(float(f))) * 100).normalize()
    return f"{scaled:f}%"


# ------------------------------------------------------------------ count or percent


@dataclass(frozen=True, slots=True)
class CountOrPercent:
    """A limit given either as an absolute count or as a fraction of some total.

    Exactly one of ``count`` and ``fraction`` is set.
    """

    count: int | None = None
    fraction: float | None = None

    def __post_init__(self) -> None:
        if (self.count is None) == (self.fraction is None):
            raise ValueError("exactly one of count and fraction must be set")
        if self.count is not None and (
            isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 0
        ):
            raise ValueError(f"invalid count {_show(self.count)}: must be a whole number >= 0")
        if self.fraction is not None and not 0 <= self.fraction <= 1:
            raise ValueError(f"invalid fraction {_show(self.fraction)}: must be from 0 to 1")

    def resolve(self, total: int) -> int:
        """The limit for ``total`` items: the count as given, or the percentage rounded down.

        A count is returned as is, even if larger than ``total``; callers cap it by the
        number of candidates they actually have.
        """
        if total < 0:
            raise ValueError(f"total must not be negative, got {total}")
        if self.count is not None:
            return self.count
        assert self.fraction is not None  # guaranteed by __post_init__
        # Exact arithmetic: float 0.29 * 100 is 28.999999999999996, which would floor to 28.
        return math.floor(Fraction(repr(self.fraction)) * total)


def parse_count_or_percent(value: object) -> CountOrPercent:
    """Parse ``500`` / ``'500'`` (a count) or ``'10%'`` (a fraction of the total)."""
    if isinstance(value, CountOrPercent):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"invalid count {value}: must not be negative")
        return CountOrPercent(count=int(value))
    if isinstance(value, str):
        if len(value) <= _MAX_TEXT and _DIGITS_RE.fullmatch(value):
            return CountOrPercent(count=int(value))
        if value.endswith("%"):
            # Let parse_percent explain what is wrong with something that is clearly
            # meant as a percentage (e.g. '150%').
            return CountOrPercent(fraction=parse_percent(value))
    raise ValueError(f"invalid count or percentage {_show(value)}: {_COUNT_OR_PERCENT_HELP}")


def format_count_or_percent(value: CountOrPercent) -> int | str:
    """Format back to policy syntax: the count as an ``int``, or ``'10%'``."""
    if value.count is not None:
        return value.count
    assert value.fraction is not None  # guaranteed by CountOrPercent.__post_init__
    return format_percent(value.fraction)


# ------------------------------------------------------------------- pydantic types

# The JSON schemas describe what a policy author writes (strings such as '30d'), not
# the Python type the value is parsed into.

Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration),
    WithJsonSchema({"type": "string", "pattern": "^[0-9]+[mhdwy]$", "examples": ["30d"]}),
]
"""A duration such as ``30d``; validates to ``timedelta``, serialises back to ``'30d'``."""

Size = Annotated[
    int,
    BeforeValidator(parse_size),
    PlainSerializer(format_size),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": f"^{_SIZE_RE.pattern}$", "examples": ["2GiB"]},
            ]
        }
    ),
]
"""A size such as ``2GiB`` or ``1024``; validates to ``int`` bytes, serialises to ``'2GiB'``."""

Percent = Annotated[
    float,
    BeforeValidator(parse_percent),
    PlainSerializer(format_percent),
    WithJsonSchema({"type": "string", "pattern": f"^{_PERCENT_RE.pattern}$", "examples": ["85%"]}),
]
"""A percentage such as ``85%``; validates to the fraction ``0.85``, serialises to ``'85%'``."""

# PlainValidator (not BeforeValidator): parse_count_or_percent already returns the final
# object, and letting pydantic re-validate a stdlib dataclass would only add overhead.
CountOrPercentT = Annotated[
    CountOrPercent,
    PlainValidator(parse_count_or_percent),
    PlainSerializer(format_count_or_percent),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": f"^{_PERCENT_RE.pattern}$", "examples": ["10%"]},
            ]
        }
    ),
]
"""``500`` or ``'10%'``; validates to ``CountOrPercent``, serialises to ``500`` / ``'10%'``."""
