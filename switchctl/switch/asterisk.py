"""The Asterisk backend: a `Call` driven over ARI (REST + one event WebSocket per Asterisk).

One `AsteriskSwitch` per Asterisk owns the `AriClient` and the `AriEventStream`. Every StasisStart
(except a dial's outgoing legs, whose events go to the dial: asterisk_dial.py) becomes an
`AsteriskCall` whose flow runs in its own task; the stream's dispatcher only routes
events (by channel id, in order) to the call's `on_<Event>` methods, which never await.

How Asterisk 22 really behaves, and what this module does about it (captures
asterisk-scenarios/README.md, numbered points there):
- Inbound channels deliver ChannelDestroyed (the only event with the Q.850 cause) only when the
  app subscribed to the channel (9). The stream subscribes to every channel (`channel:`) on each
  (re)connect instead of once per call (one REST request less a call); events of channels that
  are not our calls are dropped by the routing.
- `ChannelHangupRequest` with `soft: true` carries an internal flag, not a cause (1); a remote
  BYE without Reason ends with cause 0 "Unknown" (2), read as NORMAL_CLEARING by fs_cause_name.
- A hangup during a playback first finishes the playback as `failed`, then StasisEnd (12, 3): a
  failed playback is only "prompt not found" if the channel is still there a moment later.
- `DELETE /playbacks/{id}` (barge-in) ends with PlaybackFinished `done` (12). DTMF is reported once,
  at the end of the digit (11).
- `TIMEOUT(absolute)` hangs up with no ChannelHangupRequest before StasisEnd and cause 0 (3):
  when that happens at the armed time, we report the cause the flow armed (ALLOTTED_TIMEOUT).
- A channel can stay listed after StasisEnd with no ChannelDestroyed for minutes (22): after
  StasisEnd we wait briefly for ChannelDestroyed, then call the channel gone anyway.
- ARI never replays events lost while the WebSocket was down (26): on reconnect the stream's
  snapshot says which channels still exist; calls whose channel vanished get CallGone, running
  playbacks are re-checked with GET /playbacks/{id}.
- Asterisk killed or crashed mid-call: nothing more ever comes for its channels, so a flow waiting
  for a PlaybackFinished would wait until Asterisk is back, or for ever. When the stream's reconnect
  is refused (`Unreachable`), every call ends at once with SWITCH_CONNECTION_LOST, as a REST
  request that cannot reach Asterisk already does. The resync hangs up any channel of such a call
  that turns out to be alive after all (tests/test_asterisk_restart.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid as uuidlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import orjson

from ..ari import (
    AriClient,
    AriError,
    AriEventStream,
    AriHttpError,
    AriNotFound,
    AriTimeout,
    AriUnavailable,
    Snapshot,
    fs_cause_name,
    q850_code,
)
from ..ari.events import Unreachable
from ..ari.models import (
    ChannelDestroyed,
    ChannelDtmfReceived,
    ChannelEvent,
    ChannelHangupRequest,
    ChannelStateChange,
    Event,
    PlaybackEvent,
    PlaybackFinished,
    RecordingEvent,
    RecordingFailed,
    RecordingFinished,
    StasisEnd,
    StasisStart,
)
from . import asterisk_record
from .asterisk_adopt import AsteriskAdoptedCall, AsteriskAdopter
from .asterisk_dial import DIAL_LEG_ARG, Dialer, DialLeg, timestamp_us
from .asterisk_legs import AsteriskLeg, LegBook
from .asterisk_media import (
    MediaError,
    MediaList,
    Segment,
    SoundUri,
    Tone,
    prompt_segments,
    site_sound_uri,
)
from .asterisk_segments import Music, Player, play_segments
from .call import (
    Call,
    CallError,
    CallGone,
    CallInfo,
    CollectOutcome,
    CollectResult,
    CollectSpec,
    DialResult,
    DialSpec,
    Leg,
    LiveChannel,
    OriginateSpec,
    Recording,
    RecordResult,
    RecordSpec,
    SayKind,
    Switch,
)

__all__ = ["AsteriskCall", "AsteriskSwitch", "site_sound_uri"]

log = logging.getLogger("switchctl.asterisk")

# How long to wait for ChannelDestroyed after StasisEnd before calling the channel gone anyway
# (it comes within milliseconds normally; captures 22 show a channel that kept it for 618 s).
DESTROY_GRACE_S = 1.0
# A playback that ends `failed` is a missing prompt only if the channel is still there after this
# (a hangup fails the playback first and sends StasisEnd right after it).
FAILED_PLAYBACK_GRACE_S = 0.3
# Operations that wait for a confirming event give up after this (a switch that stopped talking).
CONFIRM_TIMEOUT_S = 10.0
# A barge-in DELETE normally gets its PlaybackFinished within milliseconds.
STOP_CONFIRM_S = 2.0
# TIMEOUT(absolute) fires on Asterisk's scheduler: accept its hangup this early as ours.
TIMEOUT_EARLY_S = 0.5

# The event source subscribed on every (re)connect: every channel, so ChannelDestroyed comes for
# inbound calls too (captures 9) without a subscription request per call.
ALL_CHANNELS = "channel:"
# Event types no handler here or in asterisk_dial.py reads, which Asterisk then does not send
# (the app's eventFilter, set on every reconnect): with every channel subscribed they are ~2 of a
# call's ~18 frames, and the same again for each channel that is not ours. Reading one of them
# in a handler means removing it here (tests/test_ari_switch_subscription.py checks).
# Variable-set events are half of a call's frames (SIPDOMAIN, STASISSTATUS x2, RTPAUDIOQOS x5: bench
# ari_cps): a live call's variables are read from the switch (get_variable), and after the hangup
# only the ones switchctl set are known, which is all any feature reads.
UNUSED_EVENTS = ("ChannelCreated", "ChannelDialplan", "ChannelConnectedLine", "ChannelCallerId",
                 "ChannelTalkingStarted", "ChannelTalkingFinished", "ChannelVarset")
LOST_CAUSE = "NORMAL_CLEARING"  # see AsteriskSwitch._resync
SWITCH_LOST_CAUSE = "SWITCH_CONNECTION_LOST"  # Asterisk itself is gone (refused connections)
_VAR_NAME = re.compile(r"[A-Za-z0-9_.\-]+(\([A-Za-z0-9_,.\-]*\))?")


class _Playback:
    __slots__ = ("done", "id", "state")

    def __init__(self, playback_id: str) -> None:
        self.id = playback_id
        self.done = asyncio.get_running_loop().create_future()
        self.state = ""


class AsteriskCall(Call):
    """A channel in our Stasis application."""

    # Asterisk's <astspooldir>/recording on the switch (asterisk_record.py); the switch sets it.
    recording_dir: str = asterisk_record.RECORDING_DIR

    def __init__(
        self,
        client: AriClient,
        info: CallInfo,
        *,
        sound_uri: SoundUri,
        context: str = "",
        language: str = "en",
        legs: dict[str, DialLeg] | None = None,
    ) -> None:
        self.client = client
        # The switch's registry of outgoing dial legs (channel id -> leg): a dial registers its
        # legs here so the switch routes their events to it (asterisk_dial.py).
        self.legs: dict[str, DialLeg] = legs if legs is not None else {}
        self._dialer: Dialer | None = None  # the running dial, if any
        self.ended_at_us = 0  # the switch's time of this channel's first hangup event (µs)
        self.info = info
        self.sound_uri = sound_uri
        self.context = context  # where transfer() continues by default: the context we came from
        self.language = language or "en"
        self._cause: str | None = None
        self._gone = asyncio.get_running_loop().create_future()  # resolves with the cause
        self._answered = asyncio.Event()
        if info.answered:
            self._answered.set()
        self._dtmf: deque[str] = deque()
        self._dtmf_arrived = asyncio.Event()
        self._playbacks: dict[str, _Playback] = {}
        self._hangup_request_cause: int | None = None  # a non-soft cause from ChannelHangupRequest
        self._hangup_requested = False
        self._our_hangup: str | None = None  # the cause we asked for with DELETE
        self._transferring = False
        self.transferred = False  # left Stasis through transfer(): the dialplan owns it now
        self._left = asyncio.Event()  # StasisEnd seen
        self._timeout_at: float | None = None  # monotonic time TIMEOUT(absolute) fires
        self._timeout_cause = "ALLOTTED_TIMEOUT"
        self._destroy_timer: asyncio.TimerHandle | None = None
        self._announcements: set[asyncio.Task[None]] = set()
        # Announcements, ringback and hold music play through this (asterisk_segments.py).
        self.player = Player(self.uuid, start=self._start_playback, stop=self._stop_playback_request,
                             forget=lambda pid: self._playbacks.pop(pid, None), gone=lambda: self.gone)
        self._recording_waiters: dict[str, asyncio.Future[Any]] = {}  # live recording name -> its end
        # The switch's Legs, feature bridges and rooms (asterisk_legs.py), for hold/bridge/conference.
        self.book: LegBook | None = None
        self._hold: Music | None = None  # hold music running until the next operation

    # -- state ---------------------------------------------------------------------------------

    @property
    def hangup_cause(self) -> str | None:
        return self._cause

    @property
    def gone(self) -> bool:
        return self._cause is not None

    def _finish(self, cause: str) -> None:
        """The channel is gone: record the cause once and wake every waiting operation."""
        if self._cause is not None:
            return
        self._cause = cause
        if not self._gone.done():
            self._gone.set_result(cause)
        if self._destroy_timer is not None:
            self._destroy_timer.cancel()
        for playback in self._playbacks.values():
            if not playback.done.done():
                playback.done.set_result("failed")
        self._dtmf_arrived.set()

    def _cause_without_destroy(self) -> str:
        """Our best cause when ChannelDestroyed did not (or will not) come."""
        if self._our_hangup is not None:
            return self._our_hangup
        if self._timeout_fired():
            return self._timeout_cause
        if self._hangup_request_cause is not None:
            return fs_cause_name(self._hangup_request_cause)
        return LOST_CAUSE

    def _timeout_fired(self) -> bool:
        return (
            self._timeout_at is not None
            and not self._hangup_requested
            and time.monotonic() >= self._timeout_at - TIMEOUT_EARLY_S
        )

    def lost(self) -> None:
        """The channel vanished while we were not listening (resync after a reconnect)."""
        self._finish(self._cause_without_destroy())

    def switch_lost(self) -> None:
        """Asterisk is not running: the channel went with it."""
        self._finish(SWITCH_LOST_CAUSE)

    # -- events (called in order by the switch's router; they never await) -----------------------

    def mark_answered(self) -> None:
        self.info.answered = True
        self._answered.set()

    def on_ChannelStateChange(self, event: ChannelStateChange) -> None:
        if event.channel.state == "Up":
            self.mark_answered()

    def on_ChannelDtmfReceived(self, event: ChannelDtmfReceived) -> None:
        log.debug("dtmf %s (%d ms)", event.digit, event.duration_ms, extra={"call": self.uuid})
        if self._cause is None and len(self._dtmf) < 256:  # bounded: nobody reads a flooding caller
            self._dtmf.append(event.digit)
            self._dtmf_arrived.set()

    def on_PlaybackFinished(self, event: PlaybackFinished) -> None:
        playback = self._playbacks.get(event.playback.id)
        if playback is not None and not playback.done.done():
            playback.done.set_result(event.playback.state)

    def on_RecordingFinished(self, event: RecordingFinished | RecordingFailed) -> None:
        waiter = self._recording_waiters.get(event.recording.name)
        if waiter is not None and not waiter.done():
            waiter.set_result(event.recording)

    def on_RecordingFailed(self, event: RecordingFailed) -> None:
        self.on_RecordingFinished(event)  # the recording's state says "failed"

    def expect_recording(self, name: str) -> asyncio.Future[Any]:
        """A future for the end (RecordingFinished / RecordingFailed) of this call's recording `name`."""
        waiter = asyncio.get_running_loop().create_future()
        self._recording_waiters[name] = waiter
        return waiter

    def forget_recording(self, name: str) -> None:
        self._recording_waiters.pop(name, None)

    async def gone_within(self, seconds: float) -> bool:
        """True if the channel is gone now or goes within `seconds`."""
        if self._cause is None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._gone), seconds)
        return self._cause is not None

    def clear_dtmf(self) -> None:
        self._dtmf.clear()

    def take_dtmf(self, keys: str) -> str | None:
        """Remove and return the last queued digit that is one of `keys` (a recording's terminator)."""
        for index in range(len(self._dtmf) - 1, -1, -1):
            if self._dtmf[index] in keys:
                digit = self._dtmf[index]
                del self._dtmf[index]
                return digit
        return None

    def _mark_end(self, event: Event) -> None:
        if not self.ended_at_us:
            self.ended_at_us = timestamp_us(event.timestamp)

    def on_ChannelHangupRequest(self, event: ChannelHangupRequest) -> None:
        self._mark_end(event)
        # A soft request with cause 32 is our own DELETE; the cause is an internal flag (captures 1).
        if event.soft:
            return
        self._hangup_requested = True
        if event.cause is not None:
            self._hangup_request_cause = event.cause

    def on_StasisEnd(self, event: StasisEnd) -> None:
        self._left.set()
        if self._transferring:
            self.transferred = True
            return
        # ChannelDestroyed (subscribed) follows within milliseconds with the real cause.
        if self._cause is None and self._destroy_timer is None:
            loop = asyncio.get_running_loop()
            self._destroy_timer = loop.call_later(DESTROY_GRACE_S, self.lost)

    def on_ChannelDestroyed(self, event: ChannelDestroyed) -> None:
        self._mark_end(event)
        self._left.set()
        if self._our_hangup is not None:
            cause = self._our_hangup
        elif event.cause in (0, None) and self._timeout_fired():
            cause = self._timeout_cause  # TIMEOUT(absolute): cause 0, no hangup request (captures 3)
        else:
            cause = fs_cause_name(event.cause)
        self._finish(cause)

    # -- helpers -------------------------------------------------------------------------------

    def _check(self) -> None:
        if self._cause is not None:
            raise CallGone(self._cause)
        if self.transferred or self._transferring:
            raise CallError(f"call {self.uuid} was transferred to the dialplan; it is no longer ours")

    async def _ready(self) -> None:
        """Before an operation: the call is ours and up, and hold music (Call.hold) is stopped."""
        self._check()
        if self._hold is not None:
            hold, self._hold = self._hold, None
            await hold.stop()
            self._check()

    def _features(self) -> LegBook:
        if self.book is None:
            raise CallError("transfer and conference need the call's AsteriskSwitch")
        return self.book

    async def _rest(self, what: str, operation: Awaitable[Any]) -> Any:
        """One REST call on this channel; a 404 "Channel not found" means the channel is gone."""
        try:
            return await operation
        except AriNotFound as exc:
            if "channel" in exc.message.lower() or self._left.is_set():
                self._finish(self._cause_without_destroy())
                raise CallGone(self._cause or LOST_CAUSE) from None
            raise CallError(f"{what}: {exc}") from None
        except AriUnavailable as exc:
            # The HTTP server is Asterisk itself: when it is unreachable, its channels are gone.
            self._finish(SWITCH_LOST_CAUSE)
            raise CallGone(SWITCH_LOST_CAUSE, f"lost Asterisk during {what}: {exc}") from None
        except (AriHttpError, AriTimeout) as exc:
            if self._cause is not None:
                raise CallGone(self._cause) from None
            raise CallError(f"{what}: {exc}") from None

    async def _until(self, waitable: Awaitable[Any], timeout: float | None, what: str) -> Any:
        """Wait for `waitable` unless the call goes first (CallGone) or `timeout` passes."""
        task = asyncio.ensure_future(waitable)
        try:
            done, _ = await asyncio.wait({task, self._gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        if self._gone.done():
            raise CallGone(self._gone.result())
        raise CallError(f"{what}: Asterisk did not confirm within {timeout:g} s")

    def _segments(self, prompts: Sequence[str]) -> list[Segment]:
        try:
            return prompt_segments(prompts, self.sound_uri)
        except MediaError as exc:
            raise CallError(str(exc)) from None

    # -- playback ------------------------------------------------------------------------------

    async def _start_playback(self, media: str | Sequence[str], lang: str | None = None) -> _Playback:
        # Our own playback id, registered before the POST: an unknown sound finishes within a
        # millisecond, possibly before the POST's answer reaches us (captures 13).
        playback = _Playback(str(uuidlib.uuid4()))
        self._playbacks[playback.id] = playback
        try:
            await self._rest("play", self.client.play(self.uuid, media, playback_id=playback.id, lang=lang))
        except BaseException:
            self._playbacks.pop(playback.id, None)
            raise
        return playback

    async def _stop_playback(self, playback: _Playback) -> None:
        if playback.done.done():
            return
        await self._rest("stop playback", self._stop_playback_request(playback.id))
        with contextlib.suppress(CallError):
            await self._until(asyncio.shield(playback.done), STOP_CONFIRM_S, "stop playback")

    async def _stop_playback_request(self, playback_id: str) -> None:
        try:
            await self.client.stop_playback(playback_id)
        except AriNotFound as exc:
            # "Playback not found": it finished between our check and the DELETE (a race the CI
            # met). Anything else (the channel is gone) is for _rest to judge.
            if "playback" not in exc.message.lower():
                raise

    async def _play_one(self, media: str | Sequence[str], *, seconds: float | None, barge_in: bool,
                        lang: str | None = None) -> bool:
        """Play one playback to its end (or for `seconds`, for tones that never end). Returns
        False when a digit interrupted it (barge-in)."""
        if barge_in and self._dtmf:
            return False
        playback = await self._start_playback(media, lang)
        try:
            waiters: set[asyncio.Future[Any]] = {playback.done}
            digit = None
            if barge_in:
                self._dtmf_arrived.clear()
                if self._dtmf:
                    self._dtmf_arrived.set()
                digit = asyncio.ensure_future(self._dtmf_arrived.wait())
                waiters.add(digit)
            try:
                done, _ = await asyncio.wait(waiters | {self._gone}, timeout=seconds,
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                if digit is not None:
                    digit.cancel()
            if self._gone.done():
                raise CallGone(self._gone.result())
            if playback.done in done:
                state = playback.done.result()
                if state == "failed":
                    await self._failed_playback(media)
                return True
            # a digit (barge-in) or the tone's time is up: stop it ourselves
            await self._stop_playback(playback)
            if self._cause is not None:
                raise CallGone(self._cause)
            return not (barge_in and self._dtmf)
        finally:
            self._playbacks.pop(playback.id, None)

    async def _failed_playback(self, media: str | Sequence[str]) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._gone), FAILED_PLAYBACK_GRACE_S)
        if self._gone.done():
            raise CallGone(self._gone.result())
        shown = media if isinstance(media, str) else ",".join(media)
        raise CallError(f"prompt not found on Asterisk: {shown}")

    async def _play_segments(self, segments: Sequence[Segment], *, barge_in: bool) -> bool:
        """False when a digit interrupted the prompts (only with barge_in)."""
        for segment in segments:
            self._check()
            if isinstance(segment, MediaList):
                media: str | list[str] = segment.uris[0] if len(segment.uris) == 1 else list(segment.uris)
                finished = await self._play_one(media, seconds=None, barge_in=barge_in)
            elif isinstance(segment, Tone):
                finished = await self._play_one(segment.uri, seconds=segment.seconds, barge_in=barge_in)
            else:
                finished = await self._silence(segment.seconds, barge_in=barge_in)
            if not finished:
                return False
        return True

    async def _silence(self, seconds: float, *, barge_in: bool) -> bool:
        if barge_in:
            if self._dtmf:
                return False
            self._dtmf_arrived.clear()
            try:
                await self._until(self._dtmf_arrived.wait(), seconds, "silence")
            except CallError:
                if self._cause is not None:
                    raise CallGone(self._cause) from None
                return True  # the silence ran out
            return not self._dtmf
        with contextlib.suppress(CallError):
            await self._until(asyncio.sleep(seconds), seconds + 1, "silence")
        self._check()
        return True

    # -- operations ----------------------------------------------------------------------------

    async def answer(self) -> None:
        self._check()
        if self._answered.is_set():
            return
        await self._rest("answer", self.client.answer(self.uuid))
        # ARI runs the answer on the channel's thread and replies once it is done
        # (stasis_app_send_command waits for the command), so the 204 means Up: waiting for the
        # ChannelStateChange as well cost a task and a wait per call (bench ari_cps).
        self.mark_answered()

    async def play(self, prompts: Sequence[str]) -> None:
        await self._ready()
        if prompts:
            await self._play_segments(self._segments(prompts), barge_in=False)

    async def say(self, value: str, kind: SayKind, language: str = "en") -> None:
        await self._ready()
        if not value.isdigit():
            raise CallError(f"say {kind.value}: '{value}' is not a string of digits")
        scheme = "number" if kind is SayKind.NUMBER else "digits"
        await self._play_one(f"{scheme}:{value}", seconds=None, barge_in=False, lang=language or self.language)

    async def collect(self, spec: CollectSpec) -> CollectResult:
        await self._ready()
        if spec.max_digits < 1 or spec.min_digits > spec.max_digits:
            raise CallError(f"collect: bad digit bounds min={spec.min_digits} max={spec.max_digits}")
        segments = self._segments(spec.prompts)
        # Digits pressed before (during an earlier play) or during the prompts count: the queue
        # holds them, and the first one stops the prompts (barge-in).
        await self._play_segments(segments, barge_in=True)
        result = await self._gather(spec)
        log.debug("collect -> %s %r %r", result.outcome.value, result.digits, result.terminator, extra={"call": self.uuid})
        if result.outcome is not CollectOutcome.OK and spec.invalid_prompt:
            await self.play([spec.invalid_prompt])
        return result

    async def _next_digit(self, timeout: float) -> str | None:
        if not self._dtmf:
            self._dtmf_arrived.clear()
            try:
                await self._until(self._dtmf_arrived.wait(), max(timeout, 0.0), "digit")
            except CallError:
                if self._cause is not None:
                    raise CallGone(self._cause) from None
                return None
        if self._cause is not None:
            raise CallGone(self._cause)
        return self._dtmf.popleft() if self._dtmf else None

    async def _gather(self, spec: CollectSpec) -> CollectResult:
        digits = ""
        terminator: str | None = None
        timeout = spec.timeout
        while len(digits) < spec.max_digits:
            digit = await self._next_digit(timeout)
            if digit is None:
                break
            if digit in spec.terminators:
                terminator = digit
                break
            digits += digit
            timeout = spec.inter_digit_timeout
        return _outcome(spec, digits, terminator)

    async def dial(self, spec: DialSpec) -> DialResult:
        """Outgoing legs into our app, ringing on our own timers, the first answer bridged with
        this channel in a mixing bridge (asterisk_dial.py says how and why)."""
        await self._ready()
        if self._dialer is not None:
            raise CallError("dial: this call is already dialing")
        dialer = Dialer(self, spec)
        self._dialer = dialer
        try:
            return await dialer.run()
        finally:
            self._dialer = None

    async def announce(self, prompt: str) -> None:
        """Play `prompt` on this channel only. In a bridge, Asterisk plays a channel's playback to
        that channel alone (the bridge goes on for the other party); returns once the first
        playback was accepted, the rest (tones, silences) runs in the background."""
        self._check()
        segments = self._segments([prompt])
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(play_segments(self.player, segments, looped=False, started=started),
                                   name=f"announce-{self.uuid}")
        self._announcements.add(task)
        task.add_done_callback(self._announcements.discard)
        await asyncio.shield(started)

    async def record(self, spec: RecordSpec) -> RecordResult:
        await self._ready()
        return await asterisk_record.record(self, spec)  # see asterisk_record.py

    async def start_recording(self, path: str) -> Recording:
        return await asterisk_record.start_recording(self, path)  # a Snoop channel, see asterisk_record.py

    # Transfer and conference primitives: asterisk_legs.py says what each sends.
    async def hold(self, music: str | None = None) -> None:
        await self._ready()
        await self._features().call_hold(self, music)

    async def bridge(self, leg: Leg) -> DialResult:
        await self._ready()
        return await self._features().call_bridge(self, leg)

    async def conference(self, room: str) -> str:
        await self._ready()
        return await self._features().call_conference(self, room)

    async def transfer(self, extension: str, context: str | None = None) -> None:
        await self._ready()
        if not extension or re.search(r"[\s,|]", extension):
            raise CallError(f"transfer: bad extension '{extension}'")
        target = context or self.context
        if not target:
            raise CallError("transfer: no context given and the channel's own context is unknown")
        self._transferring = True
        try:
            await self._rest(
                "transfer",
                self.client.continue_in_dialplan(self.uuid, context=target, extension=extension, priority=1),
            )
            await self._until(self._left.wait(), CONFIRM_TIMEOUT_S, "transfer")
        except BaseException:
            if not self._left.is_set():
                self._transferring = False
            raise
        self.transferred = True

    async def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        if self._cause is not None or self.transferred:
            return
        if self._our_hangup is None:
            self._our_hangup = cause
        if self._hold is not None:  # the channel takes its music with it
            self._hold.drop()
            self._hold = None
        try:
            await self._hang_up_channel(cause)
        finally:
            if self._dialer is not None:  # bridged: the other party goes with us
                await self._dialer.end_peer(cause)

    async def _hang_up_channel(self, cause: str) -> None:
        code = q850_code(cause)  # None: a FreeSWITCH-only cause; Asterisk clears it as normal
        try:
            await self.client.hangup(self.uuid, reason_code=code)
        except AriNotFound:
            # Gone already, or a zombie channel that is "gone" for DELETE (captures 22).
            self._finish(self._cause_without_destroy())
            return
        except AriError as exc:
            log.warning("hangup failed", extra={"call": self.uuid, "error": str(exc)})
            self._finish(self._cause_without_destroy())
            return
        # ChannelDestroyed confirms it (subscribed); a zombie channel never does (captures 22).
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._gone), CONFIRM_TIMEOUT_S)
        self._finish(self._cause_without_destroy())

    async def schedule_hangup(self, seconds: float, cause: str = "ALLOTTED_TIMEOUT", *,
                              at_us: int | None = None) -> None:
        # TIMEOUT(absolute) counts from when it is set, in fractions: `seconds` (the caller's
        # margin included) is what to arm; an instant adds nothing here.
        self._check()
        if seconds <= 0:
            raise CallError(f"schedule_hangup: {seconds} s is not in the future")
        # TIMEOUT(absolute) takes fractions (a GET right after setting 3 reads "2.999").
        await self._rest("schedule hangup", self.client.set_variable(self.uuid, "TIMEOUT(absolute)", f"{seconds:.3f}"))
        self._timeout_at = time.monotonic() + seconds
        self._timeout_cause = cause

    async def set_variable(self, name: str, value: str) -> None:
        self._check()
        if not _VAR_NAME.fullmatch(name):
            raise CallError(f"bad channel variable name '{name}'")
        await self._rest(f"set {name}", self.client.set_variable(self.uuid, name, value))
        self.info.variables[name] = value

    async def get_variable(self, name: str) -> str | None:
        if self._cause is not None:
            return self.info.variables.get(name)
        if not _VAR_NAME.fullmatch(name):
            raise CallError(f"bad channel variable name '{name}'")
        try:
            return await self.client.get_variable(self.uuid, name)
        except AriNotFound as exc:
            if "variable" in exc.message.lower():
                return None
            self._finish(self._cause_without_destroy())
            raise CallGone(self._cause or LOST_CAUSE) from None
        except AriError as exc:
            raise CallError(f"get {name}: {exc}") from None

    async def wait_hangup(self) -> str:
        return await asyncio.shield(self._gone)


def _outcome(spec: CollectSpec, digits: str, terminator: str | None) -> CollectResult:
    """The Call contract's outcome; an empty entry (silence, or only a terminator) is a TIMEOUT,
    as on FreeSWITCH, unless min_digits is 0."""
    if not digits:
        if spec.min_digits == 0:
            return CollectResult(CollectOutcome.OK, "", terminator)
        return CollectResult(CollectOutcome.TIMEOUT, "", terminator)
    pattern = spec.pattern if spec.pattern is not None else r"\d+"
    if len(digits) < spec.min_digits or re.fullmatch(pattern, digits) is None:
        return CollectResult(CollectOutcome.INVALID, digits, terminator)
    return CollectResult(CollectOutcome.OK, digits, terminator)


# ---------------------------------------------------------------------------------------------


CallHandler = Callable[["AsteriskCall"], Awaitable[None]]


def _channel_id(event: Event) -> str | None:
    if isinstance(event, ChannelEvent):
        return event.channel.id
    if isinstance(event, PlaybackEvent):
        kind, _, target = event.playback.target_uri.partition(":")
        return target if kind == "channel" else None
    if isinstance(event, RecordingEvent):
        kind, _, target = event.recording.target_uri.partition(":")
        return target if kind == "channel" else None
    channel = getattr(event, "channel", None)
    return getattr(channel, "id", None)


class AsteriskSwitch(Switch):
    """One Asterisk: its ARI client and event stream, and the calls in our Stasis app."""

    kind = "asterisk"
    # <astspooldir>/recording as Asterisk sees it (tools/asterisk-setup.sh: /var/spool/asterisk)
    recording_dir: str = asterisk_record.RECORDING_DIR

    def __init__(
        self,
        name: str,
        client: AriClient,
        *,
        sound_uri: SoundUri,
        on_call: CallHandler | None = None,
        stream: AriEventStream | None = None,
    ) -> None:
        self.name = name
        self.client = client
        self.sound_uri = sound_uri
        self.on_call = on_call
        self.stream = stream or AriEventStream(client, resync=self._resync, unreachable=self._unreachable)
        if stream is not None:
            stream.resync = self._resync
            stream.unreachable = self._unreachable
        if ALL_CHANNELS not in self.stream.event_sources:
            self.stream.event_sources = (*self.stream.event_sources, ALL_CHANNELS)
        if not self.stream.disallowed_events:
            self.stream.disallowed_events = UNUSED_EVENTS
        self.stream.add_handler(self._route)
        self.calls: dict[str, AsteriskCall] = {}
        # Outgoing legs of our calls' dials (asterisk_dial.py): their events go to the dial.
        self.legs: dict[str, DialLeg] = {}
        # Transferred calls keep getting their channel's ChannelDestroyed until it comes (bounded).
        self._departed: dict[str, AsteriskCall] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepting = True
        self.resyncs = 0
        # Calls a previous controller left live, taken over after a restart (asterisk_adopt.py).
        self.adopter = AsteriskAdopter(name, client, sound_uri)
        # Legs features drive, feature bridges and conference rooms (asterisk_legs.py).
        self.book = LegBook(name, client, sound_uri, self.legs, self.calls)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self.stream.start()

    async def wait_connected(self, timeout: float | None = None) -> None:
        await self.stream.wait_connected(timeout)

    @property
    def live_tasks(self) -> set[asyncio.Task[None]]:
        return {t for t in self._tasks if not t.done()}

    async def drain(self, grace: float) -> None:
        """Stop taking calls; let running ones finish for `grace` s; hang up and cancel the rest."""
        self.accepting = False
        live = self.live_tasks
        if live and grace > 0:
            await asyncio.wait(live, timeout=grace)
        for call in list(self.calls.values()):
            if not call.gone and not call.transferred:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(call.hangup("SYSTEM_SHUTDOWN"), 3.0)
        live = self.live_tasks
        if live:
            await asyncio.wait(live, timeout=2.0)
        for task in self.live_tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stop(self, grace: float = 0.0) -> None:
        await self.drain(grace)
        await self.book.close()
        await self.adopter.close()
        await self.stream.stop()
        await self.client.close()

    # -- events ----------------------------------------------------------------------------------

    def _route(self, event: Event) -> None:
        if self.legs:
            # a leg's playbacks (Leg.announce, park music) name it only in their target_uri
            ids = event.channel_ids if not isinstance(event, PlaybackEvent) else (_channel_id(event),)
            for leg_id in ids:
                leg = self.legs.get(leg_id)
                if leg is not None:
                    leg.on_event(event)
                    if isinstance(event, ChannelDestroyed):
                        self.legs.pop(leg_id, None)
                    return
        if isinstance(event, StasisStart):
            self._stasis_start(event)
            return
        if self.adopter.calls and any(self.adopter.owns(c) for c in event.channel_ids):
            self.adopter.on_event(event)  # a call a previous controller left (asterisk_adopt.py)
        channel_id = _channel_id(event)
        if channel_id is None:
            return
        targets = [c for c in (self.calls.get(channel_id), self._departed.get(channel_id)) if c is not None]
        for call in targets:
            handler = getattr(call, f"on_{event.type}", None)
            if handler is not None:
                handler(event)
        if isinstance(event, ChannelDestroyed):
            self.calls.pop(channel_id, None)
            self._departed.pop(channel_id, None)
        elif isinstance(event, StasisEnd):
            call = self.calls.get(channel_id)
            if call is not None and call.transferred:
                # It may come back (a new StasisStart); until it is destroyed it is "departed".
                self.calls.pop(channel_id, None)
                self._departed[channel_id] = call
                while len(self._departed) > 10_000:
                    self._departed.pop(next(iter(self._departed)))

    def _stasis_start(self, event: StasisStart) -> None:
        channel = event.channel
        args = list(event.args)
        if args and args[0] == DIAL_LEG_ARG:
            # An outgoing leg no dial of ours knows (its dial ended, or an earlier run of the
            # controller made it): nobody would ever hang it up.
            log.info("hanging up an outgoing leg of no running dial", extra={"call": channel.id})
            self._spawn(self._hang_up_orphan(channel.id))
            return
        if args and args[0] == asterisk_record.SNOOP_ARG:
            return  # a call recording's Snoop channel (asterisk_record.py): it ends with its call
        destination = args[1] if len(args) >= 2 and args[0] == "inbound" else channel.dialplan.exten
        info = CallInfo(
            uuid=channel.id,
            switch=self.name,
            caller_number=channel.caller.number,
            caller_name=channel.caller.name,
            destination=destination,
            channel_name=channel.name,
            answered=channel.state == "Up",
            variables={k: str(v) for k, v in (channel.channelvars or {}).items()},
        )
        info.variables.setdefault("stasis_args", ",".join(args))
        call = AsteriskCall(self.client, info, sound_uri=self.sound_uri, context=channel.dialplan.context,
                            language=channel.language, legs=self.legs)
        call.recording_dir = self.recording_dir
        call.book = self.book
        self.calls[channel.id] = call
        task = asyncio.create_task(self._run_call(call), name=f"ari-call-{channel.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_call(self, call: AsteriskCall) -> None:
        try:
            if not self.accepting:
                await call.hangup("SYSTEM_SHUTDOWN")
                return
            if self.on_call is not None:
                await self.on_call(call)
        except Exception:
            log.exception("call handler failed", extra={"call": call.uuid, "switch": self.name})
            with contextlib.suppress(Exception):
                await call.hangup("NORMAL_TEMPORARY_FAILURE")

    async def _resync(self, snapshot: Snapshot) -> None:
        """After a reconnect: calls whose channel is gone end now; the others go on.

        The cause of a channel that vanished during the gap is unknowable (ChannelDestroyed was
        lost). We use what we saw before the gap (our own DELETE, a hangup request's cause, an
        armed TIMEOUT(absolute) that is due) and otherwise NORMAL_CLEARING, because a caller's
        BYE, by far the most common end, is what Asterisk reports as 0/16 = NORMAL_CLEARING.
        """
        if not snapshot.reconnected:
            return
        self.resyncs += 1
        present = {channel.id: channel for channel in snapshot.channels}
        for channel_id, call in list(self.calls.items()):
            channel = present.get(channel_id)
            if channel is None:
                if not call.gone:
                    log.info("call vanished while the ARI stream was down", extra={"call": channel_id})
                    call.lost()
                self.calls.pop(channel_id, None)
                continue
            if call.gone:
                # We ended it while Asterisk was unreachable, yet the channel lives: nobody drives
                # it any more, so it must not sit in our app for ever.
                self.calls.pop(channel_id, None)
                self._spawn(self._hang_up_orphan(channel_id))
                continue
            if channel.state == "Up":
                call.mark_answered()
            if call._playbacks:
                self._spawn(self._recheck_playbacks(call))
        for channel_id in [c for c in self._departed if c not in present]:
            self._departed.pop(channel_id).lost()
        for channel_id in [c for c in self.legs if c not in present]:
            self.legs.pop(channel_id).lost()  # its dial goes on (or ends) without it
        self.adopter.resync(set(present))

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _unreachable(self, notice: Unreachable) -> None:
        """The stream was lost and Asterisk refuses connections: its channels are gone with it."""
        live = [call for call in self.calls.values() if not call.gone]
        if live:
            log.warning("Asterisk is unreachable; ending its calls", extra={
                "switch": self.name, "calls": len(live), "error": notice.reason})
        for call in live:
            call.switch_lost()
        for call in self._departed.values():
            call.switch_lost()
        self._departed.clear()
        for leg in self.legs.values():
            leg.lost(SWITCH_LOST_CAUSE)

    async def _hang_up_orphan(self, channel_id: str) -> None:
        try:
            await self.client.hangup(channel_id)
        except AriError as exc:
            log.debug("hangup of an orphan channel failed: %s", exc, extra={"call": channel_id})
        else:
            log.info("hung up a channel left over from the outage", extra={"call": channel_id, "switch": self.name})

    async def _recheck_playbacks(self, call: AsteriskCall) -> None:
        """A PlaybackFinished lost in the gap would leave its waiter hanging: 404 means finished."""
        for playback in list(call._playbacks.values()):
            try:
                await self.client.get_playback(playback.id)
            except AriNotFound:
                if not playback.done.done():
                    playback.done.set_result("done")
            except AriError as exc:
                log.debug("playback recheck failed: %s", exc)

    # -- Switch API --------------------------------------------------------------------------------

    async def live_calls(self) -> list[LiveChannel]:
        """Every channel on this Asterisk; bridged ones with their billing variables and answer
        time (asterisk_adopt.py)."""
        return await self.adopter.live_calls()

    async def adopt(self, uuid: str) -> AsteriskAdoptedCall:
        """Take over channel `uuid` after a controller restart (asterisk_adopt.py)."""
        return await self.adopter.adopt(uuid)

    async def originate(self, spec: OriginateSpec) -> AsteriskLeg:
        """A new outgoing leg into our app, answered and parked (asterisk_legs.py)."""
        return await self.book.originate(spec)

    async def take_leg(self, uuid: str) -> AsteriskLeg:
        """The answered peer of a running dial as a Leg (asterisk_legs.py)."""
        return await self.book.take_leg(uuid)

    async def conference_remove(self, room: str, uuid: str) -> None:
        await self.book.conference_remove(room, uuid)

    async def api(self, command: str) -> str:
        """An ARI request as text: `GET /asterisk/info`, `PUT /asterisk/modules/res_pjsip.so`.
        (ARI has no CLI; this is its management surface.) Returns the JSON body or ""."""
        method, _, path = command.strip().partition(" ")
        path = path.strip()
        if method.upper() not in ("GET", "PUT", "POST", "DELETE") or not path.startswith("/"):
            raise CallError(f"ARI command must be 'METHOD /path', not '{command}'")
        try:
            result = await self.client.request(method.upper(), path)
        except AriError as exc:
            raise CallError(f"{command}: {exc}") from None
        return "" if result is None else orjson.dumps(result).decode()

    RELOAD_MODULES: tuple[str, ...] = ("res_pjsip.so", "pbx_config.so")

    async def reload_config(self) -> str:
        """Reload what deploy renders (PJSIP, the dialplan). http.conf/ari.conf changes need a
        restart: reloading res_ari would drop our own WebSocket."""
        done: list[str] = []
        for module in self.RELOAD_MODULES:
            try:
                await self.client.request("PUT", f"/asterisk/modules/{module}")
            except AriError as exc:
                raise CallError(f"Asterisk refused to reload {module}: {exc}") from None
            done.append(module)
        return "reloaded " + ", ".join(done)


def sound_uri_for_site(site_name: str, sound_dirs: Iterable[Any]) -> SoundUri:
    """`site_sound_uri` for a loaded Site's `name` and `sound_dirs`."""
    return site_sound_uri(site_name, [str(d) for d in sound_dirs])
