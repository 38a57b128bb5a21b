"""A throw-away real OpenLDAP ``slapd`` for tests and benchmarks.

This module owns a private slapd: its complete ``slapd.conf`` (no system config, no
``cn=config`` of the machine, not the Debian service), an MDB database in a temp dir filled
offline by ``slapadd`` before the server starts (a few hundred entries load in well under
a second), a throw-away CA and server certificate, and two listeners on unprivileged
ports of 127.0.0.1: ``ldap://`` (StartTLS offered) and ``ldaps://``.

The directory::

    dc=example,dc=org
      ou=people     one inetOrgPerson per user: uid, mail, cn, sn, departmentNumber
      ou=service    cn=reader (a non-admin bind DN that may read everything)

ACLs: passwords are only usable to bind; everything else is readable by anyone (bound or
not). ``sizelimit unlimited`` unless asked (slapd's own default of 500 also caps the total
of a paged search for any bind DN but the rootdn).
No pytest dependency::

    with Slapd(users=make_users(300)) as server:
        server.url, server.ldaps_url, server.reader_dn, server.reader_password, server.ca_file
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from retention.testing.host import HOST, free_ports, port_open, tail, which
from retention.testing.pki import LOCAL_SAN, make_certificates

__all__ = ["LdapUser", "Slapd", "SlapdError", "make_users", "slapd_unavailable_reason"]

SUFFIX = "dc=example,dc=org"
_SCHEMAS = ("core", "cosine", "nis", "inetorgperson")
_SCHEMA_DIR = Path("/etc/ldap/schema")
_MODULE_DIRS = ("/usr/lib/ldap", "/usr/lib/x86_64-linux-gnu/ldap", "/usr/lib64/openldap",
                "/usr/lib/openldap")


class SlapdError(RuntimeError):
    """slapd or slapadd failed."""


@dataclass(frozen=True, slots=True)
class LdapUser:
    """One person entry: ``uid=<uid>,ou=people,<suffix>``."""

    uid: str
    mail: str
    department: str = "staff"
    extra_mail: tuple[str, ...] = ()


def make_users(count: int, *, domain: str = "example.org",
               departments: Sequence[str] = ("staff", "vip", "students")) -> list[LdapUser]:
    """``count`` users ``user0000@domain``...; departments assigned round robin."""
    return [LdapUser(f"user{i:04d}", f"user{i:04d}@{domain}", departments[i % len(departments)])
            for i in range(count)]


def slapd_unavailable_reason() -> str | None:
    """Why a slapd can't be started here, or None if it can."""
    missing = [n for n in ("slapd", "slapadd", "openssl") if which(n) is None]
    if missing:
        return (f"not installed: {', '.join(missing)} (run `make deps`, or "
                "apt-get install slapd ldap-utils openssl)")
    if not all((_SCHEMA_DIR / f"{s}.schema").is_file() for s in _SCHEMAS):
        return f"OpenLDAP schema files missing in {_SCHEMA_DIR} (package slapd)"
    if _module_dir() is None:
        return "the back_mdb module of slapd is missing (package slapd)"
    return None


def _module_dir() -> str | None:
    for d in _MODULE_DIRS:
        if Path(d, "back_mdb.la").exists() or Path(d, "back_mdb.so").exists():
            return d
    return None


class Slapd:
    """A private slapd with ``users`` under ``ou=people``; see the module docstring."""

    admin_dn = f"cn=admin,{SUFFIX}"
    admin_password = "admin-secret-0"
    reader_dn = f"cn=reader,ou=service,{SUFFIX}"
    reader_password = "reader-secret-0"
    people = f"ou=people,{SUFFIX}"
    suffix = SUFFIX

    def __init__(self, users: Iterable[LdapUser] = (), *, sizelimit: int | None = None,
                 san: str = LOCAL_SAN) -> None:
        """``sizelimit``: slapd's limit for non-admin searches (None: unlimited); ``san``:
        the names the server certificate is issued for (default localhost, 127.0.0.1)."""
        self.users = list(users)
        self.sizelimit = sizelimit
        self.san = san
        self.directory = Path(tempfile.mkdtemp(prefix="retention-slapd-"))
        self.port = 0
        self.tls_port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ldap://{HOST}:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://{HOST}:{self.tls_port}"

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def pid(self) -> int | None:
        """The server process (SIGSTOP it to make a server that stops answering)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path:
        return self.directory / "slapd.log"

    def __enter__(self) -> Slapd:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- lifecycle --------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        reason = slapd_unavailable_reason()
        if reason is not None:
            raise SlapdError(reason)
        openssl = which("openssl")
        assert openssl is not None
        make_certificates(self.directory, openssl, san=self.san)
        (self.directory / "db").mkdir()
        self._write_config()
        self._load()
        atexit.register(self.stop)
        for _attempt in range(5):  # a port taken between free_ports() and bind: retry
            self.port, self.tls_port = free_ports(2)
            if self._spawn(timeout):
                return
        raise SlapdError(f"slapd did not start:\n{self.log_tail()}")

    def _spawn(self, timeout: float) -> bool:
        slapd = which("slapd")
        assert slapd is not None
        log = self.log_path.open("ab")
        # -d 0: stay in the foreground (we own the process) and log nothing per operation.
        self._proc = subprocess.Popen(
            [slapd, "-f", str(self.directory / "slapd.conf"), "-d", "0",
             "-h", f"ldap://{HOST}:{self.port}/ ldaps://{HOST}:{self.tls_port}/"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                return False
            if port_open(self.port) and port_open(self.tls_port):
                return True
            time.sleep(0.05)
        self.stop()
        raise SlapdError(f"slapd did not listen within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        atexit.unregister(self.stop)
        if os.environ.get("RETENTION_KEEP_SLAPD") != "1":
            shutil.rmtree(self.directory, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    # -- configuration ----------------------------------------------------------

    def _write_config(self) -> None:
        d = self.directory
        includes = "".join(f"include {_SCHEMA_DIR / s}.schema\n" for s in _SCHEMAS)
        (d / "slapd.conf").write_text(
            f"{includes}"
            f"pidfile {d / 'slapd.pid'}\n"
            f"argsfile {d / 'slapd.args'}\n"
            f"modulepath {_module_dir()}\n"
            "moduleload back_mdb\n"
            f"sizelimit {self._sizelimit()}\n"
            f"TLSCACertificateFile {d / 'ca.crt'}\n"
            f"TLSCertificateFile {d / 'server.crt'}\n"
            f"TLSCertificateKeyFile {d / 'server.key'}\n"
            "database mdb\n"
            "maxsize 4294967296\n"  # a sparse map: room for a million entries

            f"suffix \"{SUFFIX}\"\n"
            f"rootdn \"{self.admin_dn}\"\n"
            f"rootpw {self.admin_password}\n"
            f"directory {d / 'db'}\n"
            "index objectClass eq\n"
            "access to attrs=userPassword by anonymous auth by * none\n"
            "access to * by * read\n"
        )

    def _sizelimit(self) -> str:
        if self.sizelimit is None:
            return "unlimited"
        # As a default slapd: the limit also caps the total of a paged search (prtotal).
        return f"size.soft={self.sizelimit} size.hard={self.sizelimit}"

    def _ldif(self) -> Iterator[str]:
        """The directory as LDIF records, one at a time (a million users stay cheap)."""
        yield (f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\n"
               "dc: example\no: Example\n")
        yield f"dn: {self.people}\nobjectClass: organizationalUnit\nou: people\n"
        yield f"dn: ou=service,{SUFFIX}\nobjectClass: organizationalUnit\nou: service\n"
        yield (f"dn: {self.reader_dn}\nobjectClass: applicationProcess\n"
               f"objectClass: simpleSecurityObject\ncn: reader\n"
               f"userPassword: {self.reader_password}\n")
        for u in self.users:
            mails = "".join(f"mail: {m}\n" for m in (u.mail, *u.extra_mail))
            yield (f"dn: uid={u.uid},{self.people}\nobjectClass: inetOrgPerson\n"
                   f"uid: {u.uid}\ncn: {u.uid}\nsn: {u.uid}\n{mails}"
                   f"departmentNumber: {u.department}\n")

    def _load(self) -> None:
        slapadd = which("slapadd")
        assert slapadd is not None
        ldif = self.directory / "data.ldif"
        with ldif.open("w", encoding="utf-8") as out:
            for record in self._ldif():
                out.write(record + "\n")
        proc = subprocess.run(
            [slapadd, "-q", "-f", str(self.directory / "slapd.conf"), "-l", str(ldif)],
            capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            raise SlapdError(f"slapadd failed: {proc.stderr.strip()[-2000:]}")
        with contextlib.suppress(OSError):
            ldif.unlink()
