"""Strict YAML loading for policy files, keeping the source line of every value.

This module owns turning a policy file into plain Python data (``dict``/``list``/
scalars) plus a line index, so that the policy layer can report a validation error as
``policy.yaml:12: ...`` instead of a bare pydantic location. It does not interpret the
data: no schema, no ``${VAR}`` expansion (the policy layer does that for path values).

How: the file is *composed* with ``yaml.SafeLoader`` into a node graph (which carries
source marks), and the Python data is then built by walking the nodes here rather than
by ``SafeLoader.construct_document``. Walking ourselves is what lets us

* record the 1-based line of every mapping key and sequence item,
* reject duplicate keys (PyYAML silently keeps the last one, which in a retention
  policy could silently drop a protection rule),
* reject non-string keys (``yes:`` is a boolean and ``1:`` an int under YAML 1.1),
* keep the original text of each scalar so errors can say ``quote it: 'No'``.

Scalars are still constructed by SafeLoader's own constructors, so values resolve
exactly as with ``yaml.safe_load`` (``No`` -> ``False``, ``1.0`` -> ``float``,
``2024-01-31`` -> ``datetime.date``).

Anchors, aliases and merge keys (``<<: *defaults``) are supported with SafeLoader
semantics: explicit keys override merged ones, and with ``<<: [*a, *b]`` the earlier
mapping wins. Aliased values are expanded into independent copies (a tree, not a
graph); self-referencing aliases are an error, and the expansion is capped so a small
file cannot expand into a huge one ("billion laughs"). Keys that come from a merge
report the line where they are written, i.e. inside the anchored mapping.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import Reader, ReaderError

_CLOADER: Any = getattr(yaml, "CSafeLoader", None)  # libyaml, where PyYAML was built with it
_NON_PRINTABLE = Reader.NON_PRINTABLE  # what SafeLoader's reader refuses

__all__ = ["Loc", "YamlDoc", "YamlError", "load_yaml", "parse_yaml"]

Loc = tuple[str | int, ...]
"""A path into the data: mapping keys (``str``) and list indexes (``int``)."""

_STD_TAG_PREFIX: Final = "tag:yaml.org,2002:"
_MAP_TAG: Final = _STD_TAG_PREFIX + "map"
_SEQ_TAG: Final = _STD_TAG_PREFIX + "seq"
_MERGE_TAG: Final = _STD_TAG_PREFIX + "merge"

# A policy file has at most a few thousand values; anything far beyond this can only
# come from alias expansion and is refused rather than built.
_MAX_VALUES = 5_000_000  # an alias bomb guard, far above a 100k-account fleet file
# Values built again through an alias (``*anchor`` and ``<<: *anchor``): a real file reuses a
# few defaults blocks, a bomb multiplies them. Measured ~350 bytes per built value, so this
# cap keeps a hostile file's reload near 100 MB, far below the 512Mi pod limit (review M7).
_MAX_EXPANDED = 250_000

# Node properties (`&anchor`, `!tag`, `!!str`, `!<verbatim>`) precede a scalar's text and
# are included in its start mark; raw_scalar() should show only what the author typed as
# the value itself.
_PROPERTIES_RE: Final = re.compile(r"(?:[&!]\S*\s+)*")

# How to name the type a non-string key was read as, for the error message.
_KIND_NAMES: Final[dict[str, str]] = {
    "bool": "a boolean",
    "int": "a number",
    "float": "a number",
    "null": "null",
    "timestamp": "a date",
    "binary": "binary data",
}


class YamlError(Exception):
    """A policy file that cannot be read as strict YAML; ``str()`` is ``path:line: message``."""

    def __init__(self, path: Path, line: int, message: str, loc: Loc = ()) -> None:
        super().__init__(path, line, message)
        self.path = path
        self.line = line
        self.message = message
        # Where in the data the problem is, when known (e.g. the duplicated key's path).
        self.loc = loc

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass(frozen=True)
class YamlDoc:
    """A loaded policy file: the plain data plus where each value came from."""

    path: Path
    data: dict[str, Any]
    # Line of the key (mapping entries) or of the item (list entries) for each location.
    _lines: dict[Loc, int] = field(repr=False)
    # Original source text of each scalar value, by location.
    _raw: dict[Loc, str] = field(repr=False)

    def line_of(self, loc: Sequence[str | int]) -> int:
        """1-based line of the key or list item at ``loc``.

        If ``loc`` does not exist (a missing key, or trailing parts such as pydantic's
        union tags), the line of the deepest existing ancestor is returned; for the
        root, line 1.
        """
        path = tuple(loc)
        while path:
            line = self._lines.get(path)
            if line is not None:
                return line
            path = path[:-1]
        return 1

    def raw_scalar(self, loc: Sequence[str | int]) -> str | None:
        """The source text of the scalar at ``loc`` (e.g. ``'No'``), or ``None``.

        ``None`` if ``loc`` does not exist or is a mapping or list. Anchors and tags are
        not included; quotes are (so a quoted scalar is recognisable as such).
        """
        return self._raw.get(tuple(loc))


def load_yaml(path: Path) -> YamlDoc:
    """Read and parse a UTF-8 policy file (see :func:`parse_yaml`).

    ``OSError`` (missing file, permissions) is not wrapped: it is not a problem with the
    YAML and its message already names the file.
    """
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise YamlError(path, line, "file is not valid UTF-8") from None
    return parse_yaml(text, path)


def parse_yaml(text: str, path: Path) -> YamlDoc:
    """Parse policy YAML from ``text``; ``path`` is only used in error messages.

    Raises ``YamlError`` for syntax errors, an empty document, more than one document,
    a top level that is not a mapping, duplicate or non-string keys, self-referencing
    aliases, and unsupported tags.
    """
    # A leading byte order mark is not content; without it both parsers' marks index
    # ``text`` alike (libyaml would count it, PyYAML's reader skips it).
    text = text.removeprefix("\ufeff")
    fast = _compose_fast(text)
    if fast is not None:
        loader, root = fast
    else:
        try:
            # The constructor already scans the whole text for unprintable characters.
            loader = yaml.SafeLoader(text)
        except ReaderError as exc:
            raise YamlError(path, _line_at(text, exc.position), _reader_message(exc)) from None
    try:
        if fast is None:
            try:
                root = loader.get_single_node()
            except yaml.MarkedYAMLError as exc:
                raise YamlError(path, _error_line(exc), _marked_message(exc)) from None
            except RecursionError:
                raise YamlError(path, 1, "document is nested too deeply") from None

        if root is None or (isinstance(root, ScalarNode) and root.tag == _STD_TAG_PREFIX + "null"):
            # No content at all, only comments, or a bare `---`.
            raise YamlError(path, 1, "empty policy file")
        if not isinstance(root, MappingNode):
            raise YamlError(
                path,
                _line(root),
                f"the top level must be a mapping of settings (key: value), not {_kind(root)}",
            )

        builder = _Builder(text, path, loader)
        try:
            data = builder.build(root, ())
        except RecursionError:
            raise YamlError(path, 1, "document is nested too deeply") from None
    finally:
        loader.dispose()
    assert isinstance(data, dict)  # root is a MappingNode
    return YamlDoc(path=path, data=data, _lines=builder.lines, _raw=builder.raw)


def _compose_fast(text: str) -> tuple[Any, Node | None] | None:
    """The document composed by libyaml (the same nodes, marks and constructors as
    ``SafeLoader``, ~10x faster: a 10,000-account file in well under a second), or None
    when PyYAML lacks libyaml or the text has any problem: then ``SafeLoader`` composes it
    again, so every error message stays PyYAML's own."""
    if _CLOADER is None or _NON_PRINTABLE.search(text):
        return None
    loader = _CLOADER(text)
    try:
        return loader, loader.get_single_node()
    except (yaml.YAMLError, RecursionError, ValueError, TypeError):
        loader.dispose()
        return None


class _Builder:
    """Walks a composed node graph into plain data, recording lines and raw scalars."""

    def __init__(self, text: str, path: Path, loader: Any) -> None:
        self.text = text
        self.path = path
        self.loader = loader  # used only for its scalar constructors
        self.lines: dict[Loc, int] = {}
        self.raw: dict[Loc, str] = {}
        self._count = 0
        self._expanded = 0  # values built as part of an alias's second or later use
        self._built: set[int] = set()  # nodes built at least once
        self._in_alias = 0  # > 0 while building a node met before (an alias)
        # Collections currently being built / merged: meeting one again means an alias
        # refers to one of its own ancestors, which would expand forever.
        self._building: set[int] = set()
        self._merging: set[int] = set()

    def error(self, node: Node, message: str) -> YamlError:
        return YamlError(self.path, _line(node), message)

    def build(self, node: Node, loc: Loc) -> Any:
        self._count += 1
        if self._count > _MAX_VALUES:
            raise self.error(
                node, f"too many values after expanding aliases (more than {_MAX_VALUES})"
            )
        again = id(node) in self._built
        self._built.add(id(node))
        if again or self._in_alias:
            self._expanded += 1
            if self._expanded > _MAX_EXPANDED:
                raise self.error(
                    node, f"too many values after expanding aliases (more than "
                          f"{_MAX_EXPANDED} built through aliases)")
        if again:
            self._in_alias += 1
            try:
                return self._build(node, loc)
            finally:
                self._in_alias -= 1
        return self._build(node, loc)

    def _build(self, node: Node, loc: Loc) -> Any:
        if isinstance(node, ScalarNode):
            self.raw[loc] = self.source(node)
            return self.scalar(node)
        if id(node) in self._building:
            raise self.error(node, "an alias refers to a value that contains it (endless loop)")
        self._building.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                if node.tag != _SEQ_TAG:
                    raise self.error(node, f"unsupported tag {_short_tag(node.tag)}")
                items: list[Any] = []
                for index, item in enumerate(node.value):
                    self.lines[(*loc, index)] = _line(item)
                    items.append(self.build(item, (*loc, index)))
                return items
            if isinstance(node, MappingNode):
                if node.tag != _MAP_TAG:
                    raise self.error(node, f"unsupported tag {_short_tag(node.tag)}")
                mapping: dict[str, Any] = {}
                try:
                    entries = self.entries(node)
                except YamlError as e:
                    if e.message.startswith("duplicate key ") and not e.loc:
                        e.loc = (*loc, e.message[len("duplicate key "):].strip("'\""))
                    raise
                for key, (key_node, value_node) in entries.items():
                    self.lines[(*loc, key)] = _line(key_node)
                    mapping[key] = self.build(value_node, (*loc, key))
                return mapping
            raise self.error(node, f"unsupported YAML node {type(node).__name__}")
        finally:
            self._building.discard(id(node))

    def entries(self, node: MappingNode) -> dict[str, tuple[Node, Node]]:
        """Effective ``key -> (key node, value node)`` of a mapping, merge keys applied."""
        explicit: dict[str, tuple[Node, Node]] = {}
        merged: dict[str, tuple[Node, Node]] = {}
        merge_node: Node | None = None
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                if merge_node is not None:
                    raise self.error(key_node, "duplicate key '<<'")
                merge_node = key_node
                for key, entry in self.merge_sources(value_node):
                    # Earlier sources win over later ones (SafeLoader semantics).
                    merged.setdefault(key, entry)
                continue
            key = self.key(key_node)
            if key in explicit:
                raise self.error(key_node, f"duplicate key {key!r}")
            explicit[key] = (key_node, value_node)
        # Explicit keys override merged ones; merged keys come first, as with SafeLoader.
        return {**merged, **explicit}

    def merge_sources(self, value_node: Node) -> list[tuple[str, tuple[Node, Node]]]:
        sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
        result: list[tuple[str, tuple[Node, Node]]] = []
        for source in sources:
            if not isinstance(source, MappingNode):
                raise self.error(
                    source,
                    "'<<' must be followed by a mapping or a list of mappings "
                    "(usually an alias such as *defaults)",
                )
            if id(source) in self._merging:
                raise self.error(source, "'<<' merges a mapping into itself (endless loop)")
            self._merging.add(id(source))
            try:
                result.extend(self.entries(source).items())
            finally:
                self._merging.discard(id(source))
        return result

    def key(self, node: Node) -> str:
        if not isinstance(node, ScalarNode):
            raise self.error(node, f"mapping keys must be strings, not {_kind(node)}")
        value = self.scalar(node)
        if isinstance(value, str):
            return value
        raw = self.source(node)
        if not raw:
            raise self.error(node, "empty mapping key")
        kind = _KIND_NAMES.get(node.tag.removeprefix(_STD_TAG_PREFIX), f"type {node.tag}")
        raise self.error(
            node, f"key {raw} is read as {kind}, not a string; quote it: {_quote(raw)}"
        )

    def scalar(self, node: ScalarNode) -> Any:
        if node.tag == _MERGE_TAG:
            # SafeLoader resolves a plain `<<` anywhere to the merge tag and then fails
            # with an obscure "could not determine a constructor" error.
            raise self.error(node, "'<<' is only allowed as a merge key; quote it: '<<'")
        if node.tag not in self.loader.yaml_constructors:
            # Checked here for a clean message; SafeLoader would say "could not determine
            # a constructor for the tag ...".
            raise self.error(node, f"unsupported tag {_short_tag(node.tag)}")
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            raise YamlError(self.path, _error_line(exc, node), _marked_message(exc)) from None
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # SafeLoader's scalar constructors fail with plain exceptions on values that
            # match a resolver but are not valid, e.g. the date `2024-13-01` or `!!int x`.
            tag = node.tag.removeprefix(_STD_TAG_PREFIX)
            # datetime's own messages ("month must be in 1..12") help; int()'s and
            # float()'s ("invalid literal for int() with base 10") do not.
            detail = f": {exc}" if tag == "timestamp" and isinstance(exc, ValueError) else ""
            kind = _KIND_NAMES.get(tag, _short_tag(node.tag))
            raise self.error(
                node, f"cannot read {self.source(node)} as {kind}{detail}; quote it if it is text"
            ) from None

    def source(self, node: Node) -> str:
        """The scalar as written in the file, without anchor/tag properties."""
        text = self.text[node.start_mark.index : node.end_mark.index]
        return _PROPERTIES_RE.sub("", text, count=1).rstrip()


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _line_at(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1


def _kind(node: Node) -> str:
    if isinstance(node, SequenceNode):
        return "a list"
    if isinstance(node, MappingNode):
        return "a mapping"
    return "a single value"


def _short_tag(tag: str) -> str:
    if tag.startswith(_STD_TAG_PREFIX):
        return "!!" + tag.removeprefix(_STD_TAG_PREFIX)
    return tag


def _quote(text: str) -> str:
    # YAML single-quoted style: the only escape is '' for a quote.
    return "'" + text.replace("'", "''") + "'"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _error_line(exc: yaml.MarkedYAMLError, node: Node | None = None) -> int:
    mark = exc.problem_mark or exc.context_mark
    if mark is not None:
        return mark.line + 1
    return _line(node) if node is not None else 1


def _marked_message(exc: yaml.MarkedYAMLError) -> str:
    """One line from a PyYAML error, without its multi-line source snippets."""
    if exc.context == "expected a single document in the stream":
        return "more than one YAML document ('---'); a policy file holds exactly one"
    problem = _one_line(exc.problem or "")
    if not exc.context:
        return problem or "invalid YAML"
    context = _one_line(exc.context)
    if exc.context_mark is not None and exc.context_mark.line != _error_line(exc) - 1:
        context += f" on line {exc.context_mark.line + 1}"
    return f"{context}: {problem}" if problem else context


def _reader_message(exc: ReaderError) -> str:
    if isinstance(exc.character, int):
        return f"unacceptable character #x{exc.character:04x}: {exc.reason}"
    return str(exc.reason)
