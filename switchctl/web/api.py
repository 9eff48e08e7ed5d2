"""A small HTTP API on the controller: live prepaid calls, open booth sessions, health, and the
transfer feature's conversations (docs/TRANSFER.md) with a live event stream.

    api = WebApi(controller)
    await api.start("127.0.0.1", 8080)     # port 0: a free port, read back from `api.port`
    ...
    await api.close()

Routes (JSON via orjson; GET unless said otherwise):
- /api/calls   live prepaid calls (PrepaidService.live_calls): running cost so far, time left.
- /api/booths  open booth sessions with their totals (Booths.list).
- /api/health  each switch's connection and the number of calls the controller is running;
               503 when a switch we hold a connection to is down.
- /api/conversations, /api/conversations/{uuid}: the transferable calls (TransferService), and
  POST .../transfer {"mode": "blind"|"attended", "to": "<digits>"}, POST .../complete, .../cancel,
  .../three-way, PATCH .../data {"key": "text", ...}: a refused request is 409 {"error": ...}, an
  unknown conversation 404.
- /api/recordings?call=<uuid>[&limit=N]: kept call recordings (newest first), and
  POST /api/calls/{uuid}/recording {"action": "start"|"pause"|"resume"|"stop"[, "name": ...]} for
  consoles (pause while a card number is read out): 404 a call not live here, 409 a state that
  refuses the action (docs/RECORDING.md). 503 without a `recordings:` section.
- /api/events  the controller's EventBus as Server-Sent Events (`event: <kind>` / `data: <json>`),
               `?kinds=screen_pop,transfer` to filter; the subscription ends when the client goes.
A route whose feature the controller does not run (no store: billing; no `transfer:` section:
transfers) answers 503.

Money is always a decimal string ("0.05") next to its currency code, never a JSON number: a float
cannot carry 0.01 exactly. Times are epoch µs (switch clock) plus an ISO-8601 UTC string; durations
are seconds with millisecond precision (not money, a float is fine).

Only the conversation routes act on calls (through the transfer feature, which decides what may
be done); nothing here changes an account or a session.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from aiohttp import web

from switchctl.billing.booths import Bill, Booths, booth_extensions
from switchctl.billing.money import Money
from switchctl.events import BusEvent, EventBus
from switchctl.features.prepaid.service import LiveCallView
from switchctl.features.recording import ACTIONS as RECORDING_ACTIONS
from switchctl.features.recording import RecordingError, UnknownCall
from switchctl.features.transfer.errors import TransferError

if TYPE_CHECKING:  # the controller imports this module to start it
    from switchctl.controller import Controller

log = logging.getLogger(__name__)
US_PER_S = 1_000_000

TRANSFER_MODES = ("blind", "attended")
ACTIONS = {"complete": "complete", "cancel": "cancel", "three-way": "three_way"}  # URL -> request action
_TO_RE = re.compile(r"\+?[0-9*#]{1,32}")
# As features/transfer/calldata.py checks them (a key becomes the flow variable data_<key>).
_DATA_KEY_RE = re.compile(r"[A-Za-z0-9_]{1,64}")
MAX_DATA_KEYS = 50
MAX_DATA_VALUE = 1024
_KIND_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
SSE_KEEPALIVE_S = 15.0  # a comment line this often keeps proxies from closing an idle stream
SSE_POLL_S = 1.0  # how often an idle stream looks whether its client went away


class ConversationService(Protocol):
    """What the API needs of features/transfer's TransferService (it raises TransferError)."""

    def conversations(self) -> list[dict[str, Any]]: ...

    def conversation(self, caller_uuid: str) -> dict[str, Any] | None: ...

    async def request(self, caller_uuid: str, action: str, to: str | None = None) -> dict[str, Any]: ...

    def set_data(self, caller_uuid: str, values: Mapping[str, str]) -> dict[str, Any]: ...


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _iso(at_us: int | None) -> str | None:
    if at_us is None:
        return None
    return dt.datetime.fromtimestamp(at_us / US_PER_S, dt.UTC).isoformat(timespec="milliseconds")


def _seconds(us: int) -> float:
    return round(us / US_PER_S, 3)


def _money(amount: Money | None) -> str | None:
    return None if amount is None else amount.format()


def call_json(view: LiveCallView) -> dict[str, Any]:
    """One live prepaid call as /api/calls lists it."""
    return {
        "ref": view.ref,
        "account": view.account,
        "tenant": view.tenant,
        "destination": view.destination,
        "prefix": view.prefix,
        "answered_at_us": view.answer_us,
        "answered_at": _iso(view.answer_us),
        "elapsed_s": _seconds(view.elapsed_us),
        "running_cost": view.running_cost.format(),
        "currency": view.running_cost.currency.code,
        "time_left_s": _seconds(view.time_left_us),
        "ends_at": _iso(view.end_us),
        "warned": view.warned,
    }


def bill_json(bill: Bill) -> dict[str, Any]:
    """One open booth session as /api/booths lists it (totals only, no CDR details)."""
    return {
        "booth": bill.booth,
        "state": bill.state,
        "session_id": bill.session_id,
        "opened_by": bill.opened_by,
        "opened_at": _iso(bill.opened_at_us),
        "currency": bill.currency.code,
        "calls": len(bill.lines),
        "live_calls": len(bill.live_calls),
        "total": _money(bill.total),
        "credited": _money(bill.credited),
        "due": _money(bill.due),
    }


@web.middleware
async def _json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every failure answers JSON too (a 404, or a store that cannot be read), never an HTML page."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        return _json({"error": exc.reason}, exc.status)
    except Exception as exc:  # one failed request must not stop the API
        log.exception("web API request failed", extra={"path": request.path})
        return _json({"error": f"{type(exc).__name__}: {exc}"}, 500)


class WebApi:
    """The controller's read-only HTTP API (see the module doc). Bind loopback only: the site's
    `web: listen:` is checked for that when the site loads (unless `allow_remote: true`)."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.app = web.Application(middlewares=[_json_errors])
        self.app.router.add_get("/api/calls", self.calls)
        self.app.router.add_get("/api/booths", self.booths)
        self.app.router.add_get("/api/health", self.health)
        self.app.router.add_get("/api/conversations", self.conversations)
        self.app.router.add_get("/api/conversations/{uuid}", self.conversation)
        self.app.router.add_post("/api/conversations/{uuid}/transfer", self.transfer)
        self.app.router.add_post("/api/conversations/{uuid}/{action:complete|cancel|three-way}", self.action)
        self.app.router.add_patch("/api/conversations/{uuid}/data", self.set_data)
        self.app.router.add_get("/api/events", self.events)
        self.app.router.add_get("/api/recordings", self.recordings)
        self.app.router.add_post("/api/calls/{uuid}/recording", self.recording_action)
        self.sse_keepalive = SSE_KEEPALIVE_S
        self.sse_poll = SSE_POLL_S
        self._streams: set[asyncio.Task[Any]] = set()  # handlers of open event streams
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._booths: Booths | None = None
        self.host = ""
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self, host: str, port: int) -> None:
        """Listen on host:port (port 0: any free port, see `port`). Raises OSError when the address
        cannot be bound."""
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.host, self.port = host, runner.addresses[0][1]

    @property
    def streams(self) -> int:
        """Event streams open now."""
        return len(self._streams)

    async def close(self) -> None:
        # Open event streams never end on their own: end them, or cleanup waits for them.
        self._closing = True
        for task in tuple(self._streams):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- routes ---------------------------------------------------------------------------------

    def _no_billing(self) -> web.Response:
        return _json({"error": "billing is off: the controller runs without a store"}, 503)

    async def calls(self, request: web.Request) -> web.Response:
        billing = self.controller.billing
        if billing is None:
            return self._no_billing()
        views = sorted(billing.prepaid.live_calls(), key=lambda v: (v.answer_us, v.ref))
        return _json({"calls": [call_json(v) for v in views]})

    async def booths(self, request: web.Request) -> web.Response:
        billing = self.controller.billing
        store = self.controller.store
        if billing is None or store is None:
            return self._no_billing()
        if self._booths is None:
            site = self.controller.site
            self._booths = Booths(store, billing.ledger, billing.accounts,
                                  booths=booth_extensions(site.phones), tenant=site.billing.tenant)
        return _json({"booths": [bill_json(b) for b in await self._booths.list()]})

    async def health(self, request: web.Request) -> web.Response:
        ctl = self.controller
        switches = []
        for sw in ctl.site.switches:
            connected: bool | None = None  # None: we hold no connection to it (not started, or
            # a FreeSWITCH served on its outbound socket only)
            if sw.name in ctl.asterisks:
                connected = ctl.asterisks[sw.name].stream.connected
            elif sw.name in ctl.clients:
                connected = ctl.clients[sw.name].connected
            entry: dict[str, Any] = {"name": sw.name, "kind": sw.kind, "connected": connected}
            if sw.name in ctl.servers:
                entry["outbound_port"] = ctl.servers[sw.name].port
            switches.append(entry)
        ok = all(s["connected"] is not False for s in switches)
        body = {
            "ok": ok,
            "switches": switches,
            "calls_active": ctl.stats.active,
            "calls_finished": ctl.stats.calls_finished,
            "billing": ctl.billing is not None,
        }
        return _json(body, 200 if ok else 503)

    # -- transfer: conversations --------------------------------------------------------------

    def _transfers(self) -> ConversationService | None:
        return getattr(self.controller, "transfers", None)

    @staticmethod
    def _no_transfers() -> web.Response:
        return _json({"error": "transfers are off: the site has no 'transfer:' section"}, 503)

    @staticmethod
    def _unknown(uuid: str) -> web.Response:
        return _json({"error": f"no conversation {uuid}"}, 404)

    @staticmethod
    async def _body(request: web.Request) -> Any:
        try:
            return orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            raise web.HTTPBadRequest(reason=f"the body is not JSON: {exc}") from None

    async def conversations(self, request: web.Request) -> web.Response:
        service = self._transfers()
        if service is None:
            return self._no_transfers()
        return _json({"conversations": service.conversations()})

    async def conversation(self, request: web.Request) -> web.Response:
        service = self._transfers()
        if service is None:
            return self._no_transfers()
        uuid = request.match_info["uuid"]
        found = service.conversation(uuid)
        return self._unknown(uuid) if found is None else _json(found)

    async def _request(self, request: web.Request, action: str, to: str | None = None) -> web.Response:
        service = self._transfers()
        if service is None:
            return self._no_transfers()
        uuid = request.match_info["uuid"]
        if service.conversation(uuid) is None:
            return self._unknown(uuid)
        try:
            return _json(await service.request(uuid, action, to))
        except TransferError as exc:
            return _json({"error": str(exc)}, 409)

    async def transfer(self, request: web.Request) -> web.Response:
        if self._transfers() is None:
            return self._no_transfers()
        body = await self._body(request)
        if not isinstance(body, dict) or set(body) - {"mode", "to"}:
            return _json({"error": 'expected {"mode": "blind"|"attended", "to": "<digits>"}'}, 400)
        mode, to = body.get("mode"), body.get("to")
        if mode not in TRANSFER_MODES:
            return _json({"error": f"mode must be one of {', '.join(TRANSFER_MODES)}, not {mode!r}"}, 400)
        if not isinstance(to, str) or not _TO_RE.fullmatch(to):
            return _json({"error": f"to must be the number to transfer to (digits, * or #), not {to!r}"}, 400)
        return await self._request(request, mode, to)

    async def action(self, request: web.Request) -> web.Response:
        return await self._request(request, ACTIONS[request.match_info["action"]])

    async def set_data(self, request: web.Request) -> web.Response:
        service = self._transfers()
        if service is None:
            return self._no_transfers()
        body = await self._body(request)
        problem = _data_problem(body)
        if problem:
            return _json({"error": problem}, 400)
        uuid = request.match_info["uuid"]
        if service.conversation(uuid) is None:
            return self._unknown(uuid)
        try:
            return _json(service.set_data(uuid, body))
        except TransferError as exc:
            return _json({"error": str(exc)}, 409)

    # -- call recording -------------------------------------------------------------------------

    @staticmethod
    def _no_recordings() -> web.Response:
        return _json({"error": "recording is off: the site has no 'recordings:' section"}, 503)

    async def recordings(self, request: web.Request) -> web.Response:
        recorder = getattr(self.controller, "recorder", None)
        if recorder is None:
            return self._no_recordings()
        if recorder.log is None:
            return _json({"error": "recordings are not kept: the controller runs without a store"}, 503)
        call = request.query.get("call") or None
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return _json({"error": "limit must be a whole number"}, 400)
        rows = await recorder.log.list(call_uuid=call, limit=limit)
        body = []
        for row in rows:
            item = row.as_json()
            item["started_at"] = _iso(row.started_us)
            item["ended_at"] = _iso(row.ended_us)
            item["live"] = recorder.status(row.call_uuid) if recorder.live_call(row.call_uuid) else None
            body.append(item)
        return _json({"recordings": body})

    async def recording_action(self, request: web.Request) -> web.Response:
        recorder = getattr(self.controller, "recorder", None)
        if recorder is None:
            return self._no_recordings()
        body = await self._body(request)
        if not isinstance(body, dict) or set(body) - {"action", "name"} \
                or body.get("action") not in RECORDING_ACTIONS:
            return _json({"error": 'expected {"action": "start"|"pause"|"resume"|"stop"}'}, 400)
        name = body.get("name")
        if name is not None and (not isinstance(name, str) or body["action"] != "start"):
            return _json({"error": "name is a text, and only for start"}, 400)
        uuid = request.match_info["uuid"]
        try:
            return _json(await recorder.act(uuid, body["action"], name=name))
        except UnknownCall as exc:
            return _json({"error": str(exc)}, 404)
        except RecordingError as exc:
            return _json({"error": str(exc)}, 409)

    # -- live events ------------------------------------------------------------------------------

    async def events(self, request: web.Request) -> web.StreamResponse:
        bus: EventBus | None = getattr(self.controller, "events", None)
        if bus is None:
            return _json({"error": "no event bus: the controller publishes no events"}, 503)
        kinds: set[str] | None = None
        if "kinds" in request.query:
            kinds = {k.strip() for k in request.query["kinds"].split(",") if k.strip()}
            if not kinds or not all(_KIND_RE.fullmatch(k) for k in kinds):
                return _json({"error": "kinds must be a comma-separated list of event kinds"}, 400)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        task = asyncio.current_task()
        assert task is not None
        self._streams.add(task)
        try:
            with bus.subscribe(kinds) as sub:
                await response.write(b": subscribed\n\n")  # the client knows it will miss nothing from now
                idle = 0.0
                while request.transport is not None and not request.transport.is_closing():
                    try:
                        event = await asyncio.wait_for(sub.get(), self.sse_poll)
                    except TimeoutError:
                        idle += self.sse_poll
                        if idle >= self.sse_keepalive:
                            idle = 0.0
                            await response.write(b": keepalive\n\n")
                        continue
                    idle = 0.0
                    await response.write(sse_frame(event))
        except ConnectionError:
            pass  # the client went: the subscription is closed above
        except asyncio.CancelledError:
            if not self._closing:
                raise
        finally:
            self._streams.discard(task)
        return response


def sse_frame(event: BusEvent) -> bytes:
    """One Server-Sent Event: `event: <kind>`, `data: <payload as JSON>` (one line: orjson never
    writes a newline), and the blank line that ends it."""
    data = orjson.dumps(event.payload, default=str)
    return b"event: " + event.kind.encode() + b"\ndata: " + data + b"\n\n"


def _data_problem(body: Any) -> str | None:
    """Why a PATCH .../data body is refused (None: it is a JSON object of short texts)."""
    if not isinstance(body, dict) or not body:
        return "expected a non-empty JSON object of \"key\": \"text\""
    if len(body) > MAX_DATA_KEYS:
        return f"at most {MAX_DATA_KEYS} keys at once"
    for key, value in body.items():
        if not _DATA_KEY_RE.fullmatch(key):
            return f"key {key!r} must be a name (letters, digits, _; at most 64)"
        if not isinstance(value, str) or len(value) > MAX_DATA_VALUE:
            return f"value of {key!r} must be text of at most {MAX_DATA_VALUE} characters"
    return None
