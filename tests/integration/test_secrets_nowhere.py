"""A password never appears in any output (issue 8: secrets; README "Safety guarantees").

Real Dovecot users with distinctive passwords; the CLI (``check``, ``run --dry-run``,
``run`` with text and JSON reports to stdout and to files, ``usage``, ``history``) at
debug verbosity, IMAP and POP3 accounts, one account with a wrong password (so the
server's refusal is reported), then ``serve`` with a scrape of ``/metrics``, a reload
and a stop. Every byte produced is searched: stdout, stderr, the serve log, report files,
the journal and observations SQLite files (and their -wal/-shm), the archive and any
other file under the test's folder. The password, its base64 forms and the base64 of the
AUTH PLAIN exchange (``\\0user\\0password``, ``user\\0user\\0password``) occur 0 times.
"""

from __future__ import annotations

import base64
import signal
from pathlib import Path

from retention.testing.dovecot import SeedMessage
from tests.integration.helpers import PolicyFile, ago
from tests.integration.test_serve import EVERY_2S, Serve

PASSWORD = "Zq9-hunter2-Sekr1t!xYzzy"
WRONG = "Wr0ng-Pa55word-Kumquat!"


def _forms(user: str, password: str) -> list[bytes]:
    raw = password.encode()
    plain = [b"\0" + user.encode() + b"\0" + raw, user.encode() + b"\0" + user.encode() + b"\0"
             + raw]
    out = [raw, raw.hex().encode()]
    for data in [raw, *plain]:
        b64 = base64.b64encode(data)
        out += [b64, b64.rstrip(b"="), base64.urlsafe_b64encode(data).rstrip(b"=")]
    return out


def _hits(blob: bytes, forms: list[bytes]) -> list[bytes]:
    return [f for f in forms if f in blob]


def test_no_output_holds_a_password(tmp_path: Path, dovecot):
    alice = dovecot.add_user(f"sec-alice-{tmp_path.name[-8:]}", PASSWORD, 50 * 1024 * 1024)
    bob = dovecot.add_user(f"sec-bob-{tmp_path.name[-8:]}", PASSWORD + "-b", 50 * 1024 * 1024)
    for user in (alice, bob):
        user.seed("INBOX", [SeedMessage(received=ago(days=800 + i), size=3000,
                                        subject=f"old {i}", flags=frozenset({"\\Seen"}))
                            for i in range(6)])
    pf = PolicyFile(tmp_path / "p", {"p": {
        "schedule": EVERY_2S,
        "rules": [{"name": "old", "older_than": "1y", "folders": ["INBOX"],
                   "action": {"archive": "vault"}}]}},
        extra={"archives": {"vault": {"type": "mbox", "path": "./archive/{account}.mbox"}},
               "service": {"measure_every": "1h"}})
    pf.add_imap(alice, name="alice")
    pf.add_pop3(bob, name="bob")
    pf.add_imap(alice, name="wrong", password=WRONG)  # refused by the server
    outputs: list[bytes] = []

    def cli(*args: str) -> None:
        verbose = ["-vv"] if args[0] != "check" else []
        result = pf.cli(*verbose, args[0], "-c", str(pf.path), *args[1:])
        outputs.extend([result.stdout.encode(), result.stderr.encode()])

    cli("check")
    cli("run", "--dry-run", "--format", "json")
    cli("run", "--dry-run", "--format", "text", "--output", str(tmp_path / "dry.txt"))
    cli("run", "--format", "json", "--output", str(tmp_path / "report.json"))
    cli("run", "--format", "text")
    cli("usage", "--format", "json")
    cli("usage")
    for fmt in ("text", "json", "csv"):
        cli("history", "--format", fmt)
    everything = b"".join(outputs)
    assert b"alice" in everything and (tmp_path / "report.json").exists()
    assert b"event=account_failed account=wrong error_kind=auth" in everything  # reported

    serve = Serve(pf, tmp_path)
    try:
        serve.wait_for("runs of both accounts", lambda: {"alice", "bob", "wrong"} <= {
            r["account"] for r in serve.runs()})
        code, metrics = serve.get("/metrics")
        assert code == 200 and "retention_" in metrics
        outputs.append(metrics.encode())
        serve.proc.send_signal(signal.SIGHUP)
        serve.wait_for("the reload", lambda: "event=reloaded" in serve.log())
        assert serve.stop() == 0
    finally:
        serve.kill()

    forms = _forms(alice.name, PASSWORD) + _forms(bob.name, PASSWORD + "-b") + \
        _forms(alice.name, WRONG)
    assert _hits(b"x" + base64.b64encode(b"\0" + alice.name.encode() + b"\0" +
                                          PASSWORD.encode()), forms)  # the probe works
    found = {i: _hits(blob, forms) for i, blob in enumerate(outputs) if _hits(blob, forms)}
    assert not found, found
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"journal.sqlite3", "observations.sqlite3", "serve.log", "report.json",
            "dry.txt"} <= names, names
    leaks = {str(p): _hits(p.read_bytes(), forms) for p in files if _hits(p.read_bytes(), forms)}
    assert not leaks, leaks
