"""play_and_get_digits / read outcomes of the simulator, case by case against capture s2."""

from __future__ import annotations

import asyncio
import pytest

from switchctl.sim import FreeSwitchSim, Press, Route, SimConfig, Silence
from tests.test_sim_client import CAPTURES, EslClient, OutboundServer, captured_names, sendmsg_execute

S2 = CAPTURES / "freeswitch-scenarios/s2_pagd"
PROMPT, INVALID = "tone_stream://%(500,0,500)", "tone_stream://%(300,0,300)"

CASES = {
    "c1_success_max_digits": (f"play_and_get_digits 1 3 1 5000 # {PROMPT} {INVALID} pagd_digits \\d+ 3000", "135"),
    "c2_success_terminator": (f"play_and_get_digits 1 4 1 5000 # {PROMPT} {INVALID} pagd_digits \\d+ 3000", "13#"),
    "c3_invalid_then_valid": (
        f"play_and_get_digits 1 4 2 5000 # {PROMPT} {INVALID} pagd_digits ^[1-4]+$ 3000", "9#12#"),
    "c4_invalid_max_tries": (
        f"play_and_get_digits 1 4 2 5000 # {PROMPT} {INVALID} pagd_digits ^[1-4]+$ 3000", "9#8#"),
    "c5_timeout_no_input": (f"play_and_get_digits 1 4 2 2000 # {PROMPT} {INVALID} pagd_digits \\d+ 2000", ""),
    "c6_too_few_digits": (f"play_and_get_digits 3 4 1 5000 # {PROMPT} {INVALID} pagd_digits \\d+ 3000", "1#"),
    "c7_read_success_terminator": (f"read 1 4 {PROMPT} read_digits 5000 #", "24#"),
    "c8_read_timeout": (f"read 1 4 {PROMPT} read_digits 3000 #", ""),
    "c9_read_max_digits_no_terminator": (f"read 1 2 {PROMPT} read_digits 5000 #", "56"),
    "c10_pagd_min0_no_input": (f"play_and_get_digits 0 4 1 2000 # {PROMPT} {INVALID} pagd_digits \\d+ 2000", ""),
    # the capture's `2` was dropped by FreeSWITCH's RTP sequence check; the caller effectively pressed 4 #
    "c11_seq_backwards_digit_dropped": (
        f"play_and_get_digits 1 4 1 5000 # {PROMPT} {INVALID} pagd_digits \\d+ 3000", "4#"),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_pagd_case_matches_capture(case):
    app_line, digits = CASES[case]
    app, arg = app_line.split(" ", 1)
    var = arg.split()[3] if app == "read" else arg.split()[7]
    values: dict[str, str] = {}

    async def controller(client: EslClient) -> None:
        connect = await client.command("connect")
        uuid = connect.event["Unique-ID"]
        await client.command("myevents")
        await client.command("linger")
        client.send(sendmsg_execute("answer", event_uuid="a"))
        await client.event("CHANNEL_EXECUTE_COMPLETE", Application_UUID="a")
        client.send(sendmsg_execute(app, arg, "c"))
        complete = await client.event("CHANNEL_EXECUTE_COMPLETE", Application_UUID="c")
        assert complete.event["Application-Response"] == "_none_"  # s2: always _none_
        for name in (var, f"{var}_invalid", "read_result", "read_terminator_used"):
            reply = await client.command(f"api uuid_getvar {uuid} {name}")
            values[name] = reply.body.decode()
        client.send("sendmsg\ncall-command: hangup\nhangup-cause: NORMAL_CLEARING\n\n")
        await client.next(lambda f: f.content_type == "text/disconnect-notice")
        client.send("exit\n\n")
        await client.drain()

    async with OutboundServer(controller) as server:
        sim = FreeSwitchSim(SimConfig(
            dialplan=[Route(r"^7802$", "socket", f"127.0.0.1:{server.port} async full")], media_speed=40))
        await sim.start()
        try:
            script = [Press(digits)] if digits else [Silence()]
            await asyncio.wait_for(sim.place_call("7802", "55501", script=script).done, 10)
        finally:
            await sim.close()

    expected_names = [n for n in captured_names(S2 / f"{case}.timeline.txt") if n != "CHANNEL_PARK"]
    assert [f.name for f in server.clients[0].received] == expected_names
    # the capture's driver asked the same four uuid_getvar, in the same order: same bodies
    timeline = (S2 / f"{case}.timeline.txt").read_text()
    captured_bodies = [line.split("body=", 1)[1] for line in timeline.splitlines() if "api/response" in line]
    assert list(values.values()) == captured_bodies
