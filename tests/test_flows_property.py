"""Property: a flow that passes `check_flows` ends on any caller input (the loop analysis is sound).

Random flow graphs (menus, collects, gotos with and without `max`, sections, routes...) are checked;
those that pass are run against random key presses and must end by a hangup or transfer well within
the runtime's step limit. A control test shows the generator does produce runaway flows, which the
checker rejects, so the property is not vacuous.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchctl.flows import FlowRunner, check_flows
from switchctl.flows.parse import parse_flow
from switchctl.flows.model import FlowSet
from switchctl.config.yamlsrc import load_text

from .fakecall import ScriptedCall

KINDS = ("play", "set", "goto", "goto_max", "menu", "collect", "route", "hangup", "transfer", "call", "return")
PROMPT = '"silence_stream://10"'


def random_flow(rng: random.Random) -> str:
    n = rng.randint(2, 9)
    ids = [f"n{i}" for i in range(n)]

    def to() -> str:
        return rng.choice(ids)

    nodes: dict[str, str] = {}
    for node_id in ids:
        kind = rng.choice(KINDS)
        if kind == "play":
            body = f"{{type: play, prompts: [{PROMPT}], next: {to()}}}"
        elif kind == "set":
            body = f"{{type: set, vars: {{x: '${{digits}}'}}, next: {to()}}}"
        elif kind == "goto":
            body = f"{{type: goto, target: {to()}}}"
        elif kind == "goto_max":
            body = f"{{type: goto, target: {to()}, max: {rng.randint(1, 3)}, on: {{exhausted: {to()}}}}}"
        elif kind == "menu":
            extra = f", exhausted: {to()}" if rng.random() < 0.5 else ""
            body = (f"{{type: menu, greeting: {PROMPT}, max_failures: {rng.randint(1, 2)}, "
                    f"max_timeouts: {rng.randint(1, 2)}, max_visits: {rng.randint(1, 3)}, "
                    f"on: {{'1': {to()}, '2': {to()}, timeout: {to()}, invalid: {to()}{extra}}}}}")
        elif kind == "collect":
            extra = f", exhausted: {to()}" if rng.random() < 0.5 else ""
            body = (f"{{type: collect, max_digits: 2, tries: {rng.randint(1, 2)}, max_visits: {rng.randint(1, 3)}, "
                    f"next: {to()}, on: {{timeout: {to()}, invalid: {to()}{extra}}}}}")
        elif kind == "route":
            body = f"{{type: route, rules: [{{caller: '^1.*', next: {to()}}}], default: {to()}}}"
        elif kind == "hangup":
            body = "{type: hangup}"
        elif kind == "transfer":
            body = "{type: transfer, extension: '1001'}"
        elif kind == "call":
            body = f"{{type: call, section: {to()}, next: {to()}}}"
        else:
            body = "{type: return}"
        nodes[node_id] = body
    # Drop what the start cannot reach, so that most graphs get as far as the interesting checks.
    reach, todo = set(), ["n0"]
    while todo:
        node_id = todo.pop()
        if node_id not in reach:
            reach.add(node_id)
            todo.extend(t for t in ids if f": {t}," in nodes[node_id] or f": {t}}}" in nodes[node_id])
    lines = ["flow: random", 'numbers: ["1"]', "nodes:"]
    lines += [f"  {node_id}: {nodes[node_id]}" for node_id in ids if node_id in reach]
    return "\n".join(lines) + "\n"


def _check(text: str):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "random.yaml"
        path.write_text(text, encoding="utf-8")
        return check_flows([path], sound_dirs=[], site_values={}, lists={}, display_root=Path(tmp))


def _caller(rng: random.Random):
    while True:
        yield rng.choice(["1", "2", "3", "12", "timeout", "timeout", "1#"])


async def _run(flows: FlowSet, seed: int, step_limit: int = 10_000):
    rng = random.Random(seed)
    call = ScriptedCall(_caller(rng), caller=rng.choice(["1000", "2000"]), destination="1")
    return await FlowRunner(flows, site_values={}, lists={}, step_limit=step_limit).run(call, flows["random"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
async def test_checked_flows_always_end(flow_seed: int, input_seed: int) -> None:
    text = random_flow(random.Random(flow_seed))
    result = _check(text)
    if not result.ok:
        return
    trace = await _run(result.flows, input_seed)
    assert trace.result in ("hangup", "transferred"), (text, trace.error)
    assert len(trace.steps) < 500, text  # budgets here are tiny: far below the step limit


async def test_generator_is_not_vacuous() -> None:
    """Many random flows pass check, and some rejected only for loops really run away."""
    passed = runaway = 0
    for seed in range(400):
        text = random_flow(random.Random(seed))
        result = _check(text)
        if result.ok:
            passed += 1
            continue
        if all("loop without a bound" in d.message for d in result.errors):
            flow = parse_flow(load_text(text, "random.yaml"), "random.yaml", [])
            trace = await _run(FlowSet([flow]), seed, step_limit=300)
            runaway += trace.error is not None and "step limit" in trace.error
    assert passed >= 40, passed
    assert runaway >= 5, runaway
