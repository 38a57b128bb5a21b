"""Account sources: where the accounts of a fleet come from besides ``accounts:``.

Each reader module streams the raw entries of one kind of source (``ldap``, ``sql``, ...)
as mappings of attribute/column name to value, and can ``probe`` its source for
``check``. Readers do the I/O only; turning entries into accounts is not theirs.
"""
