#!/usr/bin/env bash
# Install the system packages the tests need, if any is missing:
#   dovecot, doveadm  (dovecot-imapd dovecot-pop3d, which pull in dovecot-core)
#   promtool          (prometheus: tests check the alerting rules in deploy/)
#   openssl           (the test Dovecot's throw-away CA and certificate)
#   slapd, slapadd    (slapd ldap-utils: the tests' real OpenLDAP for LDAP account sources)
#   initdb, pg_ctl    (postgresql: the tests' real PostgreSQL for SQL account sources)
#   libldap/libsasl headers and a C compiler (libldap2-dev libsasl2-dev gcc: pip builds
#                     python-ldap, the [ldap] extra, from source; it has no wheels)
#   chromium          (headless: the tests render the HTML report in a real browser)
#   groff             (groff-base: the tests render the generated man page, `retention man`)
#   Cyrus IMAP        (cyrus-common sasl2-bin, cyrus-imapd's imapd and cyrus-pop3d's pop3d: the
#                     tests' real Cyrus for admin logins; see cyrus_daemons below for why
#                     those two are unpacked)
# Nothing to do when all are present. Installing needs root (apt-get); without it
# this prints what to install and fails.
set -euo pipefail

# Debian puts dovecot in /usr/sbin, which a non-login or non-root PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"

# `install-deps.sh --bench`: only the optional benchmark peer, imapfilter (bench/
# bench_cleanup.py runs it when missing); the tests never need it.
if [ "${1:-}" = --bench ]; then
    command -v imapfilter >/dev/null 2>&1 && exit 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-deps: imapfilter missing; as root: apt-get install -y imapfilter" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends imapfilter </dev/null \
        || { apt-get update -q && apt-get install -y -q --no-install-recommends imapfilter </dev/null; }
    exit 0
fi

missing=()
command -v dovecot >/dev/null 2>&1 || missing+=(dovecot)
command -v doveadm >/dev/null 2>&1 || missing+=(doveadm)
command -v promtool >/dev/null 2>&1 || missing+=(promtool)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v slapd >/dev/null 2>&1 || missing+=(slapd)
command -v slapadd >/dev/null 2>&1 || missing+=(slapadd)
command -v ldapsearch >/dev/null 2>&1 || missing+=(ldapsearch)
# Debian keeps the PostgreSQL server binaries out of PATH, per major version.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null 2>&1 \
    || missing+=(initdb)
[ -e /usr/include/ldap.h ] || missing+=(ldap.h)
[ -e /usr/include/sasl/sasl.h ] || missing+=(sasl.h)
command -v cc >/dev/null 2>&1 || missing+=(cc)
# Building python-ldap also needs the interpreter's own headers: Debian's python3 has them
# in python3-dev (a pyenv or python.org build ships them).
extra=()
if [ "$(command -v python3 2>/dev/null)" = /usr/bin/python3 ] && ! /usr/bin/python3 -c \
    'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'
then
    missing+=(Python.h)
    extra+=(python3-dev)
fi
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v groff >/dev/null 2>&1 || missing+=(groff)
[ -x /usr/lib/cyrus/bin/master ] || missing+=(cyrus-master)
command -v saslpasswd2 >/dev/null 2>&1 || missing+=(saslpasswd2)

# Debian's cyrus-imapd and cyrus-pop3d conflict with dovecot-imapd and dovecot-pop3d (they
# provide imap-server, pop3-server), and the tests need both servers. So the two Cyrus
# packages (one binary each, imapd and pop3d, on top of cyrus-common) are unpacked with
# dpkg-deb into $cyrus_root, never installed: Dovecot stays, apt's state stays consistent,
# and retention/testing/cyrus.py finds the binaries there. The unpacked version must be
# cyrus-common's (the binaries link its private libraries): a stamp file records it.
cyrus_root=/opt/retention-cyrus
cyrus_daemons_ok() {
    [ -x /usr/lib/cyrus/bin/imapd ] && [ -x /usr/lib/cyrus/bin/pop3d ] && return 0
    local have
    have=$(dpkg-query -W -f='${Version}' cyrus-common 2>/dev/null) || return 1
    [ -x "$cyrus_root/usr/lib/cyrus/bin/imapd" ] && [ -x "$cyrus_root/usr/lib/cyrus/bin/pop3d" ] \
        && [ "$(cat "$cyrus_root/VERSION" 2>/dev/null)" = "$have" ]
}
cyrus_daemons() {
    cyrus_daemons_ok && return 0
    local version tmp
    version=$(dpkg-query -W -f='${Version}' cyrus-common)
    tmp=$(mktemp -d)
    # apt-get download runs as _apt when it can: let it write here.
    chown _apt "$tmp" 2>/dev/null || true
    (cd "$tmp" && apt-get download -q "cyrus-imapd=$version" "cyrus-pop3d=$version" </dev/null)
    rm -rf "$cyrus_root"
    mkdir -p "$cyrus_root"
    for deb in "$tmp"/cyrus-imapd_*.deb "$tmp"/cyrus-pop3d_*.deb; do
        dpkg-deb -x "$deb" "$cyrus_root"
    done
    echo "$version" >"$cyrus_root/VERSION"
    rm -rf "$tmp"
}
cyrus_daemons_ok || missing+=(cyrus-imapd/pop3d)
# INSTALL_DEPS_FORCE=1 goes through the install anyway (to test this script).
if [ ${#missing[@]} -eq 0 ] && [ "${INSTALL_DEPS_FORCE:-0}" != 1 ]; then
    exit 0
fi

packages=(dovecot-imapd dovecot-pop3d prometheus openssl slapd ldap-utils postgresql
          libldap2-dev libsasl2-dev gcc chromium groff-base cyrus-common sasl2-bin
          ${extra[@]+"${extra[@]}"})
echo "install-deps: missing ${missing[*]}; installing ${packages[*]}" >&2

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: not root; please run as root:" >&2
    echo "  apt-get update && apt-get install -y --no-install-recommends ${packages[*]}" >&2
    echo "  and then this script again (it unpacks cyrus-imapd and cyrus-pop3d into $cyrus_root)" >&2
    exit 1
fi

# The packages' maintainer scripts would start a system dovecot (ports 143/993/
# 110/995), a prometheus server, slapd (389), a PostgreSQL cluster (5432) and the MTA that
# cyrus-common depends on (exim4 by default, port 25). The
# tests start their own servers on free high ports and need none of them; and
# without systemd, starting services can fail or hang the install. policy-rc.d
# exiting 101 tells invoke-rc.d (and deb-systemd-invoke) not to start anything.
# Only ours is removed afterwards.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# installed by retention scripts/install-deps.sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# --no-install-recommends: prometheus recommends node-exporter, which would
# be one more service; dovecot needs none of its recommends here.
apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${packages[@]}" </dev/null

cyrus_daemons

for tool in dovecot doveadm promtool openssl slapd slapadd ldapsearch cc chromium groff saslpasswd2; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "install-deps: $tool still missing after install" >&2
        exit 1
    fi
done
if ! cyrus_daemons_ok || [ ! -x /usr/lib/cyrus/bin/master ]; then
    echo "install-deps: Cyrus IMAP (master, imapd, pop3d) still missing after install" >&2
    exit 1
fi
echo "install-deps: ok ($(dovecot --version), $(promtool --version 2>&1 | head -n1))" >&2
