"""Load YAML while keeping the line of every mapping key and list item.

Inventory errors must point at ``file:line``, so the loader builds
``SourceMap`` and ``SourceList`` containers that remember where each entry
came from. Duplicate keys, which PyYAML silently accepts, are reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class SourceMap(dict):
    """A mapping from YAML with its own line and the line of each key."""

    line: int
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class SourceList(list):
    """A sequence from YAML with its own line and the line of each item."""

    line: int
    item_lines: list[int]

    def line_of(self, index: int) -> int:
        if 0 <= index < len(self.item_lines):
            return self.item_lines[index]
        return self.line


class YamlSourceError(Exception):
    """A file that is not valid YAML, or has a duplicate key."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class _Loader(yaml.SafeLoader):
    """SafeLoader that builds SourceMap/SourceList and rejects duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> SourceMap:
        self.flatten_mapping(node)
        result = SourceMap()
        result.line = node.start_mark.line + 1
        result.key_lines = {}

        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                # Keys such as 1433 or true would silently become ints or
                # bools; the inventory only has string keys.
                key = str(key)
            line = key_node.start_mark.line + 1
            if key in result:
                raise YamlSourceError(
                    f"duplicate key '{key}' (first defined on line {result.key_lines[key]})",
                    line,
                )
            result[key] = self.construct_object(value_node, deep=True)
            result.key_lines[key] = line
        return result

    def construct_sequence(self, node: yaml.SequenceNode, deep: bool = False) -> SourceList:
        result = SourceList(self.construct_object(child, deep=True) for child in node.value)
        result.line = node.start_mark.line + 1
        result.item_lines = [child.start_mark.line + 1 for child in node.value]
        return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _Loader.construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _Loader.construct_sequence)


def load_yaml_text(text: str) -> Any:
    """Parse YAML text into SourceMap/SourceList containers and plain scalars."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader derives from SafeLoader
    except YamlSourceError:
        raise
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark else 1
        raise YamlSourceError(f"invalid YAML: {error.problem or error}", line) from None
    except yaml.YAMLError as error:
        raise YamlSourceError(f"invalid YAML: {error}", 1) from None


def load_yaml_file(path: Path) -> Any:
    return load_yaml_text(path.read_text(encoding="utf-8"))
