"""The example phone-bar IVR end to end: controller + real ESL stack + a switch.

Calls are loopback calls originated over the switch's inbound ESL and steered with uuid_send_dtmf
(switchctl.calldriver), the switch's dialplan hands them to the controller's outbound socket, so
the path covers the flow runtime, the FreeSWITCH backend, the ESL codec and connections, and the
switch. The switch is our simulator, or a real FreeSWITCH when SWITCHCTL_FS_ESL=host:port:password
is set (SWITCHCTL_FS_OUTBOUND=host:port is where its deployed dialplan sends calls): one suite, two
targets, the same expectations.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from switchctl.config.site import load_site
from switchctl.esl.codec import FrameParser, decode
from switchctl.flowtest import target_from_env
from switchctl.sim import UserBehaviour
from switchctl.sitecheck import check_site
from tests.capturepaths import CAPTURES

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "phonebar" / "site.yaml"


@pytest.fixture
def site():
    return load_site(EXAMPLE)


@pytest.fixture
def flows(site):
    result = check_site(site)
    assert result.ok, result.report()
    return result.flows


@pytest.fixture
async def harness(site, flows):
    users = {p.extension: UserBehaviour(registered=True, answer_after=0.2, hangup_after=0.5) for p in site.phones}
    async with target_from_env(site, flows, media_speed=100.0, users=users) as target:
        yield target


def apps(result) -> list[str]:
    return [app for app, _arg, _resp in result.apps]


async def test_menu_to_submenu_and_back_then_timeouts(harness):
    trace, result = await harness.call("9000", ["1", "9"])
    assert trace.path == ["answer", "main_menu", "rates_menu", "main_menu", "goodbye"]
    assert [s[2] for s in trace.steps[:4]] == ["next", "1", "9", "timeout"]
    assert trace.result == "hangup"
    assert result.hangup_cause == "NORMAL_CLEARING"
    prompts = []
    for app, arg, _ in result.apps:
        if app == "play_and_get_digits":
            prompts.append(arg.split(" ")[5].rsplit("/", 1)[-1])
        elif app == "playback":
            prompts.append(arg.rsplit("/", 1)[-1])
    # back in the main menu: its greeting, two silent retries with the short greeting, the exit sound
    assert prompts[-4:] == ["welcome.wav", "main_short.wav", "main_short.wav", "goodbye.wav"]


async def test_long_greeting_first_then_short(harness):
    _trace, result = await harness.call("9000", ["-", "-", "-"])
    pagd = [arg for app, arg, _ in result.apps if app == "play_and_get_digits"]
    assert "welcome.wav" in pagd[0]
    assert all("main_short.wav" in arg for arg in pagd[1:])


async def test_invalid_entries_reach_invalid_outcome(harness):
    trace, result = await harness.call("9000", ["7", "8", "5"])
    assert trace.steps[1][2] == "invalid"
    assert trace.path[-1] == "goodbye"
    assert result.hangup_cause == "NORMAL_CLEARING"


async def test_direct_dial_of_a_booth_transfers_to_it(harness):
    trace, result = await harness.call("9000", ["1005"])
    assert trace.steps[1][2] == "direct_dial"
    assert trace.result == "transferred"
    assert ("transfer", "1005 XML default") in [(a, arg) for a, arg, _ in result.apps]
    assert "bridge" in apps(result)  # the switch's dialplan bridged the booth after the transfer


async def test_operator_option_transfers_to_site_operator(harness):
    trace, result = await harness.call("9000", ["0"])
    assert trace.path[-2:] == ["operator", "to_operator"]
    assert ("transfer", "1000 XML default") in [(a, arg) for a, arg, _ in result.apps]


async def test_say_callers_number_as_digits(harness):
    trace, result = await harness.call("9000", ["2", "hangup"], caller="5550123")
    assert "say_number" in trace.path
    assert ("say", "en number iterated 5550123") in [(a, arg) for a, arg, _ in result.apps]
    assert trace.result == "caller_hangup"


async def test_transfer_to_another_flow_in_process(harness):
    trace, result = await harness.call("9000", ["3"])
    assert ("hours", "message", "next") in trace.steps
    assert trace.result == "hangup"
    assert apps(result).count("socket") == 1  # a flow transfer stays on the same socket


async def test_caller_hangs_up_in_the_middle_of_a_collect(harness):
    trace, result = await harness.call("9000", ["hangup"])
    assert trace.result == "caller_hangup"
    assert result.caller_hangup_cause == "NORMAL_CLEARING"
    # and the controller keeps serving: the next call runs normally
    trace2, _ = await harness.call("9000", ["1", "9"])
    assert trace2.result == "hangup"


async def test_concurrent_calls_are_independent(harness):
    scripts = [["1", "9"], ["0"], ["1005"], ["hangup"], ["7", "8", "5"]] * 4
    results = await asyncio.gather(*(harness.call("9000", s) for s in scripts))
    outcomes = [trace.result for trace, _ in results]
    assert outcomes == [{"1": "hangup", "0": "transferred", "1005": "transferred", "hangup": "caller_hangup",
                         "7": "hangup"}[s[0]] for s in scripts]
    assert harness.controller.stats.active == 0


async def test_esl_bytes_per_call_stay_small(harness):
    before_in = harness.controller.stats.esl_bytes_in
    await harness.call("9000", ["1", "9", "hangup"])
    used = harness.controller.stats.esl_bytes_in - before_in
    # answer + 3 menu tries + connect reply; with `myevents` this path costs about twice as much
    assert used < 47_000, used


async def test_a_broken_frame_on_one_call_does_not_disturb_others(harness, caplog):
    """A 'switch' that connects and sends garbage: that session fails with a clear error, others go on."""
    caplog.set_level(logging.INFO, logger="switchctl")
    port = harness.harness.server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert (await reader.readuntil(b"\n\n")).startswith(b"connect")
    writer.write(b"Content-Type: command/reply\nthis line has no colon\n\n")
    await writer.drain()
    ok_trace, _ = await harness.call("9000", ["1", "9"])
    assert ok_trace.result == "hangup"
    assert await reader.read() == b""  # the controller dropped the broken session
    writer.close()
    assert any("protocol" in r.getMessage().lower() or "protocol" in str(r.__dict__.get("error", "")).lower()
               for r in caplog.records)


async def test_a_switch_closing_mid_command_ends_only_that_call(harness):
    port = harness.harness.server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readuntil(b"\n\n")  # `connect` sent by the controller, no reply: close now
    writer.close()
    trace, _ = await harness.call("9000", ["0"])
    assert trace.result == "transferred"


def test_connect_reply_parses_as_channel_data():
    raw = CAPTURES / "freeswitch" / "outbound_sipp_dtmf_command_reply_connect.raw"
    frames = FrameParser().feed(raw.read_bytes())
    message = decode(frames[0])
    assert message.reply_text.startswith("+OK")
