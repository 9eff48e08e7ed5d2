"""switch/asterisk_adopt.py without a switch: listing live calls, adopting a bridged pair, the end
of the bridge (the other party and the bridge go, the first hangup event is the end), a gap."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from switchctl.ari import AriNotFound, parse_event
from switchctl.ari.models import Bridge, Channel, Playback
from switchctl.billing.callkeys import ACCOUNT_VAR, CALL_VAR, DESTINATION_VAR
from switchctl.switch.asterisk_adopt import (
    READOPT_VARIABLES,
    AsteriskAdopter,
    epoch_seconds_us,
)
from switchctl.switch.call import CallError, CallGone

A, B, OTHER = "1795651015.0", "1795651015.1", "1795651020.5"
BRIDGE = f"switchctl-dial-{A}"


def _channel(cid: str, state: str = "Up") -> dict[str, Any]:
    return {"id": cid, "name": f"PJSIP/x-{cid}", "state": state,
            "caller": {"name": "", "number": "5550100"},
            "dialplan": {"context": "switchctl", "exten": "9441234567", "priority": 1}}


def _not_found(what: str) -> AriNotFound:
    return AriNotFound("GET", "/x", 404, what)


class FakeAri:
    """The REST calls asterisk_adopt makes, over a dict of channels and bridges."""

    def __init__(self) -> None:
        self.channels = {A: _channel(A), B: _channel(B), OTHER: _channel(OTHER, "Ring")}
        self.bridges = {BRIDGE: [A, B]}
        self.variables: dict[str, dict[str, str]] = {
            A: {"CDR(answer,u)": "1795651014.500000", ACCOUNT_VAR: "booth-1"},
            B: {"CDR(answer,u)": "1795651016.123456", CALL_VAR: A, ACCOUNT_VAR: "booth-1",
                DESTINATION_VAR: "441234567"},
        }
        self.calls: list[tuple[str, ...]] = []

    async def list_channels(self) -> list[Channel]:
        return [Channel.parse(c) for c in self.channels.values()]

    async def list_bridges(self) -> list[Bridge]:
        return [Bridge.parse({"id": b, "channels": m}) for b, m in self.bridges.items()]

    async def get_channel(self, cid: str) -> Channel:
        if cid not in self.channels:
            raise _not_found("Channel not found")
        return Channel.parse(self.channels[cid])

    async def get_variable(self, cid: str, name: str) -> str:
        if cid not in self.channels:
            raise _not_found("Channel not found")
        if name not in self.variables.get(cid, {}):
            raise _not_found("Provided variable was not found")
        return self.variables[cid][name]

    async def set_variable(self, cid: str, name: str, value: str) -> None:
        self.calls.append(("set", cid, name, value))

    async def hangup(self, cid: str, *, reason: str | None = None, reason_code: int | None = None) -> None:
        if cid not in self.channels:
            raise _not_found("Channel not found")
        self.calls.append(("hangup", cid, str(reason_code)))

    async def destroy_bridge(self, bid: str) -> None:
        self.calls.append(("destroy_bridge", bid))
        self.bridges.pop(bid, None)

    async def play(self, cid: str, media: Any, **kw: Any) -> Playback:
        self.calls.append(("play", cid, str(media)))
        return Playback.parse({"id": "pb1"})

    async def stop_playback(self, pid: str) -> None:
        self.calls.append(("stop_playback", pid))


def _event(etype: str, cid: str, at: str, **extra: Any) -> Any:
    return parse_event({"type": etype, "timestamp": at, "application": "switchctl",
                        "channel": _channel(cid), **extra})


@pytest.fixture
def fake() -> FakeAri:
    return FakeAri()


@pytest.fixture
def adopter(fake: FakeAri) -> AsteriskAdopter:
    return AsteriskAdopter("ast1", fake, sound_uri=lambda name: f"sound:{name}")  # type: ignore[arg-type]


def test_epoch_seconds_us_is_exact() -> None:
    assert epoch_seconds_us("1795633484.118416") == 1_795_633_484_118_416
    assert epoch_seconds_us("0.000000") == 0  # not answered (captures README 32)
    assert epoch_seconds_us("") == 0
    assert epoch_seconds_us(None) == 0
    assert epoch_seconds_us("nonsense") == 0


def test_the_variables_read_are_the_ones_billing_sets() -> None:
    assert set(READOPT_VARIABLES) == {CALL_VAR, ACCOUNT_VAR, DESTINATION_VAR}


async def test_live_calls_lists_bridged_channels_with_variables_and_answer(adopter: AsteriskAdopter) -> None:
    live = {c.uuid: c for c in await adopter.live_calls()}
    assert set(live) == {A, B, OTHER}
    assert live[B].bridged_to == A and live[A].bridged_to == B
    assert live[B].answered_at_us == 1_795_651_016_123_456
    assert live[B].variables == {CALL_VAR: A, ACCOUNT_VAR: "booth-1", DESTINATION_VAR: "441234567"}
    assert live[OTHER].bridged_to is None and live[OTHER].answered_at_us == 0 and not live[OTHER].variables


async def test_the_first_hangup_ends_the_bridge_for_both_adopted_legs(adopter: AsteriskAdopter, fake: FakeAri) -> None:
    caller = await adopter.adopt(A)
    callee = await adopter.adopt(B)
    assert await adopter.adopt(A) is caller
    assert callee.answered_at_us == 1_795_651_016_123_456 and caller.info.switch == "ast1"

    await caller.schedule_hangup(2.5)
    assert ("set", A, "TIMEOUT(absolute)", "2.500") in fake.calls
    await caller.announce("prepaid/warning")
    assert ("play", A, "sound:prepaid/warning") in fake.calls

    waiting = asyncio.ensure_future(callee.wait_hangup())
    # the caller is cut (our DELETE): its hangup request is the end of the bridge
    hangup = asyncio.ensure_future(caller.hangup("ALLOTTED_TIMEOUT"))
    await asyncio.sleep(0)
    adopter.on_event(_event("ChannelHangupRequest", A, "2026-11-25T19:00:10.111+0000", soft=True))
    adopter.on_event(_event("ChannelDestroyed", A, "2026-11-25T19:00:10.115+0000", cause=16, cause_txt="x"))
    await hangup
    assert caller.hangup_cause == "ALLOTTED_TIMEOUT"
    await asyncio.sleep(0.01)  # the teardown task: B is hung up, the bridge destroyed
    assert ("hangup", B, "None") in fake.calls and ("destroy_bridge", BRIDGE) in fake.calls
    adopter.on_event(_event("ChannelHangupRequest", B, "2026-11-25T19:00:10.140+0000"))
    adopter.on_event(_event("ChannelDestroyed", B, "2026-11-25T19:00:10.150+0000", cause=16, cause_txt="x"))
    assert await asyncio.wait_for(waiting, 1) == "NORMAL_CLEARING"
    end = caller.ended_at_us
    assert end and callee.ended_at_us == end  # both: the bridge's first hangup event
    assert end % 1_000_000 == 111_000
    assert not adopter.calls
    with pytest.raises(CallGone):
        await caller.announce("x")
    with pytest.raises(CallError):
        await callee.play(["x"])


async def test_a_channel_gone_before_adoption_is_call_gone(adopter: AsteriskAdopter, fake: FakeAri) -> None:
    del fake.channels[B]
    with pytest.raises(CallGone):
        await adopter.adopt(B)
    assert not adopter.calls


async def test_a_channel_that_vanished_during_a_gap_ends_without_times(adopter: AsteriskAdopter) -> None:
    callee = await adopter.adopt(B)
    adopter.resync({A})
    assert await asyncio.wait_for(callee.wait_hangup(), 1) == "NORMAL_CLEARING"
    assert callee.ended_at_us == 0  # billing leaves it to the CDR importer


async def test_an_adopted_call_refuses_what_only_a_flow_does(adopter: AsteriskAdopter) -> None:
    from switchctl.switch.call import CallError, CollectSpec, DialSpec, DialTarget, RecordSpec, SayKind

    caller = await adopter.adopt(A)
    for operation in (caller.answer(), caller.play(["x"]), caller.say("1", SayKind.DIGITS),
                      caller.collect(CollectSpec()), caller.dial(DialSpec([[DialTarget("phone", "1")]])),
                      caller.record(RecordSpec("/tmp/x.wav")), caller.start_recording("/tmp/y.wav"),
                      caller.transfer("9000"), caller.set_variable("a", "b")):
        with pytest.raises(CallError, match="adopted call: not supported"):
            await operation
