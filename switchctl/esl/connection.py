"""One ESL connection over asyncio streams: a reader task that never pauses, a FIFO of replies.

FreeSWITCH answers commands strictly in order (events may come in between), so each sent command
appends a future to a FIFO and the reader resolves the oldest one with each command/reply or
api/response. The reader never awaits a handler: FreeSWITCH drops events (and finally kills the
listener) when a client stops reading, so handlers must be quick and hand slow work to a task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .codec import (
    ApiResponse,
    CommandReply,
    DisconnectNotice,
    Event,
    FrameParser,
    LogData,
    Message,
    UnknownMessage,
    decode,
    encode_command,
)
from .errors import ConnectionLost, ESLError, ProtocolError, ReplyTimeout

log = logging.getLogger("switchctl.esl")

EventHandler = Callable[[Event], None]
MessageHandler = Callable[[Message], None]
Reply = CommandReply | ApiResponse

READ_CHUNK = 256 * 1024
DEFAULT_REPLY_TIMEOUT = 10.0


# Reaction-latency sampling for bench/flow_cps.py: when set to a list, every command written right
# after an event was received appends (write time - event time) in seconds. Off (None) in production.
REACTION_SAMPLES: list[float] | None = None

# Commands are small; wait for the socket to drain only past this many buffered bytes.
DRAIN_ABOVE = 64 * 1024


@dataclass(slots=True)
class _Pending:
    command: str
    future: asyncio.Future[Reply]


class ESLConnection:
    """Wraps a connected (StreamReader, StreamWriter); call `start()` once, then `send()`.

    - `add_event_handler(cb)`: called synchronously, in order, for every Event.
    - `add_message_handler(cb)`: called for every other non-reply message (auth/request,
      disconnect-notice, rude-rejection, log/data, unknown content types).
    - `closed`: a future resolved (with the reason, an ESLError) when the connection ends.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        name: str = "esl",
        reply_timeout: float = DEFAULT_REPLY_TIMEOUT,
    ) -> None:
        self.name = name
        self.reply_timeout = reply_timeout
        self.bytes_received = 0
        self.bytes_sent = 0
        self.events_received = 0
        self._reader = reader
        self._writer = writer
        self._parser = FrameParser()
        self._pending: deque[_Pending] = deque()
        self._event_handlers: list[EventHandler] = []
        self._message_handlers: list[MessageHandler] = []
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._last_event_at = 0.0
        loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[ESLError] = loop.create_future()

    # -- wiring -----------------------------------------------------------------------------

    def add_event_handler(self, handler: EventHandler) -> None:
        self._event_handlers.append(handler)

    def add_message_handler(self, handler: MessageHandler) -> None:
        self._message_handlers.append(handler)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._read_loop(), name=f"esl-reader-{self.name}")

    @property
    def is_closed(self) -> bool:
        return self.closed.done()

    @property
    def peer(self) -> str:
        peer = self._writer.get_extra_info("peername")
        return f"{peer[0]}:{peer[1]}" if peer else "?"

    # -- sending ----------------------------------------------------------------------------

    async def send(
        self,
        line: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | str | None = None,
        *,
        timeout: float | None = None,
    ) -> Reply:
        """Send one command and await its reply (CommandReply or ApiResponse)."""
        return await self.send_encoded(encode_command(line, headers, body), line, timeout=timeout)

    async def send_encoded(self, data: bytes, description: str, *, timeout: float | None = None) -> Reply:
        """Send pre-encoded command bytes; `description` names the command in errors and logs."""
        future = self.submit(data, description, timeout=timeout)
        await self.drain()
        return await future

    def submit(self, data: bytes, description: str, *, timeout: float | None = None) -> asyncio.Future[Reply]:
        """Write a command now and return the future of its reply, which fails with ReplyTimeout
        after `timeout` (default: the connection's reply_timeout). Lets a caller chain the reply
        with what follows it (an execute's completion) without waking up in between."""
        if self.closed.done():
            raise ConnectionLost(f"{self.name}: connection already closed", pending=description)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        # Appending and writing happen in the same step, so the FIFO order is the wire order.
        self._pending.append(_Pending(description, future))
        self._writer.write(data)
        self.bytes_sent += len(data)
        if REACTION_SAMPLES is not None and self._last_event_at:
            REACTION_SAMPLES.append(time.perf_counter() - self._last_event_at)
            self._last_event_at = 0.0
        if log.isEnabledFor(logging.DEBUG):
            log.debug("esl send", extra={"esl_conn": self.name, "esl_command": description[:200]})
        limit = self.reply_timeout if timeout is None else timeout
        # A timer instead of wait_for(shield(...)): the future keeps its slot in the FIFO when it
        # times out, so a late reply is consumed there instead of being paired with the next command.
        timer = loop.call_later(limit, self._reply_timed_out, future, description, limit)
        future.add_done_callback(lambda _f: timer.cancel())
        return future

    async def drain(self) -> None:
        """Wait for the socket's write buffer only when it is backed up (the common case is free)."""
        transport = self._writer.transport
        if transport is not None and transport.get_write_buffer_size() > DRAIN_ABOVE:
            try:
                await self._writer.drain()
            except (ConnectionError, OSError) as exc:
                self._shutdown(ConnectionLost(f"{self.name}: write failed: {exc}"))

    def _reply_timed_out(self, future: asyncio.Future[Reply], description: str, limit: float) -> None:
        if not future.done():
            future.set_exception(
                ReplyTimeout(f"{self.name}: no reply to '{description[:80]}' within {limit:g} s")
            )

    # -- closing ----------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the socket; pending replies fail with ConnectionLost. Idempotent."""
        self._closing = True
        self._shutdown(ConnectionLost(f"{self.name}: closed locally"))
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        try:
            await self._writer.wait_closed()
        except (ConnectionError, OSError):
            pass

    def abort(self) -> None:
        """Drop the connection at once (no waiting); pending replies fail with ConnectionLost."""
        self._closing = True
        self._shutdown(ConnectionLost(f"{self.name}: aborted locally"))
        if self._task is not None:
            self._task.cancel()
        transport = self._writer.transport
        if transport is not None:
            transport.abort()

    async def wait_closed(self, timeout: float) -> bool:
        """Wait until the peer closes (True) or the timeout passes (False)."""
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def _shutdown(self, reason: ESLError) -> None:
        if not self.closed.done():
            self.closed.set_result(reason)
        while self._pending:
            pending = self._pending.popleft()
            if not pending.future.done():
                if isinstance(reason, ConnectionLost):
                    err: ESLError = ConnectionLost(
                        reason.reason, truncated=reason.truncated, pending=pending.command
                    )
                else:
                    err = type(reason)(f"{reason} (while waiting for the reply to '{pending.command[:80]}')")
                pending.future.set_exception(err)
                # A caller that timed out is gone; mark the exception retrieved.
                pending.future.exception()
        if not self._writer.is_closing():
            self._writer.close()

    # -- reading ----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        reason: ESLError
        try:
            while True:
                data = await self._reader.read(READ_CHUNK)
                if not data:
                    try:
                        self._parser.feed_eof()
                        reason = ConnectionLost(f"{self.name}: peer closed the connection")
                    except ConnectionLost as exc:
                        reason = ConnectionLost(f"{self.name}: {exc.reason}", truncated=True)
                    break
                self.bytes_received += len(data)
                for frame in self._parser.feed(data):
                    self._dispatch(decode(frame))
        except ProtocolError as exc:
            log.error("esl protocol error", extra={"esl_conn": self.name, "error": str(exc)})
            reason = exc
        except (ConnectionError, OSError) as exc:
            reason = ConnectionLost(f"{self.name}: {exc.__class__.__name__}: {exc}")
        except asyncio.CancelledError:
            self._shutdown(ConnectionLost(f"{self.name}: closed locally"))
            raise
        # A peer closing at the end of a call is the normal end of an outbound session.
        quiet = self._closing or (isinstance(reason, ConnectionLost) and not reason.truncated)
        level = logging.DEBUG if quiet else logging.INFO
        log.log(level, "esl connection ended", extra={"esl_conn": self.name, "reason": str(reason)})
        self._shutdown(reason)

    def _dispatch(self, message: Message) -> None:
        if isinstance(message, Event):
            self.events_received += 1
            if REACTION_SAMPLES is not None:
                self._last_event_at = time.perf_counter()
            for handler in self._event_handlers:
                try:
                    handler(message)
                except Exception:
                    log.exception(
                        "esl event handler failed",
                        extra={"esl_conn": self.name, "event_name": message.name},
                    )
            return
        if isinstance(message, (CommandReply, ApiResponse)):
            if not self._pending:
                log.warning("esl reply without a pending command", extra={"esl_conn": self.name})
                return
            pending = self._pending.popleft()
            if not pending.future.done():
                pending.future.set_result(message)
            return
        if isinstance(message, UnknownMessage):
            log.warning(
                "esl message with unknown Content-Type ignored",
                extra={"esl_conn": self.name, "content_type": message.frame.content_type},
            )
        elif isinstance(message, LogData):
            log.debug("esl log/data", extra={"esl_conn": self.name, "text": message.text[:200]})
        for mhandler in self._message_handlers:
            try:
                mhandler(message)
            except Exception:
                log.exception("esl message handler failed", extra={"esl_conn": self.name})
        if isinstance(message, DisconnectNotice) and not message.is_linger:
            # The switch is closing this socket: nothing pending will be answered.
            self._shutdown(ConnectionLost(f"{self.name}: switch sent disconnect-notice"))
