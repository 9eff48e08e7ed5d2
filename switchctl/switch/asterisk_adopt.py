"""Asterisk: find the calls live on the switch and take them over after a controller restart.

When the controller dies, its calls' channels stay in the Stasis app (the app just has no
WebSocket for a moment) and the mixing bridge asterisk_dial.py made stays up: the two parties go
on talking. What the new controller has is ARI's REST side and its own event stream, which is
subscribed to every channel (`channel:`), so ChannelDestroyed of an adopted channel reaches it.

- `live_calls`: GET /channels; GET /bridges for who is bridged with whom; for bridged channels
  only, the variables readopt needs (billing/callkeys.py: switchctl_call, switchctl_account,
  switchctl_destination, one GET /channels/{id}/variable each) and the answer instant
  `CDR(answer,u)` (epoch seconds with µs, captures asterisk-scenarios README 32; the channel's
  `creationtime` is when it was created, not answered).
- an adopted call: hangup = DELETE /channels/{id}?reason_code=, schedule_hangup = TIMEOUT(absolute)
  (fractions, counted from when it is set, as AsteriskCall does), announce = playbacks on the
  channel (in a bridge Asterisk plays them to that channel alone), get_variable = GET variable,
  wait_hangup = its ChannelDestroyed (routed here by AsteriskSwitch).
- The bridge: no dial of ours runs any more, so what asterisk_dial.py did at a bridge's end is done
  here: when the first member of an adopted call's bridge ends (its ChannelHangupRequest, else
  StasisEnd/ChannelDestroyed), the other members are hung up and the bridge destroyed. The
  instant of that first hangup event is the bridge's end: every adopted member's `ended_at_us`
  (asterisk_dial.py's DialResult.ended_at_us means the same), so the talk time of a cut call is
  the caller's hangup, not the B leg's hangup a DELETE later.
- A channel found missing after an event-stream gap (AsteriskSwitch._resync) ends without the
  switch's times (`ended_at_us` 0): billing then leaves it to the CDR importer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Iterable, Sequence
from decimal import Decimal, InvalidOperation

from ..ari import AriClient, AriError, AriNotFound, fs_cause_name, q850_code
from ..ari.models import (
    ChannelDestroyed,
    ChannelHangupRequest,
    Event,
    StasisEnd,
)
from .asterisk_dial import timestamp_us
from .asterisk_media import (
    MediaError,
    MediaList,
    Silence,
    SoundUri,
    Tone,
    prompt_segments,
)
from .call import (
    AdoptedCall,
    CallError,
    CallGone,
    CallInfo,
    LiveChannel,
)

log = logging.getLogger("switchctl.asterisk.adopt")

# The variables live_calls reads from each bridged channel by default: what PrepaidService.readopt
# needs, as billing/callkeys.py names them (CALL_VAR, ACCOUNT_VAR, DESTINATION_VAR; a switch
# module does not import billing: tests/test_asterisk_adopt.py checks they agree). ARI cannot
# list a channel's variables, so each one wanted is a GET: `AsteriskAdopter.variables`.
READOPT_VARIABLES = ("switchctl_call", "switchctl_account", "switchctl_destination")
ANSWER_VARIABLE = "CDR(answer,u)"
CONFIRM_TIMEOUT_S = 10.0  # a DELETE normally gets its ChannelDestroyed within milliseconds
DESTROY_GRACE_S = 1.0  # after StasisEnd: how long ChannelDestroyed may take (captures 22: zombies)
POLL_SECONDS = 5.0  # a waiting adopted call checks that its channel still exists this often
TIMEOUT_EARLY_S = 0.5  # TIMEOUT(absolute) fires on Asterisk's scheduler: this early is still ours
LOST_CAUSE = "NORMAL_CLEARING"


def epoch_seconds_us(text: str | None) -> int:
    """`1795633484.118416` (CDR(answer,u)) as µs since the epoch, exactly; 0 for "", `0.000000`
    (not answered) or anything unparsable."""
    try:
        value = Decimal((text or "").strip())
    except InvalidOperation:
        return 0
    if not value.is_finite() or value <= 0:
        return 0
    return int(value * 1_000_000)


class _BridgeEnd:
    """One adopted bridge: its members and the instant its first member hung up."""

    def __init__(self, bridge_id: str, members: Iterable[str]) -> None:
        self.bridge_id = bridge_id
        self.members = set(members)
        self.ended_at_us = 0
        self.torn_down = False


class AsteriskAdopter:
    """Lists an Asterisk's live channels and hands out adopted calls (one per AsteriskSwitch)."""

    def __init__(self, switch: str, client: AriClient, sound_uri: SoundUri) -> None:
        self.switch = switch
        self.client = client
        self.sound_uri = sound_uri
        self.variables: tuple[str, ...] = READOPT_VARIABLES
        self.calls: dict[str, AsteriskAdoptedCall] = {}
        self._bridges: dict[str, _BridgeEnd] = {}  # by member channel id
        self._tasks: set[asyncio.Task[None]] = set()

    # -- listing -----------------------------------------------------------------------------------
    async def live_calls(self) -> list[LiveChannel]:
        try:
            channels = await self.client.list_channels()
            bridges = await self.client.list_bridges()
        except AriError as exc:
            raise CallError(f"{self.switch}: live channels not read: {exc}") from None
        peers: dict[str, str] = {}
        for bridge in bridges:
            for member in bridge.channels:
                others = [c for c in bridge.channels if c != member]
                if others:
                    peers[member] = others[0]
        live: list[LiveChannel] = []
        for channel in channels:
            peer = peers.get(channel.id)
            if peer is None:  # not bridged: nothing readopt can take over
                live.append(LiveChannel(channel.id, self.switch))
                continue
            try:
                variables = await self._variables(channel.id, self.variables)
                answered = epoch_seconds_us(await self._variable(channel.id, ANSWER_VARIABLE))
            except AriNotFound:
                continue  # hung up meanwhile
            except AriError as exc:
                raise CallError(f"{self.switch}: variables of {channel.id} not read: {exc}") from None
            if not answered and channel.state == "Up":
                log.warning("channel %s is up but has no CDR answer time", channel.id)
            live.append(LiveChannel(channel.id, self.switch, answered_at_us=answered,
                                    bridged_to=peer, variables=variables))
        return live

    async def _variable(self, channel_id: str, name: str) -> str | None:
        """A variable's value; None when it is not set. AriNotFound when the channel is gone."""
        try:
            return await self.client.get_variable(channel_id, name)
        except AriNotFound as exc:
            if "variable" in exc.message.lower():  # "Provided variable was not found"
                return None
            raise

    async def _variables(self, channel_id: str, names: Iterable[str]) -> dict[str, str]:
        variables: dict[str, str] = {}
        for name in names:
            value = await self._variable(channel_id, name)
            if value:
                variables[name] = value
        return variables

    # -- adopting ------------------------------------------------------------------------------------
    async def adopt(self, channel_id: str) -> AsteriskAdoptedCall:
        if not channel_id or "/" in channel_id:
            raise CallError(f"adopt: bad channel id {channel_id!r}")
        existing = self.calls.get(channel_id)
        if existing is not None:
            return existing
        call = AsteriskAdoptedCall(self, CallInfo(uuid=channel_id, switch=self.switch, answered=True))
        self.calls[channel_id] = call  # before the GETs: its ChannelDestroyed is not missed
        try:
            channel = await self.client.get_channel(channel_id)
            bridges = await self.client.list_bridges()
            answered = await self._variable(channel_id, ANSWER_VARIABLE)
            variables = await self._variables(channel_id, self.variables)
        except AriNotFound:
            if call.hangup_cause is None:
                self.calls.pop(channel_id, None)
                raise CallGone(LOST_CAUSE, f"adopt {channel_id}: no such channel on {self.switch}") from None
            return call
        except AriError as exc:
            self.calls.pop(channel_id, None)
            raise CallError(f"adopt {channel_id}: {exc}") from None
        call.info.caller_number = channel.caller.number
        call.info.caller_name = channel.caller.name
        call.info.destination = channel.dialplan.exten
        call.info.channel_name = channel.name
        call.info.answered = channel.state == "Up"
        call.info.variables.update(variables)
        call.answered_at_us = epoch_seconds_us(answered)
        for bridge in bridges:
            if channel_id in bridge.channels:
                group = next((self._bridges[m] for m in bridge.channels if m in self._bridges), None)
                if group is None or group.bridge_id != bridge.id:
                    group = _BridgeEnd(bridge.id, bridge.channels)
                group.members.update(bridge.channels)
                for member in group.members:
                    self._bridges[member] = group
                call._bridge = group
                break
        return call

    # -- events (AsteriskSwitch._route hands every event of an adopted channel here) ---------------
    def owns(self, channel_id: str) -> bool:
        return channel_id in self.calls or channel_id in self._bridges

    def on_event(self, event: Event) -> None:
        for channel_id in event.channel_ids:
            if not isinstance(event, (ChannelHangupRequest, StasisEnd, ChannelDestroyed)):
                continue
            group = self._bridges.get(channel_id)
            if group is not None:
                self._bridge_member_ended(group, channel_id, event)
            call = self.calls.get(channel_id)
            if call is not None:
                call._on_event(event)

    def _bridge_member_ended(self, group: _BridgeEnd, channel_id: str, event: Event) -> None:
        if not group.ended_at_us:
            group.ended_at_us = timestamp_us(event.timestamp)
        if not group.torn_down:
            group.torn_down = True
            self._spawn(self._tear_down(group, channel_id))
        if isinstance(event, ChannelDestroyed):
            group.members.discard(channel_id)
            self._bridges.pop(channel_id, None)

    async def _tear_down(self, group: _BridgeEnd, ended: str) -> None:
        """What asterisk_dial.py did when a bridged party left: the others go too, and the bridge."""
        for member in sorted(group.members - {ended}):
            with contextlib.suppress(AriError):
                await self.client.hangup(member)
        with contextlib.suppress(AriError):
            await self.client.destroy_bridge(group.bridge_id)
        log.info("adopted bridge %s ended by %s", group.bridge_id, ended)

    def resync(self, present: set[str]) -> None:
        """After an event-stream gap: adopted channels that vanished meanwhile end (without times)."""
        for channel_id, call in list(self.calls.items()):
            if channel_id not in present:
                call._finish(LOST_CAUSE, with_record=False)
        for channel_id in [c for c in self._bridges if c not in present]:
            group = self._bridges.pop(channel_id)
            if not group.torn_down:
                group.torn_down = True
                self._spawn(self._tear_down(group, channel_id))

    def forget(self, call: AsteriskAdoptedCall) -> None:
        if self.calls.get(call.uuid) is call:
            del self.calls[call.uuid]
        group = self._bridges.get(call.uuid)
        if group is not None and call.hangup_cause is not None:
            self._bridges.pop(call.uuid, None)

    def _spawn(self, work: Awaitable[None]) -> None:
        self._track(asyncio.ensure_future(work))

    def _track(self, task: asyncio.Future[None]) -> None:
        self._tasks.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._tasks.discard)  # type: ignore[arg-type]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class AsteriskAdoptedCall(AdoptedCall):
    """A live Asterisk channel that no flow of ours drives any more (see module)."""

    def __init__(self, adopter: AsteriskAdopter, info: CallInfo) -> None:
        self.adopter = adopter
        self.info = info
        self.answered_at_us = 0
        self.ended_at_us = 0
        self._cause: str | None = None
        self._ended = asyncio.Event()
        self._our_hangup: str | None = None
        self._timeout_at: float | None = None
        self._timeout_cause = "ALLOTTED_TIMEOUT"
        self._requested_cause: str | None = None
        self._grace: asyncio.Task[None] | None = None
        self._bridge: _BridgeEnd | None = None  # the bridge it was in when adopted
        self._own_end_us = 0  # its own first hangup event (ChannelHangupRequest/StasisEnd/Destroyed)
        self._announcements: set[asyncio.Task[None]] = set()

    @property
    def hangup_cause(self) -> str | None:
        return self._cause

    @property
    def client(self) -> AriClient:
        return self.adopter.client

    # -- events ----------------------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        if not self._own_end_us:
            self._own_end_us = timestamp_us(event.timestamp)
        if isinstance(event, ChannelHangupRequest):
            if not event.soft and event.cause:
                self._requested_cause = fs_cause_name(event.cause)
        elif isinstance(event, StasisEnd):
            if self._grace is None and not self._ended.is_set():
                self._grace = asyncio.ensure_future(self._destroy_grace())
                self.adopter._track(self._grace)
        elif isinstance(event, ChannelDestroyed):
            cause = fs_cause_name(event.cause)
            if self._our_hangup is not None:
                cause = self._our_hangup
            elif self._timeout_fired():
                cause = self._timeout_cause
            self._finish(cause)

    async def _destroy_grace(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ended.wait(), DESTROY_GRACE_S)
        self._finish(self._cause_without_destroy())

    def _timeout_fired(self) -> bool:
        return self._timeout_at is not None and time.monotonic() >= self._timeout_at - TIMEOUT_EARLY_S

    def _cause_without_destroy(self) -> str:
        if self._our_hangup is not None:
            return self._our_hangup
        if self._timeout_fired():
            return self._timeout_cause
        return self._requested_cause or LOST_CAUSE

    def _finish(self, cause: str, *, with_record: bool = True) -> None:
        if self._ended.is_set():
            return
        self._cause = cause
        if with_record:
            # bridged: the talk ended when the bridge's first member left (module docstring)
            bridge_end = self._bridge.ended_at_us if self._bridge is not None else 0
            self.ended_at_us = bridge_end or self._own_end_us
        else:
            self.ended_at_us = 0
        self._ended.set()
        self.adopter.forget(self)  # ended: no event of it matters any more
        for task in list(self._announcements):
            task.cancel()

    def _check(self) -> None:
        if self._cause is not None:
            raise CallGone(self._cause)

    # -- what an adopted call supports -------------------------------------------------------------
    async def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        if self._cause is not None:
            return
        if self._our_hangup is None:
            self._our_hangup = cause
        try:
            await self.client.hangup(self.uuid, reason_code=q850_code(cause))
        except AriNotFound:
            self._finish(self._cause_without_destroy(), with_record=False)
            return
        except AriError as exc:
            raise CallError(f"hangup {self.uuid}: {exc}") from None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ended.wait(), CONFIRM_TIMEOUT_S)
        self._finish(self._cause_without_destroy(), with_record=False)  # a zombie (captures 22)

    async def schedule_hangup(self, seconds: float, cause: str = "ALLOTTED_TIMEOUT", *,
                              at_us: int | None = None) -> None:
        self._check()
        if seconds <= 0:
            raise CallError(f"schedule_hangup: {seconds} s is not in the future")
        try:
            await self.client.set_variable(self.uuid, "TIMEOUT(absolute)", f"{seconds:.3f}")
        except AriNotFound:
            raise CallGone(self._cause or LOST_CAUSE, f"schedule_hangup {self.uuid}: gone") from None
        except AriError as exc:
            raise CallError(f"schedule_hangup {self.uuid}: {exc}") from None
        self._timeout_at = time.monotonic() + seconds
        self._timeout_cause = cause

    async def announce(self, prompt: str) -> None:
        """Play `prompt` on this channel (in a bridge, to this party alone). Returns once the first
        playback was accepted; tones are stopped after their duration in the background."""
        self._check()
        try:
            segments = prompt_segments([prompt], self.adopter.sound_uri)
        except MediaError as exc:
            raise CallError(str(exc)) from None
        first = True
        remaining = list(segments)
        while remaining and first:
            segment = remaining.pop(0)
            if isinstance(segment, Silence):
                remaining.insert(0, segment)
                break
            await self._play(segment)
            first = False
        if remaining:
            task = asyncio.create_task(self._play_rest(remaining), name=f"announce-{self.uuid}")
            self._announcements.add(task)
            task.add_done_callback(self._announcements.discard)

    async def _play(self, segment: MediaList | Tone) -> None:
        media: str | list[str]
        if isinstance(segment, MediaList):
            media = segment.uris[0] if len(segment.uris) == 1 else list(segment.uris)
        else:
            media = segment.uri
        try:
            playback = await self.client.play(self.uuid, media)
        except AriNotFound:
            raise CallGone(self._cause or LOST_CAUSE, f"announce on {self.uuid}: gone") from None
        except AriError as exc:
            raise CallError(f"announce on {self.uuid}: {exc}") from None
        if isinstance(segment, Tone):  # a tone plays until stopped
            await asyncio.sleep(segment.seconds)
            playback_id = getattr(playback, "id", None)
            if playback_id:
                with contextlib.suppress(AriError):
                    await self.client.stop_playback(playback_id)

    async def _play_rest(self, segments: Sequence[MediaList | Tone | Silence]) -> None:
        # ARI queues a channel's playbacks: sounds follow each other without waiting here.
        with contextlib.suppress(CallError):
            for segment in segments:
                if isinstance(segment, Silence):
                    await asyncio.sleep(segment.seconds)
                else:
                    await self._play(segment)

    async def get_variable(self, name: str) -> str | None:
        if self._cause is not None:
            return self.info.variables.get(name)
        try:
            return await self.adopter._variable(self.uuid, name)
        except AriNotFound:
            return self.info.variables.get(name)
        except AriError as exc:
            raise CallError(f"get {name} on {self.uuid}: {exc}") from None

    async def wait_hangup(self) -> str:
        """Until its ChannelDestroyed; checks every POLL_SECONDS that the channel still exists."""
        try:
            while not self._ended.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ended.wait(), POLL_SECONDS)
                    break
                try:
                    await self.client.get_channel(self.uuid)
                except AriNotFound:
                    with contextlib.suppress(TimeoutError):  # its event may still be on its way
                        await asyncio.wait_for(self._ended.wait(), DESTROY_GRACE_S)
                    self._finish(self._cause_without_destroy(), with_record=False)
                except AriError as exc:
                    log.debug("adopted %s: existence check failed: %s", self.uuid, exc)
        finally:
            if self._ended.is_set():
                self.adopter.forget(self)
        assert self._cause is not None
        return self._cause

    async def release(self) -> None:
        self.adopter.forget(self)
