"""retention: keep IMAP and POP3 mailboxes under quota without losing mail that matters.

The architecture, from the inside out:

* ``model`` / ``plan``: frozen value types (what a mailbox holds, what we decided).
* ``policy``: the validated policy file; ``planner``: the pure decision function.
* ``adapters``: the only code that talks to a mail server.
* ``journal`` / ``archive`` / ``executor``: the only destructive code, journal first.
* ``runner``: one pass over one account; ``cli`` / ``service`` / ``metrics`` / ``report``: edges.
"""

__version__ = "0.1.0"
