"""The LDAP source reader against a real OpenLDAP slapd (started by the fixture)."""

from __future__ import annotations

import os
import signal
import sys
from datetime import timedelta

import pytest

from retention.config.sources import LdapAttributes, LdapSource
from retention.errors import SourceError
from retention.sources import ldap as ldap_source
from retention.testing.host import HOST, free_ports
from retention.testing.slapd import Slapd, make_users
from tests.integration.sources_support import (  # noqa: F401 - fixtures
    USERS,
    ldap_settings,
    replace,
    slapd_fixture,
)

ENV = "RETENTION_TEST_BIND_PASSWORD"


@pytest.fixture
def settings(slapd: Slapd, monkeypatch: pytest.MonkeyPatch) -> LdapSource:
    """The reader bound over ldaps://, verified against the rig's CA, small pages."""
    monkeypatch.setenv(ENV, slapd.reader_password)
    return ldap_settings(
        url=slapd.ldaps_url, base=slapd.people, bind_dn=slapd.reader_dn,
        bind_password_env=ENV, ca_file=slapd.ca_file, filter="(objectClass=inetOrgPerson)",
        attributes=LdapAttributes(username="mail", policy="departmentNumber"),
        page_size=50,
    )


def test_reads_every_entry_across_pages(settings: LdapSource) -> None:
    got = list(ldap_source.entries(settings))
    assert len(got) == USERS  # 300 entries in pages of 50
    by_mail = {e["mail"]: e for e in got}
    assert len(by_mail) == USERS
    e = by_mail["user0004@example.org"]
    assert e["departmentNumber"] == "vip"  # round robin staff, vip, students
    assert e["dn"] == "uid=user0004,ou=people,dc=example,dc=org"
    assert set(e) == {"dn", "mail", "departmentNumber"}  # only what was asked for


def test_probe_counts_only_a_single_page(settings: LdapSource) -> None:
    assert ldap_source.probe(settings) is None  # more than one page: no cheap count
    assert ldap_source.probe(replace(settings, page_size=1000)) == USERS


def test_page_size_one_still_reads_everything(settings: LdapSource) -> None:
    narrow = replace(settings, filter="(uid=user000*)", page_size=1)
    assert sorted(e["mail"] for e in ldap_source.entries(narrow)) == [
        f"user000{i}@example.org" for i in range(10)]


def test_filter_and_attribute_mapping(settings: LdapSource) -> None:
    # Attribute names as the policy spells them, whatever case the server answers in.
    mapped = replace(
        settings, filter="(&(objectClass=inetOrgPerson)(departmentNumber=vip))",
        attributes=LdapAttributes(username="uid", name="cn", policy="departmentnumber"),
        extra=("MAIL",),
    )
    got = {e["uid"]: e for e in ldap_source.entries(mapped)}
    assert len(got) == len(range(1, USERS - 1, 3)) + 1  # every third user, and twomail
    assert got["user0001"] == {
        "dn": "uid=user0001,ou=people,dc=example,dc=org", "uid": "user0001",
        "cn": "user0001", "departmentnumber": "vip", "MAIL": "user0001@example.org",
    }
    # A multi-valued attribute that is not the username keeps all its values.
    assert got["twomail"]["MAIL"] == ("first@example.org", "second@example.org")


def test_multi_valued_username_is_its_first_value(settings: LdapSource) -> None:
    one = replace(settings, filter="(uid=twomail)")
    (entry,) = ldap_source.entries(one)
    assert entry["mail"] == "first@example.org"


def test_starttls_on_ldap_url(settings: LdapSource, slapd: Slapd) -> None:
    tls = replace(settings, url=slapd.url, starttls=True, page_size=500)
    assert ldap_source.probe(tls) == USERS


def test_wrong_bind_password_is_an_auth_error_without_the_password(
    settings: LdapSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, "Wr0ng-Secret-xyz")
    with pytest.raises(SourceError) as info:
        list(ldap_source.entries(settings))
    assert info.value.kind == "auth"
    assert info.value.source == "directory"
    assert "Invalid credentials" in str(info.value)
    assert "cn=reader" in str(info.value)
    assert "Wr0ng-Secret-xyz" not in str(info.value)
    assert "Wr0ng-Secret-xyz" not in repr(info.value.args)


def test_unset_bind_password_variable_is_a_config_error(
    settings: LdapSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV)
    with pytest.raises(SourceError) as info:
        ldap_source.probe(settings)
    assert info.value.kind == "config"
    assert ENV in str(info.value)


def test_unknown_ca_fails_by_default(settings: LdapSource, slapd: Slapd) -> None:
    for url, starttls in ((slapd.ldaps_url, False), (slapd.url, True)):
        untrusted = replace(settings, url=url, starttls=starttls, ca_file=None)
        with pytest.raises(SourceError) as info:
            ldap_source.probe(untrusted)
        assert info.value.kind == "tls", str(info.value)


def test_ca_of_another_authority_fails(settings: LdapSource, tmp_path) -> None:
    from retention.testing.host import which
    from retention.testing.pki import make_certificates

    openssl = which("openssl")
    assert openssl is not None
    other = make_certificates(tmp_path, openssl)
    with pytest.raises(SourceError) as info:
        ldap_source.probe(replace(settings, ca_file=other.ca_file))
    assert info.value.kind == "tls"


def test_certificate_for_another_host_name_fails(settings: LdapSource) -> None:
    with Slapd(make_users(3), san="DNS:ldap.example.org") as elsewhere:
        mismatch = replace(settings, url=elsewhere.ldaps_url,
                                       ca_file=elsewhere.ca_file)
        with pytest.raises(SourceError) as info:
            ldap_source.probe(mismatch)
        assert info.value.kind == "tls"
        # Same CA, same server: only the name was wrong.
        assert ldap_source.probe(replace(mismatch, tls_verify=False)) == 3


def test_tls_verify_false_is_the_only_way_around_verification(settings: LdapSource) -> None:
    unverified = replace(settings, ca_file=None, tls_verify=False, page_size=1000)
    assert ldap_source.probe(unverified) == USERS


def test_plaintext_bind_needs_allow_plaintext(settings: LdapSource, slapd: Slapd) -> None:
    plain = replace(settings, url=slapd.url, ca_file=None, page_size=1000)
    with pytest.raises(SourceError) as info:
        ldap_source.probe(plain)
    assert info.value.kind == "config"
    assert "allow_plaintext" in str(info.value)
    assert ldap_source.probe(replace(plain, allow_plaintext=True)) == USERS


def test_anonymous_bind_reads_over_plain_ldap(slapd: Slapd) -> None:
    anonymous = ldap_settings(url=slapd.url, base=slapd.people, filter="(uid=user01*)")
    assert len(list(ldap_source.entries(anonymous))) == 100


def test_bad_filter_and_missing_base_are_config_errors(settings: LdapSource) -> None:
    with pytest.raises(SourceError) as info:
        ldap_source.probe(replace(settings, filter="(uid=user"))
    assert info.value.kind == "config"
    with pytest.raises(SourceError) as info:
        ldap_source.probe(replace(settings, base="ou=nowhere,dc=example,dc=org"))
    assert info.value.kind == "config"
    assert "ou=nowhere" in str(info.value)


def test_nothing_listening_is_a_connect_error(settings: LdapSource) -> None:
    (port,) = free_ports(1)
    down = replace(settings, url=f"ldaps://{HOST}:{port}")
    with pytest.raises(SourceError) as info:
        ldap_source.probe(down)
    assert info.value.kind == "connect"
    assert info.value.retryable


def test_server_size_limit_is_a_clear_error(settings: LdapSource) -> None:
    """A default slapd caps a paged search at 500 entries for non-admin binds: say so."""
    with Slapd(make_users(120), sizelimit=100) as limited:
        capped = replace(settings, url=limited.ldaps_url, ca_file=limited.ca_file)
        with pytest.raises(SourceError) as info:
            list(ldap_source.entries(capped))
    assert info.value.kind == "query"
    assert "size limit" in str(info.value)
    assert 'limits dn.exact="cn=reader,ou=service,dc=example,dc=org" size.prtotal=unlimited' \
        in str(info.value)


def test_a_server_that_stops_answering_mid_search_is_a_timeout(settings: LdapSource) -> None:
    with Slapd(make_users(120)) as frozen:
        stuck = replace(settings, url=frozen.ldaps_url, ca_file=frozen.ca_file,
                                    timeout=timedelta(seconds=1))
        rows = ldap_source.entries(stuck)
        next(rows)  # bound, first page read
        assert frozen.pid is not None
        os.kill(frozen.pid, signal.SIGSTOP)
        try:
            with pytest.raises(SourceError) as info:
                list(rows)
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
    assert info.value.kind == "connect"
    assert "no answer" in str(info.value)


def test_missing_extra_names_it(settings: LdapSource, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ldap", None)  # import ldap -> ImportError
    with pytest.raises(SourceError) as info:
        ldap_source.probe(settings)
    assert info.value.kind == "config"
    assert "retention[ldap]" in str(info.value)
