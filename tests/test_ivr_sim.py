"""The IVR suite (tests/ivr_cases.py) on FreeSWITCH: the simulator, or a real one.

Calls are loopback calls originated over the switch's inbound ESL and steered with uuid_send_dtmf
(switchctl.calldriver), the switch's dialplan hands them to the controller's outbound socket, so
the path covers the flow runtime, the FreeSWITCH backend, the ESL codec and connections, and the
switch. The switch is our simulator, or a real FreeSWITCH when SWITCHCTL_FS_ESL=host:port:password
is set (SWITCHCTL_FS_OUTBOUND=host:port is where its deployed dialplan sends calls; the dialplan
rendered for tests/sites/ivr or for examples/phonebar: the same numbers, extensions and outbound
port): one table, every switch, the same expectations.

After the table, checks that only make sense on the event socket (bytes per call, broken frames).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from switchctl.calldriver import CallOutcome
from switchctl.config.site import load_site
from switchctl.esl.codec import FrameParser, decode
from switchctl.flows import FlowTrace
from switchctl.flowtest import target_from_env
from switchctl.sim import UserBehaviour
from switchctl.sitecheck import check_site
from tests.capturepaths import CAPTURES
from tests.ivr_cases import (
    BY_ID,
    CASE_IDS,
    CASES,
    SITE_FILE,
    HangUp,
    IvrCase,
    Observed,
    check,
    flows_differ_from_example,
)

_SILENT = ("silence_stream://", "tone_stream://")


@pytest.fixture
def site():
    return load_site(SITE_FILE)


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


# ------------------------------------------------------------------------------------------ the adapter


def presses(case: IvrCase) -> list[str]:
    """The driver plays one entry per digit collection: the timings are for callers on a clock."""
    return ["hangup" if isinstance(action, HangUp) else (action.digits or "-") for action in case.actions]


def _sounds(arg: str) -> list[str]:
    files = arg[len("file_string://"):].split("!") if arg.startswith("file_string://") else [arg]
    return [Path(f).stem for f in files if f and not f.startswith(_SILENT)]


def prompts_of(outcome: CallOutcome) -> list[str]:
    """The prompts the switch played, from the applications it ran (play_and_get_digits' 6th field is
    its prompt; its invalid-sound field is never used by the flows: silence)."""
    out: list[str] = []
    for app, arg, _response in outcome.apps:
        if app == "playback":
            out += _sounds(arg)
        elif app == "play_and_get_digits":
            out += _sounds(arg.split(" ")[5])
        elif app == "say":  # "en number iterated 5550123"
            _lang, _type, method, value = arg.split(" ")
            out.append(f"{'digits' if method == 'iterated' else 'number'}:{value}")
    return out


def observe(trace: FlowTrace | None, outcome: CallOutcome) -> Observed:
    assert trace is not None, f"no flow ran for the call to {outcome.dial}: {outcome.apps}"
    notes = [f"switch hangup cause {outcome.hangup_cause}"]
    cause = trace.cause
    if trace.result != "transferred" and outcome.hangup_cause != trace.cause:
        cause = f"{trace.cause} (the switch says {outcome.hangup_cause})"
    # A transfer out of the controller is FreeSWITCH's `transfer <n> XML default`; it landed when the
    # switch's dialplan went on to bridge the number (the simulator's dialplan is the rendered one).
    transfer_to = None
    apps = [(app, arg) for app, arg, _ in outcome.apps]
    for i, (app, arg) in enumerate(apps):
        if app == "transfer":
            number = arg.split(" ")[0]
            # the simulator bridges user/<n>; the rendered dialplan user/<n>@<domain>
            landed = any(a == "bridge" and (b == f"user/{number}" or b.startswith(f"user/{number}@"))
                         for a, b in apps[i:])
            transfer_to = number if landed else f"{number} (never bridged)"
    # Every call reaches the controller once: a transfer to another flow stays on the same socket.
    sockets = [app for app, _ in apps].count("socket")
    if sockets != 1:
        notes.append(f"{sockets} socket sessions")
        transfer_to = f"{transfer_to} after {sockets} socket sessions"
    return Observed(list(trace.steps), trace.result, cause, prompts_of(outcome), transfer_to, notes)


async def run_case(harness, case: IvrCase) -> Observed:
    trace, outcome = await harness.call(case.number, presses(case), caller=case.caller)
    assert not outcome.press_errors, outcome.press_errors
    return observe(trace, outcome)


# ------------------------------------------------------------------------------------------ the table


def test_the_suite_flows_are_the_example_flows_with_short_timeouts():
    assert flows_differ_from_example() == []
    assert len({case.caller for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
async def test_ivr_case(harness, case: IvrCase):
    check(case, await run_case(harness, case))


async def test_concurrent_calls_are_independent(harness):
    batch = list(CASES) * 3
    seen = await asyncio.gather(*(run_case(harness, case) for case in batch))
    for case, observed in zip(batch, seen):
        check(case, observed)
    assert harness.controller.stats.active == 0


async def test_the_controller_keeps_serving_after_caller_hangups(harness):
    for case_id in ("caller_hangs_up_in_the_middle_of_a_collect", "say_callers_number_as_digits",
                    "menu_to_submenu_and_back_then_timeouts"):
        check(BY_ID[case_id], await run_case(harness, BY_ID[case_id]))
    assert harness.controller.stats.active == 0


# ------------------------------------------------------------------------------------------ the event socket only


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
    case = BY_ID["menu_to_submenu_and_back_then_timeouts"]
    check(case, await run_case(harness, case))
    assert await reader.read() == b""  # the controller dropped the broken session
    writer.close()
    assert any("protocol" in r.getMessage().lower() or "protocol" in str(r.__dict__.get("error", "")).lower()
               for r in caplog.records)


async def test_a_switch_closing_mid_command_ends_only_that_call(harness):
    port = harness.harness.server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readuntil(b"\n\n")  # `connect` sent by the controller, no reply: close now
    writer.close()
    case = BY_ID["operator_option_transfers_to_site_operator"]
    check(case, await run_case(harness, case))


def test_connect_reply_parses_as_channel_data():
    raw = CAPTURES / "freeswitch" / "outbound_sipp_dtmf_command_reply_connect.raw"
    frames = FrameParser().feed(raw.read_bytes())
    message = decode(frames[0])
    assert message.reply_text.startswith("+OK")
