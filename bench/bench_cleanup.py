"""Benchmark: age-based cleanup of one big INBOX, `retention` against imapfilter, same run.

    .venv/bin/python bench/bench_cleanup.py [--messages 20000] [--runs 5] [--size 2048]

Measured by hand, never asserted in tests. For each measurement a private Dovecot
(tests/dovecot.py) is started with one freshly seeded user whose INBOX holds ``--messages``
messages of ``--size`` bytes in arrival order: half received 367 days to 5 years ago, half
1 to 363 days ago (two days of margin on each side of the 365-day cut, because
imapfilter's ``is_older`` works in whole days). The task: delete what is older than 365
days. Four commands are timed, each on its own fresh server and user, so that none finds
Dovecot's caches warmed by another:

* ``retention``:        ``python -m retention run -c POLICY`` (one rule: INBOX, older_than
  365d, action delete, protect [], keep_within 0d; a fresh ``state_dir``, so the journal and
  audit history are written as on any real run);
* ``imapfilter``:       ``imapfilter -c CONFIG`` with ``account.INBOX:is_older(365)`` then
  ``delete_messages()`` (STORE +FLAGS \\Deleted, then a bare EXPUNGE);
* ``retention-dry``:    ``retention run --dry-run`` (EXAMINE, scan, plan, report);
* ``imapfilter-dry``:   ``imapfilter -n`` (imapfilter's own dry run: SELECT + SEARCH, no STORE).

Both tools log in with a plaintext LOGIN on Dovecot's plain port (no TLS for either), and
their report/log output goes to a file. Per command:

* wall time, user+system CPU time and peak RSS of the tool's own process (its
  ``ru_maxrss``, taken by GNU time: see ``timed`` for why not ``os.wait4`` here);
* the server's side of the session: CPU of the Dovecot processes that served it (growth
  of the master's ``cutime + cstime``, which counts the per-connection imap and imap-login
  processes once reaped) and the bytes Dovecot logged for it (``in=``/``out=`` on its
  "Logged out" line). IMAP commands are not counted; bytes to the server stand in for them.

After each command the INBOX is checked over IMAP: a real run must leave exactly the young
messages (count, none older than 364 days, none flagged \\Deleted); a dry run must leave all
of them, unread and unflagged. The order of the four commands rotates from one repetition
to the next, so that a drift in the machine's load does not always hit the same tool, and
an untimed warm-up round (``--warmup``, default 1) comes first.

Without imapfilter on PATH the script runs ``scripts/install-deps.sh --bench`` (Debian's
``imapfilter`` package, as root); if that fails only ``retention`` is measured, and the
script says so. The tests never need imapfilter.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from retention.testing.dovecot import Dovecot, MailUser, SeedMessage, dovecot_unavailable_reason

ROOT = Path(__file__).resolve().parent.parent


Command = tuple[list[str], dict[str, str]]  # argv, environment
TOOLS = ("retention", "imapfilter", "retention-dry", "imapfilter-dry")
DAY = timedelta(days=1)
# Environment variables that would redirect the agent's state or config: the bench's
# policy file must be the only input.
_SCRUB = ("RETENTION_STATE_DIR", "STATE_DIRECTORY", "RETENTION_CONFIG")


@dataclass
class Sample:
    """One timed command and what it left behind."""

    tool: str
    wall_s: float
    cpu_s: float
    rss_mib: float
    exit_code: int
    server_cpu_s: float
    bytes_in: int  # client -> server, as Dovecot counted them
    bytes_out: int
    sessions: int
    remaining: int
    ok: bool
    problem: str = ""


@dataclass
class Bench:
    """Runs one measurement at a time: fresh server, fresh user, the command, the checks."""

    work: Path
    messages: int
    size: int
    imapfilter: str | None
    timeout: float
    dc: Dovecot = field(init=False)  # the instance of the current measurement
    _users: int = 0
    _stopping: list[threading.Thread] = field(default_factory=list)

    # -- seeding -----------------------------------------------------------

    def fresh_user(self) -> MailUser:
        self._users += 1
        user = self.dc.add_user(f"bench{self._users:03d}")
        now = datetime.now(UTC)
        old, young = self.messages - self.messages // 2, self.messages // 2
        # Oldest first, as mail arrives: old ones spread over 367 days .. ~5 years,
        # young ones over 363 .. 1 days.
        ages = [367 + (1460 * (old - 1 - i)) // max(old, 1) for i in range(old)]
        ages += [1 + (362 * (young - 1 - i)) // max(young, 1) for i in range(young)]
        # MailUser.seed names files like Dovecot's own deliveries (TIME.M<usecs>P<pid>),
        # which keeps Dovecot's uidlist hash spread out (an earlier naming scheme could
        # collapse 20,000 names onto ~25 hash values and make every SELECT take 0.85 s).
        user.seed("INBOX", [SeedMessage(received=now - age * DAY, size=self.size,
                                        subject=f"bench {i}")
                            for i, age in enumerate(ages)])
        return user

    def start_server(self) -> None:
        """A fresh Dovecot for each measurement: nothing left over from the previous one."""
        self.dc = Dovecot()
        self.dc.start()

    def stop_server(self) -> None:
        # Dovecot takes ~6 s to stop, idle: let that overlap with the next measurement.
        stopper = threading.Thread(target=self.dc.stop, daemon=True)
        stopper.start()
        self._stopping.append(stopper)

    def close(self) -> None:
        for stopper in self._stopping:
            stopper.join()

    # -- the commands ------------------------------------------------------

    def retention_argv(self, user: MailUser, tag: str, dry: bool) -> Command:
        directory = self.work / tag
        directory.mkdir()
        policy = {
            "state_dir": str(directory / "state"),
            "policies": {
                "bench": {
                    "protect": [],
                    "keep_within": "0d",
                    # The default cap (10,000 removals per run) would defer part of a
                    # bigger run; the bench measures one complete cleanup.
                    "quota": {"max_delete_per_run": max(self.messages, 1)},
                    "rules": [{"name": "older-than-a-year", "folders": ["INBOX"],
                               "older_than": "365d", "action": "delete"}],
                }
            },
            "accounts": [{
                "name": "bench", "protocol": "imap", "host": self.dc.host,
                "port": self.dc.imap_port, "security": "none", "allow_plaintext": True,
                "username": user.name, "password_env": "BENCH_PASSWORD", "policy": "bench",
                "timeout": "120s",
            }],
        }
        path = directory / "policy.yaml"
        path.write_text(json.dumps(policy, indent=2) + "\n", encoding="utf-8")  # JSON is YAML
        env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
        env["BENCH_PASSWORD"] = user.password
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        argv = [sys.executable, "-m", "retention", "run", "-c", str(path)]
        return (argv + ["--dry-run"] if dry else argv), env

    def imapfilter_argv(self, user: MailUser, tag: str, dry: bool) -> Command:
        assert self.imapfilter is not None
        directory = self.work / tag
        directory.mkdir()
        config = directory / "config.lua"
        # No `ssl` key: a plain connection. starttls is on by default in imapfilter and
        # Dovecot offers it on the plain port, so switch it off: both tools run without TLS.
        config.write_text(
            "options.starttls = false\n"
            "options.timeout = 120\n"
            "account = IMAP {\n"
            f"  server = '{self.dc.host}',\n"
            f"  port = {self.dc.imap_port},\n"
            f"  username = '{user.name}',\n"
            f"  password = '{user.password}',\n"
            "}\n"
            "inbox = account.INBOX\n"
            "results = inbox:is_older(365)\n"
            "results:delete_messages()\n",
            encoding="utf-8",
        )
        config.chmod(0o600)
        # imapfilter keeps state under $HOME/.imapfilter: give it a private home.
        env = {**os.environ, "HOME": str(directory)}
        argv = [self.imapfilter, "-c", str(config)]
        return (argv + ["-n"] if dry else argv), env

    def measure(self, tool: str, run: int) -> Sample:
        self.start_server()
        try:
            return self._measure(tool, run)
        finally:
            self.stop_server()

    def _measure(self, tool: str, run: int) -> Sample:
        user = self.fresh_user()
        tag = f"r{run}-{tool}"
        dry = tool.endswith("-dry")
        if tool.startswith("retention"):
            argv, env = self.retention_argv(user, tag, dry)
        else:
            argv, env = self.imapfilter_argv(user, tag, dry)
        # Settle first: add_user's login probe must not count towards this command.
        server_before = self.settled_server_cpu()
        log_offset = self.dc.log_path.stat().st_size
        wall, cpu, rss, code = timed(argv, env, self.work / tag / "output.txt", self.timeout)
        server_cpu = self.settled_server_cpu() - server_before
        bytes_in, bytes_out, sessions = self.traffic(user.name, log_offset)
        remaining, ok, problem = self.verify(user, dry)
        if code != 0:
            tail = (self.work / tag / "output.txt").read_text(errors="replace").strip()
            ok, problem = False, f"exit {code}: " + " | ".join(tail.splitlines()[-3:])
        return Sample(tool, wall, cpu, rss, code, server_cpu, bytes_in, bytes_out, sessions,
                      remaining, ok, problem)

    # -- the server's side -------------------------------------------------

    def server_cpu(self) -> float:
        """CPU seconds of the Dovecot master's reaped children (cutime + cstime)."""
        pid = int((self.dc.base_dir / "master.pid").read_text().strip())
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        # Fields 16 and 17 of stat(5), counted from 1; [0] here is field 3 (state).
        return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")

    def settled_server_cpu(self) -> float:
        # The per-connection imap process logs out and is reaped by the master a moment
        # after the client has gone: wait until the total stops growing.
        last, stable, deadline = self.server_cpu(), 0, time.monotonic() + 5
        while stable < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.server_cpu()
            stable = stable + 1 if now == last else 0
            last = now
        return last

    def traffic(self, user: str, offset: int) -> tuple[int, int, int]:
        """Bytes in/out and sessions from Dovecot's "Logged out in=.. out=.." lines."""
        with self.dc.log_path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
        pattern = re.compile(rf"imap\({re.escape(user)}\).*? in=(\d+) out=(\d+)")
        hits = [(int(m[1]), int(m[2])) for m in pattern.finditer(text)]
        return sum(h[0] for h in hits), sum(h[1] for h in hits), len(hits)

    def verify(self, user: MailUser, dry: bool) -> tuple[int, bool, str]:
        young = self.messages // 2
        client = user.imap_client()
        try:
            info = client.select_folder("INBOX", readonly=True)
            remaining = int(info[b"EXISTS"])
            deleted = len(client.search(["DELETED"]))
            if dry:
                touched = len(client.search(["OR", "SEEN", "FLAGGED"]))
                if remaining != self.messages or deleted or touched:
                    return remaining, False, (f"dry run changed the mailbox: {remaining} left, "
                                              f"{deleted} \\Deleted, {touched} seen/flagged")
                return remaining, True, ""
            cutoff = (datetime.now(UTC) - 364 * DAY).date()
            too_old = len(client.search(["BEFORE", cutoff]))
            if remaining != young or deleted or too_old:
                return remaining, False, (f"{remaining} left (want {young}), {deleted} \\Deleted, "
                                          f"{too_old} older than 364 days")
            return remaining, True, ""
        finally:
            with contextlib.suppress(Exception):
                client.logout()


# Peak RSS must come from a parent that is small when it forks. Linux records the RSS
# high-water mark of the memory a process had *before* exec into its ru_maxrss, so a child
# forked straight from this script (which holds the seeded messages: ~70 MiB at 20,000)
# reports at least this script's RSS, whatever it ran: os.wait4 on a Popen pid measures
# the bench, not the tool. GNU time (a ~2 MiB process) forks the tool itself and reports
# its ru_maxrss; without it, a bare Python does the same, with a floor of about 8 MiB.
GNU_TIME = "/usr/bin/time"
_LAUNCHER = """\
import os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
code = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as f:
    f.write(f"{ru.ru_utime} {ru.ru_stime} {ru.ru_maxrss} {code}\\n")
sys.exit(code if code >= 0 else 1)
"""


def byte_compile(root: Path = ROOT) -> None:
    """Compile the package's bytecode before measuring, as ``pip install`` does. Without
    it, under ``PYTHONDONTWRITEBYTECODE=1`` (set on some CI machines and shells) every
    command compiled the modules that had no ``.pyc`` yet from source: about 0.3 s of a
    200,000-message repeat dry-run's 1.36 s."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(root / "retention")],
                   check=True, stdout=subprocess.DEVNULL)


def rusage_method() -> str:
    if os.access(GNU_TIME, os.X_OK):
        return "GNU time"
    return "python launcher (peak RSS has a floor of ~8 MiB)"


def timed(argv: list[str], env: dict[str, str], output: Path,
          timeout: float) -> tuple[float, float, float, int]:
    """(wall s, user+system CPU s, peak RSS MiB, exit code) of one command."""
    stats = output.with_name("rusage.txt")
    if os.access(GNU_TIME, os.X_OK):
        wrapped = [GNU_TIME, "-f", "%U %S %M %x", "-o", str(stats), *argv]
    else:
        wrapped = [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(stats), *argv]
    with output.open("wb") as out:
        start = time.perf_counter()
        # Own session: the watchdog must kill the tool, not just its launcher.
        proc = subprocess.Popen(wrapped, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env, cwd=output.parent,
                                start_new_session=True)
        watchdog = threading.Timer(timeout, os.killpg, (proc.pid, signal.SIGKILL))
        watchdog.start()
        try:
            proc.wait()
        finally:
            watchdog.cancel()
        wall = time.perf_counter() - start
    try:
        # GNU time puts "Command exited with non-zero status N" before the format.
        user, system, maxrss_kib, code = stats.read_text().strip().splitlines()[-1].split()
    except (OSError, IndexError, ValueError):
        return wall, float("nan"), float("nan"), proc.returncode or -1
    return wall, float(user) + float(system), int(maxrss_kib) / 1024, int(code)


# -- reporting -------------------------------------------------------------------


COLUMNS = (("wall_s", "wall s", "{:.2f}"), ("cpu_s", "CPU s", "{:.2f}"),
           ("rss_mib", "peak RSS MiB", "{:.1f}"), ("server_cpu_s", "Dovecot CPU s", "{:.2f}"),
           ("bytes_in", "bytes to server", "{:.0f}"), ("bytes_out", "bytes from server", "{:.0f}"))


def print_sample(run: int | str, s: Sample) -> None:
    status = "ok" if s.ok else f"WRONG: {s.problem}"
    label = f"run {run}" if isinstance(run, int) else run
    print(f"{label} {s.tool:<15} wall={s.wall_s:.2f}s cpu={s.cpu_s:.2f}s "
          f"rss={s.rss_mib:.1f}MiB dovecot_cpu={s.server_cpu_s:.2f}s in={s.bytes_in} "
          f"out={s.bytes_out} sessions={s.sessions} left={s.remaining} {status}", flush=True)


def summarize(samples: list[Sample], tools: list[str]) -> dict[str, dict[str, float]]:
    medians: dict[str, dict[str, float]] = {}
    print("\nper command: median [min - max]")
    for tool in tools:
        mine = [s for s in samples if s.tool == tool]
        if not mine:
            continue
        good = sum(s.ok for s in mine)
        print(f"  {tool} ({good}/{len(mine)} runs correct)")
        medians[tool] = {}
        for key, label, fmt in COLUMNS:
            values = [float(getattr(s, key)) for s in mine]
            med = statistics.median(values)
            medians[tool][key] = med
            print(f"    {label:<18} {fmt.format(med):>10}  "
                  f"[{fmt.format(min(values))} - {fmt.format(max(values))}]")
    pairs = [("retention", "imapfilter"), ("retention-dry", "imapfilter-dry")]
    for ours, peer in pairs:
        if ours in medians and peer in medians:
            print(f"\nratio {ours} / {peer} (of medians)")
            for key, label, _fmt in COLUMNS:
                theirs = medians[peer][key]
                ratio = f"{medians[ours][key] / theirs:.2f}" if theirs else "-"
                print(f"    {label:<18} {ratio:>10}")
    return medians


def run_all(bench: Bench, tools: list[str], runs: int, warmup: int) -> list[Sample]:
    for i in range(warmup):
        for tool in tools:
            print_sample(f"warm-up {i + 1}", bench.measure(tool, -i))
    samples = []
    for run in range(1, runs + 1):
        shift = (run - 1) % len(tools)  # rotate the order: a load drift hits every tool
        for tool in tools[shift:] + tools[:shift]:
            sample = bench.measure(tool, run)
            samples.append(sample)
            print_sample(run, sample)
    return samples


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--messages", type=int, default=20_000, help="INBOX size (default 20000)")
    ap.add_argument("--runs", type=int, default=5, help="repetitions (default 5)")
    ap.add_argument("--size", type=int, default=2048, help="bytes per message (default 2048)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    ap.add_argument("--timeout", type=float, default=1800, help="per command, seconds")
    ap.add_argument("--json", type=Path, help="also write every sample and the medians here")
    # `make bench BENCH_ARGS=...` passes the same arguments to every bench script:
    # ignore the ones meant for another.
    args, ignored = ap.parse_known_args()
    byte_compile()
    if ignored:
        print(f"ignoring arguments for other benchmarks: {' '.join(ignored)}")
    reason = dovecot_unavailable_reason()
    if reason:
        print(f"bench_cleanup: cannot start Dovecot: {reason}", file=sys.stderr)
        return 1
    imapfilter = shutil.which("imapfilter")
    if imapfilter is None:  # the optional bench peer: scripts/install-deps.sh --bench
        print("bench_cleanup: imapfilter missing: scripts/install-deps.sh --bench", flush=True)
        subprocess.run(["bash", str(ROOT / "scripts" / "install-deps.sh"), "--bench"],
                       check=False)
        imapfilter = shutil.which("imapfilter")
    tools = list(TOOLS)
    if imapfilter is None:
        print("bench_cleanup: imapfilter is not installed (Debian: apt-get install imapfilter); "
              "measuring retention only, no peer comparison")
        tools = [t for t in tools if t.startswith("retention")]
    else:
        probe = subprocess.run([imapfilter, "-V"], capture_output=True, text=True, check=False)
        version = (probe.stdout + probe.stderr).split("Copyright")[0].strip()
        print(f"peer: {version}")
    print(f"{args.messages} messages of {args.size} bytes in INBOX, half older than 365 days; "
          f"{args.runs} runs; {os.cpu_count()} CPUs; Python {sys.version.split()[0]}; "
          f"CPU and peak RSS by {rusage_method()}")

    with tempfile.TemporaryDirectory(prefix="bench-cleanup-") as tmp:
        bench = Bench(Path(tmp), args.messages, args.size, imapfilter, args.timeout)
        try:
            samples = run_all(bench, tools, args.runs, args.warmup)
        finally:
            bench.close()
    medians = summarize(samples, tools)
    wrong = [s for s in samples if not s.ok]
    if wrong:
        print(f"\n{len(wrong)} command(s) failed or left a wrong mailbox (see above)")
    if args.json:
        doc: dict[str, Any] = {"messages": args.messages, "size": args.size, "runs": args.runs,
                               "samples": [vars(s) for s in samples], "medians": medians}
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
