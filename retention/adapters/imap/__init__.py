"""The IMAP adapter: ``ImapSession`` and the pieces it is built from.

``connection`` logs in and owns the socket (select, search, fetch, error mapping);
``actions`` holds the only IMAP commands that change a mailbox; ``session`` reads
(usage, scan, bodies, Message-IDs) and is the class the rest of the agent uses;
``fetch`` and ``wire`` are pure parsers and encoders, tested without a socket.
"""

from retention.adapters.imap.session import ImapSession

__all__ = ["ImapSession"]
