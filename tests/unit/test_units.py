"""Unit tests for retention.config.units: policy value syntaxes and their pydantic types."""

import json
import math
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, ValidationError

from retention.config.units import (
    CountOrPercent,
    CountOrPercentT,
    Duration,
    Percent,
    Size,
    format_count_or_percent,
    format_duration,
    format_percent,
    format_size,
    parse_count_or_percent,
    parse_duration,
    parse_percent,
    parse_size,
)

DAY = timedelta(days=1)
MAX_MINUTES = timedelta.max // timedelta(minutes=1)

# ------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0d", timedelta(0)),
        ("0m", timedelta(0)),
        ("1m", timedelta(minutes=1)),
        ("90m", timedelta(minutes=90)),
        ("2h", timedelta(hours=2)),
        ("1d", DAY),
        ("30d", 30 * DAY),
        ("2w", 14 * DAY),
        ("1y", 365 * DAY),
        ("10y", 3650 * DAY),
        ("007d", 7 * DAY),
    ],
)
def test_parse_duration_valid(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "3 months",
        "30 d",
        "30D",
        "30M",
        "-1d",
        "+1d",
        "1.5d",
        "",
        "d",
        " 30d",
        "30d ",
        "30d\n",
        "30s",
        "30dd",
        "1d2h",
        "١d",  # Arabic-Indic digit one: \d would match it, the parser must not
        "30days",
        "x" * 1000,
    ],
)
def test_parse_duration_invalid_strings(text: str) -> None:
    with pytest.raises(ValueError, match=r"^invalid duration .*: use a number and one unit"):
        parse_duration(text)


def test_parse_duration_message_is_exact() -> None:
    with pytest.raises(ValueError) as exc:
        parse_duration("3 months")
    assert str(exc.value) == (
        "invalid duration '3 months': use a number and one unit of m, h, d, w, y (e.g. 30d)"
    )


def test_parse_duration_bare_int_suggests_unit() -> None:
    with pytest.raises(ValueError) as exc:
        parse_duration(30)
    assert str(exc.value) == "invalid duration 30: add a unit of m, h, d, w, y (e.g. 30d)"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (True, "true"),
        (False, "false"),
        (None, "(empty)"),
        (1.5, "1.5"),
        (["30d"], "['30d']"),
        ({"d": 30}, "{'d': 30}"),
    ],
)
def test_parse_duration_rejects_non_strings(value: object, shown: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_duration(value)
    assert str(exc.value).startswith(f"invalid duration {shown}: ")


def test_parse_duration_long_input_is_truncated_in_message() -> None:
    with pytest.raises(ValueError) as exc:
        parse_duration("x" * 1000)
    assert len(str(exc.value)) < 150


def test_parse_duration_overflow() -> None:
    with pytest.raises(ValueError, match=r"^invalid duration '9999999999999y': too large$"):
        parse_duration("9999999999999y")


@pytest.mark.parametrize("td", [timedelta(0), timedelta(minutes=5), 30 * DAY])
def test_parse_duration_accepts_whole_minute_timedelta(td: timedelta) -> None:
    assert parse_duration(td) is td


@pytest.mark.parametrize("td", [timedelta(seconds=30), timedelta(minutes=1, microseconds=1), -DAY])
def test_parse_duration_rejects_odd_timedelta(td: timedelta) -> None:
    with pytest.raises(ValueError, match="non-negative whole number of minutes"):
        parse_duration(td)


@pytest.mark.parametrize(
    ("td", "expected"),
    [
        (timedelta(0), "0d"),
        (timedelta(minutes=1), "1m"),
        (timedelta(minutes=90), "90m"),
        (timedelta(hours=1), "1h"),
        (timedelta(hours=36), "36h"),
        (timedelta(hours=24), "1d"),
        (8 * DAY, "8d"),
        (7 * DAY, "7d"),
        (14 * DAY, "14d"),
        (364 * DAY, "364d"),
        (365 * DAY, "1y"),
        (366 * DAY, "366d"),
        (730 * DAY, "2y"),
        (DAY + timedelta(minutes=1), "1441m"),
    ],
)
def test_format_duration(td: timedelta, expected: str) -> None:
    assert format_duration(td) == expected


@pytest.mark.parametrize(
    "td", [timedelta(seconds=30), timedelta(microseconds=1), -timedelta(minutes=1)]
)
def test_format_duration_refuses_what_cannot_be_parsed_back(td: timedelta) -> None:
    with pytest.raises(ValueError, match="whole number of minutes"):
        format_duration(td)


@given(st.integers(min_value=0, max_value=MAX_MINUTES))
def test_duration_round_trip_from_timedelta(minutes: int) -> None:
    td = timedelta(minutes=minutes)
    assert parse_duration(format_duration(td)) == td


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from("mhdwy"))
def test_duration_round_trip_from_text(number: int, unit: str) -> None:
    td = parse_duration(f"{number}{unit}")
    text = format_duration(td)
    assert parse_duration(text) == td
    # Canonical form is never longer than the input's unit would suggest and is stable.
    assert format_duration(parse_duration(text)) == text


# ------------------------------------------------------------------------------ sizes

KIB, MIB, GIB, TIB = 1024, 1024**2, 1024**3, 1024**4


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (1024, 1024),
        (10**15, 10**15),
        ("0", 0),
        ("1024", 1024),
        ("0B", 0),
        ("1B", 1),
        ("1 B", 1),
        ("1KB", 1000),
        ("1 KB", 1000),
        ("1MB", 10**6),
        ("1GB", 10**9),
        ("1TB", 10**12),
        ("1KiB", KIB),
        ("1MiB", MIB),
        ("2GiB", 2 * GIB),
        ("2 GiB", 2 * GIB),
        ("1TiB", TIB),
        ("1.5GB", 1_500_000_000),
        ("1.5 GiB", GIB + GIB // 2),
        ("1.1GB", 1_100_000_000),  # exact, not 1_100_000_000.0000002 floored
        ("0.1KB", 100),
        ("0.5B", 0),
        ("1.9B", 1),
        ("1.0000001KB", 1000),  # rounded down
        ("1.001KiB", 1025),  # 1025.024 rounded down
        ("0010MB", 10 * 10**6),
    ],
)
def test_parse_size_valid(value: object, expected: int) -> None:
    result = parse_size(value)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(
    "value",
    [
        "1gb",
        "1 gb",
        "1G",
        "1Gb",
        "1kb",
        "1KIB",
        "1.5",
        "-1",
        "-1GB",
        "1,5GB",
        "1  GB",
        "GB",
        ".5GB",
        "1.GB",
        "1e3",
        "1e3B",
        "",
        " 1GB",
        "1GB ",
        "1 000",
        "١GB",
        "9" * 5000,
        True,
        False,
        None,
        1.5,
        1.0,
        [1],
    ],
)
def test_parse_size_invalid(value: object) -> None:
    with pytest.raises(ValueError, match=r"^invalid size "):
        parse_size(value)


def test_parse_size_message_is_exact() -> None:
    with pytest.raises(ValueError) as exc:
        parse_size("10 gigs")
    assert str(exc.value) == (
        "invalid size '10 gigs': use a number and a unit of B, KB, MB, GB, TB, "
        "KiB, MiB, GiB, TiB (e.g. 2GiB), or a whole number of bytes"
    )


def test_parse_size_negative_int_message() -> None:
    with pytest.raises(ValueError) as exc:
        parse_size(-5)
    assert str(exc.value) == "invalid size -5: must not be negative"


def test_parse_size_rejects_bool_explicitly() -> None:
    # True == 1 in Python; a YAML `limit: yes` must not become one byte.
    with pytest.raises(ValueError, match=r"^invalid size true: "):
        parse_size(True)


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, "0B"),
        (1, "1B"),
        (999, "999B"),
        (1000, "1KB"),
        (1024, "1KiB"),
        (1536, "1536B"),  # 1.5KiB and 1.536KB: no exact unit
        (2048, "2KiB"),
        (8000, "8KB"),
        (1_024_000, "1000KiB"),  # also 1024KB: the smaller number wins
        (2_048_000, "2000KiB"),
        (10**12, "1TB"),  # also 976562500KiB: the smaller number wins
        (10**6, "1MB"),
        (MIB, "1MiB"),
        (10**9, "1GB"),
        (GIB, "1GiB"),
        (1_500_000_000, "1500MB"),
        (GIB + GIB // 2, "1536MiB"),
        (TIB, "1TiB"),
        (1024 * TIB, "1024TiB"),
        (10**15, "1000TB"),
        (10**15 + 1, "1000000000000001B"),
    ],
)
def test_format_size(n: int, expected: str) -> None:
    assert format_size(n) == expected


@pytest.mark.parametrize("n", [-1, True])
def test_format_size_rejects_invalid(n: int) -> None:
    with pytest.raises(ValueError, match="^invalid size"):
        format_size(n)


@given(st.integers(min_value=0, max_value=2**80))
def test_size_round_trip_from_int(n: int) -> None:
    assert parse_size(format_size(n)) == n


@given(st.integers(min_value=0, max_value=2**64))
def test_size_bare_digits_equal_int(n: int) -> None:
    assert parse_size(str(n)) == parse_size(n) == n


@given(
    st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False, allow_infinity=False),
    st.sampled_from(["B", "KB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "TiB"]),
    st.sampled_from(["", " "]),
)
def test_size_round_trip_from_text(number: Any, unit: str, space: str) -> None:
    text = f"{number:f}{space}{unit}"
    n = parse_size(text)
    assert parse_size(format_size(n)) == n


# ------------------------------------------------------------------------ percentages


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0%", 0.0),
        ("100%", 1.0),
        ("85%", 0.85),
        ("7%", 0.07),
        ("29%", 0.29),
        ("12.5%", 0.125),
        ("0.1%", 0.001),
        ("100.0%", 1.0),
        ("99.99%", 0.9999),
        ("050%", 0.5),
    ],
)
def test_parse_percent_valid(text: str, expected: float) -> None:
    # Exact equality: '85%' must be the same float as the literal 0.85.
    assert parse_percent(text) == expected


@pytest.mark.parametrize(
    "value",
    ["85", "85 %", "-1%", "%", "0.85", "85%%", "1e2%", ".5%", "5.%", " 5%", "5% ", "", "x" * 100]
    + [True, None, ["85%"]],
)
def test_parse_percent_invalid(value: object) -> None:
    with pytest.raises(ValueError, match=r"^invalid percentage .*: use a number from 0 to 100"):
        parse_percent(value)


@pytest.mark.parametrize("value", [85, 0.85, 1, 0])
def test_parse_percent_rejects_bare_numbers(value: object) -> None:
    with pytest.raises(ValueError) as exc:
        parse_percent(value)
    assert str(exc.value) == f"invalid percentage {value}: write it with a % sign (e.g. 85%)"


@pytest.mark.parametrize("text", ["101%", "100.01%", "1000%"])
def test_parse_percent_out_of_range(text: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_percent(text)
    assert str(exc.value) == f"invalid percentage '{text}': must be from 0% to 100%"


@pytest.mark.parametrize(
    ("fraction", "expected"),
    [
        (0.0, "0%"),
        (0, "0%"),
        (1.0, "100%"),
        (1, "100%"),
        (0.85, "85%"),
        (0.07, "7%"),
        (0.29, "29%"),
        (0.125, "12.5%"),
        (0.001, "0.1%"),
        (1e-05, "0.001%"),
        (0.9999, "99.99%"),
    ],
)
def test_format_percent(fraction: float, expected: str) -> None:
    assert format_percent(fraction) == expected


@pytest.mark.parametrize("fraction", [1.5, -0.1, math.nan, math.inf, True])
def test_format_percent_rejects_out_of_range(fraction: float) -> None:
    with pytest.raises(ValueError, match="^invalid percentage"):
        format_percent(fraction)


@given(st.floats(min_value=0, max_value=1, allow_nan=False))
def test_percent_round_trip_from_float(fraction: float) -> None:
    text = format_percent(fraction)
    assert "e" not in text.lower()
    assert parse_percent(text) == fraction


@given(st.decimals(min_value=0, max_value=100, places=4, allow_nan=False, allow_infinity=False))
def test_percent_round_trip_from_text(number: Any) -> None:
    fraction = parse_percent(f"{number:f}%")
    assert parse_percent(format_percent(fraction)) == fraction


# ------------------------------------------------------------------ count or percent


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, CountOrPercent(count=0)),
        (500, CountOrPercent(count=500)),
        ("500", CountOrPercent(count=500)),
        ("10%", CountOrPercent(fraction=0.1)),
        ("0%", CountOrPercent(fraction=0.0)),
        ("100%", CountOrPercent(fraction=1.0)),
        ("12.5%", CountOrPercent(fraction=0.125)),
    ],
)
def test_parse_count_or_percent_valid(value: object, expected: CountOrPercent) -> None:
    assert parse_count_or_percent(value) == expected


def test_parse_count_or_percent_passes_instances_through() -> None:
    value = CountOrPercent(count=3)
    assert parse_count_or_percent(value) is value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "invalid count -1: must not be negative"),
        (
            True,
            "invalid count or percentage true: use a whole number (e.g. 500) "
            "or a percentage from 0% to 100% (e.g. 10%)",
        ),
        (
            "abc",
            "invalid count or percentage 'abc': use a whole number (e.g. 500) "
            "or a percentage from 0% to 100% (e.g. 10%)",
        ),
        ("150%", "invalid percentage '150%': must be from 0% to 100%"),
        ("10 %", "invalid percentage '10 %': use a number from 0 to 100 followed by % (e.g. 85%)"),
    ],
)
def test_parse_count_or_percent_messages(value: object, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_count_or_percent(value)
    assert str(exc.value) == message


@pytest.mark.parametrize("value", [1.5, None, "-5", "1.5", "", "5 ", [5], False])
def test_parse_count_or_percent_invalid(value: object) -> None:
    with pytest.raises(ValueError, match="^invalid count or percentage "):
        parse_count_or_percent(value)


@pytest.mark.parametrize(
    ("value", "total", "expected"),
    [
        (CountOrPercent(count=500), 100, 500),  # not capped: callers cap by candidates
        (CountOrPercent(count=0), 100, 0),
        (CountOrPercent(fraction=0.1), 1000, 100),
        (CountOrPercent(fraction=0.1), 999, 99),
        (CountOrPercent(fraction=0.29), 100, 29),  # float 0.29*100 would floor to 28
        (CountOrPercent(fraction=0.005), 1, 0),
        (CountOrPercent(fraction=1.0), 7, 7),
        (CountOrPercent(fraction=0.0), 10**9, 0),
        (CountOrPercent(fraction=0.5), 0, 0),
    ],
)
def test_count_or_percent_resolve(value: CountOrPercent, total: int, expected: int) -> None:
    assert value.resolve(total) == expected


def test_count_or_percent_resolve_rejects_negative_total() -> None:
    with pytest.raises(ValueError, match="negative"):
        CountOrPercent(count=1).resolve(-1)


@given(st.integers(min_value=0, max_value=100), st.integers(min_value=0, max_value=10**9))
def test_count_or_percent_resolve_is_exact_floor(percent: int, total: int) -> None:
    value = parse_count_or_percent(f"{percent}%")
    assert value.resolve(total) == percent * total // 100


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"count": 1, "fraction": 0.5},
        {"count": -1},
        {"count": True},
        {"fraction": 1.5},
        {"fraction": -0.1},
        {"fraction": math.nan},
    ],
)
def test_count_or_percent_invariants(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        CountOrPercent(**kwargs)


def test_count_or_percent_is_frozen() -> None:
    value = CountOrPercent(count=1)
    with pytest.raises(AttributeError):
        value.count = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (CountOrPercent(count=500), 500),
        (CountOrPercent(fraction=0.1), "10%"),
        (CountOrPercent(fraction=0.125), "12.5%"),
    ],
)
def test_format_count_or_percent(value: CountOrPercent, expected: int | str) -> None:
    assert format_count_or_percent(value) == expected
    assert parse_count_or_percent(expected) == value


# ------------------------------------------------------------------- pydantic types


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    older_than: Duration
    limit: Size
    clean_above: Percent
    max_delete_per_run: CountOrPercentT
    keep_within: Duration = timedelta(0)


class _StrictModel(_Model):
    model_config = ConfigDict(strict=True)


YAML_LIKE: dict[str, Any] = {
    "older_than": "30d",
    "limit": "2GiB",
    "clean_above": "85%",
    "max_delete_per_run": "10%",
}


@pytest.mark.parametrize("model", [_Model, _StrictModel])
def test_pydantic_validates_policy_syntax(model: type[_Model]) -> None:
    m = model.model_validate(YAML_LIKE)
    assert m.older_than == 30 * DAY
    assert m.limit == 2 * GIB
    assert m.clean_above == 0.85
    assert m.max_delete_per_run == CountOrPercent(fraction=0.1)
    assert m.keep_within == timedelta(0)


@pytest.mark.parametrize("model", [_Model, _StrictModel])
def test_pydantic_accepts_yaml_ints(model: type[_Model]) -> None:
    m = model.model_validate({**YAML_LIKE, "limit": 1024, "max_delete_per_run": 500})
    assert m.limit == 1024
    assert m.max_delete_per_run == CountOrPercent(count=500)


def test_pydantic_serialises_back_to_policy_syntax() -> None:
    m = _Model.model_validate(YAML_LIKE)
    dumped = m.model_dump()
    assert dumped == {**YAML_LIKE, "keep_within": "0d"}
    assert _Model.model_validate(dumped) == m
    assert json.loads(m.model_dump_json()) == dumped
    assert _Model.model_validate_json(m.model_dump_json()) == m


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "older_than",
            "3 months",
            "invalid duration '3 months': use a number and one unit of m, h, d, w, y (e.g. 30d)",
        ),
        ("older_than", 30, "invalid duration 30: add a unit of m, h, d, w, y (e.g. 30d)"),
        ("limit", True, "invalid size true: "),
        ("limit", -1, "invalid size -1: must not be negative"),
        ("clean_above", "150%", "invalid percentage '150%': must be from 0% to 100%"),
        ("clean_above", 0.85, "invalid percentage 0.85: write it with a % sign"),
        ("max_delete_per_run", "lots", "invalid count or percentage 'lots': "),
    ],
)
def test_pydantic_error_messages_are_clean(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        _Model.model_validate({**YAML_LIKE, field: value})
    errors = exc.value.errors()
    assert len(errors) == 1
    assert errors[0]["loc"] == (field,)
    assert errors[0]["type"] == "value_error"
    msg = errors[0]["msg"]
    assert msg.startswith("Value error, ")
    assert msg.removeprefix("Value error, ").startswith(message)
    assert "\n" not in msg


def test_pydantic_json_schema_describes_policy_syntax() -> None:
    props = _Model.model_json_schema()["properties"]
    assert props["older_than"]["type"] == "string"
    assert props["older_than"]["pattern"] == "^[0-9]+[mhdwy]$"
    assert props["clean_above"]["pattern"] == r"^([0-9]+(?:\.[0-9]+)?)%$"
    assert {"type": "integer", "minimum": 0} in props["limit"]["anyOf"]
    assert {"type": "integer", "minimum": 0} in props["max_delete_per_run"]["anyOf"]
