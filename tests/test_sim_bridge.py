"""bridge outcomes (s3), replayed command for command against the simulator; originate (s6); transfer."""

from __future__ import annotations

import asyncio

import pytest

from switchctl.sim import FreeSwitchSim, Route, SimConfig, UserBehaviour
from tests.test_sim_client import (
    CAPTURES, EslClient, OutboundServer, captured_names, replay, sendmsg_execute,
)

S3 = CAPTURES / "freeswitch-scenarios/s3_bridge"
S6 = CAPTURES / "freeswitch-scenarios/s6_api"

# The sipp UAS processes of s3 as directory users.
USERS = {
    "uas-answer": UserBehaviour(early_media=True, answer_after=1.0, hangup_after=3.0),  # 183, 1 s, 200, BYE 3 s
    "uas-busy": UserBehaviour(busy=True),  # 486
    "uas-ring": UserBehaviour(answer_after=None),  # 180, never answers
    "1001": UserBehaviour(registered=False),
}

CASES = {
    # case: (hangup cause of A or None if it survives, DIALSTATUS)
    "b1_answered_then_b_hangs_up": ("NORMAL_CLEARING", "SUCCESS"),
    "b2_busy_486": ("USER_BUSY", "BUSY"),
    "b2c_busy_486_continue_on_fail": ("NORMAL_CLEARING", "BUSY"),
    "b3_no_answer_leg_timeout_5": ("ALLOTTED_TIMEOUT", "ALLOTTED_TIMEOUT"),
    "b3b_no_answer_call_timeout_5_continue_on_fail": ("NORMAL_CLEARING", "NOANSWER"),
    "b4_user_not_registered": ("USER_NOT_REGISTERED", "USER_NOT_REGISTERED"),
    "b5_unreachable_udp": ("NORMAL_TEMPORARY_FAILURE", "NORMAL_TEMPORARY_FAILURE"),
    "b6_unanswered_a_early_media_then_answer": ("NORMAL_CLEARING", "SUCCESS"),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_bridge_case_replays_like_capture(case):
    prefix = S3 / f"{case}.A_outbound"
    async with OutboundServer(lambda client: replay(client, prefix)) as server:
        sim = FreeSwitchSim(SimConfig(
            dialplan=[Route(r"^7803$", "socket", f"127.0.0.1:{server.port} async full")], users=USERS,
            media_speed=25))
        await sim.start()
        try:
            result = await asyncio.wait_for(sim.place_call("7803", "55501").done, 10)
        finally:
            await sim.close()
    expected = [n for n in captured_names(S3 / f"{case}.A_outbound.timeline.txt") if n != "CHANNEL_PARK"]
    assert [f.name for f in server.clients[0].received] == expected
    cause, dialstatus = CASES[case]
    assert result.hangup_cause == cause
    assert result.variables["DIALSTATUS"] == dialstatus
    bridge = [f for f in server.clients[0].received
              if f.name == "CHANNEL_EXECUTE_COMPLETE" and f.event.get("Application") == "bridge"][0]
    assert bridge.event["Application-Response"] == "_none_"
    if cause != "NORMAL_CLEARING":
        assert bridge.event["Answer-State"] == "hangup" and bridge.event["Hangup-Cause"] == cause


async def test_bridged_call_b_leg_hangup_keeps_a_and_sets_variables():
    async def controller(client: EslClient) -> None:
        await client.command("connect")
        await client.command("myevents")
        await client.command("linger")
        client.send(sendmsg_execute("answer"))
        client.send(sendmsg_execute("bridge", "user/1002", "br"))
        complete = await client.event("CHANNEL_EXECUTE_COMPLETE", Application_UUID="br")
        assert complete.event["variable_last_bridge_hangup_cause"] == "NORMAL_CLEARING"
        assert complete.event["variable_last_bridge_proto_specific_hangup_cause"] == "sip:200"
        client.send("sendmsg\ncall-command: hangup\n\n")
        await client.next(lambda f: f.content_type == "text/disconnect-notice")
        client.send("exit\n\n")
        await client.drain()

    async with OutboundServer(controller) as server:
        sim = FreeSwitchSim(SimConfig(
            dialplan=[Route(r"^9000$", "socket", f"127.0.0.1:{server.port} async full")],
            users={"1002": UserBehaviour(answer_after=0.5, hangup_after=1.0)}, media_speed=25))
        await sim.start()
        monitor = await EslClient.connect(sim.esl_port)
        await monitor.read_frame()
        await monitor.command("auth ClueCon")
        await monitor.command("event plain CHANNEL_OUTGOING CHANNEL_CREATE CHANNEL_ORIGINATE CHANNEL_BRIDGE "
                              "CHANNEL_UNBRIDGE CHANNEL_DESTROY")
        try:
            result = await asyncio.wait_for(sim.place_call("9000", "1001").done, 10)
            await monitor.event("CHANNEL_DESTROY", Unique_ID=result.uuid)
        finally:
            monitor.close()
            await sim.close()
    assert result.variables["DIALSTATUS"] == "SUCCESS" and result.hangup_cause == "NORMAL_CLEARING"
    b_events = [f.name for f in monitor.received if f.event.get("Unique-ID") not in (None, result.uuid)]
    # s3: the B leg's CHANNEL_OUTGOING comes BEFORE its CHANNEL_CREATE, then CHANNEL_ORIGINATE
    assert b_events[:3] == ["CHANNEL_OUTGOING", "CHANNEL_CREATE", "CHANNEL_ORIGINATE"]
    assert "CHANNEL_DESTROY" in b_events


async def test_bgapi_originate_outcomes():
    sim = FreeSwitchSim(SimConfig(users={"1001": UserBehaviour(registered=False),
                                         "1002": UserBehaviour(answer_after=0.2),
                                         "1003": UserBehaviour(busy=True)}, media_speed=25))
    await sim.start()
    try:
        client = await EslClient.connect(sim.esl_port)
        await client.read_frame()
        await client.command("auth ClueCon")
        await client.command("event plain BACKGROUND_JOB")
        bodies = {}
        for dial in ["user/1001 &park", "user/1003 &park", "nosuchendpoint/foo &park", "",
                     "{origination_caller_id_number=5550123}user/1002 &park"]:
            reply = await client.command(f"bgapi originate {dial}".rstrip())
            job = reply.headers["Job-UUID"]
            event = await client.event("BACKGROUND_JOB", Job_UUID=job)
            bodies[dial] = event.body.split(b"\n\n", 1)[1].decode()
        api = await client.command("api originate user/1001 &park")
        assert api.raw == (S6 / "api_originate_fail_USER_NOT_REGISTERED.raw").read_bytes()
        assert bodies["user/1001 &park"] == "-ERR USER_NOT_REGISTERED\n"
        assert bodies["user/1003 &park"] == "-ERR USER_BUSY\n"
        assert bodies["nosuchendpoint/foo &park"] == "-ERR CHAN_NOT_IMPLEMENTED\n"
        usage = (S6 / "bgapi_originate_no_args.BACKGROUND_JOB.plain.raw").read_bytes().split(b"\n\n")[-1].decode()
        assert bodies[""] == usage
        uuid = bodies["{origination_caller_id_number=5550123}user/1002 &park"].removeprefix("+OK ").strip()
        assert (await client.command(f"api uuid_getvar {uuid} current_application")).body == b"park"
        assert sim.channels[uuid].data.caller_number == "5550123"
        assert (await client.command(f"api uuid_kill {uuid}")).body == b"+OK\n"
        client.close()
    finally:
        await sim.close()


async def test_transfer_reenters_dialplan_with_a_new_outbound_connection():
    async def controller(client: EslClient) -> None:
        connect = await client.command("connect")
        await client.command("myevents")
        await client.command("linger")
        if connect.event["Caller-Destination-Number"] == "9000":
            client.send(sendmsg_execute("answer", event_uuid="a"))
            await client.event("CHANNEL_EXECUTE_COMPLETE", Application_UUID="a")
            client.send(sendmsg_execute("transfer", "9001 XML public", "t"))
            await client.event("CHANNEL_EXECUTE_COMPLETE", Application="socket")
        else:
            client.send(sendmsg_execute("playback", "silence_stream://100", "p"))
            await client.event("CHANNEL_EXECUTE_COMPLETE", Application_UUID="p")
            client.send("sendmsg\ncall-command: hangup\n\n")
        await client.next(lambda f: f.content_type == "text/disconnect-notice")
        client.send("exit\n\n")
        await client.drain()

    async with OutboundServer(controller) as server:
        sim = FreeSwitchSim(SimConfig(
            dialplan=[Route(r"^900[01]$", "socket", f"127.0.0.1:{server.port} async full")], media_speed=25))
        await sim.start()
        try:
            result = await asyncio.wait_for(sim.place_call("9000", "1001").done, 10)
        finally:
            await sim.close()
    assert result.connections == 2
    assert [a[0] for a in result.apps] == ["answer", "transfer", "socket", "playback", "socket"]
    first, second = server.clients
    assert second.received[0].event["Caller-Destination-Number"] == "9001"
    assert second.received[0].event["Unique-ID"] == first.received[0].event["Unique-ID"]
    # the first socket stays subscribed to the channel until it hangs up (then lingers, gets its notice)
    assert "CHANNEL_HANGUP_COMPLETE" in [f.name for f in first.received]
