"""``retention serve``: when accounts run, and what is exported about them.

``serve`` is the scheduler (APScheduler) and the signal handling; ``pool`` bounds
concurrency per host; ``metrics`` is the Prometheus model and ``http`` serves it with
the health endpoints; ``logs`` is the one-line structured log format; ``forecast`` is
the pure fill-up projection over the usage history. Nothing here talks to a mail
server directly: accounts are run through ``retention.run``.
"""
