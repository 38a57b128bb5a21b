"""Unit tests for retention.config.yamlsource: strict YAML loading with line numbers."""

import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from retention.config import yamlsource
from retention.config.yamlsource import YamlDoc, YamlError, load_yaml, parse_yaml

PATH = Path("policy.yaml")


def load(text: str) -> YamlDoc:
    return parse_yaml(text, PATH)


def error_of(text: str) -> YamlError:
    with pytest.raises(YamlError) as exc:
        load(text)
    return exc.value


# -------------------------------------------------------------------------- YamlError


def test_yaml_error_attributes_and_str() -> None:
    err = YamlError(Path("/etc/retention/policy.yaml"), 12, "duplicate key 'x'")
    assert err.path == Path("/etc/retention/policy.yaml")
    assert err.line == 12
    assert err.message == "duplicate key 'x'"
    assert str(err) == "/etc/retention/policy.yaml:12: duplicate key 'x'"
    assert isinstance(err, Exception)


# ------------------------------------------------------------------------------ data

POLICY = """\
# Retention policy
version: 1
defaults:
  older_than: 30d
accounts:
  - name: alice
    folders:
      - INBOX
      - No
      - 'No'
    limit: 2GiB

  - name: bob
    enabled: On
"""


def test_data_is_plain_python() -> None:
    doc = load(POLICY)
    assert doc.data == {
        "version": 1,
        "defaults": {"older_than": "30d"},
        "accounts": [
            {"name": "alice", "folders": ["INBOX", False, "No"], "limit": "2GiB"},
            {"name": "bob", "enabled": True},
        ],
    }
    assert type(doc.data) is dict
    assert type(doc.data["accounts"]) is list
    assert type(doc.data["accounts"][0]) is dict
    assert doc.path == PATH


@pytest.mark.parametrize(
    ("scalar", "expected"),
    [
        ("No", False),
        ("no", False),
        ("off", False),
        ("On", True),
        ("yes", True),
        ("true", True),
        ("'No'", "No"),
        ('"yes"', "yes"),
        ("1", 1),
        ("0x10", 16),
        ("1_000", 1000),
        ("1.0", 1.0),
        ("1e3", "1e3"),  # YAML 1.1 needs a dot for floats; SafeLoader keeps this a str
        ("~", None),
        ("null", None),
        ("", None),
        ("30d", "30d"),
        ("85%", "85%"),
        ("2024-01-31", datetime.date(2024, 1, 31)),
        ("!!str 1", "1"),
        ("!!str No", "No"),
        ("!!binary aGVsbG8=", b"hello"),
        ("[a, 1]", ["a", 1]),
        ("{a: 1}", {"a": 1}),
        ("|\n  line 1\n  line 2", "line 1\nline 2\n"),
    ],
)
def test_scalars_resolve_like_safe_load(scalar: str, expected: Any) -> None:
    text = f"value: {scalar}\n"
    assert load(text).data == {"value": expected}
    assert load(text).data == yaml.safe_load(text)


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp"))),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(min_size=1, max_size=8), children, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_matches_safe_load_for_dumped_data(value: Any) -> None:
    text = yaml.safe_dump({"root": value}, allow_unicode=True)
    assert load(text).data == yaml.safe_load(text)


def test_aliases_are_expanded_into_independent_copies() -> None:
    doc = load("a: &x [1, 2]\nb: *x\n")
    assert doc.data == {"a": [1, 2], "b": [1, 2]}
    doc.data["a"].append(3)
    assert doc.data["b"] == [1, 2]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  y: 3\n",
            {"base": {"x": 1, "y": 2}, "c": {"x": 1, "y": 3}},
        ),
        (
            # With a list of mappings the earlier one wins.
            "a: &a {x: 1}\nb: &b {x: 2, z: 3}\nc:\n  <<: [*a, *b]\n",
            {"a": {"x": 1}, "b": {"x": 2, "z": 3}, "c": {"x": 1, "z": 3}},
        ),
        (
            # An explicit key written before the merge key still wins.
            "a: &a {x: 1}\nc:\n  x: 9\n  <<: *a\n",
            {"a": {"x": 1}, "c": {"x": 9}},
        ),
        (
            # Merges are transitive.
            "a: &a {x: 1}\nb: &b {<<: *a, y: 2}\nc: {<<: *b, z: 3}\n",
            {"a": {"x": 1}, "b": {"x": 1, "y": 2}, "c": {"x": 1, "y": 2, "z": 3}},
        ),
        (
            # Merging an ancestor is fine when the key leading back here is overridden.
            "a: &a {x: 1, b: {<<: *a, b: 2}}\n",
            {"a": {"x": 1, "b": {"x": 1, "b": 2}}},
        ),
        (
            "defaults: &d\n  older_than: 30d\nrules:\n  - <<: *d\n    action: delete\n",
            {
                "defaults": {"older_than": "30d"},
                "rules": [{"older_than": "30d", "action": "delete"}],
            },
        ),
    ],
)
def test_merge_keys_follow_safe_loader(text: str, expected: dict[str, Any]) -> None:
    assert load(text).data == expected
    assert yaml.safe_load(text) == expected


def test_byte_order_mark_is_ignored() -> None:
    doc = load("\ufeffa: 1\nb: No\n")
    assert doc.data == {"a": 1, "b": False}
    assert doc.line_of(("b",)) == 2
    assert doc.raw_scalar(("b",)) == "No"


def test_crlf_line_endings() -> None:
    doc = load("a: 1\r\nb:\r\n  - x\r\n")
    assert doc.data == {"a": 1, "b": ["x"]}
    assert doc.line_of(("b", 0)) == 3


# -------------------------------------------------------------------------- line_of


@pytest.mark.parametrize(
    ("loc", "line"),
    [
        ((), 1),
        (("version",), 2),
        (("defaults",), 3),
        (("defaults", "older_than"), 4),
        (("accounts",), 5),
        (("accounts", 0), 6),
        (("accounts", 0, "name"), 6),
        (("accounts", 0, "folders"), 7),
        (("accounts", 0, "folders", 0), 8),
        (("accounts", 0, "folders", 2), 10),
        (("accounts", 0, "limit"), 11),
        (("accounts", 1), 13),
        (("accounts", 1, "enabled"), 14),
        # Missing keys: the parent key's line; at the top level, line 1.
        (("missing",), 1),
        (("defaults", "missing"), 3),
        (("accounts", 1, "missing"), 13),
        (("accounts", 5), 5),
        (("accounts", 0, "folders", 9), 7),
        # Trailing parts that are not data (pydantic union tags etc.) are ignored.
        (("accounts", 0, "limit", "function-after[...]"), 11),
        (("accounts", 0, "folders", 1, "str"), 9),
        # A list index given as a string does not match a list item.
        (("accounts", "0"), 5),
    ],
)
def test_line_of(loc: tuple[str | int, ...], line: int) -> None:
    assert load(POLICY).line_of(loc) == line


def test_line_of_accepts_lists() -> None:
    assert load(POLICY).line_of(["accounts", 0, "name"]) == 6


def test_line_of_with_aliases_and_merges() -> None:
    doc = load(
        "defaults: &d\n"  # 1
        "  older_than: 30d\n"  # 2
        "folders: &f\n"  # 3
        "  - INBOX\n"  # 4
        "rules:\n"  # 5
        "  - <<: *d\n"  # 6
        "    action: delete\n"  # 7
        "    folders: *f\n"  # 8
    )
    assert doc.line_of(("rules", 0)) == 6
    assert doc.line_of(("rules", 0, "action")) == 7
    # A merged key is reported where it is written, inside the anchored mapping.
    assert doc.line_of(("rules", 0, "older_than")) == 2
    # The key of an aliased value is where the alias is used; its items where defined.
    assert doc.line_of(("rules", 0, "folders")) == 8
    assert doc.line_of(("rules", 0, "folders", 0)) == 4


def test_line_of_after_leading_comments() -> None:
    doc = load("# comment\n\n# another\nkey: value\n")
    assert doc.line_of(("key",)) == 4
    assert doc.line_of(("missing",)) == 1


# ----------------------------------------------------------------------- raw_scalar


@pytest.mark.parametrize(
    ("loc", "raw"),
    [
        (("version",), "1"),
        (("defaults", "older_than"), "30d"),
        (("accounts", 0, "folders", 1), "No"),
        (("accounts", 0, "folders", 2), "'No'"),
        (("accounts", 1, "enabled"), "On"),
        # Not scalars, or not present.
        (("defaults",), None),
        (("accounts",), None),
        (("accounts", 0), None),
        (("missing",), None),
        ((), None),
    ],
)
def test_raw_scalar(loc: tuple[str | int, ...], raw: str | None) -> None:
    assert load(POLICY).raw_scalar(loc) == raw


@pytest.mark.parametrize(
    ("value", "raw"),
    [
        ("No", "No"),
        ("&anchor No", "No"),
        ("!!str No", "No"),
        ("&a !!str No", "No"),
        ('"quoted"', '"quoted"'),
        ("'it''s'", "'it''s'"),
        ("1.0  # comment", "1.0"),
        ("", ""),
        ("[No, Off]", None),
    ],
)
def test_raw_scalar_forms(value: str, raw: str | None) -> None:
    assert load(f"key: {value}\n").raw_scalar(("key",)) == raw


def test_raw_scalar_through_alias_is_the_anchored_text() -> None:
    doc = load("a: &x No\nb: *x\n")
    assert doc.raw_scalar(("b",)) == "No"


def test_raw_scalar_flow_items() -> None:
    doc = load("folders: [No, 'Off', 2024-01-01]\n")
    assert [doc.raw_scalar(("folders", i)) for i in range(3)] == ["No", "'Off'", "2024-01-01"]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        # Empty documents and the shape of the top level.
        ("", 1, "empty policy file"),
        ("\n\n", 1, "empty policy file"),
        ("# only a comment\n", 1, "empty policy file"),
        ("---\n", 1, "empty policy file"),
        ("~\n", 1, "empty policy file"),
        ("- a\n- b\n", 1, "the top level must be a mapping of settings (key: value), not a list"),
        (
            "# c\nhello\n",
            2,
            "the top level must be a mapping of settings (key: value), not a single value",
        ),
        (
            "a: 1\n---\nb: 2\n",
            2,
            "more than one YAML document ('---'); a policy file holds exactly one",
        ),
        # Duplicate keys, at any depth, reported at the second occurrence.
        ("a: 1\nb: 2\na: 3\n", 3, "duplicate key 'a'"),
        ("a: 1\n'a': 2\n", 2, "duplicate key 'a'"),
        ("x:\n  - k: 1\n    j: 2\n    k: 3\n", 4, "duplicate key 'k'"),
        ("x: {a: 1, a: 2}\n", 1, "duplicate key 'a'"),
        ("d: &d {a: 1}\nx:\n  <<: *d\n  <<: *d\n", 4, "duplicate key '<<'"),
        # Keys that are not strings.
        ("1: x\n", 1, "key 1 is read as a number, not a string; quote it: '1'"),
        ("a:\n  yes: x\n", 2, "key yes is read as a boolean, not a string; quote it: 'yes'"),
        ("No: x\n", 1, "key No is read as a boolean, not a string; quote it: 'No'"),
        ("1.5: x\n", 1, "key 1.5 is read as a number, not a string; quote it: '1.5'"),
        ("~: x\n", 1, "key ~ is read as null, not a string; quote it: '~'"),
        ("null: x\n", 1, "key null is read as null, not a string; quote it: 'null'"),
        (
            "2024-01-01: x\n",
            1,
            "key 2024-01-01 is read as a date, not a string; quote it: '2024-01-01'",
        ),
        ("? \n: x\n", 1, "empty mapping key"),
        ("? [a]\n: x\n", 1, "mapping keys must be strings, not a list"),
        ("? {a: 1}\n: x\n", 1, "mapping keys must be strings, not a mapping"),
        # Syntax errors: one clean line, no snippet.
        ("a: 1\n b: 2\n", 2, "mapping values are not allowed here"),
        ("a: b: c\n", 1, "mapping values are not allowed here"),
        (
            "a: [1, 2\nb: 3\n",
            2,
            "while parsing a flow sequence on line 1: expected ',' or ']', but got ':'",
        ),
        (
            "a:\n\tb: 1\n",
            2,
            "while scanning for the next token: found character '\\t' that cannot start any token",
        ),
        (
            "a: 'unterminated\n",
            2,
            "while scanning a quoted scalar on line 1: found unexpected end of stream",
        ),
        (
            "a: b\n\nc: d\x01\n",
            3,
            "unacceptable character #x0001: special characters are not allowed",
        ),
        # Anchors, aliases and merges.
        ("a: *nope\n", 1, "found undefined alias 'nope'"),
        (
            "a: &x 1\nb: &x 2\n",
            2,
            "found duplicate anchor 'x'; first occurrence on line 1: second occurrence",
        ),
        ("a: &x [*x]\n", 1, "an alias refers to a value that contains it (endless loop)"),
        ("a: &x {b: *x}\n", 1, "an alias refers to a value that contains it (endless loop)"),
        ("a: &a\n  <<: *a\n", 1, "'<<' merges a mapping into itself (endless loop)"),
        (
            "c:\n  <<: 1\n",
            2,
            "'<<' must be followed by a mapping or a list of mappings "
            "(usually an alias such as *defaults)",
        ),
        (
            "a: &a [1]\nc:\n  <<: [*a]\n",
            1,
            "'<<' must be followed by a mapping or a list of mappings "
            "(usually an alias such as *defaults)",
        ),
        ("a: <<\n", 1, "'<<' is only allowed as a merge key; quote it: '<<'"),
        # Tags.
        ("a: !foo x\n", 1, "unsupported tag !foo"),
        ("a: !!python/name:os.system x\n", 1, "unsupported tag !!python/name:os.system"),
        ("a: !!set {x, y}\n", 1, "unsupported tag !!set"),
        ("a: !!omap [b: 1]\n", 1, "unsupported tag !!omap"),
        ("a: !!int x\n", 1, "cannot read x as a number; quote it if it is text"),
        ("a: !!bool maybe\n", 1, "cannot read maybe as a boolean; quote it if it is text"),
        (
            "a: 2024-13-45\n",
            1,
            "cannot read 2024-13-45 as a date: month must be in 1..12; quote it if it is text",
        ),
    ],
)
def test_errors(text: str, line: int, message: str) -> None:
    err = error_of(text)
    assert (err.line, err.message) == (line, message)
    assert err.path == PATH
    assert str(err) == f"policy.yaml:{line}: {message}"


def test_alias_expansion_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    # The real bound is far higher (a fleet file is large); the mechanism is the same.
    monkeypatch.setattr(yamlsource, "_MAX_VALUES", 100_000)
    levels = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for i, name in enumerate("bcdef"):
        prev = "abcdef"[i]
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    err = error_of("\n".join(levels) + "\n")
    assert err.message == "too many values after expanding aliases (more than 100000)"


@pytest.mark.parametrize(
    "text",
    [
        "a: " + "[" * 5000 + "]" * 5000 + "\n",
        "".join("  " * i + f"k{i}:\n" for i in range(2000)),
    ],
)
def test_deep_nesting_is_an_error_not_a_crash(text: str) -> None:
    err = error_of(text)
    assert (err.line, err.message) == (1, "document is nested too deeply")


@given(st.text(max_size=60))
def test_arbitrary_text_raises_only_yaml_error(text: str) -> None:
    try:
        doc = load(text)
    except YamlError as err:
        assert err.line >= 1
        assert "\n" not in err.message
        assert err.message
    else:
        assert isinstance(doc.data, dict)


# ------------------------------------------------------------------------- load_yaml


def test_load_yaml_reads_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("a: 1\nb:\n  c: No\n", encoding="utf-8")
    doc = load_yaml(path)
    assert doc.data == {"a": 1, "b": {"c": False}}
    assert doc.path == path
    assert doc.line_of(("b", "c")) == 3


def test_load_yaml_utf8_content(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("folders:\n  - Entwürfe\n  - 送信済み\nx: No\n", encoding="utf-8")
    doc = load_yaml(path)
    assert doc.data["folders"] == ["Entwürfe", "送信済み"]
    assert doc.raw_scalar(("x",)) == "No"


def test_load_yaml_errors_carry_the_path(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("a: 1\na: 2\n", encoding="utf-8")
    with pytest.raises(YamlError) as exc:
        load_yaml(path)
    assert str(exc.value) == f"{path}:2: duplicate key 'a'"


def test_load_yaml_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_bytes(b"a: 1\nb: 2\nc: caf\xe9\n")
    with pytest.raises(YamlError) as exc:
        load_yaml(path)
    assert (exc.value.line, exc.value.message) == (3, "file is not valid UTF-8")


def test_load_yaml_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_bytes(b"")
    with pytest.raises(YamlError) as exc:
        load_yaml(path)
    assert (exc.value.line, exc.value.message) == (1, "empty policy file")


def test_load_yaml_missing_file_is_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_yaml(tmp_path / "nope.yaml")


@pytest.mark.skipif(yamlsource._CLOADER is None, reason="PyYAML built without libyaml")
def test_libyaml_composes_exactly_what_safeloader_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path (libyaml) gives the same data, lines and raw scalars as SafeLoader."""
    text = ("\ufeffk: '日本'\na: 'é漢字😀'\nb: No  # x\nc:\n  - {d: 1.5, e: ~}\n  - &x [1, 2]\n"
            "f: *x\nbase: &b {p: 1}\nm:\n  <<: *b\n  q: 2\ng: |\n  ü block\n  x\n")
    fast = yamlsource.parse_yaml(text, Path("p.yaml"))
    monkeypatch.setattr(yamlsource, "_CLOADER", None)
    slow = yamlsource.parse_yaml(text, Path("p.yaml"))
    assert (fast.data, fast._lines, fast._raw) == (slow.data, slow._lines, slow._raw)
    assert fast.raw_scalar(("b",)) == "No" and fast.line_of(("m", "q")) == 11
