"""AsteriskSwitch's event subscription: one `channel:` (every channel) subscription on each
(re)connect instead of one REST request per call (bench/ari_cps.py, issue 3), against the scripted
fake ARI of tests/test_asterisk_backend.py. The real Asterisk's side is checked by
bench/ari_cps.py (its destroyed/call column: 1.00) and, across real restarts,
tests/test_asterisk_restart.py."""

from __future__ import annotations

import asyncio

import pytest

from switchctl.switch.asterisk import ALL_CHANNELS, UNUSED_EVENTS, AsteriskSwitch
from switchctl.switch.call import CallGone
from tests import test_asterisk_backend as backend
from tests.test_asterisk_backend import SOUND_URI, Rig

rig = backend.rig  # the scripted fake ARI + AsteriskSwitch fixture

SUBSCRIBE = ("POST", "/applications/switchctl/subscription", {"eventSource": ALL_CHANNELS})


def _subscriptions(rig: Rig) -> list[tuple[str, str, dict[str, str]]]:
    return [r for r in rig.fake.calls_log if r[1].endswith("/subscription")]


async def test_all_channels_subscribed_at_connect_and_no_request_per_call(rig: Rig) -> None:
    assert ALL_CHANNELS == "channel:"
    assert _subscriptions(rig) == [SUBSCRIBE]
    for n in range(3):
        call = await rig.call(f"s{n}")
        await call.answer()
    assert _subscriptions(rig) == [SUBSCRIBE]  # nothing per call


async def test_subscription_is_redone_after_every_reconnect(rig: Rig) -> None:
    for expected in (2, 3):
        await rig.fake.drop()
        rig.fake.ws = await rig.fake.next_socket()
        await rig.switch.wait_connected(3)
        await asyncio.sleep(0.05)
        assert _subscriptions(rig) == [SUBSCRIBE] * expected


async def test_channel_destroyed_ends_the_call_with_its_cause(rig: Rig) -> None:
    call = await rig.call("s9")
    waiting = asyncio.create_task(call.wait_hangup())
    await rig.fake.remote_hangup("s9", cause=17)
    assert await asyncio.wait_for(waiting, 2) == "USER_BUSY"
    assert "s9" not in rig.switch.calls
    with pytest.raises(CallGone):
        await call.answer()


async def test_events_of_channels_that_are_not_calls_are_ignored(rig: Rig) -> None:
    # With every channel subscribed, other apps' and dialplan channels' events reach us too.
    call = await rig.call("s10")
    rig.fake.channels["foreign"] = rig.fake.channel("s10", id="foreign")
    await rig.fake.emit("ChannelStateChange", "foreign")
    await rig.fake.emit("StasisEnd", "foreign")
    await rig.fake.emit("ChannelDestroyed", "foreign", cause=16, cause_txt="x")
    await call.answer()  # the call's own events still flow, in order after the foreign ones
    assert set(rig.switch.calls) == {"s10"} and not call.gone


async def test_a_given_stream_gets_the_subscription_added_once(rig: Rig) -> None:
    stream = rig.switch.stream
    assert stream.event_sources == (ALL_CHANNELS,)
    again = AsteriskSwitch("ast2", rig.switch.client, sound_uri=SOUND_URI, stream=stream)
    assert again.stream.event_sources == (ALL_CHANNELS,)


async def test_unused_event_types_are_filtered_and_really_unused() -> None:
    import inspect
    import re

    from switchctl.ari.models import EVENT_TYPES
    from switchctl.switch import asterisk, asterisk_dial

    assert set(UNUSED_EVENTS) <= EVENT_TYPES
    handled = {name.removeprefix("on_") for name in dir(asterisk.AsteriskCall) if name.startswith("on_")}
    assert not handled & set(UNUSED_EVENTS)
    # Neither backend module names one of them (isinstance checks, imports, type strings),
    # outside the UNUSED_EVENTS tuple itself.
    for module in (asterisk, asterisk_dial):
        source = re.sub(r"UNUSED_EVENTS = \([^)]*\)", "", inspect.getsource(module))
        for name in UNUSED_EVENTS:
            assert not re.search(rf"\b{name}\b", source), (module.__name__, name)


async def test_the_switch_sets_the_filter_at_connect(rig: Rig) -> None:
    assert rig.switch.stream.disallowed_events == UNUSED_EVENTS
    filters = [r for r in rig.fake.calls_log if r[1] == "/applications/switchctl/eventFilter"]
    assert [m for m, _p, _q in filters] == ["PUT"]
