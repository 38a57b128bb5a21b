"""The forecast: OLS over 7 days of usage samples, seconds until the fitted line hits the limit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retention.service.forecast import Fit, fit_usage, latest_limit, seconds_until_full

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
GIB = 1024**3


def closed_form(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Textbook OLS with raw sums (x in epoch seconds), independent of the module's code."""
    n = len(points)
    sx = sum(x for x, _ in points)
    sy = sum(y for _, y in points)
    sxx = sum(x * x for x, _ in points)
    sxy = sum(x * y for x, y in points)
    b = (n * sxy - sx * sy) / (n * sxx - sx * sx)
    a = (sy - b * sx) / n
    return a, b


def test_exact_line_gives_exact_answer():
    # 1 MiB per hour, 10 GiB limit, 5 GiB now.
    per_hour = 1024**2
    samples = [(NOW - timedelta(hours=h), 5 * GIB - h * per_hour, 10 * GIB) for h in (48, 24, 0)]
    seconds = seconds_until_full(samples, NOW)
    assert seconds == pytest.approx(5 * GIB / per_hour * 3600, rel=1e-12)


def test_matches_closed_form_on_noisy_samples():
    usages = [100, 130, 125, 170, 160, 200, 230]
    samples = [(NOW - timedelta(hours=6 * (len(usages) - 1 - i)), u * 1000, 1_000_000)
               for i, u in enumerate(usages)]
    fit = fit_usage(samples, NOW)
    assert fit is not None and fit.samples == len(usages)
    # The closed form in epoch-relative hours (keeps the raw sums well conditioned).
    pts = [((at - NOW).total_seconds() / 3600, float(u)) for at, u, _ in samples]
    a, b_per_hour = closed_form(pts)
    assert fit.intercept == pytest.approx(a, abs=1e-9 * abs(a))
    assert fit.slope == pytest.approx(b_per_hour / 3600, rel=1e-9)
    expected = (1_000_000 - a) / (b_per_hour / 3600)
    assert seconds_until_full(samples, NOW) == pytest.approx(expected, rel=1e-9)


@given(
    st.lists(
        st.tuples(st.integers(0, 7 * 86400 - 1), st.integers(0, 10 * GIB)),
        min_size=3, max_size=40, unique_by=lambda t: t[0],
    )
)
def test_property_matches_closed_form(points):
    samples = [(NOW - timedelta(seconds=s), u, 20 * GIB) for s, u in points]
    fit = fit_usage(samples, NOW)
    assert fit is not None
    pts = [(-float(s) / 86400, float(u)) for s, u in points]  # x in days, y in bytes
    a, b_per_day = closed_form(pts)
    assert fit.intercept == pytest.approx(a, rel=1e-9, abs=1e-3)
    assert fit.slope * 86400 == pytest.approx(b_per_day, rel=1e-9, abs=1e-6)


def test_absent_when_not_growing():
    flat = [(NOW - timedelta(days=d), 5 * GIB, 10 * GIB) for d in (3, 2, 1)]
    shrinking = [(NOW - timedelta(days=d), (5 + d) * GIB, 10 * GIB) for d in (3, 2, 1)]
    assert seconds_until_full(flat, NOW) is None
    assert seconds_until_full(shrinking, NOW) is None


def test_absent_without_limit_or_enough_samples():
    growing = [(NOW - timedelta(days=d), (5 - d) * GIB, None) for d in (3, 2, 1)]
    assert seconds_until_full(growing, NOW) is None
    assert seconds_until_full(growing, NOW, limit=10 * GIB) is not None
    two = [(NOW - timedelta(days=d), (5 - d) * GIB, 10 * GIB) for d in (2, 1)]
    assert seconds_until_full(two, NOW) is None


def test_only_the_last_seven_days_count():
    old = [(NOW - timedelta(days=d), 0, 10 * GIB) for d in (30, 20, 10)]  # would flatten it
    recent = [(NOW - timedelta(days=d), (6 - d) * GIB, 10 * GIB) for d in (3, 2, 1)]
    future = [(NOW + timedelta(days=1), 0, 10 * GIB)]  # a clock step: ignored
    seconds = seconds_until_full(old + recent + future, NOW)
    assert seconds == pytest.approx(4 * 86400, rel=1e-9)  # 6 GiB now, +1 GiB/day, 10 GiB


def test_already_over_the_limit_is_zero_not_negative():
    samples = [(NOW - timedelta(days=d), (12 - d) * GIB, 10 * GIB) for d in (3, 2, 1)]
    assert seconds_until_full(samples, NOW) == 0.0


def test_samples_at_one_instant_have_no_slope():
    same = [(NOW, u, 10 * GIB) for u in (1, 2, 3)]
    assert fit_usage(same, NOW) is None


def test_latest_limit_is_the_newest_known():
    samples = [(NOW - timedelta(days=2), 1, 100), (NOW - timedelta(days=1), 1, 200),
               (NOW, 1, None)]
    assert latest_limit(samples) == 200
    assert latest_limit([(NOW, 1, None)]) is None


def test_fit_counts_down_with_time():
    fit = Fit(origin=NOW, intercept=1000.0, slope=1.0, samples=3)
    assert fit.seconds_until(2000, NOW) == 1000
    assert fit.seconds_until(2000, NOW + timedelta(seconds=400)) == pytest.approx(600)


def test_naive_now_is_refused():
    with pytest.raises(ValueError):
        fit_usage([], datetime(2024, 1, 1))  # noqa: DTZ001
