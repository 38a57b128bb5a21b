"""What the test rigs need of this host: binaries, free ports, system users, log tails, and
the end of a daemon's life (its process group killed, its directory reaped)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

HOST = "127.0.0.1"

# Where Debian puts server binaries; a CI runner's or a non-root PATH may lack /usr/sbin.
EXTRA_PATH = ("/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin")


def which(name: str, *extra: str) -> str | None:
    """``shutil.which`` over PATH, the sbin directories and ``extra`` directories."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *EXTRA_PATH, *extra])
    return shutil.which(name, path=path)


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports on 127.0.0.1.

    All sockets stay open until every port is known, so the ports differ. The window
    before the server binds them is covered by the rigs retrying on "Address already in use".
    """
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_open(port: int, greeting: bytes | None = None) -> bool:
    """True once `port` accepts a connection (and sends `greeting`, if given)."""
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as s:
            return greeting is None or s.recv(64).startswith(greeting)
    except OSError:
        return False


def wait_port(port: int, timeout: float) -> bool:
    """Poll until `port` accepts connections, or `timeout` seconds pass; True if it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return True
        time.sleep(0.05)
    return False


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def system_user(name: str) -> pwd.struct_passwd:
    """The unprivileged account ``name`` a rig's server runs as when we are root.

    Created (no home, no shell) if missing; not root, the current user is returned, since
    the servers then run as us. Raises RuntimeError if it cannot be created.
    """
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    if not user_exists(name):
        useradd = which("useradd")
        if useradd is None:
            raise RuntimeError(f"useradd is missing; cannot create {name!r}")
        proc = subprocess.run(
            [useradd, "--system", "--user-group", "--no-create-home",
             "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name],
            capture_output=True, text=True, check=False,
        )
        # 9 = "already exists": a concurrent test process won the race.
        if proc.returncode not in (0, 9):
            raise RuntimeError(f"useradd {name} failed: {proc.stderr.strip()}")
    return pwd.getpwnam(name)


def tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a log file, "" if it cannot be read."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def kill_group(proc: subprocess.Popen[bytes], wait: float = 10.0) -> None:
    """SIGKILL the process group of ``proc`` (started with ``start_new_session``): a
    master and every child it forked, even one that outlived the master."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(wait)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_instance(directory: Path, prefix: str, keep: bool) -> None:
    """Delete a rig's instance directory, or keep it for a post-mortem (``keep``): then
    without its owner.pid, so that ``reap_orphans`` leaves it alone too."""
    if keep:
        with contextlib.suppress(OSError):
            (directory / "owner.pid").unlink()
        return
    if directory.name.startswith(prefix):
        shutil.rmtree(directory, ignore_errors=True)


def reap_orphans(parent: str, prefix: str, master_pid: str) -> None:
    """Stop and delete instances whose owning process died without calling stop().

    A killed test run would otherwise leave a server running and, on tmpfs, its mail in
    RAM. Only a rig's own directories (``prefix``, with owner.pid) are touched, and only a
    master (pid in ``master_pid``, relative to the directory) whose command line names
    that directory is signalled, with its process group (its own session).
    """
    for directory in Path(parent).glob(prefix + "*"):
        try:
            owner = int((directory / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if pid_alive(owner):
            continue
        with contextlib.suppress(OSError, ValueError):
            master = int((directory / master_pid).read_text())
            if str(directory).encode() in Path(f"/proc/{master}/cmdline").read_bytes():
                os.killpg(master, signal.SIGKILL)
        shutil.rmtree(directory, ignore_errors=True)
