"""Pure rendering of notices to the mailbox owner: texts in, a ``Notice`` and RFC 5322 bytes out.

No I/O and no clock: the caller passes the templates (``notify.templates.load``), the
figures and ``now``. Templates are ``string.Template`` texts (``$name``): the first line is
``Subject: ...``, then an empty line, then the body. ``string.Template`` rather than
Jinja2 because administrators supply their own templates: substitution only, no code,
loops or attribute access a template could abuse, and no new dependency. What needs a
loop (the per-rule lines of a summary) is rendered here with its own one-line template
(``archived_item.txt``), and the words that depend on the language (action names) come
from the language's ``words.txt`` (``key=text`` lines).

Variables: warning: ``$account $username $usage $limit $percent $warn_level $clean_level
$date $restore_contact``; archived: ``$account $username $count $size $date $run_id
$items $archives $restore_contact $restore_command``; archived_item: ``$rule $action
$count $size $folders``. An unknown ``$name`` is left as it is (``safe_substitute``), so a
typo in a template shows in the notice instead of failing the run.

Each notice has an *event* key (``warning:<account>:<crossing>``, ``archived:<account>:
<run>``) and a Message-ID derived from it, so the same event always produces the same
Message-ID: delivery can look for it before sending again (never twice for one event).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from string import Template
from typing import Literal

from retention.result import ActionResult

NoticeKind = Literal["warning", "archived"]
TEMPLATE_NAMES = ("warning.txt", "archived.txt", "archived_item.txt", "words.txt")
# Actions the summary reports: mail the owner no longer has in that folder or anywhere.
SUMMARISED = ("archive", "delete", "trash")


@dataclass(frozen=True, slots=True)
class Notice:
    """One notice to one owner, ready to deliver."""

    kind: NoticeKind
    event: str
    account: str
    language: str
    subject: str
    body: str

    @property
    def message_id(self) -> str:
        digest = hashlib.sha256(self.event.encode("utf-8")).hexdigest()[:32]
        return f"<notice-{digest}@retention.invalid>"

    def to_bytes(self, *, sender: str, to: str, now: datetime) -> bytes:
        """The notice as an RFC 5322 message with CRLF line endings (UTF-8 text/plain)."""
        msg = EmailMessage(policy=SMTP)
        msg["From"] = sender
        msg["To"] = to
        msg["Subject"] = self.subject
        msg["Date"] = format_datetime(now)
        msg["Message-ID"] = self.message_id
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to it
        msg["X-Retention-Notice"] = self.kind
        msg.set_content(self.body, charset="utf-8", cte="8bit" if _wide(self.body) else "7bit")
        return msg.as_bytes()


def _wide(text: str) -> bool:
    return not text.isascii()


def parse_words(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.lstrip().startswith("#"):
            out[key.strip()] = value.strip()
    return out


def _split(text: str) -> tuple[str, str]:
    """``Subject: ...`` first line, empty line, body."""
    first, _, rest = text.partition("\n")
    if not first.lower().startswith("subject:"):
        return "", text
    return first.split(":", 1)[1].strip(), rest.lstrip("\n")


def _fill(text: str, values: Mapping[str, str]) -> str:
    return Template(text).safe_substitute(values)


def human_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.0f}%"


def warning(
    templates: Mapping[str, str],
    *,
    account: str,
    username: str,
    language: str,
    crossing: int,
    usage_bytes: int,
    limit_bytes: int,
    warn_above: float,
    clean_above: float,
    restore_contact: str,
    now: datetime,
) -> Notice:
    """The notice sent when usage crosses ``warn_above`` (the ``crossing``-th time)."""
    values = {
        "account": account, "username": username, "usage": human_size(usage_bytes),
        "limit": human_size(limit_bytes), "percent": _pct(usage_bytes / limit_bytes),
        "warn_level": _pct(warn_above), "clean_level": _pct(clean_above),
        "date": now.strftime("%Y-%m-%d %H:%M %Z").strip(), "restore_contact": restore_contact,
    }
    subject, body = _split(templates["warning.txt"])
    return Notice("warning", f"warning:{account}:{crossing}", account, language,
                  _fill(subject, values), _fill(body, values))


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a summary: what one rule did with one kind of action."""

    rule: str
    action: str
    count: int
    size: int
    folders: tuple[str, ...]


def summarise(results: Iterable[ActionResult], outcomes: Sequence[str]) -> list[Line]:
    """Per (rule, action) the messages whose result is in ``outcomes``, in a stable order."""
    acc: dict[tuple[str, str], tuple[int, int, set[str]]] = {}
    for r in results:
        kind = r.action.kind.value
        if r.result not in outcomes or kind not in SUMMARISED:
            continue
        count, size, folders = acc.get((r.action.rule, kind), (0, 0, set()))
        folders.add(r.action.message.folder)
        acc[(r.action.rule, kind)] = (count + 1, size + r.action.message.size, folders)
    return [Line(rule, kind, c, s, tuple(sorted(f))) for (rule, kind), (c, s, f)
            in sorted(acc.items())]


def archive_places(results: Iterable[ActionResult], outcomes: Sequence[str]) -> list[str]:
    """Where the archived copies are: mbox files, Maildir folders, IMAP folders (distinct)."""
    places: list[str] = []
    for r in results:
        if r.result not in outcomes or r.action.kind.value != "archive":
            continue
        where = r.detail or (f"archive {r.action.archive}" if r.action.archive else None)
        if where is None:
            continue
        where = where.split(";UID=", 1)[0]
        for sub in ("/cur/", "/new/"):  # a Maildir file: name its folder, not each file
            if sub in where:
                where = where.rsplit(sub, 1)[0]
        if where not in places:
            places.append(where)
    return places


def archived(
    templates: Mapping[str, str],
    *,
    account: str,
    username: str,
    language: str,
    run_id: str,
    lines: Sequence[Line],
    places: Sequence[str],
    restore_contact: str,
    restore_command: str,
    now: datetime,
) -> Notice:
    """The summary after a run that archived or deleted mail."""
    words = parse_words(templates.get("words.txt", ""))
    items = []
    for line in lines:
        items.append(_fill(templates["archived_item.txt"].rstrip("\n"), {
            "rule": line.rule, "action": words.get(line.action, line.action),
            "count": str(line.count), "size": human_size(line.size),
            "folders": ", ".join(line.folders),
        }))
    shown = list(places[:10]) + ([f"... (+{len(places) - 10})"] if len(places) > 10 else [])
    if shown:
        archives = "\n".join([words.get("archives_head", "Archive copies:"),
                              *(f"    {p}" for p in shown)]) + "\n"
    else:
        archives = words.get("no_archives", "") + "\n"
    values = {
        "account": account, "username": username,
        "count": str(sum(line.count for line in lines)),
        "size": human_size(sum(line.size for line in lines)),
        "date": now.strftime("%Y-%m-%d %H:%M %Z").strip(), "run_id": run_id,
        "items": "\n".join(items) + "\n", "archives": archives,
        "restore_contact": restore_contact, "restore_command": restore_command,
    }
    subject, body = _split(templates["archived.txt"])
    return Notice("archived", f"archived:{account}:{run_id}", account, language,
                  _fill(subject, values), _fill(body, values))


def crossed(was_above: bool, ratio: float | None, warn_above: float) -> tuple[bool, bool]:
    """(above now, fire a warning): fire only on the way up, once per crossing.

    Unknown usage (no limit) keeps the previous state and fires nothing.
    """
    if ratio is None:
        return was_above, False
    above = ratio >= warn_above
    return above, above and not was_above
