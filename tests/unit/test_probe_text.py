"""``check --connect``/``--archives`` verdicts and lines (the probes run on Dovecot in
tests/integration/test_cli_check_probes.py)."""

from __future__ import annotations

from retention.cli.probes import archive_lines, probe_lines
from retention.run.probe import ArchiveCheck, CopyProblem, Probe


def test_a_server_without_uidplus_fails_the_check_others_only_say_what_they_cost() -> None:
    ok = Probe("alice", "imap", "mail:993", present=("UIDPLUS", "MOVE", "QUOTA"),
               missing=(("CONDSTORE", "re-reads flags"),), special_use=(("\\Trash", "Trash"),),
               usage_bytes=2048, limit_bytes=4096)
    assert not ok.failed
    assert probe_lines(ok) == [
        "  alice: imap mail:993: ok; has UIDPLUS MOVE QUOTA",
        "    missing CONDSTORE: re-reads flags",
        "    special-use: \\Trash Trash",
        "    quota: 2.0 KiB of 4.0 KiB",
    ]
    no_uidplus = Probe("bob", "imap", "mail:993", present=("MOVE",),
                       missing=(("UIDPLUS", "no exact removal"),))
    assert no_uidplus.failed and probe_lines(no_uidplus)[0].endswith(": FAILED; has MOVE")
    no_uidl = Probe("carol", "pop3", "mail:995", missing=(("UIDL", "no identity"),))
    assert no_uidl.failed
    refused = Probe("dave", "imap", "mail:993", error="login rejected", error_kind="auth")
    assert refused.failed
    assert probe_lines(refused) == ["  dave: imap mail:993: FAILED (auth): login rejected"]


def test_archive_lines() -> None:
    assert archive_lines(ArchiveCheck("alice", checked=3)) == ["  alice: 3 copies intact"]
    bad = ArchiveCheck("bob", checked=2, problems=[
        CopyProblem(7, "INBOX", "<m@x>", "/a/bob.mbox", "the archived entry is truncated")])
    assert archive_lines(bad) == [
        "  bob: FAILED: 1 of 2 copies not intact",
        "    row 7 from INBOX <m@x> at /a/bob.mbox: the archived entry is truncated",
    ]
