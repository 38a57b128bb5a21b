"""``retention check`` for sources: each one reachable, readable, and what it yields.

Every source is probed and read (all of them, even after one fails, so that one run
of ``check`` reports every broken source), then the names are checked for duplicates
across ``accounts:`` and the sources. Problems are raised together as one
``ConfigError`` (exit 2).
"""

from __future__ import annotations

from retention.config.schema import Config
from retention.errors import ConfigError, Problem, SourceError
from retention.sources import assemble, probe_source, read_source
from retention.sources.listing import describe_source
from retention.sources.model import SourceAccounts


def check_sources(config: Config) -> tuple[Config, list[str]]:
    """(config with every account, the lines describing each source).

    Raises:
        ConfigError: a source cannot be read, or a name is listed twice.
    """
    if not config.sources:
        return config, []
    lines: list[str] = []
    lists: list[SourceAccounts] = []
    problems: list[Problem] = []
    doc = None
    if config.source is not None:
        from retention.config.yamlsource import YamlError, load_yaml

        try:
            doc = load_yaml(config.source)
        except (YamlError, OSError):
            doc = None  # it loaded a moment ago; without lines the messages still name it
    for i, spec in enumerate(config.sources):
        try:
            probed = probe_source(spec)
            got = read_source(config, spec)
        except SourceError as e:
            line = doc.line_of(("sources", i)) if doc is not None else None
            problems.append(Problem(config.source if line else None, line, f"sources.{i}",
                                    str(e)))
            continue
        lists.append(got)
        if lines:
            lines.append("")
        lines.extend(describe_source(config, spec, got, probed))
    if problems:
        raise ConfigError(problems)
    return assemble(config, lists), lines
