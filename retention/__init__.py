"""retention: keep IMAP and POP3 mailboxes under quota without losing mail that matters.

The architecture is what ``ls`` shows (ARCHITECTURE.md has the rules):

* the pure core at the top, no I/O and no clock: ``errors``, ``model`` / ``plan`` /
  ``result`` (frozen value types), ``planner`` (``plan(policy, snapshot, now) -> Plan``),
  ``folders``, ``report``; ``cli`` is the entry point;
* ``config/``: the policy file, the environment and secrets;
* ``adapters/``: the only code that talks to a mail server (``MailSession``);
* ``state/``: ``state_dir`` (journal, observations, locks);
* ``archive/``: archive copies; ``run/``: one account pass (recovery, then the executor,
  journal first): with ``archive/`` the only destructive code;
* ``service/``: ``retention serve`` (scheduler, metrics, HTTP, logs, forecast);
* ``testing/``: the rigs the tests, benchmarks and demo share.
"""

__version__ = "0.1.0"
