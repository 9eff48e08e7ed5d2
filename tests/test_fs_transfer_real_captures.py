"""Transfer primitives against what a real FreeSWITCH 1.11.1 sent (tests/data/fsreal_transfer/README.md):
the pure parsers read the captured messages, and the simulator is checked to behave the same way."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

from switchctl.esl.codec import Event, FrameParser, parse_json_event, parse_plain_event
from switchctl.esl.inbound import InboundClient
from switchctl.sim import FreeSwitchSim, SimConfig, UserBehaviour
from switchctl.switch.call import DialOutcome, DialTarget, OriginateSpec
from switchctl.switch.freeswitch import FreeSwitchCall, FreeSwitchSwitch, dial_result_from_bridge
from switchctl.switch.freeswitch_legs import (
    FreeSwitchLeg,
    LegTracker,
    conference_transfer_command,
    originate_failure,
    park_transfer_command,
)

DATA = Path(__file__).parent / "data" / "fsreal_transfer"


def load(name: str) -> list[Event]:
    parser = FrameParser()
    frames = parser.feed((DATA / name).read_bytes())
    assert parser.at_frame_boundary and frames
    return [parse_json_event(frame.body) if frame.body.startswith(b"{") else parse_plain_event(frame.body)
            for frame in frames]


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


def _transferor_keys_while_the_target_rang(name: str) -> tuple[str, str]:
    """A semi-attended transfer through the Controller (tests/data/fsreal_transfer/README.md, "Whole
    transfers"): the transferor's far end pressed *22006# then, 1.2 s after the `#`, *2 while the target
    rang (3 s). Returns the transferor's DTMF events as (keys up to the `#`, keys between the `#` and
    the target's answer = its originate's BACKGROUND_JOB +OK)."""
    events = load(name)
    transferor = next(e.unique_id for e in events if e.name == "DTMF" and e.get("Channel-Name", "").endswith("/2001"))
    jobs = [e for e in events if e.name == "BACKGROUND_JOB"]
    target_job = next(e for e in jobs if "sofia/gateway/gwring/2006" in e.get("Job-Command-Arg", ""))
    body = target_job.body or ""
    assert (body.decode() if isinstance(body, bytes) else body).startswith("+OK")
    answered_at = int(target_job.get("Event-Date-Timestamp") or 0)
    keys = [(int(e.get("Event-Date-Timestamp") or 0), e.get("DTMF-Digit") or "") for e in events
            if e.name == "DTMF" and e.unique_id == transferor]
    hash_at = next(t for t, d in keys if d == "#")
    assert answered_at - hash_at > 2_500_000  # the target rang 3 s: time enough for the *2 at +1.2 s
    return ("".join(d for t, d in keys if t <= hash_at),
            "".join(d for t, d in keys if hash_at < t < answered_at))


def test_keys_over_endless_playback_ringback_fire_no_dtmf_event():
    """Leg.park(music) was `endless_playback`: mod_dptools plays it with no input callback, so the keys
    stay queued and no DTMF event fires; the *2 was lost (the target answered, the consultation began)."""
    before, while_ringing = _transferor_keys_while_the_target_rang("endless_playback_hides_dtmf.raw")
    assert (before, while_ringing) == ("*22006#", "")
    after = [e for e in load("endless_playback_hides_dtmf.raw") if e.name == "DTMF"]
    assert "".join(e.get("DTMF-Digit") or "" for e in after).count("*") == 2  # the transferor's and its echo


def test_keys_over_playback_ringback_reach_the_feature():
    """With `playback` (playback_terminators=none) the same *2 came as DTMF events while the target rang:
    the transfer went on semi-attended and completed when the target answered."""
    before, while_ringing = _transferor_keys_while_the_target_rang("playback_park_dtmf.raw")
    assert (before, while_ringing) == ("*22006#", "*2")
    command = park_transfer_command("U", "tone_stream://%(2000,4000,440,480);loops=-1")
    assert "~playback:" in command and "endless_playback" not in command
    assert "~set:playback_terminators=none~" in command  # the default `*` would stop the ringback


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


async def test_sim_keys_of_a_leg_parked_with_music_fire_dtmf_only_with_playback():
    """The simulator agrees: a leg in endless_playback keeps its keys queued (no DTMF event); parked by
    park_transfer_command (playback, no terminators) each key fires its event and the music goes on."""
    sim, client, switch = await _sim_switch()
    try:
        got: dict[str, list[str]] = {"endless": [], "park": []}
        tone = "tone_stream://%(2000,4000,440,480);loops=-1"
        legs = {}
        for name in got:
            leg = await switch.originate(OriginateSpec(DialTarget("phone", "2001"), timeout=5))
            leg.on_dtmf(got[name].append)
            legs[name] = leg
        assert (await switch.api(f"uuid_transfer {legs['endless'].uuid} "
                                 f"'^^~endless_playback:{tone}~park' inline")).startswith("+OK")
        await legs["park"].park(tone)
        await asyncio.sleep(0.1)
        for name, leg in legs.items():
            channel = sim.channels[leg.uuid]
            for digit in "*2":
                channel.receive_dtmf(digit)
        for _ in range(200):
            if got["park"] == ["*", "2"]:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert got == {"endless": [], "park": ["*", "2"]}
        assert sim.channels[legs["park"].uuid].running_app == "playback"  # no terminator: still playing
        for leg in legs.values():
            await leg.hangup()
    finally:
        await client.close()
        await sim.close()
