"""The ARI event stream: one WebSocket on /ari/events, handlers called in order, reconnect + resync.

Why it is shaped this way (captures 07):
- ARI never replays events missed while no WebSocket was connected, and a reconnect produces no
  event. So on every (re)connect we take a snapshot (`GET /channels`, `GET /bridges`,
  `GET /applications/{app}`) and hand it to the resync callback. The snapshot is taken after the
  WebSocket is open, so no event falls between snapshot and stream (some may already be reflected
  in the snapshot: handlers must be idempotent), and it is delivered through the same queue as the
  events, so handlers see: events before the gap, the snapshot, events after.
- `event_sources` (e.g. `channel:`, every channel) are subscribed, and `disallowed_events` set
  as the app's eventFilter, on every (re)connect, before the snapshot: an app with no WebSocket
  and no channel is destroyed with its subscriptions and filter (captures 27). A failed
  subscription fails that connection attempt like a failed snapshot; a refused filter is only
  logged (once): it saves work, nothing depends on it.
- The reader task never awaits a handler: it parses each frame and queues it; one dispatcher task
  calls the handlers, in registration order, one event at a time. A slow handler delays later
  events (order is the contract) but never the socket. Shortcut with the same order: when nothing
  is queued, the dispatcher is idle and the event's handlers are all plain functions, the reader
  calls them itself (no task switch per event). The queue is bounded; past `max_queue`
  events are dropped and counted (`dropped`) with one error log per overflow run.
- Losing the socket logs ONE warning; getting it back logs ONE info; retries in between log at
  debug. Backoff starts at 0.5 s and doubles to 30 s, with +-20 % jitter.
- A 401 (at the handshake or while taking the snapshot) stops the stream: retrying a wrong
  password only floods Asterisk's log. `wait_connected()` raises it.
- Asterisk killed or crashed: no close frame, no event, and its HTTP port refuses connections.
  The first refused reconnect after a loss queues ONE `Unreachable` notice (same queue, so in
  order) for the `unreachable` callback: the process that held the channels is gone, and waiting
  for events about them would wait for ever (captures of a SIGKILL: tests/test_asterisk_restart.py).
  A handshake timeout or an HTTP error is not such proof and queues nothing.
- `ApplicationReplaced`: another WebSocket took our app. Asterisk leaves our socket open but sends
  nothing more; reconnecting would steal the app back and forth, so the stream stops (one warning)
  after dispatching the event.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from .client import AriClient
from .errors import AriAuthError, AriError, AriHttpError, AriNotFound
from .models import Application, AriProtocolError, Bridge, Channel, Event, parse_event

log = logging.getLogger("switchctl.ari")

BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
JITTER = 0.2
DEFAULT_MAX_QUEUE = 100_000
DEFAULT_HEARTBEAT = 20.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What Asterisk holds right after a (re)connect. `application` is None when Asterisk has no
    such app (it is created by the WebSocket itself, so that is only a race with a restart)."""

    channels: list[Channel]
    bridges: list[Bridge]
    application: Application | None
    reconnected: bool  # False on the first connection of this stream


@dataclass(frozen=True, slots=True)
class _Pending:
    """A plain handler run in the reader returned an awaitable: the dispatcher awaits it, then
    runs the event's remaining handlers (queued at once, so the order holds)."""

    event: Event
    awaitable: Any
    rest: list[Callable[[Event], Any]]


@dataclass(frozen=True, slots=True)
class Unreachable:
    """Asterisk's HTTP server refused a connection while the stream was down: nobody listens on
    its port, so the Asterisk that held the channels is not running (killed, crashed, stopped)."""

    reason: str


EventHandler = Callable[[Event], "Awaitable[None] | None"]
ResyncCallback = Callable[[Snapshot], "Awaitable[None] | None"]
UnreachableCallback = Callable[[Unreachable], "Awaitable[None] | None"]


class _Registration:
    """A handler: a callable (optionally limited to some event types) or an object whose
    `on_<EventType>` methods are called (python-socketio style), `on_event` catching the rest."""

    __slots__ = ("_by_type", "is_object", "target", "types")

    def __init__(self, target: Any, types: frozenset[str]) -> None:
        if isinstance(target, type):
            raise TypeError(f"register an instance of {target.__name__}, not the class")
        self.is_object = not callable(target) or _has_on_methods(target)
        if self.is_object and types:
            raise TypeError("event types filter only plain callables; a handler object picks by method name")
        if self.is_object and not _has_on_methods(target):
            raise TypeError(f"{target!r} is neither callable nor has on_<EventType> methods")
        self.target = target
        self.types = types
        self._by_type: dict[str, tuple[Callable[[Event], Any] | None, bool]] = {}

    def resolve_for(self, event: Event) -> tuple[Callable[[Event], Any] | None, bool]:
        """`resolve` and whether the handler is a coroutine function, remembered per event type."""
        try:
            return self._by_type[event.type]
        except KeyError:
            handler = self.resolve(event)
            found = (handler, handler is not None and inspect.iscoroutinefunction(handler))
            self._by_type[event.type] = found
            return found

    def resolve(self, event: Event) -> Callable[[Event], Any] | None:
        if not self.is_object:
            return self.target if not self.types or event.type in self.types else None
        method = getattr(self.target, f"on_{event.type}", None)
        return method if method is not None else getattr(self.target, "on_event", None)


def _has_on_methods(obj: object) -> bool:
    return any(name.startswith("on_") and callable(getattr(obj, name, None)) for name in dir(obj))


class AriEventStream:
    """Keeps one WebSocket to `client`'s app open and dispatches its events.

    Use `async with AriEventStream(client, resync=cb) as stream:` or `start()`/`stop()`.
    """

    def __init__(
        self,
        client: AriClient,
        *,
        resync: ResyncCallback | None = None,
        unreachable: UnreachableCallback | None = None,
        subscribe_all: bool = False,
        event_sources: Sequence[str] = (),
        disallowed_events: Sequence[str] = (),
        backoff_initial: float = BACKOFF_INITIAL,
        backoff_max: float = BACKOFF_MAX,
        heartbeat: float | None = DEFAULT_HEARTBEAT,
        max_queue: int = DEFAULT_MAX_QUEUE,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.client = client
        self.resync = resync
        self.unreachable = unreachable
        self.subscribe_all = subscribe_all
        # Subscribed again on every (re)connect, before the snapshot: `channel:` (all channels)
        # makes Asterisk send ChannelDestroyed for every channel, ours included, where a
        # per-channel subscription would cost one more REST request per call.
        self.event_sources: tuple[str, ...] = tuple(event_sources)
        # Event types Asterisk should not send this app (its eventFilter), set on every (re)connect
        # with the subscriptions: every frame costs a parse and a dispatch, wanted or not.
        self.disallowed_events: tuple[str, ...] = tuple(disallowed_events)
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.heartbeat = heartbeat
        self.max_queue = max_queue
        self._rng = rng
        self._handlers: list[_Registration] = []
        self._queue: asyncio.Queue[Event | Snapshot | Unreachable | _Pending | None] = asyncio.Queue()
        self._dispatching = False  # the dispatcher holds an item (maybe awaiting a handler)
        self._connected = asyncio.Event()
        self._finished = asyncio.Event()  # the run loop ended (stop, fatal error or replaced)
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._dispatch_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._overflowing = False
        self.failure: AriError | None = None  # the fatal error that stopped the stream
        self.replaced = False
        self.received = 0  # frames read from the socket
        self.dispatched = 0  # events whose handlers have all run
        self.dropped = 0  # events dropped because the queue was full
        self.connections = 0  # successful (re)connections

    # -----------------------------------------------------------------------------------------
    # Public API

    def add_handler(self, handler: Any, *types: str) -> None:
        """Register `handler` (called after those registered before it). A callable gets every
        event, or only `types`; an object gets `on_<Type>(event)` / `on_event(event)` calls.
        Handlers may be plain functions or coroutines."""
        self._handlers.append(_Registration(handler, frozenset(types)))

    def remove_handler(self, handler: Any) -> None:
        self._handlers = [r for r in self._handlers if r.target is not handler]

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def pending(self) -> int:
        """Events read but not yet dispatched."""
        return self._queue.qsize()

    def start(self) -> None:
        if self._run_task is not None:
            raise RuntimeError("the event stream is already started")
        self._run_task = asyncio.create_task(self._run(), name="ari-events-reader")
        self._dispatch_task = asyncio.create_task(self._dispatch(), name="ari-events-dispatch")

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Until the socket is open and the snapshot taken; raises the fatal error (e.g.
        AriAuthError) if the stream stopped instead, TimeoutError after `timeout`."""
        connected = asyncio.ensure_future(self._connected.wait())
        finished = asyncio.ensure_future(self._finished.wait())
        try:
            await asyncio.wait({connected, finished}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            connected.cancel()
            finished.cancel()
        if self._connected.is_set():
            return
        if self.failure is not None:
            raise self.failure
        if self._finished.is_set():
            raise RuntimeError("the ARI event stream has stopped")
        raise TimeoutError(f"ARI event stream not connected within {timeout} s")

    async def stop(self, *, drain_timeout: float = 5.0) -> None:
        """Close the socket, dispatch what was already read (up to `drain_timeout`), stop."""
        self._stopping = True
        if self._ws is not None:
            await self._ws.close()
        if self._run_task is not None:
            self._run_task.cancel()
            await asyncio.gather(self._run_task, return_exceptions=True)
        if self._dispatch_task is not None:
            self._queue.put_nowait(None)
            try:
                await asyncio.wait_for(asyncio.shield(self._dispatch_task), drain_timeout)
            except TimeoutError:
                self._dispatch_task.cancel()
                await asyncio.gather(self._dispatch_task, return_exceptions=True)
        self._connected.clear()

    async def __aenter__(self) -> AriEventStream:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -----------------------------------------------------------------------------------------
    # Connection loop

    def _delay(self, attempt: int) -> float:
        base = min(self.backoff_max, self.backoff_initial * (2**attempt))
        return min(self.backoff_max, base * (1 + JITTER * (2 * self._rng() - 1)))

    async def _run(self) -> None:
        url = self.client.events_url(subscribe_all=self.subscribe_all)
        attempt = 0
        ever_connected = False
        try:
            while not self._stopping:
                problem = await self._connect_once(url, reconnected=ever_connected)
                if self._stopping or self.replaced or self.failure is not None:
                    return
                if problem is None:  # a session ran, then the socket went away
                    ever_connected = True
                    attempt = 0
                    self._down_since = time.monotonic()
                    log.warning(
                        "ARI event stream lost (%s); reconnecting", self._close_reason, extra={"app": self.client.app}
                    )
                elif self._down_since is None:
                    self._down_since = time.monotonic()
                    log.warning(
                        "ARI event stream unavailable (%s); retrying with backoff", problem, extra={"app": self.client.app}
                    )
                else:
                    log.debug("ARI event stream still down: %s", problem)
                if problem is not None and self._refused and not self._unreachable_told:
                    self._unreachable_told = True  # once per outage
                    self._enqueue(Unreachable(problem))
                await asyncio.sleep(self._delay(attempt))
                attempt += 1
        finally:
            self._connected.clear()
            self._finished.set()

    _close_reason = "closed"
    _filter_refused = False  # Asterisk refused the eventFilter once (logged once)
    _refused = False  # the last attempt could not open a TCP connection at all
    _unreachable_told = False  # an Unreachable notice was queued since the last connection
    _down_since: float | None = None  # when the stream was lost or first failed; None while up

    async def _connect_once(self, url: Any, *, reconnected: bool) -> str | None:
        """Open, snapshot, read until closed. None when a session ran (`_close_reason` says how
        it ended), else why it could not start. Sets `failure` on a fatal error."""
        self._refused = False
        try:
            ws = await asyncio.wait_for(
                self.client.session.ws_connect(url, headers=self.client.auth_headers, heartbeat=self.heartbeat),
                self.client.timeout,
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 401:
                self._fail(AriAuthError("GET", "/events", 401, "Authentication required"))
            return f"handshake refused: {exc.status} {exc.message}"
        except TimeoutError:
            return f"no WebSocket handshake within {self.client.timeout:g} s"
        except (aiohttp.ClientError, OSError) as exc:
            self._refused = isinstance(exc, (aiohttp.ClientConnectorError, ConnectionRefusedError))
            return f"cannot connect to {url.with_query(None)}: {exc or type(exc).__name__}"
        self._ws = ws
        try:
            try:
                snapshot = await self._snapshot(reconnected)
            except AriAuthError as exc:
                self._fail(exc)
                return str(exc)
            except AriError as exc:
                return f"resync failed: {exc}"
            self.connections += 1
            self._unreachable_told = False
            if self._down_since is not None:
                down_s = round(time.monotonic() - self._down_since, 1)
                log.info("ARI event stream back", extra={"app": self.client.app, "down_s": down_s})
                self._down_since = None
            elif not reconnected:
                log.info("ARI event stream connected", extra={"app": self.client.app})
            self._enqueue(snapshot)
            self._connected.set()
            self._close_reason = await self._read(ws)
            self._connected.clear()
            return None
        finally:
            self._ws = None
            await ws.close()

    def _fail(self, error: AriError) -> None:
        self.failure = error
        log.error("ARI event stream stopped: %s", error, extra={"app": self.client.app})

    async def _snapshot(self, reconnected: bool) -> Snapshot:
        if self.event_sources:
            # An app left with no WebSocket and no channel is destroyed, subscriptions and all
            # (captures 27), so this is redone after every (re)connect; before the snapshot, so
            # nothing falls between what the snapshot shows and what the subscription delivers.
            await self.client.subscribe(list(self.event_sources))
        if self.disallowed_events:
            try:
                await self.client.set_event_filter(disallowed=self.disallowed_events)
            except AriAuthError:
                raise
            except AriHttpError as exc:
                # Only an optimisation (Asterisk before 13.26/16.3 has no eventFilter): go on
                # with every event, and say so once.
                if not self._filter_refused:
                    self._filter_refused = True
                    log.info("ARI event filter refused; receiving every event type: %s", exc,
                             extra={"app": self.client.app})

        async def application() -> Application | None:
            try:
                return await self.client.get_application()
            except AriNotFound:
                return None

        channels, bridges, app = await asyncio.gather(
            self.client.list_channels(), self.client.list_bridges(), application()
        )
        return Snapshot(channels, bridges, app, reconnected)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        """Read frames until the socket ends; returns why it ended."""
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self._on_frame(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                self._on_frame(msg.data.decode("utf-8", "replace"))
            elif msg.type == aiohttp.WSMsgType.ERROR:
                return f"socket error: {ws.exception()}"
            if self.replaced:
                return "application replaced"
        code = ws.close_code
        return f"closed by Asterisk (code {code})" if code is not None else "closed"

    def _on_frame(self, text: str) -> None:
        self.received += 1
        try:
            event = parse_event(text)
        except AriProtocolError as exc:
            log.warning("ARI event frame skipped: %s", exc)
            return
        if event.type == "ApplicationReplaced":
            self.replaced = True
            log.warning(
                "ARI application taken over by another WebSocket; this stream stops",
                extra={"app": self.client.app},
            )
        if not self._run_inline(event):
            self._enqueue(event)

    def _run_inline(self, event: Event) -> bool:
        """Run the event's handlers here, in the reader, when that changes nothing but the cost:
        nothing is queued, the dispatcher is idle, and every handler is a plain function (they
        cannot await, so the socket is never held up). The queue hop to the dispatcher task is a
        task switch per event, a good part of an event's cost (bench/ari_cps.py)."""
        if self._dispatching or self._dispatch_task is None or self._queue.qsize():
            return False
        handlers: list[Callable[[Event], Any]] = []
        for registration in self._handlers:
            handler, is_async = registration.resolve_for(event)
            if handler is None:
                continue
            if is_async:
                return False
            handlers.append(handler)
        for index, handler in enumerate(handlers):
            try:
                result = handler(event)
            except Exception:
                log.exception("ARI %s handler %r failed", event.type, handler)
                continue
            if result is not None and inspect.isawaitable(result):
                self._queue.put_nowait(_Pending(event, result, handlers[index + 1:]))
                return True
        self.dispatched += 1
        return True

    def _enqueue(self, item: Event | Snapshot | Unreachable) -> None:
        if self._queue.qsize() >= self.max_queue:
            self.dropped += 1
            if not self._overflowing:
                self._overflowing = True
                log.error(
                    "ARI event queue full (%d): handlers too slow, dropping events", self.max_queue,
                    extra={"app": self.client.app},
                )
            return
        self._overflowing = False
        self._queue.put_nowait(item)

    # -----------------------------------------------------------------------------------------
    # Dispatch

    async def _dispatch(self) -> None:
        while True:
            self._dispatching = False
            item = await self._queue.get()
            self._dispatching = True
            if item is None:
                return
            if isinstance(item, _Pending):
                pending = item.awaitable
                await self._call(lambda _event, pending=pending: pending, item.event, item.event.type)
                for handler in item.rest:
                    await self._call(handler, item.event, item.event.type)
                self.dispatched += 1
                continue
            if isinstance(item, Snapshot):
                if self.resync is not None:
                    await self._call(self.resync, item, "resync")
                continue
            if isinstance(item, Unreachable):
                if self.unreachable is not None:
                    await self._call(self.unreachable, item, "unreachable")
                continue
            for registration in list(self._handlers):
                handler, _is_async = registration.resolve_for(item)
                if handler is not None:
                    await self._call(handler, item, item.type)
            self.dispatched += 1

    async def _call(self, handler: Callable[[Any], Any], arg: Any, what: str) -> None:
        try:
            result = handler(arg)
            # Most handlers are plain functions returning None: skip the (ABC) awaitable check.
            if result is not None and inspect.isawaitable(result):
                await result
        except Exception:
            # One faulty handler must not stop the stream or the handlers after it.
            log.exception("ARI %s handler %r failed", what, handler)
