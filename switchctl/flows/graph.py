"""Graph checks on parsed flows: dangling and unreachable nodes, sections, and loops without a bound.

Loop soundness. Some nodes carry a per-call budget: a `goto` with `max` passes to its target at most
`max` times, a `menu`/`collect` is entered at most `max_visits` times. Once its budget is spent a
bounded node always takes its *exit* outcome (`exhausted`; for menu/collect without an `exhausted`
branch, `timeout`). After every budget is spent a call can therefore only follow the edges of
unbounded nodes and the exit edges of bounded nodes. If that graph ("H") has no cycle, every run
ends: each pass round any other cycle spends budget, and budgets are finite. So we reject every
cycle of H, found as the strongly connected components of H (Tarjan). Calls are modelled as an
edge to `next` (the return): the section body's own cycles are checked where they are, and a
cycle through a call's edge into its section is always a recursion, which is rejected separately. Transfers to another flow are edges to that
flow's start, so loops across flows are caught too.

Paid dials. A `prepaid` node's authorization pays for one dial. `check_authorizations` walks the
graph with the billing state a call can be in at each node — no prepaid ran yet, an unused
authorization, or a spent one (used by a dial, or refused) — and rejects a `dial` reachable in the
spent state: at run time it would have nothing to bill against (and must not ring for free).
Sections are followed context-insensitively (a `return` goes back to every caller of the flow),
which can only add paths, never hide one.
"""

from __future__ import annotations

from collections import deque
from itertools import pairwise
from collections.abc import Iterable, Mapping, Sequence

from .model import (
    CallNode,
    Diagnostic,
    DialNode,
    Flow,
    Node,
    PrepaidNode,
    ReturnNode,
    TransferNode,
)
from .parse import suggestion

Vertex = tuple[str, str]  # (flow name, node id)


def _reach(flow: Flow, start: str, *, into_sections: bool) -> set[str]:
    seen: set[str] = set()
    todo = [start] if start in flow.nodes else []
    while todo:
        node_id = todo.pop()
        if node_id in seen:
            continue
        seen.add(node_id)
        for edge in flow.nodes[node_id].edges.values():
            if edge.target in flow.nodes and (into_sections or not edge.section):
                todo.append(edge.target)
    return seen


def check_flow_graph(flow: Flow, diags: list[Diagnostic], *, had_errors: bool = False) -> None:
    """Dangling edges, unreachable nodes, `return` outside a section, recursive sections.

    Unreachable nodes are not reported when the flow already has errors (`had_errors`, or a
    dangling edge): a missing or misspelled edge makes everything behind it look unreachable.
    """
    before = len(diags)
    for node in flow.nodes.values():
        for edge in node.edges.values():
            if edge.target not in flow.nodes:
                what = "calls section" if edge.section else "goes to"
                diags.append(Diagnostic(edge.mark, f"node '{node.id}' {what} '{edge.target}', "
                                        f"which does not exist{suggestion(edge.target, flow.nodes)}"))
    if flow.start not in flow.nodes:
        return
    reachable = _reach(flow, flow.start, into_sections=True)
    for node in flow.nodes.values():
        if node.id not in reachable and not had_errors and len(diags) == before:
            diags.append(Diagnostic(node.mark, f"node '{node.id}' is unreachable from the start node '{flow.start}'"))
    for node_id in sorted(_reach(flow, flow.start, into_sections=False)):
        node = flow.nodes[node_id]
        if isinstance(node, ReturnNode):
            diags.append(Diagnostic(node.mark, f"return '{node.id}' is reached outside a section "
                                    "(from the start without a 'call'); 'return' only ends a section"))
    _check_recursion(flow, diags)


def _check_recursion(flow: Flow, diags: list[Diagnostic]) -> None:
    calls = [n for n in flow.nodes.values() if isinstance(n, CallNode) and n.section in flow.nodes]
    sections = {n.section for n in calls}
    # section -> the call nodes its body can reach before returning (nested calls are summarised).
    calls_from: dict[str, list[CallNode]] = {}
    for section in sections:
        body = _reach(flow, section, into_sections=False)
        calls_from[section] = sorted((n for n in calls if n.id in body), key=lambda n: (n.mark.line, n.mark.column))
    graph = {s: [c.section for c in calls_from[s]] for s in sections}
    for component in strongly_connected(graph):
        cyclic = len(component) > 1 or component[0] in graph[component[0]]
        if not cyclic:
            continue
        members = set(component)
        culprits = [c for s in sorted(members) for c in calls_from[s] if c.section in members]
        culprit = min(culprits, key=lambda n: (n.mark.line, n.mark.column))
        diags.append(Diagnostic(culprit.mark, f"call '{culprit.id}' recurses without a bound: section "
                                f"'{culprit.section}' can call itself again (through {', '.join(repr(m) for m in sorted(members))}); "
                                "loop with a goto and 'max' instead"))


def strongly_connected(graph: Mapping[str, Iterable[str]] | Mapping[Vertex, Iterable[Vertex]]) -> list[list]:
    """Tarjan's algorithm, iterative (flows can be large); vertices absent from `graph` are ignored."""
    index: dict = {}
    low: dict = {}
    on_stack: set = set()
    stack: list = []
    out: list[list] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, successors = work[-1]
            advanced = False
            for w in successors:
                if w not in graph:
                    continue
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(graph[w])))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                out.append(component)
    return out


def _unbounded_edges(flow: Flow, node: Node, flows: Mapping[str, Flow]) -> list[tuple[str, Vertex]]:
    """(outcome, successor) pairs a call can still follow after every budget is spent."""
    out = []
    for edge in node.edges.values():
        # A cycle through a section edge is always a recursion, reported by check_flow_graph.
        if edge.outcome in node.budgeted_outcomes or edge.target not in flow.nodes or edge.section:
            continue
        out.append((edge.outcome, (flow.name, edge.target)))
    if isinstance(node, TransferNode) and node.flow is not None:
        target = flows.get(node.flow.value)
        if target is not None and target.start in target.nodes:
            out.append(("flow", (target.name, target.start)))
    return out


def check_loops(flows: Sequence[Flow], diags: list[Diagnostic]) -> None:
    by_name = {f.name: f for f in flows}
    edges: dict[Vertex, list[tuple[str, Vertex]]] = {}
    nodes: dict[Vertex, tuple[Flow, Node]] = {}
    for flow in flows:
        for node in flow.nodes.values():
            vertex = (flow.name, node.id)
            nodes[vertex] = (flow, node)
            edges[vertex] = _unbounded_edges(flow, node, by_name)
    graph = {v: [w for _, w in succ] for v, succ in edges.items()}
    for component in strongly_connected(graph):
        first = component[0]
        if len(component) == 1 and first not in graph[first]:
            continue
        members = set(component)
        anchor = min(members, key=lambda v: (nodes[v][0].file, nodes[v][1].mark.line, nodes[v][1].mark.column))
        cycle = _cycle_through(anchor, members, edges)
        home = nodes[anchor][0].name

        def label(v: Vertex) -> str:
            return v[1] if v[0] == home else f"{v[0]}:{v[1]}"

        path = label(anchor) + "".join(f" -{outcome}-> {label(v)}" for outcome, v in cycle)
        diags.append(Diagnostic(nodes[anchor][1].mark, f"loop without a bound: {path}; a loop must pass a goto "
                                "with 'max', or re-enter a menu/collect by an outcome other than its exit "
                                "('exhausted', else 'timeout')"))


def _cycle_through(anchor: Vertex, members: set[Vertex], edges: Mapping[Vertex, list[tuple[str, Vertex]]]) -> list[tuple[str, Vertex]]:
    """A shortest cycle anchor -> ... -> anchor inside one strongly connected component (BFS)."""
    parent: dict[Vertex, tuple[Vertex, str]] = {}
    queue = deque([anchor])
    while queue:
        v = queue.popleft()
        for outcome, w in edges[v]:
            if w not in members:
                continue
            if w == anchor:
                path = [(outcome, w)]
                while v != anchor:
                    prev, o = parent[v]
                    path.append((o, v))
                    v = prev
                return list(reversed(path))
            if w not in parent:
                parent[w] = (v, outcome)
                queue.append(w)
    return []


_NO_PREPAID, _AUTHORIZED, _SPENT = "none", "authorized", "spent"
State = tuple[Vertex, str]


def _billing_successors(flow: Flow, node: Node, state: str, flows: Mapping[str, Flow]) -> list[tuple[str, State]]:
    """(outcome, (vertex, state)) pairs one step after `node` entered in `state`."""
    if isinstance(node, ReturnNode):  # back to the `next` of any call in this flow
        calls = [n for n in flow.nodes.values() if isinstance(n, CallNode)]
        return [("return", ((flow.name, t), state)) for c in calls
                if (t := c.target("next")) is not None and t in flow.nodes]
    out = []
    for edge in node.edges.values():
        if edge.target not in flow.nodes or (isinstance(node, CallNode) and not edge.section):
            continue
        after = state
        if isinstance(node, PrepaidNode):
            after = _AUTHORIZED if edge.outcome == "next" else _SPENT
        elif isinstance(node, DialNode) and state == _AUTHORIZED:
            after = _SPENT
        out.append((edge.outcome, ((flow.name, edge.target), after)))
    if isinstance(node, TransferNode) and node.flow is not None:
        target = flows.get(node.flow.value)
        if target is not None and target.start in target.nodes:
            out.append(("flow", ((target.name, target.start), state)))
    return out


def check_authorizations(flows: Sequence[Flow], diags: list[Diagnostic]) -> None:
    """Reject a dial that can follow a used or refused prepaid authorization (see the module doc)."""
    by_name = {f.name: f for f in flows}
    parent: dict[State, tuple[State, str] | None] = {}
    queue: deque[State] = deque()
    for flow in flows:
        if flow.start in flow.nodes:
            seed = ((flow.name, flow.start), _NO_PREPAID)
            parent[seed] = None
            queue.append(seed)
    reported: set[Vertex] = set()
    while queue:
        current = queue.popleft()
        (flow_name, node_id), state = current
        flow = by_name[flow_name]
        node = flow.nodes[node_id]
        if isinstance(node, DialNode) and state == _SPENT and current[0] not in reported:
            reported.add(current[0])
            diags.append(Diagnostic(node.mark, f"dial '{node.id}' can run after a used or refused authorization "
                                    f"({_billing_path(current, parent, flow_name, by_name)}); a paid dial "
                                    "needs a prepaid node of its own before it"))
        for outcome, following in _billing_successors(flow, node, state, by_name):
            if following not in parent:
                parent[following] = (current, outcome)
                queue.append(following)


def _billing_path(end: State, parent: Mapping[State, tuple[State, str] | None], home: str,
                  flows: Mapping[str, Flow]) -> str:
    """The path to `end`, from the last prepaid node on it."""
    steps: list[tuple[State, str | None]] = [(end, None)]
    link = parent[end]
    while link is not None:
        state, outcome = link
        steps.append((state, outcome))
        if isinstance(flows[state[0][0]].nodes[state[0][1]], PrepaidNode):
            break
        link = parent[state]
    steps.reverse()

    def label(v: Vertex) -> str:
        return v[1] if v[0] == home else f"{v[0]}:{v[1]}"

    text = label(steps[0][0][0])
    for (_, outcome), (state, _) in pairwise(steps):
        text += f" -{outcome}-> {label(state[0])}"
    return text
