"""Refresh tokens the agent must keep: rotated ones and those from ``retention login``.

One file per credential under ``state_dir/tokens/``, mode 0600 in a 0700 directory,
replaced atomically (write, fsync, rename, fsync the directory), so a crash leaves either
the old or the new token, never half of one. A provider that rotates refresh tokens may
already have invalidated the old one, so the new one is saved before it is used.
Nothing here logs a token; ``load`` of a missing file is None.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

_SAFE = re.compile(r"[^A-Za-z0-9._@+-]")


class RefreshTokens:
    """``RefreshStore`` (``retention.auth.oauth2``) on files in ``state_dir/tokens``."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = Path(state_dir) / "tokens"

    def path(self, key: str) -> Path:
        return self.directory / (_SAFE.sub("_", key) + ".token")

    def load(self, key: str) -> str | None:
        try:
            text = self.path(key).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return text or None

    def save(self, key: str, token: str) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            self.directory.chmod(0o700)
        target = self.path(key)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, token.encode("utf-8") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        dfd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
