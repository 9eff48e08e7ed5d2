"""The controller's read-only HTTP API (switchctl/web/) on a live prepaid call on the simulator.

Reuses the prepaid site and setup of tests/test_prepaid_sim.py (0.60 EUR/min billed 1/1, so a call
costs 0.01 EUR a second); the site's `web: listen:` is moved to port 0 on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from switchctl.billing.money import Money
from switchctl.config.site import load_site
from switchctl.controller import Controller
from switchctl.sitecheck import check_site
from switchctl.web import WebApi
from tests import test_prepaid_sim as prepaid
from tests.test_prepaid_sim import EUR, NUMBER, SITE, Booths, start_booths, stop_booths

TALK_S = 3.0  # how long the far end talks before it hangs up


def _site_on_web_port(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    """start_booths loads the site through this module's `load_site`: give it our web address."""
    def load(path: Path):  # type: ignore[no-untyped-def]
        return dataclasses.replace(load_site(path), web_listen=("127.0.0.1", port))

    monkeypatch.setattr(prepaid, "load_site", load)


@pytest.fixture
async def booths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Booths]:
    _site_on_web_port(monkeypatch, 0)
    b, store = await start_booths(tmp_path, monkeypatch, warning_seconds=1, far_end_talk_s=TALK_S)
    try:
        yield b
    finally:
        await stop_booths(b, store)


async def get(api: WebApi, path: str) -> tuple[int, Any]:
    async with (aiohttp.ClientSession() as http,
                http.get(api.url + path, timeout=aiohttp.ClientTimeout(total=5)) as resp):
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


async def wait_for(api: WebApi, path: str, ready, wait: float = 5.0) -> Any:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + wait
    while True:
        _status, body = await get(api, path)
        if ready(body) or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.05)


async def test_live_call_running_cost_grows_and_booth_session_totals(booths: Booths) -> None:
    api = booths.controller.web
    assert api is not None and api.host == "127.0.0.1" and api.port != 0
    await booths.account("1001", "5.00")
    placed = booths.sim.place_call(destination=NUMBER, caller="1001")

    first = await wait_for(api, "/api/calls", lambda body: body["calls"])
    [call] = first["calls"]
    assert call["account"] == "1001" and call["destination"] == NUMBER and call["prefix"] == "44"
    assert call["currency"] == "EUR" and isinstance(call["running_cost"], str)
    assert call["answered_at"].endswith("+00:00") and isinstance(call["answered_at_us"], int)
    assert call["warned"] is False
    # 5.00 EUR at 0.01 EUR/s buys 500 s of talk
    assert 495 <= call["time_left_s"] + call["elapsed_s"] <= 501, call

    await asyncio.sleep(1.5)
    status, later = await get(api, "/api/calls")
    assert status == 200
    [again] = later["calls"]
    assert again["ref"] == call["ref"]
    assert again["elapsed_s"] >= call["elapsed_s"] + 1.4
    assert again["time_left_s"] <= call["time_left_s"] - 1.4
    grown = Money.parse(again["running_cost"], EUR) - Money.parse(call["running_cost"], EUR)
    assert Money.parse("0.01", EUR) <= grown <= Money.parse("0.02", EUR), (call, again)
    # billed 1/1: the cost is exactly the started seconds at 0.01
    started_s = -(-int(again["elapsed_s"] * 1000) // 1000)
    assert Money.parse(again["running_cost"], EUR) in {Money.parse("0.01", EUR) * s
                                                       for s in (started_s - 1, started_s, started_s + 1)}

    status, health = await get(api, "/api/health")
    assert status == 200 and health["ok"] is True and health["billing"] is True
    assert health["calls_active"] == 1
    [fs1] = health["switches"]
    assert fs1["name"] == "fs1" and fs1["connected"] is None  # the test holds no inbound connection
    assert fs1["outbound_port"] == booths.controller.servers["fs1"].port

    status, open_booths = await get(api, "/api/booths")
    assert status == 200
    [booth] = open_booths["booths"]
    assert booth["booth"] == "1001" and booth["state"] == "open" and booth["live_calls"] == 1
    assert booth["total"] == "0.00" and booth["currency"] == "EUR"

    await asyncio.wait_for(placed.done, TALK_S + 10)
    ended = await wait_for(api, "/api/booths",
                           lambda body: body["booths"] and body["booths"][0]["live_calls"] == 0)
    [booth] = ended["booths"]
    assert booth["calls"] == 1 and booth["due"] == booth["total"]
    charged = Money.parse(booth["total"], EUR)
    # the far end hung up after ~3 s of talk: 3 or 4 started seconds
    assert Money.parse("0.03", EUR) <= charged <= Money.parse("0.04", EUR), booth
    status, after = await get(api, "/api/calls")
    assert status == 200 and after == {"calls": []}
    status, health = await get(api, "/api/health")
    assert health["calls_active"] == 0


async def test_unknown_route_answers_json_404(booths: Booths) -> None:
    assert booths.controller.web is not None
    status, body = await get(booths.controller.web, "/api/nope")
    assert status == 404 and body == {"error": "Not Found"}


async def test_controller_stop_closes_the_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _site_on_web_port(monkeypatch, 0)
    b, store = await start_booths(tmp_path, monkeypatch, warning_seconds=1)
    api = b.controller.web
    assert api is not None
    await stop_booths(b, store)
    assert b.controller.web is None
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(api, "/api/health")


async def test_a_busy_web_port_leaves_the_controller_taking_calls(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        _site_on_web_port(monkeypatch, busy.getsockname()[1])
        b, store = await start_booths(tmp_path, monkeypatch, warning_seconds=1, far_end_talk_s=0.3)
        try:
            assert b.controller.web is None
            await b.account("1001", "1.00")
            result = await b.call("1001", timeout=10)
            trace = await b.trace(result.uuid)
            assert trace is not None and [n for _f, n, _o in trace.steps][:2] == ["auth", "ring"]
        finally:
            await stop_booths(b, store)


async def test_without_a_store_no_api_starts_and_billing_routes_say_so() -> None:
    site = load_site(SITE)
    checked = check_site(site)
    assert checked.ok, checked.report()
    [fs1] = site.switches
    fs1 = dataclasses.replace(fs1, outbound=dataclasses.replace(fs1.outbound, port=0))
    controller = Controller(dataclasses.replace(site, switches=(fs1,)), checked.flows)
    await controller.start(connect_inbound=False)
    api = WebApi(controller)
    try:
        assert controller.web is None  # billing off: the controller starts no API
        await api.start("127.0.0.1", 0)
        for path in ("/api/calls", "/api/booths"):
            status, body = await get(api, path)
            assert status == 503 and "billing is off" in body["error"]
        status, health = await get(api, "/api/health")
        assert status == 200 and health["billing"] is False and health["calls_active"] == 0
    finally:
        await api.close()
        await controller.stop(grace=1)
