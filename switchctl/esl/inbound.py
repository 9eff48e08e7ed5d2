"""Inbound ESL client: we connect to FreeSWITCH (port 8021), authenticate, subscribe, stay up."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid as uuidlib
from collections.abc import Sequence

from .codec import ApiResponse, AuthRequest, CommandReply, Event, Message, RudeRejection, encode_command
from .connection import ESLConnection, EventHandler
from .errors import AccessDenied, AuthError, CommandError, ConnectionLost, ESLError, ReplyTimeout

log = logging.getLogger("switchctl.esl")

BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
DOWN_LOG_INTERVAL = 60.0


def check_api_body(body: str, command: str) -> str:
    """Raise CommandError for an api/bgapi result that reports a failure."""
    if body.startswith("-ERR") or body.startswith("-USAGE"):
        raise CommandError(body, command)
    return body


class InboundClient:
    def __init__(
        self,
        host: str,
        port: int,
        password: str,
        *,
        user: str | None = None,
        events: Sequence[str] = ("BACKGROUND_JOB", "CHANNEL_HANGUP_COMPLETE"),
        event_format: str = "json",
        filters: Sequence[tuple[str, str]] = (),
        reply_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        name: str = "fs1",
    ) -> None:
        if event_format not in ("plain", "json", "xml"):
            raise ValueError(f"event_format must be plain, json or xml, not {event_format!r}")
        self.host = host
        self.port = port
        self.user = user
        self.events = tuple(events)
        self.event_format = event_format
        self.filters = tuple(filters)
        self.reply_timeout = reply_timeout
        self.connect_timeout = connect_timeout
        self.name = name
        self._password = password
        self._conn: ESLConnection | None = None
        self._handlers: list[EventHandler] = []
        self._jobs: dict[str, asyncio.Future[str]] = {}
        self.connects = 0

    # -- state ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed

    @property
    def connection(self) -> ESLConnection | None:
        return self._conn

    def add_event_handler(self, handler: EventHandler) -> None:
        """`handler(event)` runs synchronously in the reader, in order; hand slow work to a task."""
        self._handlers.append(handler)

    # -- connecting -------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect, authenticate and subscribe. AuthError / AccessDenied / ConnectionLost."""
        if self.connected:
            return
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.connect_timeout
            )
        except (OSError, asyncio.TimeoutError) as exc:
            raise ConnectionLost(f"{self.name}: cannot connect to {self.host}:{self.port}: {exc!r}") from None
        conn = ESLConnection(reader, writer, name=self.name, reply_timeout=self.reply_timeout)
        greeting: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

        def on_message(message: Message) -> None:
            if not greeting.done() and isinstance(message, (AuthRequest, RudeRejection)):
                greeting.set_result(message)

        conn.add_message_handler(on_message)
        conn.add_event_handler(self._on_event)
        conn.start()
        try:
            await self._handshake(conn, greeting)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        self.connects += 1
        conn.closed.add_done_callback(lambda _f, c=conn: self._on_closed(c))

    async def _handshake(self, conn: ESLConnection, greeting: asyncio.Future[Message]) -> None:
        await asyncio.wait(
            {greeting, conn.closed}, timeout=self.connect_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if not greeting.done():
            greeting.cancel()
            if conn.closed.done():
                raise ConnectionLost(f"{self.name}: closed before auth/request ({conn.closed.result()})")
            raise ReplyTimeout(f"{self.name}: no auth/request within {self.connect_timeout:g} s")
        if isinstance(greeting.result(), RudeRejection):
            raise AccessDenied(f"{self.name}: {self.host}:{self.port} refused us: "
                               f"{greeting.result().text.strip()}")  # type: ignore[union-attr]
        if self.user:
            line, shown = f"userauth {self.user}:{self._password}", f"userauth {self.user}:***"
        else:
            line, shown = f"auth {self._password}", "auth ***"
        reply = await conn.send_encoded(encode_command(line), shown)
        if not isinstance(reply, CommandReply) or not reply.ok:
            raise AuthError(getattr(reply, "reply_text", str(reply)), shown)
        if self.events:
            await self._command(conn, f"event {self.event_format} {' '.join(self.events)}")
        for header, value in self.filters:
            await self._command(conn, f"filter {header} {value}")

    async def _command(self, conn: ESLConnection, line: str) -> CommandReply:
        reply = await conn.send(line)
        if not isinstance(reply, CommandReply) or not reply.ok:
            raise CommandError(getattr(reply, "reply_text", repr(reply)), line)
        return reply

    def _on_closed(self, conn: ESLConnection) -> None:
        if self._conn is conn:
            self._conn = None
        reason = conn.closed.result()
        for job_uuid, future in list(self._jobs.items()):
            if not future.done():
                future.set_exception(ConnectionLost(f"{reason}", pending=f"bgapi job {job_uuid}"))
        self._jobs.clear()

    def _on_event(self, event: Event) -> None:
        if event.name == "BACKGROUND_JOB":
            future = self._jobs.pop(event.get("Job-UUID") or "", None)
            if future is not None and not future.done():
                future.set_result(event.body or "")
        for handler in self._handlers:
            try:
                handler(event)
            except Exception:
                log.exception("inbound event handler failed", extra={"esl_conn": self.name,
                                                                    "event_name": event.name})

    # -- commands ---------------------------------------------------------------------------

    def _require(self) -> ESLConnection:
        if self._conn is None or self._conn.is_closed:
            raise ConnectionLost(f"{self.name}: not connected")
        return self._conn

    async def send(self, line: str, headers: dict[str, str] | None = None,
                   body: bytes | str | None = None) -> CommandReply:
        """Any non-api command; raises CommandError on `-ERR`."""
        conn = self._require()
        reply = await conn.send(line, headers, body)
        if not isinstance(reply, CommandReply) or not reply.ok:
            raise CommandError(getattr(reply, "reply_text", repr(reply)), line)
        return reply

    async def api(self, cmd: str, *, check: bool = True, timeout: float | None = None) -> str:
        """`api <cmd>` -> body. Blocks this connection's events while it runs: prefer bgapi."""
        reply = await self._require().send(f"api {cmd}", timeout=timeout)
        if not isinstance(reply, ApiResponse):
            raise CommandError(getattr(reply, "reply_text", repr(reply)), f"api {cmd}")
        return check_api_body(reply.body, f"api {cmd}") if check else reply.body

    async def bgapi(self, cmd: str, timeout: float = 30.0, *, check: bool = True) -> str:
        """`bgapi <cmd>` with our own Job-UUID; returns the BACKGROUND_JOB body.

        With check=True a body starting with -ERR / -USAGE raises CommandError (e.g. originate's
        `-ERR USER_BUSY`); check=False returns it as is.
        """
        if "BACKGROUND_JOB" not in self.events and "ALL" not in self.events:
            raise ESLError(f"{self.name}: bgapi needs BACKGROUND_JOB (or ALL) in `events`")
        conn = self._require()
        job_uuid = str(uuidlib.uuid4())
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._jobs[job_uuid] = future  # registered before sending: the event may beat the reply
        try:
            reply = await conn.send(f"bgapi {cmd}", {"Job-UUID": job_uuid})
            if not isinstance(reply, CommandReply) or not reply.ok:
                raise CommandError(getattr(reply, "reply_text", repr(reply)), f"bgapi {cmd}")
            try:
                body = await asyncio.wait_for(asyncio.shield(future), timeout)
            except asyncio.TimeoutError:
                raise ReplyTimeout(f"{self.name}: no BACKGROUND_JOB for 'bgapi {cmd[:80]}' "
                                   f"within {timeout:g} s") from None
        finally:
            self._jobs.pop(job_uuid, None)
        return check_api_body(body, f"bgapi {cmd}") if check else body

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    # -- staying up -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the connection up until `stop` is set: reconnect with backoff, re-subscribe.

        Logs one warning when the switch is lost and one info when it is back; while down, at most
        one "still down" line every 60 s. AuthError and AccessDenied are configuration errors and
        propagate.
        """
        delay = BACKOFF_START
        down_since: float | None = None
        failed = 0
        last_down_log = 0.0
        stop_wait = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                if not self.connected:
                    try:
                        await self.connect()
                    except (AuthError, AccessDenied):
                        raise
                    except ESLError as exc:
                        failed += 1
                        now = time.monotonic()
                        if down_since is None:
                            down_since = now
                            last_down_log = now
                            log.warning("switch unreachable", extra={"esl_conn": self.name, "error": str(exc)})
                        elif now - last_down_log >= DOWN_LOG_INTERVAL:
                            last_down_log = now
                            log.warning("switch still down", extra={
                                "esl_conn": self.name, "failed_attempts": failed,
                                "down_seconds": round(now - down_since), "error": str(exc)})
                        sleep = delay * random.uniform(0.8, 1.2)
                        delay = min(delay * 2, BACKOFF_MAX)
                        await asyncio.wait({stop_wait}, timeout=sleep)
                        continue
                    if down_since is not None:
                        log.info("switch back", extra={"esl_conn": self.name, "failed_attempts": failed,
                                                       "down_seconds": round(time.monotonic() - down_since, 1)})
                    down_since, failed, delay = None, 0, BACKOFF_START
                conn = self._conn
                assert conn is not None
                await asyncio.wait({stop_wait, conn.closed}, return_when=asyncio.FIRST_COMPLETED)
                if conn.closed.done() and not stop.is_set():
                    down_since = time.monotonic()
                    last_down_log = down_since
                    failed = 0
                    log.warning("switch connection lost", extra={"esl_conn": self.name,
                                                                "reason": str(conn.closed.result())})
        finally:
            stop_wait.cancel()
            await self.close()
