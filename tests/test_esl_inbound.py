"""InboundClient against a local fake FreeSWITCH that replays captured bytes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from switchctl.esl import inbound as inbound_mod
from switchctl.esl.errors import AccessDenied, AuthError, CommandError, ConnectionLost, ReplyTimeout
from switchctl.esl.inbound import InboundClient

from tests.capturepaths import CAPTURES

FS = CAPTURES / "freeswitch"
S9 = CAPTURES / "freeswitch-scenarios" / "s9_auth_acl"
pytestmark = pytest.mark.skipif(not FS.is_dir(), reason="captures not available")


def cap(name: str) -> bytes:
    return (FS / name).read_bytes()


AUTH_REQUEST = cap("json_01_auth_request.raw")
AUTH_OK = cap("json_02_command_reply_auth.raw")
EVENT_OK = cap("json_04_command_reply_event.raw")
FILTER_OK = cap("json_06_command_reply_filter.raw")
API_STATUS = cap("json_03_api_response_status.raw")
API_ERR = cap("json_03b_api_response_err.raw")
BGAPI_REPLY = cap("json_05_command_reply_bgapi.raw")
BG_EVENT = cap("event_BACKGROUND_JOB.json.raw")
ANSWER_EVENT = cap("event_CHANNEL_ANSWER.json.raw")
BGAPI_REPLY_UUID = b"7a51183a-1260-45c7-9b03-2aac0d4b8b41"
BG_EVENT_UUID = b"df9bd60d-fe78-48ee-8b5c-6cada5f8d8d5"
assert BGAPI_REPLY_UUID in cap("plain_05_command_reply_bgapi.raw")

Responder = Callable[[str, dict[str, str], asyncio.StreamWriter], "asyncio.Future | None"]


class FakeFS:
    """Speaks the server side from captured bytes; `respond(cmd, headers, writer)` may write or close."""

    def __init__(self, respond, greeting: bytes = AUTH_REQUEST) -> None:
        self.respond = respond
        self.greeting = greeting
        self.commands: list[list[str]] = []  # per connection
        self.server: asyncio.base_events.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: list = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        self.tasks.append(asyncio.current_task())
        cmds: list[str] = []
        self.commands.append(cmds)
        writer.write(self.greeting)
        try:
            while True:
                block = await reader.readuntil(b"\n\n")
                lines = block.decode().strip("\n").split("\n")
                headers = dict(line.split(": ", 1) for line in lines[1:])
                if "Content-Length" in headers:
                    await reader.readexactly(int(headers["Content-Length"]))
                cmds.append(lines[0])
                result = self.respond(lines[0], headers, writer)
                if asyncio.iscoroutine(result):
                    await result
                if writer.is_closing():
                    return
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 2)
        await self.server.wait_closed()


def standard(cmd: str, headers: dict[str, str], writer: asyncio.StreamWriter):
    if cmd.startswith("auth "):
        writer.write(AUTH_OK if cmd == "auth ClueCon" else b"Content-Type: command/reply\nReply-Text: -ERR invalid\n\n")
    elif cmd.startswith("event "):
        writer.write(EVENT_OK)
    elif cmd.startswith("filter "):
        writer.write(FILTER_OK)
    elif cmd == "api status":
        writer.write(ANSWER_EVENT + API_STATUS)  # an event interleaved before the reply
    elif cmd.startswith("api uuid_kill"):
        writer.write(API_ERR)
    elif cmd.startswith("bgapi "):
        job = headers["Job-UUID"].encode()
        # the job's event may even come before the command reply
        writer.write(BG_EVENT.replace(BG_EVENT_UUID, job) + BGAPI_REPLY.replace(BGAPI_REPLY_UUID, job))
    elif cmd.startswith("api hang"):
        pass  # never answers
    elif cmd.startswith("api die"):
        writer.close()


@pytest.fixture
async def fake():
    servers = []

    async def make(respond=standard, greeting=AUTH_REQUEST):
        fs = FakeFS(respond, greeting)
        port = await fs.start()
        servers.append(fs)
        return fs, port

    yield make
    for fs in servers:
        await fs.stop()


async def test_connect_auth_subscribe_api_and_interleaved_event(fake):
    fs, port = await fake()
    client = InboundClient("127.0.0.1", port, "ClueCon", filters=[("Event-Name", "HEARTBEAT")])
    seen = []
    client.add_event_handler(seen.append)
    await client.connect()
    assert client.connected
    status = await client.api("status")
    assert status.startswith("UP ") and "session(s)" in status
    assert [e.name for e in seen] == ["CHANNEL_ANSWER"]
    assert fs.commands[0][:3] == ["auth ClueCon", "event json BACKGROUND_JOB CHANNEL_HANGUP_COMPLETE",
                                  "filter Event-Name HEARTBEAT"]
    with pytest.raises(CommandError) as exc:
        await client.api("uuid_kill nope")
    assert exc.value.reply.startswith("-ERR No such channel!")
    assert (await client.api("uuid_kill nope", check=False)).startswith("-ERR")
    assert client.connection.bytes_received > len(API_STATUS) and client.connection.bytes_sent > 0
    await client.close()


async def test_bgapi_resolves_by_our_job_uuid(fake):
    fs, port = await fake()
    client = InboundClient("127.0.0.1", port, "ClueCon")
    await client.connect()
    body = await client.bgapi("originate loopback/7703 &park")
    assert body == "+OK ff6104c4-987c-40b3-858b-629be9d4e68b\n"
    assert fs.commands[0][-1] == "bgapi originate loopback/7703 &park"
    await client.close()


async def test_auth_failure_with_captured_bytes(fake):
    a1 = {p.name.split(".")[1]: p.read_bytes() for p in S9.glob("a1_auth_wrong_password.0*.raw")}

    def respond(cmd, headers, writer):
        writer.write(a1["01_command_reply"] + a1["02_text_disconnect-notice"])
        writer.close()

    _, port = await fake(respond, a1["00_auth_request"])
    client = InboundClient("127.0.0.1", port, "wrong")
    with pytest.raises(AuthError, match="-ERR invalid"):
        await client.connect()
    assert not client.connected


async def test_rude_rejection(fake):
    _, port = await fake(standard, (S9 / "a4_acl_rejected_from_127_0_0_2.recv.raw").read_bytes())
    client = InboundClient("127.0.0.1", port, "ClueCon")
    with pytest.raises(AccessDenied, match="Access Denied"):
        await client.connect()


async def test_server_closing_mid_command_fails_fast(fake):
    _, port = await fake()
    client = InboundClient("127.0.0.1", port, "ClueCon", reply_timeout=5)
    await client.connect()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(ConnectionLost) as exc:
        await client.api("die now")
    assert loop.time() - t0 < 1.0
    assert exc.value.pending == "api die now"
    assert not client.connected


async def test_truncated_frame_is_reported(fake):
    def respond(cmd, headers, writer):
        if cmd.startswith("api"):
            writer.write(API_STATUS[:-20])
            writer.close()
        else:
            standard(cmd, headers, writer)

    _, port = await fake(respond)
    client = InboundClient("127.0.0.1", port, "ClueCon")
    await client.connect()
    with pytest.raises(ConnectionLost) as exc:
        await client.api("status")
    assert exc.value.truncated


async def test_reply_timeout_keeps_order(fake):
    _, port = await fake()
    client = InboundClient("127.0.0.1", port, "ClueCon", reply_timeout=0.2)
    await client.connect()
    with pytest.raises(ReplyTimeout):
        await client.api("hang forever")
    await client.close()


async def test_reconnect_resubscribes(fake, monkeypatch):
    monkeypatch.setattr(inbound_mod, "BACKOFF_START", 0.02)
    fs, port = await fake()
    client = InboundClient("127.0.0.1", port, "ClueCon", filters=[("Event-Name", "HEARTBEAT")])
    stop = asyncio.Event()
    runner = asyncio.create_task(client.run(stop))
    for _ in range(100):
        if client.connected:
            break
        await asyncio.sleep(0.01)
    assert client.connected
    fs.writers[0].close()  # the switch drops us
    for _ in range(200):
        if len(fs.commands) >= 2 and len(fs.commands[1]) >= 3:
            break
        await asyncio.sleep(0.01)
    assert fs.commands[1] == ["auth ClueCon", "event json BACKGROUND_JOB CHANNEL_HANGUP_COMPLETE",
                              "filter Event-Name HEARTBEAT"]
    assert client.connects == 2
    stop.set()
    await asyncio.wait_for(runner, 2)
    assert not client.connected


async def test_no_log_storm_while_down(monkeypatch, caplog):
    monkeypatch.setattr(inbound_mod, "BACKOFF_START", 0.005)
    monkeypatch.setattr(inbound_mod, "BACKOFF_MAX", 0.01)
    # a port nobody listens on
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    client = InboundClient("127.0.0.1", port, "ClueCon", connect_timeout=0.2)
    stop = asyncio.Event()
    caplog.set_level(logging.DEBUG, logger="switchctl.esl")
    runner = asyncio.create_task(client.run(stop))
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.wait_for(runner, 2)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "unreachable" in warnings[0].getMessage()
