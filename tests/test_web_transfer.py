"""The web API's transfer routes and event stream (switchctl/web/api.py), on a real loopback server
against a recording fake of the transfer service; and when the controller starts the API."""

from __future__ import annotations

import asyncio
import dataclasses
import textwrap
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from switchctl.config.site import load_site
from switchctl.controller import Controller
from switchctl.events import EventBus
from switchctl.features.transfer.errors import TransferError
from switchctl.flows import FlowSet
from switchctl.web import WebApi

TIMEOUT = aiohttp.ClientTimeout(total=5)


class FakeTransfers:
    """The TransferService's API surface: one conversation `u1`; `refuse` makes requests fail."""

    def __init__(self) -> None:
        self.convs: dict[str, dict[str, Any]] = {"u1": {"caller": "u1", "state": "talking", "data": {}}}
        self.requests: list[tuple[str, str, str | None]] = []
        self.refuse: str | None = None

    def conversations(self) -> list[dict[str, Any]]:
        return list(self.convs.values())

    def conversation(self, caller_uuid: str) -> dict[str, Any] | None:
        return self.convs.get(caller_uuid)

    async def request(self, caller_uuid: str, action: str, to: str | None = None) -> dict[str, Any]:
        if caller_uuid not in self.convs:
            raise TransferError(f"no conversation {caller_uuid}")
        if self.refuse:
            raise TransferError(self.refuse)
        self.requests.append((caller_uuid, action, to))
        return {**self.convs[caller_uuid], "requested": action}

    def set_data(self, caller_uuid: str, values: Mapping[str, str]) -> dict[str, Any]:
        if caller_uuid not in self.convs:
            raise TransferError(f"no conversation {caller_uuid}")
        if self.refuse:
            raise TransferError(self.refuse)
        self.convs[caller_uuid]["data"].update(values)
        return self.convs[caller_uuid]


@dataclasses.dataclass
class FakeController:
    transfers: FakeTransfers | None = dataclasses.field(default_factory=FakeTransfers)
    events: EventBus | None = dataclasses.field(default_factory=EventBus)


@pytest.fixture
async def served() -> AsyncIterator[tuple[WebApi, FakeController, aiohttp.ClientSession]]:
    controller = FakeController()
    api = WebApi(controller)  # type: ignore[arg-type]
    api.sse_poll = 0.05
    await api.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            yield api, controller, http
    finally:
        await api.close()


async def call(http: aiohttp.ClientSession, api: WebApi, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    async with http.request(method, api.url + path, **kw) as resp:
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


async def test_conversations_list_and_one(served):
    api, controller, http = served
    assert await call(http, api, "GET", "/api/conversations") == (200, {"conversations": controller.transfers.conversations()})
    assert await call(http, api, "GET", "/api/conversations/u1") == (200, controller.transfers.convs["u1"])
    assert await call(http, api, "GET", "/api/conversations/nope") == (404, {"error": "no conversation nope"})


@pytest.mark.parametrize(("mode", "to"), [("blind", "1002"), ("attended", "+33123")])
async def test_transfer_hands_mode_and_number_to_the_service(served, mode, to):
    api, controller, http = served
    status, body = await call(http, api, "POST", "/api/conversations/u1/transfer", json={"mode": mode, "to": to})
    assert status == 200 and body["requested"] == mode
    assert controller.transfers.requests == [("u1", mode, to)]


@pytest.mark.parametrize(("body", "error"), [
    ({"mode": "park", "to": "1002"}, "mode must be one of blind, attended, not 'park'"),
    ({"mode": "blind"}, "to must be the number to transfer to (digits, * or #), not None"),
    ({"mode": "blind", "to": "10 02"}, "to must be the number to transfer to (digits, * or #), not '10 02'"),
    ({"mode": "blind", "to": "1002", "x": 1}, 'expected {"mode": "blind"|"attended", "to": "<digits>"}'),
    (["blind", "1002"], 'expected {"mode": "blind"|"attended", "to": "<digits>"}'),
])
async def test_a_malformed_transfer_is_400(served, body, error):
    api, controller, http = served
    assert await call(http, api, "POST", "/api/conversations/u1/transfer", json=body) == (400, {"error": error})
    assert controller.transfers.requests == []


async def test_a_body_that_is_not_json_is_400(served):
    api, _controller, http = served
    status, body = await call(http, api, "POST", "/api/conversations/u1/transfer", data=b"mode=blind")
    assert status == 400 and body["error"].startswith("the body is not JSON")


@pytest.mark.parametrize(("path", "action"), [("complete", "complete"), ("cancel", "cancel"),
                                              ("three-way", "three_way")])
async def test_consultation_actions(served, path, action):
    api, controller, http = served
    status, body = await call(http, api, "POST", f"/api/conversations/u1/{path}")
    assert status == 200 and body["requested"] == action
    assert controller.transfers.requests == [("u1", action, None)]


async def test_a_refused_request_is_409_and_an_unknown_conversation_404(served):
    api, controller, http = served
    controller.transfers.refuse = "no consultation to complete"
    assert await call(http, api, "POST", "/api/conversations/u1/complete") == (
        409, {"error": "no consultation to complete"})
    assert await call(http, api, "PATCH", "/api/conversations/u1/data", json={"a": "b"}) == (
        409, {"error": "no consultation to complete"})
    assert await call(http, api, "POST", "/api/conversations/u9/cancel") == (404, {"error": "no conversation u9"})
    assert await call(http, api, "POST", "/api/conversations/u9/transfer", json={"mode": "blind", "to": "1"}) == (
        404, {"error": "no conversation u9"})
    assert await call(http, api, "PATCH", "/api/conversations/u9/data", json={"a": "b"}) == (
        404, {"error": "no conversation u9"})
    status, _ = await call(http, api, "POST", "/api/conversations/u1/park")
    assert status in (404, 405)  # no such action route


async def test_patch_data_merges_strings(served):
    api, _controller, http = served
    status, body = await call(http, api, "PATCH", "/api/conversations/u1/data", json={"ticket": "T-1", "note": ""})
    assert status == 200 and body["data"] == {"ticket": "T-1", "note": ""}


@pytest.mark.parametrize(("body", "error"), [
    ({}, 'expected a non-empty JSON object of "key": "text"'),
    ({"ticket": 7}, "value of 'ticket' must be text of at most 1024 characters"),
    ({"bad key": "x"}, "key 'bad key' must be a name (letters, digits, _; at most 64)"),
    ({"t": "x" * 1025}, "value of 't' must be text of at most 1024 characters"),
])
async def test_patch_data_refuses_anything_but_named_strings(served, body, error):
    api, controller, http = served
    assert await call(http, api, "PATCH", "/api/conversations/u1/data", json=body) == (400, {"error": error})
    assert controller.transfers.convs["u1"]["data"] == {}


async def test_without_the_feature_every_transfer_route_is_503(served):
    api, controller, http = served
    controller.transfers = None
    for method, path, body in [("GET", "/api/conversations", None), ("GET", "/api/conversations/u1", None),
                               ("POST", "/api/conversations/u1/transfer", {"mode": "blind", "to": "1"}),
                               ("POST", "/api/conversations/u1/three-way", None),
                               ("PATCH", "/api/conversations/u1/data", {"a": "b"})]:
        status, answer = await call(http, api, method, path, json=body)
        assert (status, answer) == (503, {"error": "transfers are off: the site has no 'transfer:' section"}), path
    controller.events = None
    assert (await call(http, api, "GET", "/api/events"))[0] == 503


# -- the event stream -----------------------------------------------------------------------------

async def read_frame(resp: aiohttp.ClientResponse) -> str:
    """One SSE frame or comment, up to its blank line."""
    lines = []
    while True:
        line = (await asyncio.wait_for(resp.content.readline(), 5)).decode()
        if line == "\n":
            return "".join(lines)
        assert line, "the stream ended"
        lines.append(line)


async def wait_until(condition, wait: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + wait
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_events_stream_the_bus_filtered_by_kind_and_end_with_the_client(served):
    api, controller, http = served
    bus = controller.events
    async with http.get(api.url + "/api/events?kinds=screen_pop,queue") as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        assert await read_frame(resp) == ": subscribed\n"
        assert bus.subscribers == 1 and api.streams == 1
        bus.publish("transfer", {"state": "consulting"})  # not asked for
        bus.publish("screen_pop", {"caller": "u1", "data": {"ticket": "T-1"}, "path": ["menu", "ring"]})
        assert await read_frame(resp) == (
            'event: screen_pop\ndata: {"caller":"u1","data":{"ticket":"T-1"},"path":["menu","ring"]}\n')
    await wait_until(lambda: bus.subscribers == 0 and api.streams == 0)  # the client went


async def test_events_without_kinds_get_everything_and_keepalives(served):
    api, controller, http = served
    api.sse_keepalive = 0.1
    async with http.get(api.url + "/api/events") as resp:
        assert await read_frame(resp) == ": subscribed\n"
        controller.events.publish("transfer", {"state": "ended"})
        assert await read_frame(resp) == 'event: transfer\ndata: {"state":"ended"}\n'
        assert await read_frame(resp) == ": keepalive\n"


async def test_bad_kinds_are_400(served):
    api, _controller, http = served
    assert await call(http, api, "GET", "/api/events?kinds=,") == (
        400, {"error": "kinds must be a comma-separated list of event kinds"})


async def test_closing_the_api_ends_open_streams_at_once():
    controller = FakeController()
    api = WebApi(controller)  # type: ignore[arg-type]
    await api.start("127.0.0.1", 0)
    async with (aiohttp.ClientSession(timeout=TIMEOUT) as http,
                http.get(api.url + "/api/events") as resp):
        assert await read_frame(resp) == ": subscribed\n"
        started = time.monotonic()
        await api.close()
        assert time.monotonic() - started < 2.0
        assert controller.events.subscribers == 0 and api.streams == 0


# -- when the controller serves the API ------------------------------------------------------------

SITE = """\
site: web
switches:
  - name: fs1
    esl: {host: 127.0.0.1, port: 28021, password: ClueCon}
    outbound: {host: 127.0.0.1, port: 28084}
    sip: {ip: 127.0.0.1, port: 25060}
flows: flows/
"""


def site_in(tmp_path: Path, extra: str):  # type: ignore[no-untyped-def]
    (tmp_path / "flows").mkdir(exist_ok=True)
    (tmp_path / "site.yaml").write_text(SITE + textwrap.dedent(extra))
    site = load_site(tmp_path / "site.yaml")
    [fs1] = site.switches
    fs1 = dataclasses.replace(fs1, outbound=dataclasses.replace(fs1.outbound, port=0))
    return dataclasses.replace(site, switches=(fs1,), web_listen=("127.0.0.1", 0))


async def test_a_site_with_a_web_section_gets_the_api_without_billing(tmp_path):
    controller = Controller(site_in(tmp_path, "web: {listen: 127.0.0.1:28080}\n"), FlowSet())
    await controller.start(connect_inbound=False)
    try:
        assert controller.web is not None and controller.billing is None and controller.transfers is None
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            assert (await call(http, controller.web, "GET", "/api/health"))[0] == 200
            assert (await call(http, controller.web, "GET", "/api/conversations"))[0] == 503
    finally:
        await controller.stop(grace=1)
    assert controller.web is None


async def test_a_site_with_transfers_runs_the_service_and_the_api(tmp_path):
    pytest.importorskip("switchctl.features.transfer.service")
    controller = Controller(site_in(tmp_path, "transfer: {}\n"), FlowSet())
    assert controller.runner.transfers is controller.transfers is not None
    await controller.start(connect_inbound=False)
    try:
        assert controller.web is not None
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            assert await call(http, controller.web, "GET", "/api/conversations") == (200, {"conversations": []})
            assert (await call(http, controller.web, "GET", "/api/conversations/nope"))[0] == 404
    finally:
        await controller.stop(grace=1)
