"""A throw-away real Cyrus IMAP for tests: an admin, users, quotas, seeding by APPEND.

This module owns a private Cyrus IMAP 3.x instance: its complete ``imapd.conf`` and
``cyrus.conf`` (nothing of the system's ``/etc/imapd.conf``, ``/var/lib/cyrus`` or the
Debian service), a SASL ``sasldb2`` made with ``saslpasswd2 -f`` (``sasl_pwcheck_method:
auxprop``), an admin (``admins: admin``), IMAP with plaintext logins allowed (loopback
only), IMAPS with a throw-away CA and, where pop3d is installed, POP3, on unprivileged
ports of 127.0.0.1 picked at runtime.
Users' mailboxes are created by the admin (``CREATE user.alice``, or ``user/alice`` with
``unixhierarchysep: yes``), quotas set by the admin (``SETQUOTA``), messages seeded with
``APPEND`` (flags and INTERNALDATE kept). No pytest dependency::

    with Cyrus() as cy:
        alice = cy.add_user("alice", quota_kib=1024)
        alice.append("INBOX", [SeedMessage(received=some_datetime, size=2000)])
        cy.admin, cy.admin_password, cy.imap_port, cy.imaps_port, cy.ca_file

Root: Cyrus's ``master`` drops to the ``cyrus_user`` itself (``become_cyrus``), so the
instance directory is handed to the Debian package's ``cyrus`` user and master is started
as root; every child (imapd, pop3d, ctl_cyrusdb) then runs as ``cyrus``. Not root:
``cyrus_user`` is the current user, and master stays who it is (checked as ``nobody``:
start, add_user, APPEND, GETQUOTA, POP3 all work; nothing needs root). Cyrus logs to
syslog (nothing catches it on a test host); its own stdout/stderr go to ``master.log``.

Binaries: master, ctl_cyrusdb (package ``cyrus-common``) in ``/usr/lib/cyrus/bin``;
``imapd`` and ``pop3d`` (packages ``cyrus-imapd``, ``cyrus-pop3d``) there too, or, where
Dovecot is installed, under ``/opt/retention-cyrus``: the Debian packages conflict with
Dovecot's (they provide ``imap-server``, ``pop3-server``), so ``scripts/install-deps.sh``
unpacks them there instead of removing Dovecot. ``RETENTION_CYRUS_IMAPD`` and
``RETENTION_CYRUS_POP3D`` name other binaries.

Layout of an instance directory (fresh per instance, short path: unix sockets inside)::

    imapd.conf cyrus.conf master.log owner.pid sasldb2 ca.crt server.crt server.key
    conf/     configdirectory (mailboxes.db, quota, socket/, proc/, lock/)
    spool/    partition-default
"""

from __future__ import annotations

import atexit
import contextlib
import imaplib
import os
import pwd
import re
import secrets
import ssl as ssl_module
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from types import TracebackType
from typing import Any

from retention.testing.dovecot import MessageState, SeedMessage, read_folder_state
from retention.testing.host import (
    HOST,
    free_ports,
    kill_group,
    port_open,
    reap_orphans,
    remove_instance,
    tail,
    which,
)
from retention.testing.pki import PkiError, make_certificates

__all__ = ["Cyrus", "CyrusError", "CyrusUnavailable", "CyrusUser", "cyrus_pop3_unavailable_reason",
           "cyrus_unavailable_reason"]

CYRUS_BIN = Path("/usr/lib/cyrus/bin")
#: Where install-deps.sh unpacks cyrus-imapd when Dovecot's imapd package is installed.
PRIVATE_ROOT = Path("/opt/retention-cyrus")
#: The Debian package's account; master switches to it when started as root.
CYRUS_USER = "cyrus"
SERVERNAME = "cyrus.test"  # also the SASL realm of every sasldb entry
_DIR_PREFIX = "retention-cyrus-"
# Cyrus user names: no separator characters (".", "/"); "@domain" only with virtdomains.
_USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_DOMAIN_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$")


class CyrusError(RuntimeError):
    """Cyrus failed to start, or an admin command or saslpasswd2 failed."""


class CyrusUnavailable(CyrusError):
    """Cyrus IMAP (or a tool it needs) is not installed on this machine."""


def _daemon(name: str) -> Path | None:
    """``imapd`` or ``pop3d``: $RETENTION_CYRUS_IMAPD (..._POP3D), the package's place, or
    where install-deps.sh unpacks it."""
    explicit = os.environ.get(f"RETENTION_CYRUS_{name.upper()}")
    candidates = [Path(explicit)] if explicit else [
        CYRUS_BIN / name, PRIVATE_ROOT / "usr/lib/cyrus/bin" / name]
    return next((p for p in candidates if os.access(p, os.X_OK)), None)


def _imapd() -> Path | None:
    return _daemon("imapd")


def cyrus_pop3_unavailable_reason() -> str | None:
    """Why a Cyrus with POP3 can't be started here (pop3d is optional for the rig)."""
    return cyrus_unavailable_reason() or (None if _daemon("pop3d") else (
        "not installed: pop3d (run `make deps`, or apt-get install cyrus-pop3d; next to "
        "Dovecot see scripts/install-deps.sh)"))


def cyrus_unavailable_reason() -> str | None:
    """Why a Cyrus can't be started here, or None if (as far as we can tell) it can."""
    missing = [name for name in ("master", "ctl_cyrusdb")
               if not os.access(CYRUS_BIN / name, os.X_OK)]
    if _imapd() is None:
        missing.append("imapd")
    missing += [name for name in ("saslpasswd2", "openssl") if which(name) is None]
    if missing:
        return (f"not installed: {', '.join(missing)} (run `make deps`, or apt-get install "
                "cyrus-common cyrus-imapd sasl2-bin openssl; next to Dovecot see "
                "scripts/install-deps.sh)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(CYRUS_USER)
        except KeyError:
            return f"running as root but the system user {CYRUS_USER!r} is missing"
    return None


def _parent_dir() -> str:
    # Short: unix sockets live under conf/socket (108-byte limit); tmpfs when there is one.
    explicit = os.environ.get("RETENTION_CYRUS_TMPDIR")
    if explicit:
        return explicit
    if os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    return tempfile.gettempdir()


@dataclass(eq=False)
class CyrusUser:
    """A user of a running `Cyrus`: a sasldb password and a mailbox made by the admin."""

    server: Cyrus
    name: str
    password: str

    @property
    def mailbox(self) -> str:
        """The admin's name of the user's INBOX: ``user.NAME`` (``user/NAME``)."""
        return f"user{self.server.separator}{self.name}"

    def folder(self, path: str) -> str:
        """The user's own name of folder ``path`` (levels joined by ``/``)."""
        return self.server.user_folder(path)

    def imap_client(self) -> Any:
        return self.server.imap_client(self.name, self.password)

    def append(self, folder: str, messages: Iterable[SeedMessage]) -> list[int]:
        return self.server.append(self.name, folder, messages)

    def folder_state(self) -> dict[str, dict[int, MessageState]]:
        client = self.imap_client()
        try:
            return read_folder_state(client)
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def usage(self) -> tuple[int, int | None]:
        return self.server.usage(self.name)


class Cyrus:
    """A private Cyrus IMAP on 127.0.0.1 (IMAP and IMAPS); see the module docstring.

    unixhierarchysep: ``/`` between levels (``user/alice``) instead of ``.`` (``user.alice``).
    altnamespace: a user's folders beside INBOX (``Trash``) instead of under it
      (``INBOX.Trash``). Both default to off, as Debian's imapd.conf has them; Cyrus
      upstream's default since 3.0 is both on.
    virtdomains: ``virtdomains: userid``: users are ``alice@example.org`` (sasldb realm
      ``example.org``, mailbox ``user.alice@example.org``); the admin stays global.
    keep: leave the directory behind after stop() (also env RETENTION_KEEP_CYRUS=1).
    """

    host = HOST
    admin = "admin"

    def __init__(self, *, unixhierarchysep: bool = False, altnamespace: bool = False,
                 virtdomains: bool = False, keep: bool = False) -> None:
        self.unixhierarchysep = unixhierarchysep
        self.virtdomains = virtdomains
        self.altnamespace = altnamespace
        self.keep = keep
        self.admin_password = "Adm1n-" + secrets.token_hex(6)
        self.directory = Path()
        self.imap_port = self.imaps_port = self.pop3_port = 0  # pop3: 0 without pop3d
        self.users: dict[str, CyrusUser] = {}
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return (f"<Cyrus {self.directory} imap={self.imap_port} imaps={self.imaps_port} "
                f"pop3={self.pop3_port} "
                f"sep={self.separator!r} altnamespace={self.altnamespace}>")

    @property
    def separator(self) -> str:
        return "/" if self.unixhierarchysep else "."

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def log_path(self) -> Path:
        return self.directory / "master.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Cyrus:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- lifecycle ---------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        """Write the configuration, start master, wait until both ports answer."""
        if self.running:
            return
        reason = cyrus_unavailable_reason()
        if reason:
            raise CyrusUnavailable(reason)
        parent = _parent_dir()
        reap_orphans(parent, _DIR_PREFIX, "conf/master.pid")
        self.directory = Path(tempfile.mkdtemp(prefix=_DIR_PREFIX, dir=parent))
        try:
            self._prepare()
            last = ""
            for _attempt in range(4):
                self.imap_port, self.imaps_port, pop3 = free_ports(3)
                self.pop3_port = pop3 if _daemon("pop3d") else 0
                self._write_cyrus_conf()
                if self._spawn_and_wait(timeout):
                    atexit.register(self.stop)  # a forgotten stop() leaves no daemon
                    return
                last = self.log_tail(20)
            raise CyrusError(f"could not bind free ports after 4 attempts:\n{last}")
        except BaseException:
            self._kill()
            self._cleanup_dir()
            raise

    def _prepare(self) -> None:
        d = self.directory
        d.chmod(0o755)
        (d / "owner.pid").write_text(f"{os.getpid()}\n")
        for sub in ("conf", "conf/socket", "conf/proc", "conf/lock", "conf/log", "spool"):
            (d / sub).mkdir(mode=0o750)
        openssl = which("openssl")
        assert openssl is not None
        try:
            make_certificates(d, openssl)
        except PkiError as exc:
            raise CyrusError(str(exc)) from None
        self._write_imapd_conf()
        self._saslpasswd(self.admin, self.admin_password)
        self._chown()

    def _owner(self) -> tuple[int, int, str]:
        entry = pwd.getpwnam(CYRUS_USER) if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
        return entry.pw_uid, entry.pw_gid, entry.pw_name

    def _chown(self) -> None:
        # As root, everything (sasldb and server.key included) must be the cyrus user's:
        # master becomes that user before it reads anything but its own config.
        if os.geteuid() != 0:
            return
        uid, gid, _name = self._owner()
        for root, dirs, files in os.walk(self.directory):
            for name in (*dirs, *files):
                os.lchown(os.path.join(root, name), uid, gid)
        os.chown(self.directory, uid, gid)

    def _write_imapd_conf(self) -> None:
        d = self.directory
        yes_no = {True: "yes", False: "no"}
        (d / "imapd.conf").write_text(
            "# Generated by retention/testing/cyrus.py: complete, no system configuration.\n"
            f"configdirectory: {d}/conf\n"
            "defaultpartition: default\n"
            f"partition-default: {d}/spool\n"
            f"servername: {SERVERNAME}\n"
            f"cyrus_user: {self._owner()[2]}\n"
            f"admins: {self.admin}\n"
            f"virtdomains: {'userid' if self.virtdomains else 'off'}\n"
            f"unixhierarchysep: {yes_no[self.unixhierarchysep]}\n"
            f"altnamespace: {yes_no[self.altnamespace]}\n"
            # Plaintext logins on loopback only; IMAPS is there for TLS tests.
            "allowplaintext: yes\n"
            "sasl_pwcheck_method: auxprop\n"
            "sasl_auxprop_plugin: sasldb\n"
            f"sasl_sasldb_path: {d}/sasldb2\n"
            "sasl_mech_list: PLAIN LOGIN\n"
            f"tls_server_cert: {d}/server.crt\n"
            f"tls_server_key: {d}/server.key\n"
            f"proc_path: {d}/conf/proc\n"
            f"mboxname_lockpath: {d}/conf/lock\n"
            f"lmtpsocket: {d}/conf/socket/lmtp\n"
            f"idlesocket: {d}/conf/socket/idle\n"
            f"notifysocket: {d}/conf/socket/notify\n"
            # Tests log in many times from one address: no delay after a failure.
            "failedloginpause: 0\n"
            "autocreate_quota: -1\n"
            "quotawarn: 90\n"
            "umask: 077\n",
            encoding="utf-8")

    def _write_cyrus_conf(self) -> None:
        d, imapd, pop3d = self.directory, _imapd(), _daemon("pop3d")
        conf = f"-C {d}/imapd.conf"
        pop3 = (f'  pop3 cmd="{pop3d} {conf}" listen="{HOST}:{self.pop3_port}" prefork=0\n'
                if self.pop3_port else "")
        # Absolute commands: the daemons may live outside master's service path (see the
        # module docstring).
        (d / "cyrus.conf").write_text(
            "START {\n"
            f'  recover cmd="{CYRUS_BIN}/ctl_cyrusdb {conf} -r"\n'
            "}\n"
            "SERVICES {\n"
            f'  imap cmd="{imapd} {conf}" listen="{HOST}:{self.imap_port}" prefork=1\n'
            f'  imaps cmd="{imapd} -s {conf}" listen="{HOST}:{self.imaps_port}" prefork=0\n'
            f"{pop3}"
            "}\n"
            "EVENTS {\n"
            "}\n",
            encoding="utf-8")
        self._chown()

    def _spawn_and_wait(self, timeout: float) -> bool:
        """True once both ports answer; False when a port was taken (try others)."""
        d = self.directory
        self.log_path.unlink(missing_ok=True)
        # Foreground (no -d): we own master and see it die. Own session: _kill can take
        # master and every child down at once if it hangs.
        self._proc = subprocess.Popen(
            [str(CYRUS_BIN / "master"), "-C", str(d / "imapd.conf"), "-M", str(d / "cyrus.conf"),
             "-p", str(d / "conf" / "master.pid"), "-L", str(self.log_path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.monotonic() + timeout
        pending: dict[int, bytes | None] = {self.imap_port: b"* OK", self.imaps_port: None}
        if self.pop3_port:
            pending[self.pop3_port] = b"+OK"
        while pending:
            if "Address already in use" in self.log_tail(50):
                self._kill()
                return False
            if self._proc.poll() is not None:
                self._proc = None
                raise CyrusError(f"cyrus master exited at startup:\n{self.log_tail(30)}")
            if time.monotonic() > deadline:
                self._kill()
                raise CyrusError(f"cyrus not up within {timeout:.0f} s:\n{self.log_tail(30)}")
            for port, greeting in list(pending.items()):
                if port_open(port, greeting):
                    del pending[port]
            if pending:
                time.sleep(0.05)
        return True

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to master (it takes its children down), wait, sweep the group, clean up."""
        atexit.unregister(self.stop)
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout)
            self._kill()  # children that outlived master (or master itself if it hung)
        self._cleanup_dir()

    def _kill(self) -> None:
        if self._proc is not None:
            kill_group(self._proc)
        self._proc = None

    def _cleanup_dir(self) -> None:
        remove_instance(self.directory, _DIR_PREFIX,
                        self.keep or os.environ.get("RETENTION_KEEP_CYRUS") == "1")

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    # -- users -------------------------------------------------------------

    def _saslpasswd(self, name: str, password: str) -> None:
        tool = which("saslpasswd2")
        assert tool is not None
        local, _at, domain = name.partition("@")
        # -p: the password on stdin, never on a command line. The realm is the domain.
        proc = subprocess.run(
            [tool, "-f", str(self.directory / "sasldb2"), "-u", domain or SERVERNAME, "-p",
             "-c", local],
            input=password, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise CyrusError(f"saslpasswd2 {name} failed: {proc.stderr.strip()}")

    def add_user(self, name: str, *, password: str | None = None, quota_kib: int | None = None,
                 trash: str | None = "Trash") -> CyrusUser:
        """A sasldb user with a mailbox created by the admin, a ``STORAGE`` quota of
        ``quota_kib`` (None: none) and a ``trash`` folder marked ``\\Trash`` (None: none)."""
        local, at, domain = name.partition("@")
        if (not _USERNAME_RE.match(local) or name in self.users or name == self.admin
                or bool(at) != self.virtdomains or (at and not _DOMAIN_RE.match(domain))):
            raise ValueError(f"unsupported or duplicate Cyrus user name {name!r}")
        user = CyrusUser(self, name, password or "Pw-" + secrets.token_hex(6))
        self._saslpasswd(name, user.password)
        self._chown()
        with self.admin_session() as admin:
            _ok(admin.create(user.mailbox), f"CREATE {user.mailbox}")
            if quota_kib is not None:
                _ok(admin.setquota(user.mailbox, f"(STORAGE {quota_kib})"), "SETQUOTA")
        self.users[name] = user
        if trash is not None:
            # As the user: a special-use attribute is the owner's (RFC 6154 CREATE USE).
            client = imaplib.IMAP4(self.host, self.imap_port, timeout=30)
            try:
                client.login(name, user.password)
                _ok(client.xatom("CREATE", self.user_folder(trash), "(USE (\\Trash))"),
                    f"CREATE {trash}")
            finally:
                with contextlib.suppress(Exception):
                    client.logout()
        return user

    def user_folder(self, path: str) -> str:
        """A user's own name of ``path`` ("INBOX", "Trash", "Archive/2023")."""
        if path.upper() == "INBOX":
            return "INBOX"
        name = path.replace("/", self.separator)
        return name if self.altnamespace else f"INBOX{self.separator}{name}"

    @contextlib.contextmanager
    def admin_session(self) -> Any:
        """A stdlib imaplib session logged in as the admin (LOGIN on the plain port)."""
        client = imaplib.IMAP4(self.host, self.imap_port, timeout=30)
        try:
            client.login(self.admin, self.admin_password)
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def set_quota(self, user: str, quota_kib: int | None, messages: int | None = None) -> None:
        """The admin's ``SETQUOTA user.NAME (STORAGE kib MESSAGE n)``; None: no limit."""
        resources = [f"STORAGE {quota_kib}"] if quota_kib is not None else []
        resources += [f"MESSAGE {messages}"] if messages is not None else []
        limits = f"({' '.join(resources)})"
        with self.admin_session() as admin:
            _ok(admin.setquota(self.users[user].mailbox, limits), "SETQUOTA")

    def usage(self, user: str) -> tuple[int, int | None]:
        """(STORAGE used, limit) in bytes from the admin's ``GETQUOTA user.NAME``."""
        with self.admin_session() as admin:
            typ, data = admin.getquota(self.users[user].mailbox)
        _ok((typ, data), "GETQUOTA")
        text = b" ".join(d for d in data if isinstance(d, bytes)).decode()
        found = re.search(r"STORAGE (\d+) (\d+)", text)
        if found is None:
            raise CyrusError(f"no STORAGE quota for {user}: {text}")
        return int(found.group(1)) * 1024, int(found.group(2)) * 1024

    # -- mail --------------------------------------------------------------

    def ssl_context(self) -> ssl_module.SSLContext:
        return ssl_module.create_default_context(cafile=str(self.ca_file))

    def imap_client(self, user: str, password: str | None = None) -> Any:
        """A logged-in imapclient.IMAPClient (plain port) with normalise_times=False."""
        from imapclient import IMAPClient

        password = self.users[user].password if password is None else password
        client = IMAPClient(self.host, port=self.imap_port, ssl=False, timeout=30)
        client.normalise_times = False
        try:
            client.login(user, password)
        except BaseException:
            with contextlib.suppress(Exception):
                client.shutdown()
            raise
        return client

    def append(self, user: str, folder: str, messages: Iterable[SeedMessage]) -> list[int]:
        """APPEND each message (flags, INTERNALDATE) to ``folder`` as the user; the UIDs."""
        client = self.imap_client(user)
        name = self.user_folder(folder)
        uids: list[int] = []
        try:
            for msg in messages:
                when = msg.received if msg.received.tzinfo else msg.received.replace(tzinfo=UTC)
                reply = client.append(name, msg.build(), flags=msg.imap_flags(), msg_time=when)
                found = re.search(rb"APPENDUID \d+ (\d+)", reply)
                if found is None:
                    raise CyrusError(f"APPEND to {name} gave no APPENDUID: {reply!r}")
                uids.append(int(found.group(1)))
        finally:
            with contextlib.suppress(Exception):
                client.logout()
        return uids


def _ok(reply: tuple[str, list[Any]], what: str) -> None:
    typ, data = reply
    if typ != "OK":
        raise CyrusError(f"{what}: {typ} {data!r}")
