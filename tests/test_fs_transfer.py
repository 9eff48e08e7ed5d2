"""Transfer / conference primitives of the FreeSWITCH backend against the simulator: originate,
take_leg + park (the dial ends TRANSFERRED), Leg.bridge, Call.hold + Call.bridge, conferences, DTMF
from a scripted far end. Every scenario ends with no channel left on the switch."""

from __future__ import annotations

import asyncio

import pytest

from switchctl.esl.inbound import InboundClient
from switchctl.esl.outbound import OutboundServer, OutboundSession
from switchctl.sim import FreeSwitchSim, Route, SimConfig, UserBehaviour
from switchctl.switch.call import (
    CallGone, DialAnswer, DialFailed, DialOutcome, DialSpec, DialTarget, OriginateSpec,
)
from switchctl.switch.freeswitch import CALL_EVENTS, FreeSwitchCall, FreeSwitchSwitch, call_info_from_channel_data
from switchctl.switch.freeswitch_legs import (
    conference_transfer_command,
    member_id_for,
    originate_command,
    park_transfer_command,
)

SPEED = 20.0
USERS = {
    "2001": UserBehaviour(answer_after=0.5),
    "2002": UserBehaviour(answer_after=0.5, dtmf=((1.0, "*2201#"),)),
    "2003": UserBehaviour(busy=True),
    "2004": UserBehaviour(reject=True),
    "2005": UserBehaviour(answer_after=None),
    "2006": UserBehaviour(answer_after=0.5, hangup_after=3.0),
}


def phone(ext):
    return DialTarget("phone", ext)


class Env:
    def __init__(self, sim, switch):
        self.sim, self.switch = sim, switch

    async def count(self) -> int:
        return int((await self.switch.api("show channels count")).split()[0] or 0)


async def run(scenario, *, caller_hangup_after=None, no_call=False):
    """`scenario(call, env)` on one simulated call (or `scenario(None, env)`); returns its value and env."""
    outcome = {}
    server = None

    async def handler(session: OutboundSession) -> None:
        data = await session.connect()
        await session.subscribe(CALL_EVENTS)
        await session.linger()
        call = FreeSwitchCall(session, call_info_from_channel_data(data, "sim"))
        try:
            await call.answer()
            outcome["value"] = await scenario(call, env)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["value"] = exc
        finally:
            await call.hangup()

    server = OutboundServer(handler, port=0)
    await server.start()
    sim = FreeSwitchSim(SimConfig(dialplan=[Route(r"^9000$", "socket", f"127.0.0.1:{server.port} async full")],
                                  users=USERS, media_speed=SPEED, domain="127.0.0.1"))
    await sim.start()
    client = InboundClient("127.0.0.1", sim.esl_port, "ClueCon", events=("BACKGROUND_JOB",))
    await client.connect()
    env = Env(sim, FreeSwitchSwitch("sim", client))
    try:
        if no_call:
            outcome["value"] = await asyncio.wait_for(scenario(None, env), 10)
        else:
            sim_call = sim.place_call("9000", "1001", hangup_after=caller_hangup_after)
            await asyncio.wait_for(sim_call.done, 10)
        for _ in range(200):
            if await env.count() == 0 and not sim.channels:
                break
            await asyncio.sleep(0.01)
        assert await env.count() == 0, "channels left on the switch"
        assert not sim.channels
    finally:
        await client.close()
        await sim.close()
        await server.close()
    return outcome["value"], env


def test_command_shapes():
    spec = OriginateSpec(phone("2001"), timeout=12.5, caller_id_number="555", variables={"x_id": "7"})
    assert originate_command(spec, "U", "user/2001@d") == (
        "originate {origination_uuid=U,ignore_early_media=true,originate_timeout=13,park_after_bridge=true,"
        "origination_caller_id_number=555,x_id=7}user/2001@d &park()")
    assert park_transfer_command("U", None) == "uuid_transfer U park inline"
    assert park_transfer_command("U", "tone_stream://%(2000,4000,440,480);loops=-1") == (
        "uuid_transfer U '^^~set:playback_terminators=none~playback:tone_stream://%(2000,4000,440,480);loops=-1~park'"
        " inline")
    # a real 1.11.1 hangs up a kicked member whose inline extension ends with its conference
    assert conference_transfer_command("U", "room1") == "uuid_transfer U '^^~conference:room1@default~park' inline"
    assert conference_transfer_command("U", "b-1", "switchctl_bridge") == (
        "uuid_transfer U '^^~conference:b-1@switchctl_bridge~park' inline")
    assert member_id_for('[{"members":[{"id":3,"uuid":"a"},{"id":2,"uuid":"b"}]}]', "b") == "2"


async def test_originate_answered_then_hung_up_by_owner():
    async def scenario(_, env):
        leg = await env.switch.originate(OriginateSpec(phone("2001"), timeout=5))
        assert leg.answered_at_us > 0 and leg.hangup_cause is None
        assert await env.count() == 1
        await leg.hangup()
        return leg.hangup_cause

    cause, _ = await run(scenario, no_call=True)
    assert cause == "NORMAL_CLEARING"


@pytest.mark.parametrize("ext,outcome,cause", [
    ("2003", DialOutcome.BUSY, "USER_BUSY"),
    ("2004", DialOutcome.REJECTED, "CALL_REJECTED"),
    ("2005", DialOutcome.NO_ANSWER, "NO_ANSWER"),
    ("9999", DialOutcome.FAILED, "SUBSCRIBER_ABSENT"),
])
async def test_originate_failures(ext, outcome, cause):
    async def scenario(_, env):
        with pytest.raises(DialFailed) as failed:
            await env.switch.originate(OriginateSpec(phone(ext), timeout=2))
        return failed.value

    failed, _ = await run(scenario, no_call=True)
    assert (failed.outcome, failed.cause) == (outcome, cause)


async def test_originate_cancelled_leaves_no_leg():
    async def scenario(_, env):
        task = asyncio.ensure_future(env.switch.originate(OriginateSpec(phone("2005"), timeout=30)))
        for _ in range(100):
            if await env.count() == 1:
                break
            await asyncio.sleep(0.01)
        assert await env.count() == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return True

    assert (await run(scenario, no_call=True))[0] is True


async def dial_and_take(call, env, ext="2001"):
    """A dial whose answered peer is taken as a Leg; returns (dial task, leg)."""
    taken: asyncio.Future = asyncio.get_running_loop().create_future()

    async def on_answer(answer: DialAnswer) -> None:
        taken.set_result(await env.switch.take_leg(answer.peer_uuid))

    dial = asyncio.ensure_future(call.dial(DialSpec(groups=[[phone(ext)]], on_answer=on_answer)))
    return dial, await taken


async def test_take_leg_park_ends_the_dial_transferred_both_up():
    async def scenario(call, env):
        dial, leg_b = await dial_and_take(call, env)
        await leg_b.park("tone_stream://%(2000,4000,440,480);loops=-1")
        result = await asyncio.wait_for(dial, 5)
        assert await env.count() == 2  # A and B both up
        assert leg_b.hangup_cause is None and call.hangup_cause is None
        await leg_b.hangup()
        return result

    result, _ = await run(scenario)
    assert result.outcome is DialOutcome.ANSWERED and result.cause == "TRANSFERRED"
    assert not result.caller_hung_up and result.peer_uuid


async def test_consult_bridge_then_complete_with_hold_and_call_bridge():
    """Attended: B parked, A on hold, C originated, B consults C, B hangs up, A bridged to C; C hangs up."""
    async def scenario(call, env):
        dial, leg_b = await dial_and_take(call, env)
        await leg_b.park()
        await asyncio.wait_for(dial, 5)
        await call.hold()
        leg_c = await env.switch.originate(OriginateSpec(phone("2006"), timeout=5))
        await leg_b.bridge(leg_c)
        assert await env.count() == 3
        await leg_b.hangup()
        await asyncio.sleep(0.05)
        assert leg_c.hangup_cause is None  # parked after the bridge, not hung up
        result = await asyncio.wait_for(call.bridge(leg_c), 5)  # C hangs up 3 media s after answering
        return result, leg_c

    (result, leg_c), _ = await run(scenario)
    assert result.outcome is DialOutcome.ANSWERED and not result.caller_hung_up
    assert result.cause == "NORMAL_CLEARING" and result.peer_uuid == leg_c.uuid


async def test_call_bridge_ends_transferred_when_the_leg_is_moved():
    async def scenario(call, env):
        leg_c = await env.switch.originate(OriginateSpec(phone("2001"), timeout=5))
        bridge = asyncio.ensure_future(call.bridge(leg_c))
        await asyncio.sleep(0.1)
        await leg_c.park()
        result = await asyncio.wait_for(bridge, 5)
        assert leg_c.hangup_cause is None and call.hangup_cause is None
        await leg_c.hangup()
        return result

    result, _ = await run(scenario)
    assert result.cause == "TRANSFERRED" and not result.caller_hung_up


async def test_caller_hangs_up_during_call_bridge_leg_stays_parked():
    legs = []

    async def scenario(call, env):
        leg_c = await env.switch.originate(OriginateSpec(phone("2001"), timeout=5))
        legs.append(leg_c)
        return await call.bridge(leg_c)

    async def owner():
        pass

    outcome = {}

    async def runner(call, env):
        result = await scenario(call, env)
        await asyncio.sleep(0.1)
        outcome["parked_up"] = legs[0].hangup_cause is None
        await legs[0].hangup()
        return result

    result, _ = await run(runner, caller_hangup_after=2.0)
    assert result.caller_hung_up and outcome["parked_up"]


async def test_conference_of_a_and_two_legs_then_remove():
    async def scenario(call, env):
        leg_b = await env.switch.originate(OriginateSpec(phone("2001"), timeout=5))
        leg_c = await env.switch.originate(OriginateSpec(phone("2001"), timeout=5))
        await leg_b.join_conference("room1")
        await leg_c.join_conference("room1")
        conf = asyncio.ensure_future(call.conference("room1"))
        for _ in range(100):
            if call.uuid in await env.switch.api("conference room1 list"):
                break
            await asyncio.sleep(0.01)
        assert (await env.switch.api("conference room1 list")).count("\n") == 3
        await env.switch.conference_remove("room1", call.uuid)
        left = await asyncio.wait_for(conf, 5)
        assert call.hangup_cause is None
        await leg_b.hangup()
        await leg_c.hangup()
        return left

    left, _ = await run(scenario)
    assert left == "left"


async def test_dtmf_from_a_scripted_far_end_reaches_the_leg():
    async def scenario(call, env):
        digits: list[str] = []
        got = asyncio.Event()

        async def on_answer(answer: DialAnswer) -> None:
            leg = await env.switch.take_leg(answer.peer_uuid)

            def on_digit(digit: str) -> None:
                digits.append(digit)
                if digit == "#":
                    got.set()
                    asyncio.ensure_future(leg.park())

            leg.on_dtmf(on_digit)
            env.leg = leg

        result = await asyncio.wait_for(call.dial(DialSpec(groups=[[phone("2002")]], on_answer=on_answer)), 5)
        await env.leg.hangup()
        return "".join(digits), result

    (digits, result), _ = await run(scenario)
    assert digits == "*2201#" and result.cause == "TRANSFERRED"


async def test_call_gone_in_conference_when_the_caller_hangs_up():
    async def scenario(call, env):
        with pytest.raises(CallGone):
            await call.conference("room2")
        return True

    assert (await run(scenario, caller_hangup_after=1.0))[0] is True
