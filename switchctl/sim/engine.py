"""The FreeSWITCH simulator: an ESL server (inbound), outbound sockets to controllers, channels and callers.

```python
sim = FreeSwitchSim(SimConfig(dialplan=[Route(r"^(9\\d\\d\\d)$", "socket", "127.0.0.1:8084 async full")]))
await sim.start()
call = sim.place_call(destination="9000", caller="1001", script=[Press("2#")])
result = await call.done
await sim.close()
```

Everything runs on the event loop of the caller; all sockets are on loopback. Behaviour comes from the
captures in ../shared/captures/freeswitch-scenarios (cited where modelled) and FreeSWITCH's source.
"""

from __future__ import annotations

import asyncio
import collections
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any, Coroutine, Iterable

from switchctl.esl import serverwire
from switchctl.sim import bridge as _bridge  # noqa: F401  (registers the bridge application)
from switchctl.sim import conference as _conference  # noqa: F401  (registers the conference application)
from switchctl.sim import transfer as _transfer  # noqa: F401  (registers uuid_bridge)
from switchctl.sim import events as simevents
from switchctl.sim.apps import application
from switchctl.sim.cdrfiles import write_channel_cdr
from switchctl.sim.channel import ChannelHooks, ExecuteRequest, SimChannel, now_us
from switchctl.sim.config import HangUp, Press, ScriptStep, Silence, SimConfig
from switchctl.sim.listener import EslConnection, InboundConnection, OutboundConnection

# Spacing of a scripted caller's digits and its reaction time (brief: ~100 ms, divided by media_speed).
DIGIT_SPACING = 0.1


@dataclass
class CallResult:
    """What happened to one simulated call, for assertions."""

    uuid: str | None
    hangup_cause: str | None
    hangup_by: str | None  # "caller" (BYE), "switch" (FreeSWITCH or the controller), "limit", None (refused)
    answered: bool
    apps: list[tuple[str, str, str]] = field(default_factory=list)  # (app, arg, Application-Response)
    commands: list[serverwire.ClientCommand] = field(default_factory=list)
    events_sent: list[str] = field(default_factory=list)
    bytes_to_socket: int = 0
    answered_us: int = 0
    hungup_us: int = 0
    variables: dict[str, str] = field(default_factory=dict)
    sip_response: str | None = None  # set when the call was refused before a channel existed
    connections: int = 0  # outbound sockets opened for this call (a transfer to a socket route opens another)
    dtmf_sent: str = ""


class SimCall:
    """A simulated caller. `done` resolves with the CallResult once the channel is destroyed."""

    def __init__(self, sim: "FreeSwitchSim", script: Iterable[ScriptStep], hangup_after: float | None) -> None:
        self.sim = sim
        self.script: collections.deque[ScriptStep] = collections.deque(script)
        self.hangup_after = hangup_after
        self.done: asyncio.Future[CallResult] = asyncio.get_running_loop().create_future()
        self.channel: SimChannel | None = None
        self.connections: list[OutboundConnection] = []
        self.dtmf_sent = ""
        self._tasks: list[asyncio.Task[Any]] = []

    @property
    def uuid(self) -> str | None:
        return self.channel.uuid if self.channel is not None else None

    def hangup(self) -> None:
        """The caller hangs up now (SIP BYE)."""
        if self.channel is not None:
            self.channel.hangup("NORMAL_CLEARING", kind="caller", by="caller")

    def press(self, digits: str) -> None:
        """Send digits now, outside the script."""
        self._tasks.append(self.sim.spawn(self._send_digits(digits, delay_first=False)))

    # hooks called by the channel
    def on_answer(self) -> None:
        if self.hangup_after is not None:
            self._tasks.append(self.sim.spawn(self._hangup_later(self.hangup_after, "caller")))

    def on_collect_start(self) -> None:
        step = self.script.popleft() if self.script else Silence()
        if isinstance(step, Press):
            self._tasks.append(self.sim.spawn(self._send_digits(step.digits, delay_first=True)))
        elif isinstance(step, HangUp):
            self._tasks.append(self.sim.spawn(self._hangup_later(DIGIT_SPACING, "caller")))

    async def _send_digits(self, digits: str, *, delay_first: bool) -> None:
        speed = self.sim.config.media_speed
        for index, digit in enumerate(digits):
            if index or delay_first:
                await asyncio.sleep(DIGIT_SPACING / speed)
            if self.channel is None or self.channel.hungup:
                return
            self.dtmf_sent += digit
            self.channel.receive_dtmf(digit)

    async def _hangup_later(self, media_seconds: float, by: str) -> None:
        await asyncio.sleep(media_seconds / self.sim.config.media_speed)
        if self.channel is not None:
            self.channel.hangup("NORMAL_CLEARING", kind="caller", by=by)

    def cancel_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()


class FreeSwitchSim:
    """A FreeSWITCH 1.11 look-alike on loopback: inbound ESL, outbound sockets, channels, applications."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.core_uuid = str(uuidlib.uuid4())
        self.events = simevents.EventFactory(core_uuid=self.core_uuid, hostname=self.config.hostname,
                                             switchname=self.config.hostname)
        self.channels: dict[str, SimChannel] = {}
        self.listeners: set[EslConnection] = set()
        self.logs: list[tuple[str, str]] = []
        self.started_at = time.time()
        self.sessions_since_startup = 0
        self.peak_sessions = 0
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sps_second = 0
        self._sps_left = 0
        self._calls: dict[str, SimCall] = {}
        self._inbound_tasks: set[asyncio.Task[Any]] = set()  # owned by asyncio's server: closed, not cancelled

    # --- lifecycle ---------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.config.esl_host, self.config.esl_port)

    @property
    def esl_port(self) -> int:
        if self._server is None:
            raise RuntimeError("FreeSwitchSim.start() has not been awaited")
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Hang up every channel (hupall), close every socket, cancel every task."""
        for channel in list(self.channels.values()):
            channel.hangup("MANAGER_REQUEST", kind="external")
        for listener in list(self.listeners):
            if isinstance(listener, OutboundConnection):
                listener.finish()
            else:
                listener.close()
        if self._inbound_tasks:
            # closing their sockets (above) makes their reads end; wait for them to return
            await asyncio.wait(list(self._inbound_tasks), timeout=2.0)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for call in self._calls.values():
            call.cancel_tasks()
            if not call.done.done():
                call.done.cancel()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log("CRIT", f"simulator task failed: {task.exception()!r}")

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = InboundConnection(self, reader, writer)
        self.listeners.add(connection)
        task = asyncio.current_task()
        if task is not None:
            self._inbound_tasks.add(task)
        try:
            await connection.serve()
        finally:
            connection.close()
            if task is not None:
                self._inbound_tasks.discard(task)

    # --- logging and events ------------------------------------------------------------------------------------
    def log(self, level: str, text: str, *, channel: SimChannel | None = None) -> None:
        self.logs.append((level, text))
        for listener in list(self.listeners):
            if channel is None or listener.session is None or listener.session is channel:
                listener.deliver_log(level, text)

    def fire_channel_event(self, name: str, channel: SimChannel, extra: list[tuple[str, str]]) -> None:
        headers = self.events.channel_event(name, channel.data, now_us=now_us(), extra=extra)
        self.dispatch(name, headers, None)

    def fire_event(self, name: str, extra: Iterable[tuple[str, str]] = (),
                   *, calling: tuple[str, str, int] | None = None) -> None:
        headers = self.events.event(name, now_us=now_us(), calling=calling, extra=list(extra))
        self.dispatch(name, headers, None)

    def dispatch(self, name: str, headers: list[tuple[str, Any]], body: str | None) -> None:
        lookup: dict[str, str] = {}
        for key, value in headers:
            lookup.setdefault(key.lower(), value if isinstance(value, str) else "|:".join(value))
        subclass = lookup.get("event-subclass")
        frames: dict[str, bytes] = {}
        for listener in list(self.listeners):
            if listener.wants(name, subclass, lookup):
                frame = frames.get(listener.format)
                if frame is None:
                    frame = frames[listener.format] = serverwire.encode_event(headers, body, listener.format)
                listener.deliver(name, frame)

    def connect_headers(self, channel: SimChannel, connection: OutboundConnection) -> list[tuple[str, str]]:
        return self.events.connect_headers(channel.data, now_us=now_us(),
                                           socket_mode="async" if connection.async_mode else "static",
                                           control="full" if connection.full else "single-channel")

    # --- calls -------------------------------------------------------------------------------------------------
    def admit_session(self) -> str | None:
        """switch_core_session_request_uuid's limits: None if admitted, else the CRIT log line.

        `sps = --runtime.sps; if (sps <= 0) Throttle Error`, and runtime.sps is reset to sessions-per-second
        every second by the timer: so at most sessions_per_second - 1 new sessions per wall-clock second.
        """
        second = int(time.time())
        if second != self._sps_second:
            self._sps_second = second
            self._sps_left = self.config.sessions_per_second
        self._sps_left -= 1
        if self._sps_left <= 0:
            return f"Throttle Error! {len(self.channels)}"
        if len(self.channels) + 1 > self.config.max_sessions:
            return f"Over Session Limit! {self.config.max_sessions}"
        return None

    def place_call(self, destination: str, caller: str = "1000", *, script: Iterable[ScriptStep] = (),
                   hangup_after: float | None = None, caller_name: str | None = None,
                   variables: dict[str, str] | None = None) -> SimCall:
        """A SIP call from `caller` to `destination` arrives on the sofia profile; returns at once."""
        call = SimCall(self, script, hangup_after)
        refused = self.admit_session()
        if refused is not None:
            # No session: sofia answers the INVITE 503 Maximum Calls In Progress (sofia.c) and no event fires.
            self.log("CRIT", refused)
            call.done.set_result(CallResult(uuid=None, hangup_cause=None, hangup_by=None, answered=False,
                                            sip_response="503 Maximum Calls In Progress"))
            return call
        uuid = str(uuidlib.uuid4())
        data = simevents.ChannelData.new_inbound_sip(
            uuid, caller, destination, now_us=now_us(), caller_name=caller_name or caller,
            host=self.config.domain, profile=self.config.sip_profile, context=self.config.context,
            session_id=self.sessions_since_startup + 1)
        data.variables.update(variables or {})
        channel = SimChannel(self, data, hooks=ChannelHooks(on_answer=call.on_answer,
                                                             on_collect_start=call.on_collect_start))
        call.channel = channel
        self._calls[uuid] = call
        self.register_channel(channel)
        channel.task = self.spawn(self._run_inbound(channel, call))
        return call

    def register_channel(self, channel: SimChannel) -> None:
        self.channels[channel.uuid] = channel
        self.sessions_since_startup += 1
        self.peak_sessions = max(self.peak_sessions, len(self.channels))

    def set_state(self, channel: SimChannel, state: str) -> None:
        channel.data.state = state
        channel.fire("CHANNEL_STATE")

    async def _run_inbound(self, channel: SimChannel, call: SimCall) -> None:
        limit = self.spawn(self._call_limit(channel))
        try:
            # s3 b1 monitor, A leg: CHANNEL_STATE CS_NEW, CS_INIT, CHANNEL_CREATE, CALLSTATE RINGING,
            # CHANNEL_STATE CS_ROUTING, CS_EXECUTE, then the dialplan's applications.
            self.set_state(channel, "CS_INIT")
            channel.fire("CHANNEL_CREATE")
            channel.set_callstate("RINGING")
            await self.run_dialplan(channel)
            await self.report_and_destroy(channel)
        finally:
            limit.cancel()
            self._calls.pop(channel.uuid, None)
            call.cancel_tasks()
            if not call.done.done():
                call.done.set_result(self._result(channel, call))

    async def _call_limit(self, channel: SimChannel) -> None:
        """`max_call_seconds` bounds every simulated call (media time): the caller gives up."""
        await asyncio.sleep(self.config.max_call_seconds / self.config.media_speed)
        channel.hangup("NORMAL_CLEARING", kind="caller", by="limit")

    async def run_dialplan(self, channel: SimChannel) -> None:
        """Route the destination (first matching Route), run its application; re-route after a transfer.
        A transfer pending on entry (a leg moved out of a bridge it did not run itself) goes first."""
        if channel.transfer_to is not None and channel.ready:
            self._apply_transfer(channel)
        while True:
            self.set_state(channel, "CS_ROUTING")
            inline, channel.inline_apps = channel.inline_apps, None
            if inline is not None:
                apps = inline
            else:
                found = self.route(channel.data.destination, channel.data.context)
                if found is None:
                    self.log("INFO", "No route, Aborting", channel=channel)
                    channel.hangup("NO_ROUTE_DESTINATION", kind="session")
                    return
                apps = [found]
            self.set_state(channel, "CS_EXECUTE")
            channel.transfer_to = None
            for app, arg in apps:
                await channel.execute(app, arg, None)
                if channel.transfer_to is not None or not channel.ready:
                    break
            if channel.transfer_to is not None and channel.ready:
                self._apply_transfer(channel)
                continue
            break
        if channel.ready:
            # The extension's applications are done and nothing hung up: FreeSWITCH hangs up (NORMAL_CLEARING).
            channel.hangup("NORMAL_CLEARING", kind="session")

    def route(self, destination: str, context: str) -> tuple[str, str] | None:
        for route in self.config.dialplan:
            arg = route.match(destination, context)
            if arg is not None:
                return route.app, arg
        return None

    def transfer(self, channel: SimChannel, extension: str, dialplan: str | None, context: str | None) -> None:
        """switch_ivr_session_transfer: whatever runs stops and the channel re-enters the dialplan."""
        channel.transfer_to = (extension, dialplan, context)
        channel.wake()

    async def run_moved(self, channel: SimChannel) -> None:
        """The session loop of a channel that ran nothing of its own (a bridge's B leg) once it is moved."""
        await self.run_dialplan(channel)
        await self.report_and_destroy(channel)

    def _apply_transfer(self, channel: SimChannel) -> None:
        assert channel.transfer_to is not None
        extension, dialplan, context = channel.transfer_to
        channel.transfer_to = None
        if dialplan == "inline":
            # mod_dptools inline_dialplan_hunt: `app:arg,app:arg`; `^^<c>` first names another separator
            delim = ","
            if extension.startswith("^^") and len(extension) > 2:
                delim, extension = extension[2], extension[3:]
            apps = []
            for item in extension.split(delim):
                app, _, arg = item.partition(":")
                if app:
                    apps.append((app, arg))
            channel.inline_apps = apps
            channel.data.transferred_us = now_us()
            return
        channel.data.destination = extension
        if context:
            channel.data.context = context
        channel.data.transferred_us = now_us()
        channel.set_var("transfer_history", f"{int(time.time())}:{uuidlib.uuid4()}:bl_xfer:{extension}/"
                        f"{context or channel.data.context}/XML")

    async def report_and_destroy(self, channel: SimChannel) -> None:
        """After CHANNEL_HANGUP: CS_HANGUP, CALLSTATE HANGUP, CS_REPORTING, HANGUP_COMPLETE; then the outbound
        sockets' linger/disconnect; CHANNEL_DESTROY only once every controlling socket is gone (s3 b1-b7)."""
        self.set_state(channel, "CS_HANGUP")
        channel.on_hangup_state()
        channel.set_callstate("HANGUP")
        self.set_state(channel, "CS_REPORTING")
        channel.fire("CHANNEL_HANGUP_COMPLETE")  # adds its leading Hangup-Cause and the CDR variables
        if self.config.cdr_dir is not None:  # mod_json_cdr / mod_cdr_csv run at reporting too
            write_channel_cdr(self, channel)
        channel.reported.set()
        for controller in list(channel.controllers):
            controller.channel_down()
        for controller in list(channel.controllers):
            await controller.finished.wait()
        channel.fire("CHANNEL_DESTROY")
        self.set_state(channel, "CS_DESTROY")
        self.channels.pop(channel.uuid, None)
        channel.destroyed.set()

    def _result(self, channel: SimChannel, call: SimCall) -> CallResult:
        commands = [command for conn in call.connections for command in conn.commands]
        events = [name for conn in call.connections for name in conn.events_written]
        return CallResult(
            uuid=channel.uuid, hangup_cause=channel.data.hangup_cause, hangup_by=channel.hangup_by,
            answered=channel.answered, apps=list(channel.apps_run), commands=commands, events_sent=events,
            bytes_to_socket=sum(conn.bytes_written for conn in call.connections),
            answered_us=channel.data.answered_us or 0, hungup_us=channel.data.hungup_us or 0,
            variables=dict(channel.vars), connections=len(call.connections), dtmf_sent=call.dtmf_sent,
        )

    # --- ESL commands that act on channels ---------------------------------------------------------------------
    def apply_sendmsg(self, channel: SimChannel, command: serverwire.ClientCommand) -> None:
        """switch_ivr_parse_event: `execute` is queued for the channel's park loop (one app after the other);
        `hangup` takes effect at once (the session's message parsing runs inside media loops too)."""
        call_command = (command.header("call-command") or "").lower()
        if call_command == "execute":
            app = command.header("execute-app-name") or ""
            arg = command.header("execute-app-arg")
            if arg is None and command.body and (command.header("content-type") or "").lower() == "text/plain":
                arg = command.body.decode("utf-8", "replace")
            loops = int(command.header("loops") or "1") if (command.header("loops") or "1").isdigit() else 1
            channel.queue_execute(ExecuteRequest(app, arg or "", command.header("Event-UUID"), loops))
        elif call_command == "hangup":
            cause = command.header("hangup-cause") or "NORMAL_CLEARING"
            channel.hangup(cause, kind="session", by="switch")
        else:
            self.log("DEBUG", f"sendmsg call-command {call_command or '(none)'} is not simulated; ignored",
                     channel=channel)

    async def run_sendmsg_inline(self, channel: SimChannel, command: serverwire.ClientCommand) -> None:
        """Outbound socket without `async`: the message runs in the session's own thread, at once."""
        if (command.header("call-command") or "").lower() == "execute":
            self.apply_sendmsg(channel, command)
            while channel.app_queue:
                request = channel.app_queue.popleft()
                for _ in range(max(1, request.loops)):
                    await channel.execute(request.app, request.arg, request.event_uuid)
        else:
            self.apply_sendmsg(channel, command)

    async def api(self, line: str) -> str:
        """The body `api <line>` answers."""
        from switchctl.sim.api import run_api_async

        return await run_api_async(self, line)

    async def run_bgapi(self, line: str, job_uuid: str, *, owner_uuid: str | None) -> None:
        from switchctl.sim.api import run_api_async

        body = await run_api_async(self, line)
        command, _, arg = line.partition(" ")
        headers, event_body = self.events.background_job(job_uuid, command, arg, body, now_us=now_us(),
                                                         owner_uuid=owner_uuid)
        self.dispatch("BACKGROUND_JOB", headers, event_body)


# --- the `socket` application (mod_event_socket socket_function, async mode) -----------------------------------

@application("socket")
async def app_socket(channel: SimChannel, arg: str) -> None:
    sim = channel.sim
    argv = arg.split()
    if not argv:
        sim.log("ERR", "Parse Error!", channel=channel)
        return
    connection: OutboundConnection | None = None
    for target in argv[0].split("|"):
        host, _, port_text = target.rpartition(":")
        if not host:
            host, port_text = port_text, "8084"
        channel.set_var("socket_host", host)
        sim.log("NOTICE", f"Trying host: {target}", channel=channel)
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port_text)), 5.0)
        except (OSError, ValueError, TimeoutError) as error:
            sim.log("ERR", f"Socket Error: {error}", channel=channel)
            continue
        flags = {word.lower() for word in argv[1:]}
        connection = OutboundConnection(sim, channel, reader, writer, async_mode="async" in flags,
                                        full="full" in flags)
        break
    if connection is None:
        sim.log("ERR", "Socket Error!", channel=channel)
        return
    sim.listeners.add(connection)
    channel.controllers.append(connection)
    call = sim._calls.get(channel.uuid)
    if call is not None:
        call.connections.append(connection)
    sim.spawn(connection.serve())
    # Wait until the listener has its `connect` (and the park gate opened), the listener died, or a hangup.
    await channel.wait(None, until=lambda: connection.park_gate.is_set() or connection.finished.is_set())
    if not channel.ready or not connection.park_gate.is_set() or connection.finished.is_set():
        return
    if not connection.async_mode:
        # static mode: listener_run runs in the session thread; sendmsg executes inline (run_sendmsg_inline)
        await channel.wait(None, until=lambda: connection.finished.is_set())
        return
    await channel.park(while_=lambda: not connection.finished.is_set(), announce=False)


__all__ = ["CallResult", "FreeSwitchSim", "SimCall"]
