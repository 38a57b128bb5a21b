"""The ``requests`` session MSAL and google-auth use: the configured CA really applies.

``requests`` lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` from the environment override
a session's ``verify`` (psf/requests#3829), so a credential's ``ca_file`` would silently
not be used wherever those are set (many containers set them). This session pins
``verify`` to the CA file when one is configured, keeps the environment's proxies, and
applies a default timeout to every request. Imported only where requests is installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests


class PinnedSession(requests.Session):
    def __init__(self, ca_file: Path | None, timeout: float) -> None:
        super().__init__()
        self._pinned = str(ca_file) if ca_file is not None else None
        self._timeout = timeout
        if self._pinned:
            self.verify = self._pinned

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any,
                                   cert: Any) -> Any:
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if self._pinned:
            settings["verify"] = self._pinned
        return settings

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self._timeout)
        return super().request(method, url, *args, **kwargs)
