"""Structured logging for the service: one line per account run, and no secret ever.

This module owns the shape of every log line, from ``serve`` and from the other commands
alike (``ts=... level=... logger=... event=...`` logfmt, or JSON with ``log_format: json``
or ``RETENTION_LOG_FORMAT=json``), the log levels ``-v``/``-q`` select (``level_of``: the
``retention`` loggers, libraries only from ``-vvv``) and the redaction filter on every
handler. The filter is defence in depth: messages are built without secrets in the first
place (errors name the variable or file that holds a password, never its value), but a
server reply or a library's exception text could still echo one. So each record is
scrubbed of

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
        "skip_reason": result.skip_reason,
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


def _ts(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


_PAIR = r'[A-Za-z_][A-Za-z0-9_.]*=(?:"(?:[^"\\]|\\.)*"|[^\s"]*)'
_LOGFMT = re.compile(rf"{_PAIR}(?: {_PAIR})*")
_PAIRS = re.compile(r'([A-Za-z_][A-Za-z0-9_.]*)=("(?:[^"\\]|\\.)*"|[^\s"]*)')


def _unquote(raw: str) -> str:
    if not raw.startswith('"'):
        return raw
    return re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], raw[1:-1])


def _body(record: logging.LogRecord) -> dict[str, object] | str:
    """The record's own fields: ``fields``, else a logfmt message's pairs, else its text."""
    fields = getattr(record, "fields", None)
    if isinstance(fields, Mapping):
        return {k: v for k, v in fields.items() if v is not None}
    message = record.getMessage()
    if not _LOGFMT.fullmatch(message):
        return message
    return {key: _unquote(raw) for key, raw in _PAIRS.findall(message)}


def _exc(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    if record.exc_text:  # set (and scrubbed) by the redaction filter
        return record.exc_text
    return formatter.formatException(record.exc_info) if record.exc_info else None


class LogfmtFormatter(logging.Formatter):
    """``ts=... level=info logger=retention.runner event=... k=v``: every token a pair.

    Messages written as logfmt (``"event=started port=%d"``) are kept as they are; any
    other text becomes ``msg="..."``; a traceback ``exc="..."``.
    """

    def format(self, record: logging.LogRecord) -> str:
        head = logfmt({"ts": _ts(record), "level": record.levelname.lower(),
                       "logger": record.name})
        fields = getattr(record, "fields", None)
        message = record.getMessage()
        if isinstance(fields, Mapping):
            body = logfmt(fields)
        elif _LOGFMT.fullmatch(message):
            body = message
        else:
            body = logfmt({"msg": message})
        exc = _exc(self, record)
        return f"{head} {body}" + (f" {logfmt({'exc': exc})}" if exc else "")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, then the record's fields
    (structured ``fields``, or the pairs of a logfmt message, else ``msg``)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": _ts(record), "level": record.levelname.lower(),
                               "logger": record.name}
        body = _body(record)
        if isinstance(body, dict):
            out.update(body)
        else:
            out["msg"] = body
        exc = _exc(self, record)
        if exc:
            out["exc"] = exc
        return json.dumps(out, default=str)


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler on whatever ``sys.stderr`` is at the time of each record (tests swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


PACKAGE = "retention"
_FILTER = RedactionFilter()
_HANDLER = _Stderr()
_state: dict[str, int | None] = {"cli": None}  # the command line's -v/-q level, if given


def level_of(verbosity: int) -> tuple[int, int]:
    """(this package's level, every other logger's) for ``-v``/``-q`` counted as one number.

    -1 (``-q``): errors only; 0: warnings; 1 (``-v``): info; 2 (``-vv``): debug, for the
    ``retention`` loggers only; 3 (``-vvv``): every library's debug too (imapclient's
    wire log, APScheduler), still through the redaction filter.
    """
    if verbosity < 0:
        return logging.ERROR, logging.ERROR
    ours = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbosity, 2)]
    return ours, logging.DEBUG if verbosity >= 3 else logging.WARNING


def _install(fmt: str) -> None:
    """Our stderr handler on the root logger, once, with the format and the redaction."""
    root = logging.getLogger()
    if _HANDLER not in root.handlers:
        root.addHandler(_HANDLER)
    _HANDLER.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    for handler in root.handlers:  # defence in depth: anyone's handler is scrubbed too
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)


def configure_cli(verbosity: int, fmt: str = "logfmt") -> None:
    """Logging for a command: stderr, ``fmt``, levels from ``-v``/``-q`` (``level_of``)."""
    ours, others = level_of(verbosity)
    _state["cli"] = ours if verbosity else None
    logging.getLogger(PACKAGE).setLevel(ours)
    logging.getLogger().setLevel(others)
    _install(fmt)


def set_format(fmt: str) -> None:
    """Switch the format once the policy file said (``service.log_format``)."""
    _install(fmt)


def configure(level: str = "INFO", fmt: str = "logfmt", secrets: Iterable[str] = ()) -> None:
    """Set up logging for ``serve``: stderr, the format, this package at ``level`` (the
    command line's ``-v``/``-q`` win when given), the redaction."""
    wanted = logging.getLevelName(level)
    if not isinstance(wanted, int):
        wanted = logging.INFO
    cli = _state["cli"]
    logging.getLogger(PACKAGE).setLevel(cli if cli is not None else wanted)
    if cli is None:  # libraries: warnings only (their debug needs -vvv)
        logging.getLogger().setLevel(logging.WARNING)
    update_secrets(secrets)
    _install(fmt)


def update_secrets(secrets: Iterable[str]) -> None:
    """Replace the set of values scrubbed from logs (after a policy reload)."""
    _FILTER.secrets = frozenset(secrets)
