"""Wildcards cover the user's own namespace only (review F2): other users', shared and
virtual folders are touched only by a rule naming them exactly, and the NAMESPACE reply
is read into those facts the way Dovecot 2.3 sends it."""

from __future__ import annotations

import pytest

from retention.adapters.imap.namespaces import parse_namespaces
from retention.folders import folders_to_scan, matches, resolve_target, select
from retention.model import FolderInfo, Namespace
from tests.strategies import policy, rule

OTHER = Namespace("other", "shared/", inbox=False)
PUBLIC = Namespace("shared", "Public/", inbox=False)
VIRTUAL = Namespace("personal", "virtual/", inbox=False)

INBOX = FolderInfo("INBOX")
SENT = FolderInfo("Sent", frozenset({"\\Sent"}))
TRASH = FolderInfo("Trash", frozenset({"\\Trash"}))
WORK = FolderInfo("Work")
BOB_INBOX = FolderInfo("shared/bob", namespace=OTHER)  # Dovecot: bob's INBOX
BOB_WORK = FolderInfo("shared/bob/Work", namespace=OTHER)
BOB_TRASH = FolderInfo("shared/bob/Trash", frozenset({"\\Trash"}), namespace=OTHER)
NEWS = FolderInfo("Public/news", namespace=PUBLIC)
VIRTUAL_ALL = FolderInfo("virtual/All", namespace=VIRTUAL)  # no \All attribute
FOLDERS = [INBOX, SENT, TRASH, WORK, BOB_INBOX, BOB_WORK, BOB_TRASH, NEWS, VIRTUAL_ALL]


def names(folders):
    return [f.name for f in folders]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*", ["INBOX", "Sent", "Trash", "Work"]),
        ("%", ["INBOX", "Sent", "Trash", "Work"]),
        ("shared/*", []),  # a glob never reaches another user's folders...
        ("shared/%", []),
        ("shared/bob/*", []),
        ("shared/bob/Wor%", []),
        ("Public/*", []),
        ("virtual/*", []),
        ("*/All", []),
        ("\\Trash", ["Trash"]),  # ...nor an attribute: bob's Trash is bob's
        ("shared/bob", ["shared/bob"]),  # only a rule naming the folder exactly
        ("shared/bob/Work", ["shared/bob/Work"]),
        ("Public/news", ["Public/news"]),
        ("virtual/All", ["virtual/All"]),
    ],
)
def test_patterns_with_namespaces(pattern, expected):
    assert names(f for f in FOLDERS if matches(pattern, f)) == expected


def test_readme_rule_star_excluding_sent_leaves_other_users_and_virtual_alone():
    got = select(["*"], ["\\Trash", "\\Junk", "\\Sent"], FOLDERS)
    assert names(got) == ["INBOX", "Work"]


def test_folders_to_scan_only_names_foreign_folders_explicitly():
    p = policy(rule(folders=["*"], older_than="30d"),
               rule(name="bob", folders=["shared/bob/Work"], older_than="30d"))
    assert names(folders_to_scan(p, FOLDERS, "imap")) == ["INBOX", "Sent", "Trash", "Work",
                                                          "shared/bob/Work"]


def test_exclusions_still_reach_every_namespace():
    assert select(["shared/bob/Work"], ["shared/*"], FOLDERS) == []


def test_a_trash_attribute_target_is_the_users_own():
    assert resolve_target("\\Trash", [BOB_TRASH, TRASH]) == "Trash"
    assert resolve_target("\\Trash", [BOB_TRASH]) is None


# -- the NAMESPACE reply -----------------------------------------------------------

# What Dovecot 2.3.19 answers with a ``type = shared`` namespace ``shared/%%u/`` and a
# ``virtual/`` namespace: (("" "/")("virtual/" "/")) (("shared/" "/")) NIL
DOVECOT = ((("", "/"), ("virtual/", "/")), (("shared/", "/"),), None)


@pytest.mark.parametrize(
    ("name", "kind", "prefix", "own"),
    [
        ("INBOX", "personal", "", True),
        ("Sent", "personal", "", True),
        ("sharedstuff", "personal", "", True),
        ("virtual/All", "personal", "virtual/", False),
        ("virtual", "personal", "virtual/", False),
        ("shared", "other", "shared/", False),
        ("shared/bob", "other", "shared/", False),
        ("shared/bob/Work", "other", "shared/", False),
    ],
)
def test_dovecot_namespace_reply(name, kind, prefix, own):
    got = parse_namespaces(DOVECOT).classify(name)
    assert (got.kind, got.prefix, got.own) == (kind, prefix, own)


def test_cyrus_style_namespaces():
    # Cyrus without altnamespace: personal INBOX., other users user., shared folders "".
    spaces = parse_namespaces(((("INBOX.", "."),), (("user.", "."),), (("", "."),)))
    assert spaces.classify("INBOX").own
    assert spaces.classify("inbox.Sent").own
    assert spaces.classify("INBOX.Sent").own
    assert spaces.classify("user.bob.Work").kind == "other"
    got = spaces.classify("public.news")
    assert (got.kind, got.own) == ("shared", False)


def test_inbox_is_always_own_and_other_personal_namespaces_are_not():
    # The INBOX namespace need not be listed first.
    spaces = parse_namespaces(((("Archive/", "/"), ("INBOX/", "/")), None, None))
    assert spaces.classify("INBOX").own
    assert spaces.classify("INBOX/Sub").own
    assert not spaces.classify("Archive/2020").own
    assert not spaces.classify("Elsewhere").own  # in no namespace: the safe side


@pytest.mark.parametrize("reply", [None, (), (None, None, None), ((("x",),), None, None)])
def test_no_usable_namespace_reply_means_everything_is_own(reply):
    spaces = parse_namespaces(reply)
    assert spaces.classify("shared/bob").own and spaces.classify("virtual/All").own


def test_only_a_shared_namespace_listed():
    spaces = parse_namespaces((None, None, (("Public/", "/"),)))
    assert spaces.classify("Work").own
    assert spaces.classify("Public/news").kind == "shared"


def test_prefixes_are_shown_in_agent_form():
    spaces = parse_namespaces(((("INBOX.", "."),), (("Other Users.", "."),), None))
    assert spaces.classify("Other Users.bob.a/b").prefix == "Other Users/"


# -- the planner: another user's folder frees none of this account's quota ----------


def test_over_quota_cleanup_takes_nothing_from_a_named_shared_folder():
    from datetime import timedelta

    from retention.planner import plan
    from tests.strategies import DAY, NOW, folder, msg, snapshot

    kib = 1024
    bob = FolderInfo("shared/bob", namespace=OTHER)
    pol = policy(rule("full", folders=["INBOX", "shared/bob"], when="over_quota"),
                 rule("bob", folders=["shared/bob"], older_than="30d", allow_empty_folder=True),
                 quota={"clean_above": "90%", "clean_to": "75%"})
    # alice: 95 KiB of 100 KiB in INBOX (her own); bob's shared INBOX: 3 old 10 KiB ones.
    mine = [msg("INBOX", u, age=(400 - u) * DAY, size=19 * kib) for u in range(1, 6)]
    mine.append(msg("INBOX", 9, age=timedelta(0), size=10))
    bobs = [msg("shared/bob", u, age=90 * DAY, size=10 * kib) for u in range(1, 4)]
    snap = snapshot(folder(INBOX, *mine), folder(bob, *bobs), usage=95 * kib, limit=100 * kib)
    p = plan(pol, snap, NOW)
    removed = [(a.message.ref.folder, a.message.ref.uid, a.over_quota) for a in p.actions]
    # The always-rule "bob" acts on bob's folder (it names it), but that frees none of
    # alice's 95 KiB: over-quota cleanup still takes her oldest until <= 75 KiB.
    assert removed == [("shared/bob", 1, False), ("shared/bob", 2, False),
                       ("shared/bob", 3, False), ("INBOX", 1, True), ("INBOX", 2, True)]
    assert p.usage_after_bytes == 95 * kib - 2 * 19 * kib
    assert any("shared/bob is not this account's own storage" in w for w in p.warnings)


def test_a_shared_folder_only_an_over_quota_rule_covers_is_kept_as_not_own():
    from retention.planner import plan
    from tests.strategies import DAY, NOW, folder, msg, snapshot

    kib = 1024
    bob = FolderInfo("shared/bob", namespace=OTHER)
    pol = policy(rule("full", folders=["INBOX", "shared/bob"], when="over_quota",
                      allow_empty_folder=True),
                 quota={"clean_above": "90%", "clean_to": "75%"})
    mine = [msg("INBOX", u, age=(400 - u) * DAY, size=19 * kib) for u in range(1, 6)]
    bobs = [msg("shared/bob", u, age=900 * DAY, size=10 * kib) for u in range(1, 3)]
    snap = snapshot(folder(INBOX, *mine), folder(bob, *bobs), usage=95 * kib, limit=100 * kib)
    p = plan(pol, snap, NOW, list_kept=True)
    # bob's messages are older, yet not taken: removing them frees none of alice's quota.
    assert [(a.message.ref.folder, a.message.ref.uid) for a in p.actions] == [
        ("INBOX", 1), ("INBOX", 2)]
    assert [(t.folder, t.reason.value, t.messages) for t in p.kept] == [
        ("INBOX", "not_needed", 3), ("shared/bob", "not_own", 2)]


# -- virtual_prefixes: what NAMESPACE does not say -----------------------------------


@pytest.mark.parametrize(
    ("shown", "expected"),
    [("virtual/All", "virtual/"), ("virtual", "virtual/"), ("virtualx", None),
     ("Virtual/All", None), ("INBOX", None), ("inbox/views/a", "INBOX/views/")],
)
def test_virtual_prefix(shown, expected):
    from retention.adapters.imap.namespaces import virtual_prefix

    assert virtual_prefix(shown, ["virtual/", "INBOX/views"]) == expected


@pytest.mark.parametrize("bad", ["*", "virtual/*", "%", "/", "", "\\All"])
def test_virtual_prefixes_refuse_wildcards_and_attributes(tmp_path, bad):
    from retention.config.load import ConfigError, load_config

    path = tmp_path / "p.yaml"
    path.write_text(
        "policies: {p: {rules: []}}\n"
        "accounts:\n"
        "  - {name: a, host: h, username: u, password_env: X, policy: p,\n"
        f"     virtual_prefixes: [{bad!r}]}}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert "virtual_prefixes" in str(err.value) and ":4: " in str(err.value)
