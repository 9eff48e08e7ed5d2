"""YAML loading that keeps where every value came from.

Site files and call flows are written by people; every error we report about them must point at
`file:line:column`. PyYAML's safe composer gives each node a start mark, so we compose (never
construct arbitrary tags) and build plain containers that remember the marks of their keys and
values. Duplicate keys are an error here: PyYAML silently keeps the last one, which hides typos.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True, slots=True)
class Mark:
    """A 1-based position in a source file."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class SourceError(Exception):
    """An error in a user's file, printed as `file:line:column: message`."""

    def __init__(self, mark: Mark | None, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message

    def __str__(self) -> str:
        return f"{self.mark}: {self.message}" if self.mark else self.message


class YMap(dict):
    """A mapping that knows the marks of itself, its keys and its values."""

    mark: Mark
    key_marks: dict[str, Mark]
    value_marks: dict[str, Mark]

    def mark_of(self, key: str) -> Mark:
        """Where the value of `key` is (or the mapping itself when the key is absent)."""
        return self.value_marks.get(key, self.mark)

    def key_mark(self, key: str) -> Mark:
        return self.key_marks.get(key, self.mark)


class YList(list):
    """A sequence that knows its own mark and each item's."""

    mark: Mark
    item_marks: list[Mark]

    def mark_of(self, index: int) -> Mark:
        return self.item_marks[index] if 0 <= index < len(self.item_marks) else self.mark


def _mark(node: yaml.Node, file: str) -> Mark:
    return Mark(file, node.start_mark.line + 1, node.start_mark.column + 1)


_scalar_loader = yaml.SafeLoader("")


def _build(node: yaml.Node, file: str) -> Any:
    if isinstance(node, yaml.MappingNode):
        out = YMap()
        out.mark = _mark(node, file)
        out.key_marks = {}
        out.value_marks = {}
        _scalar_loader.flatten_mapping(node)  # resolve `<<:` merge keys like the safe loader
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise SourceError(_mark(key_node, file), "a mapping key must be a plain value")
            # Keys are names in our formats: keep their source text. YAML 1.1 would turn `on:` and
            # `yes:` into True and `1:` into an int, and `"on"` would silently differ from `on`.
            key = key_node.value
            if key in out:
                raise SourceError(
                    _mark(key_node, file),
                    f"duplicate key '{key}' (first at line {out.key_marks[key].line})",
                )
            out[key] = _build(value_node, file)
            out.key_marks[key] = _mark(key_node, file)
            out.value_marks[key] = _mark(value_node, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        seq = YList(_build(item, file) for item in node.value)
        seq.mark = _mark(node, file)
        seq.item_marks = [_mark(item, file) for item in node.value]
        return seq
    assert isinstance(node, yaml.ScalarNode)
    # The safe constructor turns a scalar node into str/int/float/bool/None/date by its resolved tag.
    try:
        return _scalar_loader.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError as exc:
        raise SourceError(_mark(node, file), f"cannot read value: {exc.problem}") from None


def load_text(text: str, file: str) -> Any:
    """Parse one YAML document; syntax errors become SourceError with the parser's position."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Mark(file, mark.line + 1, mark.column + 1) if mark else None
        raise SourceError(where, f"YAML syntax error: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:  # e.g. several documents in one file
        raise SourceError(Mark(file, 1, 1), f"YAML error: {exc}") from None
    if node is None:
        return None
    return _build(node, file)


def load_file(path: str | Path, display: str | None = None) -> Any:
    """Load a YAML file; `display` is the name used in error messages (defaults to the path)."""
    path = Path(path)
    name = display if display is not None else str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SourceError(None, f"{name}: no such file") from None
    except UnicodeDecodeError as exc:
        raise SourceError(Mark(name, 1, 1), f"not UTF-8 text ({exc.reason})") from None
    return load_text(text, name)
