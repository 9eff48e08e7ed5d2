"""mod_event_socket listeners of the simulator: subscriptions, filters, and the inbound / outbound command sets.

Replies come straight from mod_event_socket.c parse_command (texts quoted there); the frame bytes come from
`switchctl.esl.serverwire`. Writes go to the transport at once, so a connection sees replies and events in the
order the simulator produced them, which is what one FreeSWITCH listener thread does.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
import uuid as uuidlib
from typing import TYPE_CHECKING

from switchctl.esl import serverwire
from switchctl.esl.errors import ProtocolError
from switchctl.sim.channel import SimChannel

if TYPE_CHECKING:
    from switchctl.sim.engine import FreeSwitchSim

# mod_event_socket myevents: the fixed event list (parse_command, `myevents`).
MYEVENTS = frozenset({
    "CHANNEL_ANSWER", "CHANNEL_APPLICATION", "CHANNEL_BRIDGE", "CHANNEL_CREATE", "CHANNEL_DATA",
    "CHANNEL_DESTROY", "CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE", "CHANNEL_HANGUP",
    "CHANNEL_HANGUP_COMPLETE", "CHANNEL_ORIGINATE", "CHANNEL_UUID", "CHANNEL_OUTGOING", "CHANNEL_PARK",
    "CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA", "CHANNEL_STATE", "CHANNEL_UNBRIDGE", "CHANNEL_UNPARK",
    "DETECTED_SPEECH", "DTMF", "NOTALK", "TALK",
})
# A listener's write buffer above this drops events, like FreeSWITCH's MAX_QUEUE_LEN event queue does.
MAX_BUFFERED_BYTES = 64 * 1024 * 1024
LOG_LEVELS = {"CONSOLE": 0, "ALERT": 1, "CRIT": 2, "ERR": 3, "WARNING": 4, "NOTICE": 5, "INFO": 6, "DEBUG": 7}


def _filter_matches(value: str, pattern: str) -> bool:
    """A filter value starting with '/' is a regex (switch_regex, `/re/` form), else case-insensitive equality."""
    if pattern.startswith("/"):
        body = pattern[1:]
        if "/" in body:
            body = body[: body.rindex("/")]
        try:
            return re.search(body, value) is not None
        except re.error:
            return False
    return value.lower() == pattern.lower()


class EslConnection:
    """State common to inbound and outbound listeners (listener_t)."""

    def __init__(self, sim: "FreeSwitchSim", reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sim = sim
        self.reader = reader
        self.writer = writer
        self.format = "plain"
        self.events_enabled = False
        self.all_events = False
        self.event_names: set[str] = set()
        self.custom_subclasses: set[str] = set()
        self.all_custom = False
        self.myevents = False
        self.filters: list[tuple[str, str]] = []
        self.session: SimChannel | None = None
        self.log_level: int | None = None
        self.closed = False
        self.bytes_written = 0
        self.events_written: list[str] = []
        self.commands: list[serverwire.ClientCommand] = []
        self.held_events: list[tuple[str | None, bytes]] | None = None  # while an `api` runs

    # --- output ------------------------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.closed or self.writer.is_closing():
            return
        self.writer.write(data)
        self.bytes_written += len(data)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if not self.writer.is_closing():
            self.writer.close()
        self.sim.listeners.discard(self)

    def reply(self, text: str, extra: tuple[tuple[str, str], ...] = ()) -> None:
        self.write(serverwire.command_reply(text, extra))

    # --- event delivery (mod_event_socket event_handler) -------------------------------------------------------
    def wants(self, name: str, subclass: str | None, lookup: dict[str, str]) -> bool:
        if self.closed or not self.events_enabled:
            return False
        if self.all_events:
            send = True
        elif name in self.event_names:
            send = name != "CUSTOM" or subclass is None or self.all_custom or subclass in self.custom_subclasses
        else:
            send = False
        if send and self.filters:
            send = False
            for header, pattern in self.filters:
                value = lookup.get(header.lower())
                if value is None:
                    continue
                positive = True
                compare = pattern
                while compare and compare[0] in "+- ":
                    if compare[0] == "+":
                        positive = True
                    elif compare[0] == "-":
                        positive = False
                    compare = compare[1:]
                if send and positive:
                    continue
                if not compare:
                    continue
                if _filter_matches(value, compare if not pattern.startswith("/") else pattern):
                    if positive:
                        send = True
                    else:
                        send = False
                        break
        if send and self.myevents:
            unique_id = lookup.get("unique-id")
            if unique_id is None or (self.session is not None and unique_id != self.session.uuid):
                send = False
            if self.session is not None and lookup.get("job-owner-uuid") == self.session.uuid:
                send = True
        return send

    def deliver(self, name: str, frame: bytes) -> None:
        if self.held_events is not None:
            self.held_events.append((name, frame))
            return
        if self.writer.transport.get_write_buffer_size() > MAX_BUFFERED_BYTES:
            self.sim.log("CRIT", f"Lost event {name}: listener queue full")
            return
        self.write(frame)
        self.events_written.append(name)

    def deliver_log(self, level: str, text: str) -> None:
        if self.log_level is None or LOG_LEVELS.get(level, 7) > self.log_level:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        line = f"{stamp}.{time.time_ns() // 1000 % 1_000_000:06d} 0.00% [{level}] switchctl_sim.c:1 {text}\n"
        uuid = self.session.uuid if self.session is not None else None
        frame = serverwire.log_data(line, level=LOG_LEVELS.get(level, 7), file="switchctl_sim.c",
                                    func="sim", line=1, user_data=uuid)
        if self.held_events is not None:
            self.held_events.append((None, frame))  # the listener thread is inside an api: later
        else:
            self.write(frame)

    # --- commands common to both modes -------------------------------------------------------------------------
    def command_event(self, args: str) -> None:
        """`event [plain|json|xml] <names...|ALL> [CUSTOM sub ...]`."""
        words = args.split()
        if words and words[0].lower() in ("plain", "json", "xml"):
            self.format = words.pop(0).lower()
        if not words:
            self.reply("-ERR no keywords supplied")
            return
        custom = False
        for word in words:
            if custom:
                self.custom_subclasses.add(word)
            elif word.upper() == "ALL":
                self.all_events = True
                self.all_custom = True
            elif word.upper() == "CUSTOM":
                custom = True
                self.event_names.add("CUSTOM")
            else:
                self.event_names.add(word.upper())
        self.events_enabled = True
        self.reply(f"+OK event listener enabled {self.format}")

    def command_nixevent(self, args: str) -> None:
        words = args.split()
        if not words:
            self.reply("-ERR no keywords supplied")
            return
        custom = False
        for word in words:
            if custom:
                self.custom_subclasses.discard(word)
            elif word.upper() == "CUSTOM":
                custom = True
            elif word.upper() == "ALL":
                self.all_events = False
                self.event_names.clear()
                self.all_custom = False
            else:
                self.event_names.discard(word.upper())
        self.reply("+OK events nixed")

    def command_noevents(self) -> None:
        if self.events_enabled:
            self.events_enabled = False
            self.all_events = False
            self.event_names.clear()
            self.custom_subclasses.clear()
            self.myevents = False
            self.reply("+OK no longer listening for events")
        else:
            self.reply("-ERR not listening for events")

    def command_filter(self, args: str) -> None:
        name, _, value = args.lstrip(" ").partition(" ")
        if name.lower() == "delete" and value:
            name, _, value = value.partition(" ")
            if name.lower() == "all":
                self.filters.clear()
            else:
                self.filters = [(h, v) for h, v in self.filters
                                if not (h.lower() == name.lower() and (not value or v == value))]
            self.reply(f"+OK filter deleted. [{name}][{value or '(null)'}]")
            return
        if not value:
            self.reply("-ERR invalid syntax")
            return
        if name.lower() == "add":
            name, _, value = value.partition(" ")
        self.filters.append((name, value))
        self.reply(f"+OK filter added. [{name}]=[{value}]")

    def command_log(self, args: str) -> None:
        level_text = args.strip() or "DEBUG"
        if level_text.isdigit():
            level = int(level_text)
        elif level_text.upper() in LOG_LEVELS:
            level = LOG_LEVELS[level_text.upper()]
        else:
            self.reply("-ERR invalid log level")
            return
        self.log_level = level
        self.reply(f"+OK log level {level_text} [{level}]")

    async def command_api(self, command: serverwire.ClientCommand) -> None:
        """api_exec runs in the connection's thread: no event is written to this connection until the
        response is (events are queued, then flushed after it)."""
        self.held_events = []
        try:
            body = await self.sim.api(command.args)
        finally:
            held, self.held_events = self.held_events, None
        self.write(serverwire.api_response(body))
        for name, frame in held or []:
            if name is None:
                self.write(frame)
            else:
                self.deliver(name, frame)
        self.after_api()

    def after_api(self) -> None:
        """What the listener thread does once it is free again (overridden by outbound listeners)."""

    def command_bgapi(self, command: serverwire.ClientCommand) -> None:
        job_uuid = command.header("Job-UUID") or str(uuidlib.uuid4())
        self.reply(f"+OK Job-UUID: {job_uuid}", (("Job-UUID", job_uuid),))
        owner = self.session.uuid if self.session is not None else None
        self.sim.spawn(self.sim.run_bgapi(command.args, job_uuid, owner_uuid=owner))

    async def command_sendmsg(self, command: serverwire.ClientCommand, *, inline: bool = False) -> None:
        """Queue the message for the channel (async), or with `inline` parse it in this connection's thread
        and reply only when it is done (outbound socket without `async`, switch_ivr_parse_event)."""
        target = command.args.strip() or command.header("session-id") or ""
        channel: SimChannel | None
        if target and (self.session is None or target != self.session.uuid):
            channel = self.sim.channels.get(target)
            if channel is None:
                self.reply(f"-ERR invalid session id [{target}]")
                return
        else:
            channel = self.session
            if channel is None:
                self.reply(f"-ERR invalid session id [{target or '(null)'}]")
                return
        if inline and channel is self.session and (command.header("async") or "").lower() != "true":
            await self.sim.run_sendmsg_inline(channel, command)
            self.reply("+OK")
            return
        self.reply("+OK")
        self.sim.apply_sendmsg(channel, command)

    async def read_commands(self, first_timeout: float | None = None) -> None:
        reader = serverwire.CommandReader()
        timeout = first_timeout
        while not self.closed:
            try:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
            except TimeoutError:
                await self.on_first_command_timeout()
                return
            except (ConnectionError, OSError):
                data = b""
            if not data:
                await self.on_eof()
                return
            try:
                commands = reader.feed(data)
            except ProtocolError as error:
                self.sim.log("ERR", f"ESL client sent a bad frame: {error}")
                self.close()
                return
            for command in commands:
                timeout = None
                self.commands.append(command)
                await self.handle(command)
                if self.closed:
                    return

    async def handle(self, command: serverwire.ClientCommand) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    async def on_first_command_timeout(self) -> None:
        self.close()

    async def on_eof(self) -> None:
        self.close()


class InboundConnection(EslConnection):
    """A client that connected to the simulator's ESL port (mod_event_socket inbound)."""

    def __init__(self, sim: "FreeSwitchSim", reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(sim, reader, writer)
        self.authed = False

    def peer_allowed(self) -> bool:
        peer = self.writer.get_extra_info("peername")
        if not peer:
            return False
        address = ipaddress.ip_address(peer[0])
        return any(address in ipaddress.ip_network(net, strict=False) for net in self.sim.config.acl)

    async def serve(self) -> None:
        if not self.peer_allowed():
            peer = self.writer.get_extra_info("peername")
            self.sim.log("WARNING", f"IP {peer[0] if peer else '?'} Rejected by acl \"switchctl_sim\"")
            self.write(serverwire.rude_rejection())
            self.write(serverwire.disconnect_notice())
            self.close()
            return
        self.write(serverwire.auth_request())
        # read_packet(listener, &event, 25) while not authenticated
        await self.read_commands(first_timeout=25.0)

    async def on_first_command_timeout(self) -> None:
        if not self.authed:
            self.write(serverwire.disconnect_notice())
        self.close()

    def goodbye(self) -> None:
        self.write(serverwire.disconnect_notice())
        self.close()

    async def handle(self, command: serverwire.ClientCommand) -> None:
        line, verb = command.line, command.verb.lower()
        if line.lower().startswith("exit") or line.startswith("..."):
            self.reply("+OK bye")
            self.goodbye()
            return
        if not self.authed:
            if line.startswith("auth "):
                if line[5:] == self.sim.config.password:
                    self.authed = True
                    self.reply("+OK accepted")
                else:
                    self.reply("-ERR invalid")
                    self.goodbye()
            elif line.startswith("userauth "):
                # The simulator has no directory users with esl-password: every userauth fails (s9 a5).
                self.reply("-ERR invalid")
                self.goodbye()
            else:
                self.reply("-ERR command not found")
            return
        if verb == "event":
            self.command_event(command.args)
        elif verb == "nixevent":
            self.command_nixevent(command.args)
        elif verb == "noevents":
            self.command_noevents()
        elif verb == "filter":
            self.command_filter(command.args)
        elif verb == "myevents":
            self.command_myevents(command.args)
        elif verb == "api":
            await self.command_api(command)
        elif verb == "bgapi":
            self.command_bgapi(command)
        elif verb == "sendmsg":
            await self.command_sendmsg(command)
        elif verb == "log":
            self.command_log(command.args)
        elif verb == "nolog":
            if self.log_level is not None:
                self.log_level = None
                self.reply("+OK no longer logging")
            else:
                self.reply("-ERR not loging")
        elif verb in ("linger", "nolinger"):
            self.reply("-ERR not controlling a session")
        elif verb == "divert_events":
            self.reply("-ERR not controlling a session.")
        else:
            self.reply("-ERR command not found")

    def command_myevents(self, args: str) -> None:
        """Inbound `myevents <uuid> [fmt]`: only that channel's events."""
        if self.myevents:
            self.reply("-ERR aready enabled.")
            return
        uuid, _, fmt = args.strip().partition(" ")
        channel = self.sim.channels.get(uuid)
        if channel is None and fmt:
            self.reply("-ERR invalid uuid")
            return
        self.session = channel
        if fmt.lower() in ("plain", "json", "xml"):
            self.format = fmt.lower()
        self.event_names |= MYEVENTS
        self.myevents = True
        self.events_enabled = True
        self.reply("+OK Events Enabled")


class OutboundConnection(EslConnection):
    """The simulator connecting to a controller for one channel (`socket host:port [async] [full]`)."""

    def __init__(self, sim: "FreeSwitchSim", channel: SimChannel, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, *, async_mode: bool, full: bool) -> None:
        super().__init__(sim, reader, writer)
        self.session = channel
        self.async_mode = async_mode
        self.full = full
        self.connected = asyncio.Event()
        self.finished = asyncio.Event()
        self.linger = False
        self.linger_time = -1
        self.resume = False
        self.down_handled = False
        self.down_pending = False
        self._linger_task: asyncio.Task[None] | None = None
        self.park_gate = asyncio.Event()

    async def serve(self) -> None:
        try:
            await self.read_commands(first_timeout=self.sim.config.outbound_first_command_timeout)
        finally:
            self.finish()

    def finish(self) -> None:
        if self.finished.is_set():
            return
        if not self.closed:
            # listener_run `done:` send_disconnect(listener, "Disconnected, goodbye...") then close
            self.write(serverwire.disconnect_notice(controlled_uuid=self.session.uuid if self.session else None))
            self.close()
        if self._linger_task is not None:
            self._linger_task.cancel()
        self.finished.set()
        if self.session is not None:
            self.session.wake()

    async def on_first_command_timeout(self) -> None:
        # read_packet(listener, &ievent, 25) failed: "Socket Error!", listener ends; the park never starts
        assert self.session is not None
        self.sim.log("CRIT", "Socket Error!", channel=self.session)
        self.finish()

    async def on_eof(self) -> None:
        self.close()
        self.finish()

    def channel_down(self) -> None:
        """The channel went down (LFLAG_HANDLE_DISCO): linger notice, or close when not lingering."""
        if self.down_handled or self.finished.is_set():
            return
        if self.held_events is not None:
            # The listener thread is inside an `api`: it notices the hangup only after the api response
            # (s5 h2: api/response, CHANNEL_HANGUP, then the linger notice).
            self.down_pending = True
            return
        self.down_handled = True
        assert self.session is not None
        if not self.linger:
            self.finish()
            return
        self.write(serverwire.disconnect_notice(controlled_uuid=self.session.uuid, disposition="linger",
                                                channel_name=self.session.data.name,
                                                linger_time=self.linger_time))
        if self.linger_time != -1:
            # `linger_timeout += epoch now`, closed when `now > linger_timeout` in whole seconds (s5 h3c: 2.5 s)
            deadline = int(time.time()) + self.linger_time

            async def close_later() -> None:
                while int(time.time()) <= deadline:
                    await asyncio.sleep(min(0.25, max(0.01, deadline + 1 - time.time())))
                self.finish()

            self._linger_task = asyncio.get_running_loop().create_task(close_later())

    def after_api(self) -> None:
        if self.down_pending:
            self.down_pending = False
            self.channel_down()

    async def handle(self, command: serverwire.ClientCommand) -> None:
        channel = self.session
        assert channel is not None
        line, verb = command.line, command.verb.lower()
        if line.lower().startswith("exit") or line.startswith("..."):
            self.reply("+OK bye")
            self.finish()
            return
        after_connect = self.connected.is_set()
        if verb == "connect":
            self.connected.set()
            self.write(serverwire.connect_reply(self.sim.connect_headers(channel, self)))
        elif verb == "resume":
            self.resume = True
            channel.set_var("socket_resume", "true")
            self.reply("+OK")
        elif verb == "getvar":
            self.reply(channel.vars.get(command.args.strip(), "") if command.args.strip() else "")
        elif verb == "myevents":
            if self.myevents:
                self.reply("-ERR aready enabled.")
            else:
                lowered = line.lower()
                if "xml" in lowered:
                    self.format = "xml"
                if "json" in lowered:
                    self.format = "json"
                if "plain" in lowered:
                    self.format = "plain"
                self.event_names |= MYEVENTS
                self.myevents = True
                self.events_enabled = True
                self.reply("+OK Events Enabled")
        elif verb == "filter":
            self.command_filter(command.args)
        elif verb == "divert_events":
            value = command.args.strip()
            if not value:
                self.reply("-ERR missing value.")
            else:
                self.reply("+OK events diverted" if value.lower() == "on" else "+OK events not diverted")
        elif verb == "sendmsg":
            await self.command_sendmsg(command, inline=not self.async_mode)
        elif not self.full:
            # Without `full` everything after sendmsg in parse_command is refused (MES:2236).
            self.reply("-ERR command not found")
        elif verb == "event":
            self.command_event(command.args)
        elif verb == "nixevent":
            self.command_nixevent(command.args)
        elif verb == "noevents":
            self.command_noevents()
        elif verb == "api":
            await self.command_api(command)
        elif verb == "bgapi":
            self.command_bgapi(command)
        elif verb == "log":
            self.command_log(command.args)
        elif verb == "nolog":
            if self.log_level is not None:
                self.log_level = None
                self.reply("+OK no longer logging")
            else:
                self.reply("-ERR not loging")
        elif verb == "linger":
            rest = line[6:]
            self.linger = True
            if rest.startswith(" ") and rest[1:]:
                self.linger_time = int(re.match(r"\s*-?\d*", rest[1:]).group(0).strip() or 0)
                self.reply(f"+OK will linger {self.linger_time} seconds")
            else:
                self.linger_time = -1
                self.reply("+OK will linger")
        elif verb == "nolinger":
            self.linger = False
            self.reply("+OK will not linger")
        else:
            self.reply("-ERR command not found")
        if verb == "connect" and not self.sim.config.park_after_first_command:
            self.open_park_gate()
        elif after_connect and self.sim.config.park_after_first_command:
            self.open_park_gate()

    def open_park_gate(self) -> None:
        """The socket app parks the channel (CHANNEL_PARK) once `connect` is answered; whether the client's
        subscription beats it is a race in FreeSWITCH (12 of 67 captured calls saw the PARK). The simulator
        decides it: by default the park comes right after the connect reply (not seen by `myevents`);
        with `park_after_first_command` right after the first command that follows `connect`."""
        if self.park_gate.is_set() or self.session is None or self.session.hungup:
            return
        self.park_gate.set()
        if self.async_mode:  # only async mode parks the channel (socket_function)
            self.session.fire("CHANNEL_PARK")
        self.session.wake()

