"""Pipelined usage commands (issue 10): one write, replies read back by tag and by name.

``imap.pipeline`` is checked on imaplib itself over canned server bytes (``Scripted``):
the data it files under each response name must be what imaplib's own reader keeps in
``untagged_responses`` for the same bytes (literals included), unsolicited responses
change nothing, a NO is one command's answer, and BYE or EOF abort. ``ImapSession.usage``
is then checked on the same canned server for every fallback it had before pipelining
(the real-server behaviour is in tests/integration/test_usage_roundtrips.py and the
namespace tests); ``greeting`` for the CAPABILITY round trip it saves.
"""

from __future__ import annotations

import imaplib
import io
import logging
import re
from typing import Any

import pytest

from retention.adapters.imap.greeting import _GreetingCapabilities
from retention.adapters.imap.pipeline import Command, pipeline
from retention.adapters.imap.session import ImapSession
from retention.errors import ConnectError, Throttled

QUOTA = Command(b"GETQUOTAROOT INBOX", ("QUOTAROOT", "QUOTA"))
NAMESPACE = Command(b"NAMESPACE", ("NAMESPACE",))
LIST_STATUS = Command(b'LIST "" "*" RETURN (STATUS (MESSAGES))', ("STATUS",))


class Scripted(imaplib.IMAP4):
    """imaplib on canned server bytes, logged in already; tags are T0, T1, ...; what the
    client sends is kept in ``sent`` (one entry per write)."""

    def __init__(self, server: bytes) -> None:
        self._server = server
        self.sent: list[bytes] = []
        super().__init__()

    def open(self, host: str = "", port: int = 143, timeout: float | None = None) -> None:
        self.file = io.BytesIO(self._server)
        self.sock = self

    def sendall(self, data: bytes) -> None:
        self.sent.append(bytes(data))

    def _connect(self) -> None:
        self.tagpre = b"T"
        self.tagre = re.compile(rb"(?P<tag>T\d+) (?P<type>[A-Z]+) (?P<data>.*)", re.ASCII)
        self.state = "AUTH"
        self._cmd_log_len, self._cmd_log_idx, self._cmd_log = 10, 0, {}

    def shutdown(self) -> None:
        pass

    def left(self) -> bytes:
        """What the client has not read of the server's bytes."""
        return self.file.read()


# -- the reader ---------------------------------------------------------------------

STATUS_REPLY = (
    b'* LIST (\\HasNoChildren) "/" INBOX\r\n'
    b"* STATUS INBOX (MESSAGES 3)\r\n"
    b'* LIST (\\HasNoChildren) "/" {16}\r\nLists/&ZeVnLIqe-\r\n'
    b"* STATUS {16}\r\nLists/&ZeVnLIqe- (MESSAGES 2)\r\n"
    b'* STATUS "Sent \\"old\\"" (MESSAGES 1)\r\n'
)


def test_one_write_and_every_reply_in_command_order() -> None:
    server = (b'* QUOTAROOT INBOX "User quota"\r\n'
              b'* QUOTA "User quota" (STORAGE 10 512)\r\nT0 OK Getquotaroot completed.\r\n'
              b'* NAMESPACE (("" "/")) (("shared/" "/")) NIL\r\nT1 OK Namespace completed.\r\n'
              + STATUS_REPLY + b"T2 OK List completed.\r\n")
    imap = Scripted(server)
    quota, spaces, listed = pipeline(imap, [QUOTA, NAMESPACE, LIST_STATUS])
    assert imap.sent == [b"T0 GETQUOTAROOT INBOX\r\nT1 NAMESPACE\r\n"
                         b'T2 LIST "" "*" RETURN (STATUS (MESSAGES))\r\n']
    assert (quota.status, quota.text, quota.ok) == ("OK", "Getquotaroot completed.", True)
    assert quota.data == {"QUOTAROOT": [b'INBOX "User quota"'],
                          "QUOTA": [b'"User quota" (STORAGE 10 512)']}
    assert spaces.data == {"NAMESPACE": [b'(("" "/")) (("shared/" "/")) NIL']}
    assert listed.data == {"STATUS": [
        b"INBOX (MESSAGES 3)", (b"{16}", b"Lists/&ZeVnLIqe-"), b" (MESSAGES 2)",
        b'"Sent \\"old\\"" (MESSAGES 1)']}
    assert imap.left() == b""
    assert not imap.tagged_commands  # nothing left for imaplib's reader to wait for


@pytest.mark.parametrize("name, command, reply", [
    ("STATUS", LIST_STATUS, STATUS_REPLY),
    ("QUOTA", QUOTA, b'* QUOTA {10}\r\nUser quota (STORAGE 10 512 MESSAGE 3 100)\r\n'),
    ("NAMESPACE", NAMESPACE, b'* NAMESPACE (({5}\r\nINBOX "."))  NIL NIL\r\n'),
])
def test_data_is_what_imaplib_keeps_for_the_same_bytes(
        name: str, command: Command, reply: bytes) -> None:
    done = b"T0 OK done\r\n"
    ours = pipeline(Scripted(reply + done), [command])[0].data[name]
    theirs = Scripted(reply + done)
    typ, _ = theirs._simple_command(*command.text.decode().split(" ", 1))
    assert typ == "OK"
    assert ours == theirs.untagged_responses[name]


def test_replies_out_of_order_and_unsolicited_responses_in_between() -> None:
    server = (b"* OK [ALERT] maintenance at noon\r\n"
              b"* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n"
              b"* 3 EXISTS\r\n"
              b"* CAPABILITY IMAP4rev1 X-INJECTED\r\n"
              b"T1 OK Namespace completed.\r\n"
              b"* QUOTA \"\" (STORAGE 1 2)\r\n"
              b"T9 OK not ours\r\n"
              b"* FLAGS {3}\r\nabc\r\n"  # a literal in a response nobody asked for
              b"T0 OK Getquotaroot completed.\r\n"
              b"* 4 EXISTS\r\n")
    imap = Scripted(server)
    quota, spaces = pipeline(imap, [QUOTA, NAMESPACE])
    assert quota.data == {"QUOTA": [b'"" (STORAGE 1 2)']}
    assert spaces.data == {"NAMESPACE": [b'(("" "/")) NIL NIL']}
    assert imap.left() == b"* 4 EXISTS\r\n"  # read up to the last completion, no further


def test_a_no_is_one_commands_answer_and_the_rest_is_still_read() -> None:
    server = (b"T0 NO [NOPERM] Quota not permitted\r\n"
              b"* NAMESPACE ((\"\" \"/\")) NIL NIL\r\nT1 OK done\r\n"
              + STATUS_REPLY + b"T2 BAD [UNAVAILABLE] try later\r\nT3 OK next\r\n")
    imap = Scripted(server)
    quota, spaces, listed = pipeline(imap, [QUOTA, NAMESPACE, LIST_STATUS])
    assert (quota.status, quota.text, quota.ok) == ("NO", "[NOPERM] Quota not permitted", False)
    assert spaces.ok and spaces.data
    assert (listed.status, listed.text) == ("BAD", "[UNAVAILABLE] try later")
    assert imap.left() == b"T3 OK next\r\n"  # in step for the next command


@pytest.mark.parametrize("server, words", [
    (b"* QUOTA \"\" (STORAGE 1 2)\r\n* BYE [UNAVAILABLE] going down\r\nT0 OK done\r\n",
     "[UNAVAILABLE] going down"),
    (b"* QUOTA \"\" (STORAGE 1 2)\r\nT0 OK done\r\n", "EOF"),
    (b"* STATUS {12}\r\nLists", "EOF in a literal"),
    (b"* QUOTA \"\" (STORAGE 1", "unterminated line"),
])
def test_bye_or_eof_midway_aborts(server: bytes, words: str) -> None:
    with pytest.raises(imaplib.IMAP4.abort, match=re.escape(words)):
        pipeline(Scripted(server), [QUOTA, LIST_STATUS])


def test_two_commands_answered_by_one_response_name_are_refused() -> None:
    imap = Scripted(b"")
    with pytest.raises(ValueError, match="STATUS"):
        pipeline(imap, [LIST_STATUS, Command(b"STATUS INBOX (MESSAGES)", ("STATUS",))])
    assert imap.sent == []


# -- ImapSession.usage on the canned server -------------------------------------------

CAPS = ("IMAP4REV1", "QUOTA", "NAMESPACE", "LIST-STATUS", "STATUS=SIZE")
FOLDERS = [((b"\\HasNoChildren",), "/", "INBOX"), ((b"\\HasNoChildren",), "/", "Lists/日本語"),
           ((b"\\HasChildren",), "/", "shared/bob"), ((b"\\Noselect",), "/", "shared")]
SIZES = {"INBOX": (300, 3), "Lists/日本語": (200, 2), "shared/bob": (5000, 50)}
GOOD_QUOTA = b'* QUOTAROOT INBOX "User quota"\r\n* QUOTA "User quota" (STORAGE 10 512)\r\n'
SHARED_NS = b'* NAMESPACE (("" "/")) (("shared/" "/")) NIL\r\n'
LISTED = (b"* STATUS INBOX (MESSAGES 3)\r\n"
          b"* STATUS {16}\r\nLists/&ZeVnLIqe- (MESSAGES 2)\r\n"
          b'* LIST () "/" "shared/bob"\r\n* STATUS "shared/bob" (MESSAGES 50)\r\n')


class FakeClient:
    """What ImapSession asks of imapclient, beyond the scripted imaplib connection."""

    def __init__(self, server: bytes, caps: tuple[str, ...] = CAPS) -> None:
        self._imap = Scripted(server)
        self.caps = caps
        self.calls: list[str] = []

    def capabilities(self) -> tuple[bytes, ...]:
        return tuple(c.encode() for c in self.caps)

    def list_folders(self) -> list[Any]:
        self.calls.append("LIST")
        return FOLDERS

    def namespace(self) -> Any:
        self.calls.append("NAMESPACE")
        return ((("", "/"),), (("shared/", "/"),), None)

    def folder_status(self, name: str, items: list[str]) -> dict[bytes, int]:
        self.calls.append(f"STATUS {name} {' '.join(items)}")
        size, messages = SIZES[name]
        return {b"MESSAGES": messages, b"SIZE": size}

    def logout(self) -> None:
        pass


def session(server: bytes, caps: tuple[str, ...] = CAPS) -> tuple[ImapSession, FakeClient]:
    client = FakeClient(server, caps)
    return ImapSession(client, readonly=True, label="t", timeout=5.0), client


def test_usage_is_one_write_and_counts_only_own_folders() -> None:
    s, client = session(GOOD_QUOTA + b"T0 OK done\r\n" + SHARED_NS + b"T1 OK done\r\n"
                        + LISTED + b"T2 OK done\r\n")
    usage = s.usage(None)
    assert (usage.usage_bytes, usage.limit_bytes, usage.source) == (10240, 524288, "quota")
    assert usage.messages == 5  # shared/bob's 50 are not this mailbox's (review F2)
    assert len(client._imap.sent) == 1 and client.calls == []
    assert [s.commands[c] for c in ("GETQUOTAROOT", "NAMESPACE", "LIST-STATUS")] == [1, 1, 1]


def test_quota_with_a_message_resource_needs_no_count() -> None:
    s, client = session(b'* QUOTA "" (STORAGE 10 512 MESSAGE 7 100)\r\nT0 OK done\r\n'
                        + SHARED_NS + b"T1 OK done\r\n" + LISTED + b"T2 OK done\r\n")
    assert s.usage(None).messages == 7
    assert client.calls == []


@pytest.mark.parametrize("refusal", [b"T0 NO not now\r\n", b"T0 BAD what?\r\n",
                                     b"* QUOTA \"\" (MESSAGE 1 2)\r\nT0 OK no storage\r\n"])
def test_quota_refused_or_without_storage_sums_sizes(refusal: bytes) -> None:
    s, client = session(refusal + SHARED_NS + b"T1 OK done\r\n" + LISTED + b"T2 OK done\r\n")
    usage = s.usage(None)
    assert (usage.usage_bytes, usage.limit_bytes, usage.source, usage.messages) == (
        500, None, "sum", 5)
    # The pipelined NAMESPACE reply is the one used: not asked again.
    assert client.calls == ["LIST", "STATUS INBOX MESSAGES SIZE",
                            "STATUS Lists/日本語 MESSAGES SIZE"]


def test_quota_bad_that_says_slow_down_is_throttled() -> None:
    s, _ = session(b"T0 BAD [UNAVAILABLE] slow down\r\n" + SHARED_NS + b"T1 OK done\r\n"
                   + LISTED + b"T2 OK done\r\n")
    with pytest.raises(Throttled, match="GETQUOTAROOT: throttled"):
        s.usage(None)


@pytest.mark.parametrize("refusal", [b"T2 NO [CANNOT] no\r\n", b"T2 BAD no such thing\r\n"])
def test_list_status_refused_counts_folder_by_folder(refusal: bytes) -> None:
    s, client = session(GOOD_QUOTA + b"T0 OK done\r\n" + SHARED_NS + b"T1 OK done\r\n"
                        + refusal)
    assert s.usage(None).messages == 5
    assert client.calls == ["LIST", "STATUS INBOX MESSAGES", "STATUS Lists/日本語 MESSAGES"]


def test_without_list_status_two_commands_then_folder_by_folder() -> None:
    s, client = session(GOOD_QUOTA + b"T0 OK done\r\n" + SHARED_NS + b"T1 OK done\r\n",
                        caps=("IMAP4REV1", "QUOTA", "NAMESPACE"))
    assert s.usage(None).messages == 5
    assert client._imap.sent == [b"T0 GETQUOTAROOT INBOX\r\nT1 NAMESPACE\r\n"]
    assert client.calls == ["LIST", "STATUS INBOX MESSAGES", "STATUS Lists/日本語 MESSAGES"]


def test_namespace_refused_counts_everything_as_own(caplog: pytest.LogCaptureFixture) -> None:
    s, _ = session(GOOD_QUOTA + b"T0 OK done\r\nT1 NO no namespaces here\r\n"
                   + LISTED + b"T2 OK done\r\n")
    with caplog.at_level(logging.WARNING, "retention.imap"):
        assert s.usage(None).messages == 55
    assert "NAMESPACE failed: NO no namespaces here" in caplog.text
    assert "every folder counts as the user's own" in caplog.text


def test_without_namespace_nothing_is_asked_and_everything_is_own() -> None:
    s, client = session(GOOD_QUOTA + b"T0 OK done\r\n" + LISTED + b"T1 OK done\r\n",
                        caps=("IMAP4REV1", "QUOTA", "LIST-STATUS"))
    assert s.usage(None).messages == 55
    assert client._imap.sent == [
        b'T0 GETQUOTAROOT INBOX\r\nT1 LIST "" "*" RETURN (STATUS (MESSAGES))\r\n']


def test_listed_folders_given_only_the_quota_is_asked() -> None:
    s, client = session(GOOD_QUOTA + b"T0 OK done\r\n")
    s.namespaces()  # as list_folders does (through the fake client)
    folders = s.list_folders()
    assert s.usage(folders).messages == 5
    assert client._imap.sent == [b"T0 GETQUOTAROOT INBOX\r\n"]


def test_bye_midway_is_a_lost_connection() -> None:
    s, _ = session(GOOD_QUOTA + b"T0 OK done\r\n* BYE Server shutting down.\r\n")
    with pytest.raises(ConnectError, match="connection lost during GETQUOTAROOT"
                       r" \+ NAMESPACE \+ LIST-STATUS: Server shutting down") as raised:
        s.usage(None)
    assert not isinstance(raised.value, Throttled)
    with pytest.raises(ConnectError, match="lost earlier"):
        s.usage(None)


def test_no_quota_capability_sums_without_pipelining() -> None:
    s, client = session(b"", caps=("IMAP4REV1", "NAMESPACE", "STATUS=SIZE"))
    usage = s.usage(None)
    assert (usage.usage_bytes, usage.source, usage.messages) == (500, "sum", 5)
    assert client._imap.sent == []
    assert client.calls[:2] == ["NAMESPACE", "LIST"]


# -- the greeting's capabilities ------------------------------------------------------


class Greeted(_GreetingCapabilities, imaplib.IMAP4):
    """imaplib's own _connect (greeting, then capabilities) over canned bytes."""

    def __init__(self, server: bytes) -> None:
        self._server = server
        self.sent: list[bytes] = []
        super().__init__()

    open = Scripted.open
    sendall = Scripted.sendall


def fixed_tag(monkeypatch: pytest.MonkeyPatch) -> bytes:
    monkeypatch.setattr(imaplib.random, "randint", lambda _a, _b: 4096)
    return bytes(imaplib.Int2AP(4096))


def test_greeting_capabilities_save_the_capability_round_trip(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fixed_tag(monkeypatch)
    imap = Greeted(b"* OK [CAPABILITY IMAP4rev1 LITERAL+ STARTTLS] Dovecot ready.\r\n")
    assert imap.sent == []
    assert imap.capabilities == ("IMAP4REV1", "LITERAL+", "STARTTLS")
    assert "CAPABILITY" not in imap.untagged_responses  # never taken for a post-login list


def test_without_a_greeting_list_the_server_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    tag = fixed_tag(monkeypatch)
    imap = Greeted(b"* OK Courier ready.\r\n* CAPABILITY IMAP4rev1 IDLE\r\n"
                   + tag + b"0 OK done\r\n")
    assert imap.sent == [tag + b"0 CAPABILITY\r\n"]
    assert imap.capabilities == ("IMAP4REV1", "IDLE")


def test_a_line_after_the_greeting_is_left_for_the_next_command(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Read with STARTTLS's answer, it is dropped by connection._forget_plaintext
    # (tests/integration/test_starttls_injection.py).
    fixed_tag(monkeypatch)
    imap = Greeted(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready.\r\n"
                   b"* CAPABILITY IMAP4rev1 X-INJECTED\r\n")
    assert imap.sent == [] and imap.capabilities == ("IMAP4REV1", "STARTTLS")
    assert imap.file.read() == b"* CAPABILITY IMAP4rev1 X-INJECTED\r\n"
