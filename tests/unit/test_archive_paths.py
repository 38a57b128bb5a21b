"""Archive path templates and filesystem-safe segment escaping."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retention.archive.paths import (
    TemplateError,
    escape_segment,
    expand,
    folder_segments,
    unescape_segment,
    validate_template,
)

WHEN = datetime(2023, 3, 9, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "escaped"),
    [
        ("INBOX", "INBOX"),
        ("a/b", "a%2Fb"),
        (".hidden", "%2Ehidden"),
        ("..", "%2E."),
        (".", "%2E"),
        ("100%", "100%25"),
        ("nul\x00byte", "nul%00byte"),
        ("", "%"),
        ("ゴミ箱", "ゴミ箱"),
        ("a.b", "a.b"),
    ],
)
def test_escape_segment(name, escaped):
    assert escape_segment(name) == escaped
    assert unescape_segment(escaped) == name
    assert "/" not in escaped and "\x00" not in escaped and not escaped.startswith(".")


@given(st.text())
def test_escape_round_trip(name):
    seg = escape_segment(name)
    assert unescape_segment(seg) == name
    assert "/" not in seg and "\x00" not in seg
    assert not seg.startswith(".") and seg not in ("", ".", "..")


def test_maildir_reserved_names_are_escaped():
    assert folder_segments("a/cur/new/tmp/x", maildir=True) == ["a", "%63ur", "%6Eew", "%74mp", "x"]
    assert unescape_segment("%63ur") == "cur"
    assert folder_segments("cur") == ["cur"]  # only for Maildir targets


def test_expand_filesystem():
    out = expand("/a/{account}/{folder}/{year}-{month}.mbox", account="bob",
                 folder="Lists/../.x", received=WHEN)
    assert out == "/a/bob/Lists/%2E./%2Ex/2023-03.mbox"


def test_expand_imap_keeps_names_and_uses_utc():
    late = datetime(2024, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    out = expand("Archive/{account}/{folder}/{year}", account="bob", folder="Lists/py",
                 received=late, filesystem=False)
    assert out == "Archive/bob/Lists/py/2023"


@pytest.mark.parametrize("bad", ["{user}", "{year:04d}", "{folder!r}", "{", "{account.x}"])
def test_bad_templates(bad):
    with pytest.raises(TemplateError):
        validate_template(bad)
