"""The in-process event bus: every subscriber of a kind gets each event once, in order; a slow one
loses its own oldest events, never blocks the publisher."""

import asyncio

from switchctl.events import EventBus


async def test_subscribers_get_their_kinds_in_order() -> None:
    bus = EventBus()
    every = bus.subscribe()
    pops = bus.subscribe({"screen_pop"})
    bus.publish("transfer", {"state": "consulting"})
    bus.publish("screen_pop", {"leg": "b"})
    bus.publish("screen_pop", {"leg": "c"})
    got = [await every.get() for _ in range(3)]
    assert [e.kind for e in got] == ["transfer", "screen_pop", "screen_pop"]
    assert [e.seq for e in got] == sorted(e.seq for e in got)
    assert [(await pops.get()).payload["leg"] for _ in range(2)] == ["b", "c"]
    assert pops.queue.empty()


async def test_a_full_queue_drops_its_oldest_and_the_publisher_never_waits() -> None:
    bus = EventBus()
    slow = bus.subscribe(size=2)
    for n in range(5):
        bus.publish("transfer", {"n": n})
    assert slow.dropped == 3
    assert [(await slow.get()).payload["n"] for _ in range(2)] == [3, 4]


async def test_closed_subscription_gets_nothing_and_iteration_follows_publishes() -> None:
    bus = EventBus()
    with bus.subscribe() as gone:
        pass
    assert bus.subscribers == 0
    bus.publish("transfer", {})
    assert gone.queue.empty()

    sub = bus.subscribe()
    received: list[str] = []

    async def read() -> None:
        async for event in sub:
            received.append(event.payload["x"])
            if len(received) == 2:
                return

    reader = asyncio.create_task(read())
    await asyncio.sleep(0)
    bus.publish("k", {"x": "1"})
    bus.publish("k", {"x": "2"})
    await asyncio.wait_for(reader, 1)
    assert received == ["1", "2"]
    # the payload is a copy: a publisher changing its dict later does not change what was sent
    data = {"x": "3"}
    event = bus.publish("k", data)
    data["x"] = "changed"
    assert event.payload["x"] == "3"
