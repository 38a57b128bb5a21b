"""Metrics that scale: account_metrics all | top:K | none, and the fleet series."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from retention.config.schema import Config
from retention.result import AccountResult
from retention.service.metrics import AUTO_ALL_UP_TO, Metrics, parse_account_metrics

T0 = datetime(2024, 6, 1, 3, 0, tzinfo=UTC)
DAILY = "0 3 * * *"


def fleet_config(n: int, **service: object) -> Config:
    return Config.model_validate({
        "policies": {"p": {"quota": {"warn_above": "80%", "clean_above": "90%",
                                     "clean_to": "70%"}, "schedule": DAILY}},
        "accounts": [{"name": f"a{i:04d}", "host": "h", "username": "u", "password_env": "P",
                      "policy": "p"} for i in range(n)],
        "service": service,
    })


def measured(name: str, usage: int, limit: int = 1000, *, status: str = "ok",
             kind: str | None = None, when: datetime = T0) -> AccountResult:
    return AccountResult(
        account=name, protocol="imap", run_id="r", dry_run=False, status=status,
        started=when, finished=when + timedelta(seconds=1), usage_bytes=usage,
        usage_after_bytes=usage, limit_bytes=limit, error_kind=kind,  # type: ignore[arg-type]
        error="boom" if status == "error" else None,
    )


def make(n: int, mode: str | None, clock: float = T0.timestamp() + 3600):
    reg = CollectorRegistry()
    m = Metrics(reg, account_metrics=mode, clock=lambda: clock)
    m.set_accounts(fleet_config(n), {DAILY: 86400.0})
    return reg, m


def v(reg: CollectorRegistry, name: str, **labels: str) -> float | None:
    return reg.get_sample_value(name, labels)


def per_account(reg: CollectorRegistry) -> set[str]:
    return {s.labels["account"] for fam in reg.collect() for s in fam.samples
            if fam.name == "retention_mailbox_usage_bytes"}


def test_parse_account_metrics() -> None:
    assert parse_account_metrics(None, AUTO_ALL_UP_TO) is None
    assert parse_account_metrics(None, AUTO_ALL_UP_TO + 1) == 100
    assert parse_account_metrics("all", 10**6) is None
    assert parse_account_metrics("none", 3) == 0
    assert parse_account_metrics("top:7", 3) == 7


@pytest.mark.parametrize("bad", ["top:0", "top:", "some", "top:-1", "TOP:3"])
def test_bad_account_metrics_is_a_config_error(bad: str) -> None:
    with pytest.raises(ValueError, match="all, none or top:K"):
        fleet_config(1, account_metrics=bad)


def test_top_k_exports_the_fullest_and_every_account_in_error() -> None:
    reg, m = make(50, "top:3")
    for i in range(50):
        m.observe_measurement(measured(f"a{i:04d}", usage=10 * i))  # a0049 fullest (49%)
    m.observe_measurement(measured("a0001", 0, status="error", kind="auth"))
    m.observe_run(measured("a0002", 0, status="error", kind="connect"))
    assert per_account(reg) == {"a0049", "a0048", "a0047", "a0001", "a0002"}
    assert v(reg, "retention_mailbox_usage_bytes", account="a0049") == 490
    assert v(reg, "retention_accounts") == 50  # the fleet still counts everyone
    assert v(reg, "retention_accounts_in_error", reason="auth") == 1
    assert v(reg, "retention_accounts_in_error", reason="connect") == 1
    assert v(reg, "retention_accounts_in_error", reason="tls") == 0
    m.observe_measurement(measured("a0001", 5))  # recovered: out of the error set
    assert v(reg, "retention_accounts_in_error", reason="auth") == 0
    assert "a0001" not in per_account(reg)
    m.observe_measurement(measured("a0003", 999))  # now the fullest
    assert "a0003" in per_account(reg) and "a0047" not in per_account(reg)


def test_none_and_all() -> None:
    reg, m = make(5, "none")
    for i in range(5):
        m.observe_measurement(measured(f"a{i:04d}", 100))
    assert per_account(reg) == set()
    assert v(reg, "retention_mailbox_usage_ratio_gcount") == 5
    reg, m = make(5, None)  # auto: all below 10,000
    for i in range(5):
        m.observe_measurement(measured(f"a{i:04d}", 100))
    assert len(per_account(reg)) == 5


def test_fleet_histogram_and_levels() -> None:
    reg, m = make(10, "none")
    ratios = [0.05, 0.3, 0.5, 0.79, 0.8, 0.85, 0.9, 0.95, 1.0, 1.2]
    for i, r in enumerate(ratios):
        m.observe_measurement(measured(f"a{i:04d}", int(r * 1000)))
    b = lambda le: v(reg, "retention_mailbox_usage_ratio_bucket", le=le)  # noqa: E731
    assert b("0.1") == 1 and b("0.5") == 3 and b("0.8") == 5 and b("1.0") == 9
    assert b("+Inf") == 10 and v(reg, "retention_mailbox_usage_ratio_gcount") == 10
    assert v(reg, "retention_mailbox_usage_ratio_gsum") == pytest.approx(sum(ratios))
    assert v(reg, "retention_accounts_above_warn") == 5  # > 80%
    assert v(reg, "retention_accounts_above_clean") == 4  # >= 90%
    m.observe_measurement(measured("a0009", 100))  # 1.2 -> 0.1: moves between buckets
    assert b("+Inf") == 10 and b("0.1") == 2
    assert v(reg, "retention_accounts_above_clean") == 3
    # A reload that drops accounts drops them from every aggregate.
    m.set_accounts(fleet_config(3), {DAILY: 86400.0})
    assert b("+Inf") == 3 and v(reg, "retention_accounts") == 3


def test_sweep_progress_and_oldest_success() -> None:
    now = T0.timestamp() + 7200
    reg, m = make(4, "none", clock=now)
    m.begin_sweep(DAILY, 4)
    m.observe_skip("a0003", DAILY)  # still busy from the last sweep: not due in this one
    assert v(reg, "retention_sweep_accounts_due", schedule=DAILY) == 3
    assert v(reg, "retention_sweep_accounts_done", schedule=DAILY) == 0
    m.observe_run(measured("a0000", 1, when=T0))
    m.observe_run(measured("a0000", 1, when=T0))  # twice in one sweep counts once
    m.observe_run(measured("a0001", 1, status="error", kind="tls", when=T0))
    assert v(reg, "retention_sweep_accounts_done", schedule=DAILY) == 2
    assert v(reg, "retention_sweep_period_seconds", schedule=DAILY) == 86400
    assert v(reg, "retention_sweep_started_timestamp_seconds", schedule=DAILY) == now
    # Only a0000 ever succeeded, at T0 + 1 s.
    age = v(reg, "retention_oldest_success_age_seconds", schedule=DAILY)
    assert age == now - T0.timestamp() - 1
    m.observe_run(measured("a0000", 1, when=T0 + timedelta(seconds=600)))
    m.observe_run(measured("a0002", 1, when=T0 + timedelta(seconds=60)))
    age = v(reg, "retention_oldest_success_age_seconds", schedule=DAILY)
    assert age == now - T0.timestamp() - 61


def test_top_k_scrape_stays_small_at_many_accounts() -> None:
    n = 20_000  # auto mode: above 10,000 -> top:100
    reg, m = make(n, None)
    for i in range(n):
        m.observe_measurement(measured(f"a{i:04d}", (i * 7919) % 1000))
    text = generate_latest(reg)
    assert len(per_account(reg)) == 100
    assert len(text) < 200_000


def test_the_alerts_and_dashboard_use_names_the_agent_exports() -> None:
    from tests.unit.test_deploy_rules import FLEET_METRICS

    reg, _ = make(1, "none")
    assert {fam.name for fam in reg.collect()} >= FLEET_METRICS
