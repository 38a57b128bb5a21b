"""``retention restore``: put archived messages back where they were, once.

One unit of work per account (like an account pass, under the same account lock):

1. Select journal removals of the account (the audit history): ``--run``, ``--since`` /
   ``--until`` (removal time), ``--message-id``, ``--folder``. Only ``archive`` removals
   have a copy; deleted-only ones are reported as not restorable.
2. Read each copy from its archive (``archive.read``), check its SHA-256 against the
   journal's ``copy_sha256`` and rebuild the original bytes (``sha256``).
3. Skip a message already present in the destination folder (same Message-ID and the
   same bytes; without a Message-ID, same size and bytes) or already restored by an
   earlier restore: running it twice restores nothing twice.
4. Journal ``planned``, ``APPEND`` with the original flags and INTERNALDATE into the
   original folder (or ``--to-folder``), journal ``restored`` with the new UID and an
   exemption from every rule until ``restore_grace`` has passed (``state.restores``).

POP3 has no APPEND: the command says so, and ``--export-mbox PATH`` writes the selection
to an mbox instead. A dry-run reads the archives and the mailbox (EXAMINE) only.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retention.archive import ArchiveSet, sha256
from retention.archive.read import original, read_copy
from retention.errors import AccountError, ArchiveError, ConfigError, FolderSkipped
from retention.run.lease import account_lease
from retention.state.journal import Journal, JournalRow
from retention.state.restores import FAILED, PRESENT, RESTORED, Hold, RestoreLog

if TYPE_CHECKING:
    from retention.config.schema import Account, Config

Connect = Callable[["Account", str, bool], Any]


@dataclass(frozen=True, slots=True)
class Selection:
    run_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    message_ids: tuple[str, ...] = ()
    folder: str | None = None

    def matches(self, row: JournalRow) -> bool:
        when = row.done_at or row.updated
        return (
            (self.run_id is None or row.run_id == self.run_id)
            and (self.since is None or when >= self.since)
            and (self.until is None or when < self.until)
            and (not self.message_ids or row.message_id in self.message_ids)
            and (self.folder is None or row.folder == self.folder)
        )


@dataclass(frozen=True, slots=True)
class Item:
    """One selected removal and what restore did (or would do) with it."""

    row: JournalRow
    status: str  # restored | would_restore | present | already_restored | exported |
    #              not_restorable | failed
    folder: str
    detail: str = ""
    uid: int | None = None


@dataclass
class RestoreReport:
    account: str
    restore_id: str
    dry_run: bool
    items: list[Item] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(i.status == "failed" for i in self.items)


def _default_connect(account: Account, password: str, readonly: bool) -> Any:
    from retention.adapters.imap.session import ImapSession

    return ImapSession.connect(account, password, readonly=readonly)


def restore(
    config: Config,
    account: Account,
    selection: Selection,
    *,
    to_folder: str | None = None,
    dry_run: bool = False,
    export_mbox: Path | None = None,
    now: datetime | None = None,
    connect: Connect = _default_connect,
    password: Callable[[Any], str] | None = None,
) -> RestoreReport:
    from retention.state import StateDir

    now = now or datetime.now(UTC)
    if password is None:
        from retention.config.secrets import read_password

        password = read_password
    if account.protocol == "pop3" and export_mbox is None:
        raise ConfigError(
            f"account {account.name} is POP3: restore by APPEND is impossible (POP3 cannot "
            "add messages to a mailbox); use --export-mbox PATH to write the selection to "
            "an mbox instead"
        )
    report = RestoreReport(account.name, f"restore-{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}",
                           dry_run)
    state = StateDir(config.state_dir, config.state_url)
    if not state.has_journal():
        return report
    # The mailbox's lease too (state_url): no replica's pass acts on it meanwhile.
    with state.lock(account.name), account_lease(
            config, account.mailbox_identity(), dry_run=dry_run, stop=None, once=False), \
            state.journal() as journal, \
            state.restore_log() as log, \
            ArchiveSet(config.archives, account=account.name, secrets=password) as archives:
        done = log.restored_sources(account.name)
        todo: list[tuple[JournalRow, bytes]] = []
        for row in journal.removals(account=account.name):
            if row.state != "deleted" or not selection.matches(row):
                continue
            folder = to_folder or row.folder
            if row.action != "archive":
                report.items.append(Item(row, "not_restorable", folder,
                                         f"{row.action} without an archive copy"))
            elif row.id in done:
                report.items.append(Item(row, "already_restored", folder,
                                         "restored by an earlier restore"))
            else:
                try:
                    todo.append((row, _read(row, archives, journal)))
                except ArchiveError as e:
                    report.items.append(Item(row, "failed", folder, str(e)))
        if account.protocol == "pop3":
            assert export_mbox is not None
            _export(export_mbox, todo, report, dry_run)
            return report
        if not todo:
            return report
        session = connect(account, password(account), dry_run)
        try:
            for row, data in todo:
                report.items.append(_one(session, log, account, config, report, row, data,
                                         to_folder or row.folder, now))
        finally:
            session.close()
    return report


def _read(row: JournalRow, archives: ArchiveSet, journal: Journal) -> bytes:
    def imap_session(name: str) -> Any:
        return archives.writer(name, journal, "restore").session()  # type: ignore[attr-defined]

    copy = read_copy(row, imap_session)
    want = row.copy_sha256 or row.sha256
    if want is not None and sha256(copy) != want:
        raise ArchiveError(f"the archived copy at {row.location} no longer matches its "
                           "SHA-256 in the history: not restored")
    data, exact = original(copy, row)
    if not exact and row.sha256 is not None:
        raise ArchiveError(f"the copy at {row.location} cannot be turned back into the exact "
                           "original bytes: not restored")
    return data


def _present(session: Any, folder: str, row: JournalRow, data: bytes) -> int | None:
    """The UID of a message in ``folder`` with these exact bytes, if any."""
    digest = sha256(data)
    try:
        if row.message_id:
            candidates = session.find_by_message_id(folder, row.message_id)
        else:
            if not session.folder_exists(folder):
                return None
            info = next((f for f in session.list_folders() if f.name == folder), None)
            if info is None:
                return None
            snap = session.scan(info, with_sent=False)
            candidates = [m.uid for m in snap.messages if m.size == len(data)]
        if not candidates:
            return None
        bodies = session.fetch_uids(folder, candidates)
    except FolderSkipped:
        return None
    return next((uid for uid in sorted(bodies) if sha256(bodies[uid]) == digest), None)


def _one(session: Any, log: RestoreLog, account: Account, config: Config,
         report: RestoreReport, row: JournalRow, data: bytes, folder: str,
         now: datetime) -> Item:
    try:
        grace = config.policy_of(account).restore_grace
        uid = _present(session, folder, row, data)
        if uid is not None:
            if not report.dry_run:
                # Also the landing of a restore that crashed before it was journalled:
                # exempt it like any restored message (keeping mail is the safe side).
                validity = session.folder_uidvalidity(folder)
                rid = log.plan(report.restore_id, account.name, row.id, folder,
                               row.message_id, row.sha256, row.size)
                log.finish(rid, PRESENT, uidvalidity=validity, uid=uid,
                           detail="already in the folder",
                           hold=Hold(account.name, folder, validity, uid, row.message_id, now,
                                     now + grace))
            return Item(row, "present", folder, "already in the folder", uid)
        if report.dry_run:
            return Item(row, "would_restore", folder)
        rid = log.plan(report.restore_id, account.name, row.id, folder, row.message_id,
                       row.sha256, row.size)
        assert row.internal_date is not None
        uid = session.append(folder, data, sorted(row.flags), row.internal_date)
        validity = session.folder_uidvalidity(folder)
        if uid is None:  # no APPENDUID: find it to know which UID to exempt
            uid = _present(session, folder, row, data)
        hold = Hold(account.name, folder, validity, uid, row.message_id, now,
                    now + grace) if uid is not None else None
        log.finish(rid, RESTORED, uidvalidity=validity, uid=uid, hold=hold)
        return Item(row, "restored", folder, f"UID {uid}", uid)
    except AccountError as e:
        if not report.dry_run:
            rid = log.plan(report.restore_id, account.name, row.id, folder, row.message_id,
                           row.sha256, row.size)
            log.finish(rid, FAILED, detail=str(e))
        return Item(row, "failed", folder, str(e))


def _export(path: Path, todo: Sequence[tuple[JournalRow, bytes]], report: RestoreReport,
            dry_run: bool) -> None:
    from retention.archive.mbox import encode_entry

    if dry_run:
        report.items.extend(Item(r, "would_restore", str(path), "export to mbox")
                            for r, _ in todo)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as fh:
        for row, data in todo:
            assert row.internal_date is not None
            fh.write(encode_entry(data, row.internal_date))
            report.items.append(Item(row, "exported", str(path), "written to the mbox"))


def render(report: RestoreReport, fmt: str = "text") -> str:
    """The restore report: a table (``text``) or ``json``."""
    import json

    rows = [{
        "status": i.status, "folder": i.folder, "from_folder": i.row.folder,
        "message_id": i.row.message_id, "size": i.row.size, "uid": i.uid,
        "removed_by_run": i.row.run_id, "rule": i.row.rule, "archive": i.row.target,
        "detail": i.detail,
    } for i in report.items]
    if fmt == "json":
        return json.dumps({"account": report.account, "restore_id": report.restore_id,
                           "dry_run": report.dry_run, "messages": rows},
                          indent=2, ensure_ascii=False) + "\n"
    head = "DRY RUN (nothing was changed): " if report.dry_run else ""
    out = [f"{head}restore {report.restore_id} for account {report.account}"]
    for r in rows:
        out.append(f"  {r['status']:16} {r['folder']:20} {r['message_id'] or '-'}  "
                   f"{r['size']} bytes  (run {r['removed_by_run']}, rule {r['rule']})"
                   + (f"  {r['detail']}" if r["detail"] else ""))
    counts: dict[str, int] = {}
    for r in rows:
        counts[str(r["status"])] = counts.get(str(r["status"]), 0) + 1
    out.append(", ".join(f"{n} {s.replace('_', ' ')}" for s, n in sorted(counts.items()))
               or "no archived messages match")
    return "\n".join(out) + "\n"
