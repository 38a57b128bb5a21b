"""Seconds until a mailbox is full: an ordinary least-squares line through usage samples.

This module owns the forecast math and nothing else: no I/O, no clock, no metrics. The
service feeds it the usage samples the state store kept (``Observations.usage_samples``) and
exports the result as ``retention_mailbox_full_seconds``.

The model: over the samples of the last ``window`` (7 days), fit ``usage = a + b * t`` by
OLS, with ``t`` in seconds relative to ``now`` (so ``a`` *is* the fitted usage now, and
epoch-sized numbers never meet squared terms, which keeps the fit exact to ~1e-12).
Then ``seconds = (limit - a) / b``. There is no forecast when the slope is zero or
negative (the mailbox is not filling up), when there is no limit, or with fewer than
``min_samples`` samples (3) or all samples at one instant (no slope to speak of).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

WINDOW = timedelta(days=7)
MIN_SAMPLES = 3

Sample = tuple[datetime, int, int | None]
"""(time, usage bytes, limit bytes or None), as ``Observations.usage_samples`` returns them."""


@dataclass(frozen=True, slots=True)
class Fit:
    """``usage(t) = intercept + slope * (t - origin)`` in bytes, ``t`` in seconds."""

    origin: datetime
    intercept: float  # bytes at ``origin``
    slope: float  # bytes per second
    samples: int

    def usage_at(self, when: datetime) -> float:
        return self.intercept + self.slope * (when - self.origin).total_seconds()

    def seconds_until(self, limit: float, at: datetime) -> float | None:
        """Seconds from ``at`` until the fitted line reaches ``limit``; None if it never does.

        A mailbox the fit already puts over its limit gives 0, not a negative number: an
        alert "full within 24h" should fire for it, and "full -3h ago" means nothing.
        """
        if not self.slope > 0 or not math.isfinite(self.slope):
            return None
        return max(0.0, (limit - self.usage_at(at)) / self.slope)


def fit_usage(
    samples: Iterable[Sample],
    now: datetime,
    *,
    window: timedelta = WINDOW,
    min_samples: int = MIN_SAMPLES,
) -> Fit | None:
    """OLS fit of the samples in ``[now - window, now]``; None when there are too few.

    Samples later than ``now`` (a clock step backwards) are ignored rather than trusted.
    """
    if now.tzinfo is None:
        raise ValueError("fit_usage needs a timezone-aware 'now'")
    since = now - window
    xs: list[float] = []
    ys: list[float] = []
    for at, usage, _limit in samples:
        if since <= at <= now:
            xs.append((at - now).total_seconds())
            ys.append(float(usage))
    n = len(xs)
    if n < max(min_samples, 2):
        return None
    # Centred sums: the textbook closed form, numerically stable.
    mean_x = math.fsum(xs) / n
    mean_y = math.fsum(ys) / n
    sxx = math.fsum((x - mean_x) ** 2 for x in xs)
    if sxx == 0.0:
        return None  # every sample at one instant: no slope
    sxy = math.fsum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    intercept = mean_y - slope * mean_x
    return Fit(origin=now, intercept=intercept, slope=slope, samples=n)


def latest_limit(samples: Sequence[Sample]) -> int | None:
    """The limit of the newest sample that has one (limits change; the newest counts)."""
    for _at, _usage, limit in reversed(samples):
        if limit:
            return limit
    return None


def seconds_until_full(
    samples: Sequence[Sample],
    now: datetime,
    *,
    limit: int | None = None,
    window: timedelta = WINDOW,
    min_samples: int = MIN_SAMPLES,
) -> float | None:
    """Seconds from ``now`` until full, or None (no limit, too few samples, not growing).

    ``limit`` defaults to the newest limit among the samples.
    """
    limit = limit if limit else latest_limit(samples)
    if not limit:
        return None
    fit = fit_usage(samples, now, window=window, min_samples=min_samples)
    if fit is None:
        return None
    return fit.seconds_until(limit, now)
