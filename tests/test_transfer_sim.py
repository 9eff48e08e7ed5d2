"""Transfers end to end (issue 5 acceptance): the real `Controller` (tests/sites/transfer) on the
FreeSWITCH simulator, a caller placed into the desk flow (9000: welcome prompt, agent 2001 rings
with transfers on; its failure branches are the fallback: an apology, then the operator 2009).

Far ends are simulated phones (`SimConfig.users`): they answer, are busy, do not answer or decline
(603), press feature codes after answering (`UserBehaviour.dtmf`), or are driven by the test at a
chosen moment of the conversation (keys, hangups). Every scenario asserts who ends up talking to
whom — read from the simulator's channel state: bridged pairs and conference rooms, since
`Call.bridge` joins the caller and the leg in a two-member room — that the caller is never dropped
while a fallback exists, the `transfer` / `screen_pop` events on the controller's EventBus, and that
the switch's `show channels count` (asked over ESL) is back to 0 once the call is over.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from switchctl.config.site import load_site
from switchctl.controller import Controller
from switchctl.events import BusEvent
from switchctl.flows import FlowTrace
from switchctl.flowtest import sim_routes
from switchctl.sim import (
    FreeSwitchSim,
    GatewayBehaviour,
    Route,
    SimCall,
    SimConfig,
    UserBehaviour,
)
from switchctl.sim.channel import SimChannel
from switchctl.sim.conference import rooms
from switchctl.sim.engine import DIGIT_SPACING
from switchctl.sitecheck import check_site

SITE = Path(__file__).resolve().parent / "sites" / "transfer" / "site.yaml"
SPEED = 10.0  # media time runs 10x: the site's 3 s ring timeouts take 0.3 s
WAIT = 8.0  # wall seconds any awaited state may take before the scenario fails
RINGBACK = "tone_stream://%(2000,4000,440,480);loops=-1"  # the site's transfer ringback (the default)
MUSIC = "tone_stream://%(300,300,350);loops=-1"  # the site's transfer music (a held caller)
SORRY = "tone_stream://%(300,0,400)"  # the desk flow's apology before the operator
SALES = "tone_stream://%(300,0,800)"  # the sales flow's greeting

A = "A"  # the caller's label in talk groups

ANSWER = UserBehaviour(answer_after=0.3)
BUSY = UserBehaviour(busy=True)
NO_ANSWER = UserBehaviour(answer_after=None)
REJECT = UserBehaviour(reject=True)


def agent(*keys: tuple[float, str]) -> UserBehaviour:
    """A phone that answers and presses `keys` ((seconds after answer, digits), ...)."""
    return UserBehaviour(answer_after=0.3, dtmf=keys)


class Rig:
    """The simulator, the controller serving it, and what the test watches of both."""

    def __init__(self, sim: FreeSwitchSim, controller: Controller, traces: dict[str, FlowTrace | None]) -> None:
        self.sim = sim
        self.controller = controller
        self.traces = traces  # the controller's flow traces by call uuid
        self.events: list[BusEvent] = []
        self.call: SimCall | None = None

    # -- placing and driving calls --------------------------------------------------------------

    async def place(self) -> SimCall:
        """A caller (555, Ann) dials the desk; returns once its flow's dial is a conversation."""
        self.call = self.sim.place_call("9000", "555", caller_name="Ann")
        await self.until(lambda: self.call.uuid is not None and self.conversation() is not None,
                         "the desk's dial became a conversation")
        return self.call

    @property
    def uuid(self) -> str:
        assert self.call is not None and self.call.uuid is not None
        return self.call.uuid

    def conversation(self) -> dict[str, Any] | None:
        transfers = self.controller.transfers
        assert transfers is not None
        return transfers.conversation(self.uuid) if self.call and self.call.uuid else None

    def leg(self, user: str) -> SimChannel:
        """The live channel of phone `user` (the newest one: a recalled phone has a second leg)."""
        legs = [ch for ch in self.sim.channels.values() if label(ch, self.uuid) == user and not ch.hungup]
        assert legs, f"no live leg to {user}: {sorted(label(c, self.uuid) for c in self.sim.channels.values())}"
        return legs[-1]

    async def press(self, user: str, digits: str) -> None:
        """Phone `user` presses `digits` now (RFC 2833, spaced like the simulator's far ends)."""
        leg = self.leg(user)
        for index, digit in enumerate(digits):
            if index:
                await asyncio.sleep(DIGIT_SPACING / SPEED)
            leg.receive_dtmf(digit)

    def hang_up(self, user: str) -> None:
        """Phone `user` hangs up (BYE from the far end)."""
        self.leg(user).hangup("NORMAL_CLEARING", kind="caller", by="callee")

    def behave(self, user: str, behaviour: UserBehaviour) -> None:
        """How phone `user` behaves from its next call on (e.g. gone home before its recall)."""
        self.sim.config.users[user] = behaviour

    # -- what is observed -------------------------------------------------------------------------

    def talking(self) -> set[frozenset[str]]:
        """Who hears whom now: bridged pairs and conference rooms of two or more live members."""
        groups: set[frozenset[str]] = set()
        for ch in self.sim.channels.values():
            other = ch.bridged_to
            if other is not None and not ch.hungup and not other.hungup:
                groups.add(frozenset({label(ch, self.uuid), label(other, self.uuid)}))
        for room in rooms(self.sim).values():
            members = frozenset(label(m.channel, self.uuid) for m in room.members
                                if not m.kicked and not m.channel.hungup)
            if len(members) >= 2:
                groups.add(members)
        return groups

    def caller_hears(self) -> str | None:
        """The prompt the caller's channel plays now (ringback, music on hold...), None otherwise."""
        assert self.call is not None and self.call.channel is not None
        ch = self.call.channel
        return ch.data.last_arg if ch.running_app == "playback" and not ch.hungup else None

    def states(self) -> list[str]:
        return [e.payload["state"] for e in self.events if e.kind == "transfer"]

    def pops(self) -> list[dict[str, Any]]:
        return [dict(e.payload) for e in self.events if e.kind == "screen_pop"]

    async def until(self, check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting until {what}; talking={self.talking()} "
                                     f"states={self.states()}")
            await asyncio.sleep(0.005)

    async def talk(self, *groups: set[str], what: str = "") -> None:
        """Wait until exactly these groups talk (e.g. {A, "2002"})."""
        want = {frozenset(g) for g in groups}
        await self.until(lambda: self.talking() == want, what or f"talking == {want}")

    async def answered(self, who: str = "2001") -> None:
        """`who` answered the desk's dial and the feature has taken its leg over (it may transfer)."""
        await self.talk({A, who})
        await self.until(lambda: (self.conversation() or {}).get("state") == "talking",
                         f"{who}'s leg was taken over")

    async def state(self, state: str) -> None:
        await self.until(lambda: state in self.states(), f"transfer state '{state}' was published")

    async def ended(self) -> None:
        """The caller's call is over and the switch has no channel left (asked over ESL)."""
        assert self.call is not None
        await asyncio.wait_for(self.call.done, WAIT)
        switch = self.controller.switches["fs1"]
        deadline = time.monotonic() + WAIT
        while True:
            count = int((await switch.api("show channels count")).split()[0] or 0)
            if count == 0 and not self.sim.channels:
                break
            assert time.monotonic() < deadline, f"{count} channel(s) left: {self.talking()}"
            await asyncio.sleep(0.01)
        await self.until(lambda: self.conversation() is None, "the conversation ended")

    async def trace(self) -> FlowTrace:
        """The caller's flow trace, once its flow has run to the end."""
        await self.until(lambda: self.traces.get(self.uuid) is not None, "the caller's flow ended")
        trace = self.traces[self.uuid]
        assert trace is not None
        return trace


def label(ch: SimChannel, caller_uuid: str) -> str:
    """The caller is "A", a phone's leg its extension, a gateway's leg "gw"."""
    if ch.uuid == caller_uuid:
        return A
    name = ch.data.name
    if name.startswith("sofia/gateway/"):
        return "gw"
    return name.rsplit("/", 1)[-1].split("@", 1)[0]


@pytest.fixture
async def rig_for(caplog: pytest.LogCaptureFixture) -> AsyncIterator[Callable[..., Any]]:
    """rig_for(u2001=behaviour, ...) -> a started Rig whose phones behave so (the others answer).
    A scenario that made the controller log an error fails."""
    started: list[tuple[FreeSwitchSim, Controller, Any, asyncio.Task[None]]] = []

    async def make(**users: UserBehaviour) -> Rig:
        site = load_site(SITE)
        checked = check_site(site)
        assert checked.ok, checked.report()
        behaviours = {f"20{n:02d}": ANSWER for n in range(1, 10)}
        behaviours.update({user.removeprefix("u"): b for user, b in users.items()})
        # The controller's outbound port is known once it listens: the simulator's dialplan (a
        # list it reads on every call) is filled in then.
        dialplan: list[Route] = []
        sim = FreeSwitchSim(SimConfig(dialplan=dialplan, users=behaviours, media_speed=SPEED,
                                      gateways={"upstream": GatewayBehaviour(answer_after=0.3)},
                                      max_call_seconds=120.0))
        await sim.start()
        [fs1] = site.switches
        assert fs1.esl is not None and fs1.outbound is not None
        fs1 = dataclasses.replace(fs1, esl=dataclasses.replace(fs1.esl, port=sim.esl_port),
                                  outbound=dataclasses.replace(fs1.outbound, port=0))
        site = dataclasses.replace(site, switches=(fs1,), web_listen=("127.0.0.1", 0))
        traces: dict[str, FlowTrace | None] = {}
        controller = Controller(site, checked.flows, on_trace=traces.__setitem__)
        subscription = controller.events.subscribe()
        await controller.start()
        rig = Rig(sim, controller, traces)
        collector = asyncio.create_task(collect(subscription, rig.events))
        started.append((sim, controller, subscription, collector))
        dialplan.extend(sim_routes(site, checked.flows, f"127.0.0.1:{controller.servers['fs1'].port}"))
        await rig.until(lambda: controller.clients["fs1"].connected, "the controller's ESL client connected")
        return rig

    yield make
    for sim, controller, subscription, collector in started:
        collector.cancel()
        subscription.close()
        await controller.stop(grace=1)
        await sim.close()
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]  # + teardown's
    errors = [r.getMessage() for r in records if r.levelno >= logging.ERROR and r.name.startswith("switchctl")]
    assert not errors, errors


async def collect(subscription: Any, into: list[BusEvent]) -> None:
    async for event in subscription:
        into.append(event)


def with_(*groups: set[str]) -> set[frozenset[str]]:
    return {frozenset(g) for g in groups}


# -- blind ----------------------------------------------------------------------------------------


async def test_blind_transfer_connects_the_caller_with_the_target(rig_for) -> None:
    rig = await rig_for(u2001=agent((2.0, "*12002#")))
    await rig.place()
    await rig.answered()
    await rig.state("blind")
    await rig.until(lambda: not any(label(ch, rig.uuid) == "2001" for ch in rig.sim.channels.values()),
                    "the transferor was released at once")
    await rig.talk({A, "2002"}, what="the caller talks with the blind target")
    assert rig.states()[:3] == ["ringing", "talking", "blind"] and "completed" in rig.states()
    pops = rig.pops()
    assert [p["to"] for p in pops] == ["2001", "2002"] and [p["transfers"] for p in pops] == [0, 1]
    assert pops[1]["data"]["customer"] == "C-555" and pops[1]["data"]["caller_name"] == "Ann"
    assert pops[1]["ivr_path"] == ["hello", "who", "welcome", "ring"]
    rig.hang_up("2002")
    await rig.ended()
    trace = await rig.trace()
    assert trace.steps[-2:] == [("desk", "ring", "next"), ("desk", "bye", "hangup")]
    assert trace.variables["dial_transfers"] == "1"


@pytest.mark.parametrize("target,behaviour,outcome", [
    ("2003", BUSY, "busy"), ("2004", NO_ANSWER, "no_answer"), ("2005", REJECT, "rejected"),
])
async def test_blind_target_fails_the_transferor_is_recalled(rig_for, target, behaviour, outcome) -> None:
    rig = await rig_for(u2001=agent((2.0, f"*1{target}#")), **{f"u{target}": behaviour})
    await rig.place()
    await rig.answered()
    await rig.state("blind")
    rig.behave("2001", ANSWER)  # answers its recall without pressing the code again
    await rig.until(lambda: rig.caller_hears() == RINGBACK, "the caller hears ringback")
    await rig.state("recall")
    await rig.talk({A, "2001"}, what="the recalled transferor has the caller back")
    [failed] = [e.payload for e in rig.events if e.kind == "transfer" and e.payload["state"] == "failed"]
    assert failed["outcome"] == outcome and failed["target"] == target
    assert [p["to"] for p in rig.pops()] == ["2001", "2001"]  # the first answer, then the recall
    rig.hang_up("2001")
    await rig.ended()
    trace = await rig.trace()
    assert ("desk", "ring", "next") in trace.steps and trace.variables["dial_transfers"] == "0"


async def test_blind_target_and_recall_fail_the_flow_fallback_takes_the_caller(rig_for) -> None:
    rig = await rig_for(u2001=agent((2.0, "*12003#")), u2003=BUSY)
    await rig.place()
    await rig.answered()
    await rig.state("blind")
    rig.behave("2001", NO_ANSWER)  # the transferor has left its desk: the recall rings out
    await rig.state("recall")
    await rig.talk({A, "2009"}, what="the operator (the dial's failure branch) has the caller")
    assert ("playback", SORRY, "FILE PLAYED") in rig.call.channel.apps_run
    rig.hang_up("2009")
    await rig.ended()
    trace = await rig.trace()
    assert [s for s in trace.steps if s[0] == "desk"][3:] == [
        ("desk", "ring", "busy"), ("desk", "sorry", "next"), ("desk", "operator", "next"), ("desk", "bye", "hangup")]


async def test_blind_transfer_to_a_flow_continues_the_run_there(rig_for) -> None:
    rig = await rig_for(u2001=agent((2.0, "*17#")))
    await rig.place()
    await rig.answered()
    await rig.talk({A, "2008"}, what="the sales flow's dial has the caller")
    assert ("playback", SALES, "FILE PLAYED") in rig.call.channel.apps_run
    rig.hang_up("2008")
    await rig.ended()
    trace = await rig.trace()
    assert ("desk", "ring", "flow") in trace.steps
    assert [s[1] for s in trace.steps if s[0] == "sales"] == ["greet", "ring", "bye"]


async def test_blind_transfer_to_a_gateway_number(rig_for) -> None:
    rig = await rig_for(u2001=agent((2.0, "*1012345#")))
    await rig.place()
    await rig.talk({A, "gw"}, what="the caller talks with the gateway's party")
    assert rig.leg("gw").data.name == "sofia/gateway/upstream/+3312345"
    rig.call.hangup()
    await rig.ended()
    assert (await rig.trace()).result == "caller_hangup"


# -- attended -------------------------------------------------------------------------------------


async def consulting(rig: Rig, target: str = "2002") -> None:
    """Agent 2001 (scripted to press *2<target>#) consults `target` while the caller hears music."""
    await rig.place()
    await rig.answered()
    await rig.talk({"2001", target}, what="transferor and target consult")
    await rig.state("consulting")
    assert rig.caller_hears() == MUSIC


async def test_attended_complete(rig_for) -> None:
    rig = await rig_for(u2001=agent((2.0, "*22002#")))
    await consulting(rig)
    await rig.press("2001", "*2")
    await rig.talk({A, "2002"}, what="the caller talks with the target after the completion")
    assert rig.conversation()["transfers"] == 1
    assert [p["to"] for p in rig.pops()] == ["2001", "2002"]
    assert rig.states()[:4] == ["ringing", "talking", "consult_ringing", "consulting"]
    assert "completed" in rig.states()
    rig.call.hangup()  # the caller ends it: the target's leg goes too
    await rig.ended()
    assert (await rig.trace()).result == "caller_hangup"


async def test_attended_cancel_brings_the_caller_back(rig_for) -> None:
    rig = await rig_for(u2001=agent((2.0, "*22002#")))
    await consulting(rig)
    await rig.press("2001", "*1")
    await rig.talk({A, "2001"}, what="the caller is back with the transferor")
    assert "cancelled" in rig.states()
    assert not [ch for ch in rig.sim.channels.values() if label(ch, rig.uuid) == "2002"]
    rig.hang_up("2001")
    await rig.ended()
    trace = await rig.trace()
    assert trace.steps[-2:] == [("desk", "ring", "next"), ("desk", "bye", "hangup")]
    assert trace.variables["dial_transfers"] == "0"


@pytest.mark.parametrize("target,behaviour,outcome", [
    ("2003", BUSY, "busy"), ("2004", NO_ANSWER, "no_answer"), ("2005", REJECT, "rejected"),
])
async def test_attended_target_fails_the_caller_is_back_with_the_transferor(rig_for, target, behaviour,
                                                                            outcome) -> None:
    rig = await rig_for(u2001=agent((2.0, f"*2{target}#")), **{f"u{target}": behaviour})
    await rig.place()
    await rig.answered()
    await rig.state("consult_ringing")
    await rig.state("failed")
    await rig.talk({A, "2001"}, what="the caller is back with the transferor")
    [failed] = [e.payload for e in rig.events if e.kind == "transfer" and e.payload["state"] == "failed"]
    assert failed["outcome"] == outcome
    assert [p["to"] for p in rig.pops()] == ["2001"]  # no one else took the call
    rig.hang_up("2001")
    await rig.ended()
    trace = await rig.trace()
    assert trace.steps[-2:] == [("desk", "ring", "next"), ("desk", "bye", "hangup")]


async def test_transferor_hangs_up_during_the_consultation_caller_gets_the_target(rig_for) -> None:
    rig = await rig_for(u2001=agent((2.0, "*22002#")))
    await consulting(rig)
    rig.hang_up("2001")
    await rig.talk({A, "2002"}, what="the caller talks with the target")
    assert rig.conversation()["transfers"] == 1
    rig.hang_up("2002")
    await rig.ended()
    trace = await rig.trace()
    assert trace.steps[-2:] == [("desk", "ring", "next"), ("desk", "bye", "hangup")]


SLOW = UserBehaviour(answer_after=2.0)  # rings 2 s (0.2 s here): time for the transferor to leave


async def test_transferor_hangs_up_while_the_target_rings_semi_attended(rig_for) -> None:
    rig = await rig_for(u2001=agent((2.0, "*22002#")), u2002=SLOW)
    await rig.place()
    await rig.answered()
    await rig.state("consult_ringing")
    rig.hang_up("2001")
    await rig.state("semi_attended")
    await rig.until(lambda: rig.caller_hears() == RINGBACK, "the caller hears ringback")
    await rig.talk({A, "2002"}, what="the target answered: the caller talks with it")
    assert rig.conversation()["transfers"] == 1 and [p["to"] for p in rig.pops()] == ["2001", "2002"]
    rig.hang_up("2002")
    await rig.ended()


@pytest.mark.parametrize("recall_answers", [True, False])
async def test_semi_attended_target_fails_recall_or_fallback(rig_for, recall_answers) -> None:
    rig = await rig_for(u2001=agent((2.0, "*22004#")), u2004=NO_ANSWER)
    await rig.place()
    await rig.answered()
    await rig.state("consult_ringing")
    rig.behave("2001", ANSWER if recall_answers else NO_ANSWER)
    rig.hang_up("2001")
    await rig.state("semi_attended")
    await rig.state("recall")
    back = "2001" if recall_answers else "2009"
    await rig.talk({A, back}, what=f"{back} has the caller")
    rig.hang_up(back)
    await rig.ended()
    trace = await rig.trace()
    assert ("desk", "ring", "next" if recall_answers else "no_answer") in trace.steps


async def test_caller_hangs_up_during_the_consultation(rig_for) -> None:
    rig = await rig_for(u2001=agent((2.0, "*22002#")))
    await consulting(rig)
    rig.call.hangup()
    await rig.until(lambda: "gone" in [e.payload.get("caller") for e in rig.events], "the caller left")
    await asyncio.sleep(0.2)  # 2 s of media: still talking
    assert rig.talking() == with_({"2001", "2002"})  # transferor and target go on talking
    assert rig.call.channel.hungup and not rig.caller_hears()
    rig.hang_up("2002")
    await rig.ended()  # ... and when one of them leaves the other is hung up: nothing left
    assert (await rig.trace()).result == "caller_hangup"


# -- three-way ------------------------------------------------------------------------------------


@pytest.mark.parametrize("first,second", [("2001", "2002"), ("2002", "2001"), (A, "2001"), ("2001", None)])
async def test_three_way_then_each_party_leaves(rig_for, first, second) -> None:
    """`second` None: both phones hang up at once (the caller alone is taken out of the room)."""
    rig = await rig_for(u2001=agent((2.0, "*22002#")))
    await consulting(rig)
    await rig.press("2001", "*3")
    await rig.talk({A, "2001", "2002"}, what="the three are in one room")
    await rig.state("three_way")
    if second is None:
        rig.hang_up("2001")
        rig.hang_up("2002")  # the caller, alone, is taken out of the room: the flow goes on
    else:
        rig.call.hangup() if first == A else rig.hang_up(first)
        await rig.talk({A, "2001", "2002"} - {first}, what=f"the two others stay after {first} left")
        await asyncio.sleep(0.1)  # the controller has seen it: still the two of them
        assert rig.talking() == with_({A, "2001", "2002"} - {first})
        if second != A:
            rig.hang_up(second)
    await rig.ended()
    trace = await rig.trace()
    assert trace.result == ("caller_hangup" if first == A else "hangup")
    if first != A:
        assert trace.steps[-2:] == [("desk", "ring", "next"), ("desk", "bye", "hangup")]


# -- chained ---------------------------------------------------------------------------------------


async def test_chained_transfer_the_target_transfers_again(rig_for) -> None:
    rig = await rig_for(u2001=agent((2.0, "*12002#")), u2002=agent((2.0, "*22003#")))
    await rig.place()
    await rig.talk({A, "2002"}, what="the blind target took the call")
    await rig.talk({"2002", "2003"}, what="which consults 2003")
    await rig.press("2002", "*2")
    await rig.talk({A, "2003"}, what="the caller reached the second target")
    pops = rig.pops()
    assert [(p["to"], p["transfers"]) for p in pops] == [("2001", 0), ("2002", 1), ("2003", 2)]
    assert all(p["data"]["customer"] == "C-555" for p in pops)
    rig.hang_up("2003")
    await rig.ended()
    assert (await rig.trace()).variables["dial_transfers"] == "2"


# -- the same through the web API -------------------------------------------------------------------

HTTP_TIMEOUT = aiohttp.ClientTimeout(total=WAIT)


async def api(rig: Rig, http: aiohttp.ClientSession, method: str, path: str,
              body: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    assert rig.controller.web is not None
    async with http.request(method, f"{rig.controller.web.url}/api/conversations{path}", json=body) as resp:
        return resp.status, await resp.json()


async def sse_events(rig: Rig, http: aiohttp.ClientSession, kinds: str, into: list[tuple[str, dict]],
                     subscribed: asyncio.Event) -> None:
    """Read GET /api/events?kinds=... as a console does: (event name, data) pairs."""
    assert rig.controller.web is not None
    async with http.get(f"{rig.controller.web.url}/api/events", params={"kinds": kinds},
                        timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as resp:
        name = None
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line == ": subscribed":
                subscribed.set()
            elif line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: ") and name is not None:
                into.append((name, json.loads(line[len("data: "):])))
                name = None


async def test_api_blind_transfer_with_call_data_and_the_event_stream(rig_for) -> None:
    rig = await rig_for()
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        streamed: list[tuple[str, dict]] = []
        subscribed = asyncio.Event()
        reader = asyncio.create_task(sse_events(rig, http, "screen_pop", streamed, subscribed))
        try:
            await asyncio.wait_for(subscribed.wait(), WAIT)
            await rig.place()
            await rig.answered()
            status, listed = await api(rig, http, "GET", "")
            assert status == 200 and [c["call"] for c in listed["conversations"]] == [rig.uuid]
            assert (await api(rig, http, "GET", "/no-such-call"))[0] == 404
            status, view = await api(rig, http, "PATCH", f"/{rig.uuid}/data", {"ticket": "T-4711"})
            assert status == 200 and view["data"]["ticket"] == "T-4711" and view["state"] == "talking"
            status, view = await api(rig, http, "POST", f"/{rig.uuid}/transfer", {"mode": "blind", "to": "2002"})
            assert status == 200 and view["state"] == "blind" and view["target"]["to"] == "2002", view
            await rig.talk({A, "2002"}, what="the caller talks with the API's blind target")
            await rig.until(lambda: len(streamed) == 2, "both screen pops were streamed")
            assert [data["to"] for _, data in streamed] == ["2001", "2002"]
            assert streamed[1][1]["data"]["ticket"] == "T-4711" and streamed[1][1]["transfers"] == 1
            assert streamed[1][1]["ivr_path"] == ["hello", "who", "welcome", "ring"]
            rig.hang_up("2002")
            await rig.ended()
        finally:
            reader.cancel()
    trace = await rig.trace()
    assert trace.variables["data_ticket"] == "T-4711" and trace.variables["dial_transfers"] == "1"


async def test_api_attended_refusals_then_complete(rig_for) -> None:
    rig = await rig_for(u2002=SLOW)
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        await rig.place()
        await rig.answered()
        for path, body, why in [
            ("complete", None, "no consultation"),
            ("transfer", {"mode": "attended", "to": "7"}, "only a blind transfer"),
            ("transfer", {"mode": "attended", "to": "99"}, "no transfer route"),
        ]:
            status, answer = await api(rig, http, "POST", f"/{rig.uuid}/{path}", body)
            assert status == 409 and why in answer["error"], answer
        assert rig.talking() == with_({A, "2001"})  # refused requests changed nothing
        status, view = await api(rig, http, "POST", f"/{rig.uuid}/transfer", {"mode": "attended", "to": "2002"})
        assert status == 200 and view["state"] == "consult_ringing" and view["transferor"] is not None
        await rig.talk({"2001", "2002"}, what="the consultation")
        assert rig.caller_hears() == MUSIC
        status, view = await api(rig, http, "POST", f"/{rig.uuid}/complete")
        assert status == 200 and view["state"] == "talking" and view["transfers"] == 1
        await rig.talk({A, "2002"}, what="completed through the API")
        rig.hang_up("2002")
        await rig.ended()


async def test_api_three_way_then_cancel_drops_the_target(rig_for) -> None:
    rig = await rig_for()
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        await rig.place()
        await rig.answered()
        status, _ = await api(rig, http, "POST", f"/{rig.uuid}/transfer", {"mode": "attended", "to": "2002"})
        assert status == 200
        await rig.state("consulting")
        status, view = await api(rig, http, "POST", f"/{rig.uuid}/three-way")
        assert status == 200 and view["state"] == "three_way" and view["room"], view
        await rig.talk({A, "2001", "2002"}, what="the three-way room")
        status, _ = await api(rig, http, "POST", f"/{rig.uuid}/cancel")
        assert status == 200
        await rig.talk({A, "2001"}, what="the target was dropped from the room")
        rig.hang_up("2001")
        await rig.ended()
    trace = await rig.trace()
    assert trace.steps[-2:] == [("desk", "ring", "next"), ("desk", "bye", "hangup")]


async def test_api_transfers_a_dial_without_feature_codes(rig_for) -> None:
    # 2001 is busy: the fallback's operator dial (transfer: false) has the caller; the operator's
    # keys do nothing there, a console can still transfer the call.
    rig = await rig_for(u2001=BUSY, u2009=agent((0.5, "*12002#")))
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        rig.call = rig.sim.place_call("9000", "555", caller_name="Ann")
        await rig.talk({A, "2009"}, what="the operator has the caller")
        await rig.until(lambda: rig.conversation() is not None and rig.conversation()["node"] == "operator",
                        "the operator's dial is a conversation")
        await asyncio.sleep(0.3)  # the operator's *12002# (3 media s) went by
        assert rig.talking() == with_({A, "2009"}) and rig.conversation()["state"] == "talking"
        status, _ = await api(rig, http, "POST", f"/{rig.uuid}/transfer", {"mode": "blind", "to": "2002"})
        assert status == 200
        await rig.talk({A, "2002"}, what="the console's blind target")
        rig.hang_up("2002")
        await rig.ended()
