"""A fake ARI server for the ARI tests: aiohttp.web on 127.0.0.1:0 that answers REST calls with
captured bodies and pushes captured event frames over /ari/events.

It behaves like Asterisk where the tests depend on it: Basic auth on every request (401
`{"message":"Authentication required"}`, also at the WebSocket handshake), 404
`{"message":"Resource not found"}` for an unknown path, and a WebSocket that stays open until
either side closes it. Routes match method + path (+ the decoded query when given); the latest
matching route wins, so a test can change an answer mid-run.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.capturepaths import CAPTURES

ARI_CAPTURES = CAPTURES / "asterisk"
SCENARIOS = CAPTURES / "asterisk-scenarios"


def load_rest(folder: str) -> list[dict[str, Any]]:
    """The REST records of one scenario folder (e.g. "07_reconnect/a_ws_gap_resync")."""
    with open(SCENARIOS / folder / "rest.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load_frames(path: Path) -> list[str]:
    """Event frames exactly as received (one per line)."""
    with open(path, encoding="utf-8") as fh:
        return [line.rstrip("\n") for line in fh if line.strip()]


@dataclass
class Route:
    method: str
    path: str
    status: int
    body: str
    query: tuple[tuple[str, str], ...] | None  # None: any query
    delay: float = 0.0


class FakeAri:
    def __init__(self, *, user: str = "ariuser", password: str = "aripass", app: str = "demo") -> None:
        self.user, self.password, self.app = user, password, app
        self.routes: list[Route] = []
        self.requests: list[tuple[str, str, list[tuple[str, str]], bytes]] = []
        self.raw_paths: list[str] = []  # as sent, still percent-encoded
        self.ws_attempts = 0
        self.refuse_ws: list[int] = []  # statuses for the next handshakes (e.g. [503, 503])
        self.sockets: list[web.WebSocketResponse] = []
        self.connected: asyncio.Queue[web.WebSocketResponse] = asyncio.Queue()
        app_ = web.Application()
        app_.router.add_get("/ari/events", self._events)
        app_.router.add_route("*", "/ari/{tail:.*}", self._rest)
        self.server = TestServer(app_, host="127.0.0.1", port=0)

    # --- setup ---------------------------------------------------------------------------------

    def route(
        self,
        method: str,
        path: str,
        status: int,
        body: str | Any = "",
        *,
        query: list[tuple[str, str]] | list[list[str]] | None = None,
        delay: float = 0.0,
    ) -> None:
        text = body if isinstance(body, str) else json.dumps(body)
        q = tuple(sorted((str(k), str(v)) for k, v in query)) if query is not None else None
        self.routes.append(Route(method, path, status, text, q, delay))

    def route_record(self, record: dict[str, Any], *, match_query: bool = True) -> None:
        """Serve one captured rest.jsonl record."""
        self.route(
            record["method"],
            record["path"],
            record["status"],
            record.get("body") or "",
            query=record["query"] if match_query else None,
        )

    async def start(self) -> str:
        await self.server.start_server()
        return str(self.server.make_url("")).rstrip("/")

    async def close(self) -> None:
        await self.drop()
        await self.server.close()

    # --- WebSocket control ---------------------------------------------------------------------

    async def next_socket(self, timeout: float = 5.0) -> web.WebSocketResponse:
        return await asyncio.wait_for(self.connected.get(), timeout)

    async def push(self, ws: web.WebSocketResponse, *frames: str) -> None:
        for frame in frames:
            await ws.send_str(frame)

    async def drop(self) -> None:
        """Close every open socket, the way a restart or a network cut ends them."""
        for ws in self.sockets:
            if not ws.closed:
                await ws.close()

    # --- handlers ------------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return (user, password) == (self.user, self.password)

    @staticmethod
    def _json(status: int, body: str) -> web.Response:
        if not body:
            return web.Response(status=status)
        return web.Response(status=status, text=body, content_type="application/json")

    async def _events(self, request: web.Request) -> web.StreamResponse:
        self.ws_attempts += 1
        if not self._authorized(request):
            return self._json(401, '{"message":"Authentication required"}')
        if self.refuse_ws:
            return self._json(self.refuse_ws.pop(0), '{"message":"Service Unavailable"}')
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        self.connected.put_nowait(ws)
        async for _ in ws:
            pass
        return ws

    async def _rest(self, request: web.Request) -> web.Response:
        body = await request.read()
        path = "/" + request.match_info["tail"]
        query = sorted(request.query.items())
        self.requests.append((request.method, path, query, body))
        self.raw_paths.append(request.raw_path.split("?", 1)[0])
        if not self._authorized(request):
            return self._json(401, '{"message":"Authentication required"}')
        for route in reversed(self.routes):
            if route.method == request.method and route.path == path:
                if route.query is not None and route.query != tuple(query):
                    continue
                if route.delay:
                    await asyncio.sleep(route.delay)
                return self._json(route.status, route.body)
        return self._json(404, '{"message":"Resource not found"}')


# --- the fake's own checks ------------------------------------------------------------------------


async def test_fake_serves_routes_and_refuses_bad_auth() -> None:
    import aiohttp

    AUTH = {"Authorization": "Basic " + base64.b64encode(b"ariuser:aripass").decode()}
    BAD_AUTH = {"Authorization": "Basic " + base64.b64encode(b"ariuser:nope").decode()}
    fake = FakeAri()
    base = await fake.start()
    try:
        fake.route("GET", "/asterisk/ping", 200, (ARI_CAPTURES / "rest_asterisk_ping.json").read_text())
        async with aiohttp.ClientSession() as session:
            ok = await session.get(f"{base}/ari/asterisk/ping", headers=AUTH)
            assert ok.status == 200 and (await ok.json())["ping"] == "pong"
            bad = await session.get(f"{base}/ari/asterisk/ping", headers=BAD_AUTH)
            assert bad.status == 401
            missing = await session.get(f"{base}/ari/nothing", headers=AUTH)
            assert missing.status == 404 and (await missing.json()) == {"message": "Resource not found"}
    finally:
        await fake.close()
