"""`AsteriskCall.dial` over ARI: outgoing legs, ringing, first answer wins, a mixing bridge.

How Asterisk 22 behaves, and what this module does about it (captures asterisk-scenarios, the
numbered points of its README):
- `POST /channels/create` puts the new channel in our Stasis app at once (StasisStart, state
  Down, 9), before `POST /channels/{id}/dial` rings it. The leg's appArgs are
  `DIAL_LEG_ARG,<A's channel id>`, and we choose its channel id ourselves and register the leg
  before the POST, so AsteriskSwitch routes its events here (never to a flow), whatever comes
  first: the 200 of the create or the StasisStart. The 200 can come first, and a /dial sent
  then is refused (409 "Channel not in Stasis application", seen on 22.10 in about one dial of
  ten): we dial once StasisStart has come.
- No final `Dial` event (BUSY, NOANSWER, CANCEL) comes for busy/603/no-answer/unreachable (7): a
  leg's failure cause is `ChannelDestroyed.cause` (5: 486 -> 17, 603 -> 21, 404 -> 1), which
  created channels deliver without a subscription (02b).
- A destination where nothing listens is not detected: pjsip retransmits the INVITE until the
  ring timeout (5, 02h). So the ring time is our own timer, and a leg that never showed a sign of
  life (no Ringing/Progress) when it runs out failed (RECOVERY_ON_TIMER_EXPIRE, FreeSWITCH's
  cause for an unanswered INVITE), while a leg that rang is a NO_ANSWER.
- Order is not stable (8): `Dial RINGING` and `ChannelStateChange(Ringing)` both count.
- A leg can stay listed after StasisEnd without ChannelDestroyed (22): after StasisEnd we wait
  DESTROY_GRACE_S for it, then take the leg as gone.

Answer time (`DialAnswer.answered_at_us`, `DialResult.answered_at_us`): the `timestamp` of the
B leg's `ChannelStateChange` to `Up`, Asterisk's own clock when it processed the 200 OK, sent
with millisecond precision (`2026-11-25T19:00:02.111+0000`), as µs since the epoch. The end
(`ended_at_us`) is the timestamp of the first hangup event of the leg that ended the bridge
(its ChannelHangupRequest, else StasisEnd/ChannelDestroyed), same precision.

Ringback: while A is unanswered we send `POST /channels/{A}/ring` (a 180 to the caller, whose
phone then plays its own ringback): a tone would need early media (183 + RTP), which ARI only
opens as a side effect of a playback, and a prompt heard before the caller's call is answered is
not what `ringback` promises. While A is answered (the usual case after an IVR) `spec.ringback`
is played on A: a `tone_stream://` with its cadence (each tone a `tone:` playback that we stop
after its duration, as AsteriskCall.play does, looped for ever: `loops=-1` is the point of a
ringback), a sound file looped. It stops before A joins the bridge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid as uuidlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..ari import AriClient, AriError, AriNotFound, fs_cause_name, q850_code
from ..ari.models import (
    ChannelDestroyed,
    ChannelDtmfReceived,
    ChannelHangupRequest,
    ChannelLeftBridge,
    ChannelStateChange,
    Dial,
    Event,
    PlaybackFinished,
    StasisEnd,
    StasisStart,
    Timestamp,
)
from .asterisk_media import (
    MediaError,
    MediaList,
    Segment,
    Tone,
    prompt_segments,
)
from .asterisk_segments import Music
from .call import (
    CallError,
    CallGone,
    DialAnswer,
    DialOutcome,
    DialResult,
    DialSpec,
    DialTarget,
    dial_outcome_for_cause,
)

if TYPE_CHECKING:
    from .asterisk import AsteriskCall

log = logging.getLogger("switchctl.asterisk.dial")

DIAL_LEG_ARG = "switchctl-dial-leg"  # appArgs[0] of an outgoing leg; appArgs[1] = the A channel id
URI_ENDPOINT = "switchctl-uri"  # pjsip.conf endpoint for targets of kind "uri" (templates/asterisk)
DESTROY_GRACE_S = 1.0  # StasisEnd -> ChannelDestroyed normally takes milliseconds (captures 22)
STASIS_WAIT_S = 5.0  # a created channel enters Stasis within milliseconds
LEG_GONE_S = 5.0  # how long we wait for a leg we hung up to be destroyed before giving up on it
# Asterisk's own dial timeout is a backstop only (if this process dies mid-ring): ours comes first.
ASTERISK_TIMEOUT_MARGIN_S = 5
NOT_RESPONDING = "RECOVERY_ON_TIMER_EXPIRE"  # rang out without any sign of life from the far end
CREATE_FAILED = "NO_ROUTE_DESTINATION"  # Asterisk refused to create the channel (unknown endpoint)
LOSER_REASON_CODE = 26  # Q.850 "non-selected user clearing": SIP "Call completed elsewhere"
NO_ANSWER_REASON = "no_answer"  # DELETE reason for legs that rang out (Q.850 19, SIP 480/CANCEL)
# A bridge whose parties may press feature codes (a dial with `feature_keys`, every bridge a feature
# makes): mixing, and `dtmf_events` so that Asterisk keeps the media in its core (no native RTP
# bridge between two PJSIP legs, which would carry RFC 2833 past it): a bridged leg's keys then still
# come as ChannelDtmfReceived (asterisk_legs.py). A plain dial's bridge may go native (PLAIN_BRIDGE_TYPE).
BRIDGE_TYPE = "mixing,dtmf_events"
PLAIN_BRIDGE_TYPE = "mixing"
TRANSFERRED = "TRANSFERRED"  # the cause of a bridge a feature ended by moving the leg away (call.py)
_ADDRESS = re.compile(r"[A-Za-z0-9_.+*#\-]+")
_URI = re.compile(r"sips?:[^\s,&'\"<>]+")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp_us(stamp: Timestamp | None) -> int:
    """An ARI event timestamp as µs since the epoch (0 when missing or unparsable); exact integer
    arithmetic, no float rounding."""
    if stamp is None or stamp.at is None:
        return 0
    at = stamp.at if stamp.at.tzinfo is not None else stamp.at.replace(tzinfo=UTC)
    return (at - _EPOCH) // timedelta(microseconds=1)


def endpoint_for(target: DialTarget) -> str:
    """The PJSIP dial string of a target (see templates/asterisk/pjsip.conf.j2)."""
    if target.kind == "phone":
        if not _ADDRESS.fullmatch(target.address):
            raise CallError(f"dial: bad phone extension '{target.address}'")
        return f"PJSIP/{target.address}"
    if target.kind == "gateway":
        if not target.gateway or not _ADDRESS.fullmatch(target.gateway):
            raise CallError(f"dial: gateway target '{target.address}' needs a gateway name, not {target.gateway!r}")
        if not _ADDRESS.fullmatch(target.address):
            raise CallError(f"dial: bad number '{target.address}' for gateway {target.gateway}")
        # The rendered pjsip.conf names the trunk's endpoint and AOR after the gateway: Asterisk
        # sends sip:<number>@<the AOR's contact host:port>.
        return f"PJSIP/{target.address}@{target.gateway}"
    if target.kind == "uri":
        if not _URI.fullmatch(target.address):
            raise CallError(f"dial: '{target.address}' is not a SIP URI (sip:user@host[:port])")
        return f"PJSIP/{URI_ENDPOINT}/{target.address}"
    raise CallError(f"dial: unknown target kind '{target.kind}' (phone, gateway or uri)")


class DialLeg:
    """One outgoing channel. AsteriskSwitch routes its channel's events to `on_event` (in order,
    never awaiting); the dialing task waits on the futures."""

    def __init__(self, channel_id: str, target: DialTarget, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        self.id = channel_id
        self.target = target
        self.timeout = timeout
        self.responded = False  # Ringing/Progress seen: the far end is there
        self.in_stasis: asyncio.Future[None] = loop.create_future()  # StasisStart seen
        self.answered: asyncio.Future[int] = loop.create_future()  # answer time, µs
        self.destroyed: asyncio.Future[str] = loop.create_future()  # the cause name
        self.our_cause: str | None = None  # the cause we report when we hung it up ourselves
        self.ended_at_us = 0  # the first hangup event's timestamp
        self._hangup_cause: int | None = None
        self._grace: asyncio.TimerHandle | None = None
        # Once a feature drives the leg (asterisk_legs.py): its keys, its playbacks' ends, and when
        # it left which bridge (ChannelLeftBridge timestamp, µs: the end of a bridge it was moved out of).
        self.dtmf_handler: Callable[[str], None] | None = None
        self.playbacks: dict[str, asyncio.Future[str]] = {}
        self.left_bridge_us: dict[str, int] = {}
        self.left_bridge = asyncio.Event()

    @property
    def gone(self) -> bool:
        return self.destroyed.done()

    def on_event(self, event: Event) -> None:
        if isinstance(event, StasisStart):
            if not self.in_stasis.done():
                self.in_stasis.set_result(None)
        elif isinstance(event, ChannelStateChange):
            state = event.channel.state
            if state in ("Ringing", "Ring", "Busy"):
                self.responded = True
            elif state == "Up" and not self.answered.done():
                self.responded = True
                self.answered.set_result(timestamp_us(event.timestamp))
        elif isinstance(event, Dial):
            if event.dialstatus in ("RINGING", "PROGRESS", "PROCEEDING", "ANSWER"):
                self.responded = True
        elif isinstance(event, ChannelHangupRequest):
            self._mark_end(event)
            if not event.soft and event.cause:
                self._hangup_cause = event.cause
        elif isinstance(event, StasisEnd):
            self._mark_end(event)
            if not self.gone and self._grace is None:
                self._grace = asyncio.get_running_loop().call_later(DESTROY_GRACE_S, self.lost)
        elif isinstance(event, ChannelDestroyed):
            self._mark_end(event)
            self._finish(self.our_cause or fs_cause_name(event.cause))
        elif isinstance(event, ChannelDtmfReceived):
            if self.dtmf_handler is not None and not self.gone:
                try:
                    self.dtmf_handler(event.digit)
                except Exception:  # a feature's handler must not break the event router
                    log.exception("dtmf handler failed", extra={"leg": self.id})
        elif isinstance(event, PlaybackFinished):
            waiter = self.playbacks.get(event.playback.id)
            if waiter is not None and not waiter.done():
                waiter.set_result(event.playback.state)
        elif isinstance(event, ChannelLeftBridge):
            if len(self.left_bridge_us) < 64:
                self.left_bridge_us[event.bridge.id] = timestamp_us(event.timestamp)
            self.left_bridge.set()

    def _mark_end(self, event: Event) -> None:
        if not self.ended_at_us:
            self.ended_at_us = timestamp_us(event.timestamp)

    def _finish(self, cause: str) -> None:
        if self._grace is not None:
            self._grace.cancel()
        if not self.destroyed.done():
            self.destroyed.set_result(cause)
        for waiter in self.playbacks.values():
            if not waiter.done():
                waiter.set_result("failed")

    async def left_bridge_at(self, bridge_id: str, wait: float = DESTROY_GRACE_S) -> int:
        """The switch's time this leg left `bridge_id` (its ChannelLeftBridge, which Asterisk sends
        before the REST answer of the move but over the other connection); 0 if it did not come."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while bridge_id not in self.left_bridge_us and not self.gone:
            self.left_bridge.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.left_bridge.wait(), remaining)
        return self.left_bridge_us.get(bridge_id, 0)

    def lost(self, cause: str | None = None) -> None:
        """The channel vanished without ChannelDestroyed (zombie, resync, Asterisk gone)."""
        self._finish(cause or self.our_cause or fs_cause_name(self._hangup_cause))


class _Ringback:
    """What A hears while the targets ring (see the module docstring)."""

    def __init__(self, call: AsteriskCall, media: str | None) -> None:
        self.call = call
        self.media = media
        self._music = Music(call.player)
        self._ringing = False

    async def start(self) -> None:
        if self._music.playing or self._ringing:
            return
        if not self.call.info.answered:
            await self.call._rest("ring", self.call.client.ring(self.call.uuid))
            self._ringing = True
            return
        if self.media:
            try:
                await self._music.start_loop(ringback_segments(self.media, self.call.sound_uri))
            except CallError as exc:  # no ringback is no reason to fail the dial
                log.debug("ringback not played: %s", exc, extra={"call": self.call.uuid})

    async def stop(self) -> None:
        await self._music.stop()
        if self._ringing and not self.call.gone and not self.call.info.answered:
            self._ringing = False
            with contextlib.suppress(AriError):
                await self.call.client.ring_stop(self.call.uuid)


def ringback_segments(media: str, sound_uri: Any) -> list[Segment]:
    """The ringback as playable segments, one cadence (the loop repeats it for ever)."""
    if media.startswith("tone_stream://"):
        # The ringback repeats until the answer, so drop any loops= (loops=-1 is the usual one).
        parts = [p for p in media[len("tone_stream://"):].split(";") if not p.strip().startswith(("loops=", "L="))]
        media = "tone_stream://" + ";".join(parts)
    try:
        segments = prompt_segments([media], sound_uri)
    except MediaError as exc:
        raise CallError(f"dial: ringback {exc}") from None
    if not any(isinstance(s, (Tone, MediaList)) for s in segments):
        raise CallError(f"dial: ringback '{media}' plays nothing")
    return segments


def leg_variables(call: AsteriskCall, spec: DialSpec) -> dict[str, str]:
    """Channel variables of every outgoing leg: the caller id B sees, and spec.variables.
    By default the caller's own number and name, as FreeSWITCH passes them."""
    number = spec.caller_id_number if spec.caller_id_number is not None else call.info.caller_number
    name = spec.caller_id_name if spec.caller_id_name is not None else call.info.caller_name
    return channel_variables(number, name, spec.variables)


def channel_variables(number: str | None, name: str | None, extra: Mapping[str, str]) -> dict[str, str]:
    """A new outgoing channel's variables. PJSIP builds the outgoing From from the channel's
    connected-line party, so the caller id the far end sees is CONNECTEDLINE."""
    variables: dict[str, str] = {}
    if number:
        variables["CONNECTEDLINE(num)"] = number
    if name:
        variables["CONNECTEDLINE(name)"] = name
    for key, value in extra.items():
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+(\([A-Za-z0-9_,.\-]*\))?", key):
            raise CallError(f"dial: bad channel variable name '{key}'")
        variables[key] = str(value)
    return variables


async def hang_up_leg(client: AriClient, leg: DialLeg, cause: str, *, reason: str | None = None,
                      reason_code: int | None = None) -> None:
    """DELETE an outgoing leg, remembering `cause` as the one to report for it."""
    if leg.our_cause is None:
        leg.our_cause = cause
    if reason is None and reason_code is None:
        reason_code = q850_code(cause)
    try:
        await client.hangup(leg.id, reason=reason, reason_code=reason_code)
    except AriNotFound:
        leg.lost()  # gone already (or a zombie that DELETE no longer knows, captures 22)
    except AriError as exc:
        log.warning("hangup of an outgoing leg failed: %s", exc, extra={"leg": leg.id})


async def wait_leg_gone(leg: DialLeg) -> None:
    """Wait (bounded) for a leg we hung up to be destroyed; take it as gone after LEG_GONE_S."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(leg.destroyed), LEG_GONE_S)
    if not leg.gone:
        log.warning("outgoing leg not confirmed gone", extra={"leg": leg.id})
        leg.lost()


async def start_leg(client: AriClient, leg: DialLeg, endpoint: str, variables: Mapping[str, str], *,
                    app_args: Sequence[str], originator: str | None = None,
                    abort: Iterable[asyncio.Future[Any]] = ()) -> str | None:
    """Create and dial `leg` (already registered with the switch, so its events reach it whatever
    comes first); None once it was dialled, else the failure cause (the leg is then gone or being
    hung up). `abort`: futures that end the wait for its StasisStart (the caller hung up)."""
    try:
        await client.create_channel(endpoint, app_args=list(app_args), channel_id=leg.id,
                                    originator=originator, variables=dict(variables))
    except AriError as exc:
        log.info("dial: Asterisk refused %s: %s", endpoint, exc, extra={"leg": leg.id})
        leg.lost(CREATE_FAILED)
        return CREATE_FAILED
    # The create's 200 can beat the channel's entry into Stasis, and a /dial before that is
    # refused with 409 "Channel not in Stasis application" (seen on Asterisk 22.10).
    await asyncio.wait({leg.in_stasis, leg.destroyed, *abort}, timeout=STASIS_WAIT_S,
                       return_when=asyncio.FIRST_COMPLETED)
    if leg.gone or not leg.in_stasis.done():
        if not leg.gone:
            await hang_up_leg(client, leg, CREATE_FAILED)
        return CREATE_FAILED
    try:
        await client.dial(leg.id, timeout=int(leg.timeout) + ASTERISK_TIMEOUT_MARGIN_S)
    except AriError as exc:
        log.info("dial: Asterisk refused to dial %s: %s", endpoint, exc, extra={"leg": leg.id})
        await hang_up_leg(client, leg, CREATE_FAILED)
        return CREATE_FAILED
    return None


class Dialer:
    """One `dial()` of one AsteriskCall. Every leg it creates is gone when `run` returns/raises."""

    def __init__(self, call: AsteriskCall, spec: DialSpec) -> None:
        self.call = call
        self.spec = spec
        self.client = call.client
        self.legs: list[DialLeg] = []
        self.peer: DialLeg | None = None
        self.bridge_id: str | None = None
        self.ringback = _Ringback(call, spec.ringback)
        # A feature took the answered peer away (asterisk_legs.py: Leg.park/bridge/join_conference):
        # the bridge ends with TRANSFERRED and the peer is no longer this dial's to hang up.
        self.released = False
        self._moved: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def release_peer(self) -> None:
        """Give the answered peer to a feature: `run` returns ANSWERED/TRANSFERRED, the peer stays up."""
        self.released = True
        if not self._moved.done():
            self._moved.set_result(None)

    def _ours(self, leg: DialLeg) -> bool:
        return not (self.released and leg is self.peer)

    # -- the whole dial ------------------------------------------------------------------------

    async def run(self) -> DialResult:
        call, spec = self.call, self.spec
        call._check()
        groups = [list(g) for g in spec.groups if g]
        if not groups:
            raise CallError("dial: no targets")
        endpoints = {id(t): endpoint_for(t) for g in groups for t in g}  # all bad targets fail first
        variables = leg_variables(call, spec)
        await self._mark_caller_cdr(spec)
        if spec.ringback and call.info.answered:
            ringback_segments(spec.ringback, call.sound_uri)  # a bad ringback fails before ringing
        last: tuple[str, DialTarget | None] = ("NORMAL_CLEARING", None)
        try:
            for group in groups:
                winner, last = await self._ring_group(group, endpoints, variables, last)
                if winner is not None:
                    return await self._bridge(winner)
            cause, target = last
            return DialResult(dial_outcome_for_cause(cause), cause, target)
        finally:
            await asyncio.shield(self._cleanup())

    async def _cleanup(self) -> None:
        """No leg left behind, no bridge, no ringback: whatever happened."""
        with contextlib.suppress(Exception):
            await self.ringback.stop()
        legs = [leg for leg in self.legs if self._ours(leg)]  # a released peer is a feature's Leg now
        for leg in legs:
            if not leg.gone:
                await self._hang_up_leg(leg, leg.our_cause or "NORMAL_CLEARING")
        await asyncio.gather(*(self._wait_gone(leg) for leg in legs))
        for leg in legs:
            self.call.legs.pop(leg.id, None)
        if self.bridge_id is not None:
            bridge, self.bridge_id = self.bridge_id, None
            with contextlib.suppress(AriError):
                await self.client.destroy_bridge(bridge)

    async def _wait_gone(self, leg: DialLeg) -> None:
        await wait_leg_gone(leg)

    async def _hang_up_leg(self, leg: DialLeg, cause: str, *, reason: str | None = None,
                           reason_code: int | None = None) -> None:
        await hang_up_leg(self.client, leg, cause, reason=reason, reason_code=reason_code)

    # -- ringing -------------------------------------------------------------------------------

    async def _mark_caller_cdr(self, spec: DialSpec) -> None:
        """Copy switchctl's own variables (prepaid call and account, billing/callkeys.py) into the
        caller's CDR variables: an ARI call bridged to a dialled leg writes ONE cdr_custom row, the
        caller's, and it prints only CDR variables (captures 08_cdr d; docs/CDR.md), so that row
        is what leads a call that ended while no controller was up back to its reservation."""
        for key, value in spec.variables.items():
            if key.startswith("switchctl_"):
                await self.call._rest("set CDR variable",
                                      self.call.client.set_variable(self.call.uuid, f"CDR({key})", str(value)))

    async def _start_leg(self, target: DialTarget, endpoint: str, variables: dict[str, str]) -> DialLeg | str:
        """Create and dial one leg; the failure cause instead when Asterisk refused it."""
        timeout = target.timeout if target.timeout is not None else self.spec.timeout
        leg = DialLeg(str(uuidlib.uuid4()), target, timeout)
        self.call.legs[leg.id] = leg  # before the POST: StasisStart may beat its answer
        self.legs.append(leg)
        failed = await start_leg(self.client, leg, endpoint, variables, app_args=[DIAL_LEG_ARG, self.call.uuid],
                                 originator=self.call.uuid, abort=[self.call._gone])
        return leg if failed is None else failed

    async def _ring_group(self, group: list[DialTarget], endpoints: dict[int, str], variables: dict[str, str],
                          last: tuple[str, DialTarget | None]) -> tuple[DialLeg | None, tuple[str, DialTarget | None]]:
        call = self.call
        loop = asyncio.get_running_loop()
        ringing: list[DialLeg] = []
        for target in group:
            started = await self._start_leg(target, endpoints[id(target)], variables)
            if isinstance(started, str):
                last = (started, target)
            else:
                ringing.append(started)
            if call.gone:
                break
        if ringing and not call.gone:
            await self.ringback.start()
        begun = loop.time()
        while ringing:
            if call.gone:
                raise CallGone(call.hangup_cause or "NORMAL_CLEARING")
            answered = [leg for leg in ringing if leg.answered.done() and not leg.gone]
            if answered:
                winner = min(answered, key=lambda leg: leg.answered.result() or 0)
                for leg in ringing:
                    if leg is not winner and not leg.gone:
                        await self._hang_up_leg(leg, "LOSE_RACE", reason_code=LOSER_REASON_CODE)
                return winner, last
            for leg in [leg for leg in ringing if leg.gone]:
                ringing.remove(leg)
                last = (leg.destroyed.result(), leg.target)
            if not ringing:
                break
            now = loop.time()
            for leg in ringing:
                if leg.our_cause is None and now >= begun + leg.timeout:
                    await self._hang_up_leg(leg, "NO_ANSWER" if leg.responded else NOT_RESPONDING,
                                            reason=NO_ANSWER_REASON)
            pending = [leg for leg in ringing if leg.our_cause is None]
            wake = min((begun + leg.timeout for leg in pending), default=now + LEG_GONE_S) - loop.time()
            waiters: set[asyncio.Future[Any]] = {call._gone}
            for leg in ringing:
                waiters.add(leg.answered)
                waiters.add(leg.destroyed)
            await asyncio.wait(waiters, timeout=max(wake, 0.0) + 0.001, return_when=asyncio.FIRST_COMPLETED)
            # a leg we hung up that neither confirmed nor vanished within LEG_GONE_S is taken as gone
            for leg in ringing:
                if leg.our_cause is not None and not leg.gone and loop.time() >= begun + leg.timeout + LEG_GONE_S:
                    leg.lost()
        if call.gone:
            raise CallGone(call.hangup_cause or "NORMAL_CLEARING")
        return None, last

    # -- the bridge ----------------------------------------------------------------------------

    async def _bridge(self, peer: DialLeg) -> DialResult:
        call, spec = self.call, self.spec
        self.peer = peer
        answered_at = peer.answered.result()
        await self.ringback.stop()
        if not call.info.answered:
            await call.answer()  # a bridge does not answer a ringing channel by itself
        self.bridge_id = f"switchctl-dial-{call.uuid}"
        try:
            bridge_type = BRIDGE_TYPE if self.spec.feature_keys else PLAIN_BRIDGE_TYPE
            await self.client.create_bridge(type=bridge_type, bridge_id=self.bridge_id)
        except AriError as exc:
            self.bridge_id = None
            raise CallError(f"dial: could not create the bridge: {exc}") from None
        call._check()
        if spec.on_answer is not None:
            await spec.on_answer(DialAnswer(peer.id, peer.target, answered_at))
        # From here on the answer counted (billing armed): a caller gone now ends an ANSWERED dial.
        if call.gone:
            return await self._caller_ended(peer, answered_at)
        if self.released:
            return await self._transferred(peer, answered_at)
        if peer.gone:
            return self._bridged_result(peer, answered_at, caller_ended=False)
        try:
            await self.client.add_channel(self.bridge_id, [call.uuid, peer.id])
        except AriError as exc:
            # Not `call._rest`: a "Channel not found" here may be about B, who just hung up.
            await asyncio.wait({call._gone, peer.destroyed, self._moved}, timeout=DESTROY_GRACE_S,
                               return_when=asyncio.FIRST_COMPLETED)
            if call.gone:
                return await self._caller_ended(peer, answered_at)
            if self.released:
                return await self._transferred(peer, answered_at)
            if peer.gone:
                return self._bridged_result(peer, answered_at, caller_ended=False)
            raise CallError(f"dial: could not bridge the call with {peer.id}: {exc}") from None
        await asyncio.wait({call._gone, peer.destroyed, self._moved}, return_when=asyncio.FIRST_COMPLETED)
        if call.gone:
            return await self._caller_ended(peer, answered_at)
        if self.released:
            return await self._transferred(peer, answered_at)
        return self._bridged_result(peer, answered_at, caller_ended=False)

    async def _transferred(self, peer: DialLeg, answered_at: int) -> DialResult:
        """A feature moved the peer away: the bridge ended when the peer left it (its
        ChannelLeftBridge), both parties are up, the peer is the feature's now."""
        ended = await peer.left_bridge_at(self.bridge_id) if self.bridge_id else 0
        return DialResult(DialOutcome.ANSWERED, TRANSFERRED, peer.target, peer.id, answered_at, ended, False)

    async def _caller_ended(self, peer: DialLeg, answered_at: int) -> DialResult:
        if not peer.gone and not self.released:
            await self._hang_up_leg(peer, self.call.hangup_cause or "NORMAL_CLEARING")
            await self._wait_gone(peer)
        return self._bridged_result(peer, answered_at, caller_ended=True)

    def _bridged_result(self, peer: DialLeg, answered_at: int, *, caller_ended: bool) -> DialResult:
        if caller_ended:
            cause = self.call.hangup_cause or "NORMAL_CLEARING"
            ended = self.call.ended_at_us or peer.ended_at_us
        else:
            cause = peer.destroyed.result()
            ended = peer.ended_at_us
        return DialResult(DialOutcome.ANSWERED, cause, peer.target, peer.id, answered_at, ended, caller_ended)

    async def end_peer(self, cause: str) -> None:
        """The caller's side is being hung up (AsteriskCall.hangup): end the bridged party too."""
        peer = self.peer
        if peer is not None and not peer.gone and not self.released:
            await self._hang_up_leg(peer, cause)
            await self._wait_gone(peer)
