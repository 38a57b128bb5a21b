"""Importing the optional libraries a source type needs, with an error that names the extra.

The LDAP and SQL readers depend on libraries most single-host installs never need
(python-ldap builds against libldap; SQLAlchemy and psycopg are large), so they live in
the ``[ldap]`` and ``[sql]`` extras. A policy that uses such a source without its extra
gets a ``SourceError`` of kind ``config`` telling the admin what to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from retention.errors import SourceError


def require(module: str, extra: str, source: str) -> ModuleType:
    """``import module``, or a ``SourceError`` naming ``pip install 'mailbox-retention[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise SourceError(
            source,
            "config",
            f"a {extra} source needs the optional dependencies of mailbox-retention[{extra}] "
            f"(missing module {exc.name or module}); install them with "
            f"pip install 'mailbox-retention[{extra}]'",
        ) from None
