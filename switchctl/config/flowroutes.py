"""What each flow file answers: just `flow:`, `numbers:` and `patterns:`.

Rendering the switch's dialplan only needs to know which destinations go to the controller; the full
flow engine (`switchctl/flows/`) validates everything else. Reading only these three keys keeps the
render layer independent of the flow engine's schema as it grows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from switchctl.config.yamlsrc import Mark, SourceError, YList, YMap, load_file

FLOW_SUFFIXES = (".yaml", ".yml")
_NUMBER_RE = re.compile(r"^\+?[0-9*#]{1,32}$")


@dataclass(frozen=True, slots=True)
class FlowRoutes:
    flow: str
    file: Path
    numbers: tuple[str, ...]
    patterns: tuple[str, ...]  # regular expressions, matched against the whole destination number


def flow_files(flows_dir: Path) -> list[Path]:
    """Flow files directly in `flows_dir`, sorted by name (so rendering is deterministic)."""
    return sorted(p for p in flows_dir.iterdir() if p.is_file() and p.suffix in FLOW_SUFFIXES)


def read_flow_routes(flows_dir: Path, display_base: Path | None = None) -> list[FlowRoutes]:
    """Read every flow file's routes; duplicate numbers across flows are an error."""
    routes: list[FlowRoutes] = []
    owner: dict[str, tuple[str, Mark]] = {}
    for file in flow_files(flows_dir):
        display = str(file.relative_to(display_base)) if display_base and file.is_relative_to(display_base) else str(file)
        doc = load_file(file, display)
        if not isinstance(doc, YMap):
            raise SourceError(getattr(doc, "mark", Mark(display, 1, 1)), "a flow file must be a mapping")
        name = doc.get("flow")
        if not isinstance(name, str) or not name:
            raise SourceError(doc.mark_of("flow"), "a flow file needs 'flow: NAME'")
        numbers = _strings(doc, "numbers", f"flow '{name}' numbers")
        for i, number in enumerate(numbers):
            mark = doc["numbers"].mark_of(i)
            if not _NUMBER_RE.match(number):
                raise SourceError(mark, f"flow '{name}' number '{number}' must be digits (optionally +, *, #)")
            if number in owner:
                other, where = owner[number]
                raise SourceError(mark, f"number {number} is already answered by flow '{other}' ({where})")
            owner[number] = (name, mark)
        patterns = _strings(doc, "patterns", f"flow '{name}' patterns")
        for i, pattern in enumerate(patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise SourceError(doc["patterns"].mark_of(i), f"flow '{name}' pattern is not a valid regex: {exc}") from None
        routes.append(FlowRoutes(name, file, tuple(numbers), tuple(patterns)))
    return routes


def _strings(doc: YMap, key: str, what: str) -> list[str]:
    value = doc.get(key)
    if value is None:
        return []
    if not isinstance(value, YList):
        raise SourceError(doc.mark_of(key), f"{what} must be a list")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise SourceError(value.mark_of(i), f"{what} entries must be strings")
        out.append(str(item))
    return out
