"""FreeSWITCH: legs a feature drives without a flow (`Switch.originate`, `Switch.take_leg`).

A Leg has no outbound socket: it is driven over the switch's INBOUND connection, like an adopted
call (freeswitch_adopt.py), with these commands:
- originate: `bgapi originate {origination_uuid=<ours>,ignore_early_media=true,originate_timeout=N,
  park_after_bridge=true,...}<endpoint> &park()`; the BACKGROUND_JOB body is `+OK <uuid>` (answered,
  parked) or `-ERR <CAUSE>`. Cancelling = `uuid_kill <uuid>` (we chose the uuid, so a leg still
  ringing can be named); a job that answers after the cancel is killed when it reports.
- park: `uuid_transfer <uuid> park inline`, or with music `uuid_transfer <uuid>
  '^^~set:playback_terminators=none~playback:<music>~park' inline` (the inline dialplan splits apps on
  `,` unless `^^<c>` names another separator: tone streams contain commas; mod_dptools
  inline_dialplan_hunt). Not endless_playback: it plays with no input callback, so the leg's keys stay
  queued and fire no DTMF event (a transferor pressing *2 over ringback was not heard on a real 1.11.1).
- bridge: `uuid_bridge <uuid> <other>` (reply `+OK <other>`, captures s4 x2).
- join_conference: `uuid_transfer <uuid> conference:<room>@default inline`.
- announce: `uuid_broadcast <uuid> <prompt> aleg`; hangup: `uuid_kill <uuid> <cause>`.
Before any move the leg gets `park_after_bridge=true`: when the other side of a bridge the feature
made hangs up, FreeSWITCH parks this side instead of hanging it up (switch_ivr_bridge.c: the
uuid_bridge peer's `audio_bridge_on_exchange_media` and the signal-bond cleanup both test
SWITCH_PARK_AFTER_BRIDGE_VARIABLE before hanging up). A dial's peer keeps the dial's rule until it
is moved (it has no park_after_bridge while in the caller's `bridge`).

Events: CHANNEL_HANGUP_COMPLETE (shared with the adopter's subscription) and DTMF on the inbound
connection, subscribed while legs exist and routed here by Unique-ID. DTMF fires once per key as
the channel reads it (switch_channel_dequeue_dtmf), in a bridge too.

Moving a leg out of a bridge with a flow's call is told to that call through `LegWatch`: the
call's `dial`/`bridge` then ends with cause TRANSFERRED (see FreeSwitchCall).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import uuid as uuidlib
import weakref
from collections.abc import Callable

from ..esl.codec import Event
from ..esl.errors import ESLError
from .call import (
    CallError,
    CallGone,
    DialFailed,
    DialOutcome,
    DialTarget,
    Leg,
    OriginateSpec,
    dial_outcome_for_cause,
)
from .freeswitch_adopt import HANGUP_EVENT, FreeSwitchAdopter, live_channel_from_dump
from .freeswitch_dialstring import variables_block

log = logging.getLogger("switchctl.freeswitch.legs")

DTMF_EVENT = "DTMF"
POLL_SECONDS = 2.0
LATE_EVENT_SECONDS = 0.5
HANGUP_CONFIRM_SECONDS = 5.0
ORIGINATE_MARGIN_SECONDS = 10.0  # bgapi job wait beyond the ring time
INLINE_SEPARATOR = "~"
CONFERENCE_PROFILE = "default"
_NO_SPACE = re.compile(r"\s")
_ROOM = re.compile(r"[A-Za-z0-9_.\-]+")


def _us(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def check_room(room: str) -> str:
    if not _ROOM.fullmatch(room or ""):
        raise CallError(f"conference: bad room name {room!r} (letters, digits, _ . - only)")
    return room


def check_prompt(prompt: str, what: str) -> str:
    if not prompt or _NO_SPACE.search(prompt) or INLINE_SEPARATOR in prompt or "'" in prompt:
        raise CallError(f"{what}: bad prompt {prompt!r}")
    return prompt


def park_transfer_command(uuid: str, music: str | None) -> str:
    """The uuid_transfer that parks `uuid` (silence) or loops `music` to it."""
    if music is None:
        return f"uuid_transfer {uuid} park inline"
    check_prompt(music, "park")
    # `playback` reads the leg's keys through mod_dptools on_dtmf: each is dequeued, which is what fires
    # its DTMF event (the feature codes of a transferor hearing ringback). endless_playback passes no
    # input callback: switch_ivr_play_file then leaves the keys queued, no event, and they were gone
    # once the leg was bridged (tests/data/fsreal_transfer/endless_playback_hides_dtmf.raw).
    # playback_terminators=none: the default `*` would stop the music at the first key of a code.
    # A tone_stream with loops=-1 (the ringback and hold defaults) plays until the leg is moved; a
    # sound file plays once, then `park` keeps the leg up in silence (park dequeues keys too) instead of
    # ending its inline extension (= hangup).
    sep = INLINE_SEPARATOR
    return f"uuid_transfer {uuid} '^^{sep}set:playback_terminators=none{sep}playback:{music}{sep}park' inline"


def conference_transfer_command(uuid: str, room: str, profile: str = CONFERENCE_PROFILE) -> str:
    """The uuid_transfer that puts `uuid` in `room`, then parks it when it leaves the room alive.

    A leg's inline dialplan is all it runs: on a real 1.11.1 a member kicked from a room
    (conference_remove) whose inline extension was only `conference:...` hung up (NORMAL_CLEARING)
    right after its conference app completed, end of extension (tests/data/fsreal_transfer
    kicked_leg_*). The trailing `park` keeps the Leg rule: left up, parked, its owner decides."""
    return (f"uuid_transfer {uuid} '^^{INLINE_SEPARATOR}conference:{check_room(room)}@{profile}"
            f"{INLINE_SEPARATOR}park' inline")


def originate_command(spec: OriginateSpec, leg_uuid: str, endpoint: str) -> str:
    """`originate {...}<endpoint> &park()` for `spec` (pure)."""
    base = {
        "origination_uuid": leg_uuid,
        "ignore_early_media": "true",
        "originate_timeout": str(max(1, math.ceil(spec.timeout))),
        "park_after_bridge": "true",
    }
    head = variables_block(base, caller_id_number=spec.caller_id_number, caller_id_name=spec.caller_id_name,
                           variables=spec.variables, what="originate", api=True)
    return f"originate {head}{endpoint} &park()"


def originate_failure(job_body: str) -> DialFailed:
    """What a failed `bgapi originate` job reports: its body is `-ERR <CAUSE>` (a real 1.11.1:
    USER_BUSY on a 486, NO_ANSWER when originate_timeout ran out, ORIGINATOR_CANCEL after our
    uuid_kill of the ringing leg; tests/data/fsreal_transfer/originate_jobs.raw)."""
    text = job_body.strip()
    words = text[len("-ERR"):].split() if text.startswith("-ERR") else []
    cause = words[0] if words else "NORMAL_TEMPORARY_FAILURE"
    outcome = dial_outcome_for_cause(cause)
    if outcome is DialOutcome.ANSWERED:  # never: no cause maps to it
        outcome = DialOutcome.FAILED
    return DialFailed(outcome, cause)


def member_id_for(json_list_body: str, uuid: str) -> str | None:
    """The member id of channel `uuid` in a `conference <room> json_list` body (captures s4 x4)."""
    import orjson

    text = json_list_body.strip()
    if not text.startswith("["):
        return None
    try:
        conferences = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    for conference in conferences:
        for member in conference.get("members", ()):
            if member.get("uuid") == uuid:
                return str(member.get("id"))
    return None


class LegWatch:
    """Which flow call a leg is bridged with, so that moving the leg ends that call's dial/bridge."""

    def __init__(self) -> None:
        self._legs: weakref.WeakValueDictionary[str, FreeSwitchLeg] = weakref.WeakValueDictionary()

    def register(self, leg: FreeSwitchLeg) -> None:
        self._legs[leg.uuid] = leg

    def get(self, uuid: str) -> FreeSwitchLeg | None:
        return self._legs.get(uuid)


# One per process: FreeSwitchCall (outbound sockets) and the Switch (inbound) meet here by uuid.
LEGS = LegWatch()


class LegTracker:
    """Routes the inbound connection's DTMF / hangup events to the legs of one switch."""

    def __init__(self, adopter: FreeSwitchAdopter) -> None:
        self.adopter = adopter
        self.client = adopter.client
        self.legs: dict[str, FreeSwitchLeg] = {}
        self._dtmf_on: object | None = None
        self._lock = asyncio.Lock()
        self.client.add_event_handler(self._on_event)

    async def ensure_subscribed(self) -> None:
        self.adopter.hangup_users.add(self)
        await self.adopter.ensure_subscribed()
        async with self._lock:
            conn = self.client.connection
            if conn is None or conn is self._dtmf_on:
                return
            await self.client.send(f"event {self.client.event_format} {DTMF_EVENT}")
            self._dtmf_on = conn

    async def forget(self, leg: FreeSwitchLeg) -> None:
        if self.legs.get(leg.uuid) is leg:
            del self.legs[leg.uuid]
        if self.legs:
            return
        self.adopter.hangup_users.discard(self)
        async with self._lock:
            conn, self._dtmf_on = self._dtmf_on, None
            if conn is not None and conn is self.client.connection and DTMF_EVENT not in self.client.events:
                with contextlib.suppress(ESLError):
                    await self.client.send(f"nixevent {DTMF_EVENT}")

    def _on_event(self, event: Event) -> None:
        if event.name not in (DTMF_EVENT, HANGUP_EVENT):
            return
        leg = self.legs.get(event.unique_id or "")
        if leg is None:
            return
        if event.name == DTMF_EVENT:
            leg._dtmf(event.get("DTMF-Digit") or "")
        else:
            leg._hung_up(event)

    async def api(self, command: str) -> str:
        try:
            return await self.client.api(command, check=False)
        except ESLError as exc:
            raise CallError(f"{command.split(' ', 1)[0]}: {exc}") from None

    async def take(self, uuid: str, target: DialTarget | None = None) -> FreeSwitchLeg:
        if not uuid or _NO_SPACE.search(uuid):
            raise CallError(f"take_leg: bad uuid {uuid!r}")
        leg = self.legs.get(uuid)
        if leg is not None:
            return leg
        leg = FreeSwitchLeg(self, uuid, target)
        self.legs[uuid] = leg
        LEGS.register(leg)
        try:
            await self.ensure_subscribed()  # before the dump: a hangup after it is not missed
            dump = await self.api(f"uuid_dump {uuid} json")
        except (ESLError, CallError) as exc:
            await self.forget(leg)
            raise CallError(f"take_leg {uuid}: {exc}") from None
        channel = live_channel_from_dump(dump, self.adopter.switch)
        if channel is None and leg.hangup_cause is None:
            await self.forget(leg)
            raise CallGone("NORMAL_CLEARING", f"take_leg {uuid}: no such channel")
        if channel is not None:
            leg.answered_at_us = channel.answered_at_us
        return leg

    async def originate(self, spec: OriginateSpec, endpoint: str) -> FreeSwitchLeg:
        leg_uuid = str(uuidlib.uuid4())
        command = originate_command(spec, leg_uuid, endpoint)
        leg = FreeSwitchLeg(self, leg_uuid, spec.target)
        self.legs[leg_uuid] = leg  # events of the ringing leg (its hangup) already count
        LEGS.register(leg)
        await self.ensure_subscribed()
        job = asyncio.ensure_future(self.client.bgapi(command, timeout=spec.timeout + ORIGINATE_MARGIN_SECONDS,
                                                      check=False))
        try:
            body = await asyncio.shield(job)
        except asyncio.CancelledError:
            asyncio.ensure_future(self._cancel(leg, job))
            raise
        except ESLError as exc:
            await self.forget(leg)
            raise CallError(f"originate {spec.target.address}: {exc}") from None
        text = body.strip()
        if text.startswith("+OK"):
            # the answer time comes with the leg's own dump (one api, no event subscription)
            with contextlib.suppress(CallError):
                channel = live_channel_from_dump(await self.api(f"uuid_dump {leg_uuid} json"),
                                                 self.adopter.switch)
                if channel is not None:
                    leg.answered_at_us = channel.answered_at_us
            return leg
        await self.forget(leg)
        raise originate_failure(text)

    async def _cancel(self, leg: FreeSwitchLeg, job: asyncio.Future[str]) -> None:
        """The originate was cancelled: kill the ringing leg; if the job still answers, kill that."""
        with contextlib.suppress(CallError):
            await self.api(f"uuid_kill {leg.uuid} ORIGINATOR_CANCEL")
        try:
            body = await job
        except (ESLError, asyncio.CancelledError):
            body = ""
        if body.startswith("+OK"):
            with contextlib.suppress(CallError):
                await self.api(f"uuid_kill {leg.uuid} ORIGINATOR_CANCEL")
        await leg._settle()
        await self.forget(leg)


class FreeSwitchLeg(Leg):
    """One channel driven over the inbound connection (see module)."""

    def __init__(self, tracker: LegTracker, uuid: str, target: DialTarget | None) -> None:
        self.tracker = tracker
        self.uuid = uuid
        self.target = target
        self.answered_at_us = 0
        self.ended_at_us = 0
        self._cause: str | None = None
        self._ended = asyncio.Event()
        self._dtmf_handler: Callable[[str], None] | None = None
        # set by a flow call that is bridged with this leg (dial peer / Call.bridge): told when we move it
        self.on_moved: Callable[[], None] | None = None
        self.on_gone: Callable[[str], None] | None = None
        self.moves = 0  # how many times a feature moved it (a flow call bridged with it compares)

    @property
    def hangup_cause(self) -> str | None:
        return self._cause

    # -- events -----------------------------------------------------------------------------------
    def _dtmf(self, digit: str) -> None:
        handler = self._dtmf_handler
        if handler is not None and digit:
            try:
                handler(digit)
            except Exception:
                log.exception("leg DTMF handler failed", extra={"call_uuid": self.uuid})

    def _hung_up(self, event: Event | None) -> None:
        if self._ended.is_set():
            return
        if event is not None:
            self._cause = event.get("Hangup-Cause") or event.variable("hangup_cause") or "NORMAL_CLEARING"
            self.answered_at_us = _us(event.get("Caller-Channel-Answered-Time")) or self.answered_at_us
            self.ended_at_us = _us(event.get("Caller-Channel-Hangup-Time")) or _us(event.get("Event-Date-Timestamp"))
        else:
            self._cause = self._cause or "NORMAL_CLEARING"
        self._ended.set()
        if self.on_gone is not None:
            with contextlib.suppress(Exception):
                self.on_gone(self._cause)
        asyncio.ensure_future(self.tracker.forget(self))

    def on_dtmf(self, handler: Callable[[str], None] | None) -> None:
        self._dtmf_handler = handler

    # -- operations --------------------------------------------------------------------------------
    def _check_up(self) -> None:
        if self._ended.is_set():
            raise CallGone(self._cause or "NORMAL_CLEARING", f"leg {self.uuid} is gone ({self._cause})")

    async def _run(self, command: str) -> str:
        self._check_up()
        reply = await self.tracker.api(command)
        if reply.startswith("+OK"):
            return reply
        if "No such channel" in reply or "Cannot locate session" in reply or "invalid uuid" in reply.lower():
            await self._settle()
            raise CallGone(self._cause or "NORMAL_CLEARING", f"{command.split(' ', 1)[0]} {self.uuid}: {reply.strip()}")
        raise CallError(f"{command.split(' ', 1)[0]} {self.uuid}: {reply.strip()}")

    async def _leave(self) -> None:
        """Before any move: park after a bridge the feature makes; tell the flow call it was moved."""
        await self._run(f"uuid_setvar {self.uuid} park_after_bridge true")
        self.moves += 1

    def _moved_away(self) -> None:
        callback, self.on_moved = self.on_moved, None
        self.on_gone = None
        if callback is not None:
            callback()

    async def park(self, music: str | None = None) -> None:
        command = park_transfer_command(self.uuid, music)
        await self._leave()
        await self._run(command)
        self._moved_away()

    async def bridge(self, other: Leg) -> None:
        if not isinstance(other, FreeSwitchLeg):
            raise CallError("bridge: the other leg is not on this FreeSWITCH")
        other._check_up()
        await self._leave()
        await other._leave()
        await self._run(f"uuid_bridge {self.uuid} {other.uuid}")
        self._moved_away()
        other._moved_away()

    async def join_conference(self, room: str) -> None:
        command = conference_transfer_command(self.uuid, room)
        await self._leave()
        await self._run(command)
        self._moved_away()

    async def announce(self, prompt: str) -> None:
        check_prompt(prompt, "announce")
        await self._run(f"uuid_broadcast {self.uuid} {prompt} aleg")

    async def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        if self._ended.is_set():
            return
        if _NO_SPACE.search(cause):
            raise CallError(f"hangup: bad cause {cause!r}")
        reply = await self.tracker.api(f"uuid_kill {self.uuid} {cause}")
        if not reply.startswith("+OK"):
            await self._settle()
            if not self._ended.is_set():
                raise CallError(f"uuid_kill {self.uuid}: {reply.strip()}")
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ended.wait(), HANGUP_CONFIRM_SECONDS)

    async def wait_hangup(self) -> str:
        while not self._ended.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ended.wait(), POLL_SECONDS)
                break
            with contextlib.suppress(ESLError, CallError):
                await self.tracker.ensure_subscribed()
                if (await self.tracker.api(f"uuid_exists {self.uuid}")).strip() == "false":
                    await self._settle()
        assert self._cause is not None
        return self._cause

    async def _settle(self) -> None:
        """The channel is gone (or never was): give its hangup event a moment, then end without it."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ended.wait(), LATE_EVENT_SECONDS)
        if not self._ended.is_set():
            with contextlib.suppress(CallError):
                if (await self.tracker.api(f"uuid_exists {self.uuid}")).strip() == "true":
                    return
            self._hung_up(None)
