"""Settings of ``retention serve``: the policy file's ``service:`` block, the environment,
secret files and the command line, merged in one documented order.

This module owns where each service setting comes from. Highest wins:

1. explicit overrides (``serve(..., metrics_port=...)``, i.e. command-line flags);
2. ``RETENTION_<KEY>`` environment variables (``RETENTION_METRICS_PORT=9100``);
3. secret files named ``retention_<key>`` in the secrets directories (``/run/secrets``,
   systemd's ``$CREDENTIALS_DIRECTORY``, or ``$RETENTION_SECRETS_DIR``), for containers;
4. the ``service:`` block of the policy file;
5. the defaults of ``retention.config.schema.Service``.

Plus settings that only make sense outside the file: ``RETENTION_CONFIG`` (the policy
file), ``RETENTION_METRICS_PORT_FILE`` (where to write the bound port, for port 0),
``RETENTION_LOG_LEVEL`` (``serve``; the other commands take ``-v``/``-q``).

pydantic-settings reads layers 2 and 3 with the policy file's values as its lowest
"init" layer; the overrides are applied on top and the result is validated once more.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from retention.config.schema import Service, ServiceFields
from retention.errors import ConfigError, Problem

ENV_PREFIX = "RETENTION_"
DEFAULT_SECRETS_DIR = Path("/run/secrets")


class ServiceSettings(ServiceFields):
    """The effective service settings (validated, immutable): ``ServiceFields`` plus the
    settings that only make sense outside the file."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    config: Path | None = None
    metrics_port_file: Path | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class _FromEnvironment(BaseSettings, ServiceSettings):
    """Layers 2-4: the environment and secret files over the file's values (the init layer)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        extra="ignore",
        frozen=True,
        env_ignore_empty=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The init values are the policy file's service block: the lowest explicit layer.
        return env_settings, file_secret_settings, init_settings


def secrets_dirs(env: Mapping[str, str] | None = None) -> list[Path]:
    """Existing directories that may hold ``retention_<key>`` secret files.

    ``RETENTION_SECRETS_DIR`` (colon-separated) replaces the defaults: ``/run/secrets``
    (Docker, Kubernetes by convention) and ``$CREDENTIALS_DIRECTORY`` (systemd
    ``LoadCredential=``). Later directories win over earlier ones.
    """
    env = os.environ if env is None else env
    explicit = env.get(ENV_PREFIX + "SECRETS_DIR")
    if explicit:
        candidates = [Path(p) for p in explicit.split(":") if p]
    else:
        candidates = [DEFAULT_SECRETS_DIR]
        if env.get("CREDENTIALS_DIRECTORY"):
            candidates.append(Path(env["CREDENTIALS_DIRECTORY"]))
    return [p for p in candidates if p.is_dir()]


def _problems(err: ValidationError, origin: str) -> ConfigError:
    problems = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "service"
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        where = f"service.{field} (from {origin} {ENV_PREFIX}{field.upper()})"
        problems.append(Problem(None, None, where, msg))
    return ConfigError(problems)


def resolve_settings(
    service: Service | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    secrets_dir: Sequence[Path] | Path | None = None,
) -> ServiceSettings:
    """The effective settings: overrides > environment > secret files > file > defaults.

    ``service`` is the policy file's block (only the keys the file sets count as set);
    ``overrides`` with a None value are ignored, so a CLI can pass every flag as is.

    Raises:
        ConfigError: a value from any layer is invalid (naming the setting and variable).
    """
    file_values: dict[str, Any] = (
        service.model_dump(exclude_unset=True) if service is not None else {}
    )
    dirs = secrets_dirs() if secrets_dir is None else secrets_dir
    try:
        init: dict[str, Any] = {**file_values, "_secrets_dir": dirs or None}
        layered = _FromEnvironment(**init)
    except ValidationError as e:
        raise _problems(e, "the file, a secret file or") from None
    extra = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(extra) - set(ServiceSettings.model_fields))
    if unknown:
        raise ConfigError(f"unknown service setting(s): {', '.join(unknown)}")
    if not extra:
        return ServiceSettings.model_validate(layered.model_dump())
    try:
        return ServiceSettings.model_validate({**layered.model_dump(), **extra})
    except ValidationError as e:
        raise _problems(e, "the command line or") from None


def config_path_from_env(env: Mapping[str, str] | None = None) -> Path | None:
    """``RETENTION_CONFIG`` (the policy file), or None."""
    env = os.environ if env is None else env
    value = env.get(ENV_PREFIX + "CONFIG")
    return Path(value) if value else None


def service_changes(old: ServiceSettings, new: ServiceSettings) -> list[str]:
    """Names of settings that differ (a reload reports those it cannot apply live)."""
    return [name for name in ServiceSettings.model_fields
            if getattr(old, name) != getattr(new, name)]
