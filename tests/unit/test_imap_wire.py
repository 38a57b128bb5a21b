"""Pure parts of the IMAP adapter: UID sets, batching, headers, names, error texts, TLS."""

from __future__ import annotations

import imaplib
import logging
import ssl
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from imapclient.exceptions import IMAPClientError

from retention.adapters import tls
from retention.adapters.imap.namespaces import parse_namespaces
from retention.adapters.imap.wire import (
    ESCAPED_SLASH,
    MAX_SET_CHARS,
    compress_uids,
    display_name,
    expand_uid_set,
    normalise_flags,
    parse_appenduid,
    parse_copyuid,
    parse_date,
    parse_header_fields,
    parse_message_id,
    prefixed_name,
    relative_name,
    reply_text,
    selectable,
    server_name,
    special_uses,
    uid_batches,
)
from retention.config.secrets import redact as scrub
from retention.errors import TlsError


def test_compress_only_names_given_uids():
    assert compress_uids([9, 1, 2, 3, 7, 10, 3]) == "1:3,7,9:10"
    assert compress_uids([5]) == "5"
    with pytest.raises(ValueError):
        compress_uids([])


@given(st.sets(st.integers(1, 5000), min_size=1))
def test_compress_roundtrip(uids):
    assert expand_uid_set(compress_uids(uids)) == sorted(uids)


@given(st.sets(st.integers(1, 4_000_000_000), min_size=1, max_size=3000),
       st.integers(1, 1200))
def test_batches_partition_and_respect_limits(uids, max_count):
    batches = list(uid_batches(uids, max_count))
    assert [u for b in batches for u in b] == sorted(uids)
    for batch in batches:
        assert len(batch) <= max_count
        assert len(compress_uids(batch)) <= MAX_SET_CHARS


def test_sparse_ten_digit_uids_are_split_by_length():
    uids = range(4_000_000_000, 4_000_000_000 + 2 * 1000, 2)  # 1000 UIDs, no runs
    batches = list(uid_batches(uids, 1000))
    assert len(batches) == 2
    assert all(len(compress_uids(b)) <= MAX_SET_CHARS for b in batches)
    dense = list(uid_batches(range(1, 50_001), 1000))
    assert len(dense) == 50 and compress_uids(dense[0]) == "1:1000"


def test_expand_accepts_reversed_ranges():
    assert expand_uid_set("5:3,9") == [3, 4, 5, 9]


def test_header_fields_unfold_and_never_raise_on_8bit():
    raw = b"Date: Mon, 1 Jan 2024\r\n 10:00:00 +0200\r\nMessage-ID:  <a@b>  \r\n\r\n"
    fields = parse_header_fields(raw)
    assert fields["date"] == "Mon, 1 Jan 2024 10:00:00 +0200"
    assert parse_message_id(fields["message-id"]) == "<a@b>"
    weird = parse_header_fields(b"Date: \xff\xfe garbage \x80\r\nMessage-ID: <\xe9@x>\r\n\r\n")
    assert weird["date"].startswith("\ufffd")
    assert parse_date(weird["date"])[0] is None
    assert parse_header_fields(None) == {} and parse_header_fields(b"\r\n") == {}


@pytest.mark.parametrize(
    ("value", "sent", "raw"),
    [
        ("Mon, 01 Jan 2024 10:00:00 +0200", datetime(2024, 1, 1, 8, 0, tzinfo=UTC), None),
        ("Mon, 01 Jan 2024 10:00:00 -0000", datetime(2024, 1, 1, 10, 0, tzinfo=UTC), None),
        ("01 Jan 2024 10:00:00", datetime(2024, 1, 1, 10, 0, tzinfo=UTC), None),
        ("yesterday-ish", None, "yesterday-ish"),
        ("Mon, 99 Foo 2024 99:99:99 +9999", None, "Mon, 99 Foo 2024 99:99:99 +9999"),
        ("", None, None),
        (None, None, None),
    ],
)
def test_parse_date(value, sent, raw):
    parsed, raw_text = parse_date(value)
    assert parsed == sent and raw_text == raw
    if parsed is not None:
        assert parsed.tzinfo is not None


def test_flags_canonical_case_and_recent_dropped():
    assert normalise_flags([b"\\SEEN", b"\\Recent", b"$Label1", "\\flagged"]) == {
        "\\Seen", "$Label1", "\\Flagged"}


def test_response_codes():
    assert parse_appenduid(b"[APPENDUID 1700000000 42] Append completed.") == (1700000000, 42)
    assert parse_appenduid(b"Append completed.") is None
    assert parse_copyuid("[COPYUID 7 1:3,5 10:13] Done") == (7, [1, 2, 3, 5], [10, 11, 12, 13])
    assert parse_copyuid("[COPYUID 7 1:3 10] Done") is None  # lengths differ: unusable


def test_names_with_other_delimiters():
    assert display_name("INBOX.Lists.python", ".") == "INBOX/Lists/python"
    assert display_name("inbox", "/") == "INBOX"
    shown = display_name("INBOX.a/b", ".")
    assert shown == f"INBOX/a{ESCAPED_SLASH}b"
    assert server_name(shown, ".") == "INBOX.a/b"
    assert server_name("Archive/2024", ".") == "Archive.2024"
    assert server_name("ゴミ箱", "/") == "ゴミ箱"
    assert display_name("a/b", None) == f"a{ESCAPED_SLASH}b" and server_name(
        f"a{ESCAPED_SLASH}b", None) == "a/b"


def test_personal_namespace_under_inbox():
    # NAMESPACE of Cyrus (altnamespace off) and Courier; Dovecot's usual ""; another prefix.
    def level(reply):
        return parse_namespaces(reply).inbox_level_prefix()

    assert level(((("INBOX.", "."),), (("user.", "."),), (("", "."),))) == "INBOX."
    assert level(((("inbox/", "/"),), None, None)) == "inbox/"
    assert level(((("", "/"), ("virtual/", "/")), (("shared/", "/"),), None)) == ""
    assert level(((("#mh/", "/"),), None, None)) == ""  # not a second name of the root
    assert level(None) == "" and level(((("INBOX.", None),), None, None)) == ""
    # The agent names a Cyrus user's INBOX.Trash "Trash", as on other servers.
    assert relative_name("INBOX.Trash", "INBOX.", ".") == "Trash"
    assert relative_name("INBOX.Archive.2023", "INBOX.", ".") == "Archive.2023"
    assert relative_name("inbox.Trash", "INBOX.", ".") == "Trash"
    for kept in ("INBOX", "user.bob.Trash", "INBOX.INBOX", "INBOX.inbox.x", "Trash"):
        assert relative_name(kept, "INBOX.", ".") == kept
    assert relative_name("INBOX.Trash", "", ".") == "INBOX.Trash"
    # A folder to create goes under the prefix (Cyrus refuses one outside it).
    assert prefixed_name("Archive.2023", "INBOX.") == "INBOX.Archive.2023"
    assert prefixed_name("INBOX.Archive", "INBOX.") == "INBOX.Archive"
    assert prefixed_name("inbox", "INBOX.") == "inbox"
    assert prefixed_name("Archive", "") == "Archive"


def test_special_use_and_selectable():
    assert special_uses([b"\\HasNoChildren", b"\\trash"]) == {"\\Trash"}
    assert special_uses([b"\\AllMail", b"\\Spam"]) == {"\\All", "\\Junk"}
    assert not selectable([b"\\Noselect"]) and not selectable([b"\\NonExistent"])
    assert selectable([b"\\HasChildren"])


def test_reply_text_keeps_only_the_server_words():
    bad = imaplib.IMAP4.error("FETCH command error: BAD [b'Error in IMAP command: bad set']")
    assert reply_text(bad) == "BAD Error in IMAP command: bad set"
    no = IMAPClientError("append failed: [OVERQUOTA] Quota exceeded (mailbox is full)")
    assert reply_text(no) == "[OVERQUOTA] Quota exceeded (mailbox is full)"
    assert reply_text(imaplib.IMAP4.abort("socket error: EOF")) == "socket error: EOF"
    assert scrub("echo hunter22 x", ["hunter22"]) == "echo *** x"


def test_make_context_verifies_by_default(tmp_path):
    ctx = tls.make_context(None, True)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    with pytest.raises(TlsError, match="ca_file"):
        tls.make_context(tmp_path / "missing.pem", True)
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(TlsError, match="ca_file"):
        tls.make_context(tmp_path / "junk.pem", True)


def test_unverified_context_warns_once(caplog, monkeypatch):
    monkeypatch.setattr(tls, "_warned_unverified", False)
    with caplog.at_level(logging.WARNING, logger="retention.tls"):
        ctx = tls.make_context(None, False)
        tls.make_context(None, False)
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    assert len([r for r in caplog.records if "NOT verified" in r.message]) == 1


def test_classify_ssl_errors():
    err = ssl.SSLCertVerificationError(1, "certificate verify failed")
    err.verify_message = "unable to get local issuer certificate"
    out = tls.classify_ssl_error(err, "mail:993")
    assert isinstance(out, TlsError)
    assert str(out) == "mail:993: certificate verification failed: unable to get local issuer " \
        "certificate"
    wrong = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    wrong.reason = "WRONG_VERSION_NUMBER"
    assert "starttls" in str(tls.classify_ssl_error(wrong))


def test_naive_offsets_compare():
    # sanity: aware dates from different zones compare as instants
    a = datetime(2024, 1, 1, 10, tzinfo=timezone(timedelta(hours=2)))
    assert parse_date("Mon, 01 Jan 2024 10:00:00 +0200")[0] == a
