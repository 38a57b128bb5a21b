"""Loading notice templates: the shipped ones (package data) and an administrator's own.

The package ships ``templates/<language>/{warning,archived,archived_item,words}.txt`` for
``en`` and ``ja``. ``notify.templates: DIR`` in a policy overrides any of them file by
file: ``DIR/<language>/<name>`` first, then ``DIR/<name>`` (one text for every language),
then the shipped file. Rendering is ``notify.render`` (pure); this module only reads.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from retention.errors import ConfigError
from retention.notify.render import TEMPLATE_NAMES

LANGUAGES = ("en", "ja")


def shipped(language: str, name: str) -> str:
    return (resources.files("retention.notify") / "templates" / language / name).read_text(
        encoding="utf-8"
    )


def load(language: str, override: Path | None = None) -> dict[str, str]:
    """``{file name: text}`` for ``language`` (ConfigError for an unknown language)."""
    if language not in LANGUAGES:
        raise ConfigError(f"notify: no templates for language {language!r} (use en or ja)")
    out: dict[str, str] = {}
    for name in TEMPLATE_NAMES:
        text = None
        if override is not None:
            for candidate in (override / language / name, override / name):
                try:
                    text = candidate.read_text(encoding="utf-8")
                    break
                except FileNotFoundError:
                    continue
                except OSError as e:
                    raise ConfigError(
                        f"notify.templates: cannot read {candidate}: {e.strerror}"
                    ) from None
        out[name] = text if text is not None else shipped(language, name)
    return out
