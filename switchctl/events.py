"""An in-process publish/subscribe bus for what consoles and wallboards watch live.

Features publish (`transfer` state changes, the `screen_pop` a transfer target receives, ...); the
web API streams them (`GET /api/events`). A subscriber that does not keep up loses the oldest
events of its own queue (counted in `dropped`), never blocks a publisher: a call must not wait for
a slow browser.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_QUEUE = 1000


@dataclass(frozen=True, slots=True)
class BusEvent:
    """One published event: `kind` (e.g. "screen_pop"), a JSON-able `payload`, a bus-wide sequence
    number and the wall-clock time it was published (for display only)."""

    kind: str
    payload: Mapping[str, Any]
    seq: int
    at: float = field(default_factory=time.time)


class Subscription:
    """A subscriber's queue: iterate it (`async for event in sub`) and close it when done."""

    def __init__(self, bus: EventBus, kinds: frozenset[str] | None, size: int) -> None:
        self._bus = bus
        self.kinds = kinds
        self.queue: asyncio.Queue[BusEvent] = asyncio.Queue(size)
        self.dropped = 0

    def offer(self, event: BusEvent) -> None:
        if self.kinds is not None and event.kind not in self.kinds:
            return
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(event)

    async def get(self) -> BusEvent:
        return await self.queue.get()

    def __aiter__(self) -> AsyncIterator[BusEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[BusEvent]:
        while True:
            yield await self.queue.get()

    def close(self) -> None:
        self._bus._subscriptions.discard(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()
        self._seq = itertools.count(1)

    def subscribe(self, kinds: set[str] | frozenset[str] | None = None, *, size: int = DEFAULT_QUEUE) -> Subscription:
        """A new subscription to `kinds` (None: every kind), from now on."""
        sub = Subscription(self, frozenset(kinds) if kinds is not None else None, size)
        self._subscriptions.add(sub)
        return sub

    def publish(self, kind: str, payload: Mapping[str, Any]) -> BusEvent:
        """Hand `payload` to every subscriber of `kind`; never blocks."""
        event = BusEvent(kind, dict(payload), next(self._seq))
        for sub in tuple(self._subscriptions):
            sub.offer(event)
        return event

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)
