"""The process's ``Logins`` registry, with rotated refresh tokens kept in ``state_dir``.

``retention.auth`` sits below ``state``, so the wiring of the two lives here: the CLI,
``run_account`` and ``serve`` share this one registry (and so one token cache per
credential for the whole process).
"""

from __future__ import annotations

from retention.auth.logins import Logins
from retention.state.tokens import RefreshTokens

LOGINS = Logins(store_for=RefreshTokens)
