"""A small read-only HTTP API on the controller: live prepaid calls, open booth sessions, health.

    api = WebApi(controller)
    await api.start("127.0.0.1", 8080)     # port 0: a free port, read back from `api.port`
    ...
    await api.close()

Routes (all GET, JSON via orjson):
- /api/calls   live prepaid calls (PrepaidService.live_calls): running cost so far, time left.
- /api/booths  open booth sessions with their totals (Booths.list).
- /api/health  each switch's connection and the number of calls the controller is running;
               503 when a switch we hold a connection to is down.

Money is always a decimal string ("0.05") next to its currency code, never a JSON number: a float
cannot carry 0.01 exactly. Times are epoch µs (switch clock) plus an ISO-8601 UTC string; durations
are seconds with millisecond precision (not money, a float is fine).

Nothing here writes: no route changes a call, an account or a session.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from switchctl.billing.booths import Bill, Booths, booth_extensions
from switchctl.billing.money import Money
from switchctl.features.prepaid.service import LiveCallView

if TYPE_CHECKING:  # the controller imports this module to start it
    from switchctl.controller import Controller

log = logging.getLogger(__name__)
US_PER_S = 1_000_000


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

    async def close(self) -> None:
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
