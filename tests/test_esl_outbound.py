"""OutboundServer/OutboundSession against a fake FreeSWITCH replaying the outbound_sipp_dtmf call."""

from __future__ import annotations

import asyncio
import json

import pytest

from switchctl.esl.errors import ChannelHungUp
from switchctl.esl.outbound import OutboundServer, OutboundSession

from tests.capturepaths import CAPTURES

CALL = CAPTURES / "freeswitch" / "outbound_sipp_dtmf"
pytestmark = pytest.mark.skipif(not CALL.is_dir(), reason="captures not available")


def captured_messages() -> list[bytes]:
    data = (CALL / "call001.recv.raw").read_bytes()
    index = json.loads((CALL / "call001.index.json").read_text())
    out, pos = [], 0
    for entry in index:
        out.append(data[pos : pos + entry["bytes"]])
        pos += entry["bytes"]
    assert pos == len(data)
    return out


M = captured_messages()


def app_uuid(msg: bytes) -> bytes:
    for line in msg.split(b"\n"):
        if line.startswith(b"Application-UUID: "):
            return line.split(b": ", 1)[1]
    raise AssertionError("no Application-UUID")


# the captured replies/events for each execute (reply first), and the app uuid they carry
EXEC_GROUPS = {"answer": [4, 5, 6, 7, 8], "playback": [9, 10, 11], "play_and_get_digits": list(range(12, 19))}
ORIGINAL_UUID = {app: app_uuid(M[group[-1]]) for app, group in EXEC_GROUPS.items()}


class FakeFreeSWITCH:
    """Connects to our OutboundServer like the `socket` app and answers each command with the
    captured bytes, rewriting Application-UUID to the Event-UUID we sent."""

    def __init__(self, port: int, hangup_during: str | None = None, late_completion: bool = True) -> None:
        self.port = port
        self.commands: list[str] = []
        self.hangup_during = hangup_during
        self.late_completion = late_completion

    async def call(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            while True:
                try:
                    block = await reader.readuntil(b"\n\n")
                except asyncio.IncompleteReadError:
                    return
                lines = block.decode().strip("\n").split("\n")
                headers = dict(line.split(": ", 1) for line in lines[1:])
                if "Content-Length" in headers:
                    await reader.readexactly(int(headers["Content-Length"]))
                cmd = lines[0]
                self.commands.append(cmd if not cmd.startswith("sendmsg") else f"sendmsg {headers.get('call-command')} "
                                     f"{headers.get('execute-app-name', headers.get('hangup-cause', ''))}")
                writer.write(self.answer(cmd, headers))
                await writer.drain()
                if cmd == "exit":
                    return
        finally:
            writer.close()

    def answer(self, cmd: str, headers: dict[str, str]) -> bytes:
        if cmd == "connect":
            return M[0]
        if cmd.startswith("myevents"):
            return M[1]
        if cmd == "linger":
            return M[2]
        if cmd.startswith("api uuid_getvar"):
            return M[3]
        if cmd == "exit":
            return M[27] + M[28]
        if headers.get("call-command") == "hangup":
            return M[19] + b"".join(M[20:27])
        app = headers["execute-app-name"]
        group = [M[i].replace(ORIGINAL_UUID[app], headers["Event-UUID"].encode()) for i in EXEC_GROUPS[app]]
        if app == self.hangup_during:
            hangup = M[20:27]  # CHANNEL_HANGUP, UNPARK, socket EXECUTE_COMPLETE, STATE x2, HANGUP_COMPLETE, linger
            if self.late_completion:  # FreeSWITCH still completes the running app after the hangup
                return group[0] + group[1] + hangup[0] + group[-1] + b"".join(hangup[1:])
            return group[0] + group[1] + b"".join(hangup)
        return b"".join(group)


@pytest.fixture
async def server():
    servers = []

    async def make(handler):
        srv = OutboundServer(handler, "127.0.0.1", 0)
        await srv.start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        await srv.close()


async def test_full_captured_call(server):
    results: dict = {}
    done = asyncio.Event()

    async def handler(session: OutboundSession) -> None:
        try:
            digits: list[str] = []
            session.add_event_handler(lambda e: digits.append(e["DTMF-Digit"]) if e.name == "DTMF" else None)
            data = await session.connect()
            results["uuid"] = session.uuid
            results["dest"] = data.get("Caller-Destination-Number")
            await session.myevents()
            await session.linger()
            results["var"] = await session.getvar("esl_test")
            answer = await session.execute("answer")
            playback = await session.execute("playback", "tone_stream://%(400,100,600);loops=1")
            pagd = await session.execute(
                "play_and_get_digits",
                "1 4 1 8000 # tone_stream://%(200,0,500) silence_stream://250 esl_digits \\d+ 2000")
            results["apps"] = [answer["Application"], playback["Application"], pagd["Application"]]
            results["playback_response"] = playback.get("Application-Response")
            results["digits_var"] = pagd.variable("esl_digits")
            await session.hangup()
            results["cause"] = await session.wait_hangup()
            results["digits"] = digits
            results["bytes"] = (session.bytes_received, session.bytes_sent)
        finally:
            done.set()

    srv = await server(handler)
    fs = FakeFreeSWITCH(srv.port)
    await asyncio.wait_for(fs.call(), 5)
    await asyncio.wait_for(done.wait(), 5)
    assert results["uuid"] == "6de40c24-1d25-4863-9276-73c9af2e32cc"
    assert results["var"] == "outbound_socket"
    assert results["apps"] == ["answer", "playback", "play_and_get_digits"]
    assert results["playback_response"] == "FILE PLAYED"
    assert results["digits_var"] == "135"
    assert results["digits"] == ["1", "3", "5", "#"]
    assert results["cause"] == "NORMAL_CLEARING"
    assert results["bytes"][0] >= sum(map(len, M[:21])) and results["bytes"][1] > 500
    assert fs.commands[-2:] == ["sendmsg hangup NORMAL_CLEARING", "exit"]
    assert fs.commands[0] == "connect"


async def test_hangup_mid_execute_still_delivers_completion(server):
    results: dict = {}
    done = asyncio.Event()

    async def handler(session: OutboundSession) -> None:
        try:
            await session.connect()
            await session.myevents()
            await session.linger()
            ev = await session.execute("play_and_get_digits", "1 4 1 8000 # x y esl_digits \\d+ 2000")
            results["completion"] = ev["Application"]
            results["hungup"] = session.hungup
            try:
                await session.execute("playback", "x")
            except ChannelHungUp as exc:
                results["after"] = exc.cause
            results["cause"] = await session.wait_hangup()
        finally:
            done.set()

    srv = await server(handler)
    fs = FakeFreeSWITCH(srv.port, hangup_during="play_and_get_digits", late_completion=True)
    await asyncio.wait_for(fs.call(), 5)
    await asyncio.wait_for(done.wait(), 5)
    assert results == {"completion": "play_and_get_digits", "hungup": True,
                       "after": "NORMAL_CLEARING", "cause": "NORMAL_CLEARING"}
    assert fs.commands[-1] == "exit"


async def test_hangup_mid_execute_without_completion_raises(server):
    results: dict = {}
    done = asyncio.Event()

    async def handler(session: OutboundSession) -> None:
        try:
            await session.connect()
            await session.myevents()
            try:
                await session.execute("play_and_get_digits", "1 4 1 8000 # x y esl_digits \\d+ 2000")
            except ChannelHungUp as exc:
                results["raised"] = exc.cause
        finally:
            done.set()

    srv = await server(handler)
    fs = FakeFreeSWITCH(srv.port, hangup_during="play_and_get_digits", late_completion=False)
    await asyncio.wait_for(fs.call(), 5)
    await asyncio.wait_for(done.wait(), 5)
    assert results == {"raised": "NORMAL_CLEARING"}


async def test_failing_handler_does_not_stop_the_server(server):
    calls = 0

    async def handler(session: OutboundSession) -> None:
        nonlocal calls
        calls += 1
        await session.connect()
        if calls == 1:
            raise RuntimeError("bug in a flow")
        await session.myevents()

    srv = await server(handler)
    first = FakeFreeSWITCH(srv.port)
    await asyncio.wait_for(first.call(), 5)
    second = FakeFreeSWITCH(srv.port)
    await asyncio.wait_for(second.call(), 5)
    assert first.commands == ["connect", "exit"]
    assert second.commands == ["connect", "myevents plain", "exit"]
    for _ in range(50):
        if srv.sessions_served == 1:
            break
        await asyncio.sleep(0.01)
    assert srv.sessions_failed == 1 and srv.sessions_served == 1


async def test_close_cancels_running_sessions(server):
    started = asyncio.Event()

    async def handler(session: OutboundSession) -> None:
        await session.connect()
        started.set()
        await asyncio.sleep(60)

    srv = await server(handler)
    fs = FakeFreeSWITCH(srv.port)
    call = asyncio.create_task(fs.call())
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.wait_for(srv.close(), 5)
    await asyncio.wait_for(call, 5)
    assert fs.commands == ["connect", "exit"]
