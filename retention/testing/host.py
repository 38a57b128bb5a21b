"""What the test rigs need of this host: binaries, free ports, system users, log tails."""

from __future__ import annotations

import os
import pwd
import shutil
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
