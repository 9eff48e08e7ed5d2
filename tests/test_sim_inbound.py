"""Inbound ESL server of the simulator: auth (s9), api bodies and bgapi (s6), event subscriptions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from switchctl.sim import FreeSwitchSim, Route, SimConfig
from tests.test_sim_client import CAPTURES, EslClient

S6 = CAPTURES / "freeswitch-scenarios/s6_api"
S9 = CAPTURES / "freeswitch-scenarios/s9_auth_acl"


@pytest.fixture
async def sim():
    simulator = FreeSwitchSim(SimConfig(
        dialplan=[Route(r"^7700$", "park"), Route(r"^7701$", "playback", "silence_stream://-1")], media_speed=50))
    await simulator.start()
    yield simulator
    await simulator.close()


async def raw_session(port: int, sent: list[bytes], *, local_addr=None) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=local_addr)
    for data in sent:
        await asyncio.sleep(0.02)
        writer.write(data)
    received = await asyncio.wait_for(reader.read(-1), 5)
    writer.close()
    return received


async def authed(sim: FreeSwitchSim) -> EslClient:
    client = await EslClient.connect(sim.esl_port)
    assert (await client.read_frame()).content_type == "auth/request"
    assert (await client.command("auth ClueCon")).reply_text == "+OK accepted"
    return client


async def test_wrong_password_is_byte_exact(sim):
    received = await raw_session(sim.esl_port, [b"auth WrongPassword\n\n"])
    assert received == (S9 / "a1_auth_wrong_password.recv.raw").read_bytes()


async def test_userauth_fails_byte_exact(sim):
    received = await raw_session(sim.esl_port, [b"userauth nobody@127.0.0.1:secret\n\n"])
    assert received == (S9 / "a5_userauth_unknown_user.recv.raw").read_bytes()


async def test_commands_before_auth(sim):
    sent = [b"api status\n\n", b"event plain ALL\n\n", b"auth ClueCon\n\n", b"api status\n\n", b"exit\n\n"]
    received = await raw_session(sim.esl_port, sent)
    expected = (S9 / "a2_command_before_auth.recv.raw").read_bytes()
    # everything but the status body (uptime, counters) is byte-identical
    head, _, tail = expected.partition(b"Content-Type: api/response\n")
    assert received.startswith(head + b"Content-Type: api/response\n")
    assert received.endswith(b"Reply-Text: +OK bye\n\n" + (S9 / "a1_auth_wrong_password.recv.raw").read_bytes()[82:])


async def test_acl_rejection_byte_exact():
    simulator = FreeSwitchSim(SimConfig(acl=("127.0.0.1/32",)))
    await simulator.start()
    try:
        received = await raw_session(simulator.esl_port, [], local_addr=("127.0.0.2", 0))
    finally:
        await simulator.close()
    assert received == (S9 / "a4_acl_rejected_from_127_0_0_2.recv.raw").read_bytes()
    assert any("Rejected by acl" in text for _, text in simulator.logs)


async def test_api_bodies_on_a_live_channel(sim):
    client = await authed(sim)
    call = sim.place_call("7700", "55501")
    await asyncio.sleep(0.05)
    uuid = call.uuid
    bodies = {}
    for name, line in [
        ("api_uuid_getvar_existing", f"uuid_getvar {uuid} sip_from_user"),
        ("api_uuid_getvar_unset", f"uuid_getvar {uuid} c2_no_such_var"),
        ("api_uuid_setvar", f"uuid_setvar {uuid} c2_test hello world"),
        ("api_uuid_getvar_after_setvar", f"uuid_getvar {uuid} c2_test"),
        ("api_uuid_setvar_no_value_unsets", f"uuid_setvar {uuid} c2_test"),
        ("api_uuid_getvar_after_unset", f"uuid_getvar {uuid} c2_test"),
        ("api_uuid_setvar_multi", f"uuid_setvar_multi {uuid} c2_a=1;c2_b=2"),
        ("api_uuid_getvar_no_args", "uuid_getvar"),
        ("api_uuid_exists_true", f"uuid_exists {uuid}"),
        ("api_uuid_exists_false", "uuid_exists 00000000-0000-0000-0000-000000000000"),
        ("api_uuid_getvar_no_such_channel", "uuid_getvar 00000000-0000-0000-0000-000000000000 x"),
        ("api_unknown_command", "no_such_command"),
        ("api_show_channels_count", "show channels count"),
        ("api_uuid_kill_originated", f"uuid_kill {uuid}"),
    ]:
        reply = await client.command(f"api {line}")
        bodies[name] = reply.raw
    expected = {name: (S6 / f"{name}.raw").read_bytes() for name in bodies}
    assert bodies["api_uuid_getvar_existing"] == expected["api_uuid_getvar_existing"]
    expected_count = b"Content-Type: api/response\nContent-Length: 10\n\n\n1 total.\n"
    assert bodies.pop("api_show_channels_count") == expected_count
    expected.pop("api_show_channels_count")
    assert bodies == expected
    result = await asyncio.wait_for(call.done, 5)
    assert result.hangup_cause == "NORMAL_CLEARING"
    assert result.variables["c2_a"] == "1" and "c2_test" not in result.variables
    empty = await client.command("api show channels as json")
    assert empty.raw == (S6 / "api_show_channels_as_json_empty.raw").read_bytes()
    client.close()


async def test_show_channels_lists_live_channels(sim):
    client = await authed(sim)
    call = sim.place_call("7700", "55501")
    await asyncio.sleep(0.05)
    reply = await client.command("api show channels as json")
    assert reply.body.startswith(b'{"row_count":1,"rows":[{"uuid":"' + call.uuid.encode())
    dump = await client.command(f"api uuid_dump {call.uuid}")
    assert dump.body.startswith(b"Event-Name: CHANNEL_DATA\n")
    await client.command(f"api uuid_kill {call.uuid}")
    await asyncio.wait_for(call.done, 5)
    client.close()


async def test_bgapi_with_client_job_uuid_and_events(sim):
    client = await authed(sim)
    assert (await client.command("event plain BACKGROUND_JOB RELOADXML")).reply_text == \
        "+OK event listener enabled plain"
    job = "c2c2c2c2-0000-4000-8000-000000000001"
    reply = await client.command("bgapi status", f"Job-UUID: {job}")
    assert reply.raw == (S6 / "bgapi_status_with_client_job_uuid.command_reply.raw").read_bytes()
    event = await client.event("BACKGROUND_JOB")
    assert event.event["Job-UUID"] == job and event.event["Job-Command"] == "status"
    assert b"\n\nUP 0 years" in event.body
    reply = await client.command("api reloadxml")
    assert reply.raw == (S6 / "api_reloadxml_ok.raw").read_bytes()
    await client.event("RELOADXML")
    client.close()


async def test_reloadxml_with_malformed_file(tmp_path: Path):
    (tmp_path / "good.xml").write_text("<include>\n  <context name='public'/>\n</include>\n")
    (tmp_path / "zz_bad.xml").write_text("<include>\n <context name='x'>\n  <extension name='e'>\n"
                                         "  </context>\n</include>\n")
    simulator = FreeSwitchSim(SimConfig(conf_dir=tmp_path))
    await simulator.start()
    try:
        client = await authed(simulator)
        await client.command("event plain RELOADXML")
        reply = await client.command("api reloadxml")
        assert reply.body == b"+OK [[error near line 4]: unexpected closing tag </context>]\n"
        (tmp_path / "zz_bad.xml").unlink()
        reply = await client.command("api sofia profile internal rescan")
        assert reply.raw == (S6 / "api_sofia_profile_internal_rescan.raw").read_bytes()
        event = await client.event("RELOADXML")  # only the good reload fired it
        assert event.name == "RELOADXML"
        client.close()
    finally:
        await simulator.close()


async def test_events_follow_subscription_and_filters(sim):
    everything = await authed(sim)
    await everything.command("event plain ALL")
    filtered = await authed(sim)
    await filtered.command("event json CHANNEL_CREATE CHANNEL_HANGUP_COMPLETE")
    first = sim.place_call("7700", "1001")
    second = sim.place_call("7700", "1002")
    await asyncio.sleep(0.05)
    reply = await filtered.command(f"filter Unique-ID {second.uuid}")
    assert reply.reply_text == f"+OK filter added. [Unique-ID]=[{second.uuid}]"
    await everything.command("api hupall")
    await asyncio.wait_for(asyncio.gather(first.done, second.done), 5)
    got = await filtered.event("CHANNEL_HANGUP_COMPLETE")
    assert got.event["Unique-ID"] == second.uuid and got.content_type == "text/event-json"
    await everything.event("CHANNEL_DESTROY", Unique_ID=first.uuid)
    names = [f.name for f in everything.received if f.event.get("Unique-ID") == first.uuid]
    assert names[:4] == ["CHANNEL_STATE", "CHANNEL_CREATE", "CHANNEL_CALLSTATE", "CHANNEL_STATE"]
    assert names[-4:] == ["CHANNEL_CALLSTATE", "CHANNEL_STATE", "CHANNEL_HANGUP_COMPLETE", "CHANNEL_DESTROY"]
    assert (await filtered.command("nixevent CHANNEL_CREATE")).reply_text == "+OK events nixed"
    assert (await filtered.command("noevents")).reply_text == "+OK no longer listening for events"
    assert (await filtered.command("bogus")).reply_text == "-ERR command not found"
    everything.close()
    filtered.close()


async def test_sessions_per_second_throttle():
    """switch_core_session_request_uuid: `--sps <= 0` refuses, so at most sps-1 new sessions a second."""
    simulator = FreeSwitchSim(SimConfig(dialplan=[Route(".", "hangup")], sessions_per_second=3))
    await simulator.start()
    try:
        calls = [simulator.place_call("1", str(n)) for n in range(5)]
        results = await asyncio.wait_for(asyncio.gather(*(c.done for c in calls)), 5)
    finally:
        await simulator.close()
    refused = [r for r in results if r.sip_response]
    # 2 admitted per wall-clock second: at least one of five back-to-back calls is refused
    assert 1 <= len(refused) <= 3
    assert refused[0].sip_response == "503 Maximum Calls In Progress" and refused[0].uuid is None
    assert any(text.startswith("Throttle Error!") for _, text in simulator.logs)
