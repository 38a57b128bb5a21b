"""Folder patterns: special-use attributes, literal names, globs, and the safety exclusions."""

from __future__ import annotations

import unicodedata

import pytest

from retention.folders import folders_to_scan, matches, resolve_target, select
from retention.model import FolderInfo
from tests.strategies import policy, rule

INBOX = FolderInfo("INBOX")
TRASH = FolderInfo("ゴミ箱", frozenset({"\\Trash"}))
JUNK = FolderInfo("迷惑メール", frozenset({"\\Junk"}))
WORK = FolderInfo("仕事")
WORK_2024 = FolderInfo("仕事/2024")
WORK_2024_Q1 = FolderInfo("仕事/2024/Q1")
SUB = FolderInfo("INBOX/Sub")
LISTS = FolderInfo("Lists/python")
ALL = FolderInfo("[Gmail]/All Mail", frozenset({"\\All"}))
STARRED = FolderInfo("[Gmail]/Starred", frozenset({"\\Flagged"}))
GMAIL = FolderInfo("[Gmail]", selectable=False)
ARCHIVE = FolderInfo("Archive", frozenset({"\\Archive"}))
FOLDERS = [INBOX, TRASH, JUNK, WORK, WORK_2024, WORK_2024_Q1, SUB, LISTS, ALL, STARRED, GMAIL,
           ARCHIVE]


def names(folders):
    return [f.name for f in folders]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("INBOX", ["INBOX"]),
        ("inbox", ["INBOX"]),
        ("Inbox", ["INBOX"]),
        ("inbox/Sub", ["INBOX/Sub"]),
        ("inbox/sub", []),  # only the INBOX level is case-insensitive
        ("\\Trash", ["ゴミ箱"]),
        ("\\trash", ["ゴミ箱"]),  # attributes are case-insensitive atoms
        ("\\Junk", ["迷惑メール"]),
        ("\\Sent", []),
        ("ゴミ箱", ["ゴミ箱"]),
        ("仕事", ["仕事"]),
        ("仕事/%", ["仕事/2024"]),
        ("仕事/*", ["仕事/2024", "仕事/2024/Q1"]),
        ("仕事*", ["仕事", "仕事/2024", "仕事/2024/Q1"]),
        ("仕事%", ["仕事"]),
        ("%", ["INBOX", "ゴミ箱", "迷惑メール", "仕事", "Archive"]),
        ("*/%", ["仕事/2024", "仕事/2024/Q1", "INBOX/Sub", "Lists/python"]),
        ("%/%", ["仕事/2024", "INBOX/Sub", "Lists/python"]),
        ("inbox/*", ["INBOX/Sub"]),
        ("Lists/*", ["Lists/python"]),
        ("Lists", []),
        # wildcards never match \All, \Flagged or non-selectable folders
        ("*", ["INBOX", "ゴミ箱", "迷惑メール", "仕事", "仕事/2024", "仕事/2024/Q1", "INBOX/Sub",
               "Lists/python", "Archive"]),
        ("[Gmail]/*", []),
        ("[Gmail]/%", []),
        # ... but naming them explicitly does
        ("[Gmail]/All Mail", ["[Gmail]/All Mail"]),
        ("\\All", ["[Gmail]/All Mail"]),
        ("\\Flagged", ["[Gmail]/Starred"]),
        ("[Gmail]/Starred", ["[Gmail]/Starred"]),
        # a non-selectable folder is never matched, not even by name
        ("[Gmail]", []),
        # regex metacharacters in names are literal
        ("[Gmail]/All.Mail", []),
        ("Lists/pyth.n", []),
    ],
)
def test_matches(pattern, expected):
    assert [f.name for f in FOLDERS if matches(pattern, f)] == expected


def test_unicode_normal_forms_match():
    decomposed = unicodedata.normalize("NFD", "Café/Été")
    folder = FolderInfo(decomposed)
    assert matches("Café/Été", folder)
    assert matches("Café/*", folder)
    assert matches("Caf%/%", folder)


def test_select_with_excludes_in_folder_order():
    got = select(["*"], ["\\Junk", "\\Trash", "仕事/*"], FOLDERS)
    assert names(got) == ["INBOX", "仕事", "INBOX/Sub", "Lists/python", "Archive"]


def test_select_excludes_are_loose():
    # An exclusion written as a wildcard also excludes a virtual folder named explicitly.
    assert names(select(["[Gmail]/All Mail"], ["[Gmail]/*"], FOLDERS)) == []
    assert names(select(["\\All", "INBOX"], ["*"], FOLDERS)) == []
    assert names(select(["INBOX", "inbox"], [], FOLDERS)) == ["INBOX"]


def test_folders_to_scan_is_the_union_of_rules():
    pol = policy(
        rule("a", folders=["\\Trash"], older_than="30d"),
        rule("b", folders=["仕事/*"], exclude_folders=["仕事/2024/Q1"], older_than="1y"),
        rule("c", older_than="2y"),
    )
    assert names(folders_to_scan(pol, FOLDERS, "imap")) == ["INBOX", "ゴミ箱", "仕事/2024"]
    assert names(folders_to_scan(pol, [INBOX], "pop3")) == ["INBOX"]
    assert folders_to_scan(policy(), FOLDERS, "imap") == []


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("\\Trash", "ゴミ箱"),
        ("\\trash", "ゴミ箱"),
        ("\\Archive", "Archive"),
        ("\\Sent", None),  # the server lacks it: the rule's actions fail
        ("\\All", "[Gmail]/All Mail"),
        ("inbox", "INBOX"),
        ("inbox/Sub", "INBOX/Sub"),
        ("仕事/2025", "仕事/2025"),  # missing: created by the executor
        ("Old/*", None),
        ("", None),
    ],
)
def test_resolve_target(target, expected):
    assert resolve_target(target, FOLDERS) == expected


def test_resolve_target_skips_a_non_selectable_special_use_folder():
    ghost = FolderInfo("Old Trash", frozenset({"\\Trash"}), selectable=False)
    assert resolve_target("\\Trash", [ghost, TRASH]) == "ゴミ箱"
    assert resolve_target("\\Trash", [ghost]) is None
