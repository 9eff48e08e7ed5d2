"""Recording on Asterisk over ARI: `Call.record` and `Call.start_recording` (used by AsteriskCall).

What Asterisk 22 does (captures asterisk-scenarios/05_recording, 06_snoop):
- `POST /channels/{id}/record` (name, format, maxDurationSeconds, maxSilenceSeconds, terminateOn,
  beep, ifExists) answers 201 at once; the end comes as RecordingFinished (`duration` in whole
  seconds) or RecordingFailed. RecordingFinished does not say WHY it ended: a terminator shows as a
  ChannelDtmfReceived just before it (05 a: same millisecond), a hangup as the channel's end.
  maxDurationSeconds is not exact (05 a: `cap5-maxsilence` ran 9 s with 8).
- A channel in a bridge cannot be recorded: 201 and then RecordingFailed "Cannot record channel
  while in bridge" (06). A whole-call recording that survives bridges therefore records a Snoop
  channel (spy=both) of the call: the snoop is never bridged, hears both directions whatever the
  call does, and ends with the call (06: StasisEnd + ChannelDestroyed when the target hangs up),
  which finishes its recording. (Bridge recording, 05 b, only covers one bridge's life.)
- Files go to Asterisk's recording directory: `<astspooldir>/recording/<name>.<format>`; a missing
  directory is a 500 and no event (05 z). The name may contain `/` (sub-folders).

Paths: RecordSpec.path / start_recording's path is the SWITCH's path. An absolute path must lie in
RECORDING_DIR (Asterisk writes nowhere else); a relative one is taken inside it. The result's path
is always the absolute switch path, `/var/spool/asterisk/recording/<name>.<format>`; with the
chroot deployment (tools/asterisk-setup.sh) the controller finds it under the chroot folder.
"""

from __future__ import annotations

import asyncio
import math
import posixpath
import uuid as uuidlib
from typing import TYPE_CHECKING

from ..ari import AriError, AriNotFound
from ..ari.errors import AriConflict
from ..ari.models import LiveRecording
from .asterisk_media import RECORDING_DIR
from .call import CallError, CallGone, Recording, RecordResult, RecordSpec

if TYPE_CHECKING:
    from .asterisk import AsteriskCall

# StasisStart argument of our snoop channels: the switch must not take them for new calls.
SNOOP_ARG = "switchctl-snoop"
# After the call ended, how long RecordingFinished may take (05 a: it can come before the BYE).
FINISH_GRACE_S = 2.0
# A recording that ended early is a hangup if the call ends within this (see record()).
HANGUP_GRACE_S = 1.0
# How much longer than max_seconds a recording may run before we stop waiting for Asterisk.
FINISH_SLACK_S = 10.0
_FORMATS = {"wav", "gsm", "ulaw", "alaw", "sln", "g722", "wav49"}


def recording_name(path: str, recording_dir: str = RECORDING_DIR) -> tuple[str, str, str]:
    """(ARI name, format, absolute switch path) of a switch path like
    /var/spool/asterisk/recording/vm/1001.wav or vm/1001.wav (`recording_dir`: <astspooldir>/recording)."""
    if not path or any(c.isspace() for c in path) or "\\" in path:
        raise CallError(f"record: bad path '{path}'")
    recording_dir = recording_dir.rstrip("/")
    full = posixpath.normpath(path if path.startswith("/") else posixpath.join(recording_dir, path))
    if not full.startswith(recording_dir + "/"):
        raise CallError(f"record: Asterisk records only under {recording_dir}/, not '{path}'")
    relative = full[len(recording_dir) + 1:]
    stem, dot, fmt = relative.rpartition(".")
    if not dot or "/" in fmt:
        stem, fmt = relative, "wav"
        full += ".wav"
    if fmt not in _FORMATS:
        raise CallError(f"record: Asterisk has no '{fmt}' format (use one of {', '.join(sorted(_FORMATS))})")
    if not stem or stem.startswith("."):
        raise CallError(f"record: bad path '{path}'")
    return stem, fmt, full


def terminate_on(terminators: str) -> str:
    """ARI's terminateOn takes one key, `any` or `none`: several keys become `any` (then the
    RecordResult still names the key pressed)."""
    if not terminators or terminators.lower() == "none":
        return "none"
    if len(terminators) == 1:
        if terminators not in "0123456789*#":
            raise CallError(f"record: bad terminator '{terminators}'")
        return terminators
    return "any"


def record_reason(finished: LiveRecording | None, *, hung_up: bool, terminator: str | None,
                  spec: RecordSpec) -> str:
    """Why a channel recording ended (RecordingFinished does not say, see module notes)."""
    if terminator:
        return "terminator"
    if hung_up:
        return "hangup"
    duration = finished.duration if finished is not None and finished.duration is not None else 0
    if spec.silence_seconds > 0 and duration < math.ceil(spec.max_seconds) - 1:
        return "silence"
    return "max_time"


async def record(call: AsteriskCall, spec: RecordSpec) -> RecordResult:
    """`POST /channels/{id}/record` with Asterisk's own beep; waits for RecordingFinished/Failed."""
    call._check()
    name, fmt, full = recording_name(spec.path, call.recording_dir)
    if spec.max_seconds <= 0:
        raise CallError(f"record: max_seconds must be > 0, got {spec.max_seconds}")
    term = terminate_on(spec.terminators)
    keys = "0123456789*#" if term == "any" else ("" if term == "none" else term)
    waiter = call.expect_recording(name)
    call.clear_dtmf()
    try:
        await call._rest("record", call.client.record(
            call.uuid, name, format=fmt, max_duration=max(1, math.ceil(spec.max_seconds)),
            max_silence=math.ceil(spec.silence_seconds) if spec.silence_seconds > 0 else None,
            if_exists="overwrite", beep=spec.beep, terminate_on=term))
        hung_up = False
        try:
            finished = await call._until(asyncio.shield(waiter), spec.max_seconds + FINISH_SLACK_S, "record")
        except CallGone:
            # The hangup ends the recording and keeps the file; its RecordingFinished may follow.
            hung_up = True
            try:
                finished = await asyncio.wait_for(asyncio.shield(waiter), FINISH_GRACE_S)
            except (TimeoutError, CallError):
                finished = None
    finally:
        call.forget_recording(name)
    if finished is not None and finished.state == "failed":
        raise CallError(f"record: Asterisk could not record '{full}': {finished.cause or 'failed'}")
    terminator = call.take_dtmf(keys) if not hung_up else None
    duration_us = (finished.duration or 0) * 1_000_000 if finished is not None else 0
    if not hung_up and not terminator and (finished is None or (finished.duration or 0) < math.ceil(spec.max_seconds) - 1):
        # Ended neither by a key nor by the time limit: silence, or a caller who hung up. Asterisk
        # may finish a recording before the hangup reaches it (05 a: 0.8 s before the BYE, once the
        # caller's RTP had stopped), so give the hangup a moment to show.
        hung_up = await call.gone_within(HANGUP_GRACE_S)
    reason = record_reason(finished, hung_up=hung_up, terminator=terminator, spec=spec)
    return RecordResult(full, reason, duration_us, terminator)


START_WAIT_S = 2.0
START_POLL_S = 0.05


class _NotYet(Exception):
    """The live recording is not in session yet (409)."""


class AsteriskRecording(Recording):
    """A whole-call recording on a Snoop channel (spy=both). pause/resume = mute/unmute (silence is
    written, the file keeps the call's timeline, like FreeSWITCH's mask)."""

    def __init__(self, call: AsteriskCall, name: str, path: str, snoop_id: str) -> None:
        self.call = call
        self.name = name
        self.path = path
        self.snoop_id = snoop_id
        self.stopped = False

    async def pause(self) -> None:
        await self._while_starting("recording mute", self.call.client.mute_recording)

    async def resume(self) -> None:
        await self._while_starting("recording unmute", self.call.client.unmute_recording)

    async def _while_starting(self, what: str, request) -> None:  # type: ignore[no-untyped-def]
        """POST /record answers before the recording is in session: a mute right after it gets
        409 "Recording not in session" (seen in CI). Retried for up to START_WAIT_S."""
        self.call._check()
        for _ in range(int(START_WAIT_S / START_POLL_S)):
            try:
                await self.call._rest(what, self._conflict_passes(request))
                return
            except _NotYet:
                await asyncio.sleep(START_POLL_S)
        await self.call._rest(what, request(self.name))

    async def _conflict_passes(self, request) -> None:  # type: ignore[no-untyped-def]
        try:
            await request(self.name)
        except AriConflict as exc:
            if "not in session" in exc.message.lower():
                raise _NotYet from None
            raise

    async def stop(self) -> None:
        """Idempotent: a recording that already finished (the call ended) is a 404."""
        if self.stopped:
            return
        self.stopped = True
        for what, operation in (("stop", self.call.client.stop_recording(self.name)),
                                ("snoop hangup", self.call.client.hangup(self.snoop_id))):
            try:
                await operation
            except AriNotFound:
                pass
            except AriError as exc:
                if not self.call.gone:
                    raise CallError(f"recording {what}: {exc}") from None


async def _record_once_in_stasis(call: AsteriskCall, snoop_id: str, name: str, fmt: str) -> None:
    """POST record on a fresh snoop channel. Its POST /snoop can be answered before the channel is
    in our Stasis app, and a record sent then is refused 409 "Channel not in Stasis application"
    (seen in CI; the same race as a created dial leg's /dial, asterisk_dial.py): retried for up to
    START_WAIT_S."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_WAIT_S
    while True:
        try:
            await call.client.record(snoop_id, name, format=fmt, if_exists="overwrite")
            return
        except AriConflict as exc:
            if "stasis" not in exc.message.lower() or loop.time() >= deadline:
                raise
        await asyncio.sleep(START_POLL_S)


async def start_recording(call: AsteriskCall, path: str) -> Recording:
    call._check()
    name, fmt, full = recording_name(path, call.recording_dir)
    snoop_id = f"switchctl-rec-{uuidlib.uuid4()}"
    await call._rest("snoop", call.client.snoop(call.uuid, spy="both", app_args=SNOOP_ARG, snoop_id=snoop_id))
    try:
        await call._rest("record", _record_once_in_stasis(call, snoop_id, name, fmt))
    except BaseException:
        try:
            await call.client.hangup(snoop_id)
        except AriError:
            pass
        raise
    return AsteriskRecording(call, name, full, snoop_id)
