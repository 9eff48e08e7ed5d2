"""Transfer and conference primitives on Asterisk: Legs, originate, feature bridges, rooms, hold.

What each primitive sends over ARI:
- `originate`: `POST /channels/create` (appArgs `switchctl-dial-leg,originate`, our channel id,
  registered with the switch before the POST) then `POST /channels/{id}/dial` once it is in Stasis,
  our own ring timer (asterisk_dial.start_leg, as a dial's legs). Answered: a Leg in Stasis and in
  no bridge (silence). Failure: the cause of its ChannelDestroyed -> DialFailed. Ring timeout or
  cancellation: `DELETE /channels/{id}?reason=no_answer` (a CANCEL).
- `take_leg`: nothing is sent: the answered peer of a running `Call.dial` (its DialLeg) becomes a
  Leg. Its ChannelDtmfReceived (every channel is subscribed, the event is not filtered) goes to
  `Leg.on_dtmf`'s handler.
- Moving a Leg (park / bridge / join_conference) first takes it out of where it is:
  `POST /bridges/{b}/removeChannel` (the dial's bridge: the Dialer is told first, so it returns
  ANSWERED/TRANSFERRED and destroys its bridge without hanging the peer up; a feature bridge: a
  pair is dissolved, `DELETE /bridges/{b}`, a room is deleted once empty) and stops its music.
- Music (`Leg.park(music)`, `Call.hold(music)`): a `tone_stream://` is played as `tone:` playbacks
  stopped after each tone's time, looped (as a dial's ringback); a sound file is a playback
  restarted when it finishes; `Call.hold(None)` loops call.HOLD_TONE (the rendered Asterisk has no MOH
  files: `POST /channels/{id}/moh` would answer 204 and play nothing).
- `Leg.bridge(other)`, `Call.bridge(leg)`: `POST /bridges?type=mixing`, `POST addChannel` with
  both. A member that hangs up dissolves the pair: the bridge is deleted, the other one stays up
  in Stasis (a Leg is never hung up because the other side did).
- Rooms: one mixing bridge per room name (`POST /bridges?type=mixing&name=<room>`), created by its
  first member, deleted when the last one leaves. `conference_remove`: removeChannel.
- `Leg.announce`: playbacks on the leg's channel. `Leg.hangup`: `DELETE /channels/{id}?reason_code=`.

Bridge ends are the switch's times: a hangup is the hung-up side's first hangup event, a move is
the moved leg's ChannelLeftBridge timestamp.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid as uuidlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..ari import AriClient, AriError, AriNotFound
from .asterisk_dial import (
    BRIDGE_TYPE,
    DIAL_LEG_ARG,
    NO_ANSWER_REASON,
    NOT_RESPONDING,
    TRANSFERRED,
    Dialer,
    DialLeg,
    channel_variables,
    endpoint_for,
    hang_up_leg,
    ringback_segments,
    start_leg,
    wait_leg_gone,
)
from .asterisk_media import (
    MediaError,
    Segment,
    SoundUri,
    prompt_segments,
)
from .asterisk_segments import Music, Player, play_segments
from .call import (
    HOLD_TONE,
    CallError,
    CallGone,
    DialFailed,
    DialOutcome,
    DialResult,
    DialTarget,
    Leg,
    OriginateSpec,
    dial_outcome_for_cause,
)

if TYPE_CHECKING:
    from .asterisk import AsteriskCall

log = logging.getLogger("switchctl.asterisk.legs")

ORIGINATE_ARG = "originate"  # appArgs[1] of a leg `originate` placed (appArgs[0] is DIAL_LEG_ARG)
LEFT = "left"  # what Call.conference returns after conference_remove
PEER_GONE = "peer_gone"  # why a Call left a pair bridge whose other member hung up


class _Playing:
    """One playback we started: its id and a future with its end state."""

    __slots__ = ("done", "id")

    def __init__(self, playback_id: str, done: asyncio.Future[Any]) -> None:
        self.id = playback_id
        self.done = done


def music_segments(music: str, sound_uri: SoundUri) -> list[Segment]:
    """A prompt or tone_stream:// to loop, as segments (one cadence; loops= is dropped)."""
    try:
        return ringback_segments(music, sound_uri)
    except CallError as exc:
        raise CallError(str(exc).replace("dial: ringback", "music")) from None


# ---------------------------------------------------------------------------------------------


@dataclass(eq=False)
class FeatureBridge:
    """A bridge a feature made: a pair (Leg.bridge, Call.bridge) or a conference room."""

    id: str
    room: str | None = None
    members: set[str] = field(default_factory=set)


class AsteriskLeg(Leg):
    """A channel a feature drives (see Leg): an originated call or a dial's answered peer."""

    def __init__(self, book: LegBook, dial_leg: DialLeg, *, dialer: Dialer | None = None,
                 answered_at_us: int = 0) -> None:
        self.book = book
        self.client = book.client
        self.dial_leg = dial_leg
        self.uuid = dial_leg.id
        self.target: DialTarget | None = dial_leg.target
        self.answered_at_us = answered_at_us
        self._dialer = dialer  # while it is still in that dial's bridge
        self.player = Player(self.uuid, start=self._start_playback, stop=self._stop_playback,
                             forget=lambda pid: self.dial_leg.playbacks.pop(pid, None), gone=lambda: self.gone)
        self.music = Music(self.player)
        self._announcements: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"AsteriskLeg({self.uuid}, {self.target})"

    # -- state -----------------------------------------------------------------------------------

    @property
    def hangup_cause(self) -> str | None:
        return self.dial_leg.destroyed.result() if self.dial_leg.gone else None

    @property
    def gone(self) -> bool:
        return self.dial_leg.gone

    @property
    def ended_at_us(self) -> int:
        return self.dial_leg.ended_at_us

    def _check(self) -> None:
        if self.gone:
            raise CallGone(self.hangup_cause or "NORMAL_CLEARING")

    def on_dtmf(self, handler: Callable[[str], None] | None) -> None:
        self.dial_leg.dtmf_handler = handler

    # -- playbacks -------------------------------------------------------------------------------

    async def _start_playback(self, media: str | list[str]) -> _Playing:
        # our own id, registered before the POST: an unknown sound can finish before the answer
        playback = _Playing(str(uuidlib.uuid4()), asyncio.get_running_loop().create_future())
        self.dial_leg.playbacks[playback.id] = playback.done
        try:
            await self.client.play(self.uuid, media, playback_id=playback.id)
        except AriNotFound as exc:
            self.dial_leg.playbacks.pop(playback.id, None)
            if "channel" in exc.message.lower():
                raise CallGone(self.hangup_cause or "NORMAL_CLEARING") from None
            raise CallError(f"play on leg {self.uuid}: {exc}") from None
        except AriError as exc:
            self.dial_leg.playbacks.pop(playback.id, None)
            raise CallError(f"play on leg {self.uuid}: {exc}") from None
        return playback

    async def _stop_playback(self, playback_id: str) -> None:
        with contextlib.suppress(AriNotFound):
            await self.client.stop_playback(playback_id)

    # -- Leg API ---------------------------------------------------------------------------------

    async def park(self, music: str | None = None) -> None:
        self._check()
        segments = music_segments(music, self.book.sound_uri) if music else None
        await self._leave()
        self._check()
        if segments:
            await self.music.start_loop(segments)

    async def bridge(self, other: Leg) -> None:
        if not isinstance(other, AsteriskLeg) or other.book is not self.book:
            raise CallError(f"bridge: {other!r} is not a leg of this Asterisk")
        if other is self:
            raise CallError("bridge: a leg cannot be bridged with itself")
        self._check()
        other._check()
        await self._leave()
        await other._leave()
        await self.book.pair([self.uuid, other.uuid], gone=lambda: self.gone or other.gone)
        # a side that hung up meanwhile: the pair was dissolved (or will be by its gone callback)
        self._check()
        other._check()

    async def join_conference(self, room: str) -> None:
        self._check()
        await self._leave()
        await self.book.join_room(room, self.uuid, gone=lambda: self.gone)
        self._check()

    async def announce(self, prompt: str) -> None:
        self._check()
        try:
            segments = prompt_segments([prompt], self.book.sound_uri)
        except MediaError as exc:
            raise CallError(str(exc)) from None
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(play_segments(self.player, segments, looped=False, started=started),
                                   name=f"announce-{self.uuid}")
        self._announcements.add(task)
        task.add_done_callback(self._announcements.discard)
        await asyncio.shield(started)

    async def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        if self.gone:
            return
        self.music.drop()
        await hang_up_leg(self.client, self.dial_leg, cause)
        await wait_leg_gone(self.dial_leg)

    async def wait_hangup(self) -> str:
        return await asyncio.shield(self.dial_leg.destroyed)

    # -- moving ----------------------------------------------------------------------------------

    async def _leave(self) -> None:
        """Out of the dial's bridge or the feature bridge it is in, its music stopped."""
        await self.music.stop()
        dialer, self._dialer = self._dialer, None
        if dialer is not None and not dialer.released:
            # Out of the bridge first (A then hears silence, not B), then the dial returns
            # TRANSFERRED; whichever comes first, the Dialer no longer hangs up this leg.
            if dialer.bridge_id is not None:
                with contextlib.suppress(AriError):
                    await self.client.remove_channel(dialer.bridge_id, self.uuid)
            dialer.release_peer()
        await self.book.leave(self.uuid)

    def gone_now(self) -> None:
        """Its ChannelDestroyed came (a done-callback): stop the music, leave the feature bridge."""
        self.music.drop()
        for task in list(self._announcements):
            task.cancel()
        self.book.member_gone(self.uuid)


class LegBook:
    """One Asterisk's Legs, feature bridges and rooms (owned by AsteriskSwitch)."""

    def __init__(self, switch_name: str, client: AriClient, sound_uri: SoundUri,
                 registry: dict[str, DialLeg], calls: dict[str, AsteriskCall]) -> None:
        self.switch_name = switch_name
        self.client = client
        self.sound_uri = sound_uri
        self.registry = registry  # the switch's channel id -> DialLeg routing table
        self.calls = calls  # the switch's calls (take_leg looks for the dial that owns a peer)
        self.legs: dict[str, AsteriskLeg] = {}
        self.rooms: dict[str, FeatureBridge] = {}
        self.where: dict[str, FeatureBridge] = {}  # channel id -> the feature bridge it is in
        # channel id of a Call in a feature bridge -> resolved with why it left (Call.bridge/conference wait)
        self.seats: dict[str, asyncio.Future[str]] = {}
        self._room_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- Switch API ------------------------------------------------------------------------------

    async def originate(self, spec: OriginateSpec) -> AsteriskLeg:
        endpoint = endpoint_for(spec.target)
        variables = channel_variables(spec.caller_id_number, spec.caller_id_name, spec.variables)
        timeout = spec.target.timeout if spec.target.timeout is not None else spec.timeout
        if timeout <= 0:
            raise CallError(f"originate: ring time {timeout} s is not positive")
        leg = DialLeg(str(uuidlib.uuid4()), spec.target, timeout)
        self.registry[leg.id] = leg  # before the POST: StasisStart may beat its answer
        try:
            failed = await start_leg(self.client, leg, endpoint, variables, app_args=[DIAL_LEG_ARG, ORIGINATE_ARG])
            if failed is not None:
                raise DialFailed(dial_outcome_for_cause(failed), failed)
            await asyncio.wait({leg.answered, leg.destroyed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if leg.answered.done() and not leg.gone:
                return self._adopt_leg(leg, answered_at_us=leg.answered.result())
            if not leg.gone:  # rang out: our timer (see asterisk_dial.py)
                await hang_up_leg(self.client, leg, "NO_ANSWER" if leg.responded else NOT_RESPONDING,
                                  reason=NO_ANSWER_REASON)
                await wait_leg_gone(leg)
            cause = leg.destroyed.result()
            raise DialFailed(dial_outcome_for_cause(cause), cause)
        except BaseException:
            # cancelled or failed: no ringing leg is left behind
            if not leg.gone:
                await asyncio.shield(self._cancel(leg))
            self.registry.pop(leg.id, None)
            raise

    async def _cancel(self, leg: DialLeg) -> None:
        await hang_up_leg(self.client, leg, "ORIGINATOR_CANCEL", reason=NO_ANSWER_REASON)
        await wait_leg_gone(leg)

    async def take_leg(self, uuid: str) -> AsteriskLeg:
        known = self.legs.get(uuid)
        if known is not None:
            known._check()
            return known
        for call in list(self.calls.values()):
            dialer = call._dialer
            peer = dialer.peer if dialer is not None else None
            if peer is not None and peer.id == uuid and not dialer.released:  # type: ignore[union-attr]
                if peer.gone:
                    raise CallGone(peer.destroyed.result())
                answered = peer.answered.result() if peer.answered.done() else 0
                return self._adopt_leg(peer, answered_at_us=answered, dialer=dialer)
        raise CallGone("NORMAL_CLEARING", f"take_leg: no running dial has answered peer {uuid}")

    def _adopt_leg(self, dial_leg: DialLeg, *, answered_at_us: int, dialer: Dialer | None = None) -> AsteriskLeg:
        leg = AsteriskLeg(self, dial_leg, dialer=dialer, answered_at_us=answered_at_us)
        self.legs[leg.uuid] = leg
        self.registry[leg.uuid] = dial_leg  # it stays routed to its DialLeg until destroyed
        dial_leg.destroyed.add_done_callback(lambda _f: self._leg_destroyed(leg))
        return leg

    def _leg_destroyed(self, leg: AsteriskLeg) -> None:
        self.legs.pop(leg.uuid, None)
        leg.gone_now()

    async def conference_remove(self, room: str, uuid: str) -> None:
        bridge = self.rooms.get(room)
        if bridge is None or uuid not in bridge.members:
            raise CallError(f"conference {room}: {uuid} is not a member")
        leg = self.legs.get(uuid)
        if leg is not None:
            await leg.park()  # a Leg leaves with park; accepted here too (kept up, silence)
            return
        await self.leave(uuid, why=LEFT)

    # -- feature bridges -------------------------------------------------------------------------

    async def pair(self, members: list[str], *, gone: Callable[[], bool]) -> FeatureBridge:
        """A new mixing bridge with exactly `members` (each already out of everything else)."""
        bridge = FeatureBridge(f"switchctl-pair-{uuidlib.uuid4()}")
        await self._create(bridge)
        await self._add(bridge, members, gone)
        return bridge

    async def join_room(self, room: str, member: str, *, gone: Callable[[], bool]) -> FeatureBridge:
        if not room or len(room) > 80:
            raise CallError(f"conference: bad room name {room!r}")
        async with self._room_lock:
            bridge = self.rooms.get(room)
            if bridge is None:
                bridge = FeatureBridge(f"switchctl-room-{uuidlib.uuid4()}", room=room)
                await self._create(bridge)
                self.rooms[room] = bridge
            await self._add(bridge, [member], gone)
        return bridge

    async def _create(self, bridge: FeatureBridge) -> None:
        try:
            await self.client.create_bridge(type=BRIDGE_TYPE, bridge_id=bridge.id, name=bridge.room)
        except AriError as exc:
            raise CallError(f"could not create a bridge: {exc}") from None

    async def _add(self, bridge: FeatureBridge, members: list[str], gone: Callable[[], bool]) -> None:
        for member in members:
            self.where[member] = bridge
            bridge.members.add(member)
        try:
            await self.client.add_channel(bridge.id, members)
        except AriError as exc:
            for member in members:
                if self.where.get(member) is bridge:
                    self.where.pop(member, None)
                bridge.members.discard(member)
            await self._delete_if_over(bridge, TRANSFERRED)
            if gone():
                return  # the caller of pair/join_room raises CallGone with the cause
            raise CallError(f"could not add {', '.join(members)} to bridge {bridge.id}: {exc}") from None
        # a member that hung up during the request: its gone callback found it in no bridge yet
        for member in members:
            if self._member_is_gone(member):
                self.member_gone(member)

    def _member_is_gone(self, channel_id: str) -> bool:
        leg = self.legs.get(channel_id)
        if leg is not None:
            return leg.gone
        call = self.calls.get(channel_id)
        return call is None or call.gone

    async def leave(self, channel_id: str, *, why: str = TRANSFERRED) -> None:
        """Take `channel_id` out of its feature bridge (REST), then settle that bridge."""
        bridge = self.where.pop(channel_id, None)
        if bridge is None:
            return
        bridge.members.discard(channel_id)
        over = self._dissolve(bridge, TRANSFERRED)  # before any await: the others see it at once
        with contextlib.suppress(AriError):
            await self.client.remove_channel(bridge.id, channel_id)
        self._seat_done(channel_id, why)
        if over:
            await self._delete(bridge)

    def member_gone(self, channel_id: str) -> None:
        """`channel_id` hung up (Asterisk took it out of its bridge itself): settle the bridge."""
        bridge = self.where.pop(channel_id, None)
        if bridge is None:
            return
        bridge.members.discard(channel_id)
        if self._dissolve(bridge, PEER_GONE):
            self._spawn(self._delete(bridge))

    def _dissolve(self, bridge: FeatureBridge, why: str) -> bool:
        """After a member left: a pair is over (the other member stays up, out of it, and its
        waiting Call.bridge learns `why`); a room is over once empty. True: delete the bridge."""
        if bridge.room is None:
            for other in list(bridge.members):
                bridge.members.discard(other)
                if self.where.get(other) is bridge:
                    self.where.pop(other, None)
                self._seat_done(other, why)
            return True
        if bridge.members:
            return False
        if self.rooms.get(bridge.room) is bridge:
            del self.rooms[bridge.room]
        return True

    async def _delete_if_over(self, bridge: FeatureBridge, why: str) -> None:
        if self._dissolve(bridge, why):
            await self._delete(bridge)

    async def _delete(self, bridge: FeatureBridge) -> None:
        with contextlib.suppress(AriError):
            await self.client.destroy_bridge(bridge.id)

    def _seat_done(self, channel_id: str, why: str) -> None:
        seat = self.seats.get(channel_id)
        if seat is not None and not seat.done():
            seat.set_result(why)

    # -- the flow's Call (AsteriskCall.hold / bridge / conference) --------------------------------

    async def call_hold(self, call: AsteriskCall, music: str | None) -> None:
        # No music given: our tone, not Asterisk's MOH. The rendered Asterisk ships no MOH files
        # and `POST /moh` answers 204 all the same, leaving the caller in silence.
        segments = music_segments(music or HOLD_TONE, self.sound_uri)
        if not call.info.answered:
            await call.answer()
        hold = call_music(call)
        try:
            await hold.start_loop(segments)
        except BaseException:
            await hold.stop()
            raise
        call._hold = hold
        call._check()

    @contextlib.asynccontextmanager
    async def _seat(self, call: AsteriskCall) -> AsyncIterator[asyncio.Future[str]]:
        """The flow's call in a feature bridge or room while its bridge()/conference() runs: the
        future resolves when a feature takes it out; on the way out the call leaves where it is."""
        seat: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.seats[call.uuid] = seat
        try:
            yield seat
        finally:
            self.seats.pop(call.uuid, None)
            if self.where.get(call.uuid) is not None:
                if call.gone:
                    self.member_gone(call.uuid)
                else:
                    await asyncio.shield(self.leave(call.uuid))

    async def call_bridge(self, call: AsteriskCall, leg: Leg) -> DialResult:
        if not isinstance(leg, AsteriskLeg) or leg.book is not self:
            raise CallError(f"bridge: {leg!r} is not a leg of this Asterisk")
        call._check()
        if leg.gone:
            cause = leg.hangup_cause or "NORMAL_CLEARING"
            return DialResult(DialOutcome.FAILED, cause, leg.target, leg.uuid, leg.answered_at_us)
        await leg._leave()
        if not call.info.answered:
            await call.answer()
        bridge: FeatureBridge | None = None
        async with self._seat(call) as seat:
            bridge = await self.pair([call.uuid, leg.uuid], gone=lambda: call.gone or leg.gone)
            await asyncio.wait({call._gone, leg.dial_leg.destroyed, seat}, return_when=asyncio.FIRST_COMPLETED)
        moved = seat.done() and seat.result() == TRANSFERRED
        ended = await self._bridge_end(call, leg, bridge, moved)
        if call.gone:
            return DialResult(DialOutcome.ANSWERED, call.hangup_cause or "NORMAL_CLEARING", leg.target, leg.uuid,
                              leg.answered_at_us, ended, caller_hung_up=True)
        if leg.gone and not moved:
            return DialResult(DialOutcome.ANSWERED, leg.hangup_cause or "NORMAL_CLEARING", leg.target, leg.uuid,
                              leg.answered_at_us, ended, caller_hung_up=False)
        return DialResult(DialOutcome.ANSWERED, TRANSFERRED, leg.target, leg.uuid, leg.answered_at_us, ended,
                          caller_hung_up=False)

    async def _bridge_end(self, call: AsteriskCall, leg: AsteriskLeg, bridge: FeatureBridge | None,
                          moved: bool) -> int:
        if call.gone and call.ended_at_us:
            return call.ended_at_us
        if leg.gone and leg.ended_at_us and not moved:
            return leg.ended_at_us
        if bridge is None:
            return 0
        return await leg.dial_leg.left_bridge_at(bridge.id)

    async def call_conference(self, call: AsteriskCall, room: str) -> str:
        call._check()
        if not call.info.answered:
            await call.answer()
        async with self._seat(call) as seat:
            await self.join_room(room, call.uuid, gone=lambda: call.gone)
            await asyncio.wait({call._gone, seat}, return_when=asyncio.FIRST_COMPLETED)
        if call.gone:
            raise CallGone(call.hangup_cause or "NORMAL_CLEARING")
        return LEFT

    # -- lifecycle -------------------------------------------------------------------------------

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """The switch stops: hang up every Leg still up (no leg is left behind), delete bridges."""
        for leg in list(self.legs.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(leg.hangup("SYSTEM_SHUTDOWN"), 6.0)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=3.0)
        for bridge in {*self.where.values(), *self.rooms.values()}:
            with contextlib.suppress(AriError):
                await self.client.destroy_bridge(bridge.id)
        self.where.clear()
        self.rooms.clear()


def call_music(call: AsteriskCall) -> Music:
    """Hold music on a flow's call, played with the call's own playbacks (its events reach it)."""
    return Music(call.player)
