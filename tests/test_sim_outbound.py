"""Outbound socket behaviour of the simulator against the captured timelines (s1, s2, s5)."""

from __future__ import annotations

import asyncio

import pytest

from switchctl.sim import FreeSwitchSim, HangUp, Press, Route, SimConfig, Silence
from tests.test_sim_client import CAPTURES, EslClient, OutboundServer, captured_names, sendmsg_execute

S1 = CAPTURES / "freeswitch-scenarios/s1_event_sets"
S5 = CAPTURES / "freeswitch-scenarios/s5_hangup"
SPEED = 20.0


def make_sim(port: int, **overrides) -> FreeSwitchSim:
    config = dict(dialplan=[Route(r"^(78\d\d)$", "socket", f"127.0.0.1:{port} async full")], media_speed=SPEED)
    config.update(overrides)
    return FreeSwitchSim(SimConfig(**config))


async def ivr_controller(client: EslClient, subscription: list[str], *, linger: str | None = "linger") -> None:
    """The s1 driver: connect, subscribe, linger, answer, tone playback, pagd, hangup, exit."""
    connect = await client.command("connect")
    uuid = connect.event["Unique-ID"]
    for line in subscription:
        await client.command(line.replace("{uuid}", uuid))
    if linger:
        await client.command(linger)
    client.send(sendmsg_execute("answer", event_uuid="e-answer"))
    answered = await client.event("CHANNEL_EXECUTE_COMPLETE", Application_UUID="e-answer")
    # no argument, no Application-Data header (s2_pagd captures; a real 1.11.1 does the same)
    assert "Application-Data" not in answered.event and answered.event["Application"] == "answer"
    client.send(sendmsg_execute("playback", "tone_stream://%(400,100,600);loops=1", "e-play"))
    await client.event("CHANNEL_EXECUTE_COMPLETE", Application_UUID="e-play")
    client.send(sendmsg_execute(
        "play_and_get_digits", r"1 4 1 8000 # tone_stream://%(200,0,500) silence_stream://250 esl_digits \d+ 2000",
        "e-pagd"))
    await client.event("CHANNEL_EXECUTE_COMPLETE", Application_UUID="e-pagd")
    client.send("sendmsg\ncall-command: hangup\nhangup-cause: NORMAL_CLEARING\n\n")
    if linger:
        await client.next(lambda f: f.content_type == "text/disconnect-notice")
        await asyncio.sleep(0.05)
        # events may still follow the linger notice (s5); read what is already there, then exit
        client.send("exit\n\n")
    await client.drain()


@pytest.mark.parametrize("variant,subscription", [
    ("v1_myevents", ["myevents"]),
    ("v2_myevents_json", ["myevents json"]),
    ("v8_event_plain_3_hangup_filter_uuid",
     ["event plain CHANNEL_EXECUTE_COMPLETE DTMF CHANNEL_HANGUP", "filter Unique-ID {uuid}"]),
    ("v7_event_plain_4_filter_uuid",
     ["event plain CHANNEL_EXECUTE_COMPLETE DTMF CHANNEL_HANGUP_COMPLETE CHANNEL_ANSWER",
      "filter Unique-ID {uuid}"]),
    ("v5_myevents_filter_event_name",
     ["myevents", "filter Event-Name CHANNEL_EXECUTE_COMPLETE", "filter Event-Name DTMF",
      "filter Event-Name CHANNEL_HANGUP_COMPLETE", "filter Event-Name CHANNEL_ANSWER"]),
])
async def test_ivr_call_event_sequence_matches_capture(variant, subscription):
    async with OutboundServer(lambda c: ivr_controller(c, subscription)) as server:
        sim = make_sim(server.port)
        await sim.start()
        try:
            call = sim.place_call("7801", "55501", script=[Press("135#")])
            result = await asyncio.wait_for(call.done, 10)
        finally:
            await sim.close()
    client = server.clients[0]
    assert [f.name for f in client.received] == captured_names(S1 / f"{variant}.timeline.txt")
    assert result.hangup_cause == "NORMAL_CLEARING"
    assert result.variables["esl_digits"] == "135"
    assert result.variables["read_result"] == "success"
    assert result.variables["read_terminator_used"] == "#"
    assert [a[0] for a in result.apps] == ["answer", "playback", "play_and_get_digits", "socket"]
    assert result.apps[1][2] == "FILE PLAYED"
    assert result.bytes_to_socket == sum(len(f.raw) for f in client.received)
    assert result.answered and result.answered_us > 0


async def test_event_without_filter_on_outbound_socket_gets_other_channels_events():
    """s1 v11: `event ...` without a filter subscribes to every channel on the switch."""
    seen: list[str] = []

    async def controller(client: EslClient) -> None:
        connect = await client.command("connect")
        await client.command("event plain CHANNEL_EXECUTE_COMPLETE CHANNEL_HANGUP_COMPLETE")
        await client.command("linger")
        client.send(sendmsg_execute("answer", event_uuid="a"))
        client.send(sendmsg_execute("playback", "silence_stream://2000", "b"))
        await client.event("CHANNEL_EXECUTE_COMPLETE", Application_UUID="b")
        client.send("sendmsg\ncall-command: hangup\n\n")
        await client.next(lambda f: f.content_type == "text/disconnect-notice")
        client.send("exit\n\n")
        await client.drain()
        seen.extend(f.event.get("Unique-ID", "") for f in client.received if f.event)
        seen.append(connect.event["Unique-ID"])

    async with OutboundServer(controller) as server:
        sim = make_sim(server.port, dialplan=[
            Route(r"^7801$", "socket", f"127.0.0.1:{server.port} async full"),
            Route(r"^7704$", "playback", "silence_stream://500")])
        await sim.start()
        try:
            first = sim.place_call("7801", "55501")
            await asyncio.sleep(0.02)
            other = sim.place_call("7704", "55502")
            await asyncio.wait_for(asyncio.gather(first.done, other.done), 10)
        finally:
            await sim.close()
    own = seen.pop()
    other_uuid = (await other.done).uuid
    assert own in seen and other_uuid in seen


@pytest.mark.parametrize("case", ["h3_caller_bye_during_playback_linger",
                                  "h3b_caller_bye_during_playback_no_linger"])
async def test_caller_bye_during_playback(case):
    linger = not case.endswith("no_linger")

    async def controller(client: EslClient) -> None:
        await client.command("connect")
        await client.command("myevents")
        if linger:
            await client.command("linger")
        client.send(sendmsg_execute("answer", event_uuid="a"))
        await client.event("CHANNEL_EXECUTE_COMPLETE", Application_UUID="a")
        client.send(sendmsg_execute("playback", "tone_stream://%(1000,0,440);loops=10", "p"))
        await client.next(lambda f: f.content_type == "text/disconnect-notice")
        if linger:
            reply = await client.command(sendmsg_execute("playback", "tone_stream://%(200,0,440)", "late")[:-2])
            assert reply.reply_text == "+OK"  # still answered while lingering (s5 h3)
            client.send("exit\n\n")
        await client.drain()

    async with OutboundServer(controller) as server:
        sim = make_sim(server.port)
        await sim.start()
        try:
            # the s5 sipp caller sent BYE 2 s after its ACK
            call = sim.place_call("7805", "55501", hangup_after=2.0)
            result = await asyncio.wait_for(call.done, 10)
        finally:
            await sim.close()
    client = server.clients[0]
    assert [f.name for f in client.received] == captured_names(S5 / f"{case}.timeline.txt")
    playback = [f for f in client.received if f.event.get("Application") == "playback"
                and f.name == "CHANNEL_EXECUTE_COMPLETE"][0]
    assert playback.event["Application-Response"] == "PLAYBACK ERROR"
    socket_complete = [f for f in client.received if f.event.get("Application") == "socket"][0]
    assert socket_complete.event["Application-Response"] == "PLAYBACK ERROR"
    assert socket_complete.event["Hangup-Cause"] == "NORMAL_CLEARING"
    assert result.hangup_by == "caller"


async def test_sched_hangup_app_puts_linger_notice_right_after_hangup():
    """s5 h1: sched_hangup +3 -> ALLOTTED_TIMEOUT; linger notice before the playback's completion."""
    async def controller(client: EslClient) -> None:
        await client.command("connect")
        await client.command("myevents")
        await client.command("linger")
        client.send(sendmsg_execute("answer", event_uuid="a"))
        await client.event("CHANNEL_EXECUTE_COMPLETE", Application_UUID="a")
        client.send(sendmsg_execute("sched_hangup", "+3", "s"))
        await client.event("CHANNEL_EXECUTE_COMPLETE", Application_UUID="s")
        client.send(sendmsg_execute("playback", "tone_stream://%(1000,0,440);loops=10", "p"))
        await client.next(lambda f: f.name == "CHANNEL_HANGUP_COMPLETE")
        client.send("exit\n\n")
        await client.drain()

    async with OutboundServer(controller) as server:
        sim = make_sim(server.port)
        await sim.start()
        try:
            result = await asyncio.wait_for(sim.place_call("7805", "55501").done, 10)
        finally:
            await sim.close()
    names = [f.name for f in server.clients[0].received]
    assert names == captured_names(S5 / "h1_sched_hangup_app_plus3.timeline.txt")
    assert result.hangup_cause == "ALLOTTED_TIMEOUT"
    assert dict((a, r) for a, _, r in result.apps)["playback"] == "FILE PLAYED"


async def test_uuid_kill_before_answer():
    """s5 h2: api uuid_kill <uuid> CALL_REJECTED before answer."""
    async def controller(client: EslClient) -> None:
        connect = await client.command("connect")
        await client.command("myevents")
        await client.command("linger")
        reply = await client.command(f"api uuid_kill {connect.event['Unique-ID']} CALL_REJECTED")
        assert reply.body == b"+OK\n"
        await client.next(lambda f: f.name == "CHANNEL_HANGUP_COMPLETE")
        client.send("exit\n\n")
        await client.drain()

    async with OutboundServer(controller) as server:
        sim = make_sim(server.port)
        await sim.start()
        try:
            result = await asyncio.wait_for(sim.place_call("7805", "55501").done, 10)
        finally:
            await sim.close()
    names = [f.name for f in server.clients[0].received]
    assert names == captured_names(S5 / "h2_uuid_kill_call_rejected_before_answer.timeline.txt")
    assert result.hangup_cause == "CALL_REJECTED" and not result.answered


async def test_linger_n_closes_without_exit():
    """s5 h3c: `linger 2` -> the final disconnect notice and close come without exit, 2-3 s later."""
    async def controller(client: EslClient) -> None:
        await client.command("connect")
        await client.command("myevents")
        reply = await client.command("linger 1")
        assert reply.reply_text == "+OK will linger 1 seconds"
        client.send(sendmsg_execute("answer", event_uuid="a"))
        await client.drain(timeout=5)

    async with OutboundServer(controller) as server:
        sim = make_sim(server.port)
        await sim.start()
        try:
            loop = asyncio.get_running_loop()
            call = sim.place_call("7805", "55501", hangup_after=0.5)
            await asyncio.wait_for(call.done, 10)
            started = loop.time()
        finally:
            await sim.close()
    frames = server.clients[0].received
    notices = [f for f in frames if f.content_type == "text/disconnect-notice"]
    assert [n.headers.get("Content-Disposition") for n in notices] == ["linger", "disconnect"]
    assert notices[0].headers["Linger-Time"] == "1"
    assert started  # call.done resolved only once the socket closed


async def test_first_command_must_come_within_timeout():
    async def silent(client: EslClient) -> None:
        await client.drain(timeout=5)

    async with OutboundServer(silent) as server:
        sim = make_sim(server.port, outbound_first_command_timeout=0.2)
        await sim.start()
        try:
            result = await asyncio.wait_for(sim.place_call("7805", "55501").done, 5)
        finally:
            await sim.close()
    assert result.hangup_cause == "NORMAL_CLEARING"
    assert ("CRIT", "Socket Error!") in sim.logs
    assert server.clients[0].received[-1].content_type == "text/disconnect-notice"


async def test_park_race_can_be_won_by_myevents():
    async def controller(client: EslClient) -> None:
        await client.command("connect")
        await client.command("myevents")
        client.send("sendmsg\ncall-command: hangup\n\n")
        await client.drain()

    async with OutboundServer(controller) as server:
        sim = make_sim(server.port, park_after_first_command=True)
        await sim.start()
        try:
            await asyncio.wait_for(sim.place_call("7805", "55501").done, 5)
        finally:
            await sim.close()
    names = [f.name for f in server.clients[0].received]
    assert names[2] == "CHANNEL_PARK"
    assert names[-1] == "text/disconnect-notice"


async def test_unknown_application_hangs_up_without_execute_events():
    """switch_core_session_execute_application_get_flags: "Invalid Application", DESTINATION_OUT_OF_ORDER."""
    async def controller(client: EslClient) -> None:
        await client.command("connect")
        await client.command("myevents")
        client.send(sendmsg_execute("no_such_app", "x", "u"))
        await client.drain()

    async with OutboundServer(controller) as server:
        sim = make_sim(server.port)
        await sim.start()
        try:
            result = await asyncio.wait_for(sim.place_call("7805", "55501").done, 5)
        finally:
            await sim.close()
    names = [f.name for f in server.clients[0].received]
    assert "CHANNEL_EXECUTE" not in names
    assert names[2:4] == ["command/reply", "CHANNEL_HANGUP"]
    assert result.hangup_cause == "DESTINATION_OUT_OF_ORDER"
    assert ("ERR", "Invalid Application no_such_app") in sim.logs


async def test_script_hangup_and_silence_steps():
    async def controller(client: EslClient) -> None:
        await client.command("connect")
        await client.command("linger")
        await client.command("event plain CHANNEL_EXECUTE_COMPLETE CHANNEL_HANGUP")
        client.send(sendmsg_execute("answer"))
        client.send(sendmsg_execute("read", "1 4 tone_stream://%(500,0,500) first 1000 #", "r1"))
        client.send(sendmsg_execute("read", "1 4 tone_stream://%(500,0,500) second 1000 #", "r2"))
        await client.next(lambda f: f.content_type == "text/disconnect-notice")
        client.send("exit\n\n")
        await client.drain()

    async with OutboundServer(controller) as server:
        sim = make_sim(server.port)
        await sim.start()
        try:
            result = await asyncio.wait_for(
                sim.place_call("7805", "55501", script=[Silence(), HangUp()]).done, 5)
        finally:
            await sim.close()
    assert result.hangup_by == "caller"
    assert [a[0] for a in result.apps] == ["answer", "read", "read", "socket"]
    # the first read timed out (failure); the caller hung up during the second prompt: no read_result (switch_ivr_read `goto end`)
    assert "first" not in result.variables and "read_result" not in result.variables


@pytest.mark.parametrize("case,hangup_after", [
    ("h1_sched_hangup_app_plus3", None),
    ("h1b_api_sched_hangup_plus3_normal_clearing", None),
    ("h2_uuid_kill_call_rejected_before_answer", None),
    ("h2b_uuid_kill_call_rejected_after_answer", None),
    ("h3_caller_bye_during_playback_linger", 2.0),
    ("h3b_caller_bye_during_playback_no_linger", 2.0),
])
async def test_hangup_cases_replay_like_capture(case, hangup_after):
    from tests.test_sim_client import replay

    async with OutboundServer(lambda client: replay(client, S5 / case)) as server:
        sim = make_sim(server.port)
        await sim.start()
        try:
            await asyncio.wait_for(sim.place_call("7805", "55501", hangup_after=hangup_after).done, 10)
        finally:
            await sim.close()
    expected = [n for n in captured_names(S5 / f"{case}.timeline.txt") if n != "CHANNEL_PARK"]
    assert [f.name for f in server.clients[0].received] == expected


async def test_static_mode_sendmsg_replies_after_the_application():
    """Without `async` the message is parsed in the session thread: +OK only once the app is done."""
    async def controller(client: EslClient) -> None:
        await client.command("connect")
        await client.command("myevents")
        reply = await client.command(sendmsg_execute("playback", "silence_stream://500", "p")[:-2])
        assert reply.reply_text == "+OK"
        names = [f.name for f in client.received]
        assert names[-2:] == ["CHANNEL_EXECUTE_COMPLETE", "command/reply"]
        client.send("sendmsg\ncall-command: hangup\n\n")
        await client.drain()

    async with OutboundServer(controller) as server:
        sim = make_sim(server.port, dialplan=[Route("^7805$", "socket", f"127.0.0.1:{server.port} full")])
        await sim.start()
        try:
            result = await asyncio.wait_for(sim.place_call("7805", "55501").done, 5)
        finally:
            await sim.close()
    assert "CHANNEL_PARK" not in [f.name for f in server.clients[0].received]
    assert result.apps[0][:2] == ("playback", "silence_stream://500")
    assert result.apps[0][2] == "FILE PLAYED"
