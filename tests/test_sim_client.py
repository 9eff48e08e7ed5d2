"""A minimal raw-socket ESL client for the simulator tests (deliberately independent of switchctl.esl),
plus tests that it frames captured FreeSWITCH bytes correctly."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

# ../shared/captures next to the checkout (DESIGN.md: tests use the captured bytes there)
from tests.capturepaths import CAPTURES


@dataclass
class Frame:
    headers: dict[str, str]
    body: bytes = b""
    raw: bytes = b""
    event: dict[str, str] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    @property
    def reply_text(self) -> str:
        return self.headers.get("Reply-Text", "")

    @property
    def name(self) -> str:
        """Event name for events, else the content type (the connect reply is a command/reply)."""
        if self.content_type.startswith("text/event"):
            return self.event.get("Event-Name", self.content_type)
        return self.content_type

    def __repr__(self) -> str:
        extra = self.event.get("Application", "") or self.reply_text or self.body[:40].decode(errors="replace")
        return f"<{self.name} {extra}>"


def _parse_headers(block: bytes, *, decode: bool) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("utf-8", "replace").split("\n"):
        if not line:
            continue
        name, _, value = line.partition(": ")
        headers.setdefault(name, urllib.parse.unquote(value) if decode else value)
    return headers


def parse_frames(buffer: bytearray) -> list[Frame]:
    """Take every complete frame off `buffer`."""
    frames = []
    while True:
        end = buffer.find(b"\n\n")
        if end < 0:
            return frames
        head = bytes(buffer[:end])
        headers = _parse_headers(head, decode=True)
        length = int(headers.get("Content-Length", "0") or 0)
        if len(buffer) < end + 2 + length:
            return frames
        body = bytes(buffer[end + 2 : end + 2 + length])
        raw = bytes(buffer[: end + 2 + length])
        del buffer[: end + 2 + length]
        frame = Frame(headers, body, raw)
        ctype = headers.get("Content-Type", "")
        if ctype == "text/event-plain":
            inner_end = body.find(b"\n\n")
            inner = body if inner_end < 0 else body[:inner_end]
            frame.event = _parse_headers(inner, decode=True)
        elif ctype == "text/event-json":
            frame.event = {k: v for k, v in json.loads(body).items() if isinstance(v, str)}
        elif ctype == "command/reply" and "Event-Name" in headers:
            frame.event = dict(headers)  # the outbound connect reply is a serialized CHANNEL_DATA event
        frames.append(frame)


class EslClient:
    """Reads frames and sends raw commands on one ESL connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._buffer = bytearray()
        self._frames: list[Frame] = []
        self.received: list[Frame] = []
        self.closed = False

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> "EslClient":
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    def send(self, text: str) -> None:
        self.writer.write(text.encode())

    async def command(self, line: str, *headers: str, timeout: float = 5.0) -> Frame:
        """Send a command and return the next reply (command/reply or api/response), keeping events aside."""
        self.send(line + "\n" + "".join(h + "\n" for h in headers) + "\n")
        return await self.next(lambda f: f.content_type in ("command/reply", "api/response"), timeout=timeout)

    async def read_frame(self, timeout: float = 5.0) -> Frame | None:
        while not self._frames:
            if self.closed:
                return None
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                self.closed = True
                continue
            self._buffer += data
            self._frames += parse_frames(self._buffer)
        frame = self._frames.pop(0)
        self.received.append(frame)
        return frame

    async def next(self, predicate, timeout: float = 5.0) -> Frame:
        """The next frame matching `predicate` (frames before it stay in `received`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.read_frame(timeout=max(0.01, deadline - loop.time()))
            if frame is None:
                raise ConnectionError("connection closed before the expected frame")
            if predicate(frame):
                return frame

    async def event(self, name: str, timeout: float = 5.0, **match: str) -> Frame:
        def wanted(f: Frame) -> bool:
            return f.event.get("Event-Name") == name and all(
                f.event.get(k.replace("_", "-")) == v for k, v in match.items())
        return await self.next(wanted, timeout=timeout)

    async def drain(self, timeout: float = 5.0) -> None:
        """Read until the peer closes."""
        while await self.read_frame(timeout=timeout) is not None:
            pass

    def close(self) -> None:
        self.writer.close()


class OutboundServer:
    """A controller's outbound-socket server: `handler(client)` runs once per connection FreeSWITCH opens."""

    def __init__(self, handler) -> None:
        self.handler = handler
        self.server: asyncio.base_events.Server | None = None
        self.clients: list[EslClient] = []
        self.tasks: list[asyncio.Task] = []
        self.errors: list[BaseException] = []

    async def __aenter__(self) -> "OutboundServer":
        self.server = await asyncio.start_server(self._on_connect, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc) -> None:
        for task in self.tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for client in self.clients:
            client.close()
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        if self.errors and not exc[0]:
            raise self.errors[0]

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = EslClient(reader, writer)
        self.clients.append(client)
        task = asyncio.current_task()
        assert task is not None
        self.tasks.append(task)
        try:
            await self.handler(client)
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # surfaced by __aexit__
            self.errors.append(error)


def sendmsg_execute(app: str, arg: str | None = None, event_uuid: str | None = None) -> str:
    lines = ["sendmsg", "call-command: execute", f"execute-app-name: {app}"]
    if arg is not None:
        lines.append(f"execute-app-arg: {arg}")
    if event_uuid is not None:
        lines.append(f"Event-UUID: {event_uuid}")
    return "\n".join(lines) + "\n\n"


def captured_names(timeline: Path) -> list[str]:
    """Event names / content types of the RECV lines of a captured timeline, in order."""
    names = []
    for line in timeline.read_text().splitlines():
        parts = line.split()
        if len(parts) > 4 and parts[3] == "RECV":
            kind = parts[4]
            if kind.startswith("text/event"):
                names.append(parts[6] if parts[5].startswith("L") else parts[5])
            else:
                names.append(kind)
    return names


# --- tests of the helper itself ----------------------------------------------------------------------------

def test_parse_frames_reads_a_captured_outbound_session():
    raw = (CAPTURES / "freeswitch-scenarios/s1_event_sets/v1b_myevents_plain.recv.raw").read_bytes()
    buffer = bytearray(raw)
    frames = parse_frames(buffer)
    assert not buffer
    names = [f.name for f in frames]
    timeline = CAPTURES / "freeswitch-scenarios/s1_event_sets/v1b_myevents_plain.timeline.txt"
    assert names == captured_names(timeline)
    assert frames[0].event["Event-Name"] == "CHANNEL_DATA"  # the connect reply


def test_parse_frames_waits_for_a_complete_body():
    raw = (CAPTURES / "freeswitch/plain_03_api_response_status.raw").read_bytes()
    buffer = bytearray(raw[:-5])
    assert parse_frames(buffer) == []
    buffer += raw[-5:]
    (frame,) = parse_frames(buffer)
    assert frame.body.startswith(b"UP ")


async def replay(client: EslClient, capture_prefix: Path, *, timeout: float = 5.0) -> None:
    """Send what the captured driver sent (`<prefix>.sent.json`), each command once as many messages had
    arrived as in the capture (`before_recv_n`), with the captured channel uuid replaced by ours."""
    sent = json.loads(Path(f"{capture_prefix}.sent.json").read_text())
    header = Path(f"{capture_prefix}.timeline.txt").read_text().splitlines()[1]
    captured_uuid = header.split("L1=", 1)[1].split(",", 1)[0].strip() if "L1=" in header else None
    names = captured_names(Path(f"{capture_prefix}.timeline.txt"))
    our_uuid: str | None = None
    loop = asyncio.get_running_loop()
    for item in sent:
        deadline = loop.time() + timeout
        # a CHANNEL_PARK that won its race in the capture does not come from the simulator by default
        wanted = item["before_recv_n"] - names[: item["before_recv_n"]].count("CHANNEL_PARK")
        while len(client.received) < wanted:
            if await client.read_frame(timeout=max(0.01, deadline - loop.time())) is None:
                return
        if our_uuid is None and client.received and "Unique-ID" in client.received[0].event:
            our_uuid = client.received[0].event["Unique-ID"]
        text = item["text"]
        if captured_uuid and our_uuid:
            text = text.replace(captured_uuid, our_uuid)
        client.send(text)
    await client.drain(timeout=timeout)
