"""Message bodies that need not fit in memory (review F11).

A body is ``bytes`` when it is small, or a ``Spooled`` body when it is larger than the
spool threshold: a private temporary file (mode 0600, unlinked as soon as it is created,
so nothing is left behind by a crash) that the adapters fill chunk by chunk while reading
from the server, and that the archive writers and verifiers read chunk by chunk. Its size
and SHA-256 are computed while it is written, so nobody needs the whole body at once.

The threshold and chunk size follow one setting, ``message_memory`` (default 64 MiB): the
most memory one account pass may spend on message bodies beyond its baseline. The
archive path holds a body about six times over (the fetched literal, the normalised and
escaped entry, the compressed member, the read-back), so bodies above 1/16 of it are
spooled, in-memory batches stop at 1/8 of it, and spooled bodies move in 1 MiB chunks.

This module does local file I/O only; where the spool files go is ``spool_dir`` (the
state folder's ``tmp`` when the runner sets it, else the system temporary folder).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

MiB = 1024 * 1024
DEFAULT_MESSAGE_MEMORY = 64 * MiB
CHUNK = 1 * MiB


class Limits:
    """The process-wide body memory setting and what follows from it."""

    message_memory: int = DEFAULT_MESSAGE_MEMORY
    spool_dir: Path | None = None

    @classmethod
    def spool_above(cls) -> int:
        """Bodies larger than this are spooled to a temporary file."""
        return max(64 * 1024, cls.message_memory // 16)

    @classmethod
    def batch_bytes(cls) -> int:
        """In-memory bodies one archive batch may hold."""
        return max(cls.spool_above(), cls.message_memory // 8)

    @classmethod
    def configure(cls, message_memory: int | None = None,
                  spool_dir: Path | None = None) -> None:
        if message_memory is not None:
            cls.message_memory = message_memory
        if spool_dir is not None:
            cls.spool_dir = spool_dir


class Spooled:
    """A body in a private, already-unlinked temporary file; ``len()`` is its size."""

    def __init__(self, directory: Path | None = None) -> None:
        where = directory if directory is not None else Limits.spool_dir
        if where is not None:
            where.mkdir(mode=0o700, parents=True, exist_ok=True)
        # TemporaryFile: O_TMPFILE or create+unlink at once, mode 0600.
        self._file = tempfile.TemporaryFile(dir=where)
        self._size = 0
        self._hash = hashlib.sha256()

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        self._file.write(chunk)
        self._hash.update(chunk)
        self._size += len(chunk)

    def __len__(self) -> int:
        return self._size

    def sha256(self) -> str:
        return self._hash.hexdigest()

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        self._file.flush()
        fd = self._file.fileno()
        offset = 0
        while offset < self._size:
            data = os.pread(fd, min(size, self._size - offset), offset)
            if not data:
                raise OSError(f"spool file ended at {offset} of {self._size} bytes")
            offset += len(data)
            yield data

    def head(self, n: int) -> bytes:
        self._file.flush()
        return os.pread(self._file.fileno(), n, 0)

    def tail(self, n: int) -> bytes:
        self._file.flush()
        start = max(0, self._size - n)
        return os.pread(self._file.fileno(), self._size - start, start)

    def fileno(self) -> int:
        self._file.flush()
        return self._file.fileno()

    def read_all(self) -> bytes:
        """The whole body in memory: for small tests and tools, never the archive path."""
        return b"".join(self.chunks())

    def close(self) -> None:
        self._file.close()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Spooled):
            return self is other or (len(self) == len(other) and self.sha256() == other.sha256())
        if isinstance(other, (bytes, bytearray)):
            return len(self) == len(other) and self.sha256() == hashlib.sha256(other).hexdigest()
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Spooled({self._size} bytes)"


Body = bytes | Spooled


def body_sha256(body: Body) -> str:
    return body.sha256() if isinstance(body, Spooled) else hashlib.sha256(body).hexdigest()


def body_chunks(body: Body, size: int = CHUNK) -> Iterator[bytes]:
    if isinstance(body, Spooled):
        yield from body.chunks(size)
    elif body:
        for i in range(0, len(body), size):
            yield body[i : i + size]
