"""Transfer primitives against what a real FreeSWITCH 1.11.1 sent (tests/data/fsreal_transfer/README.md):
the pure parsers read the captured messages, and the simulator is checked to behave the same way."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

from switchctl.esl.codec import Event, FrameParser, parse_plain_event
from switchctl.esl.inbound import InboundClient
from switchctl.sim import FreeSwitchSim, SimConfig, UserBehaviour
from switchctl.switch.call import DialOutcome, DialTarget, OriginateSpec
from switchctl.switch.freeswitch import FreeSwitchCall, FreeSwitchSwitch, dial_result_from_bridge
from switchctl.switch.freeswitch_legs import FreeSwitchLeg, LegTracker, conference_transfer_command, originate_failure

DATA = Path(__file__).parent / "data" / "fsreal_transfer"


def load(name: str) -> list[Event]:
    parser = FrameParser()
    frames = parser.feed((DATA / name).read_bytes())
    assert parser.at_frame_boundary and frames
    return [parse_plain_event(frame.body) for frame in frames]


def test_originate_job_bodies():
    jobs = [event.body.strip() for event in load("originate_jobs.raw")]
    assert jobs[0].startswith("+OK ")  # answered: the leg's uuid (ours, origination_uuid)
    failures = [originate_failure(body) for body in jobs[1:]]
    assert [(f.outcome, f.cause) for f in failures] == [
        (DialOutcome.BUSY, "USER_BUSY"), (DialOutcome.NO_ANSWER, "NO_ANSWER"),
        (DialOutcome.NO_ANSWER, "ORIGINATOR_CANCEL")]
    assert originate_failure("-ERR").cause == "NORMAL_TEMPORARY_FAILURE"


def test_peer_parked_away_ends_the_callers_bridge_with_the_caller_up():
    """take_leg + Leg.park on the real switch: A's bridge completed answered, SUCCESS, no hangup cause."""
    (done,) = load("take_park.a_bridge_complete.raw")
    assert done.get("Answer-State") == "answered"
    assert done.get("variable_last_bridge_hangup_cause") is None
    peer = done.get("variable_last_bridge_to")
    result = dial_result_from_bridge(done)
    assert (result.outcome, result.cause, result.peer_uuid, result.caller_hung_up) == (
        DialOutcome.ANSWERED, "NORMAL_CLEARING", peer, False)
    leg = SimpleNamespace(moves=1)
    import switchctl.switch.freeswitch_legs as legs_module

    original = legs_module.LEGS.get
    legs_module.LEGS.get = lambda uuid: leg if uuid == peer else original(uuid)  # type: ignore[method-assign]
    try:
        moved = FreeSwitchCall._transferred(result, (peer, 0))
    finally:
        legs_module.LEGS.get = original  # type: ignore[method-assign]
    assert (moved.cause, moved.caller_hung_up) == ("TRANSFERRED", False)


def test_kicked_caller_leaves_its_bridge_room_up():
    """Call.bridge: when the leg hangs up / is moved, the caller is kicked and its conference app completes
    with the caller still answered (the next operation on the socket then worked on the real switch)."""
    completions = [e for e in load("call_bridge.a_conference_complete.raw") if e.get("Application") == "conference"]
    assert [e.get("Answer-State") for e in completions] == ["answered", "answered", "hangup"]
    assert all(e.get("Application-Data", "").endswith("@switchctl_bridge") for e in completions)


def test_a_kicked_leg_whose_inline_extension_ends_hangs_up():
    """Why join_conference appends `park`: the first run (`conference:` alone) hung the kicked leg up."""
    names = [(e.name, e.get("Application")) for e in load("kicked_leg_conference_only.raw")]
    assert names[-2:] == [("CHANNEL_EXECUTE_COMPLETE", "conference"), ("CHANNEL_HANGUP_COMPLETE", None)]
    with_park = load("kicked_leg_conference_then_park.raw")
    conference = next(i for i, e in enumerate(with_park) if e.get("Application") == "conference")
    assert with_park[conference].get("Answer-State") == "answered"
    assert with_park[conference + 1].name == "CHANNEL_PARK"
    assert with_park[conference + 1].get("Answer-State") == "answered"


def test_park_after_bridge_parks_the_survivor():
    """uuid_bridge out of a music park; the other side hung up -> UNBRIDGE, then PARK (CS_PARK), still up."""
    events = load("park_after_bridge_survivor.raw")
    names = [e.name for e in events]
    unbridge = names.index("CHANNEL_UNBRIDGE")
    assert names[unbridge - 1] == "CHANNEL_BRIDGE"
    assert names[unbridge + 1] == "CHANNEL_PARK"
    assert events[unbridge + 1].get("Channel-State") == "CS_PARK"
    assert events[unbridge + 1].get("Answer-State") == "answered"
    music = [e for e in events if e.get("Application") == "endless_playback"]
    assert music and all(e.get("Answer-State") == "answered" for e in music)  # moved away, not hung up


def test_dtmf_of_a_dial_peer_and_of_a_room_member_reach_on_dtmf():
    """The inbound connection's DTMF events (RFC 2833 from the far end) route to the Leg by Unique-ID."""
    handlers: list = []
    client = SimpleNamespace(add_event_handler=handlers.append)
    tracker = LegTracker(SimpleNamespace(client=client))  # type: ignore[arg-type]
    for name in ("dial_peer_dtmf.raw", "room_member_dtmf.raw"):
        events = load(name)
        got: list[str] = []
        leg = FreeSwitchLeg(tracker, events[0].unique_id or "", None)
        tracker.legs[leg.uuid] = leg
        leg.on_dtmf(got.append)
        for event in events:
            handlers[0](event)
        assert "".join(got) == "*2", name
        del tracker.legs[leg.uuid]


# -- the simulator does what the real switch did ------------------------------------------------------
async def _sim_switch():
    sim = FreeSwitchSim(SimConfig(dialplan=[], users={"2001": UserBehaviour(answer_after=0.2)},
                                  media_speed=20.0, domain="127.0.0.1"))
    await sim.start()
    client = InboundClient("127.0.0.1", sim.esl_port, "ClueCon", events=("BACKGROUND_JOB",))
    await client.connect()
    switch = FreeSwitchSwitch("sim", client)
    switch.domain = "127.0.0.1"
    return sim, client, switch


async def _member_id(switch: FreeSwitchSwitch, room: str, uuid: str) -> None:
    for _ in range(200):
        if uuid in await switch.api(f"conference {room} list"):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{uuid} never joined {room}")


async def test_sim_kicked_leg_hangs_up_without_park_and_stays_up_with_it():
    sim, client, switch = await _sim_switch()
    try:
        bare = await switch.originate(OriginateSpec(DialTarget("phone", "2001"), timeout=5))
        kept = await switch.originate(OriginateSpec(DialTarget("phone", "2001"), timeout=5))
        assert (await switch.api(f"uuid_transfer {bare.uuid} conference:r1@default inline")).startswith("+OK")
        await kept.join_conference("r1")
        await _member_id(switch, "r1", bare.uuid)
        await _member_id(switch, "r1", kept.uuid)
        await switch.conference_remove("r1", bare.uuid)
        await switch.conference_remove("r1", kept.uuid)
        assert await asyncio.wait_for(bare.wait_hangup(), 5) == "NORMAL_CLEARING"
        await asyncio.sleep(0.2)
        assert kept.hangup_cause is None
        assert (await switch.api(f"uuid_exists {kept.uuid}")).strip() == "true"
        await kept.hangup()
    finally:
        await client.close()
        await sim.close()


def test_conference_command_parks_after_the_room():
    assert conference_transfer_command("U", "r1").endswith("'^^~conference:r1@default~park' inline")
