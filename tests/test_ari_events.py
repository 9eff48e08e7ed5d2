"""AriEventStream against the fake ARI server pushing captured frames."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from switchctl.ari import errors as e
from switchctl.ari import models as m
from switchctl.ari.client import AriClient
from switchctl.ari.events import AriEventStream, Snapshot
from tests.test_ari_fakeserver import (
    ARI_CAPTURES,
    SCENARIOS,
    FakeAri,
    load_frames,
    load_rest,
)

GAP = "07_reconnect/a_ws_gap_resync"


@pytest.fixture
async def fake() -> AsyncIterator[FakeAri]:
    server = FakeAri()
    await server.start()
    server.route("GET", "/channels", 200, "[]")
    server.route("GET", "/bridges", 200, "[]")
    server.route("GET", "/applications/demo", 200, (ARI_CAPTURES / "rest_applications.json").read_text()[1:-1])
    yield server
    await server.close()


def _client(fake: FakeAri, password: str = "aripass") -> AriClient:
    return AriClient(str(fake.server.make_url("")).rstrip("/"), "ariuser", password, "demo", timeout=2)


def _stream(client: AriClient, **kw: Any) -> AriEventStream:
    # Fast, deterministic backoff for tests: 0.02 s doubling, no jitter (rng 0.5 -> factor 1).
    kw.setdefault("backoff_initial", 0.02)
    kw.setdefault("backoff_max", 0.2)
    return AriEventStream(client, rng=lambda: 0.5, **kw)


async def _until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


async def test_handlers_called_in_registration_and_arrival_order(fake: FakeAri) -> None:
    frames = load_frames(SCENARIOS / "01_dtmf/a_digit_spacing/events.jsonl")
    calls: list[tuple[str, str]] = []

    def first(event: m.Event) -> None:
        calls.append(("first", event.type))

    class PerType:  # python-socketio style
        async def on_ChannelDtmfReceived(self, event: m.ChannelDtmfReceived) -> None:
            await asyncio.sleep(0)
            calls.append(("dtmf", event.digit))

        def on_event(self, event: m.Event) -> None:
            calls.append(("other", event.type))

    async def only_ends(event: m.Event) -> None:
        calls.append(("end", event.type))

    def broken(event: m.Event) -> None:
        raise RuntimeError("a faulty handler must not stop the others")

    async with _client(fake) as client, _stream(client) as stream:
        stream.add_handler(first)
        stream.add_handler(broken)
        stream.add_handler(PerType())
        stream.add_handler(only_ends, "StasisEnd", "ChannelDestroyed")
        await stream.wait_connected(5)
        ws = await fake.next_socket()
        await fake.push(ws, *frames)
        await _until(lambda: stream.dispatched == len(frames))

    expected: list[tuple[str, str]] = []
    for frame in frames:
        event = m.parse_event(frame)
        expected.append(("first", event.type))
        expected.append(("dtmf", event.digit) if isinstance(event, m.ChannelDtmfReceived) else ("other", event.type))
        if event.type in ("StasisEnd", "ChannelDestroyed"):
            expected.append(("end", event.type))
    assert calls == expected
    digits = "".join(d for kind, d in calls if kind == "dtmf")
    assert len(digits) >= 8


async def test_handler_registration_errors(fake: FakeAri) -> None:
    class Handler:
        def on_StasisStart(self, event: m.Event) -> None: ...

    async with _client(fake) as client:
        stream = _stream(client)
        with pytest.raises(TypeError, match="instance of Handler"):
            stream.add_handler(Handler)
        with pytest.raises(TypeError, match="neither callable"):
            stream.add_handler(object())
        with pytest.raises(TypeError, match="filter only plain callables"):
            stream.add_handler(Handler(), "StasisStart")


async def test_slow_handler_does_not_block_the_reader(fake: FakeAri) -> None:
    frames = load_frames(ARI_CAPTURES / "events_all.jsonl")[:200]
    gate = asyncio.Event()
    seen: list[str] = []

    async def slow(event: m.Event) -> None:
        await gate.wait()
        seen.append(json.dumps(dict(event.raw), separators=(",", ":")))

    async with _client(fake) as client, _stream(client) as stream:
        stream.add_handler(slow)
        await stream.wait_connected(5)
        ws = await fake.next_socket()
        await fake.push(ws, *frames)
        await _until(lambda: stream.received == len(frames))  # all read while the handler waits
        assert stream.dispatched == 0 and stream.pending == len(frames) - 1  # one is in the handler
        gate.set()
        await _until(lambda: stream.dispatched == len(frames))
    assert [json.loads(s) for s in seen] == [json.loads(f) for f in frames]


async def test_ws_drop_reconnect_and_resync_like_capture_07(fake: FakeAri, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="switchctl.ari")
    frames = load_frames(SCENARIOS / GAP / "events.jsonl")
    timeline = [json.loads(line) for line in (SCENARIOS / GAP / "timeline.jsonl").read_text().splitlines()]
    conn_of = {t["event_index"]: t["conn"] for t in timeline if t["kind"] == "ws_event"}
    ws1 = [f for i, f in enumerate(frames) if conn_of[i] == "ws1"]
    ws2 = [f for i, f in enumerate(frames) if conn_of[i] == "ws2"]
    assert len(ws1) == 4 and len(ws2) == 13
    rest = {(r["method"], r["path"]): r for r in load_rest(GAP) if r["index"] in (5, 6, 8)}
    for record in rest.values():  # what GET /channels, /bridges, /applications/demo said after the gap
        fake.route_record(record)

    order: list[object] = []
    snapshots: list[Snapshot] = []

    async def resync(snapshot: Snapshot) -> None:
        snapshots.append(snapshot)
        order.append(("resync", snapshot.reconnected))

    async with _client(fake) as client, _stream(client, resync=resync) as stream:
        stream.add_handler(lambda event: order.append(event.type))
        await stream.wait_connected(5)
        sock = await fake.next_socket()
        await fake.push(sock, *ws1)
        await _until(lambda: stream.dispatched == len(ws1))
        fake.refuse_ws = [503, 503, 503]  # Asterisk still away for three attempts: no log storm
        await fake.drop()
        sock2 = await fake.next_socket()
        await stream.wait_connected(5)
        await fake.push(sock2, *ws2)
        await _until(lambda: stream.dispatched == len(frames))
        assert stream.connections == 2 and fake.ws_attempts == 5

    types = [m.parse_event(f).type for f in frames]
    assert order == [("resync", False), *types[:4], ("resync", True), *types[4:]]
    snap = snapshots[1]
    assert [c.id for c in snap.channels] == ["1795633460.120"] and snap.channels[0].state == "Up"
    assert [b.id for b in snap.bridges] == ["br-7"] and snap.bridges[0].channels == ("1795633460.120",)
    assert snap.application is not None and snap.application.bridge_ids == ("br-7",)

    records = [r for r in caplog.records if r.name == "switchctl.ari"]
    warnings = [r for r in records if r.levelno == logging.WARNING]
    infos = [r.getMessage() for r in records if r.levelno == logging.INFO]
    assert [w.getMessage() for w in warnings] == ["ARI event stream lost (closed by Asterisk (code 1000)); reconnecting"]
    assert infos == ["ARI event stream connected", "ARI event stream back"]
    assert sum(1 for r in records if r.levelno == logging.DEBUG and "still down" in r.getMessage()) == 3


async def test_backoff_doubles_to_the_cap_with_jitter() -> None:
    client = AriClient("http://127.0.0.1:1", "u", "p", "demo")
    values = iter([0.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    stream = AriEventStream(client, rng=lambda: next(values))
    delays = [round(stream._delay(n), 3) for n in range(10)]
    assert delays == [0.4, 1.2, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]
    await client.close()


async def test_unreachable_asterisk_warns_once_then_connects(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="switchctl.ari")
    fake = FakeAri()
    await fake.start()
    fake.route("GET", "/channels", 200, "[]")
    fake.route("GET", "/bridges", 200, "[]")
    fake.route("GET", "/bridges", 500, '{"message":"boom"}')  # first resync fails: retried
    try:
        async with _client(fake) as client, _stream(client) as stream:
            fake.refuse_ws = [503, 503]
            with pytest.raises(TimeoutError):
                await stream.wait_connected(0.05)
            await _until(lambda: fake.ws_attempts >= 4)
            fake.routes.pop()  # /bridges works again
            await stream.wait_connected(5)
        warnings = [r.getMessage() for r in caplog.records if r.name == "switchctl.ari" and r.levelno == logging.WARNING]
        assert len(warnings) == 1 and warnings[0].startswith("ARI event stream unavailable (handshake refused: 503")
        infos = [r.getMessage() for r in caplog.records if r.name == "switchctl.ari" and r.levelno == logging.INFO]
        assert infos == ["ARI event stream back"]
    finally:
        await fake.close()


async def test_websocket_auth_failure_stops_without_retrying(fake: FakeAri, caplog: pytest.LogCaptureFixture) -> None:
    async with _client(fake, password="wrong") as client, _stream(client) as stream:
        with pytest.raises(e.AriAuthError, match="401: Authentication required"):
            await stream.wait_connected(5)
        await asyncio.sleep(0.1)
        assert fake.ws_attempts == 1 and stream.failure is not None
    assert any(r.levelno == logging.ERROR and "stopped" in r.getMessage() for r in caplog.records)


async def test_application_replaced_stops_the_stream(fake: FakeAri) -> None:
    frames = load_frames(SCENARIOS / "07_reconnect/c_application_replaced/events.jsonl")
    replaced = [f for f in frames if '"ApplicationReplaced"' in f]
    got: list[str] = []
    async with _client(fake) as client, _stream(client) as stream:
        stream.add_handler(lambda event: got.append(event.type))
        await stream.wait_connected(5)
        ws = await fake.next_socket()
        await fake.push(ws, *replaced)
        await _until(lambda: stream.replaced and not stream.connected)
        await asyncio.sleep(0.1)
        assert fake.ws_attempts == 1  # no reconnect: that would steal the app back
    assert got == ["ApplicationReplaced"]


async def test_bad_frames_are_skipped_and_unknown_events_dispatched(fake: FakeAri) -> None:
    got: list[m.Event] = []
    async with _client(fake) as client, _stream(client) as stream:
        stream.add_handler(got.append)
        await stream.wait_connected(5)
        ws = await fake.next_socket()
        await fake.push(ws, "not json", '{"type":"DeviceStateChanged","device_state":{}}', (ARI_CAPTURES / "event_Dial.json").read_text())
        await _until(lambda: stream.dispatched == 2)
    assert stream.received == 3
    assert isinstance(got[0], m.UnknownEvent) and got[0].type == "DeviceStateChanged"
    assert isinstance(got[1], m.Dial)


async def test_queue_overflow_drops_and_counts(fake: FakeAri) -> None:
    gate = asyncio.Event()

    async def blocked(event: m.Event) -> None:
        await gate.wait()

    frames = load_frames(ARI_CAPTURES / "events_all.jsonl")[:30]
    async with _client(fake) as client, _stream(client, max_queue=10) as stream:
        stream.add_handler(blocked)
        await stream.wait_connected(5)
        ws = await fake.next_socket()
        await fake.push(ws, *frames)
        await _until(lambda: stream.received == 30)
        gate.set()
        await _until(lambda: stream.pending == 0)
    assert stream.dropped > 0 and stream.dispatched + stream.dropped == 30


async def test_event_sources_are_subscribed_before_each_snapshot_and_again_after_a_reconnect(fake: FakeAri) -> None:
    app_body = (ARI_CAPTURES / "rest_app_subscribe_channel.json").read_text()
    fake.route("POST", "/applications/demo/subscription", 200, app_body)
    async with _client(fake) as client, _stream(client, event_sources=["channel:"]) as stream:
        await stream.wait_connected(5)
        await fake.next_socket()
        await fake.drop()
        await fake.next_socket()
        await _until(lambda: stream.connections == 2)
    asked = [(method, path, query) for method, path, query, _body in fake.requests]
    subscribes = [i for i, r in enumerate(asked) if r == ("POST", "/applications/demo/subscription", [("eventSource", "channel:")])]
    assert len(subscribes) == 2
    for index in subscribes:  # the subscription comes first, then the snapshot's GETs
        assert {path for _m, path, _q in asked[index + 1:index + 4]} == {"/channels", "/bridges", "/applications/demo"}


async def test_a_failed_subscription_fails_the_attempt_and_is_retried(fake: FakeAri) -> None:
    fake.route("POST", "/applications/demo/subscription", 200, (ARI_CAPTURES / "rest_app_subscribe_channel.json").read_text())
    fake.route("POST", "/applications/demo/subscription", 500, '{"message":"boom"}')
    async with _client(fake) as client, _stream(client, event_sources=["channel:"]) as stream:
        await _until(lambda: fake.ws_attempts >= 2)
        assert not stream.connected
        fake.routes.pop()  # the subscription works again
        await stream.wait_connected(5)
        assert stream.connections == 1


async def test_disallowed_events_are_set_as_the_event_filter_on_each_connect(fake: FakeAri, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="switchctl.ari")
    fake.route("PUT", "/applications/demo/eventFilter", 404, '{"message":"Resource not found"}')  # refused
    async with _client(fake) as client, _stream(client, disallowed_events=["ChannelCreated", "ChannelDialplan"]) as stream:
        await stream.wait_connected(5)  # a refused filter does not stop the stream
        await fake.next_socket()
        fake.routes.pop()
        fake.route("PUT", "/applications/demo/eventFilter", 200, (ARI_CAPTURES / "rest_app_subscribe_channel.json").read_text())
        await fake.drop()
        await fake.next_socket()
        await _until(lambda: stream.connections == 2)
        await fake.drop()
        await fake.next_socket()
        await _until(lambda: stream.connections == 3)
    filters = [json.loads(body) for method, path, _q, body in fake.requests if path == "/applications/demo/eventFilter"]
    assert filters == [{"disallowed": [{"type": "ChannelCreated"}, {"type": "ChannelDialplan"}]}] * 3
    refused = [r for r in caplog.records if "event filter refused" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelno == logging.INFO


async def test_plain_handlers_run_in_the_reader_and_keep_the_order_with_awaitables(fake: FakeAri) -> None:
    frames = load_frames(SCENARIOS / "01_dtmf/a_digit_spacing/events.jsonl")
    seen: list[tuple[str, int]] = []
    dispatch_task: list[asyncio.Task[Any] | None] = []

    def first(event: m.Event) -> None:
        seen.append(("first", len(seen)))
        dispatch_task.append(asyncio.current_task())
        if len(dispatch_task) == 3:
            raise RuntimeError("a faulty plain handler must not stop the others")

    def returns_awaitable(event: m.Event) -> Any:
        async def later() -> None:  # a plain function handing back a coroutine: awaited in order
            await asyncio.sleep(0.001)
            seen.append(("later", len(seen)))
        return later() if isinstance(event, m.ChannelDtmfReceived) else None

    def last(event: m.Event) -> None:
        seen.append(("last", len(seen)))

    async with _client(fake) as client, _stream(client) as stream:
        for handler in (first, returns_awaitable, last):
            stream.add_handler(handler)
        await stream.wait_connected(5)
        sock = await fake.next_socket()
        await fake.push(sock, *frames)
        await _until(lambda: stream.dispatched == len(frames))
        reader = stream._run_task
    kinds = [k for k, _ in seen]
    dtmf = sum(1 for f in frames if json.loads(f)["type"] == "ChannelDtmfReceived")
    assert kinds.count("first") == kinds.count("last") == len(frames) and kinds.count("later") == dtmf
    # per event: first, (later), last -- never interleaved with the next event's handlers
    expected: list[str] = []
    for f in frames:
        expected += ["first", "later", "last"] if json.loads(f)["type"] == "ChannelDtmfReceived" else ["first", "last"]
    assert kinds == expected
    assert reader in dispatch_task  # the shortcut ran (some events were handled by the reader itself)
