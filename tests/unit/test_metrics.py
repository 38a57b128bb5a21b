"""Metrics: names, values from the last run/measurement, label privacy, and the HTTP endpoints."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from retention.config.schema import Config
from retention.model import Message, MessageRef
from retention.plan import Action, ActionKind, Clock, Plan
from retention.result import AccountResult, ActionResult
from retention.service.forecast import Fit
from retention.service.http import MetricsServer
from retention.service.metrics import Metrics, error_reason

T0 = datetime(2024, 6, 1, 3, 0, tzinfo=UTC)


def config(**service) -> Config:
    return Config.model_validate({
        "policies": {
            "default": {"quota": {"warn_above": "85%"}},
            "fast": {"schedule": "*/2 * * * * *"},
        },
        "accounts": [
            {"name": "alice@example.com", "host": "h", "username": "u", "password_env": "P",
             "policy": "default"},
            {"name": "bob", "host": "h", "username": "u", "password_env": "P",
             "policy": "fast"},
        ],
        "service": service,
    })


def action(kind: ActionKind, rule: str, size: int, uid: int) -> Action:
    msg = Message(ref=MessageRef("INBOX", 1, uid), size=size, received=T0 - timedelta(days=400))
    return Action(message=msg, kind=kind, rule=rule, clock=Clock.RECEIVED, reason="old",
                  to_folder="Trash" if kind is ActionKind.TRASH else None)


def result(name: str, status: str = "ok", *, results=(), error_kind=None, usage=None,
           after=None, limit=None, messages=None, short_by=0, seconds=2.0) -> AccountResult:
    plan = Plan(account=name, actions=tuple(r.action for r in results), short_by_bytes=short_by)
    return AccountResult(
        account=name, protocol="imap", run_id="r1", dry_run=False, status=status,
        started=T0, finished=T0 + timedelta(seconds=seconds), error_kind=error_kind,
        error="boom" if status == "error" else None, plan=plan if status == "ok" else None,
        results=tuple(results), usage_bytes=usage, usage_after_bytes=after,
        limit_bytes=limit, messages=messages,
    )


def value(reg: CollectorRegistry, name: str, **labels: str) -> float | None:
    return reg.get_sample_value(name, labels)


@pytest.fixture
def reg() -> CollectorRegistry:
    return CollectorRegistry()


def test_measurement_sets_usage_limit_messages(reg):
    m = Metrics(reg)
    m.observe_measurement(result("bob", usage=700, after=700, limit=1000, messages=12))
    assert value(reg, "retention_mailbox_usage_bytes", account="bob") == 700
    assert value(reg, "retention_mailbox_limit_bytes", account="bob") == 1000
    assert value(reg, "retention_mailbox_messages", account="bob") == 12


def test_run_counts_done_actions_and_usage_after(reg):
    m = Metrics(reg)
    done = [
        ActionResult(action(ActionKind.DELETE, "old-trash", 100, 1), "done"),
        ActionResult(action(ActionKind.DELETE, "old-trash", 50, 2), "done"),
        ActionResult(action(ActionKind.ARCHIVE, "archive-2y", 1000, 3), "done"),
        ActionResult(action(ActionKind.TRASH, "junk", 10, 4), "done"),
        ActionResult(action(ActionKind.DELETE, "old-trash", 999, 5), "failed", "NO"),
        ActionResult(action(ActionKind.DELETE, "old-trash", 999, 6), "skipped", "gone"),
    ]
    m.observe_run(result("bob", results=done, usage=5000, after=3850, limit=10_000,
                         messages=40, short_by=123))
    assert value(reg, "retention_actions_total", account="bob", action="delete",
                 rule="old-trash") == 2
    assert value(reg, "retention_actions_total", account="bob", action="archive",
                 rule="archive-2y") == 1
    assert value(reg, "retention_actions_total", account="bob", action="trash", rule="junk") == 1
    assert value(reg, "retention_freed_bytes_total", account="bob", action="delete") == 150
    assert value(reg, "retention_freed_bytes_total", account="bob", action="archive") == 1000
    assert value(reg, "retention_freed_bytes_total", account="bob", action="trash") == 0
    assert value(reg, "retention_mailbox_usage_bytes", account="bob") == 3850  # after cleanup
    assert value(reg, "retention_mailbox_messages", account="bob") == 37  # trash stays
    assert value(reg, "retention_short_by_bytes", account="bob") == 123
    finished = (T0 + timedelta(seconds=2)).timestamp()
    assert value(reg, "retention_last_run_timestamp_seconds", account="bob") == finished
    assert value(reg, "retention_last_success_timestamp_seconds", account="bob") == finished
    # Counters accumulate over runs.
    m.observe_run(result("bob", results=done[:1], after=3750))
    assert value(reg, "retention_actions_total", account="bob", action="delete",
                 rule="old-trash") == 3
    assert value(reg, "retention_freed_bytes_total", account="bob", action="delete") == 250


def test_errors_by_reason_and_no_success_timestamp(reg):
    m = Metrics(reg)
    m.observe_run(result("bob", "error", error_kind="auth"))
    m.observe_run(result("bob", "error", error_kind="config"))
    m.observe_measurement(result("bob", "error", error_kind="connect"))
    assert value(reg, "retention_account_errors_total", account="bob", reason="auth") == 1
    assert value(reg, "retention_account_errors_total", account="bob", reason="other") == 1
    assert value(reg, "retention_account_errors_total", account="bob", reason="connect") == 1
    assert value(reg, "retention_last_run_timestamp_seconds", account="bob") is not None
    assert value(reg, "retention_last_success_timestamp_seconds", account="bob") is None


@pytest.mark.parametrize("kind,reason", [
    ("auth", "auth"), ("tls", "tls"), ("connect", "connect"), ("protocol", "protocol"),
    ("archive", "archive"), ("config", "other"), ("other", "other"), (None, "other"),
])
def test_error_reasons_are_a_fixed_set(kind, reason):
    assert error_reason(kind) == reason


def test_skipped_runs_are_counted_by_reason(reg):
    m = Metrics(reg)
    m.observe_skip("bob")  # serve: the last run is still in flight
    m.observe_run(result("bob", "skipped"))  # another agent held the lock
    m.observe_run(dataclasses.replace(result("bob", "skipped"), skip_reason="locked"))
    m.observe_run(dataclasses.replace(result("bob", "skipped"), skip_reason="recent"))
    assert value(reg, "retention_runs_skipped_total", account="bob", reason="busy") == 1
    assert value(reg, "retention_runs_skipped_total", account="bob", reason="locked") == 2
    assert value(reg, "retention_runs_skipped_total", account="bob", reason="recent") == 1
    assert value(reg, "retention_last_run_timestamp_seconds", account="bob") is None


def test_run_duration_histogram_has_no_account_label(reg):
    m = Metrics(reg)
    m.observe_run(result("bob", seconds=3.0))
    m.observe_run(result("alice@example.com", seconds=7.0))
    assert value(reg, "retention_run_duration_seconds_count") == 2
    assert value(reg, "retention_run_duration_seconds_sum") == 10.0
    text = generate_latest(reg).decode()
    for line in text.splitlines():
        if line.startswith("retention_run_duration_seconds"):
            assert "account=" not in line


def test_policy_constants_and_forgotten_accounts(reg):
    m = Metrics(reg)
    cfg = config()
    m.observe_measurement(result("carol", usage=1, limit=2))  # not in the policy
    m.set_accounts(cfg, {"0 3 * * *": 86400.0, "*/2 * * * * *": 2.0})
    assert value(reg, "retention_mailbox_warn_ratio", account="alice@example.com") == 0.85
    assert value(reg, "retention_mailbox_warn_ratio", account="bob") == 0.8
    assert value(reg, "retention_schedule_period_seconds", account="alice@example.com") == 86400
    assert value(reg, "retention_schedule_period_seconds", account="bob") == 2
    assert value(reg, "retention_mailbox_usage_bytes", account="carol") is None
    assert value(reg, "retention_accounts") == 2


def test_reload_gauge_and_build_info(reg):
    now = [T0.timestamp()]
    m = Metrics(reg, clock=lambda: now[0])
    ok, old, at = ("retention_config_last_reload_successful", "retention_config_reload_success",
                   "retention_config_last_reload_success_timestamp_seconds")
    assert value(reg, ok) == 1 and value(reg, at) == T0.timestamp()
    now[0] += 60
    m.set_reload(False)
    assert value(reg, ok) == 0 and value(reg, at) == T0.timestamp()  # the last *success*
    m.set_reload(True)
    assert value(reg, ok) == 1 and value(reg, at) == T0.timestamp() + 60
    # The pre-convention name stays one release (deprecated), with the same value.
    m.set_reload(False)
    assert value(reg, old) == 0
    m.set_reload(True)
    assert value(reg, old) == 1
    text = generate_latest(reg).decode()
    assert "retention_build_info{" in text and 'version="' in text


def test_forecast_is_absent_until_set_and_counts_down(reg):
    now = [T0.timestamp()]
    m = Metrics(reg, clock=lambda: now[0])
    m.observe_measurement(result("bob", usage=100, limit=1000))
    assert value(reg, "retention_mailbox_full_seconds", account="bob") is None
    m.set_forecast("bob", Fit(origin=T0, intercept=400.0, slope=0.5, samples=5), 1000)
    assert value(reg, "retention_mailbox_full_seconds", account="bob") == pytest.approx(1200)
    now[0] += 200
    assert value(reg, "retention_mailbox_full_seconds", account="bob") == pytest.approx(1000)
    m.set_forecast("bob", None, 1000)  # no longer growing: the series disappears
    assert value(reg, "retention_mailbox_full_seconds", account="bob") is None


def test_hash_labels_never_show_the_name(reg):
    m = Metrics(reg, account_label="hash")
    m.set_accounts(config(), {})
    m.observe_run(result("alice@example.com", results=[
        ActionResult(action(ActionKind.DELETE, "r", 10, 1), "done")], after=5, limit=10))
    h = hashlib.sha256(b"alice@example.com").hexdigest()[:12]
    assert value(reg, "retention_mailbox_usage_bytes", account=h) == 5
    assert value(reg, "retention_actions_total", account=h, action="delete", rule="r") == 1
    text = generate_latest(reg).decode()
    assert "alice" not in text and "example.com" not in text and "bob" not in text


def test_none_labels_export_fleet_totals_only(reg):
    m = Metrics(reg, account_label="none")
    m.set_accounts(config(), {"0 3 * * *": 86400.0, "*/2 * * * * *": 2.0})
    m.observe_measurement(result("alice@example.com", usage=100, limit=1000, messages=3))
    m.observe_run(result("bob", results=[
        ActionResult(action(ActionKind.DELETE, "r", 10, 1), "done")],
        after=50, limit=500, messages=5))
    m.observe_run(result("bob", "error", error_kind="tls"))
    m.set_forecast("alice@example.com", Fit(T0, 0.0, 1.0, 3), 10_000)
    text = generate_latest(reg).decode()
    assert "account=" not in text and "alice" not in text and "bob" not in text
    assert value(reg, "retention_mailbox_usage_bytes") == 150
    assert value(reg, "retention_mailbox_limit_bytes") == 1500
    assert value(reg, "retention_mailbox_messages") == 7
    assert value(reg, "retention_actions_total", action="delete", rule="r") == 1
    assert value(reg, "retention_freed_bytes_total", action="delete") == 10
    assert value(reg, "retention_account_errors_total", reason="tls") == 1
    assert value(reg, "retention_mailbox_warn_ratio") == 0.8
    assert value(reg, "retention_schedule_period_seconds") == 86400
    assert value(reg, "retention_mailbox_full_seconds") is not None


def test_fresh_registry_per_service_no_global_state():
    a, b = CollectorRegistry(), CollectorRegistry()
    Metrics(a).observe_measurement(result("bob", usage=1, limit=2))
    Metrics(b)
    assert value(a, "retention_mailbox_usage_bytes", account="bob") == 1
    assert value(b, "retention_mailbox_usage_bytes", account="bob") is None


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def request(url: str, method: str = "GET", **headers: str) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_http_endpoints_on_port_zero(reg):
    m = Metrics(reg)
    m.observe_measurement(result("bob", usage=7, limit=9))
    state = {"healthy": True, "ready": False}
    server = MetricsServer(reg, "127.0.0.1", 0, healthy=lambda: state["healthy"],
                           ready=lambda: state["ready"])
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert server.port > 0
        code, body = get(base + "/metrics")
        assert code == 200 and 'retention_mailbox_usage_bytes{account="bob"} 7.0' in body
        assert get(base + "/healthz")[0] == 200
        assert get(base + "/readyz")[0] == 503
        state.update(healthy=False, ready=True)
        assert get(base + "/healthz")[0] == 503
        assert get(base + "/readyz")[0] == 200
        assert get(base + "/nope")[0] == 404
    finally:
        server.stop()


def test_http_is_prometheus_clients_app_gzip_head_landing_page(reg):
    m = Metrics(reg)
    m.observe_measurement(result("bob", usage=7, limit=9))
    server = MetricsServer(reg, "127.0.0.1", 0, healthy=lambda: True, ready=lambda: True)
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        plain = request(base + "/metrics")
        assert plain[0] == 200 and "Content-Encoding" not in plain[1]
        code, headers, body = request(base + "/metrics", **{"Accept-Encoding": "gzip"})
        assert code == 200 and headers["Content-Encoding"] == "gzip"
        text = gzip.decompress(body).decode()
        assert 'retention_mailbox_usage_bytes{account="bob"} 7.0' in text
        assert "_created" not in text  # disable_created_metrics
        # HEAD: GET's status and headers, no body (client_python's app alone says 405).
        code, headers, body = request(base + "/metrics", "HEAD")
        assert code == 200 and body == b"" and int(headers["Content-Length"]) == len(plain[2])
        assert headers["Content-Type"].startswith("text/plain")
        code, _, body = request(base + "/healthz", "HEAD")
        assert code == 200 and body == b""
        # OpenMetrics when asked, the library's negotiation.
        code, headers, _ = request(base + "/metrics",
                                   Accept="application/openmetrics-text; version=1.0.0")
        assert code == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
        # A landing page linking the endpoints.
        code, headers, body = request(base + "/")
        assert code == 200 and headers["Content-Type"].startswith("text/html")
        assert all(f'href="{p}"'.encode() in body for p in ("metrics", "healthz", "readyz"))
        # Other paths are not metrics; other methods are refused.
        assert request(base + "/metricsx")[0] == 404
        assert request(base + "/metrics", "POST")[0] == 405
    finally:
        server.stop()


def test_http_a_failing_collector_is_a_500_not_a_dead_server(reg, caplog):
    class Broken:
        def collect(self):
            raise RuntimeError("boom")

    reg.register(Broken())
    server = MetricsServer(reg, "127.0.0.1", 0, healthy=lambda: True, ready=lambda: True)
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert request(base + "/metrics")[0] == 500
        assert request(base + "/healthz")[0] == 200
    finally:
        server.stop()


def test_notices_are_counted_by_kind_and_outcome_without_an_account_label(reg):
    from retention.result import NoticeOutcome

    m = Metrics(reg)
    sent = NoticeOutcome("warning", "warning:bob:1", "sent", "append", "s", "b", "en")
    held = NoticeOutcome("archived", "archived:bob:r1", "will_retry", "smtp", "s", "b", "en")
    m.observe_run(dataclasses.replace(result("bob"), notices=(sent, held)))
    m.observe_run(dataclasses.replace(result("alice@example.com"), notices=(sent,)))
    assert value(reg, "retention_notices_total", kind="warning", status="sent") == 2
    assert value(reg, "retention_notices_total", kind="archived", status="will_retry") == 1
    for line in generate_latest(reg).decode().splitlines():
        if line.startswith("retention_notices"):
            assert "account=" not in line
