"""Other users', shared and virtual folders on a real Dovecot (review F2).

The server: Dovecot 2.3 with the ``acl`` plugin and a ``type = shared`` namespace
``shared/%%u/`` (bob's shared INBOX shows in alice's LIST as ``shared/bob``), and the
``virtual`` plugin with ``virtual/All`` configured without ``special_use`` (every message
of the user's own folders, with no attribute saying so). NAMESPACE answers
``(("" "/")("virtual/" "/")) (("shared/" "/")) NIL``. No QUOTA: usage is the sum.

* Case 1: bob shares INBOX to alice with every right; alice's rule ``*`` older than 30
  days, delete: alice's old mail goes, bob's stays.
* Case 2: a rule ``*`` excluding ``\\Sent``: old Sent mail survives (nothing expunged
  through ``virtual/All``).
* Case 3: usage by sum counts alice's folders only, so bob's big shared folder neither
  starts the over-quota phase nor raises the percentage cap.
* A rule naming ``shared/bob`` exactly does act on it (and not on bob's other shared
  folders).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from retention.testing.dovecot import Dovecot, MailUser, SeedMessage
from tests.integration.helpers import SEEN, PolicyFile, ago

KIB = 1024


@pytest.fixture(scope="module")
def ns_dovecot(dovecot_factory: Callable[..., Dovecot]) -> Dovecot:
    return dovecot_factory(quota=False, shared=True, virtual=True)


@pytest.fixture(scope="module")
def ns_dovecot_quota(dovecot_factory: Callable[..., Dovecot]) -> Dovecot:
    """The same with the quota plugin: QUOTA with STORAGE only (no MESSAGE resource), so
    message counts come from LIST-STATUS (``usage``) or STATUS per folder (``run``)."""
    return dovecot_factory(quota=True, shared=True, virtual=True)


def _old(n: int, size: int = 2 * KIB, subject: str = "old") -> list[SeedMessage]:
    return [SeedMessage(received=ago(days=90), flags=SEEN, size=size, subject=f"{subject} {i}")
            for i in range(n)]


def _pair(dc: Dovecot, tag: str, bob_inbox: int = 3) -> tuple[MailUser, MailUser]:
    """alice_TAG with 2 old and 1 young INBOX messages, 1 old and 1 young in Sent (a
    folder never emptied: the empty-folder rail); bob_TAG with old INBOX mail shared to
    alice with every right (lrwstipekx)."""
    alice, bob = dc.add_user(f"alice_{tag}"), dc.add_user(f"bob_{tag}")
    alice.seed("INBOX", [*_old(2), SeedMessage(received=ago(days=1), flags=SEEN)])
    alice.seed("Sent", [*_old(1, subject="sent"), SeedMessage(received=ago(days=1), flags=SEEN)])
    bob.seed("INBOX", [*_old(bob_inbox, subject="bob"),
                       SeedMessage(received=ago(days=1), flags=SEEN)])
    bob.share("INBOX", alice.name)
    return alice, bob


def _counts(user: MailUser) -> dict[str, int]:
    """Messages per folder of ``user``'s own storage."""
    return {f: len(m) for f, m in user.folder_state().items()
            if not f.startswith(("shared", "virtual"))}


def test_dovecot_lists_shared_and_virtual_folders_without_attributes(ns_dovecot: Dovecot) -> None:
    """What the fix relies on: only NAMESPACE tells these folders apart."""
    alice, _bob = _pair(ns_dovecot, "rig")
    client = alice.imap_client()
    try:
        assert client.namespace() == ((("", "/"), ("virtual/", "/")), (("shared/", "/"),),
                                      None)
        listed = {name: flags for flags, _d, name in client.list_folders()}
        shared = f"shared/{_bob.name}"
        assert listed[shared] == (b"\\HasNoChildren",)  # bob's INBOX: no attribute
        assert listed["virtual/All"] == (b"\\HasNoChildren",)  # no \All
        assert client.folder_status(shared, ["MESSAGES"])[b"MESSAGES"] == 4
        assert client.folder_status("virtual/All", ["MESSAGES"])[b"MESSAGES"] == 5
    finally:
        client.logout()


def test_a_star_rule_leaves_another_users_shared_inbox_alone(ns_dovecot: Dovecot,
                                                             tmp_path: Path) -> None:
    alice, bob = _pair(ns_dovecot, "star")
    pf = PolicyFile(tmp_path, {"p": {"rules": [
        {"name": "old", "older_than": "30d", "folders": ["*"], "action": "delete"},
    ]}})
    name = pf.add_imap(alice, ca_file=str(ns_dovecot.ca_file))
    result = pf.run()
    assert result.code == 0, result
    acct = result.account(name)
    folders = {a["folder"] for a in acct["actions"]}
    assert folders == {"INBOX", "Sent"}, result
    assert _counts(bob) == {"INBOX": 4, "Trash": 0, "Junk": 0, "Sent": 0, "Archive": 0,
                            "Drafts": 0}
    assert _counts(alice)["INBOX"] == 1 and _counts(alice)["Sent"] == 1  # her old mail: gone


def test_a_star_rule_excluding_sent_never_expunges_through_virtual_all(
        ns_dovecot: Dovecot, tmp_path: Path) -> None:
    alice, _bob = _pair(ns_dovecot, "virt")
    pf = PolicyFile(tmp_path, {"p": {"rules": [
        {"name": "old", "older_than": "30d", "folders": ["*"],
         "exclude_folders": ["\\Trash", "\\Junk", "\\Sent"], "action": "delete"},
    ]}})
    name = pf.add_imap(alice, ca_file=str(ns_dovecot.ca_file))
    result = pf.run()
    assert result.code == 0, result
    assert {a["folder"] for a in result.account(name)["actions"]} == {"INBOX"}, result
    counts = _counts(alice)
    assert counts["Sent"] == 2  # the old Sent message survives
    assert counts["INBOX"] == 1


def test_usage_by_sum_counts_only_the_users_own_folders(ns_dovecot: Dovecot,
                                                        tmp_path: Path) -> None:
    # bob's shared INBOX: 20 x 20 KiB. alice: 3 x 2 KiB and 2 small ones; 100 KiB limit.
    alice, bob = _pair(ns_dovecot, "sum", bob_inbox=0)
    bob.seed("INBOX", _old(20, size=20 * KIB, subject="bob"))
    pf = PolicyFile(tmp_path, {"p": {
        "quota": {"limit": "100KiB", "clean_above": "90%", "clean_to": "50%"},
        "rules": [{"name": "full", "when": "over_quota", "folders": ["*"],
                   "action": "delete"}],
    }})
    name = pf.add_imap(alice, ca_file=str(ns_dovecot.ca_file))
    usage = pf.usage()
    assert usage.code == 0, usage
    entry = usage.account(name)
    assert entry["source"] == "sum"
    assert 6 * KIB < entry["usage_bytes"] < 20 * KIB  # alice's ~7 KiB, not bob's 400 KiB
    result = pf.run()
    assert result.code == 0, result
    acct = result.account(name)
    assert acct["actions"] == [], result  # not over quota: nothing of alice's deleted
    assert acct["usage_bytes"] == entry["usage_bytes"]
    assert _counts(bob)["INBOX"] == 21


@pytest.mark.parametrize("server", ["ns_dovecot", "ns_dovecot_quota"])
def test_the_percentage_cap_counts_only_the_users_own_messages(
        server: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    # alice: 4 old and 1 young INBOX messages; bob shares 12. A cap of 25%: 1 of alice's
    # 5 messages (not 4 of 17; virtual/All would add 5 more).
    ns_dovecot: Dovecot = request.getfixturevalue(server)
    tag = "q" if ns_dovecot.quota else "s"
    alice = ns_dovecot.add_user(f"alice_cap{tag}",
                                quota_bytes=10 * 1024 * KIB if ns_dovecot.quota else None)
    bob = ns_dovecot.add_user(f"bob_cap{tag}")
    alice.seed("INBOX", [*_old(4), SeedMessage(received=ago(days=1), flags=SEEN)])
    bob.seed("INBOX", _old(12, subject="bob"))
    bob.share("INBOX", alice.name)
    pf = PolicyFile(tmp_path, {"p": {
        "quota": {"max_delete_per_run": "25%"},
        "rules": [{"name": "old", "older_than": "30d", "folders": ["INBOX"],
                   "action": "delete"}],
    }})
    name = pf.add_imap(alice, ca_file=str(ns_dovecot.ca_file))
    result = pf.run()  # counts by STATUS per listed folder (or the sum's own count)
    assert result.code == 0, result
    assert len(result.account(name)["actions"]) == 1, result
    assert _counts(alice)["INBOX"] == 4
    assert _counts(bob)["INBOX"] == 12
    usage = pf.usage()  # with QUOTA: one LIST-STATUS for every folder
    assert usage.code == 0, usage
    assert usage.account(name)["source"] == ("quota" if ns_dovecot.quota else "sum")
    assert usage.account(name)["messages"] == 4, usage


def test_a_rule_naming_the_shared_folder_acts_on_it_and_on_no_other(
        ns_dovecot: Dovecot, tmp_path: Path) -> None:
    alice, bob = _pair(ns_dovecot, "named")
    bob.seed("Work", [*_old(2, subject="work"), SeedMessage(received=ago(days=1), flags=SEEN)])
    bob.share("Work", alice.name)
    shared = f"shared/{bob.name}"  # bob's INBOX
    pf = PolicyFile(tmp_path, {"p": {"rules": [
        {"name": "mine-and-bobs-inbox", "older_than": "30d", "folders": ["*", shared],
         "action": "delete"},
    ]}})
    name = pf.add_imap(alice, ca_file=str(ns_dovecot.ca_file))
    result = pf.run()
    assert result.code == 0, result
    acct = result.account(name)
    done = sorted(a["folder"] for a in acct["actions"] if a["result"] == "done")
    assert done == ["INBOX", "INBOX", "Sent", shared, shared, shared], result
    assert _counts(bob)["INBOX"] == 1  # the young one
    assert _counts(bob)["Work"] == 3  # shared too, but not named: untouched
    assert _counts(alice)["INBOX"] == 1


# -- a virtual namespace NAMESPACE does not show (hidden = yes, list = yes) ----------


@pytest.fixture(scope="module")
def hidden_dovecot(dovecot_factory: Callable[..., Dovecot]) -> Dovecot:
    return dovecot_factory(quota=False, virtual="hidden")


def test_virtual_prefixes_cover_a_hidden_virtual_namespace(hidden_dovecot: Dovecot,
                                                           tmp_path: Path) -> None:
    """NAMESPACE answers (("" "/")) NIL NIL and virtual/All looks like a folder of the
    user's own: the account's ``virtual_prefixes`` say what the server does not."""
    alice = hidden_dovecot.add_user("alice_hidden")
    alice.seed("INBOX", [*_old(2), SeedMessage(received=ago(days=1), flags=SEEN)])
    alice.seed("Sent", [*_old(1, subject="sent"), SeedMessage(received=ago(days=1), flags=SEEN)])
    client = alice.imap_client()
    try:
        assert client.namespace() == ((("", "/"),), None, None)
        assert "virtual/All" in {name for _f, _d, name in client.list_folders()}
    finally:
        client.logout()
    pf = PolicyFile(tmp_path, {"p": {"rules": [
        {"name": "old", "older_than": "30d", "folders": ["*"],
         "exclude_folders": ["\\Trash", "\\Junk", "\\Sent"], "action": "delete"},
    ]}})
    name = pf.add_imap(alice, ca_file=str(hidden_dovecot.ca_file),
                       virtual_prefixes=["virtual/"])
    usage = pf.usage()
    assert usage.code == 0, usage
    assert usage.account(name)["messages"] == 5  # not 10: virtual/All shows them again
    result = pf.run()
    assert result.code == 0, result
    assert {a["folder"] for a in result.account(name)["actions"]} == {"INBOX"}, result
    counts = _counts(alice)
    assert counts["Sent"] == 2 and counts["INBOX"] == 1
