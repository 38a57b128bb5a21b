"""Readers of file sources: Dovecot passwd-files and CSV files.

Both stream the file line by line (a million users never sit in memory as text) and
expose ``line``, the line number of the entry yielded last, so that problems are
reported as ``FILE:LINE``. Passwords in a passwd-file are never read into an entry.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from pathlib import Path

from retention.config.sources import CsvSource, PasswdFileSource
from retention.errors import SourceError

_PASSWD_FIELDS = ("username", None, "uid", "gid", "gecos", "home", "shell")


def _open(path: Path, source: str) -> Iterator[str]:
    try:
        with path.open(encoding="utf-8", newline="") as f:
            yield from f
    except OSError as e:
        raise SourceError(source, "connect", f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise SourceError(source, "query", f"{path}: not UTF-8 text ({e.reason})") from None


class PasswdFile:
    """Entries of a Dovecot passwd-file: ``user:password:uid:gid:gecos:home:shell:extra``.

    Only the user field is read unless ``policy_by`` needs more: then also uid, gid,
    gecos, home, shell and each ``key=value`` of the extra fields (``userdb_quota_rule``).
    Blank lines and ``#`` comments are skipped, as Dovecot does.
    """

    def __init__(self, spec: PasswdFileSource) -> None:
        self.spec = spec
        self.line = 0
        self.full = bool(spec.attribute_names())

    def __iter__(self) -> Iterator[Mapping[str, str]]:
        full = self.full
        for n, text in enumerate(_open(self.spec.path, self.spec.name), 1):
            text = text.rstrip("\r\n")
            if not text or text.startswith("#"):
                continue
            self.line = n
            if not full:
                yield {"username": text.split(":", 1)[0]}
                continue
            parts = text.split(":", 7)
            entry = {k: v for k, v in zip(_PASSWD_FIELDS, parts, strict=False) if k}
            if len(parts) > 7:
                for item in parts[7].split():
                    key, _, value = item.partition("=")
                    entry.setdefault(key, value)
            yield entry


class CsvFile:
    """Entries of a CSV file with a header row (``username`` required, ``name`` optional)."""

    def __init__(self, spec: CsvSource) -> None:
        self.spec = spec
        self.line = 0

    def __iter__(self) -> Iterator[Mapping[str, str]]:
        reader = csv.DictReader(_open(self.spec.path, self.spec.name),
                                delimiter=self.spec.delimiter)
        try:
            header = reader.fieldnames
            if header is None:
                return  # an empty file: no accounts
            if "username" not in header:
                raise SourceError(self.spec.name, "query",
                                  f"{self.spec.path}:1: the header row has no username "
                                  f"column (columns: {', '.join(header)})")
            for row in reader:
                self.line = reader.line_num
                yield {k: (v or "").strip() for k, v in row.items() if k is not None}
        except csv.Error as e:
            raise SourceError(self.spec.name, "query",
                              f"{self.spec.path}:{reader.line_num}: {e}") from None


def probe_file(path: Path, source: str) -> None:
    """Is the file readable (``check``)?"""
    try:
        with path.open("rb") as f:
            f.read(1)
    except OSError as e:
        raise SourceError(source, "connect", f"cannot read {path}: {e.strerror or e}") from None
