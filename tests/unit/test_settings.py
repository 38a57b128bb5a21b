"""Service settings: overrides > RETENTION_* env > secret files > service: block > defaults."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from retention.config.schema import Service
from retention.config.settings import (
    ServiceSettings,
    config_path_from_env,
    resolve_settings,
    secrets_dirs,
    service_changes,
)
from retention.errors import ConfigError

KEYS = ("METRICS_PORT", "METRICS_ADDRESS", "MEASURE_EVERY", "CONCURRENCY",
        "MAX_CONNECTIONS_PER_HOST", "JITTER", "SHUTDOWN_TIMEOUT", "ACCOUNT_LABEL", "CONFIG",
        "METRICS_PORT_FILE", "LOG_LEVEL", "LOG_FORMAT", "SECRETS_DIR")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for key in KEYS:
        monkeypatch.delenv("RETENTION_" + key, raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


def block(**values) -> Service:
    return Service.model_validate(values)


def test_defaults_are_the_policy_defaults():
    s = resolve_settings(None, secrets_dir=[])
    assert s.metrics_port == 9478
    assert s.measure_every == timedelta(minutes=15)
    assert s.concurrency == 4 and s.max_connections_per_host == 2
    assert s.jitter == timedelta(seconds=30)
    assert s.account_label == "name"


def test_file_block_wins_over_defaults():
    s = resolve_settings(block(metrics_port=9100, jitter=0, measure_every="5m",
                               account_label="hash"), secrets_dir=[])
    assert s.metrics_port == 9100
    assert s.jitter == timedelta(0)
    assert s.measure_every == timedelta(minutes=5)
    assert s.account_label == "hash"
    assert s.concurrency == 4  # untouched keys keep their default


def test_environment_wins_over_the_file(monkeypatch):
    monkeypatch.setenv("RETENTION_METRICS_PORT", "9200")
    monkeypatch.setenv("RETENTION_JITTER", "45s")
    monkeypatch.setenv("RETENTION_MEASURE_EVERY", "1h")
    monkeypatch.setenv("RETENTION_SHUTDOWN_TIMEOUT", "90")
    monkeypatch.setenv("retention_concurrency", "8")  # case does not matter
    monkeypatch.setenv("RETENTION_ACCOUNT_LABEL", "none")
    s = resolve_settings(block(metrics_port=9100, jitter=10, concurrency=2), secrets_dir=[])
    assert s.metrics_port == 9200
    assert s.jitter == timedelta(seconds=45)
    assert s.measure_every == timedelta(hours=1)
    assert s.shutdown_timeout == timedelta(seconds=90)
    assert s.concurrency == 8
    assert s.account_label == "none"


def test_secret_files_between_environment_and_file(monkeypatch, tmp_path):
    (tmp_path / "retention_metrics_port").write_text("9300\n")
    (tmp_path / "RETENTION_CONCURRENCY").write_text("6")
    s = resolve_settings(block(metrics_port=9100, concurrency=2), secrets_dir=[tmp_path])
    assert s.metrics_port == 9300 and s.concurrency == 6
    monkeypatch.setenv("RETENTION_METRICS_PORT", "9400")
    s = resolve_settings(block(metrics_port=9100), secrets_dir=[tmp_path])
    assert s.metrics_port == 9400


def test_default_secret_dirs(monkeypatch, tmp_path):
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert tmp_path in secrets_dirs()
    monkeypatch.setenv("RETENTION_SECRETS_DIR", f"{tmp_path}:/does/not/exist")
    assert secrets_dirs() == [tmp_path]
    (tmp_path / "retention_jitter").write_text("0")
    assert resolve_settings(block(jitter=10)).jitter == timedelta(0)


def test_overrides_win_over_everything(monkeypatch):
    monkeypatch.setenv("RETENTION_METRICS_PORT", "9200")
    s = resolve_settings(block(metrics_port=9100),
                         overrides={"metrics_port": 0, "metrics_address": None}, secrets_dir=[])
    assert s.metrics_port == 0
    assert s.metrics_address == "0.0.0.0"  # None means "not given"


def test_invalid_values_name_the_variable(monkeypatch):
    monkeypatch.setenv("RETENTION_METRICS_PORT", "not-a-port")
    with pytest.raises(ConfigError) as e:
        resolve_settings(None, secrets_dir=[])
    assert "RETENTION_METRICS_PORT" in str(e.value)
    monkeypatch.delenv("RETENTION_METRICS_PORT")
    monkeypatch.setenv("RETENTION_ACCOUNT_LABEL", "email")
    with pytest.raises(ConfigError, match="RETENTION_ACCOUNT_LABEL"):
        resolve_settings(None, secrets_dir=[])
    monkeypatch.delenv("RETENTION_ACCOUNT_LABEL")
    with pytest.raises(ConfigError, match="unknown service setting"):
        resolve_settings(None, overrides={"metrics_prot": 1}, secrets_dir=[])
    with pytest.raises(ConfigError, match="concurrency"):
        resolve_settings(None, overrides={"concurrency": 0}, secrets_dir=[])


def test_config_path_and_port_file_from_env(monkeypatch, tmp_path):
    assert config_path_from_env() is None
    monkeypatch.setenv("RETENTION_CONFIG", str(tmp_path / "policy.yaml"))
    monkeypatch.setenv("RETENTION_METRICS_PORT_FILE", str(tmp_path / "port"))
    assert config_path_from_env() == tmp_path / "policy.yaml"
    s = resolve_settings(None, secrets_dir=[])
    assert s.config == tmp_path / "policy.yaml"
    assert s.metrics_port_file == tmp_path / "port"


def test_service_changes_lists_differences():
    a = ServiceSettings()
    b = ServiceSettings(metrics_port=1, concurrency=9)
    assert service_changes(a, b) == ["metrics_port", "concurrency"]
    assert service_changes(a, a) == []


def test_durations_accept_plain_seconds_and_units():
    for raw, expected in [(30, 30), ("30", 30), ("30s", 30), ("2m", 120), ("1h", 3600),
                          ("0", 0), (1.5, 1.5)]:
        assert ServiceSettings(jitter=raw).jitter == timedelta(seconds=expected)
    with pytest.raises(ValueError):
        ServiceSettings(jitter="soon")
    with pytest.raises(ValueError):
        ServiceSettings(jitter=-1)


def test_unrelated_retention_variables_are_ignored(monkeypatch):
    monkeypatch.setenv("RETENTION_STATE_DIR", "/tmp/x")
    monkeypatch.setenv("RETENTION_KEEP_DOVECOT", "1")
    assert resolve_settings(None, secrets_dir=[]).metrics_port == 9478


def test_policy_file_block_end_to_end(tmp_path, monkeypatch):
    from retention.config.load import load_config

    p = tmp_path / "policy.yaml"
    p.write_text(
        "policies:\n  default: {}\n"
        "accounts:\n  - {name: a, host: h, username: u, password_env: P, policy: default}\n"
        "service:\n  metrics_port: 9111\n  jitter: 0\n  measure_every: 5m\n"
    )
    monkeypatch.setenv("RETENTION_METRICS_PORT", "9222")
    s = resolve_settings(load_config(p).service, secrets_dir=[])
    assert s.metrics_port == 9222
    assert s.jitter == timedelta(0) and s.measure_every == timedelta(minutes=5)
    assert isinstance(s.config, Path | None)
