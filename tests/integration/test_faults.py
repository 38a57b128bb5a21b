"""The fault suite: a real Dovecot, faults injected by the fault proxy at every step.

Each case of ``CASES`` (the table below) runs one account through
``retention.testing.faultproxy.FaultProxy`` with the fault armed for the whole first run
(every retry meets it too), then disarms it and runs again. Each mailbox holds three
messages the policy lets go (``GO``) and two it keeps (``KEEP``: one flagged, one young).
For every case:

* no message is lost: after the first run each ``GO`` message is in the mailbox or in its
  destination (archive, target folder) or, for ``delete``, gone by plan; ``KEEP`` ones are
  all where they were;
* nothing unplanned is removed;
* the first run ends with the expected status (an account error of the expected kind
  whose text says what happened, never an internal error; or ``ok`` with a warning/skip
  when another client changed the folder);
* the next run finishes: afterwards the mailbox + the destination hold every message
  exactly once, ``GO`` ones at the destination (or deleted), ``KEEP`` ones in place.

Faults: a cut connection (``cut``), ``* BYE`` (``bye``), tagged ``NO``/``BAD`` (``no``,
``bad``; POP3 ``-ERR``), at: the metadata ``UID FETCH``, the ``BODY.PEEK[]`` literal,
after ``UID STORE`` before ``UID EXPUNGE``, ``UID MOVE``, ``APPEND`` to an IMAP archive,
POP3 ``RETR`` and ``QUIT``; a server that stalls past ``timeout`` and one that trickles
its answer byte by byte; UIDVALIDITY changed between scan and act (folder deleted and
recreated by another client); another client expunging and flagging during the run.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from retention.run.account import run_account
from retention.testing.dovecot import MailUser, SeedMessage
from retention.testing.faultproxy import FaultProxy, imap_bad, pop3_err
from tests.integration.helpers import PolicyFile, ago, env_var_for, patched_env

NOW = datetime.now(UTC).replace(microsecond=0)
FOLDER = "Lists"  # IMAP cases act on a folder another client may delete and recreate


def imap_no(line: bytes) -> bytes:
    return line.split(b" ", 1)[0] + b" NO [SERVERBUG] injected fault\r\n"


def imap_bye(_line: bytes) -> bytes:
    return b"* BYE injected: shutting down\r\n"


class Arm:
    """Arms one fault on the proxy; ``what`` describes it for the table in docs/faults.md."""

    def __init__(self, fn: Callable[[FaultProxy, Rig], None], what: str) -> None:
        self.fn = fn
        self.what = what

    def __call__(self, proxy: FaultProxy, rig: Rig) -> None:
        self.fn(proxy, rig)


@dataclass
class Case:
    protocol: str  # imap | pop3
    action: str  # delete | archive | move | archive-imap
    arm: Arm
    status: str = "error"  # the first run's account status
    kinds: tuple[str, ...] = ("connect",)  # its error_kind(s) when status is error
    says: str = ""  # a word the first run's error / warnings / skip reasons contain
    timeout: str = "60s"


@dataclass
class Rig:
    user: MailUser
    vault: MailUser | None
    go: list[bytes] = field(default_factory=list)
    keep: list[bytes] = field(default_factory=list)
    seeds: list[tuple[bytes, list[bytes], datetime]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


def _name(pattern: bytes) -> str:
    return NAMES.get(pattern, "`" + pattern.decode().lstrip("^") + "`")


def cut(pattern: bytes, after: int = 0) -> Arm:
    what = (f"connection cut after {after} byte{'s' if after > 1 else ''} of the answer to"
            if after else "connection cut right after")
    return Arm(lambda p, _r: p.drop_on(pattern, after_reply_bytes=after, times=None),
               f"{what} {_name(pattern)}")


def answer(pattern: bytes, reply: Any) -> Arm:
    said = {imap_no: "`NO`", imap_bye: "`* BYE`"}.get(reply, "`BAD`")
    if isinstance(reply, bytes):
        said = "`-ERR`"
    return Arm(lambda p, _r: p.reply_on(pattern, reply, times=None),
               f"{said} answers {_name(pattern)}")


def stall(pattern: bytes) -> Arm:
    return Arm(lambda p, r: p.stall_on(pattern, r.release, times=None),
               f"the server stalls after {_name(pattern)}, longer than `timeout`")


def trickle(pattern: bytes) -> Arm:
    return Arm(lambda p, _r: p.trickle_on(pattern, 0.3, times=None),
               f"the answer to {_name(pattern)} trickles one byte per 0.3 s, past the deadline")


def _other_client(rig: Rig, work: Callable[[Any], None], what: str) -> Arm:
    def arm(p: FaultProxy, _r: Rig) -> None:
        def act(_line: bytes) -> None:
            client = rig.user.imap_client()
            try:
                work(client)
            finally:
                client.logout()
        p.call_on(rb"^\S+ SELECT \"?" + FOLDER.encode(), act)
    return Arm(arm, what)


def recreate_folder(rig: Rig) -> Arm:
    """Another client deletes the folder and creates it again with the same messages."""
    def work(client: Any) -> None:
        client.delete_folder(FOLDER)
        client.create_folder(FOLDER)
        for raw, flags, when in rig.seeds:
            client.append(FOLDER, raw, flags=flags, msg_time=when)
    return _other_client(rig, work, "another client deletes and recreates the folder (new "
                         "UIDVALIDITY) between scan and act")


def expunge_and_flag(rig: Rig) -> Arm:
    """Another client flags the first GO message and expunges the second."""
    def work(client: Any) -> None:
        client.select_folder(FOLDER)
        first = client.search(["HEADER", "Message-ID", "go0@faults"])
        second = client.search(["HEADER", "Message-ID", "go1@faults"])
        client.add_flags(first, [b"\\Flagged"])
        client.add_flags(second, [b"\\Deleted"])
        client.uid_expunge(second)
    return _other_client(rig, work, "another client flags one planned message and expunges "
                         "another between scan and act")


META = rb"UID FETCH .*FLAGS"
BODY = rb"UID FETCH .*BODY\.PEEK\[\]"
EXPUNGE = rb"UID EXPUNGE"
MOVE = rb"UID MOVE"
APPEND = rb"^\S+ APPEND "
LAST_LINE = rb"^Seeded by tests/dovecot"
NAMES = {META: "the metadata `UID FETCH`", BODY: "`UID FETCH ... BODY.PEEK[]`",
         EXPUNGE: "`UID EXPUNGE` (after `UID STORE \\Deleted`)", MOVE: "`UID MOVE`",
         APPEND: "`APPEND` to the IMAP archive",
         LAST_LINE: "the last line of an `APPEND` literal (stored, unanswered)",
         rb"^RETR": "POP3 `RETR`", rb"^QUIT": "POP3 `QUIT`"}

CASES: dict[str, Case | Callable[[Rig], Case]] = {
    # -- the metadata UID FETCH of the scan
    "imap-meta-fetch-cut": Case("imap", "delete", cut(META, 120), says="connection lost"),
    "imap-meta-fetch-bye": Case("imap", "delete", answer(META, imap_bye), says="shutting down"),
    "imap-meta-fetch-no": Case("imap", "delete", answer(META, imap_no), kinds=("protocol",),
                               says="injected fault"),
    "imap-meta-fetch-bad": Case("imap", "delete", answer(META, imap_bad()),
                                kinds=("protocol",), says="injected fault"),
    # -- the BODY.PEEK[] literal of an archive
    "imap-body-literal-cut": Case("imap", "archive", cut(BODY, 300), says="connection lost"),
    "imap-body-fetch-bye": Case("imap", "archive", answer(BODY, imap_bye), says="shutting down"),
    "imap-body-fetch-no": Case("imap", "archive", answer(BODY, imap_no),
                               kinds=("protocol",), says="injected fault"),
    "imap-body-fetch-bad": Case("imap", "archive", answer(BODY, imap_bad()),
                                kinds=("protocol",), says="injected fault"),
    # -- after UID STORE \Deleted, before UID EXPUNGE
    "imap-store-then-cut": Case("imap", "delete", cut(EXPUNGE), says="connection lost"),
    "imap-expunge-bye": Case("imap", "delete", answer(EXPUNGE, imap_bye), says="shutting down"),
    "imap-expunge-no": Case("imap", "delete", answer(EXPUNGE, imap_no), kinds=("protocol",),
                            says="injected fault"),
    "imap-expunge-bad": Case("imap", "delete", answer(EXPUNGE, imap_bad()),
                             kinds=("protocol",), says="injected fault"),
    # -- UID MOVE (the server may have moved them: the answer is cut)
    # the server moved them; the retry's recovery sees that and reports them done
    "imap-move-cut": Case("imap", "move", cut(MOVE, 5), status="ok",
                          says="finished from interrupted run"),
    "imap-move-bye": Case("imap", "move", answer(MOVE, imap_bye), says="shutting down"),
    "imap-move-no": Case("imap", "move", answer(MOVE, imap_no), kinds=("protocol",),
                         says="injected fault"),
    "imap-move-bad": Case("imap", "move", answer(MOVE, imap_bad()), kinds=("protocol",),
                          says="injected fault"),
    # -- APPEND to an IMAP archive (cut after the "+ OK" continuation: stored, unanswered)
    # the message's last line reached the server: stored, but the answer is cut; the
    # archive reconnects and finds it by Message-ID + hash, so the run ends ok
    "imap-append-cut": Case("imap", "archive-imap", cut(LAST_LINE, 1),
                            status="ok", says="/Archive;UID="),
    "imap-append-bye": Case("imap", "archive-imap", answer(APPEND, imap_bye),
                            kinds=("connect", "archive"), says="APPEND"),
    "imap-append-no": Case("imap", "archive-imap", answer(APPEND, imap_no),
                           kinds=("archive", "protocol"), says="injected fault"),
    "imap-append-bad": Case("imap", "archive-imap", answer(APPEND, imap_bad()),
                            kinds=("archive", "protocol"), says="injected fault"),
    # -- POP3
    "pop3-retr-cut": Case("pop3", "archive", cut(rb"^RETR", 100), says="connection lost"),
    # a refused RETR is a per-message skip with the server's words
    "pop3-retr-err": Case("pop3", "archive", answer(rb"^RETR", pop3_err()), status="ok",
                          says="RETR refused: -ERR injected fault"),
    "pop3-quit-cut": Case("pop3", "delete", cut(rb"^QUIT"), says="QUIT"),
    "pop3-quit-err": Case("pop3", "delete", answer(rb"^QUIT", pop3_err()),
                          kinds=("protocol", "connect"), says="injected fault"),
    # -- slow servers
    "imap-stall-past-timeout": Case("imap", "delete", stall(META), says="no answer",
                                    timeout="2s"),
    "imap-trickle-past-deadline": Case("imap", "delete", trickle(META),
                                       says="no complete answer", timeout="1s"),
    "pop3-stall-past-timeout": Case("pop3", "archive", stall(rb"^RETR"), timeout="2s",
                                    says="RETR"),
    # -- other clients
    "imap-uidvalidity-changed": lambda rig: Case("imap", "delete", recreate_folder(rig),
                                                 status="ok", says="UIDVALIDITY"),
    "imap-other-client-expunges-and-flags": lambda rig: Case(
        "imap", "delete", expunge_and_flag(rig), status="ok", says="another client"),
}


def _seed(rig: Rig, folder: str) -> None:
    go = [SeedMessage(received=ago(days=100 + i), flags={"\\Seen"},
                      message_id=f"<go{i}@faults>") for i in range(3)]
    keep = [SeedMessage(received=ago(days=100), flags={"\\Seen", "\\Flagged"},
                        message_id="<keep0@faults>"),
            SeedMessage(received=ago(days=1), flags={"\\Seen"}, message_id="<keep1@faults>")]
    raws = rig.user.seed(folder, go + keep)
    rig.seeds = [(raw, [f.encode() for f in sorted(m.flags)], m.received)
                 for raw, m in zip(raws, go + keep, strict=True)]
    rig.go, rig.keep = raws[:3], raws[3:]


def _policy(case: Case, folder: str) -> dict[str, Any]:
    action: Any = {"delete": "delete", "move": {"move_to": "Old"}}.get(
        case.action, {"archive": "vault"})
    return {"p": {"protect": ["flagged"], "rules": [
        {"name": "old", "folders": [folder], "older_than": "30d", "age_by": "received",
         "allow_empty_folder": True, "action": action},
    ]}}


def _archive(case: Case, rig: Rig, pf: PolicyFile, proxy: FaultProxy) -> dict[str, Any]:
    if case.action == "archive":
        return {"vault": {"type": "mbox", "path": "./archive/a.mbox", "compress": "none"}}
    if case.action == "archive-imap":
        assert rig.vault is not None
        pf.env[env_var_for("vault")] = rig.vault.password
        return {"vault": {"type": "imap", "host": "127.0.0.1", "port": proxy.port,
                          "security": "none", "allow_plaintext": True,
                          "username": rig.vault.name, "password_env": env_var_for("vault"),
                          "folder": "Archive", "timeout": case.timeout}}
    return {}


def _sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _where(case: Case, rig: Rig, tmp_path: Path) -> dict[str, dict[str, int]]:
    """For each seeded message (by sha256): copies in the source folder / elsewhere."""
    state = rig.user.folder_state()
    source = FOLDER if case.protocol == "imap" else "INBOX"
    out: dict[str, dict[str, int]] = {}
    for raw in rig.go + rig.keep:
        sha = _sha(raw)
        mid = raw.split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0]
        counts = {"source": sum(1 for m in state.get(source, {}).values() if m.sha256 == sha),
                  "moved": sum(1 for m in state.get("Old", {}).values() if m.sha256 == sha)}
        mbox = tmp_path / "archive" / "a.mbox"
        counts["archive"] = mbox.read_bytes().count(b"Message-ID: " + mid) if mbox.exists() else 0
        if rig.vault is not None:
            vault = rig.vault.folder_state()
            counts["archive"] += sum(1 for f in vault.values() for m in f.values()
                                     if m.sha256 == sha)
        out[sha] = counts
    return out


def _run(pf: PolicyFile, *, now: datetime = NOW, dry_run: bool = False) -> Any:
    config = pf.load()
    with patched_env(pf.env):
        return run_account(config, config.accounts[0], dry_run=dry_run, now=now,
                           sleep=lambda _s: None)


def _said(result: Any) -> str:
    parts = [result.error or "", *result.warnings]
    parts += [r.detail or "" for r in result.results]
    return " | ".join(parts)


@pytest.mark.parametrize("name", sorted(CASES))
def test_fault(name: str, make_user: Any, tmp_path: Path) -> None:
    user = make_user()
    rig = Rig(user, None)
    spec = CASES[name]
    case = spec(rig) if callable(spec) else spec
    if case.action == "archive-imap":
        rig.vault = make_user()
    folder = FOLDER if case.protocol == "imap" else "INBOX"
    _seed(rig, folder)
    server = user.server
    port = server.imap_port if case.protocol == "imap" else server.pop3_port
    with FaultProxy(server.host, port) as proxy:
        pf = PolicyFile(tmp_path, _policy(case, folder))
        pf.extra = {"archives": _archive(case, rig, pf, proxy)} if case.action.startswith(
            "archive") else {}
        add = pf.add_imap if case.protocol == "imap" else pf.add_pop3
        add(user, security="none", port=proxy.port, host="127.0.0.1", timeout=case.timeout)
        if case.protocol == "pop3":
            # Answers the proxy injects must not overtake pipelined ones; and POP3 ages by
            # first sight: every message but the young one was first seen 100 days ago.
            proxy.replace_down(b"PIPELINING\r\n", b"")
            _run(pf, now=NOW - timedelta(days=100), dry_run=True)
        try:
            case.arm(proxy, rig)
            first = _run(pf)
        finally:
            rig.release.set()
            proxy.reset()
        after_first = _where(case, rig, tmp_path)
        second = _run(pf)
    after = _where(case, rig, tmp_path)

    # The first run: the expected, clear outcome.
    said = _said(first)
    assert first.status == case.status, f"{first.status}: {said}"
    if case.status == "error":
        assert first.error_kind in case.kinds, f"{first.error_kind}: {first.error}"
        assert "internal error" not in (first.error or "").lower(), first.error
    assert case.says.lower() in said.lower(), said

    # Nothing lost, nothing unplanned removed, at any point.
    go = {_sha(r) for r in rig.go}
    for sha, where in after_first.items():
        held = where["source"] + where["archive"] + where["moved"]
        if sha in go:
            assert held >= 1 or case.action == "delete", (sha, where)
        elif case.protocol == "imap":
            assert where["source"] == 1 and held == 1, ("kept message moved", where)

    # The next run finishes: every message exactly once, where the policy puts it.
    assert second.status == "ok", second.error
    removed_by_other = set()
    if "expunges" in name:
        removed_by_other.add(_sha(rig.go[1]))
    for sha, where in after.items():
        if sha in removed_by_other:
            continue
        protected = sha not in go or ("expunges" in name and sha == _sha(rig.go[0]))
        if protected and case.protocol == "imap":
            assert where == {"source": 1, "moved": 0, "archive": 0}, (sha, where)
            continue
        if case.action == "delete":
            assert where["source"] + where["archive"] + where["moved"] == 0, (sha, where)
        elif case.action == "move":
            assert where == {"source": 0, "moved": 1, "archive": 0}, (sha, where)
        else:
            assert where == {"source": 0, "moved": 0, "archive": 1}, (sha, where)


# -- the table of cases and outcomes (docs/faults.md) -------------------------------------

ACTIONS = {"delete": "delete", "archive": "archive (mbox)", "move": "move",
           "archive-imap": "archive (IMAP target)"}
NEXT = {"delete": "the planned ones deleted, the kept ones in place",
        "move": "the planned ones once in the target folder, the kept ones in place",
        "archive": "the planned ones once in the archive and gone from the source",
        "archive-imap": "the planned ones once in the archive and gone from the source"}
TABLE_DOC = Path(__file__).resolve().parents[2] / "docs" / "faults.md"
BEGIN, END = "<!-- fault-table:begin -->", "<!-- fault-table:end -->"


def table() -> str:
    """The markdown table of every case: what ``test_fault`` injects and asserts."""
    rows = ["| case | account, action | injected fault (every attempt of the first run) "
            "| first run | nothing lost, nothing unplanned removed | next run |",
            "| --- | --- | --- | --- | --- | --- |"]
    for name in sorted(CASES):
        spec = CASES[name]
        case = spec(Rig(None, None)) if callable(spec) else spec  # type: ignore[arg-type]
        if case.status == "error":
            first = f"clear account error ({' or '.join(case.kinds)}) saying \"{case.says}\""
        else:
            first = f"ok; the report says \"{case.says}\""
        rows.append(f"| `{name}` | {case.protocol.upper()}, {ACTIONS[case.action]} | "
                    f"{case.arm.what} | {first} | yes | ok: {NEXT[case.action]} |")
    return "\n".join(rows) + "\n"


def write_table() -> None:
    """Rewrite the table in docs/faults.md (``python -c 'from tests.integration.test_faults
    import write_table; write_table()'``)."""
    text = TABLE_DOC.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    _old, tail = rest.split(END, 1)
    TABLE_DOC.write_text(f"{head}{BEGIN}\n{table()}{END}{tail}", encoding="utf-8")
