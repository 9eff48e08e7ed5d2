"""Outbound ESL: FreeSWITCH's `socket host:port async full` connects to us, one session per call."""

from __future__ import annotations

import asyncio
import logging
import uuid as uuidlib
from collections.abc import Awaitable, Callable, Sequence

from .codec import (
    ApiResponse,
    CommandReply,
    DisconnectNotice,
    Event,
    Message,
    encode_execute,
    encode_hangup,
)
from .connection import ESLConnection, EventHandler
from .errors import ChannelHungUp, CommandError, ConnectionLost, ESLError, ReplyTimeout
from .inbound import check_api_body

log = logging.getLogger("switchctl.esl")

UNKNOWN_CAUSE = "UNKNOWN"  # the session ended and no event named the hangup cause
# After the hangup, how long close() waits for the last events (socket EXECUTE_COMPLETE /
# CHANNEL_HANGUP_COMPLETE) before sending `exit`.
FINAL_EVENTS_GRACE = 2.0


class OutboundSession:
    """One call handed to us by FreeSWITCH. Commands are sequential; events arrive in order."""

    def __init__(self, conn: ESLConnection) -> None:
        self.conn = conn
        self.uuid: str | None = None
        self.channel_data: Event | None = None
        self.hangup_cause: str | None = None
        self._hungup = False
        self._handlers: list[EventHandler] = []
        self._executes: dict[str, asyncio.Future[Event]] = {}
        self._jobs: dict[str, asyncio.Future[str]] = {}
        loop = asyncio.get_running_loop()
        self._hangup: asyncio.Future[str] = loop.create_future()
        self._final_events: asyncio.Future[None] = loop.create_future()
        self._exited = False
        conn.add_event_handler(self._on_event)
        conn.add_message_handler(self._on_message)
        conn.closed.add_done_callback(lambda _f: self._on_closed())

    # -- state ------------------------------------------------------------------------------

    @property
    def hungup(self) -> bool:
        return self._hungup

    @property
    def bytes_received(self) -> int:
        return self.conn.bytes_received

    @property
    def bytes_sent(self) -> int:
        return self.conn.bytes_sent

    def add_event_handler(self, handler: EventHandler) -> None:
        """`handler(event)` for every event of the channel (DTMF ...), in order, synchronously."""
        self._handlers.append(handler)

    async def wait_hangup(self) -> str:
        """The hangup cause, once known (see module notes)."""
        return await asyncio.shield(self._hangup)

    # -- commands ---------------------------------------------------------------------------

    async def _command(self, line: str, headers: dict[str, str] | None = None) -> CommandReply:
        reply = await self.conn.send(line, headers)
        if not isinstance(reply, CommandReply) or not reply.ok:
            raise CommandError(getattr(reply, "reply_text", repr(reply)), line)
        return reply

    async def connect(self) -> Event:
        """`connect`: returns the channel data (all channel variables) as an Event."""
        reply = await self._command("connect")
        headers = dict(reply.headers)
        self.channel_data = Event(headers, None, "plain")
        self.uuid = headers.get("Unique-ID") or headers.get("Channel-Unique-ID")
        if not self.uuid:
            raise CommandError("connect reply has no Unique-ID", "connect")
        return self.channel_data

    async def subscribe(
        self,
        events: Sequence[str] = ("CHANNEL_EXECUTE_COMPLETE", "DTMF", "CHANNEL_HANGUP"),
        fmt: str = "plain",
    ) -> None:
        """`filter Unique-ID <uuid>` + `event <fmt> <names>` (captures s1 v8).

        The filter goes first: `event ...` without a filter subscribes this socket to every
        channel on the switch (s1 v11), so under load other calls' events would pour in between
        the two commands. Filters are per listener and independent of the subscription."""
        await self._command(f"filter Unique-ID {self._require_uuid()}")
        await self._command(f"event {fmt} {' '.join(events)}")

    async def myevents(self, fmt: str = "plain") -> None:
        await self._command(f"myevents {fmt}")

    async def linger(self, seconds: int | None = None) -> None:
        await self._command("linger" if seconds is None else f"linger {int(seconds)}")

    async def execute(
        self, app: str, arg: str = "", *, timeout: float | None = None, event_lock: bool = False
    ) -> Event:
        """Run a dialplan application; returns its CHANNEL_EXECUTE_COMPLETE (matched by
        Application-UUID). ChannelHungUp if the channel is already gone, or if the session ends
        without the completion. A completion that FreeSWITCH still sends after a hangup is returned.
        """
        if self._hungup:
            raise ChannelHungUp(self.hangup_cause or UNKNOWN_CAUSE)
        event_uuid = str(uuidlib.uuid4())
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._executes[event_uuid] = future
        description = f"sendmsg execute {app}"

        def on_reply(reply_future: asyncio.Future) -> None:
            # The +OK only means "queued"; a refusal or a lost reply fails the completion at once.
            if future.done() or reply_future.cancelled():
                return
            exc = reply_future.exception()
            if exc is not None:
                future.set_exception(exc)
                return
            reply = reply_future.result()
            if not isinstance(reply, CommandReply) or not reply.ok:
                future.set_exception(CommandError(getattr(reply, "reply_text", repr(reply)), f"execute {app}"))

        try:
            data = encode_execute(app, arg, event_uuid=event_uuid, uuid=self.uuid, event_lock=event_lock)
            self.conn.submit(data, description).add_done_callback(on_reply)
            await self.conn.drain()
            if timeout is None:
                return await future
            try:
                return await asyncio.wait_for(asyncio.shield(future), timeout)
            except asyncio.TimeoutError:
                raise ReplyTimeout(f"{app} did not complete within {timeout:g} s") from None
        finally:
            self._executes.pop(event_uuid, None)

    async def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        reply = await self.conn.send_encoded(encode_hangup(cause, self.uuid), f"sendmsg hangup {cause}")
        if not isinstance(reply, CommandReply) or not reply.ok:
            raise CommandError(getattr(reply, "reply_text", repr(reply)), "hangup")

    async def api(self, cmd: str, *, check: bool = True) -> str:
        reply = await self.conn.send(f"api {cmd}")
        if not isinstance(reply, ApiResponse):
            raise CommandError(getattr(reply, "reply_text", repr(reply)), f"api {cmd}")
        return check_api_body(reply.body, f"api {cmd}") if check else reply.body

    async def bgapi(self, cmd: str, timeout: float = 30.0, *, check: bool = True) -> str:
        """bgapi over this socket: subscribes BACKGROUND_JOB and lets this job's uuid through the
        Unique-ID filter for the duration of the job."""
        job_uuid = str(uuidlib.uuid4())
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._jobs[job_uuid] = future
        try:
            await self._command("event plain BACKGROUND_JOB")
            await self._command(f"filter Job-UUID {job_uuid}")
            await self._command(f"bgapi {cmd}", {"Job-UUID": job_uuid})
            try:
                body = await asyncio.wait_for(asyncio.shield(future), timeout)
            except asyncio.TimeoutError:
                raise ReplyTimeout(f"no BACKGROUND_JOB for 'bgapi {cmd[:80]}' within {timeout:g} s") from None
            await self._command(f"filter delete Job-UUID {job_uuid}")
        finally:
            self._jobs.pop(job_uuid, None)
        return check_api_body(body, f"bgapi {cmd}") if check else body

    async def getvar(self, name: str) -> str | None:
        """A channel variable via `api uuid_getvar`; None when unset (`_undef_`)."""
        body = await self.api(f"uuid_getvar {self._require_uuid()} {name}", check=False)
        if body.startswith("-ERR"):
            raise CommandError(body, f"uuid_getvar {name}")
        return None if body == "_undef_" else body

    async def exit(self, wait: float = 2.0) -> None:
        """`exit`, then wait (bounded) for FreeSWITCH to close the socket, then close ours."""
        if not self.conn.is_closed and not self._exited:
            self._exited = True
            try:
                await self.conn.send("exit", timeout=wait)
            except ESLError:
                pass
            await self.conn.wait_closed(wait)
        await self.conn.close()

    async def close(self, grace: float = FINAL_EVENTS_GRACE) -> None:
        """End the session: after a hangup, wait (bounded) for the final events, then `exit`."""
        if self._hungup and not self.conn.is_closed:
            try:
                await asyncio.wait_for(asyncio.shield(self._final_events), grace)
            except asyncio.TimeoutError:
                pass
        await self.exit()

    def _require_uuid(self) -> str:
        if not self.uuid:
            raise ESLError("send `connect` first: the session has no channel uuid yet")
        return self.uuid

    # -- incoming ---------------------------------------------------------------------------

    def _mark_hangup(self, cause: str | None) -> None:
        self._hungup = True
        if cause and self.hangup_cause is None:
            self.hangup_cause = cause
        if cause and not self._hangup.done():
            self._hangup.set_result(cause)

    def _on_event(self, event: Event) -> None:
        name = event.name
        if name == "BACKGROUND_JOB":
            future = self._jobs.get(event.get("Job-UUID") or "")
            if future is not None and not future.done():
                future.set_result(event.body or "")
            return
        if self.uuid and event.unique_id not in (None, self.uuid):
            return  # another channel (an `event` subscription without our filter)
        if name == "CHANNEL_EXECUTE_COMPLETE":
            app_uuid = event.get("Application-UUID") or ""
            future = self._executes.get(app_uuid)
            if future is not None and not future.done():
                future.set_result(event)
            if event.get("Answer-State") == "hangup":
                # An app cut by the hangup completes with the cause (captures s3, s5): with a
                # subscription of EXECUTE_COMPLETE alone this is the first word of the hangup.
                self._mark_hangup(event.get("Hangup-Cause"))
            if event.get("Application") == "socket":
                # The socket app ends after the hangup; its completion carries the cause and comes
                # after every other application's completion.
                self._mark_hangup(event.get("Hangup-Cause"))
                self._apps_over()
        elif name in ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE"):
            self._mark_hangup(event.get("Hangup-Cause"))
            if name == "CHANNEL_HANGUP_COMPLETE":
                self._apps_over()
        for handler in self._handlers:
            try:
                handler(event)
            except Exception:
                log.exception("outbound event handler failed",
                              extra={"call_uuid": self.uuid, "event_name": name})

    def _apps_over(self) -> None:
        """No application completion can follow (the socket app's own completion, or
        CHANNEL_HANGUP_COMPLETE, come after every other app's): pending executes never ran."""
        if not self._final_events.done():
            self._final_events.set_result(None)
        cause = self.hangup_cause or UNKNOWN_CAUSE
        for future in self._executes.values():
            if not future.done():
                future.set_exception(ChannelHungUp(cause))

    def _on_message(self, message: Message) -> None:
        if isinstance(message, DisconnectNotice):
            # linger notice: the channel hung up, events keep coming (not always last).
            self._hungup = True
            if not message.is_linger:
                self._end(UNKNOWN_CAUSE)

    def _on_closed(self) -> None:
        self._end(UNKNOWN_CAUSE)

    def _end(self, fallback_cause: str) -> None:
        """The session is over: whatever is still awaited will never come."""
        self._hungup = True
        cause = self.hangup_cause or fallback_cause
        if not self._hangup.done():
            self._hangup.set_result(cause)
        if not self._final_events.done():
            self._final_events.set_result(None)
        for future in self._executes.values():
            if not future.done():
                future.set_exception(ChannelHungUp(cause))
        for future in self._jobs.values():
            if not future.done():
                future.set_exception(ConnectionLost("outbound session ended", pending="bgapi"))


SessionHandler = Callable[[OutboundSession], Awaitable[None]]


class OutboundServer:
    """Accepts FreeSWITCH's outbound-socket connections; runs `handler(session)` per call."""

    def __init__(
        self,
        handler: SessionHandler,
        host: str = "127.0.0.1",
        port: int = 8084,
        *,
        reply_timeout: float = 10.0,
    ) -> None:
        self.handler = handler
        self.host = host
        self._port = port
        self.reply_timeout = reply_timeout
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.sessions_served = 0
        self.sessions_failed = 0

    @property
    def port(self) -> int:
        if self._server is not None and self._server.sockets:
            return self._server.sockets[0].getsockname()[1]
        return self._port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_client, self.host, self._port)
        log.info("outbound ESL server listening", extra={"host": self.host, "port": self.port})

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = ESLConnection(reader, writer, name="outbound", reply_timeout=self.reply_timeout)
        conn.start()
        session = OutboundSession(conn)
        try:
            await self._run_handler(session)
        except asyncio.CancelledError:
            # close() cancels running sessions; this task is ours (asyncio's server callback), so it
            # ends normally after the session is closed instead of propagating the cancellation.
            log.debug("outbound session cancelled", extra={"call_uuid": session.uuid})
        finally:
            try:
                await self._close_session(session)
            except asyncio.CancelledError:
                conn.abort()
            self._tasks.discard(task)

    async def _run_handler(self, session: OutboundSession) -> None:
        try:
            await self.handler(session)
            self.sessions_served += 1
        except ChannelHungUp as exc:
            self.sessions_served += 1
            log.debug("outbound handler ended by hangup", extra={"call_uuid": session.uuid, "cause": exc.cause})
        except Exception:
            self.sessions_failed += 1
            log.exception("outbound handler failed", extra={"call_uuid": session.uuid})

    async def _close_session(self, session: OutboundSession) -> None:
        try:
            await session.close()
        except Exception:
            log.exception("closing outbound session failed", extra={"call_uuid": session.uuid})
            await session.conn.close()

    async def close(self, grace: float = 0.0) -> None:
        """Stop accepting; give running calls up to `grace` seconds to finish, then cancel what is
        left (each session still gets `exit` and a close)."""
        if self._server is not None:
            self._server.close()
        if grace > 0 and self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        tasks = list(self._tasks)
        if tasks:
            log.info("outbound server closing with live calls", extra={"calls": len(tasks)})
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
