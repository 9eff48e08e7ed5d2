"""The simulator's loopback endpoint against the captures (freeswitch/inbound_plain, outbound_loopback) and
mod_loopback: `originate loopback/<dest>/<context> &park`, DTMF across the legs, hangup in both directions."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse

import pytest

from switchctl.sim import FreeSwitchSim, Route, SimConfig
from tests.test_sim_client import (
    CAPTURES,
    EslClient,
    Frame,
    OutboundServer,
    sendmsg_execute,
)

CAPTURED = CAPTURES / "freeswitch"
SPEED = 20.0


async def inbound(sim: FreeSwitchSim, events: str = "ALL") -> EslClient:
    client = await EslClient.connect(sim.esl_port)
    await client.read_frame()  # auth/request
    assert (await client.command("auth ClueCon")).reply_text.startswith("+OK")
    assert (await client.command(f"event plain {events}")).reply_text.startswith("+OK")
    return client


def job_result(frame: Frame) -> str:
    """The body of a BACKGROUND_JOB event (after the event's own headers)."""
    return frame.body.decode().split("\n\n", 1)[1]


def summary(frames: list[Frame], legs: dict[str, str]) -> list[tuple[str, str, str]]:
    """(leg, event, detail) of channel events, detail = the state / call state / app / digit they carry."""
    out = []
    for frame in frames:
        event = frame.event
        leg = legs.get(event.get("Unique-ID", ""))
        if leg is None or not event.get("Event-Name", "").startswith(("CHANNEL_", "DTMF")):
            continue
        name = event["Event-Name"]
        detail = {"CHANNEL_STATE": event.get("Channel-State"), "CHANNEL_CALLSTATE": event.get("Channel-Call-State"),
                  "CHANNEL_EXECUTE": event.get("Application"), "CHANNEL_EXECUTE_COMPLETE": event.get("Application"),
                  "DTMF": event.get("DTMF-Digit")}.get(name, "")
        out.append((leg, name, detail or ""))
    return out


def captured_inbound_summary() -> tuple[list[tuple[str, str, str]], str, str]:
    """The inbound_plain capture's channel events in Event-Sequence order (the order FreeSWITCH made them)."""
    text = (CAPTURED / "inbound_plain/inbound_plain.transcript.txt").read_text(errors="replace")
    frames = []
    for block in re.split(r"\n(?=<<<<< RECV|>>>>> SENT)", text):
        if "text/event-plain" not in block.split("\n", 1)[0]:
            continue
        headers = {}
        for line in block.split("\n")[1:]:
            name, _, value = line.partition(": ")
            if value:
                headers.setdefault(name, urllib.parse.unquote(value))
        frames.append(Frame(headers={"Content-Type": "text/event-plain"}, event=headers))
    frames.sort(key=lambda f: int(f.event["Event-Sequence"]))
    a = next(f.event["Unique-ID"] for f in frames if f.event.get("Channel-Name") == "loopback/7703-a")
    b = next(f.event["Unique-ID"] for f in frames if f.event.get("Channel-Name") == "loopback/7703-b")
    return summary(frames, {a: "a", b: "b"}), a, b


async def read_until(client: EslClient, predicate, timeout: float = 5.0) -> Frame:
    return await client.next(predicate, timeout=timeout)


def is_event(name: str, uuid: str | None = None):
    return lambda f: f.event.get("Event-Name") == name and (uuid is None or f.event.get("Unique-ID") == uuid)


async def test_originate_creates_two_legs_in_the_captured_order_and_dtmf_crosses_over():
    """inbound_plain: bgapi originate {cid}loopback/7703/default &park; the B leg runs the dialplan (here `park`,
    answered with uuid_answer), originate returns the A leg's uuid once answered; DTMF sent to A reaches B."""
    sim = FreeSwitchSim(SimConfig(dialplan=[Route(r"^7703$", "park")], media_speed=SPEED))
    await sim.start()
    try:
        client = await inbound(sim)
        reply = await client.command("bgapi originate {origination_caller_id_number=5551234,"
                                     "origination_caller_id_name=ESLTest}loopback/7703/default &park")
        assert reply.reply_text.startswith("+OK Job-UUID: ")
        park = await read_until(client, is_event("CHANNEL_PARK"))
        b_uuid = park.event["Unique-ID"]
        assert (await client.command(f"api uuid_answer {b_uuid}")).body == b"+OK\n"
        job = await read_until(client, is_event("BACKGROUND_JOB"))
        assert job_result(job).startswith("+OK ")
        a_uuid = job_result(job).split()[1]
        await read_until(client, is_event("CHANNEL_PARK", a_uuid))
        dtmf = await client.command(f"api uuid_send_dtmf {a_uuid} 12#")
        assert dtmf.body.decode() == f"+OK {a_uuid} sent DTMF 12#.\n"
        for _ in range(3):
            await read_until(client, is_event("DTMF", b_uuid))
        assert (await client.command(f"api uuid_kill {a_uuid} NORMAL_CLEARING")).body == b"+OK\n"
        await read_until(client, is_event("CHANNEL_DESTROY", a_uuid))
        await read_until(client, is_event("CHANNEL_DESTROY", b_uuid))
        client.close()
    finally:
        await sim.close()

    frames = client.received
    ours = summary(frames, {a_uuid: "a", b_uuid: "b"})
    captured, cap_a, cap_b = captured_inbound_summary()

    # creation up to the B leg's routing: exactly the captured order (interleaving of both legs included)
    setup = captured[:captured.index(("b", "CHANNEL_STATE", "CS_ROUTING")) + 1]
    assert ours[:len(setup)] == setup
    # the answer: A first (INDICATE_ANSWER from B), no CHANNEL_PROGRESS_MEDIA on either leg
    answer = [e for e in ours if e[1] in ("CHANNEL_ANSWER", "CHANNEL_PROGRESS_MEDIA")]
    assert answer == [("a", "CHANNEL_ANSWER", ""), ("b", "CHANNEL_ANSWER", "")]
    # the A leg alone, from its answer to its destruction, is the captured A leg (no CALL_UPDATE/recv_dtmf here)
    a_captured = [e for e in captured if e[0] == "a" and e[1] not in ("CALL_UPDATE", "DTMF")]
    assert [e for e in ours if e[0] == "a"] == a_captured
    # DTMF sent to A is dequeued on B; the A leg's hangup comes first and takes B down with its cause
    assert [e[2] for e in ours if e[1] == "DTMF"] == ["1", "2", "#"]
    hangups = [(e[0], e[1]) for e in ours if e[1] in ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE")]
    assert hangups[0] == ("a", "CHANNEL_HANGUP") and ("b", "CHANNEL_HANGUP") in hangups

    events = {(f.event.get("Unique-ID"), f.event["Event-Name"]): f.event for f in frames if f.event}
    # BACKGROUND_JOB comes after both answers and before the A leg runs &park (captured)
    names = [(f.event.get("Unique-ID"), f.event.get("Event-Name")) for f in frames if f.event]
    assert names.index((None, "BACKGROUND_JOB")) > names.index((b_uuid, "CHANNEL_ANSWER"))
    assert names.index((None, "BACKGROUND_JOB")) < names.index((a_uuid, "CHANNEL_EXECUTE"))
    a_create, b_create = events[(a_uuid, "CHANNEL_CREATE")], events[(b_uuid, "CHANNEL_CREATE")]
    assert a_create["variable_other_loopback_leg_uuid"] == b_uuid
    assert b_create["variable_other_loopback_leg_uuid"] == a_uuid
    assert (a_create["Call-Direction"], b_create["Call-Direction"]) == ("outbound", "inbound")
    assert (a_create["variable_loopback_leg"], b_create["variable_loopback_leg"]) == ("A", "B")
    for created in (a_create, b_create):
        assert created["Caller-Caller-ID-Number"] == "5551234"
        assert created["Caller-Caller-ID-Name"] == "ESLTest"
        assert created["Caller-Context"] == "default" and created["Caller-Destination-Number"] == "7703"
        assert created["Caller-Source"] == "mod_loopback"
        assert created["variable_origination_caller_id_name"] == "ESLTest"
    dtmf_event = events[(b_uuid, "DTMF")]
    assert (dtmf_event["DTMF-Duration"], dtmf_event["DTMF-Source"]) == ("2000", "UNKNOWN")  # outbound_loopback
    for uuid in (a_uuid, b_uuid):
        assert events[(uuid, "CHANNEL_HANGUP_COMPLETE")]["Hangup-Cause"] == "NORMAL_CLEARING"
    assert cap_a != cap_b  # the capture has two legs too


async def captured_controller(client: EslClient, sim: FreeSwitchSim, seen: dict[str, str]) -> None:
    """What the capture's outbound server did (outbound_loopback/call001.transcript.txt), plus the test's own
    `uuid_send_dtmf <A> 42#` over inbound ESL once play_and_get_digits started."""
    connect = await client.command("connect")
    uuid = connect.event["Unique-ID"]
    seen.update(connect.event)
    await client.command("myevents")
    await client.command("linger")
    await client.command(f"api uuid_getvar {uuid} esl_test")
    client.send(sendmsg_execute("answer", event_uuid="e-answer"))
    await client.event("CHANNEL_EXECUTE_COMPLETE", Application_UUID="e-answer")
    client.send(sendmsg_execute("playback", "tone_stream://%(400,100,600);loops=1", "e-play"))
    await client.event("CHANNEL_EXECUTE_COMPLETE", Application_UUID="e-play")
    client.send(sendmsg_execute(
        "play_and_get_digits", r"1 4 1 8000 # tone_stream://%(200,0,500) silence_stream://250 esl_digits \d+ 2000",
        "e-pagd"))
    await client.event("CHANNEL_EXECUTE", Application_UUID="e-pagd")
    caller = await inbound(sim, "BACKGROUND_JOB")
    await caller.command(f"api uuid_send_dtmf {connect.event['variable_other_loopback_leg_uuid']} 42#")
    caller.close()
    done = await client.event("CHANNEL_EXECUTE_COMPLETE", Application_UUID="e-pagd")
    seen["esl_digits"] = done.event.get("variable_esl_digits", "")
    client.send("sendmsg\ncall-command: hangup\nhangup-cause: NORMAL_CLEARING\n\n")
    await client.next(lambda f: f.content_type == "text/disconnect-notice")
    await asyncio.sleep(0.05)
    client.send("exit\n\n")
    await client.drain()


async def test_outbound_socket_sees_the_captured_loopback_conversation():
    index = json.loads((CAPTURED / "outbound_loopback/call001.index.json").read_text())
    captured = [m["event"] or m["content_type"] for m in index]
    seen: dict[str, str] = {}
    async with OutboundServer(lambda c: captured_controller(c, sim, seen)) as server:
        sim = FreeSwitchSim(SimConfig(dialplan=[Route(r"^(77\d\d)$", "socket",
                                                      f"127.0.0.1:{server.port} async full")], media_speed=SPEED))
        await sim.start()
        try:
            client = await inbound(sim, "BACKGROUND_JOB CHANNEL_HANGUP_COMPLETE")
            reply = await client.command("api originate {origination_caller_id_number=5550100,esl_test=outbound_socket}"
                                         "loopback/7700/default &park", timeout=10)
            a_uuid = reply.body.decode().split()[1]
            completes = [await read_until(client, is_event("CHANNEL_HANGUP_COMPLETE")) for _ in range(2)]
            client.close()
            await asyncio.wait_for(asyncio.gather(*server.tasks), 5)  # the controller's `exit` and drain
        finally:
            await sim.close()
    received = [f.name for f in server.clients[0].received]
    # CHANNEL_PARK races the subscription on a real switch (scenarios README); the simulator's default leaves it out
    assert [n for n in received if n != "CHANNEL_PARK"] == [n for n in captured if n != "CHANNEL_PARK"]
    assert seen["Channel-Name"] == "loopback/7700-b" and seen["Call-Direction"] == "inbound"
    assert seen["variable_other_loopback_leg_uuid"] == a_uuid
    assert seen["Caller-Caller-ID-Number"] == "5550100" and seen["variable_esl_test"] == "outbound_socket"
    assert seen["esl_digits"] == "42"
    # the controller hung up the B leg; the A leg follows with the same cause
    assert {f.event["Unique-ID"]: f.event["Hangup-Cause"] for f in completes} == {
        seen["Unique-ID"]: "NORMAL_CLEARING", a_uuid: "NORMAL_CLEARING"}


@pytest.mark.parametrize("cause", ["NORMAL_CLEARING", "USER_BUSY"])
async def test_hangup_of_the_b_leg_takes_the_a_leg_with_its_cause(cause):
    sim = FreeSwitchSim(SimConfig(dialplan=[Route(r"^7703$", "park")], media_speed=SPEED))
    await sim.start()
    try:
        client = await inbound(sim)
        await client.command("bgapi originate loopback/7703 &park")
        b_uuid = (await read_until(client, is_event("CHANNEL_PARK"))).event["Unique-ID"]
        await client.command(f"api uuid_answer {b_uuid}")
        a_uuid = job_result(await read_until(client, is_event("BACKGROUND_JOB"))).split()[1]
        await read_until(client, is_event("CHANNEL_PARK", a_uuid))
        await client.command(f"api uuid_kill {b_uuid} {cause}")
        done = {}
        while len(done) < 2:
            frame = await read_until(client, is_event("CHANNEL_HANGUP_COMPLETE"))
            done[frame.event["Unique-ID"]] = frame.event["Hangup-Cause"]
        assert done == {a_uuid: cause, b_uuid: cause}
        assert (await client.command(f"api uuid_exists {a_uuid}")).body == b"false"
        client.close()
    finally:
        await sim.close()
    assert not sim.channels


async def test_b_leg_failing_before_answer_fails_the_originate():
    """No route for the B leg: it hangs up NO_ROUTE_DESTINATION, the A leg with it, originate answers -ERR."""
    sim = FreeSwitchSim(SimConfig(dialplan=[], media_speed=SPEED))
    await sim.start()
    try:
        client = await inbound(sim, "BACKGROUND_JOB")
        reply = await client.command("api originate loopback/4242/default &park", timeout=5)
        assert reply.body == b"-ERR NO_ROUTE_DESTINATION\n"
        client.close()
    finally:
        await sim.close()


async def test_originate_timeout_when_nobody_answers():
    sim = FreeSwitchSim(SimConfig(dialplan=[Route(r"^7703$", "park")], media_speed=SPEED))
    await sim.start()
    try:
        client = await inbound(sim, "BACKGROUND_JOB CHANNEL_HANGUP_COMPLETE")
        reply = await client.command("api originate {originate_timeout=2}loopback/7703 &park", timeout=5)
        assert reply.body == b"-ERR NO_ANSWER\n"
        causes = {(await read_until(client, is_event("CHANNEL_HANGUP_COMPLETE"))).event["Hangup-Cause"]
                  for _ in range(2)}
        assert causes == {"NO_ANSWER"}
        client.close()
    finally:
        await sim.close()


async def test_send_dtmf_pauses_and_durations():
    """`w` pauses 0.5 s and `W` 1 s inside the api (media time); `+` separates groups, `@ms` sets a group's duration (8 samples per ms)."""
    speed = 10.0
    sim = FreeSwitchSim(SimConfig(dialplan=[Route(r"^7703$", "park")], media_speed=speed))
    await sim.start()
    try:
        client = await inbound(sim)
        await client.command("bgapi originate {origination_uuid=11111111-2222-3333-4444-555555555555}"
                             "loopback/7703 &park")
        b_uuid = (await read_until(client, is_event("CHANNEL_PARK"))).event["Unique-ID"]
        await client.command(f"api uuid_answer {b_uuid}")
        a_uuid = job_result(await read_until(client, is_event("BACKGROUND_JOB"))).split()[1]
        assert a_uuid == "11111111-2222-3333-4444-555555555555"  # origination_uuid names the A leg
        loop = asyncio.get_running_loop()
        started = loop.time()
        reply = await client.command(f"api uuid_send_dtmf {a_uuid} 1wW+2@100")
        elapsed = loop.time() - started
        assert reply.body.decode() == f"+OK {a_uuid} sent DTMF 1wW+2@100.\n"
        assert 1.4 / speed <= elapsed < 1.5 / speed + 0.5
        digits = [(await read_until(client, is_event("DTMF", b_uuid))).event for _ in range(2)]
        assert [(d["DTMF-Digit"], d["DTMF-Duration"]) for d in digits] == [("1", "2000"), ("2", "800")]
        # DTMF sent to B reaches A
        await client.command(f"api uuid_send_dtmf {b_uuid} 7")
        assert (await read_until(client, is_event("DTMF", a_uuid))).event["DTMF-Digit"] == "7"
        assert (await client.command("api uuid_send_dtmf nosuch-uuid 1")).body == b"-ERR Cannot locate session!\n"
        client.close()
    finally:
        await sim.close()


async def test_place_call_still_works_beside_loopback_calls():
    from switchctl.sim import Press

    sim = FreeSwitchSim(SimConfig(dialplan=[Route(r"^7703$", "play_and_get_digits",
                                                  r"1 1 1 3000 # silence_stream://100 silence_stream://10 d \d")],
                                  media_speed=SPEED))
    await sim.start()
    try:
        call = sim.place_call("7703", "1001", script=[Press("5")])
        result = await asyncio.wait_for(call.done, 5)
    finally:
        await sim.close()
    assert result.variables["d"] == "5" and result.hangup_cause == "NORMAL_CLEARING"
