"""A throw-away CA and a server certificate for localhost/127.0.0.1, made with openssl.

Used by every rig that serves TLS (Dovecot, slapd, ...). The certificates pass strict
X.509 checking (OpenSSL's X509_STRICT and GnuTLS), so clients verify them as they would
a real server's once given ``ca.crt``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import NamedTuple

_CNF = (
    "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = unused\n"
    "[ca]\n"
    "basicConstraints = critical, CA:TRUE\n"
    "keyUsage = critical, keyCertSign, cRLSign\n"
    "subjectKeyIdentifier = hash\n"
    "[leaf]\n"
    "basicConstraints = critical, CA:FALSE\n"
    "keyUsage = critical, digitalSignature, keyEncipherment\n"
    "extendedKeyUsage = serverAuth\n"
    "subjectAltName = {san}\n"
    "subjectKeyIdentifier = hash\n"
    "authorityKeyIdentifier = keyid:always\n"
)


class Certificates(NamedTuple):
    ca_file: Path
    cert_file: Path
    key_file: Path


class PkiError(RuntimeError):
    """openssl failed."""


#: The names a rig's server certificate is issued for by default.
LOCAL_SAN = "DNS:localhost, IP:127.0.0.1"


def make_certificates(directory: Path, openssl: str, *, ca_file: Path | None = None,
                      prefix: str = "", san: str = LOCAL_SAN) -> Certificates:
    """``ca.crt`` (or ``ca_file``), ``server.crt`` and ``server.key`` in ``directory``.

    ``prefix`` is put before each file name (two sets in one directory); ``san`` is the
    leaf's subjectAltName (another name than 127.0.0.1 makes a host name mismatch).
    """
    d = directory
    cnf = d / f"{prefix}openssl.cnf"
    cnf.write_text(_CNF.replace("{san}", san))
    ca = ca_file if ca_file is not None else d / f"{prefix}ca.crt"
    ca_key, key = d / f"{prefix}ca.key", d / f"{prefix}server.key"
    csr, cert = d / f"{prefix}server.csr", d / f"{prefix}server.crt"

    def run(*args: str) -> None:
        proc = subprocess.run([openssl, *args], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise PkiError(f"openssl {args[0]} failed: {proc.stderr.strip()}")

    # EC keys: generating them takes milliseconds, RSA keys noticeably longer.
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    run("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca),
        "-days", "30", "-subj", "/CN=retention test CA", "-config", str(cnf),
        "-extensions", "ca")
    run("req", "-new", *ec, "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=localhost", "-config", str(cnf))
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "30", "-extfile", str(cnf),
        "-extensions", "leaf")
    for secret in (ca_key, key):
        secret.chmod(0o600)
    return Certificates(ca, cert, key)
