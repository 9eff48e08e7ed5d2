"""Transfer scenarios on the in-memory switch: every transfer type and failure path.

Each scenario: the caller A's flow dials 100 (B answers) through `TransferService.dial`; transfers
are asked by B's keys or the API; the far ends are scripted (tests/fakeswitch.py). Every scenario
ends with the switch's channel count back at zero, and where a fallback exists the caller is still up.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from switchctl.events import EventBus, Subscription
from switchctl.features.transfer import (
    TransferError,
    TransferOptions,
    TransferRoute,
    TransferService,
)
from switchctl.features.transfer.calldata import CONVERSATION_VAR
from switchctl.flows.hooks import DialContext, TransferredDial
from switchctl.switch.call import (
    CallGone,
    DialAnswer,
    DialOutcome,
    DialSpec,
    DialTarget,
)
from tests.fakeswitch import FakeCall, FakeLeg, FakeSwitch, FarEnd

RINGBACK = "tone://ringback"
MOH = "moh://default"
OPTIONS = TransferOptions(
    digit_timeout=0.15, ring_timeout=0.3, recall_timeout=0.3, music=MOH, ringback=RINGBACK,
    routes=(TransferRoute(pattern=r"8\d", kind="flow", flow="survey"),
            TransferRoute(pattern=r"9\d", kind="flow", flow="missing"),
            TransferRoute(pattern=r"0(\d{3,})", kind="gateway", gateway="trunk", strip=1),
            TransferRoute(pattern=r"\d{2,6}", kind="phone")),
)
CONTEXT = DialContext(flow="main", node="agents", path=("start", "menu", "agents"),
                      variables={"customer": "C-42", "note": "needs help, urgent"})


@dataclass
class Rig:
    sw: FakeSwitch
    bus: EventBus
    sub: Subscription
    svc: TransferService

    def events(self, kind: str) -> list[dict[str, Any]]:
        out = []
        while not self.sub.queue.empty():
            self._seen.append(self.sub.queue.get_nowait())
        for event in self._seen:
            if event.kind == kind:
                out.append(dict(event.payload))
        return out

    def __post_init__(self) -> None:
        self._seen: list[Any] = []


def make_rig(options: TransferOptions = OPTIONS, **far_ends: Any) -> Rig:
    sw = FakeSwitch({"100": FarEnd(), "201": FarEnd(), **{k.removeprefix("t"): v for k, v in far_ends.items()}})
    bus = EventBus()
    return Rig(sw, bus, bus.subscribe(), TransferService({"test": sw}, options, events=bus,
                                                         flows=["main", "survey"]))


async def until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.005)
    await asyncio.wait_for(poll(), timeout)


async def start(rig: Rig, on_answer: Any = None, context: DialContext = CONTEXT,
                ) -> tuple[FakeCall, asyncio.Task[TransferredDial], FakeLeg]:
    a = rig.sw.caller()
    spec = DialSpec(groups=[[DialTarget("phone", "100")]], timeout=1.0, on_answer=on_answer,
                    variables={"billing_ref": "x1"})
    task = asyncio.create_task(rig.svc.dial(a, spec, context))
    b = await rig.sw.answered("100")
    await until(lambda: (rig.svc.conversation(a.uuid) or {}).get("state") == "talking")
    return a, task, b


def state(rig: Rig, a: FakeCall) -> str | None:
    view = rig.svc.conversation(a.uuid)
    return view["state"] if view else None


async def end(rig: Rig, a: FakeCall, task: asyncio.Task[TransferredDial]) -> TransferredDial:
    """The dial ended (or the caller hangs up to end it); A's flow hangs up; nothing is left."""
    if not task.done():
        await asyncio.wait({task}, timeout=0.05)
    if not task.done():
        await a.hang_up()
    done = await asyncio.wait_for(task, 2.0)
    await a.hangup()
    await rig.sw.settle(0.02)
    assert rig.sw.live == 0, [c.uuid for c in rig.sw.channels.values()]
    assert rig.svc.conversations() == []
    await rig.sw.close()
    return done


# -- plain dial, data following the call ------------------------------------------------------


async def test_plain_dial_party_hangs_up_and_data_is_published():
    rig = make_rig()
    answers: list[DialAnswer] = []

    async def on_answer(answer: DialAnswer) -> None:
        answers.append(answer)

    a, task, b = await start(rig, on_answer)
    assert answers and answers[0].peer_uuid == b.uuid  # the flow's own on_answer still runs
    assert [spec.feature_keys for spec in a.dial_specs] == [True]  # the party's keys must reach us
    assert b.variables[CONVERSATION_VAR] == a.uuid
    assert b.variables["billing_ref"] == "x1"
    assert b.variables["switchctl_data_customer"] == "C-42"
    assert "switchctl_data_note" not in b.variables  # a value a dial string cannot carry
    (pop,) = rig.events("screen_pop")
    assert pop == {"conversation": a.uuid, "call": a.uuid, "leg": b.uuid, "to": "100",
                   "data": {"caller_number": "1000", "caller_name": "Alice", "customer": "C-42",
                            "note": "needs help, urgent"},
                   "ivr_path": ["start", "menu", "agents"], "transfers": 0}
    await b.hang_up()
    done = await asyncio.wait_for(task, 1)
    assert done.result.outcome is DialOutcome.ANSWERED and not done.result.caller_hung_up
    assert done.transfers == 0 and done.data["customer"] == "C-42"
    assert a.up
    await end(rig, a, task)


async def test_caller_hangs_up_before_an_answer_raises_call_gone():
    rig = make_rig(t100=FarEnd(after=0.5))
    a = rig.sw.caller()
    task = asyncio.create_task(rig.svc.dial(a, DialSpec(groups=[[DialTarget("phone", "100")]]), CONTEXT))
    await asyncio.sleep(0.05)
    await a.hang_up()
    with pytest.raises(CallGone):
        await task
    assert rig.sw.live == 0


async def test_unanswered_dial_returns_its_failure():
    rig = make_rig(t100=FarEnd("busy"))
    a = rig.sw.caller()
    done = await rig.svc.dial(a, DialSpec(groups=[[DialTarget("phone", "100")]]), CONTEXT)
    assert done.result.outcome is DialOutcome.BUSY and a.up
    await a.hangup()
    assert rig.sw.live == 0


async def test_caller_hangs_up_while_talking_takes_the_party_down():
    rig = make_rig()
    a, task, b = await start(rig)
    await a.hang_up()
    done = await asyncio.wait_for(task, 1)
    assert done.result.caller_hung_up
    assert not b.up
    await end(rig, a, task)


# -- blind ------------------------------------------------------------------------------------


async def test_blind_by_keys_caller_hears_ringback_then_the_target():
    rig = make_rig(t201=FarEnd(after=0.05))
    a, task, b = await start(rig)
    await b.press("*1201#")
    c = await rig.sw.answered("201")
    await until(lambda: a.hears == f"bridge:{c.uuid}")
    assert not b.up  # the transferor was released
    assert f"music:{RINGBACK}" in a.heard  # never silence while the target rang
    assert c.variables[CONVERSATION_VAR] == a.uuid
    transfer = rig.events("transfer")
    completed = [e for e in transfer if e["state"] == "completed"]
    assert completed and completed[0]["mode"] == "blind" and completed[0]["target"] == "201"
    assert 0 < completed[0]["elapsed_ms"] < 1000
    pops = rig.events("screen_pop")
    assert [p["leg"] for p in pops] == [b.uuid, c.uuid] and pops[1]["transfers"] == 1
    await c.hang_up()
    done = await end(rig, a, task)
    assert done.result.peer_uuid == c.uuid and not done.result.caller_hung_up
    assert done.transfers == 1


async def test_blind_to_external_number_goes_out_of_the_trunk():
    rig = make_rig(t5551234=FarEnd())
    a, task, _b = await start(rig)
    view = await rig.svc.request(a.uuid, "blind", "05551234")
    assert view["mode"] == "blind"
    c = await rig.sw.answered("5551234")
    assert c.target == DialTarget("gateway", "5551234", gateway="trunk")
    await until(lambda: a.hears == f"bridge:{c.uuid}")
    await end(rig, a, task)


@pytest.mark.parametrize("outcome", ["busy", "no_answer", "reject", "fail"])
async def test_blind_target_fails_the_transferor_is_recalled(outcome: str):
    rig = make_rig(t201=FarEnd(outcome), t100=[FarEnd(), FarEnd()])
    a, task, b = await start(rig)
    await rig.svc.request(a.uuid, "blind", "201")
    b2 = await rig.sw.answered("100", index=1)
    await until(lambda: a.hears == f"bridge:{b2.uuid}")
    assert a.up and not b.up
    assert rig.sw.originated[-1].target.address == "100"
    assert rig.sw.originated[-1].variables[CONVERSATION_VAR] == a.uuid
    states = [e["state"] for e in rig.events("transfer")]
    assert "failed" in states and "recall" in states
    await b2.hang_up()
    done = await end(rig, a, task)
    assert done.result.outcome is DialOutcome.ANSWERED and done.transfers == 0


async def test_blind_target_and_recall_fail_the_flow_fallback_takes_the_caller():
    rig = make_rig(t201=FarEnd("no_answer"), t100=[FarEnd(), FarEnd("busy")])
    a, task, _b = await start(rig)
    await rig.svc.request(a.uuid, "blind", "201")
    done = await asyncio.wait_for(task, 2)
    assert done.result.outcome is DialOutcome.NO_ANSWER and done.result.target == DialTarget("phone", "201")
    assert a.up  # the flow's no_answer branch takes the caller
    assert a.hears == f"music:{RINGBACK}"  # ringback until the flow's next operation
    await end(rig, a, task)


async def test_blind_target_fails_without_recall():
    rig = make_rig(dataclasses.replace(OPTIONS, recall_transferor=False), t201=FarEnd("reject"))
    a, task, b = await start(rig)
    await b.press("*1201#")
    done = await asyncio.wait_for(task, 2)
    assert done.result.outcome is DialOutcome.REJECTED and a.up
    assert len(rig.sw.originated) == 1
    await end(rig, a, task)


async def test_blind_to_a_flow_hands_the_caller_to_it():
    rig = make_rig()
    a, task, b = await start(rig)
    await rig.svc.request(a.uuid, "blind", "81")
    done = await asyncio.wait_for(task, 1)
    assert done.flow == "survey" and done.transfers == 1 and not done.result.caller_hung_up
    assert not b.up and a.up
    await end(rig, a, task)


async def test_caller_hangs_up_while_blind_target_rings():
    rig = make_rig(t201=FarEnd(after=0.5))
    a, task, _b = await start(rig)
    await rig.svc.request(a.uuid, "blind", "201")
    await asyncio.sleep(0.05)
    await a.hang_up()
    done = await asyncio.wait_for(task, 1)
    assert done.result.caller_hung_up
    await end(rig, a, task)  # the ringing target was cancelled


# -- attended -----------------------------------------------------------------------------------


async def consult(rig: Rig, a: FakeCall, b: FakeLeg, to: str = "201") -> FakeLeg:
    await b.press(f"*2{to}#")
    c = await rig.sw.answered(to)
    await until(lambda: state(rig, a) == "consulting")
    assert a.hears == f"music:{MOH}"
    assert f"music:{RINGBACK}" in b.heard  # the transferor heard ringback while the target rang
    assert b.hears == f"bridge:{c.uuid}"
    return c


async def test_attended_complete():
    rig = make_rig(t201=FarEnd(after=0.03))
    a, task, b = await start(rig)
    c = await consult(rig, a, b)
    await b.press("*2")
    await until(lambda: a.hears == f"bridge:{c.uuid}")
    assert not b.up
    completed = [e for e in rig.events("transfer") if e["state"] == "completed"]
    assert completed[0]["mode"] == "attended" and completed[0]["elapsed_ms"] >= 0
    await c.hang_up()
    done = await end(rig, a, task)
    assert done.transfers == 1 and done.result.peer_uuid == c.uuid


async def test_attended_cancel_returns_the_caller_to_the_transferor():
    rig = make_rig()
    a, task, b = await start(rig)
    c = await consult(rig, a, b)
    view = await rig.svc.request(a.uuid, "cancel")
    assert view["state"] == "talking" and view["party"] == b.uuid
    await until(lambda: a.hears == f"bridge:{b.uuid}")
    assert not c.up
    await end(rig, a, task)


async def test_cancel_while_the_consult_target_rings():
    rig = make_rig(t201=FarEnd(after=1.0))
    a, task, b = await start(rig)
    await b.press("*2201#")
    await until(lambda: state(rig, a) == "consult_ringing")
    await b.press("*1")
    await until(lambda: a.hears == f"bridge:{b.uuid}")
    assert rig.sw.live == 2  # the ringing target is gone
    await end(rig, a, task)


@pytest.mark.parametrize("outcome", ["busy", "no_answer", "reject", "fail"])
async def test_consult_target_fails_caller_reconnected_with_transferor(outcome: str):
    rig = make_rig(t201=FarEnd(outcome))
    a, task, b = await start(rig)
    await rig.svc.request(a.uuid, "attended", "201")
    await until(lambda: a.hears == f"bridge:{b.uuid}")
    assert state(rig, a) == "talking" and b.up and a.up
    # and the transferor can try again
    rig.sw.script("202", FarEnd())
    await rig.svc.request(a.uuid, "attended", "202")
    c = await rig.sw.answered("202")
    await until(lambda: state(rig, a) == "consulting")
    await rig.svc.request(a.uuid, "complete")
    await until(lambda: a.hears == f"bridge:{c.uuid}")
    await end(rig, a, task)


async def test_semi_attended_complete_while_target_rings():
    rig = make_rig(t201=FarEnd(after=0.15))
    a, task, b = await start(rig)
    await b.press("*2201#")
    await until(lambda: state(rig, a) == "consult_ringing")
    await b.press("*2")
    await until(lambda: state(rig, a) == "semi_attended")
    assert not b.up and a.hears == f"music:{RINGBACK}"
    c = await rig.sw.answered("201")
    await until(lambda: a.hears == f"bridge:{c.uuid}")
    completed = [e for e in rig.events("transfer") if e["state"] == "completed"]
    assert completed[0]["mode"] == "semi_attended"
    await end(rig, a, task)


async def test_semi_attended_target_fails_transferor_recalled():
    rig = make_rig(t201=FarEnd("no_answer"), t100=[FarEnd(), FarEnd()])
    a, task, _b = await start(rig)
    await rig.svc.request(a.uuid, "attended", "201")
    await rig.svc.request(a.uuid, "complete")
    b2 = await rig.sw.answered("100", index=1)
    await until(lambda: a.hears == f"bridge:{b2.uuid}")
    await end(rig, a, task)


async def test_transferor_hangs_up_while_target_rings_caller_gets_the_target():
    rig = make_rig(t201=FarEnd(after=0.15))
    a, task, b = await start(rig)
    await b.press("*2201#")
    await until(lambda: state(rig, a) == "consult_ringing")
    await b.hang_up()
    await until(lambda: state(rig, a) == "semi_attended")
    assert a.hears == f"music:{RINGBACK}"
    c = await rig.sw.answered("201")
    await until(lambda: a.hears == f"bridge:{c.uuid}")
    await end(rig, a, task)


async def test_transferor_hangs_up_while_target_rings_and_target_fails():
    rig = make_rig(t201=FarEnd("busy", after=0.1), t100=[FarEnd(), FarEnd("no_answer")])
    a, task, b = await start(rig)
    await rig.svc.request(a.uuid, "attended", "201")
    await b.hang_up()
    done = await asyncio.wait_for(task, 2)
    assert done.result.outcome is DialOutcome.BUSY and a.up  # recall failed too: the flow's fallback
    await end(rig, a, task)


async def test_transferor_hangs_up_during_consult_caller_gets_the_target():
    rig = make_rig()
    a, task, b = await start(rig)
    c = await consult(rig, a, b)
    await b.hang_up()
    await until(lambda: a.hears == f"bridge:{c.uuid}")
    assert state(rig, a) == "talking"
    await end(rig, a, task)


async def test_target_hangs_up_during_consult_caller_back_with_transferor():
    rig = make_rig()
    a, task, b = await start(rig)
    c = await consult(rig, a, b)
    await c.hang_up()
    await until(lambda: a.hears == f"bridge:{b.uuid}")
    await end(rig, a, task)


async def test_caller_hangs_up_during_consult_the_others_go_on():
    rig = make_rig()
    a, task, b = await start(rig)
    c = await consult(rig, a, b)
    await a.hang_up()
    # the caller's flow gets its answer now: the switch may let the hung-up channel go
    done = await asyncio.wait_for(task, 1)
    assert done.result.caller_hung_up
    await asyncio.sleep(0.05)
    assert b.up and c.up and b.hears == f"bridge:{c.uuid}"  # ... while the two others talk on
    assert rig.svc.conversation(a.uuid)["state"] == "consulting"  # consoles still see it
    await c.hang_up()  # one of them leaves: the other is hung up
    await until(lambda: not b.up)
    await until(lambda: rig.svc.conversation(a.uuid) is None)
    await end(rig, a, task)


async def test_closing_the_service_ends_a_consultation_the_caller_left():
    rig = make_rig()
    a, task, b = await start(rig)
    c = await consult(rig, a, b)
    await a.hang_up()
    await asyncio.wait_for(task, 1)
    await rig.svc.close()
    assert not b.up and not c.up and rig.svc.conversation(a.uuid) is None
    await end(rig, a, task)


async def test_caller_hangs_up_while_consult_target_rings():
    rig = make_rig(t201=FarEnd(after=0.1))
    a, task, b = await start(rig)
    await rig.svc.request(a.uuid, "attended", "201")
    await a.hang_up()
    done = await asyncio.wait_for(task, 1)
    assert done.result.caller_hung_up
    c = await rig.sw.answered("201")
    await until(lambda: b.hears == f"bridge:{c.uuid}")
    await b.hang_up()
    await until(lambda: not c.up)
    await end(rig, a, task)


# -- three-way -------------------------------------------------------------------------------------


async def test_three_way_then_parties_leave_caller_taken_out_last():
    rig = make_rig()
    a, task, b = await start(rig)
    c = await consult(rig, a, b)
    await b.press("*3")
    room = f"switchctl-{a.uuid}"
    await until(lambda: len(rig.sw.rooms.get(room, [])) == 3)
    assert a.hears == b.hears == c.hears == f"conference:{room}"
    await b.hang_up()
    # two remain: back to a plain call between the caller and the target, which counts as done
    await until(lambda: a.hears == f"bridge:{c.uuid}")
    assert not task.done() and a.up and c.up and room not in rig.sw.rooms
    assert state(rig, a) == "talking" and rig.svc.conversation(a.uuid)["transfers"] == 1
    await c.hang_up()
    done = await asyncio.wait_for(task, 1)  # the target hangs up: the caller's dial ends
    assert a.up and not done.result.caller_hung_up
    await end(rig, a, task)


async def test_after_a_three_way_the_remaining_party_can_transfer_again():
    rig = make_rig(t202=FarEnd())
    a, task, b = await start(rig)
    c = await consult(rig, a, b)
    await rig.svc.request(a.uuid, "three_way")
    await c.hang_up()  # the target leaves: caller and transferor are a plain call again
    await until(lambda: a.hears == f"bridge:{b.uuid}")
    assert rig.svc.conversation(a.uuid)["transfers"] == 0  # the caller is back with whom it had
    await b.press("*1202#")
    d = await rig.sw.answered("202")
    await until(lambda: a.hears == f"bridge:{d.uuid}")
    await end(rig, a, task)


async def test_three_way_caller_hangs_up_last_party_hung_up():
    rig = make_rig()
    a, task, b = await start(rig)
    c = await consult(rig, a, b)
    await rig.svc.request(a.uuid, "three_way")
    await a.hang_up()
    await asyncio.sleep(0.03)
    assert b.up and c.up
    await b.hang_up()
    done = await asyncio.wait_for(task, 1)
    assert done.result.caller_hung_up and not c.up
    await end(rig, a, task)


async def test_three_way_complete_leaves_caller_and_target():
    rig = make_rig()
    a, task, b = await start(rig)
    c = await consult(rig, a, b)
    await rig.svc.request(a.uuid, "three_way")
    await rig.svc.request(a.uuid, "complete")  # the transferor leaves the room
    await until(lambda: not b.up)
    await until(lambda: a.hears == f"bridge:{c.uuid}")  # caller and target: a plain call again
    assert c.up and a.up and not task.done()
    await end(rig, a, task)


# -- chained transfers, data, API errors, cancellation ----------------------------------------------


async def test_chained_transfers_carry_the_data():
    rig = make_rig(t201=FarEnd(), t202=FarEnd())
    a, task, b = await start(rig)
    await b.press("*1201#")
    c = await rig.sw.answered("201")
    await until(lambda: a.hears == f"bridge:{c.uuid}")
    rig.svc.set_data(a.uuid, {"ticket": "T-7", "customer": "C-43"})
    await b.press("*1202#")  # b is gone: its keys do nothing
    await c.press("*2202#")  # the party that answered last transfers again
    d = await rig.sw.answered("202")
    await until(lambda: state(rig, a) == "consulting")
    assert d.variables["switchctl_data_ticket"] == "T-7"
    await c.press("*2")
    await until(lambda: a.hears == f"bridge:{d.uuid}")
    pops = rig.events("screen_pop")
    assert [p["leg"] for p in pops] == [b.uuid, c.uuid, d.uuid]
    assert pops[2]["data"]["ticket"] == "T-7" and pops[2]["transfers"] == 2
    assert pops[2]["ivr_path"] == ["start", "menu", "agents"]
    done = await end(rig, a, task)
    assert done.transfers == 2 and done.data["customer"] == "C-43"


async def test_api_views_and_refused_requests_change_nothing():
    rig = make_rig()
    a, task, b = await start(rig)
    (view,) = rig.svc.conversations()
    assert view["conversation"] == a.uuid and view["party"] == b.uuid and view["state"] == "talking"
    assert view["caller"] == {"number": "1000", "name": "Alice"}
    with pytest.raises(TransferError, match="no transferable call 'nope'"):
        await rig.svc.request("nope", "blind", "201")
    with pytest.raises(TransferError, match="no consultation to complete"):
        await rig.svc.request(a.uuid, "complete")
    with pytest.raises(TransferError, match="no transfer route for '1'"):
        await rig.svc.request(a.uuid, "blind", "1")
    with pytest.raises(TransferError, match="only a blind transfer"):
        await rig.svc.request(a.uuid, "attended", "81")
    with pytest.raises(TransferError, match="'missing', which is not loaded"):
        await rig.svc.request(a.uuid, "blind", "91")
    with pytest.raises(TransferError, match="needs a number"):
        await rig.svc.request(a.uuid, "blind")
    with pytest.raises(TransferError, match="unknown transfer action 'park'"):
        await rig.svc.request(a.uuid, "park")
    with pytest.raises(TransferError, match="data key"):
        rig.svc.set_data(a.uuid, {"bad key": "x"})
    with pytest.raises(TransferError, match="no transferable call"):
        rig.svc.set_data("nope", {"k": "v"})
    assert rig.svc.conversation(a.uuid) == view  # nothing changed
    assert rig.sw.originated == [] and a.hears == f"bridge:{b.uuid}"
    await end(rig, a, task)


async def test_three_way_refused_while_the_target_rings():
    rig = make_rig(t201=FarEnd(after=1.0))
    a, task, _b = await start(rig)
    await rig.svc.request(a.uuid, "attended", "201")
    with pytest.raises(TransferError, match="answered consultation"):
        await rig.svc.request(a.uuid, "three_way")
    with pytest.raises(TransferError, match="cannot start a blind transfer"):
        await rig.svc.request(a.uuid, "blind", "202")
    assert state(rig, a) == "consult_ringing"
    await rig.svc.request(a.uuid, "cancel")
    await end(rig, a, task)


async def test_feature_codes_off_for_the_node_api_still_works():
    rig = make_rig(t201=FarEnd())
    context = DialContext(flow="main", node="n", feature_codes=False)
    a, task, b = await start(rig, context=context)
    # no codes: the switch may bridge natively (Asterisk), keys need not reach us
    assert [spec.feature_keys for spec in a.dial_specs] == [False]
    await b.press("*1201#")
    await asyncio.sleep(0.05)
    assert rig.sw.originated == [] and a.hears == f"bridge:{b.uuid}"
    await rig.svc.request(a.uuid, "blind", "201")
    c = await rig.sw.answered("201")
    await until(lambda: a.hears == f"bridge:{c.uuid}")
    await end(rig, a, task)


async def test_number_entered_by_pause_without_hash():
    rig = make_rig(t201=FarEnd())
    a, task, b = await start(rig)
    await b.press("*1201")  # digit_timeout (0.15 s) completes it
    c = await rig.sw.answered("201")
    await until(lambda: a.hears == f"bridge:{c.uuid}")
    await end(rig, a, task)


@pytest.mark.parametrize("when", ["consult_ringing", "consulting", "blind"])
async def test_cancelling_the_callers_coroutine_leaves_no_leg(when: str):
    rig = make_rig(t201=FarEnd(after=0.02 if when == "consulting" else 1.0))
    a, task, _b = await start(rig)
    await rig.svc.request(a.uuid, "blind" if when == "blind" else "attended", "201")
    await until(lambda: state(rig, a) == when)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await a.hangup()
    await rig.sw.settle(0.02)
    assert rig.sw.live == 0 and rig.svc.conversations() == []
    await rig.sw.close()


async def test_transfer_events_trace_the_states():
    rig = make_rig(t201=FarEnd())
    a, task, b = await start(rig)
    c = await consult(rig, a, b)
    await rig.svc.request(a.uuid, "complete")
    await until(lambda: a.hears == f"bridge:{c.uuid}")
    await end(rig, a, task)
    states = [(e["state"], e["mode"]) for e in rig.events("transfer")]
    assert states == [("ringing", None), ("talking", None), ("consult_ringing", "attended"),
                      ("consulting", "attended"), ("completed", "attended"), ("ended", None)]
    assert all(e["conversation"] == a.uuid for e in rig.events("transfer"))
