"""What the policy file says: the only code that reads the policy file and the environment.

``schema`` is the validated model (``Config``, ``Policy``, ``Rule``, ``Account``) with the
"effective value" rules next to the defaults they interpret; ``load`` reads a file and
turns every problem into ``FILE:LINE: field: message``; ``yamlsource`` is strict YAML with
line numbers; ``units``, ``schedule`` (cron) and ``secrets`` are the small grammars and
the one place passwords are read and redacted; ``settings`` is the service's settings,
overridden by ``RETENTION_*`` variables. Nothing here opens a network connection.
"""
