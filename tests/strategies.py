"""Factories and hypothesis strategies for planner tests: messages, snapshots, policies.

Factories (``msg``, ``folder``, ``snapshot``, ``policy``) build the frozen model types
directly, with readable defaults (a read, unflagged 1000-byte message in INBOX), so a
table-driven test states only what matters to it. Strategies generate the same shapes at
random for the property tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from retention.config.schema import Policy
from retention.model import (
    ANSWERED,
    DELETED,
    DRAFT,
    FLAGGED,
    SEEN,
    FolderInfo,
    FolderSnapshot,
    Message,
    MessageRef,
    Snapshot,
    Usage,
)

NOW = datetime(2026, 11, 28, 3, 0, 0, tzinfo=UTC)
DAY = timedelta(days=1)

INBOX = FolderInfo("INBOX")
TRASH = FolderInfo("Trash", frozenset({"\\Trash"}))
JUNK = FolderInfo("Junk", frozenset({"\\Junk"}))
SENT = FolderInfo("Sent", frozenset({"\\Sent"}))
ARCHIVE = FolderInfo("Archive", frozenset({"\\Archive"}))
LISTS = FolderInfo("Lists/python")
ALL_MAIL = FolderInfo("All Mail", frozenset({"\\All"}))
STANDARD = (INBOX, TRASH, JUNK, SENT, ARCHIVE, LISTS)


def msg(
    folder: str = "INBOX",
    uid: int = 1,
    *,
    age: timedelta | None = None,
    received: datetime | None = None,
    size: int = 1000,
    flags: Iterable[str] = (SEEN,),
    sent: datetime | None = None,
    sent_age: timedelta | None = None,
    saved: datetime | None = None,
    saved_age: timedelta | None = None,
    date_header: str | None = None,
    uidvalidity: int = 1,
    message_id: str | None = None,
) -> Message:
    """A message; ``age``/``sent_age``/``saved_age`` are measured back from ``NOW``."""
    if received is None:
        received = NOW - (age if age is not None else 400 * DAY)
    if sent is None and sent_age is not None:
        sent = NOW - sent_age
    if saved is None and saved_age is not None:
        saved = NOW - saved_age
    return Message(
        ref=MessageRef(folder, uidvalidity, uid),
        size=size,
        received=received,
        flags=frozenset(flags),
        sent=sent,
        saved=saved,
        message_id=message_id or f"<{folder}.{uid}@test>",
        date_header=date_header,
    )


def folder(info: FolderInfo | str, *messages: Message, uidvalidity: int = 1) -> FolderSnapshot:
    if isinstance(info, str):
        info = next((f for f in STANDARD if f.name == info), FolderInfo(info))
    return FolderSnapshot(info=info, uidvalidity=uidvalidity, messages=tuple(messages))


def snapshot(
    *folders: FolderSnapshot,
    usage: int | None = None,
    limit: int | None = None,
    protocol: str = "imap",
    all_folders: Sequence[FolderInfo] | None = None,
    account: str = "alice",
) -> Snapshot:
    """A snapshot; ``usage`` defaults to the summed sizes, ``all_folders`` to the scanned
    folders plus the standard ones."""
    if usage is None:
        usage = sum(f.size for f in folders)
    if all_folders is None:
        names = {f.name for f in folders}
        all_folders = [f.info for f in folders] + [f for f in STANDARD if f.name not in names]
    return Snapshot(
        account=account,
        protocol=protocol,  # type: ignore[arg-type]
        usage=Usage(usage, limit, "quota" if limit is not None else "sum"),
        folders=tuple(folders),
        all_folders=tuple(all_folders),
    )


def by_folder(*messages: Message, infos: Sequence[FolderInfo] = STANDARD) -> list[FolderSnapshot]:
    """Group messages into folder snapshots (every folder of ``infos``, empty ones too)."""
    return [folder(i, *[m for m in messages if m.ref.folder == i.name]) for i in infos]


def rule(name: str = "r", action: Any = "delete", **fields: Any) -> dict[str, Any]:
    return {"name": name, "action": action, **fields}


def policy(*rules: dict[str, Any], **fields: Any) -> Policy:
    """A validated Policy: ``policy(rule('old', older_than='30d'), keep_within='7d')``."""
    return Policy.model_validate({"rules": list(rules), **fields})


# --------------------------------------------------------------------- strategies

FLAG_ODDS = {SEEN: 75, FLAGGED: 15, ANSWERED: 15, DRAFT: 5, DELETED: 5}  # percent
# Days and seconds drawn apart: hypothesis favours small integers, which as plain seconds
# would make nearly every message minutes old.
AGES = st.builds(lambda d, s: timedelta(days=d, seconds=s),
                 st.integers(0, 3 * 365), st.integers(0, 86_399))


@st.composite
def messages(draw: st.DrawFn, folder_name: str, uid: int) -> Message:
    # Mostly read, seldom flagged or deleted, so that rules have something to do.
    flags = {f for f, odds in FLAG_ODDS.items() if draw(st.integers(0, 99)) < odds}
    return msg(
        folder_name,
        uid,
        age=draw(AGES),
        size=draw(st.integers(min_value=1, max_value=50_000)),
        flags=flags,
        sent_age=draw(st.none() | AGES),
        saved_age=draw(st.none() | AGES),
        date_header=draw(st.none() | st.just("garbage")),
    )


@st.composite
def snapshots(draw: st.DrawFn, infos: Sequence[FolderInfo] = STANDARD) -> Snapshot:
    """Folders of ``infos`` (\\Archive sometimes missing on the server), 0-10 messages
    each; usage a little above the summed sizes; a limit (or none) putting usage mostly
    around the cleanup levels."""
    if draw(st.integers(0, 4)) == 0:
        infos = [i for i in infos if i is not ARCHIVE]
    folders = []
    for info in infos:
        n = draw(st.integers(min_value=0, max_value=10))
        uids = draw(st.lists(st.integers(1, 10_000), min_size=n, max_size=n, unique=True))
        folders.append(folder(info, *[draw(messages(info.name, u)) for u in uids]))
    total = sum(f.size for f in folders)
    usage = total + draw(st.integers(min_value=0, max_value=5_000))
    percent = draw(st.none() | st.integers(min_value=70, max_value=130))
    limit = None if percent is None else max(1, usage * 100 // percent)
    return snapshot(*folders, usage=usage, limit=limit, all_folders=infos)


FOLDER_SETS = (["INBOX"], ["\\Trash"], ["\\Junk"], ["*"], ["%"], ["\\Trash", "\\Junk"])
PROTECT_SETS = st.sampled_from([
    [], ["flagged"], ["flagged", "unread"], ["unread"], ["answered", "draft"],
    ["flagged", "unread", "answered", "draft"],
])


# (clean_to, clean_above) in percent: mostly realistic, sometimes far apart.
LEVELS = st.integers(40, 95).flatmap(
    lambda to: st.tuples(st.just(to), st.integers(to + 1, min(100, to + 20))))


@st.composite
def rules(draw: st.DrawFn, name: str, over_quota: bool | None = None) -> dict[str, Any]:
    when = draw(st.sampled_from(["always", "over_quota"])) if over_quota is None else (
        "over_quota" if over_quota else "always")
    out: dict[str, Any] = {"name": name, "when": when}
    out["folders"] = draw(st.sampled_from(FOLDER_SETS))
    if draw(st.booleans()):
        out["exclude_folders"] = [draw(st.sampled_from(["\\Junk", "\\Sent", "Archive"]))]
    actions: list[Any] = ["delete", {"archive": "cold"}]
    if when == "always":
        actions += ["trash", {"move_to": "\\Archive"}, {"move_to": "Old"}]
    out["action"] = draw(st.sampled_from(actions))
    if when == "always" or draw(st.booleans()):
        out["older_than"] = f"{draw(st.integers(0, 800))}d"
    if draw(st.integers(0, 4)) == 0:
        out["age_by"] = draw(st.sampled_from(["received", "sent", "saved"]))
    if draw(st.integers(0, 4)) == 0:
        out["larger_than"] = draw(st.integers(0, 30_000))
    if draw(st.integers(0, 3)) == 0:
        out["protect"] = draw(PROTECT_SETS)
    if draw(st.integers(0, 3)) == 0:
        out["allow_empty_folder"] = draw(st.booleans())
    return out


@st.composite
def policies(draw: st.DrawFn, max_rules: int = 5) -> Policy:
    n = draw(st.integers(min_value=1, max_value=max_rules))
    clean_to, clean_above = draw(LEVELS)
    cap: int | str = draw(st.integers(0, 60) | st.integers(0, 100).map(lambda p: f"{p}%"))
    return policy(
        *[draw(rules(f"r{i}")) for i in range(n)],
        protect=draw(PROTECT_SETS),
        keep_within=draw(st.sampled_from(["0d", "1d", "7d", "30d"])),
        quota={"clean_above": f"{clean_above}%", "clean_to": f"{clean_to}%",
               "max_delete_per_run": cap},
    )
