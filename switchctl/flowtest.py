"""Run a site's flows against the FreeSWITCH simulator: `switchctl flow test` and `run --simulator`.

The simulator plays FreeSWITCH: its dialplan is derived from the site the way the rendered
FreeSWITCH dialplan is (flow numbers and patterns → `socket ... async full`, phone extensions →
`bridge user/<ext>`), and the controller drives the call through the real ESL stack.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass, field

from .config.site import Site
from .controller import Controller
from .calldriver import DRIVER_EVENTS, CallOutcome, EslCallDriver
from .esl.inbound import InboundClient
from .esl.outbound import OutboundServer
from .flows import FlowSet, FlowTrace
from .sim import FreeSwitchSim, HangUp, Press, Route, SimConfig, Silence, UserBehaviour


def sim_routes(site: Site, flows: FlowSet, outbound: str) -> list[Route]:
    """The simulator's dialplan for a site, in the rendered FreeSWITCH dialplan's order: exact flow
    numbers, then phone extensions (bridge), then flow patterns (whole-number matches)."""
    socket = f"{outbound} async full"
    routes: list[Route] = []
    for flow in flows:
        routes.extend(Route(f"^{re.escape(number.value)}$", "socket", socket) for number in flow.numbers)
    for phone in site.phones:
        routes.append(Route(f"^{re.escape(phone.extension)}$", "bridge", f"user/{phone.extension}"))
    for flow in flows:
        routes.extend(Route(f"^(?:{pattern.pattern})$", "socket", socket) for pattern, _ in flow.patterns)
    return routes


def simulator_for_site(site: Site, flows: FlowSet, *, media_speed: float = 1.0) -> FreeSwitchSim:
    """A simulator standing in for the site's first FreeSWITCH, on its ESL address."""
    sw = next((s for s in site.switches if s.kind == "freeswitch"), None)
    if sw is None or sw.esl is None or sw.outbound is None:
        raise SystemExit(f"site '{site.name}' has no FreeSWITCH switch for the simulator to stand in for")
    return FreeSwitchSim(
        SimConfig(
            esl_host=sw.esl.host,
            esl_port=sw.esl.port,
            password=sw.esl.password,
            dialplan=sim_routes(site, flows, f"{sw.outbound.host}:{sw.outbound.port}"),
            users={p.extension: UserBehaviour(registered=True) for p in site.phones},
            media_speed=media_speed,
            sessions_per_second=sw.sessions_per_second,
            max_sessions=sw.max_sessions,
        )
    )


def script_from_presses(presses: list[str]) -> list[object]:
    script: list[object] = []
    for press in presses:
        if press in ("-", ""):
            script.append(Silence())
        elif press.lower() == "hangup":
            script.append(HangUp())
        else:
            script.append(Press(press))
    return script


@dataclass
class FlowTestReport:
    dial: str
    flow: str | None
    trace: FlowTrace | None
    result: object  # the simulator's CallResult
    lines: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.trace is not None and self.trace.result != "error"

    def text(self) -> str:
        out = [f"call to {self.dial} -> flow {self.flow or '(none)'}"]
        out.append("path:")
        if self.trace is not None:
            for step in self.trace.steps:
                flow, node, outcome = step[0], step[1], step[2]
                out.append(f"  {flow}:{node} -> {outcome}")
            out.append(f"result: {self.trace.result}" + (f" ({self.trace.error})" if self.trace.error else ""))
        out.append("commands sent to the switch:")
        for cmd in self.result.commands:
            out.append("  " + describe_command(cmd))
        out.append(f"hangup: {self.result.hangup_cause} by {self.result.hangup_by}")
        return "\n".join(out)


def describe_command(cmd) -> str:
    """One line for a command the controller sent: `execute playback ivr/x.wav`, `hangup`, ..."""
    if cmd.verb == "sendmsg":
        kind = cmd.headers.get("call-command", "")
        if kind == "execute":
            arg = cmd.headers.get("execute-app-arg", "")
            if not arg and cmd.body:
                arg = cmd.body.decode("utf-8", "replace")
            return f"execute {cmd.headers.get('execute-app-name', '')} {arg}".rstrip()
        if kind == "hangup":
            return f"hangup {cmd.headers.get('hangup-cause', '')}".rstrip()
        return f"sendmsg {kind}"
    return cmd.line


class SimHarness:
    """The controller's outbound server and a simulator routing the site's numbers to it, on loopback."""

    def __init__(self, site: Site, flows: FlowSet, *, media_speed: float = 50.0,
                 users: dict[str, UserBehaviour] | None = None) -> None:
        self.site = site
        self.flows = flows
        self.media_speed = media_speed
        self.users = users
        self.traces: dict[str, FlowTrace | None] = {}
        self._trace_waiters: dict[str, asyncio.Future[FlowTrace | None]] = {}
        self.controller = Controller(site, flows, on_trace=self._on_trace)
        self.server = OutboundServer(
            lambda session: self.controller.handle_session(session, "sim"), host="127.0.0.1", port=0
        )
        self.sim: FreeSwitchSim | None = None

    def _on_trace(self, uuid: str, trace: FlowTrace | None) -> None:
        self.traces[uuid] = trace
        waiter = self._trace_waiters.pop(uuid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(trace)

    async def start(self) -> None:
        await self.server.start()
        users = self.users if self.users is not None else {
            p.extension: UserBehaviour(registered=True, answer_after=0.2, hangup_after=1.0) for p in self.site.phones
        }
        self.sim = FreeSwitchSim(
            SimConfig(
                esl_host="127.0.0.1",
                esl_port=0,
                dialplan=sim_routes(self.site, self.flows, f"127.0.0.1:{self.server.port}"),
                users=users,
                media_speed=self.media_speed,
                sessions_per_second=10_000,
                max_sessions=10_000,
            )
        )
        await self.sim.start()

    async def close(self) -> None:
        if self.sim is not None:
            await self.sim.close()
        await self.server.close()

    async def __aenter__(self) -> "SimHarness":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def call(self, dial: str, presses: list[str] | None = None, *, caller: str = "1001",
                   hangup_after: float | None = None, timeout: float = 60.0):
        """Place one call; returns (first FlowTrace of the call or None, the simulator's CallResult)."""
        assert self.sim is not None, "start() first"
        call = self.sim.place_call(destination=dial, caller=caller, script=script_from_presses(presses or []),
                                   hangup_after=hangup_after)
        result = await asyncio.wait_for(call.done, timeout)
        trace = await self.trace_of(result.uuid) if result.connections else None
        return trace, result

    async def trace_of(self, uuid: str | None, wait: float = 5.0) -> FlowTrace | None:
        """The controller's trace of the call `uuid`, waiting briefly: when the switch reports the
        call over, the controller's handler may still be winding down its session."""
        if uuid is None:
            return None
        if uuid in self.traces:
            return self.traces[uuid]
        waiter = self._trace_waiters.setdefault(uuid, asyncio.get_running_loop().create_future())
        try:
            return await asyncio.wait_for(waiter, wait)
        except asyncio.TimeoutError:
            return None


class EslTarget:
    """Calls placed the way a person would test a live switch: loopback calls originated over the
    switch's inbound ESL (EslCallDriver), handled by this process's controller on `outbound`.

    With `simulate=True` the switch is our simulator (its dialplan derived from the site, its ESL
    on port 0); otherwise `esl` is a real FreeSWITCH whose deployed dialplan hands the site's flow
    numbers to `outbound` (`switchctl deploy` renders exactly that). The same calls, the same
    checks: one integration suite, two targets.
    """

    def __init__(self, site: Site, flows: FlowSet, *, simulate: bool = True,
                 esl: tuple[str, int, str] | None = None, outbound: tuple[str, int] = ("127.0.0.1", 0),
                 media_speed: float = 50.0, users: dict[str, UserBehaviour] | None = None) -> None:
        self.site = site
        self.flows = flows
        self.simulate = simulate
        self.esl = esl
        self.media_speed = media_speed if simulate else 1.0
        self.harness = SimHarness(site, flows, media_speed=media_speed, users=users)
        if not simulate:
            self.harness.server = OutboundServer(
                lambda session: self.harness.controller.handle_session(session, "fs"),
                host=outbound[0], port=outbound[1],
            )
        self.driver: EslCallDriver | None = None

    @property
    def controller(self) -> Controller:
        return self.harness.controller

    async def start(self) -> None:
        if self.simulate:
            await self.harness.start()
            assert self.harness.sim is not None
            host, port, password = "127.0.0.1", self.harness.sim.esl_port, "ClueCon"
        else:
            await self.harness.server.start()
            assert self.esl is not None, "a real switch needs esl=(host, port, password)"
            host, port, password = self.esl
        client = InboundClient(host, port, password, name="calls", events=DRIVER_EVENTS, event_format="plain")
        # the caller presses shortly after each prompt starts: 0.2 s of switch media time
        self.driver = EslCallDriver(client, press_delay=0.2 / self.media_speed)
        await self.driver.start()

    async def close(self) -> None:
        if self.driver is not None:
            await self.driver.close()
        if self.simulate:
            await self.harness.close()
        else:
            await self.harness.server.close()

    async def __aenter__(self) -> "EslTarget":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def call(self, dial: str, presses: list[str] | None = None, *, caller: str = "1001",
                   timeout: float = 60.0) -> tuple[FlowTrace | None, CallOutcome]:
        """Place one call; returns (the controller's FlowTrace for it or None, the switch's view)."""
        assert self.driver is not None, "start() first"
        outcome = await self.driver.call(dial, presses or [], caller=caller, timeout=timeout)
        return await self.harness.trace_of(outcome.uuid), outcome


def target_from_env(site: Site, flows: FlowSet, **kwargs: object) -> EslTarget:
    """The simulator, or the real FreeSWITCH named by SWITCHCTL_FS_ESL=host:port:password (with the
    controller's outbound socket on SWITCHCTL_FS_OUTBOUND=host:port, default 127.0.0.1:8084)."""
    spec = os.environ.get("SWITCHCTL_FS_ESL")
    if not spec:
        return EslTarget(site, flows, simulate=True, **kwargs)  # type: ignore[arg-type]
    host, port, password = spec.split(":", 2)
    out_host, out_port = os.environ.get("SWITCHCTL_FS_OUTBOUND", "127.0.0.1:8084").rsplit(":", 1)
    return EslTarget(site, flows, simulate=False, esl=(host, int(port), password),
                     outbound=(out_host, int(out_port)), **kwargs)  # type: ignore[arg-type]


async def run_flow_test(
    site: Site,
    flows: FlowSet,
    *,
    flow: str | None = None,
    dial: str | None = None,
    presses: list[str] | None = None,
    caller: str = "1001",
    hangup_after: float | None = None,
    media_speed: float = 50.0,
    timeout: float = 120.0,
) -> FlowTestReport:
    if dial is None:
        if flow is None:
            raise SystemExit("flow test: give a flow name or --dial")
        chosen = flows.get(flow)
        if chosen is None:
            raise SystemExit(f"flow test: no flow named '{flow}'")
        if not chosen.numbers:
            raise SystemExit(f"flow test: flow '{flow}' has no numbers; give --dial")
        dial = chosen.numbers[0].value
    async with SimHarness(site, flows, media_speed=media_speed) as harness:
        trace, result = await harness.call(dial, presses, caller=caller, hangup_after=hangup_after,
                                           timeout=timeout)
    matched = flows.match(dial)
    return FlowTestReport(dial=dial, flow=matched[0].name if matched else None, trace=trace, result=result)
