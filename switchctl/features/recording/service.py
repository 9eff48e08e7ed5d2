"""Call recording: start, pause, resume and stop a call's whole-call recording, from a flow's
`record_call` node (`flows.hooks.CallRecordings`) or from a console (the web API), and keep each
file's path with the call (store/recording_models.py, found by call uuid like the call's CDRs).

    recorder = CallRecorder(RecordingLog(store, wall_us), directory="/var/lib/freeswitch/recordings",
                            local_directory=None, timezone="Europe/Berlin",
                            cdr_variable_switches={"ast1"})
    runner.recordings = recorder
    async with recorder.tracking(call):      # the controller, around each call's flow: the API
        await runner.run(call, flow)          # finds live calls by uuid; the rows are completed
                                              # when the call ends

One recording runs per call at a time; its file is `<directory>/<yyyy>/<mm>/<dd>/<name>.wav` (a
second start in the same call gets `<name>-2`, never overwriting the first). The path goes into the
channel variable `switchctl_recording`, so the switch's own CDR carries it and the CDR importer can
write the row a controller killed mid-call never wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from switchctl.billing.cdr import RECORDING_VAR  # the channel (Asterisk: CDR) variable naming the file
from switchctl.flows.hooks import RecordingStarted
from switchctl.store.recording_models import RecordingLog
from switchctl.switch.call import Call, CallError, CallGone, Recording

from .layout import local_path, recording_path, safe_name

log = logging.getLogger(__name__)

ACTIONS = ("start", "pause", "resume", "stop")
MAX_PER_CALL = 100  # recordings one call may start (a flow loop or a console cannot fill a disk)


class RecordingError(Exception):
    """A request the call's recording state refuses (API: 409)."""


class UnknownCall(RecordingError):
    """No live call of that uuid here (API: 404)."""


@dataclass
class _LiveCall:
    call: Call
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    recording: Recording | None = None
    state: str = "none"  # none, recording, paused, stopped
    paths: list[str] = field(default_factory=list)  # every file this call recorded, in order


def _utc_now_us() -> int:
    return time.time_ns() // 1_000


class CallRecorder:
    def __init__(self, log_: RecordingLog | None, *, directory: str, local_directory: str | None = None,
                 fmt: str = "wav", timezone: str = "UTC", clock: Callable[[], int] | None = None,
                 cdr_variable_switches: Collection[str] = ()) -> None:
        self.log = log_  # None: no store, recordings run but their paths are only in the CDRs
        self.directory = directory.rstrip("/") or "/"
        self.local_directory = local_directory.rstrip("/") if local_directory else None
        self.fmt = fmt
        self.timezone = timezone
        self.clock = clock or (log_.clock if log_ is not None else _utc_now_us)
        # Asterisk switches: cdr_custom prints CDR variables only, so the path is also written
        # as CDR(switchctl_recording) there.
        self.cdr_variable_switches = frozenset(cdr_variable_switches)
        self._calls: dict[str, _LiveCall] = {}
        self._made_folders: set[str] = set()

    # -- live calls --------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def tracking(self, call: Call) -> AsyncIterator[None]:
        """Make `call` reachable by uuid (the API) while its flow runs; when it ends, the recording
        still running ended with it (the switch closed the file at the hangup)."""
        live = self._calls.setdefault(call.uuid, _LiveCall(call))
        try:
            yield
        finally:
            self._calls.pop(call.uuid, None)
            await self._finish(live)

    async def _finish(self, live: _LiveCall) -> None:
        async with live.lock:
            recording, state = live.recording, live.state
            if recording is None or state not in ("recording", "paused"):
                return
            by = "hangup" if live.call.hangup_cause is not None else "stop"
            if by == "stop":  # the flow ended (e.g. transferred away) with the call still up
                try:
                    await recording.stop()
                except CallError as exc:
                    log.warning("stopping the recording at the end of the flow failed: %s", exc,
                                extra={"call": live.call.uuid})
            live.state = "stopped"
            await self._log("ended", live.call, recording.path, self.clock(), by=by)

    def live_call(self, uuid: str) -> Call | None:
        live = self._calls.get(uuid)
        return live.call if live is not None else None

    def status(self, uuid: str) -> dict[str, Any] | None:
        """The call's recording state for the API; None when the call is not live here."""
        live = self._calls.get(uuid)
        if live is None:
            return None
        return {"call": uuid, "state": live.state, "path": live.recording.path if live.recording else None,
                "paths": list(live.paths)}

    # -- CallRecordings (flows) --------------------------------------------------------------------

    async def start(self, call: Call, name: str) -> RecordingStarted:
        live = self._calls.setdefault(call.uuid, _LiveCall(call))
        async with live.lock:
            if live.state in ("recording", "paused") and live.recording is not None:
                log.info("record_call start: a recording is already running (%s)", live.recording.path,
                         extra={"call": call.uuid})
                return RecordingStarted(live.recording.path, new=False)
            if len(live.paths) >= MAX_PER_CALL:
                raise CallError(f"call {call.uuid} started {MAX_PER_CALL} recordings already")
            path = self._path(call, name, live.paths)
            self._make_folder(path)
            started_us = self.clock()
            recording = await call.start_recording(path)
            live.recording, live.state = recording, "recording"
            live.paths.append(path)
            # The row first: the channel variable may fail if the call just hung up, and the file
            # (closed by the hangup) must be known all the same.
            await self._log("started", call, path, started_us)
            await call.set_variable(RECORDING_VAR, path)
            if call.info.switch in self.cdr_variable_switches:
                # cdr_custom prints CDR variables only (as billing's, asterisk_dial._mark_caller_cdr)
                await call.set_variable(f"CDR({RECORDING_VAR})", path)
            log.info("recording started", extra={"call": call.uuid, "path": path})
            return RecordingStarted(path)

    async def pause(self, call: Call) -> bool:
        return await self._change(call, "pause")

    async def resume(self, call: Call) -> bool:
        return await self._change(call, "resume")

    async def stop(self, call: Call) -> bool:
        return await self._change(call, "stop")

    async def _change(self, call: Call, action: str) -> bool:
        live = self._calls.get(call.uuid)
        if live is None:
            return False
        async with live.lock:
            wanted = {"pause": ("recording",), "resume": ("paused",), "stop": ("recording", "paused")}[action]
            recording = live.recording
            if recording is None or live.state not in wanted:
                return False
            now = self.clock()
            if action == "pause":
                await recording.pause()
                live.state = "paused"
                await self._log("paused", call, recording.path, now)
            elif action == "resume":
                await recording.resume()
                live.state = "recording"
                await self._log("resumed", call, recording.path, now)
            else:
                await recording.stop()
                live.state = "stopped"
                await self._log("ended", call, recording.path, now, by="stop")
            log.info("recording %s", {"pause": "paused", "resume": "resumed", "stop": "stopped"}[action],
                     extra={"call": call.uuid, "path": recording.path})
            return True

    # -- the API -------------------------------------------------------------------------------------

    async def act(self, uuid: str, action: str, *, name: str | None = None) -> dict[str, Any]:
        """Do `action` (start, pause, resume, stop) on live call `uuid`. Raises UnknownCall when the
        call is not live here, RecordingError when its recording state refuses the action or the
        switch did, ValueError for an unknown action."""
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
        live = self._calls.get(uuid)
        if live is None:
            raise UnknownCall(f"no live call {uuid}")
        try:
            if action == "start":
                started = await self.start(live.call, name or uuid)
                if not started.new:
                    raise RecordingError(f"call {uuid} is already being recorded ({started.path})")
            else:
                state = live.state
                if not await self._change(live.call, action):
                    raise RecordingError(f"cannot {action} the recording of call {uuid}: it is "
                                         f"{'not recording' if state in ('none', 'stopped') else state}")
        except CallGone as exc:
            raise UnknownCall(f"call {uuid} is gone ({exc.cause})") from None
        except CallError as exc:
            raise RecordingError(f"{action} failed on the switch: {exc}") from None
        status = self.status(uuid)
        return status if status is not None else {"call": uuid, "state": "stopped"}

    # -- helpers -------------------------------------------------------------------------------------

    def _path(self, call: Call, name: str, taken: list[str]) -> str:
        base = safe_name(name, call.uuid)
        now = dt.datetime.fromtimestamp(self.clock() / 1_000_000, dt.UTC)
        path = recording_path(self.directory, base, now, timezone=self.timezone, fmt=self.fmt)
        n = 1
        while path in taken:  # a second recording of the call must not overwrite the first
            n += 1
            path = recording_path(self.directory, f"{base}-{n}", now, timezone=self.timezone, fmt=self.fmt)
        return path

    def _make_folder(self, path: str) -> None:
        """Make the day's folder when the controller sees the recordings folder (`local_directory`).
        The switches make missing folders themselves (FreeSWITCH's record_session, Asterisk's ARI
        recording under its recording dir); this covers a switch that does not (the simulator)."""
        if self.local_directory is None:
            return
        folder = os.path.dirname(local_path(path, self.directory, self.local_directory))
        if folder in self._made_folders:
            return
        try:
            os.makedirs(folder, exist_ok=True)  # once a day: a quick local syscall, no thread
        except OSError as exc:
            log.warning("cannot make recording folder %s: %s (the switch may still)", folder, exc)
            return
        if len(self._made_folders) > 1000:
            self._made_folders.clear()
        self._made_folders.add(folder)

    def local_file(self, path: str) -> str:
        """`path` (the switch's) as the controller reads it."""
        return local_path(path, self.directory, self.local_directory)

    async def _log(self, what: str, call: Call, path: str, at_us: int, **kwargs: Any) -> None:
        if self.log is None:
            return
        try:
            await getattr(self.log, what)(call.info.switch, call.uuid, path, at_us, **kwargs)
        except Exception:  # noqa: BLE001 - a store hiccup must not stop the call; the CDR keeps the path
            log.exception("recording %s: the store write failed (the CDR import will keep the path)", what,
                          extra={"call": call.uuid, "path": path})
