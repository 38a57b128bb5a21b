"""Minor findings of the safety review a user could hit, on a real Dovecot (M6, M8, M11)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from retention.run.account import run_account
from retention.testing.dovecot import MailUser, SeedMessage
from retention.testing.faultproxy import FaultProxy
from tests.integration.helpers import PolicyFile, ago, env_var_for, patched_env, sha256

NOW = datetime.now(UTC).replace(microsecond=0)


def _run(pf: PolicyFile) -> Any:
    config = pf.load()
    with patched_env(pf.env):
        return run_account(config, config.accounts[0], dry_run=False, now=NOW,
                           sleep=lambda _s: None)


def _vault_target(vault: MailUser, port: int) -> dict[str, Any]:
    return {"type": "imap", "host": "127.0.0.1", "port": port, "security": "none",
            "allow_plaintext": True, "username": vault.name,
            "password_env": env_var_for("vault"), "folder": "Archive"}


def _archive_policy() -> dict[str, Any]:
    return {"p": {"protect": [], "rules": [
        {"name": "old", "folders": ["INBOX"], "older_than": "30d", "age_by": "received",
         "allow_empty_folder": True, "action": {"archive": "vault"}}]}}


# A Message-ID with a lone CR: SEARCH HEADER with it is a BAD on Dovecot ("CR sent without
# LF"), and Dovecot stores the message with that CR rewritten, so the copy never matches.
LONE_CR = (b"Message-ID: <caf\re-cr@m8.example>\r\nSubject: m8\r\n"
           b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nbody\r\nM8 LAST LINE\r\n")


def _vault_copies(vault: MailUser) -> int:
    return sum(len(f) for f in vault.folder_state().values())


def test_m8_m11_a_message_the_target_rewrites_blocks_nothing_and_leaves_no_copies(
    make_user: Any, tmp_path: Path
) -> None:
    """M8: the APPEND's answer is cut; reconciling must not SEARCH with the lone CR (a BAD
    that failed the account, then its recovery on every run). M11: the copy the target
    stored differs, so verification fails; the unusable copy is removed again, so runs do
    not pile up copies. The source keeps the message throughout."""
    user, vault = make_user(), make_user()
    [seeded] = user.seed("INBOX", [SeedMessage(received=ago(days=100), raw=LONE_CR)])
    with FaultProxy(vault.server.host, vault.server.imap_port) as proxy:
        pf = PolicyFile(tmp_path, _archive_policy(),
                        extra={"archives": {"vault": _vault_target(vault, proxy.port)}})
        pf.env[env_var_for("vault")] = vault.password
        pf.add_imap(user)
        # The message's last line reached the server; its answer is cut: stored, unanswered.
        proxy.drop_on(rb"^M8 LAST LINE", after_reply_bytes=1)
        first = _run(pf)
        assert not any(b"SEARCH HEADER Message-ID <caf\r" in ln for ln in proxy.lines)
        results = [_run(pf) for _ in range(3)]
    said = " | ".join(str(r.error) for r in (first, *results))
    assert "UID SEARCH failed" not in said and "internal error" not in said, said
    for r in (first, *results):
        assert r.status == "error" and r.error_kind == "archive", r.error
        assert "failed verification" in (r.error or ""), r.error
    # The source is kept; the vault holds at most the copy of the cut APPEND (its bytes
    # differ, so nothing can tell it is ours), not one more per run.
    assert [m.sha256 for m in user.folder_state()["INBOX"].values()] == [sha256(seeded)]
    assert _vault_copies(vault) <= 1, vault.folder_state()


def test_m11_repeated_runs_against_a_rewriting_target_leave_no_copies(
    make_user: Any, tmp_path: Path
) -> None:
    user, vault = make_user(), make_user()
    user.seed("INBOX", [SeedMessage(received=ago(days=100), raw=LONE_CR)])
    pf = PolicyFile(tmp_path, _archive_policy(),
                    extra={"archives": {"vault": _vault_target(vault, vault.server.imap_port)}})
    pf.env[env_var_for("vault")] = vault.password
    pf.add_imap(user)
    for _ in range(3):
        r = _run(pf)
        assert r.status == "error" and "failed verification" in (r.error or ""), r.error
    assert len(user.folder_state()["INBOX"]) == 1
    assert _vault_copies(vault) == 0, vault.folder_state()  # before: one per run


def _move_policy() -> dict[str, Any]:
    return {"p": {"protect": [], "rules": [
        {"name": "old", "folders": ["INBOX"], "older_than": "30d", "age_by": "received",
         "allow_empty_folder": True, "action": {"move_to": "Old"}}]}}


@pytest.mark.parametrize("cut_before", ["UID STORE", "UID EXPUNGE"])
def test_m6_a_copy_fallback_move_cut_part_way_is_finished_exactly_once(
    make_user: Any, tmp_path: Path, cut_before: str
) -> None:
    """A server without MOVE: the move is UID COPY, UID STORE \\Deleted, UID EXPUNGE. Cut
    before the STORE (the copy is made) or before the EXPUNGE (our \\Deleted is set): the
    next run finishes the move, no second copy in the target, no \\Deleted left behind."""
    user = make_user()
    go = user.seed("INBOX", [SeedMessage(received=ago(days=100 + i), flags={"\\Seen"})
                             for i in range(3)])
    keep = user.seed("INBOX", [SeedMessage(received=ago(days=1), flags={"\\Seen"})])
    with FaultProxy(user.server.host, user.server.imap_port) as proxy:
        proxy.replace_down(b" MOVE", b"")  # the capability lists lose MOVE
        pf = PolicyFile(tmp_path, _move_policy())
        pf.add_imap(user, security="none", host="127.0.0.1", port=proxy.port)
        # Answered by the proxy: the command never reaches the server.
        proxy.reply_on(rb"^\S+ " + cut_before.encode(), b"* BYE injected\r\n", times=None)
        first = _run(pf)
        assert first.status == "error", first
        assert not proxy.sent(rb"^\S+ UID MOVE")
        proxy.reset()
        proxy.replace_down(b" MOVE", b"")
        second = _run(pf)
    assert second.status == "ok", second.error
    state = user.folder_state()
    moved = Counter(m.sha256 for m in state.get("Old", {}).values())
    assert moved == Counter(sha256(r) for r in go), moved  # each exactly once
    inbox = state["INBOX"]
    assert [m.sha256 for m in inbox.values()] == [sha256(r) for r in keep]
    assert not any("\\Deleted" in m.flags for m in inbox.values())
