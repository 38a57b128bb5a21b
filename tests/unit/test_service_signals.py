"""``serve`` acts on SIGHUP/SIGTERM whatever thread the kernel delivers them to, and a
reload that fails in any way keeps the old policy (issue 8: signals, F9, F10).

The kernel may hand a process-directed signal to any thread that does not block it.
CPython runs Python-level handlers only in the main thread, the next time it executes
bytecode, so a main thread asleep in ``select()`` must be woken by the signal itself
(``signal.set_wakeup_fd``). These tests aim the signals at worker and scheduler threads
with ``signal.pthread_kill``. A watchdog stops the service by other means if a signal is
never acted on, so a regression fails the test instead of hanging it; no test asserts a
duration.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from retention.service import serve as serve_module
from retention.service.serve import RetentionService, serve
from tests.unit.test_service_unit import (  # noqa: F401 - restore_logging: a fixture
    NEVER,
    Fake,
    metric,
    restore_logging,
    write_policy,
)

DEADLINE = 60.0  # generous: a loaded 2-core machine still acts well within this


def _policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, names: list[str]) -> Path:
    # Unreachable accounts: the start-up measurement fails fast (connection refused).
    policy = write_policy(tmp_path / "p.yaml", [(n, "127.0.0.1", NEVER) for n in names],
                          state=tmp_path / "state")
    policy.write_text(policy.read_text().replace("policy: default", "policy: default, port: 1"))
    monkeypatch.setenv("RT_PW", "pw-not-used")
    monkeypatch.setenv("RETENTION_SECRETS_DIR", str(tmp_path / "none"))
    return policy


def _threads(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate()
            if t.name.startswith(prefix) and t is not threading.main_thread() and t.ident]


def _serve_with(policy: Path, script: Callable[[RetentionService, dict[str, object]], None]
                ) -> tuple[int, dict[str, object]]:
    """Run ``serve`` in this (main) thread; ``script`` runs in a helper thread."""
    seen: dict[str, object] = {"watchdog": False}

    def started(svc: RetentionService) -> None:
        def drive() -> None:
            try:
                script(svc, seen)
            finally:
                # The watchdog: if the signal was not acted on, stop by another road.
                if not done.wait(DEADLINE):
                    seen["watchdog"] = True
                    svc.request("stop")

        threading.Thread(target=drive, name="test-driver", daemon=True).start()

    done = threading.Event()
    orig = serve_module.RetentionService.finish_shutdown

    def finish(self: RetentionService, finished: bool) -> int:
        done.set()
        return orig(self, finished)

    serve_module.RetentionService.finish_shutdown = finish  # type: ignore[method-assign]
    try:
        code = serve(policy, metrics_port=0, metrics_address="127.0.0.1",
                     overrides={"jitter": 0, "concurrency": 2}, on_started=started)
    finally:
        serve_module.RetentionService.finish_shutdown = orig  # type: ignore[method-assign]
    return code, seen


def _wait(check: Callable[[], bool]) -> bool:
    stop = threading.Event()
    for _ in range(int(DEADLINE / 0.05)):
        if check():
            return True
        stop.wait(0.05)
    return False


@pytest.mark.usefixtures("restore_logging")
def test_sighup_and_sigterm_on_worker_threads_are_acted_on(tmp_path, monkeypatch):
    policy = _policy(tmp_path, monkeypatch, ["a"])
    before = signal.getsignal(signal.SIGTERM)

    def script(svc: RetentionService, seen: dict[str, object]) -> None:
        workers = _threads("retention-worker")
        assert workers, [t.name for t in threading.enumerate()]
        write_policy(policy, [("a", "127.0.0.1", NEVER), ("b", "127.0.0.1", NEVER)],
                     state=tmp_path / "state")
        signal.pthread_kill(workers[0].ident or 0, signal.SIGHUP)
        seen["reloaded"] = _wait(
            lambda: [a.name for a in svc.loaded.config.accounts] == ["a", "b"])
        # SIGTERM to another non-main thread (an APScheduler thread or the other worker).
        others = [t for t in threading.enumerate()
                  if t is not threading.main_thread() and t.name != "test-driver" and t.ident]
        target = next((t for t in others if "APScheduler" in t.name), workers[-1])
        seen["target"] = target.name
        signal.pthread_kill(target.ident or 0, signal.SIGTERM)

    code, seen = _serve_with(policy, script)
    assert seen.get("reloaded") is True, seen
    assert seen["watchdog"] is False, f"SIGTERM to {seen.get('target')} was never acted on"
    assert code == 0
    assert signal.getsignal(signal.SIGTERM) == before
    assert signal.set_wakeup_fd(-1) == -1  # serve gave the wakeup fd back


def test_a_reload_that_fails_with_any_error_keeps_the_old_policy(tmp_path, monkeypatch,
                                                                  caplog):
    """F9: not only ConfigError. The metric drops to 0, it is logged, the service lives."""
    policy = _policy(tmp_path, monkeypatch, ["a"])
    from retention.config.settings import ServiceSettings
    from retention.service.serve import load_policy

    svc = RetentionService(policy, ServiceSettings(jitter=0, measure_every="1h"),
                           run_account=Fake().run, measure_account=Fake().measure)
    try:
        svc.start(http=False)
        assert svc.reload() is True
        # Files that used to escape as RuntimeError / OverflowError from the loader.
        for bad in ('archives: {v: {type: mbox, path: "~nosuchuser42/x.mbox"}}\n',
                    "service: {shutdown_timeout: 100000000000000000000}\n"):
            policy.write_text(policy.read_text().split("archives:")[0].split("service:")[0]
                              + bad)
            with caplog.at_level(logging.ERROR, logger="retention.service"):
                assert svc.reload() is False
            assert metric(svc, "retention_config_last_reload_successful") == 0
            assert [a.name for a in svc.loaded.config.accounts] == ["a"]
        # Any other error from the loader: kept old policy too, never raised.
        monkeypatch.setattr(serve_module, "load_policy",
                            lambda *a, **kw: (_ for _ in ()).throw(MemoryError("boom")))
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="retention.service"):
            assert svc.reload() is False
        assert "event=reload_failed" in caplog.text and "MemoryError" in caplog.text
        monkeypatch.setattr(serve_module, "load_policy", load_policy)
        write_policy(policy, [("a", "127.0.0.1", NEVER)], state=tmp_path / "state")
        assert svc.reload() is True
        assert metric(svc, "retention_config_last_reload_successful") == 1
    finally:
        svc.shutdown(timeout=2)


@pytest.mark.usefixtures("restore_logging")
def test_serve_ignores_sigxfsz_in_the_main_thread(tmp_path, monkeypatch):
    """F10: set once at start-up (worker threads cannot change a disposition)."""
    policy = _policy(tmp_path, monkeypatch, ["a"])
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    try:
        code, seen = _serve_with(policy, lambda svc, seen: svc.request("stop"))
        assert code == 0
        assert signal.getsignal(signal.SIGXFSZ) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGXFSZ, previous)


@pytest.mark.parametrize(("address", "label", "warned"), [
    ("0.0.0.0", "name", True), ("127.0.0.1", "name", False), ("0.0.0.0", "hash", False)])
def test_metrics_on_every_address_warn_about_account_names(tmp_path, monkeypatch, caplog,
                                                           address, label, warned):
    """M12: the default address stays 0.0.0.0 (documented); start-up says what it exposes."""
    from retention.config.settings import ServiceSettings

    policy = _policy(tmp_path, monkeypatch, ["a"])
    svc = RetentionService(policy, ServiceSettings(jitter=0, measure_every="1h",
                                                   metrics_address=address, metrics_port=0,
                                                   account_label=label),
                           run_account=Fake().run, measure_account=Fake().measure)
    try:
        with caplog.at_level(logging.WARNING, logger="retention.service"):
            svc.start()
    finally:
        svc.shutdown(timeout=2)
    assert ("event=metrics_exposed" in caplog.text) is warned
