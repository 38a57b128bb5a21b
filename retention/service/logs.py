"""Structured logging for the service: one line per account run, and no secret ever.

This module owns the shape of the service's log lines (``key=value`` logfmt, or JSON with
``RETENTION_LOG_FORMAT=json``) and the redaction filter on every handler. The filter is
defence in depth: messages are built without secrets in the first place (errors name the
variable or file that holds a password, never its value), but a server reply or a
library's exception text could still echo one. So each record is scrubbed of

* the passwords the service itself can read for its accounts and archive targets (and,
  once read, those from a ``password_command``: ``config.secrets.command_secrets``);
* ``password=...``/``token: ...`` style pairs, IMAP ``LOGIN user pass``, POP3 ``PASS x``
  and ``AUTHENTICATE PLAIN <base64>``/``AUTH PLAIN <base64>`` continuations.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from retention.config.schema import Config, Connection, ImapTarget
from retention.config.secrets import command_secrets, read_password, redact
from retention.errors import RetentionError
from retention.result import AccountResult
from retention.sources import password_holders


class RedactionFilter(logging.Filter):
    """Scrubs each record's message, structured fields and traceback (see module doc)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: frozenset[str] = frozenset(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self.secrets | command_secrets()  # one read: a reload swaps the set
        record.msg = redact(record.getMessage(), secrets)
        record.args = None
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            record.fields = {
                k: redact(v, secrets) if isinstance(v, str) else v for k, v in fields.items()
            }
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, secrets)
        return True


def secrets_of(config: Config) -> set[str]:
    """Every password the service could use (to scrub them from logs); unreadable ones skipped."""
    # A fleet's accounts share their prototypes' password sources: a million accounts
    # from one source are a handful of secrets, read without building each account.
    conns: list[Connection] = list(password_holders(config))
    conns.extend(t for t in config.archives.values() if isinstance(t, ImapTarget))
    out: set[str] = set()
    for conn in conns:
        if conn.password_command is not None:
            continue  # not run just for this: the filter adds it once a pass has read it
        try:
            out.add(read_password(conn))
        except RetentionError:
            continue
    return out


# -- formatting ---------------------------------------------------------------------------

_BARE = re.compile(r"^[A-Za-z0-9_.:/@+-]+$")


def _value(v: object) -> str:
    if isinstance(v, float):
        text = f"{v:.3f}"
    elif isinstance(v, bool):
        text = "true" if v else "false"
    else:
        text = str(v)
    if _BARE.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def logfmt(fields: Mapping[str, object]) -> str:
    """``k=v k2="with space"``; None values are left out."""
    return " ".join(f"{k}={_value(v)}" for k, v in fields.items() if v is not None)


def account_run_fields(result: AccountResult, kind: str) -> dict[str, object]:
    """The fields of the one line logged per account run (or measurement)."""
    done = [r for r in result.results if r.result == "done"]
    failed = sum(1 for r in result.results if r.result == "failed")
    return {
        "event": "account_" + kind,
        "account": result.account,
        "run_id": result.run_id,
        "outcome": result.status,
        "started": result.started.isoformat(timespec="milliseconds"),
        "actions": len(done),
        "failed_actions": failed or None,
        "freed_bytes": sum(r.freed_bytes for r in done),
        "usage_bytes": result.usage_bytes,
        "usage_after_bytes": result.usage_after_bytes if kind == "run" else None,
        "limit_bytes": result.limit_bytes,
        "short_by_bytes": result.plan.short_by_bytes if result.plan is not None else None,
        "duration": round(result.duration, 3),
        "error_kind": result.error_kind,
        "error": result.error,
    }


def log_account_run(logger: logging.Logger, result: AccountResult, *, kind: str = "run") -> None:
    fields = account_run_fields(result, kind)
    level = logging.WARNING if result.status == "error" else logging.INFO
    logger.log(level, "%s", logfmt(fields), extra={"fields": fields})


class JsonFormatter(logging.Formatter):
    """One JSON object per line; structured ``fields`` are merged in as keys."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            out.update({k: v for k, v in fields.items() if v is not None})
        else:
            out["msg"] = record.getMessage()
        if record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, default=str)


_FILTER = RedactionFilter()


def configure(level: str = "INFO", fmt: str = "logfmt", secrets: Iterable[str] = ()) -> None:
    """Set up logging for ``serve``: a stderr handler if none, the format, the redaction.

    A more verbose level already set (``retention -v serve``) is kept.
    """
    root = logging.getLogger()
    if not root.handlers:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
        )
        root.addHandler(handler)
    wanted = logging.getLevelName(level)
    if not isinstance(wanted, int):
        wanted = logging.INFO
    if root.level >= logging.WARNING or root.level == logging.NOTSET:
        root.setLevel(wanted)
    else:
        root.setLevel(min(root.level, wanted))
    if root.level > logging.DEBUG:
        # APScheduler logs every job execution at INFO: a sweep every few seconds would
        # drown the account lines.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
    update_secrets(secrets)
    for handler in root.handlers:
        if fmt == "json":
            handler.setFormatter(JsonFormatter())
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)


def update_secrets(secrets: Iterable[str]) -> None:
    """Replace the set of values scrubbed from logs (after a policy reload)."""
    _FILTER.secrets = frozenset(secrets)
