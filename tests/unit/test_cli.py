"""The command line explains itself: help, examples, exit codes, -v/-q anywhere,
completions and a man page generated from the parser, logfmt/JSON log lines."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from retention.cli import main
from retention.cli.docs import completion, man_page
from retention.cli.parser import BY_NAME, COMMANDS, build_parser, verbosity
from retention.errors import ExitCode
from retention.service import logs


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def summaries(parser: argparse.ArgumentParser) -> dict[str, str | None]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {a.dest: a.help for a in action._choices_actions}


SUBS = subparsers(build_parser())


def test_every_command_has_its_texts() -> None:
    assert set(SUBS) == {c.name for c in COMMANDS}


@pytest.mark.parametrize("name", sorted(SUBS))
def test_each_subcommand_help_has_summary_options_examples_and_exit_codes(name: str) -> None:
    sp = SUBS[name]
    summary = summaries(build_parser())[name]
    assert summary and "\n" not in summary and len(summary) < 80, summary
    assert sp.description and len(sp.description) > len(summary)
    for action in sp._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)
        if action.option_strings and action.nargs != 0:
            assert action.metavar or action.choices, (name, action.dest)  # no --output OUTPUT
    text = sp.format_help()
    assert "examples:\n  retention " + name in text
    codes = re.findall(r"^  (\d+) +\S", text.split("exit status:")[1], re.M)
    assert codes and codes[0] == "0", text
    assert [int(c) for c in codes] == [code for code, _ in BY_NAME[name].exit_lines()]
    assert {int(c) for c in codes} <= {int(c) for c in ExitCode}


def test_top_level_help_lists_the_exit_codes() -> None:
    text = build_parser().format_help()
    for code in ExitCode:
        assert re.search(rf"^  {int(code)} ", text, re.M), code


@pytest.mark.parametrize("argv,level", [
    (["run"], 0), (["-v", "run"], 1), (["run", "-v"], 1), (["run", "-vv"], 2),
    (["-v", "run", "-vv"], 3), (["run", "-q"], -1), (["-q", "usage"], -1),
    (["check", "--verbose", "--verbose"], 2),
])
def test_verbose_and_quiet_before_or_after_the_subcommand(argv: list[str], level: int) -> None:
    assert verbosity(build_parser().parse_args(argv)) == level


def test_usage_error_is_exit_two(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["run", "--no-such-flag"])
    assert e.value.code == ExitCode.USAGE
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


# -- completion and man page ---------------------------------------------------------------


def test_bash_completion_is_valid_bash_and_knows_every_command_and_option() -> None:
    script = completion("bash")
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    for name, sp in SUBS.items():
        assert name in script
        for action in sp._actions:
            for opt in action.option_strings:
                assert opt in script, (name, opt)


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_completion(shell: str) -> None:
    script = completion(shell)
    assert "skip-locked-ok" in script and "completion" in script
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} not installed: checked as text only")
    subprocess.run([shell, "-n"], input=script, text=True, check=True)


def test_bash_completion_completes_subcommands_and_options(tmp_path) -> None:
    """Not only valid: sourced in a real bash, TAB after 'retention ru' offers run."""
    (tmp_path / "c.bash").write_text(completion("bash"))
    probe = (
        f"source {tmp_path / 'c.bash'}\n"
        "COMP_WORDS=(retention ru); COMP_CWORD=1; COMP_LINE='retention ru'; "
        "COMP_POINT=${#COMP_LINE}; _shtab_retention; echo \"${COMPREPLY[@]}\"\n"
        "COMP_WORDS=(retention run --skip); COMP_CWORD=2; COMP_LINE='retention run --skip'; "
        "COMP_POINT=${#COMP_LINE}; _shtab_retention; echo \"${COMPREPLY[@]}\"\n"
    )
    out = subprocess.run(["bash", "-c", probe], text=True, capture_output=True, check=True)
    first, second = out.stdout.splitlines()
    assert first.split() == ["run"], out
    assert "--skip-locked-ok" in second.split(), out


def _renderer() -> list[str] | None:
    if shutil.which("groff"):
        return ["groff", "-man", "-Tutf8", "-ww"]
    return None


def test_man_page_renders(tmp_path) -> None:
    page = man_page()
    assert page.startswith(".TH RETENTION")
    for section in ("NAME", "SYNOPSIS", "EXAMPLES", "EXIT STATUS", "ENVIRONMENT"):
        assert f"\n.SH {section}" in page, section
    path = tmp_path / "retention.1"
    path.write_text(page)
    cmd = _renderer()
    if cmd is None:
        if os.environ.get("CI") == "true":
            pytest.fail("groff missing under CI: scripts/install-deps.sh installs groff-base")
        pytest.skip("groff not installed")
    done = subprocess.run([*cmd, str(path)], capture_output=True, text=True, check=True)
    assert done.stderr == "", done.stderr  # -ww: every roff warning
    text = re.sub(r".\x08", "", done.stdout)
    for name in SUBS:
        assert f"retention {name}" in text
    assert "--skip-locked-ok" in text.replace("\u2010", "-")
    if shutil.which("man"):
        shown = subprocess.run(["man", "-l", str(path)], capture_output=True, text=True,
                               env={**os.environ, "MANPAGER": "cat", "PAGER": "cat"})
        assert shown.returncode == 0 and "EXIT STATUS" in shown.stdout, shown.stderr


def test_completion_and_man_commands_print(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "bash"]) == 0
    assert "_shtab_retention" in capsys.readouterr().out
    assert main(["man"]) == 0
    assert capsys.readouterr().out.startswith(".TH RETENTION")


# -- log lines -------------------------------------------------------------------------------


class Stderr:
    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def getvalue(self) -> str:
        return self.capsys.readouterr().err


@pytest.fixture
def stderr(capsys: pytest.CaptureFixture[str]) -> Iterator[Stderr]:
    """What the log handler writes (it writes to whatever sys.stderr is at the time)."""
    pkg, root = logging.getLogger("retention"), logging.getLogger()
    levels = pkg.level, root.level
    yield Stderr(capsys)
    pkg.setLevel(levels[0])
    root.setLevel(levels[1])
    logs.update_secrets(())


LINE = re.compile(r"^ts=\S+ level=(debug|info|warning|error) logger=\S+ \S+=")


def test_log_lines_are_logfmt_every_token_a_pair(stderr: Stderr) -> None:
    logs.configure_cli(1)
    log = logging.getLogger("retention.runner")
    log.info("event=account_run account=%s outcome=%s", "bob", "ok")
    log.info("account %s has a message that is not logfmt", "bob")
    log.info("%s", "x", extra={"fields": {"event": "f", "note": "two words"}})
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 3 and all(LINE.match(line) for line in lines), lines
    assert lines[0].endswith(" event=account_run account=bob outcome=ok")
    assert lines[1].endswith(' msg="account bob has a message that is not logfmt"')
    assert lines[2].endswith(' event=f note="two words"')


def test_json_log_lines(stderr: Stderr) -> None:
    logs.configure_cli(1, "json")
    logging.getLogger("retention.runner").info("event=started port=%d note=\"a b\"", 9478)
    (line,) = stderr.getvalue().splitlines()
    doc = json.loads(line)
    assert doc["level"] == "info" and doc["logger"] == "retention.runner"
    assert doc["event"] == "started" and doc["port"] == "9478" and doc["note"] == "a b"


def test_log_lines_are_scrubbed(stderr: Stderr) -> None:
    logs.configure_cli(0)
    logs.update_secrets({"S3cret-Pw-91"})
    logging.getLogger("retention.imap").warning("server said: S3cret-Pw-91 is wrong")
    logging.getLogger("imapclient.imaplib").warning("> b'a1 LOGIN bob hunter22'")
    out = stderr.getvalue()
    assert "S3cret-Pw-91" not in out and "hunter22" not in out and out.count("\n") == 2


@pytest.mark.parametrize("v,ours,libraries", [
    (-1, logging.ERROR, logging.ERROR), (0, logging.WARNING, logging.WARNING),
    (1, logging.INFO, logging.WARNING), (2, logging.DEBUG, logging.WARNING),
    (3, logging.DEBUG, logging.DEBUG),
])
def test_vv_raises_this_package_only_vvv_every_library(
        stderr: Stderr, v: int, ours: int, libraries: int) -> None:
    logs.configure_cli(v)
    assert logging.getLogger("retention.imap").getEffectiveLevel() == ours
    assert logging.getLogger("imapclient.imaplib").getEffectiveLevel() == libraries
    assert logging.getLogger("apscheduler.scheduler").getEffectiveLevel() == libraries


def test_serve_keeps_the_command_lines_level(stderr: Stderr) -> None:
    logs.configure_cli(2)
    logs.configure("INFO", "logfmt")
    assert logging.getLogger("retention").level == logging.DEBUG
    logs.configure_cli(0)
    logs.configure("INFO", "logfmt")  # no -v/-q: the setting
    assert logging.getLogger("retention").level == logging.INFO


# -- a skipped account: its own outcome, exit 1 unless --skip-locked-ok ---------------------


def _result(name: str, status: str, skip_reason: str | None = None):
    from datetime import UTC, datetime

    from retention.result import AccountResult

    now = datetime(2026, 12, 1, tzinfo=UTC)
    return AccountResult(account=name, protocol="imap", run_id="r", dry_run=False,
                         status=status, started=now, finished=now,  # type: ignore[arg-type]
                         error="another agent is processing this account" if skip_reason
                         else None, skip_reason=skip_reason)  # type: ignore[arg-type]


@pytest.mark.parametrize("statuses,ok_flag,code", [
    ([("a", "ok", None)], False, 0),
    ([("a", "ok", None), ("b", "skipped", "locked")], False, 1),
    ([("a", "ok", None), ("b", "skipped", "locked")], True, 0),
    ([("a", "ok", None), ("b", "skipped", "recent")], False, 0),  # leases.once_within
    ([("a", "error", None), ("b", "skipped", "locked")], True, 1),
])
def test_exit_code_of_a_skipped_account(statuses, ok_flag: bool, code: int) -> None:
    from datetime import UTC, datetime

    from retention.result import RunResult

    run = RunResult(False, datetime(2026, 12, 1, tzinfo=UTC),
                    tuple(_result(*s) for s in statuses))
    assert run.exit_code_for(skip_locked_ok=ok_flag) == code
    assert run.exit_code == run.exit_code_for(skip_locked_ok=False)


def test_report_says_skipped_and_why() -> None:
    from datetime import UTC, datetime

    from retention import report
    from retention.result import RunResult

    run = RunResult(False, datetime(2026, 12, 1, tzinfo=UTC),
                    (_result("a", "ok"), _result("b", "skipped", "locked")))
    text = report.to_text(run)
    assert "== b (imap) status=skipped" in text
    assert "skipped (locked): another agent is processing this account" in text
    assert "error (" not in text and text.endswith("2 accounts, 0 failed, 1 skipped\n")
    (b,) = [a for a in json.loads(report.to_json(run))["accounts"] if a["account"] == "b"]
    assert (b["status"], b["skip_reason"], b["error_kind"]) == ("skipped", "locked", None)
