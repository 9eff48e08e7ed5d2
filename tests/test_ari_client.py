"""AriClient against the fake ARI server serving captured REST bodies (captures/asterisk*)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import pytest

from switchctl.ari import errors as e
from switchctl.ari.client import AriClient, media_uri_problem, tone_uri
from switchctl.ari.models import Bridge, Channel, LiveRecording, Playback
from tests.test_ari_fakeserver import ARI_CAPTURES, FakeAri, load_rest

STATUS_CLASS = {
    400: e.AriBadRequest,
    401: e.AriAuthError,
    404: e.AriNotFound,
    405: e.AriMethodNotAllowed,
    409: e.AriConflict,
    412: e.AriPreconditionFailed,
    422: e.AriUnprocessable,
    500: e.AriServerError,
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeAri]:
    server = FakeAri()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def client(fake: FakeAri) -> AsyncIterator[AriClient]:
    base = str(fake.server.make_url("")).rstrip("/")
    async with AriClient(base, "ariuser", "aripass", "demo", timeout=2) as c:
        yield c


def _capture(name: str) -> str:
    return (ARI_CAPTURES / name).read_text()


async def test_error_mapping_on_every_captured_error_response(fake: FakeAri, client: AriClient) -> None:
    records = [r for r in load_rest("09_errors/a_rest_errors") if r["status"] >= 400]
    assert len(records) >= 50
    seen: set[int] = set()
    for record in records:
        fake.routes.clear()
        fake.route_record(record)
        data = record["request_body"]
        with pytest.raises(e.AriHttpError) as info:
            await client.request(
                record["method"],
                record["path"],
                params=dict(record["query"]),
                data=data.encode() if isinstance(data, str) else None,
                content_type=record["request_content_type"],
            )
        err = info.value
        body = json.loads(record["body"])
        assert type(err) is STATUS_CLASS[record["status"]], record["note"]
        assert (err.method, err.path, err.status) == (record["method"], record["path"], record["status"])
        assert err.message == body.get("message", body.get("error"))
        assert f"{record['method']} {record['path']} -> {record['status']}: {err.message}" in str(err)
        seen.add(record["status"])
    assert seen == set(STATUS_CLASS)


async def test_allocation_failed_uses_error_key(fake: FakeAri, client: AriClient) -> None:
    fake.route("POST", "/channels", 500, '{"error":"Allocation failed"}')
    with pytest.raises(e.AriServerError) as info:
        await client.originate("PJSIP/nosuchendpoint")
    assert info.value.message == "Allocation failed" and info.value.status == 500


async def test_wrong_password_raises_auth_error(fake: FakeAri) -> None:
    base = str(fake.server.make_url("")).rstrip("/")
    async with AriClient(base + "/ari", "ariuser", "wrong", "demo") as bad:
        with pytest.raises(e.AriAuthError) as info:
            await bad.info()
    assert info.value.message == "Authentication required" and info.value.path == "/asterisk/info"


async def test_not_found_channel(fake: FakeAri, client: AriClient) -> None:
    fake.route("GET", "/channels/1795627330.9", 404, _capture("rest_channel_not_found_404.json"))
    with pytest.raises(e.AriNotFound, match=r"GET /channels/1795627330.9 -> 404: Channel not found"):
        await client.get_channel("1795627330.9")
    with pytest.raises(e.AriNotFound, match="Resource not found"):  # an unrouted path, as Asterisk says
        await client.get_bridge("nope")


async def test_timeout_and_unavailable() -> None:
    slow = FakeAri()
    await slow.start()
    slow.route("GET", "/asterisk/ping", 200, _capture("rest_asterisk_ping.json"), delay=1.0)
    base = str(slow.server.make_url("")).rstrip("/")
    try:
        async with AriClient(base, "ariuser", "aripass", "demo", timeout=0.2) as c:
            with pytest.raises(e.AriTimeout, match=r"GET /asterisk/ping: no answer within 0.2 s"):
                await c.ping()
    finally:
        await slow.close()
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with AriClient(f"http://127.0.0.1:{port}", "u", "p", "demo", timeout=2) as c:
        with pytest.raises(e.AriUnavailable, match="cannot reach Asterisk") as info:
            await c.list_channels()
        assert (info.value.method, info.value.path) == ("GET", "/channels")


async def test_asterisk_and_channel_reads(fake: FakeAri, client: AriClient) -> None:
    fake.route("GET", "/asterisk/info", 200, _capture("rest_asterisk_info.json"))
    fake.route("GET", "/asterisk/ping", 200, _capture("rest_asterisk_ping.json"))
    fake.route("GET", "/channels", 200, _capture("rest_channels_list_empty.json"))
    fake.route("GET", "/channels/1795627330.0", 200, _capture("rest_channel_get_ringing.json"))
    fake.route("GET", "/channels/1795627330.0/variable", 200, _capture("rest_channel_get_var.json"), query=[("variable", "DEMO")])
    info = await client.info()
    assert info["system"]["version"].startswith("22.10.1")
    assert (await client.ping()).ping == "pong"
    assert await client.list_channels() == []
    channel = await client.get_channel("1795627330.0")
    assert isinstance(channel, Channel) and channel.id == "1795627330.0"
    assert await client.get_variable("1795627330.0", "DEMO") == "1"


async def test_originate_create_dial_and_params(fake: FakeAri, client: AriClient) -> None:
    fake.route("POST", "/channels", 200, _capture("rest_originate_pjsip.json"))
    fake.route("POST", "/channels/create", 200, _capture("rest_originate_local.json"))
    fake.route("POST", "/channels/1795627335.3/dial", 204)
    ch = await client.originate(
        "PJSIP/sipp/sip:2000@127.0.0.1:5090", app_args="originated-pjsip", caller_id="ARI <100>", timeout=10,
        variables={"CDR(userfield)": "booth-1"},
    )
    assert isinstance(ch, Channel) and ch.name.startswith("PJSIP/sipp-")
    method, path, query, body = fake.requests[-1]
    assert (method, path) == ("POST", "/channels")
    assert dict(query) == {
        "endpoint": "PJSIP/sipp/sip:2000@127.0.0.1:5090", "app": "demo", "appArgs": "originated-pjsip",
        "callerId": "ARI <100>", "timeout": "10",
    }
    assert json.loads(body) == {"variables": {"CDR(userfield)": "booth-1"}}
    # Into the dialplan: no app parameter.
    await client.originate("Local/3000@echo", extension="3000", context="echo", priority=1)
    assert "app" not in dict(fake.requests[-1][2]) and dict(fake.requests[-1][2])["context"] == "echo"
    created = await client.create_channel("Local/3000@echo", app_args=["a", "b"])
    assert created.id == "1795627335.3" and dict(fake.requests[-1][2])["appArgs"] == "a,b"
    assert await client.dial(created.id, caller="1795627330.0", timeout=5) is None
    assert dict(fake.requests[-1][2]) == {"caller": "1795627330.0", "timeout": "5"}


async def test_channel_control_calls(fake: FakeAri, client: AriClient) -> None:
    cid = "1795627330.0"
    for method, suffix in [
        ("POST", "/answer"), ("DELETE", ""), ("POST", "/ring"), ("DELETE", "/ring"), ("POST", "/variable"),
        ("POST", "/dtmf"), ("POST", "/continue"), ("POST", "/redirect"), ("POST", "/hold"), ("DELETE", "/hold"),
        ("POST", "/moh"), ("DELETE", "/moh"), ("POST", "/mute"), ("DELETE", "/mute"),
    ]:
        fake.route(method, f"/channels/{cid}{suffix}", 204)
    await client.answer(cid)
    await client.hangup(cid, reason="busy")
    assert fake.requests[-1][:3] == ("DELETE", f"/channels/{cid}", [("reason", "busy")])
    await client.hangup(cid, reason_code=21)
    assert fake.requests[-1][2] == [("reason_code", "21")]
    with pytest.raises(ValueError, match="not both"):
        await client.hangup(cid, reason="busy", reason_code=17)
    await client.ring(cid)
    await client.ring_stop(cid)
    await client.set_variable(cid, "TIMEOUT(absolute)", "3")
    assert dict(fake.requests[-1][2]) == {"variable": "TIMEOUT(absolute)", "value": "3"}
    await client.send_dtmf(cid, "12#", duration=100)
    assert dict(fake.requests[-1][2]) == {"dtmf": "12#", "duration": "100"}
    await client.continue_in_dialplan(cid, context="after-stasis", extension="s", priority=1)
    await client.redirect(cid, "PJSIP/sip:5555@127.0.0.1:5095")
    await client.hold(cid)
    await client.unhold(cid)
    await client.start_moh(cid, "default")
    await client.stop_moh(cid)
    await client.mute(cid)
    await client.unmute(cid, "in")
    assert len(fake.requests) == 15


async def test_play_record_snoop_and_media_checks(fake: FakeAri, client: AriClient) -> None:
    cid = "1795627330.0"
    fake.route("POST", f"/channels/{cid}/play", 201, _capture("rest_channel_play_tone.json"))
    fake.route("POST", f"/channels/{cid}/record", 201,
               '{"name":"cap5-terminate","format":"wav","state":"queued","target_uri":"channel:1795633391.104"}')
    fake.route("POST", f"/channels/{cid}/snoop", 200, _snoop_body())
    pb = await client.play(cid, tone_uri("ring", "us"), playback_id="pb-1")
    assert isinstance(pb, Playback) and pb.media_uri == "tone:ring;tonezone=us"
    assert dict(fake.requests[-1][2]) == {"media": "tone:ring;tonezone=us", "playbackId": "pb-1"}
    await client.play(cid, ["sound:beep", "digits:123", "recording:cap5"])
    assert dict(fake.requests[-1][2])["media"] == "sound:beep,digits:123,recording:cap5"
    before = len(fake.requests)
    with pytest.raises(ValueError, match="unknown scheme 'nosuchscheme'"):
        await client.play(cid, "nosuchscheme:foo")  # Asterisk would answer 201 and never finish it
    with pytest.raises(ValueError, match="no 'scheme:' prefix"):
        await client.play(cid, ["sound:beep", "beep"])
    with pytest.raises(ValueError, match="at least one"):
        await client.play(cid, [])
    assert len(fake.requests) == before
    assert media_uri_problem("tone:!950/330,!1400/330") is None
    rec = await client.record(cid, "cap5-terminate", max_duration=20, beep=True, terminate_on="#", if_exists="overwrite")
    assert isinstance(rec, LiveRecording) and rec.state == "queued"
    assert dict(fake.requests[-1][2]) == {
        "name": "cap5-terminate", "format": "wav", "maxDurationSeconds": "20", "beep": "true",
        "terminateOn": "#", "ifExists": "overwrite",
    }
    snoop = await client.snoop(cid, spy="both", snoop_id="snoop-spy-6", app_args="snoop-spy")
    assert snoop.name.startswith("Snoop/") and dict(fake.requests[-1][2])["app"] == "demo"


def _snoop_body() -> str:
    for record in load_rest("06_snoop/a_spy_and_whisper"):
        if record["path"].endswith("/snoop") and record["status"] == 200:
            return record["body"]
    raise AssertionError("no snoop body captured")


async def test_bridges(fake: FakeAri, client: AriClient) -> None:
    bid = "8ad937c5-f90c-4013-9499-9002e9753eed"
    fake.route("POST", "/bridges", 200, _capture("rest_bridge_create.json"))
    fake.route("GET", f"/bridges/{bid}", 200, _capture("rest_bridge_get_two.json"))
    fake.route("GET", "/bridges", 200, "[" + _capture("rest_bridge_get_two.json") + "]")
    for method, suffix in [("POST", "/addChannel"), ("POST", "/removeChannel"), ("DELETE", ""), ("POST", "/moh"), ("DELETE", "/moh")]:
        fake.route(method, f"/bridges/{bid}{suffix}", 204)
    fake.route("POST", f"/bridges/{bid}/play", 201, _capture("rest_channel_play_beep.json"))
    bridge = await client.create_bridge(name="demo-bridge")
    assert isinstance(bridge, Bridge) and bridge.id == bid
    assert dict(fake.requests[-1][2]) == {"type": "mixing", "name": "demo-bridge"}
    await client.add_channel(bid, ["1795627335.1", "1795627335.2"], role="participant", absorb_dtmf=False)
    assert dict(fake.requests[-1][2]) == {"channel": "1795627335.1,1795627335.2", "role": "participant", "absorbDTMF": "false"}
    assert (await client.get_bridge(bid)).channels == ("1795627335.1", "1795627335.2")
    assert [b.id for b in await client.list_bridges()] == [bid]
    await client.play_on_bridge(bid, "sound:beep")
    await client.start_bridge_moh(bid, "default")
    await client.stop_bridge_moh(bid)
    await client.remove_channel(bid, "1795627335.2")
    await client.destroy_bridge(bid)


async def test_applications_playbacks_recordings(fake: FakeAri, client: AriClient) -> None:
    fake.route("POST", "/applications/demo/subscription", 200, _capture("rest_app_subscribe_channel.json"))
    fake.route("DELETE", "/applications/demo/subscription", 422, '{"message":"Event source was not subscribed to"}')
    fake.route("GET", "/applications", 200, _capture("rest_applications.json"))
    app = await client.subscribe("channel:1795627330.0")
    assert "1795627330.0" in app.channel_ids
    assert fake.requests[-1][2] == [("eventSource", "channel:1795627330.0")]
    with pytest.raises(e.AriUnprocessable, match="not subscribed"):
        await client.unsubscribe("bridge:no-such-bridge")
    assert [a.name for a in await client.list_applications()] == ["demo"]
    records = load_rest("01_dtmf/c_playback_control") + load_rest("05_recording/a_channel_record")
    for record in reversed(records):  # the first successful answer for each call wins
        if record["path"].startswith(("/playbacks/", "/recordings/")) and record["status"] < 300:
            fake.route_record(record)
    assert (await client.get_playback("pb-ctl")).state in {"playing", "paused"}
    await client.control_playback("pb-ctl", "pause")
    await client.stop_playback("pb-ctl")
    live = await client.get_live_recording("cap5-stop")
    assert live.state == "recording"
    for call in (client.pause_recording, client.unpause_recording, client.mute_recording,
                 client.unmute_recording, client.stop_recording):
        await call("cap5-stop")
    stored = await client.list_stored_recordings()
    assert "cap5-terminate" in [r.name for r in stored]
    assert (await client.get_stored_recording("cap5-terminate")).format == "wav"
    assert (await client.copy_stored_recording("cap5-terminate", "cap5-copy")).name == "cap5-copy"
    await client.delete_stored_recording("cap5-copy")


async def test_ids_are_path_encoded(fake: FakeAri, client: AriClient) -> None:
    with pytest.raises(e.AriNotFound):
        await client.delete_stored_recording("a/b?x=1")
    assert fake.raw_paths[-1] == "/ari/recordings/stored/a%2Fb%3Fx%3D1"
    with pytest.raises(ValueError, match="cannot be empty"):
        await client.get_channel("")


async def test_base_url_forms() -> None:
    a = AriClient("http://127.0.0.1:8088", "u", "p", "demo")
    b = AriClient("http://127.0.0.1:8088/ari/", "u", "p", "demo")
    assert str(a.root) == str(b.root) == "http://127.0.0.1:8088/ari"
    assert str(a.events_url(subscribe_all=True)) == "ws://127.0.0.1:8088/ari/events?app=demo&subscribeAll=true"
    await asyncio.gather(a.close(), b.close())


@pytest.mark.parametrize("value", [
    "a b&c=d+e", "tone:!440/2000", "sound:a,sound:b", "PJSIP/sip:1000@127.0.0.1:5060", "50% ;#?/é",
    "tone:ring;tonezone=us", "",
])
async def test_query_values_reach_the_server_exactly(fake: FakeAri, client: AriClient, value: str) -> None:
    # The client encodes the query itself (the fast path): whatever it keeps unquoted or quotes,
    # the server must decode the very same value.
    fake.route("POST", "/channels/c1/variable", 204)
    await client.set_variable("c1", "CALLERID(name)", value)
    assert dict(fake.requests[-1][2]) == {"variable": "CALLERID(name)", "value": value}


async def test_empty_body_is_none_json_body_is_decoded_and_bad_json_is_a_protocol_error(
    fake: FakeAri, client: AriClient
) -> None:
    fake.route("POST", "/channels/c1/answer", 204)
    assert await client.request("POST", "/channels/c1/answer") is None
    fake.route("GET", "/asterisk/ping", 200, {"ping": "pong", "timestamp": "2026-11-25T17:22:10.431+0000"})
    assert (await client.ping()).ping == "pong"
    fake.route("GET", "/asterisk/info", 200, "{not json")
    with pytest.raises(e.AriProtocolError, match=r"GET /asterisk/info -> 200: not JSON"):
        await client.info()
    fake.route("GET", "/asterisk/info", 503, "<html>busy</html>")
    with pytest.raises(e.AriServerError, match="<html>busy</html>"):
        await client.info()


async def test_headers_are_shared_and_content_type_only_when_a_body_is_sent(fake: FakeAri, client: AriClient) -> None:
    fake.route("POST", "/channels", 200, _capture("rest_originate_pjsip.json"))
    await client.originate("PJSIP/sipp", variables={"A": "1"})
    await client.originate("PJSIP/sipp")
    assert client.auth_headers == {"Authorization": client.auth_headers["Authorization"]}  # never grows
    assert fake.requests[-2][3] and not fake.requests[-1][3]


async def test_timeout_can_be_changed_after_construction(fake: FakeAri, client: AriClient) -> None:
    fake.route("GET", "/asterisk/info", 200, "{}", delay=0.5)
    client.timeout = 0.1
    assert client.timeout == 0.1
    with pytest.raises(e.AriTimeout, match="within 0.1 s"):
        await client.info()


async def test_event_filter_body_follows_the_api(fake: FakeAri, client: AriClient) -> None:
    fake.route("PUT", "/applications/demo/eventFilter", 200, _capture("rest_app_subscribe_channel.json"))
    await client.set_event_filter(allowed=["StasisStart"], disallowed=["ChannelVarset", "ChannelDialplan"])
    assert json.loads(fake.requests[-1][3]) == {
        "allowed": [{"type": "StasisStart"}], "disallowed": [{"type": "ChannelVarset"}, {"type": "ChannelDialplan"}]}
    await client.set_event_filter(disallowed=[])  # clears only the disallowed list
    assert json.loads(fake.requests[-1][3]) == {"disallowed": []}
    await client.set_event_filter()  # both None: Asterisk clears both
    assert json.loads(fake.requests[-1][3]) == {}
