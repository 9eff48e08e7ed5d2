"""Smaller applications and api commands of the simulator: set/export/unset, say, sleep, log, hangup,
playback terminators, uuid_transfer, log/data delivery."""

from __future__ import annotations

import asyncio

from switchctl.sim import FreeSwitchSim, Route, SimConfig
from tests.test_sim_client import EslClient, OutboundServer, sendmsg_execute


async def run_socket_call(steps, *, config=None):
    """Run `steps(client)` as the controller of one call; returns (result, frames, sim)."""
    async def controller(client: EslClient) -> None:
        await client.command("connect")
        await client.command("myevents")
        await client.command("linger")
        await steps(client)
        await client.next(lambda f: f.content_type == "text/disconnect-notice")
        client.send("exit\n\n")
        await client.drain()

    async with OutboundServer(controller) as server:
        sim = FreeSwitchSim(SimConfig(dialplan=[Route("^9000$", "socket", f"127.0.0.1:{server.port} async full")],
                                      media_speed=50, **(config or {})))
        await sim.start()
        try:
            result = await asyncio.wait_for(sim.place_call("9000", "1001").done, 5)
        finally:
            await sim.close()
    return result, server.clients[0].received, sim


async def execute(client: EslClient, app: str, arg: str | None = None):
    tag = f"{app}-{len(client.received)}"
    client.send(sendmsg_execute(app, arg, tag))
    return await client.event("CHANNEL_EXECUTE_COMPLETE", Application_UUID=tag)


async def test_variables_say_sleep_log_and_hangup_cause():
    async def steps(client: EslClient) -> None:
        await execute(client, "answer")
        await execute(client, "set", "greeting=hello world")
        await execute(client, "export", "account=42")
        await execute(client, "set", "gone=1")
        await execute(client, "unset", "gone")
        done = await execute(client, "say", "en number pronounced 123")
        assert done.event["Application-Response"] == "_none_"
        await execute(client, "sleep", "200")
        await execute(client, "log", "INFO visible in the sim log")
        missing = await execute(client, "playback", "nothere.wav")
        assert missing.event["Application-Response"] == "FILE NOT FOUND"
        client.send(sendmsg_execute("hangup", "USER_BUSY"))

    result, frames, sim = await run_socket_call(steps, config={"missing_files": frozenset({"nothere.wav"})})
    assert result.variables["greeting"] == "hello world"
    assert result.variables["account"] == "42" and result.variables["export_vars"] == "account"
    assert "gone" not in result.variables
    assert result.hangup_cause == "USER_BUSY"
    assert ("INFO", "visible in the sim log") in sim.logs
    say_complete = [f for f in frames if f.event.get("Application") == "say"
                    and f.name == "CHANNEL_EXECUTE_COMPLETE"][0]
    say_execute = [f for f in frames if f.event.get("Application") == "say" and f.name == "CHANNEL_EXECUTE"][0]
    elapsed_us = int(say_complete.event["Event-Date-Timestamp"]) - int(say_execute.event["Event-Date-Timestamp"])
    assert elapsed_us >= 4 * 1_000_000 / 50 * 0.9  # four sound files of 1 s at media_speed 50


async def test_playback_stops_on_its_terminator_only():
    """mod_dptools playback on_dtmf: digits are dequeued (DTMF events); only playback_terminators stop it."""
    calls = []

    async def steps(client: EslClient) -> None:
        await execute(client, "answer")
        await execute(client, "set", "playback_terminators=#")
        client.send(sendmsg_execute("playback", "silence_stream://-1", "p"))
        await client.event("CHANNEL_EXECUTE", Application_UUID="p")
        calls[0].press("1#")
        done = await client.event("CHANNEL_EXECUTE_COMPLETE", Application_UUID="p")
        assert done.event["Application-Response"] == "FILE PLAYED"
        assert done.event["variable_playback_terminator_used"] == "#"
        client.send("sendmsg\ncall-command: hangup\n\n")

    async def controller(client: EslClient) -> None:
        await client.command("connect")
        await client.command("myevents")
        await steps(client)
        await client.drain()

    async with OutboundServer(controller) as server:
        sim = FreeSwitchSim(SimConfig(dialplan=[Route("^9000$", "socket", f"127.0.0.1:{server.port} async full")],
                                      media_speed=50))
        await sim.start()
        try:
            calls.append(sim.place_call("9000", "1001"))
            await asyncio.wait_for(calls[0].done, 5)
        finally:
            await sim.close()
    digits = [f.event["DTMF-Digit"] for f in server.clients[0].received if f.name == "DTMF"]
    assert digits == ["1", "#"]


async def test_uuid_transfer_moves_a_parked_call_and_log_data_is_delivered():
    sim = FreeSwitchSim(SimConfig(dialplan=[Route("^7700$", "park"), Route("^7701$", "playback",
                                                                          "silence_stream://-1")]))
    await sim.start()
    try:
        client = await EslClient.connect(sim.esl_port)
        await client.read_frame()
        await client.command("auth ClueCon")
        assert (await client.command("log 7")).reply_text == "+OK log level 7 [7]"
        call = sim.place_call("7700", "1001")
        await asyncio.sleep(0.02)
        reply = await client.command(f"api uuid_transfer {call.uuid} 7701 XML public")
        assert reply.body == b"+OK\n"
        await asyncio.sleep(0.02)
        app = await client.command(f"api uuid_getvar {call.uuid} current_application")
        assert app.body == b"playback"
        await client.command(f"api uuid_kill {call.uuid}")
        result = await asyncio.wait_for(call.done, 5)
        assert [a[0] for a in result.apps] == ["park", "playback"]
        await client.command("api log NOTICE hello from the test")
        # FreeSWITCH's listener writes queued log lines once the api response is out
        log = await client.next(lambda f: f.content_type == "log/data" and b"hello from the test" in f.body)
        assert log.headers["Log-Level"] == "5"
        client.close()
    finally:
        await sim.close()
