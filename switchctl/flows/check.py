"""`switchctl check` for call flows: load every flow file, prove it, report `file:line:column: message`.

`check_flows` never raises on a user's mistake: every problem is a `Diagnostic`, sorted by file,
line and column. The returned `FlowSet` holds only the flows that are free of errors (and whose
transfer targets are too), so the runtime is never handed a flow that failed its check.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from switchctl.config.yamlsrc import Mark, SourceError, load_file
from switchctl.numbering import Numbering

from .graph import check_authorizations, check_flow_graph, check_loops
from .model import (
    DATA_VARIABLE_PREFIX,
    Diagnostic,
    DialNode,
    Flow,
    FlowSet,
    Node,
    NumberNode,
    RouteNode,
    TransferNode,
)
from .parse import parse_flow, suggestion

SOUND_EXTENSIONS = (".wav", ".ogg", ".mp3", ".sln")
# Prompts the switch generates itself: nothing to find on disk.
BUILTIN_PROMPT_PREFIXES = ("tone_stream://", "silence_stream://", "say:", "local_stream://")


@dataclass
class CheckResult:
    flows: FlowSet
    diagnostics: list[Diagnostic]

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def report(self) -> str:
        return "".join(f"{d}\n" for d in self.diagnostics)


def display_path(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(path.resolve().relative_to(root.resolve()))
        except ValueError:
            pass
    return str(path)


def find_prompt(prompt: str, sound_dirs: Sequence[Path]) -> str | None:
    """The file the switch should play for `prompt`: builtin streams as they are, a relative name
    as the absolute path of the first match in `sound_dirs` (as named, or with a sound extension)."""
    if prompt.startswith(BUILTIN_PROMPT_PREFIXES):
        return prompt
    path = Path(prompt)
    candidates = [path] if path.is_absolute() else [Path(d) / path for d in sound_dirs]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate.resolve())
        for ext in SOUND_EXTENSIONS:
            with_ext = candidate.with_name(candidate.name + ext)
            if with_ext.is_file():
                return str(with_ext.resolve())
    return None


def prompt_exists(prompt: str, sound_dirs: Sequence[Path]) -> bool:
    """Is `prompt` a file the switch can play: exactly as named, or with a sound extension?"""
    return find_prompt(prompt, sound_dirs) is not None


def _load(paths: Sequence[Path], root: Path | None, diags: list[Diagnostic]) -> list[Flow]:
    flows = []
    for path in sorted((Path(p) for p in paths), key=lambda p: display_path(p, root)):
        name = display_path(path, root)
        try:
            data = load_file(path, display=name)
        except SourceError as exc:
            message = exc.message
            if exc.mark is None and message.startswith(f"{name}: "):
                message = message[len(name) + 2:]
            diags.append(Diagnostic(exc.mark or Mark(name, 1, 1), message))
            continue
        flow = parse_flow(data, name, diags)
        if flow is not None:
            flows.append(flow)
    return flows


def _unique(flows: list[Flow], diags: list[Diagnostic]) -> list[Flow]:
    """Drop (and report) a second flow with a taken name; report numbers claimed twice."""
    by_name: dict[str, Flow] = {}
    owner: dict[str, tuple[Flow, Mark]] = {}
    out = []
    for flow in flows:
        first = by_name.get(flow.name)
        if first is not None:
            diags.append(Diagnostic(flow.mark, f"flow '{flow.name}' is already defined at {first.mark}"))
            continue
        by_name[flow.name] = flow
        out.append(flow)
        for number in flow.numbers:
            taken = owner.get(number.value)
            if taken is not None:
                diags.append(Diagnostic(number.mark, f"number '{number.value}' is already claimed by flow "
                                        f"'{taken[0].name}' at {taken[1]}"))
            else:
                owner[number.value] = (flow, number.mark)
    return out


def _callers(flows: list[Flow]) -> dict[str, set[str]]:
    """For each flow, the flows a call can come from by in-process transfers (itself included)."""
    into: dict[str, set[str]] = {f.name: set() for f in flows}
    for flow in flows:
        for node in flow.nodes.values():
            if isinstance(node, TransferNode) and node.flow is not None and node.flow.value in into:
                into[node.flow.value].add(flow.name)
    out = {}
    for name in into:
        seen, todo = set(), [name]
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo.extend(into[n])
        out[name] = seen
    return out


def _check_references(flow: Flow, node: Node, *, known_vars: set[str], max_groups: int,
                      site_values: Mapping[str, str], diags: list[Diagnostic], data_vars: bool = False) -> None:
    """`data_vars`: a dial runs before (the call data a transfer gives back, `${var.data_KEY}`,
    empty when no one set KEY: its keys are only known at run time)."""
    what = f"{node.kind or 'node'} '{node.id}'"
    for tpl, mark in node.templates:
        for ref in tpl.refs:
            if ref.scope == "site" and ref.name not in site_values:
                diags.append(Diagnostic(mark, f"{what}: unknown site value '{ref.text}'{suggestion(ref.name, site_values)}"))
            elif ref.scope == "var" and ref.name not in known_vars \
                    and not (data_vars and ref.name.startswith(DATA_VARIABLE_PREFIX)):
                diags.append(Diagnostic(mark, f"{what}: unknown flow variable '{ref.text}'"
                                        f"{suggestion(ref.name, known_vars)}; no 'set' or collect 'var' defines it"))
            elif ref.scope == "capture" and ref.capture_index > max_groups:
                diags.append(Diagnostic(mark, f"{what}: '{ref.text}' refers to capture group {ref.capture_index}, "
                                        f"but no pattern of flow '{flow.name}' has more than {max_groups}"))


def check_flows(
    paths: Sequence[Path],
    *,
    sound_dirs: Sequence[Path],
    site_values: Mapping[str, str],
    lists: Mapping[str, Sequence[str]],
    known_extensions: Collection[str] | None = None,
    known_gateways: Collection[str] | None = None,
    numbering: Numbering | None = None,
    display_root: Path | None = None,
) -> CheckResult:
    """Check flow files against the site. `known_extensions` / `known_gateways`, when given, are
    the site's phone extensions and gateway names: literal ones a flow names must be among them.
    `numbering`, when given, is the site's (`Site.numbering`): `number` nodes must name its plans
    and their routes, `route` rules its holiday calendars."""
    diags: list[Diagnostic] = []
    flows = _unique(_load(paths, display_root, diags), diags)
    by_name = {f.name: f for f in flows}
    callers = _callers(flows)
    dirs_text = ", ".join(display_path(Path(d), display_root) for d in sound_dirs) or "none given"

    for flow in flows:
        had_errors = any(d.mark.file == flow.file and d.severity == "error" for d in diags)
        check_flow_graph(flow, diags, had_errors=had_errors)
        sources = [by_name[n] for n in callers[flow.name]]
        known_vars = {d.value for f in sources for n in f.nodes.values() for d in n.defines}
        max_groups = max((max((p.groups for p, _ in f.patterns), default=0) for f in sources), default=0)
        max_groups = max([max_groups] + [n.regex_groups for f in sources for n in f.nodes.values()])
        data_vars = any(isinstance(n, DialNode) for f in sources for n in f.nodes.values())
        for node in flow.nodes.values():
            what = f"{node.kind or 'node'} '{node.id}'"
            _check_references(flow, node, known_vars=known_vars, max_groups=max_groups,
                              site_values=site_values, diags=diags, data_vars=data_vars)
            for tpl, mark in node.prompts:
                if tpl.is_literal and not prompt_exists(tpl.source, sound_dirs):
                    diags.append(Diagnostic(mark, f"{what}: prompt '{tpl.source}' not found in the sound dirs "
                                            f"({dirs_text}), as named or with {', '.join(SOUND_EXTENSIONS)}"))
            for ref in node.list_refs:
                if ref.value not in lists:
                    diags.append(Diagnostic(ref.mark, f"{what}: unknown list '{ref.value}'{suggestion(ref.value, lists)}"))
            if isinstance(node, TransferNode):
                if node.flow is not None and node.flow.value not in by_name:
                    diags.append(Diagnostic(node.flow.mark, f"{what}: unknown flow '{node.flow.value}'"
                                            f"{suggestion(node.flow.value, by_name)}"))
                ext = node.extension
                if ext is not None and known_extensions is not None and ext.is_literal \
                        and ext.source not in known_extensions:
                    mark = next(m for t, m in node.templates if t is ext)
                    diags.append(Diagnostic(mark, f"{what}: extension '{ext.source}' is not a known extension"
                                            f"{suggestion(ext.source, known_extensions)}"))
            if isinstance(node, DialNode):
                _check_dial_targets(node, known_extensions, known_gateways, diags)
            if numbering is not None:
                _check_numbering(node, numbering, diags)
    check_loops(flows, diags)
    check_authorizations(flows, diags)

    diags.sort(key=Diagnostic.sort_key)
    usable = _usable(flows, {d.mark.file for d in diags if d.severity == "error"})
    return CheckResult(FlowSet(usable), diags)


def _check_dial_targets(node: DialNode, known_extensions: Collection[str] | None,
                        known_gateways: Collection[str] | None, diags: list[Diagnostic]) -> None:
    what = f"dial '{node.id}'"
    if known_gateways is not None:
        site_has = ", ".join(sorted(known_gateways)) or "no gateways"
        for ref in node.gateway_refs:
            if ref.value not in known_gateways:
                diags.append(Diagnostic(ref.mark, f"{what} names unknown gateway '{ref.value}' (site has: {site_has})"))
    if known_extensions is not None:
        for group in node.groups:
            for target in group.targets:
                if target.kind == "phone" and target.address.is_literal \
                        and target.address.source not in known_extensions:
                    diags.append(Diagnostic(target.mark, f"{what}: phone '{target.address.source}' is not a known "
                                            f"extension{suggestion(target.address.source, known_extensions)}"))


def _check_numbering(node: Node, numbering: Numbering, diags: list[Diagnostic]) -> None:
    if isinstance(node, RouteNode):
        for ref in node.holiday_refs:
            if ref.value not in numbering.holidays:
                known = ", ".join(sorted(numbering.holidays)) or "none"
                diags.append(Diagnostic(ref.mark, f"route '{node.id}': unknown holiday calendar '{ref.value}'"
                                        f"{suggestion(ref.value, numbering.holidays)} (site has: {known})"))
    if not isinstance(node, NumberNode) or node.plan is None:
        return
    what = f"number '{node.id}'"
    plan = numbering.plans.get(node.plan.value)
    if plan is None:
        known = ", ".join(sorted(numbering.plans)) or "none"
        diags.append(Diagnostic(node.plan.mark, f"{what}: unknown numbering plan '{node.plan.value}'"
                                f"{suggestion(node.plan.value, numbering.plans)} (site has: {known})"))
        return
    for route in node.routes:
        if route.value not in plan.routes:
            diags.append(Diagnostic(route.mark, f"{what}: plan '{plan.name}' has no route '{route.value}'"
                                    f"{suggestion(route.value, plan.routes)} (routes: {', '.join(sorted(plan.routes))})"))


def _usable(flows: list[Flow], files_with_errors: set[str]) -> list[Flow]:
    good = {f.name: f for f in flows if f.file not in files_with_errors}
    changed = True
    while changed:  # a flow that transfers into a rejected flow is not usable either
        changed = False
        for name, flow in list(good.items()):
            targets = {n.flow.value for n in flow.nodes.values() if isinstance(n, TransferNode) and n.flow}
            if not targets <= good.keys():
                del good[name]
                changed = True
    return list(good.values())
