"""Every node type and every menu and collect outcome, end to end through the simulator.

The flows are in tests/sites/allnodes/; each call is a loopback call originated over inbound ESL and
goes switch -> outbound socket -> controller -> flow runtime -> FreeSWITCH backend -> ESL. The switch
is the simulator, or a real FreeSWITCH with SWITCHCTL_FS_ESL set (see tests/test_ivr_sim.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from switchctl.config.site import load_site
from switchctl.flowtest import target_from_env
from switchctl.sitecheck import check_site

SITE = Path(__file__).resolve().parent / "sites" / "allnodes" / "site.yaml"


@pytest.fixture
async def harness():
    site = load_site(SITE)
    result = check_site(site)
    assert result.ok, result.report()
    async with target_from_env(site, result.flows, media_speed=100.0) as target:
        yield target


def ran(result) -> list[tuple[str, str]]:
    return [(app, arg) for app, arg, _ in result.apps]


async def test_collect_set_call_return_say_route_transfer(harness):
    trace, result = await harness.call("9100", ["1234"], caller="5550001")
    assert trace.path == ["start", "vip_check", "vip_hello", "ask", "remember", "notice", "legal",
                          "legal_done", "readback", "by_prefix", "to_desk"]
    assert trace.variables["pin"] == "1234" and trace.variables["account"] == "acct-1234"
    apps = ran(result)
    assert ("set", "account=acct-1234") in apps
    assert ("say", "en number pronounced 1234") in apps
    assert ("transfer", "1001 XML default") in apps
    assert trace.result == "transferred"


async def test_collect_invalid_then_goto_retry_then_valid(harness):
    trace, result = await harness.call("9100", ["12#", "99#", "4321"], caller="4440000")
    outcomes = [(node, outcome) for _flow, node, outcome in trace.steps]
    assert outcomes[:4] == [("start", "next"), ("vip_check", "default"), ("ask", "invalid"), ("retry", "target")]
    assert ("ask", "next") in outcomes
    assert trace.path[-2:] == ["by_prefix", "bye"]  # caller not 555...: route default
    # the invalid prompt after each failed try: in front of the retry's prompt, or played alone
    assert sum(arg.count("invalid.wav") for app, arg in ran(result)) == 2
    assert result.hangup_cause == "NORMAL_CLEARING"


async def test_collect_timeouts_take_timeout_branch(harness):
    trace, _ = await harness.call("9100", ["-", "-"], caller="4440000")
    assert ("pin", "ask", "timeout") in trace.steps
    assert trace.path[-1] == "bye"


async def test_goto_bound_exhausts(harness):
    trace, _ = await harness.call("9100", ["1#", "2#", "3#", "4#"], caller="4440000")
    outcomes = [(node, outcome) for _flow, node, outcome in trace.steps]
    assert ("retry", "target") in outcomes and ("retry", "exhausted") in outcomes
    assert trace.path[-1] == "bye"


async def test_menu_option_transfers_to_another_flow(harness):
    trace, _ = await harness.call("9200", ["1", "5555"], caller="1002")
    assert ("menu", "main", "1") in trace.steps
    assert ("pin", "ask", "next") in trace.steps
    assert trace.path[-1] == "bye"


async def test_menu_direct_dial_with_capture(harness):
    trace, result = await harness.call("9200", ["1002"])
    assert ("menu", "main", "direct_dial") in trace.steps
    assert ("transfer", "1002 XML default") in ran(result)


async def test_menu_invalid_outcome_rejects(harness):
    trace, result = await harness.call("9200", ["5", "6"])
    assert ("menu", "main", "invalid") in trace.steps
    assert result.hangup_cause == "CALL_REJECTED"


async def test_menu_timeout_outcome_plays_exit_sound(harness):
    trace, result = await harness.call("9200", ["-", "-"])
    assert ("menu", "main", "timeout") in trace.steps
    played = [arg.rsplit("/", 1)[-1] for app, arg in ran(result) if app == "playback"]
    assert played[-1] == "goodbye.wav"


async def test_pattern_flow_captures_and_transfers(harness):
    trace, _ = await harness.call("9237", ["9"])
    assert trace.steps[0][0] == "shortcut"
    assert ("menu", "main", "9") in trace.steps
    assert trace.result == "hangup"
