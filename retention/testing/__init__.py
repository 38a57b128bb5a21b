"""Test rigs shared by ``tests/``, ``bench/`` and the demo: never imported by the agent.

``dovecot`` starts a private Dovecot (IMAP, POP3, quota) on 127.0.0.1 in a temporary
directory and seeds users; ``cyrus`` a private Cyrus IMAP (an admin, users made by it,
quotas, APPEND seeding); ``faultproxy`` is the TCP proxy that injects the faults a
real server cannot produce on demand (a dropped connection, a rewritten reply).
"""
