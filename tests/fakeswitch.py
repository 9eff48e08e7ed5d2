"""An in-memory switch for feature tests: channels, bridges, parking, conferences, originate.

It models the contract of switchctl/switch/call.py as features see it:
- `FakeSwitch.caller()` makes the caller A (`FakeCall`, a flow's Call); `Call.dial` and
  `Switch.originate` ring addresses whose far ends are scripted with `FarEnd` (answer after t, busy,
  no answer until the ring timeout, reject, fail; press keys or hang up at given times after answer).
- A bridge made by `Call.dial` keeps the dial's rule: its peer hangs up with the caller. A bridge
  made by `Call.bridge` / `Leg.bridge` leaves a Leg parked (silence) when the other side leaves;
  moving a leg out of A's bridge ends A's dial/bridge with cause TRANSFERRED.
- Conferences are rooms of members; `conference_remove` takes a Call out ("left").
- `live` counts the channels up (ringing ones too): scenario tests assert it returns to zero.
Every channel keeps `heard`, the list of what it was connected to / heard, for assertions
("ringing", "music:<prompt>", "bridge:<uuid>", "conference:<room>", "silence").
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from switchctl.switch.call import (
    Call,
    CallError,
    CallGone,
    CallInfo,
    CollectOutcome,
    CollectResult,
    CollectSpec,
    DialAnswer,
    DialFailed,
    DialOutcome,
    DialResult,
    DialSpec,
    DialTarget,
    Leg,
    OriginateSpec,
    Recording,
    RecordResult,
    RecordSpec,
    SayKind,
    Switch,
    dial_outcome_for_cause,
)

FAIL_CAUSE = {"busy": "USER_BUSY", "no_answer": "NO_ANSWER", "reject": "CALL_REJECTED",
              "fail": "UNALLOCATED_NUMBER"}


@dataclass(frozen=True)
class FarEnd:
    """How the party at an address behaves when rung. `outcome`: answer, busy, no_answer (rings
    until the ring timeout), reject or fail; `after`: ring time before it answers or refuses;
    `press`: (seconds after answer, keys) the party presses; `hangup_after`: seconds after answer."""

    outcome: str = "answer"
    after: float = 0.01
    press: Sequence[tuple[float, str]] = ()
    hangup_after: float | None = None


def _now_us() -> int:
    return time.time_ns() // 1000


class _Bridge:
    def __init__(self, a: _Chan, b: _Chan, *, call: FakeCall | None, dial_rule: bool) -> None:
        self.a, self.b = a, b
        self.call = call  # the Call whose dial/bridge waits on `done`
        self.dial_rule = dial_rule
        self.done: asyncio.Future[DialResult] = asyncio.get_running_loop().create_future()

    def other(self, ch: _Chan) -> _Chan:
        return self.b if ch is self.a else self.a


class _Chan:
    """What A and the legs share: up/down, where the channel is, what it heard."""

    uuid: str

    def _init_chan(self, switch: FakeSwitch, target: DialTarget | None) -> None:
        self.sw = switch
        self.target = target
        self.up = True
        self.cause: str | None = None
        self.answered_at_us = 0
        self.place: Any = None  # None (silence), ("music", x), _Bridge, ("room", name), ("ringing",)
        self.heard: list[str] = []
        self.gone = asyncio.Event()
        self.dtmf_handler: Callable[[str], None] | None = None
        self.announced: list[str] = []

    @property
    def hangup_cause(self) -> str | None:
        return self.cause

    @property
    def hears(self) -> str:
        place = self.place
        if isinstance(place, _Bridge):
            return f"bridge:{place.other(self).uuid}"
        if place is None:
            return "silence"
        if place[0] == "music":
            return f"music:{place[1]}"
        if place[0] == "room":
            return f"conference:{place[1]}"
        return place[0]

    def _set_place(self, place: Any) -> None:
        self.place = place
        self.heard.append(self.hears)

    def _check_up(self) -> None:
        if not self.up:
            raise CallGone(self.cause or "NORMAL_CLEARING")

    async def wait_hangup(self) -> str:
        await self.gone.wait()
        return self.cause or "NORMAL_CLEARING"


class FakeLeg(_Chan, Leg):
    def __init__(self, switch: FakeSwitch, uuid: str, target: DialTarget | None) -> None:
        self.uuid = uuid
        self.variables: dict[str, str] = {}  # set on the leg when it was rung
        self._init_chan(switch, target)

    def on_dtmf(self, handler: Callable[[str], None] | None) -> None:
        self.dtmf_handler = handler

    async def park(self, music: str | None = None) -> None:
        self._check_up()
        await asyncio.sleep(0)
        self._check_up()
        self.sw._detach(self, "moved")
        self._set_place(("music", music) if music else None)

    async def bridge(self, other: Leg) -> None:
        assert isinstance(other, FakeLeg)
        self._check_up()
        other._check_up()
        await asyncio.sleep(0)
        self._check_up()
        other._check_up()
        self.sw._detach(self, "moved")
        self.sw._detach(other, "moved")
        self.sw._bridge(self, other, call=None, dial_rule=False)

    async def join_conference(self, room: str) -> None:
        self._check_up()
        await asyncio.sleep(0)
        self._check_up()
        self.sw._detach(self, "moved")
        self.sw._join(self, room)

    async def announce(self, prompt: str) -> None:
        self._check_up()
        self.announced.append(prompt)

    async def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        self.sw._hangup(self, cause)
        await asyncio.sleep(0)

    # -- test helpers --------------------------------------------------------------------------
    async def press(self, keys: str, gap: float = 0.0) -> None:
        """The party presses `keys` (RFC 2833), `gap` seconds apart."""
        for key in keys:
            if self.up and self.dtmf_handler is not None:
                self.dtmf_handler(key)
            await asyncio.sleep(gap)

    async def hang_up(self) -> None:
        """The party hangs up its phone."""
        self.sw._hangup(self, "NORMAL_CLEARING")
        await asyncio.sleep(0)


class FakeCall(_Chan, Call):
    """The caller A, driven by a flow (only what transfer tests need does more than record)."""

    def __init__(self, switch: FakeSwitch, uuid: str, number: str, name: str) -> None:
        self.info = CallInfo(uuid=uuid, switch=switch.name, caller_number=number, caller_name=name,
                             answered=True)
        self._init_chan(switch, None)
        self._op: asyncio.Future[Any] | None = None  # the running conference's future
        self.dial_specs: list[DialSpec] = []  # every dial the flow/feature ran, in order

    async def answer(self) -> None:
        self._check_up()

    async def play(self, prompts: Sequence[str]) -> None:
        self._check_up()

    async def say(self, value: str, kind: SayKind, language: str = "en") -> None:
        self._check_up()

    async def collect(self, spec: CollectSpec) -> CollectResult:
        self._check_up()
        return CollectResult(CollectOutcome.TIMEOUT)

    async def announce(self, prompt: str) -> None:
        self._check_up()
        self.announced.append(prompt)

    async def record(self, spec: RecordSpec) -> RecordResult:
        raise CallError("fake: record not modelled")

    async def start_recording(self, path: str) -> Recording:
        raise CallError("fake: recording not modelled")

    async def transfer(self, extension: str, context: str | None = None) -> None:
        raise CallError("fake: dialplan transfer not modelled")

    async def schedule_hangup(self, seconds: float, cause: str = "ALLOTTED_TIMEOUT", *,
                              at_us: int | None = None) -> None:
        self._check_up()

    async def set_variable(self, name: str, value: str) -> None:
        self.info.variables[name] = value

    async def get_variable(self, name: str) -> str | None:
        return self.info.variables.get(name)

    async def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        self.sw._hangup(self, cause)
        await asyncio.sleep(0)

    async def hang_up(self) -> None:
        """The caller hangs up its phone."""
        await self.hangup()

    async def hold(self, music: str | None = None) -> None:
        self._check_up()
        self.sw._detach(self, "moved")
        self._set_place(("music", music or "moh"))

    async def dial(self, spec: DialSpec) -> DialResult:
        self._check_up()
        self.dial_specs.append(spec)
        self.sw._detach(self, "moved")
        last: DialResult | None = None
        for group in spec.groups:
            for target in group:
                self._set_place(("music", spec.ringback) if spec.ringback else ("ringing",))
                timeout = target.timeout or spec.timeout
                try:
                    leg = await self.sw._ring(target, timeout, spec.variables, self)
                except DialFailed as failed:
                    last = DialResult(outcome=failed.outcome, cause=failed.cause, target=target)
                    continue
                answer = DialAnswer(peer_uuid=leg.uuid, target=target, answered_at_us=leg.answered_at_us)
                if spec.on_answer is not None:
                    await spec.on_answer(answer)
                if not self.up:
                    leg.sw._hangup(leg, "NORMAL_CLEARING")
                    raise CallGone(self.cause or "NORMAL_CLEARING")
                self.sw._detach(self, "moved")
                bridge = self.sw._bridge(self, leg, call=self, dial_rule=True)
                self.sw._far_end_acts(leg)
                result = await bridge.done
                return DialResult(outcome=DialOutcome.ANSWERED, cause=result.cause, target=target,
                                  peer_uuid=leg.uuid, answered_at_us=leg.answered_at_us,
                                  ended_at_us=result.ended_at_us, caller_hung_up=result.caller_hung_up)
        self._set_place(None)
        return last or DialResult(outcome=DialOutcome.FAILED, cause="NO_ROUTE_DESTINATION")

    async def bridge(self, leg: Leg) -> DialResult:
        assert isinstance(leg, FakeLeg)
        self._check_up()
        await asyncio.sleep(0)
        self._check_up()
        if not leg.up:
            return DialResult(outcome=DialOutcome.FAILED, cause=leg.cause or "NORMAL_CLEARING",
                              peer_uuid=leg.uuid)
        self.sw._detach(self, "moved")
        self.sw._detach(leg, "moved")
        bridge = self.sw._bridge(self, leg, call=self, dial_rule=False)
        result = await bridge.done
        return DialResult(outcome=DialOutcome.ANSWERED, cause=result.cause, target=leg.target,
                          peer_uuid=leg.uuid, answered_at_us=leg.answered_at_us,
                          ended_at_us=result.ended_at_us, caller_hung_up=result.caller_hung_up)

    async def conference(self, room: str) -> str:
        self._check_up()
        self.sw._detach(self, "moved")
        self._op = asyncio.get_running_loop().create_future()
        self.sw._join(self, room)
        return await self._op


class FakeSwitch(Switch):
    kind = "fake"

    def __init__(self, far_ends: Mapping[str, FarEnd | Sequence[FarEnd]] | None = None, *,
                 name: str = "test") -> None:
        self.name = name
        self.far_ends: dict[str, list[FarEnd]] = {}
        for address, script in (far_ends or {}).items():
            self.script(address, script)
        self.channels: dict[str, _Chan] = {}  # up ones
        self.all: list[_Chan] = []
        self.rooms: dict[str, list[_Chan]] = {}
        self.originated: list[OriginateSpec] = []
        self.rung: list[tuple[str, dict[str, str]]] = []  # (address, variables) of every leg rung
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._answered: dict[str, list[FakeLeg]] = {}
        self._answer_event = asyncio.Event()

    def script(self, address: str, script: FarEnd | Sequence[FarEnd]) -> None:
        """Script the far end at `address`: one FarEnd for every ring, or one per ring in order
        (the last repeats)."""
        self.far_ends[address] = [script] if isinstance(script, FarEnd) else list(script)

    @property
    def live(self) -> int:
        return len(self.channels)

    def caller(self, number: str = "1000", name: str = "Alice") -> FakeCall:
        call = FakeCall(self, f"a-{next(self._ids)}", number, name)
        self._add(call)
        return call

    async def answered(self, address: str, index: int = 0, timeout: float = 2.0) -> FakeLeg:
        """The `index`-th leg reached at `address` once it answered."""
        async def wait() -> FakeLeg:
            while len(self._answered.get(address, ())) <= index:
                self._answer_event.clear()
                await self._answer_event.wait()
            return self._answered[address][index]
        return await asyncio.wait_for(wait(), timeout)

    async def settle(self, seconds: float = 0.05) -> None:
        await asyncio.sleep(seconds)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))

    # -- Switch ----------------------------------------------------------------------------------

    async def originate(self, spec: OriginateSpec) -> Leg:
        self.originated.append(spec)
        leg = await self._ring(spec.target, spec.timeout, spec.variables, None)
        self._far_end_acts(leg)
        return leg

    async def take_leg(self, uuid: str) -> Leg:
        ch = self.channels.get(uuid)
        if not isinstance(ch, FakeLeg):
            raise CallGone("NORMAL_CLEARING", f"no leg {uuid}")
        return ch

    async def conference_remove(self, room: str, uuid: str) -> None:
        members = self.rooms.get(room, [])
        ch = next((m for m in members if m.uuid == uuid), None)
        if not isinstance(ch, FakeCall):
            raise CallError(f"{uuid} is not a call in {room}")
        self._detach(ch, "removed")

    async def api(self, command: str) -> str:
        return "+OK"

    async def reload_config(self) -> str:
        return "+OK"

    # -- the model -------------------------------------------------------------------------------

    def _add(self, ch: _Chan) -> None:
        self.channels[ch.uuid] = ch
        self.all.append(ch)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _next_far_end(self, address: str) -> FarEnd:
        script = self.far_ends.get(address)
        if not script:
            return FarEnd("fail")
        return script.pop(0) if len(script) > 1 else script[0]

    async def _ring(self, target: DialTarget, timeout: float, variables: Mapping[str, str],
                    caller: FakeCall | None) -> FakeLeg:
        far = self._next_far_end(target.address)
        leg = FakeLeg(self, f"leg-{next(self._ids)}-{target.address}", target)
        leg.variables = dict(variables)
        leg._far = far  # type: ignore[attr-defined]
        self._add(leg)
        self.rung.append((target.address, dict(variables)))
        leg._set_place(("ringing",))
        ring = min(timeout, far.after) if far.outcome != "no_answer" else timeout
        try:
            if caller is None:
                await asyncio.sleep(ring)
            else:  # a dial: the caller hanging up while it rings cancels it
                gone = asyncio.ensure_future(caller.gone.wait())
                try:
                    await asyncio.wait({gone}, timeout=ring)
                finally:
                    gone.cancel()
                if not caller.up:
                    self._hangup(leg, "ORIGINATOR_CANCEL")
                    raise CallGone(caller.cause or "NORMAL_CLEARING")
        except asyncio.CancelledError:
            self._hangup(leg, "ORIGINATOR_CANCEL")
            raise
        if far.outcome == "answer" and ring >= far.after:
            leg.answered_at_us = _now_us()
            leg._set_place(None)
            self._answered.setdefault(target.address, []).append(leg)
            self._answer_event.set()
            return leg
        cause = FAIL_CAUSE.get(far.outcome, "NO_ANSWER")
        self._hangup(leg, cause)
        raise DialFailed(dial_outcome_for_cause(cause), cause)

    def _far_end_acts(self, leg: FakeLeg) -> None:
        far: FarEnd = leg._far  # type: ignore[attr-defined]
        for delay, keys in far.press:
            self._spawn(self._press_later(leg, delay, keys))
        if far.hangup_after is not None:
            self._spawn(self._hangup_later(leg, far.hangup_after))

    async def _press_later(self, leg: FakeLeg, delay: float, keys: str) -> None:
        await asyncio.sleep(delay)
        await leg.press(keys)

    async def _hangup_later(self, leg: FakeLeg, delay: float) -> None:
        await asyncio.sleep(delay)
        self._hangup(leg, "NORMAL_CLEARING")

    def _bridge(self, a: _Chan, b: _Chan, *, call: FakeCall | None, dial_rule: bool) -> _Bridge:
        bridge = _Bridge(a, b, call=call, dial_rule=dial_rule)
        a._set_place(bridge)
        b._set_place(bridge)
        return bridge

    def _join(self, ch: _Chan, room: str) -> None:
        self.rooms.setdefault(room, []).append(ch)
        ch._set_place(("room", room))

    def _detach(self, ch: _Chan, reason: str) -> None:
        """`ch` leaves where it is: reason "hangup", "moved" or "removed" (conference_remove)."""
        place = ch.place
        if isinstance(place, _Bridge):
            other = place.other(ch)
            ch.place = None
            other.place = None
            caller_left = ch is place.call
            if caller_left and reason == "hangup":
                cause, caller_hung_up = ch.cause or "NORMAL_CLEARING", True
            elif reason == "hangup":
                cause, caller_hung_up = ch.cause or "NORMAL_CLEARING", False
            else:
                cause, caller_hung_up = "TRANSFERRED", False
            if not place.done.done():
                place.done.set_result(DialResult(outcome=DialOutcome.ANSWERED, cause=cause,
                                                 ended_at_us=_now_us(), caller_hung_up=caller_hung_up))
            if other.up:
                if caller_left and reason == "hangup" and place.dial_rule:
                    self._hangup(other, "NORMAL_CLEARING")  # the dial's peer goes with the caller
                else:
                    other._set_place(None)  # a Leg is left parked; a Call's dial/bridge returned
        elif isinstance(place, tuple) and place[0] == "room":
            room = place[1]
            members = self.rooms.get(room, [])
            if ch in members:
                members.remove(ch)
            if not members:
                self.rooms.pop(room, None)
            ch.place = None
            if isinstance(ch, FakeCall) and ch._op is not None and not ch._op.done():
                if reason == "hangup":
                    ch._op.set_exception(CallGone(ch.cause or "NORMAL_CLEARING"))
                else:
                    ch._op.set_result("left")
        else:
            ch.place = None

    def _hangup(self, ch: _Chan, cause: str) -> None:
        if not ch.up:
            return
        ch.up = False
        ch.cause = cause
        self._detach(ch, "hangup")
        ch.heard.append("hangup")
        self.channels.pop(ch.uuid, None)
        ch.gone.set()
