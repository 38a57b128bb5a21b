"""Streaming the mbox format for bodies larger than memory (review F11).

The same bytes as ``mbox.encode_entry``/``decode_entry``, produced and checked piece by
piece: a body is read in ``_READ``-byte chunks, split into lines (a line longer than
``_LONG_LINE`` is passed on in pieces, escaping decided at its start), written into a
``Sink`` (compressing as it goes, into memory or a spool file) and read back from the file
through a bounded decompressing reader. No function here holds a whole body.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from retention.adapters.spool import CHUNK, Body, Spooled, body_chunks
from retention.archive.base import describe_os_error, zstandard_module
from retention.errors import ArchiveError

_ESCAPE_LINE = re.compile(rb">*From ")
_UNESCAPE_LINE = re.compile(rb">+From ")


def from_line(received: datetime) -> bytes:
    stamp = time.asctime(received.astimezone(UTC).timetuple())
    return f"From MAILER-DAEMON {stamp}\n".encode("ascii")


_LONG_LINE = 4 * CHUNK  # a line longer than this is passed on in pieces
_READ = CHUNK  # bytes per read of a body or a member (tests make it tiny)


def segments(chunks: Iterator[bytes], *, normalise: bool) -> Iterator[tuple[bool, bytes]]:
    """``(starts_a_line, piece)`` of a byte stream; each piece ends with ``\\n`` unless it is
    part of a very long line. With ``normalise`` (``mbox.normalise``'s rule) CRLF becomes
    LF and a missing last newline is added; without it the bytes are passed on exactly."""
    carry = b""
    start = True
    for chunk in chunks:
        data = carry + chunk if carry else chunk
        lines = data.split(b"\n")
        carry = lines.pop()
        for line in lines:
            yield start, (line[:-1] if normalise and line.endswith(b"\r") else line) + b"\n"
            start = True
        if len(carry) > _LONG_LINE:
            # A trailing CR is kept back: its LF may be in the next chunk.
            keep = 1 if normalise and carry.endswith(b"\r") else 0
            yield start, carry[: len(carry) - keep]
            carry, start = carry[len(carry) - keep :], False
    if carry or not start:  # not start: a long last line was passed on without its end
        if normalise:
            yield start, (carry[:-1] if carry.endswith(b"\r") else carry) + b"\n"
        elif carry:
            yield start, carry


class Sink:
    """Where a member is built: memory for small batches, a spool file for big ones."""

    def __init__(self, codec: str, spool: bool) -> None:
        self.codec = codec
        self.out: Spooled | bytearray = Spooled() if spool else bytearray()
        self.pos = 0  # bytes of payload (before compression)
        self._c: Any = None
        if codec == "gzip":
            import zlib

            self._c = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: one gzip member
        elif codec == "zstd":
            zstandard = zstandard_module()

            self._c = zstandard.ZstdCompressor(level=3).compressobj()

    def write(self, data: bytes) -> None:
        self.pos += len(data)
        self._emit(self._c.compress(data) if self._c is not None else data)

    def _emit(self, data: bytes) -> None:
        if data:
            if isinstance(self.out, Spooled):
                self.out.write(data)
            else:
                self.out += data

    def finish(self) -> Body:
        if self._c is not None:
            self._emit(self._c.flush())
        return self.out if isinstance(self.out, Spooled) else bytes(self.out)


def encode_into(sink: Sink, data: Body, received: datetime) -> tuple[int, int, str]:
    """Append one entry; returns (payload offset, entry length, SHA-256 of normalise(data))."""
    start = sink.pos
    digest = hashlib.sha256()
    sink.write(from_line(received))
    for line_start, piece in segments(body_chunks(data, _READ), normalise=True):
        digest.update(piece)
        if line_start and _ESCAPE_LINE.match(piece):
            sink.write(b">")
        sink.write(piece)
    sink.write(b"\n")
    return start, sink.pos - start, digest.hexdigest()


class _Region(io.RawIOBase):
    """``length`` bytes of ``fd`` from ``offset``, as a readable stream."""

    def __init__(self, fd: int, offset: int, length: int) -> None:
        self.fd, self.pos, self.end = fd, offset, offset + length

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        n = min(len(buf), self.end - self.pos)
        if n <= 0:
            return 0
        data = os.pread(self.fd, n, self.pos)
        buf[: len(data)] = data
        self.pos += len(data)
        return len(data)


def payload_chunks(fd: int, offset: int, length: int, codec: str) -> Iterator[bytes]:
    raw = io.BufferedReader(_Region(fd, offset, length), max(_READ, 8192))
    reader: Any = raw
    if codec == "gzip":
        reader = gzip.GzipFile(fileobj=raw, mode="rb")
    elif codec == "zstd":
        zstandard = zstandard_module()

        reader = zstandard.ZstdDecompressor().stream_reader(raw)
    while True:
        data = reader.read(_READ)
        if not data:
            return
        yield data


class EntryDigest:
    """SHA-256 of ``decode_entry(entry)``, fed the entry in pieces; None if not an entry."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.head = b""  # until the From_ line is complete
        self.in_body = False
        self.held = b""  # the last byte, dropped at the end if it is the final newline
        self.bad = False

    def feed_all(self, chunks: Iterator[bytes]) -> str | None:
        def lines() -> Iterator[bytes]:
            for chunk in chunks:
                if self.in_body:
                    yield chunk
                    continue
                self.head += chunk
                nl = self.head.find(b"\n")
                if nl < 0:
                    if len(self.head) > 4096:  # no From_ line is this long
                        self.bad = True
                        return
                    continue
                if not self.head.startswith(b"From "):
                    self.bad = True
                    return
                self.in_body = True
                rest, self.head = self.head[nl + 1 :], b""
                if rest:
                    yield rest

        for line_start, piece in segments(lines(), normalise=False):
            if line_start and _UNESCAPE_LINE.match(piece):
                piece = piece[1:]
            data = self.held + piece
            self.hash.update(data[:-1])
            self.held = data[-1:]
        if self.bad or not self.in_body or self.held != b"\n":
            return None
        return self.hash.hexdigest()


def slices(chunks: Iterator[bytes], spans: list[tuple[int, int]]
           ) -> Iterator[tuple[tuple[int, int], Iterator[bytes]]]:
    """For spans sorted by offset (not overlapping), the payload bytes of each, streamed."""
    pos = 0
    pending = b""
    it = iter(chunks)

    def take(upto: int) -> Iterator[bytes]:
        nonlocal pos, pending
        while pos < upto:
            if not pending:
                pending = next(it, b"")
                if not pending:
                    return
            n = min(len(pending), upto - pos)
            piece, pending = pending[:n], pending[n:]
            pos += n
            yield piece

    for start, length in spans:
        for _ in take(start):
            pass
        yield (start, length), take(start + length)
        for _ in take(start + length):
            pass


def member_digests(path: str, offset: int, length: int, codec: str,
                    spans: list[tuple[int, int]]) -> dict[tuple[int, int], str | None]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ArchiveError(f"mbox {path}: cannot read back: {describe_os_error(e)}") from None
    out: dict[tuple[int, int], str | None] = {}
    try:
        if os.fstat(fd).st_size < offset + length:
            return {}
        chunks = payload_chunks(fd, offset, length, codec)
        for span, pieces in slices(chunks, spans):
            counted = _Counted(pieces)
            digest = EntryDigest().feed_all(iter(counted))
            out[span] = digest if counted.n == span[1] else None
    except OSError as e:
        raise ArchiveError(f"mbox {path}: cannot read back: {describe_os_error(e)}") from None
    except Exception:  # noqa: BLE001 - any decoding failure means "not a valid copy"
        return {s: None for s in spans}
    finally:
        os.close(fd)
    return out


class _Counted:
    def __init__(self, pieces: Iterator[bytes]) -> None:
        self.pieces = pieces
        self.n = 0

    def __iter__(self) -> Iterator[bytes]:
        for p in self.pieces:
            self.n += len(p)
            yield p

