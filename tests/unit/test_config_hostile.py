"""Hostile or odd policy files and arguments: exit 2 with ``FILE:LINE``, never a traceback
(issue 8: F9 at start-up and in ``check``, M1 ``${VAR}`` in archive paths, M2 ``--since``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from retention.cli import main
from retention.config.load import load_config

BASE = """\
state_dir: ./state
policies:
  p: {rules: []}
accounts:
  - {name: a, host: h, username: u, password_env: RT_PW, policy: p}
"""

HOSTILE = {
    "home of no user": ('archives: {v: {type: mbox, path: "~nosuchuser42/x.mbox"}}\n',
                        "archives.v.path", "nosuchuser42"),
    "huge timeout": ("service: {shutdown_timeout: 100000000000000000000}\n",
                     "service.shutdown_timeout", "too large"),
    "huge measure_every": ("service: {measure_every: 99999999999999999999999s}\n",
                           "service.measure_every", "too large"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
@pytest.mark.parametrize("command", ["check", "run", "serve"])
def test_hostile_file_exits_2_with_file_line(tmp_path: Path, capsys, name, command):
    extra, field, words = HOSTILE[name]
    path = tmp_path / "p.yaml"
    path.write_text(BASE + extra)
    assert main([command, "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:6: {field}: " in err and words in err, err
    assert "Traceback" not in err


def test_any_loader_failure_is_a_config_error(tmp_path: Path, monkeypatch, capsys):
    """Whatever a file provokes inside the loader, the CLI says FILE:LINE and exits 2."""
    import retention.config.load as load

    path = tmp_path / "p.yaml"
    path.write_text(BASE)

    def explode(config, p, env):  # noqa: ARG001
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(load, "_resolve", explode)
    assert main(["check", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:1: cannot load: RecursionError"), err


def test_env_var_in_archive_path_is_expanded(tmp_path: Path, monkeypatch):
    """M1: ``${VAR}`` in a path template is the environment, not a placeholder."""
    monkeypatch.setenv("RT_ARCH", str(tmp_path / "vault"))
    path = tmp_path / "p.yaml"
    path.write_text(BASE + 'archives: {v: {type: mbox, path: "${RT_ARCH}/{account}.mbox"}}\n')
    config = load_config(path)
    assert str(config.archives["v"].path) == f"{tmp_path}/vault/{{account}}.mbox"
    # An unknown placeholder is still an error, with its line.
    path.write_text(BASE + 'archives: {v: {type: mbox, path: "${RT_ARCH}/{acount}.mbox"}}\n')
    with pytest.raises(Exception, match=r"p.yaml:6: archives.v.path: .*acount"):
        load_config(path)


def test_history_since_far_past_is_a_clear_error(tmp_path: Path, capsys):
    """M2: ``--since 2700000y`` reaches before year 1: exit 2, a sentence, no traceback."""
    path = tmp_path / "p.yaml"
    path.write_text(BASE)
    assert main(["history", "-c", str(path), "--since", "2700000y"]) == 2
    err = capsys.readouterr().err
    assert "--since" in err and "before year 1" in err and "Traceback" not in err
    assert main(["history", "-c", str(path), "--since", "30d"]) == 0


def test_alias_bomb_is_refused_far_below_the_pod_memory(tmp_path: Path):
    """M7: a few hundred bytes of aliases, expanding to 10**7 values, are refused at the
    default caps with the line, and the loader's peak memory stays far below 512 MiB."""
    import subprocess
    import sys

    levels = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for i, name in enumerate("bcdefg"):
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{'abcdefg'[i]}"] * 10) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(levels) + "\n")
    script = (
        "import resource, sys\n"
        "from retention.config.yamlsource import load_yaml, YamlError\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        f"    load_yaml(__import__('pathlib').Path({str(path)!r}))\n"
        "    print('loaded')\n"
        "except YamlError as e:\n"
        "    print(e)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=600, check=True).stdout.splitlines()
    assert "too many values after expanding aliases" in out[0], out
    assert out[0].startswith(f"{path}:"), out
    assert int(out[1]) < 200, f"peak RSS grew by {out[1]} MiB"
