"""Simulator: uuid_bridge + park_after_bridge (captures s4 x2 / switch_ivr_bridge.c), uuid_break, the
conference app and api (s4 x4)."""

from __future__ import annotations

import asyncio

import pytest

from switchctl.esl.inbound import InboundClient
from switchctl.sim import FreeSwitchSim, Route, SimConfig, UserBehaviour


async def parked_pair(park_after_bridge: bool):
    sim = FreeSwitchSim(SimConfig(users={"2001": UserBehaviour(answer_after=0.1)}, media_speed=20.0))
    await sim.start()
    client = InboundClient("127.0.0.1", sim.esl_port, "ClueCon", events=("BACKGROUND_JOB",))
    await client.connect()
    var = ",park_after_bridge=true" if park_after_bridge else ""
    l1 = (await client.api(f"originate {{origination_uuid=l1{var}}}user/2001 &park()")).split()[1]
    l2 = (await client.api(f"originate {{origination_uuid=l2{var}}}user/2001 &park()")).split()[1]
    return sim, client, l1, l2


@pytest.mark.parametrize("park_after_bridge", [False, True])
async def test_uuid_bridge_then_kill_one_side(park_after_bridge):
    sim, client, l1, l2 = await parked_pair(park_after_bridge)
    try:
        assert await client.api(f"uuid_bridge {l1} {l2}") == f"+OK {l2}\n"
        await asyncio.sleep(0.05)
        assert sim.channels[l1].bridged_to is sim.channels[l2]
        await client.api(f"uuid_kill {l1}")
        await asyncio.sleep(0.05)
        # x2: without park_after_bridge FreeSWITCH hangs the other side up (NORMAL_CLEARING)
        assert (await client.api("show channels count")).split()[0] == ("1" if park_after_bridge else "0")
        if park_after_bridge:
            assert sim.channels[l2].running_app == "park"
    finally:
        await client.api("hupall")
        await client.close()
        await sim.close()


async def test_uuid_break_stops_a_playback_but_not_endless_playback():
    sim = FreeSwitchSim(SimConfig(dialplan=[Route("^1$", "playback", "tone_stream://%(100,100,400);loops=-1"),
                                            Route("^2$", "endless_playback", "tone_stream://%(100,100,400);loops=-1")],
                                  media_speed=20.0))
    await sim.start()
    client = InboundClient("127.0.0.1", sim.esl_port, "ClueCon", events=("BACKGROUND_JOB",))
    await client.connect()
    try:
        one, two = sim.place_call("1"), sim.place_call("2")
        await asyncio.sleep(0.05)
        await client.api(f"uuid_break {one.uuid}")
        await client.api(f"uuid_break {two.uuid}")
        result = await asyncio.wait_for(one.done, 2)
        assert result.apps[-1][2] == "FILE PLAYED" and result.hangup_by == "switch"
        await asyncio.sleep(0.05)
        assert not two.done.done()  # mod_dptools endless_playback loops on a BREAK
    finally:
        await client.close()
        await sim.close()


async def test_conference_kick_lets_the_member_continue_and_fires_maintenance_events():
    sim = FreeSwitchSim(SimConfig(dialplan=[Route("^c$", "conference", "r1@default")], media_speed=20.0))
    await sim.start()
    client = InboundClient("127.0.0.1", sim.esl_port, "ClueCon", events=("BACKGROUND_JOB",),
                           event_format="plain")
    actions = []
    client.add_event_handler(lambda e: actions.append(e.get("Action")) if e.name == "CUSTOM" else None)
    await client.connect()
    await client.send("event plain CUSTOM conference::maintenance")
    try:
        a, b = sim.place_call("c"), sim.place_call("c")
        await asyncio.sleep(0.05)
        listing = await client.api("conference r1 list")
        assert listing.count("\n") == 2 and listing.startswith("2;")
        assert await client.api("conference r1 kick 2") == "+OK kicked 2\n"
        result = await asyncio.wait_for(b.done, 2)
        # the app completed with the channel up; the extension then ended (x4 L2: NORMAL_CLEARING by the switch)
        assert result.apps[-1][0] == "conference" and result.hangup_by == "switch"
        a.hangup()
        await asyncio.wait_for(a.done, 2)
        await asyncio.sleep(0.05)
        assert actions == ["conference-create", "add-member", "add-member", "kick-member", "del-member",
                           "del-member", "conference-destroy"]
    finally:
        await client.close()
        await sim.close()
