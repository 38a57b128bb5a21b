"""Reader of ``doveadm`` sources: the users Dovecot's userdb iteration lists.

Runs ``doveadm user '*'`` (or the command the source gives) without a shell and reads
one username per line of its output, streamed. Only userdbs that iterate can answer
(passwd, passwd-file, sql with ``iterate_query``, ldap with ``iterate_filter``, dict,
lua); ``static``, ``prefetch`` and ``checkpassword`` cannot, and neither can a
passwd-file whose path has variables: then the error says so and names the sources
that can list those users instead.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator, Mapping

from retention.config.sources import DoveadmSource
from retention.errors import SourceError

_CANNOT_ITERATE = ("iterat", "user listing", "doesn't support", "not support")


class Doveadm:
    """``{"username": line}`` for each line the command prints (see the module doc)."""

    def __init__(self, spec: DoveadmSource) -> None:
        self.spec = spec

    def __iter__(self) -> Iterator[Mapping[str, str]]:
        spec = self.spec
        cmd = " ".join(spec.command)
        with tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(  # noqa: S603 - the admin's own command, no shell
                    spec.command, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                    text=True, encoding="utf-8", errors="replace",
                )
            except OSError as e:
                raise SourceError(spec.name, "config",
                                  f"cannot run {cmd}: {e.strerror or e}") from None
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    user = line.strip()
                    if user:
                        yield {"username": user}
                rc = proc.wait(timeout=spec.timeout.total_seconds() or None)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise SourceError(spec.name, "query", f"{cmd} did not finish within "
                                  f"{spec.timeout.total_seconds():g}s") from None
            finally:
                if proc.poll() is None:  # the consumer stopped early
                    proc.kill()
                    proc.wait()
                proc.stdout.close()
            if rc != 0:
                err.seek(0)
                text = err.read().decode("utf-8", "replace").strip()
                raise SourceError(spec.name, "query", _explain(cmd, rc, text))


def _explain(cmd: str, rc: int, stderr: str) -> str:
    tail = " | ".join(stderr.splitlines()[-3:]) or "no error output"
    if any(k in stderr.lower() for k in _CANNOT_ITERATE):
        return (f"{cmd} failed: the userdb cannot list its users ({tail}). Userdbs "
                "static, prefetch and checkpassword (and passwd-files with variables in "
                "their path) do not iterate: use a passwd-file, ldap, sql or csv source")
    return f"{cmd} failed with exit code {rc}: {tail}"
