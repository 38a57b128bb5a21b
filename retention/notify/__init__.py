"""Notices to the mailbox owner: a warning before the mailbox is full, a summary of what a
run archived or deleted (and how to get it back).

Layers inside the package: ``render`` (pure: templates + figures -> ``Notice`` and its
RFC 5322 bytes), ``templates`` (reads the shipped ``en``/``ja`` templates, package data,
and an administrator's overrides), ``deliver`` (I/O: IMAP APPEND through the adapters,
SMTP through ``adapters.smtp``), ``send`` (after a pass: which notices are due, journal,
deliver; ``notify_account``). State (warning level, notice journal) is
``retention.state.notices``. Placed under ``run`` and above ``archive|state`` and
``adapters`` in the import order.
"""
