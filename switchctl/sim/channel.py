"""One simulated FreeSWITCH channel: its state, variables, DTMF queue, application runner and hangup sequence.

The channel's session task (`SimChannel.run`) plays the role of FreeSWITCH's session thread: it runs the
dialplan's application, and every application blocks it, like `switch_core_session_exec`. Hangups can come from
the caller (BYE), from the session itself (an application, `sendmsg call-command: hangup`, a failed bridge), or
from another thread (`uuid_kill`, `sched_hangup`, `hupall`); the three differ in what the outbound socket sees
(scenarios README, "after a hangup"), so `hangup()` takes the kind.
"""

from __future__ import annotations

import asyncio
import collections
import time
import uuid as uuidlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal

if TYPE_CHECKING:
    from switchctl.sim.engine import FreeSwitchSim

HangupKind = Literal["caller", "session", "external"]



# switch_channel_callstate_t
CALLSTATE_NUMBERS = {"DOWN": 0, "DIALING": 1, "RINGING": 2, "EARLY": 3, "ACTIVE": 4, "HELD": 5,
                     "RING_WAIT": 6, "HANGUP": 7, "UNHELD": 8}


def now_us() -> int:
    """Event timestamps are wall-clock microseconds, like Event-Date-Timestamp."""
    return time.time_ns() // 1000


@dataclass
class ExecuteRequest:
    """A queued `sendmsg call-command: execute` (switch_ivr_parse_event)."""

    app: str
    arg: str
    event_uuid: str | None
    loops: int = 1


@dataclass
class ChannelHooks:
    """What the caller side of a simulated call wants to hear about (SimCall implements it)."""

    on_answer: Callable[[], None] | None = None
    on_collect_start: Callable[[], None] | None = None


class SimChannel:
    """A channel with FreeSWITCH's observable behaviour. `data` is the `events.ChannelData` the events describe."""

    # A SIP channel answers with 183+SDP first (CHANNEL_PROGRESS_MEDIA before CHANNEL_ANSWER); endpoints without
    # that step (mod_loopback) set this False.
    answer_implies_early_media = True

    def __init__(self, sim: "FreeSwitchSim", data: Any, *, hooks: ChannelHooks | None = None) -> None:
        self.sim = sim
        self.data = data
        self.hooks = hooks or ChannelHooks()
        self.dtmf_buffer: collections.deque[tuple[str, int, str]] = collections.deque()
        self.app_queue: collections.deque[ExecuteRequest] = collections.deque()
        self.hangup_kind: HangupKind | None = None
        self.hangup_by: str | None = None
        self.transfer_to: tuple[str, str | None, str | None] | None = None  # (extension, dialplan, context)
        self.controllers: list[Any] = []  # outbound ESL connections that control this channel
        self.apps_run: list[tuple[str, str, str]] = []
        self.task: asyncio.Task[None] | None = None
        self.destroyed = asyncio.Event()
        self.reported = asyncio.Event()
        self.bridged_to: "SimChannel | None" = None
        self.running_app: str | None = None
        self.exported: dict[str, str] = {}  # export/export_vars: copied onto legs this channel originates
        # switch_ivr_schedule_hangup adds a scheduler task per call and never replaces an earlier
        # one (the earliest fires first); `sched_del <uuid>` deletes them all (mod_commands.c).
        self.sched_hangup_tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self.linked: set[SimChannel] = set()  # channels waiting on this one (a ringing B leg)
        self.inline_apps: list[tuple[str, str]] | None = None  # an `inline` dialplan to run next
        self.break_media = False  # uuid_break: the running playback stops (CF_BREAK)

    # --- state -------------------------------------------------------------------------------------------------
    @property
    def uuid(self) -> str:
        return self.data.uuid

    @property
    def vars(self) -> dict[str, str]:
        return self.data.variables

    @property
    def hungup(self) -> bool:
        return self.data.hangup_cause is not None

    @property
    def ready(self) -> bool:
        return not self.hungup

    @property
    def answered(self) -> bool:
        return bool(self.data.answered_us)

    @property
    def media_ready(self) -> bool:
        return bool(self.data.answered_us or self.data.progress_media_us)

    def set_var(self, name: str, value: str | None) -> None:
        """switch_channel_set_variable: None (or empty) unsets; a re-set variable moves to the end."""
        self.data.set_var(name, value if value != "" else None)

    def set_callstate(self, state: str) -> None:
        """switch_channel_perform_set_callstate: CHANNEL_CALLSTATE with the previous state."""
        previous = self.data.call_state
        if previous == state:
            return
        self.data.call_state = state
        self.fire("CHANNEL_CALLSTATE", [("Original-Channel-Call-State", previous),
                                         ("Channel-Call-State-Number", str(CALLSTATE_NUMBERS[state]))])

    def fire(self, name: str, extra: list[tuple[str, str]] | tuple = ()) -> None:
        self.sim.fire_channel_event(name, self, list(extra))

    def wake(self) -> None:
        self._wake.set()
        for other in list(self.linked):
            other._wake.set()
        if self.bridged_to is not None:
            self.bridged_to._wake.set()

    # --- waiting in media time ---------------------------------------------------------------------------------
    async def wait(self, media_seconds: float | None, *, on_dtmf: bool = False, on_queue: bool = False,
                   until: Callable[[], bool] | None = None) -> str:
        """Let `media_seconds` of media pass (None: forever). Returns 'done', 'hangup', 'dtmf', 'queue' or 'until'.

        Media time is divided by media_speed; wake-ups come from DTMF, queued sendmsg, hangups and transfers.
        """
        loop = asyncio.get_running_loop()
        deadline = None if media_seconds is None or media_seconds == float("inf") else (
            loop.time() + media_seconds / self.sim.config.media_speed)
        while True:
            if self.hungup:
                return "hangup"
            if self.transfer_to is not None:
                return "transfer"
            if until is not None and until():
                return "until"
            if on_dtmf and self.dtmf_buffer:
                return "dtmf"
            if on_queue and self.app_queue:
                return "queue"
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return "done"
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                pass

    # --- DTMF --------------------------------------------------------------------------------------------------
    def receive_dtmf(self, digit: str, *, duration: int = 2240, source: str = "RTP") -> None:
        """A digit arrives from the network. It is queued; its DTMF event fires when an app dequeues it
        (switch_channel_dequeue_dtmf fires SWITCH_EVENT_DTMF, switch_channel.c:678).
        Duration 2240: what sipp's RFC2833 pcaps produced in every capture (s1 DTMF events)."""
        if self.hungup:
            return
        self.dtmf_buffer.append((digit, duration, source))
        self.wake()

    def dequeue_dtmf(self) -> str | None:
        if not self.dtmf_buffer:
            return None
        digit, duration, source = self.dtmf_buffer.popleft()
        self.data.dtmf_log += digit
        self.fire("DTMF", [("DTMF-Digit", digit), ("DTMF-Duration", str(duration)), ("DTMF-Source", source)])
        return digit

    # --- answer ------------------------------------------------------------------------------------------------
    def pre_answer(self) -> None:
        """switch_channel_pre_answer on an inbound SIP channel: 183 + SDP, CHANNEL_PROGRESS_MEDIA."""
        if self.media_ready or self.hungup:
            return
        self.data.progress_media_us = now_us()
        self.data.answer_state = "early"
        self.fire("CHANNEL_PROGRESS_MEDIA")
        self.set_callstate("EARLY")

    def mark_answered(self) -> None:
        """200 OK: CHANNEL_ANSWER then CALLSTATE ACTIVE (s3 b1 monitor: PROGRESS_MEDIA, CALLSTATE EARLY,
        ANSWER with Channel-Call-State EARLY, CALLSTATE ACTIVE)."""
        if self.answered or self.hungup:
            return
        if self.answer_implies_early_media:
            self.pre_answer()
        self.data.answered_us = now_us()
        self.data.answer_state = "answered"
        self.fire("CHANNEL_ANSWER")
        self.set_callstate("ACTIVE")
        self.wake()
        if self.hooks.on_answer is not None:
            self.hooks.on_answer()

    # --- hangup ------------------------------------------------------------------------------------------------
    def hangup(self, cause: str = "NORMAL_CLEARING", *, kind: HangupKind = "session", by: str = "switch") -> bool:
        """switch_channel_hangup: first call wins. Fires CHANNEL_HANGUP; the session task does the rest."""
        if self.hungup:
            return False
        self.data.hangup_cause = cause
        self.data.hungup_us = now_us()
        self.data.answer_state = "hangup"
        self.hangup_kind = kind
        self.hangup_by = by
        self.fire("CHANNEL_HANGUP")  # Hangup-Cause comes with the channel data once the cause is set
        if kind == "external":
            # Another thread hung the channel up: the outbound listener notices at once and sends its linger
            # notice right after CHANNEL_HANGUP, before the session thread's remaining events (s5 h1, h1b, h2, h2b).
            for controller in list(self.controllers):
                controller.channel_down()
        self.delete_scheduled()
        self.wake()
        return True

    def on_hangup_state(self) -> None:
        """The endpoint's on_hangup state handler, run as the channel enters CS_HANGUP (switch_core_state_machine).
        Nothing for SIP channels; mod_loopback hangs up its other leg here."""

    def schedule_hangup(self, seconds: int, cause: str) -> None:
        """switch_ivr_schedule_hangup at epoch+seconds: the scheduler runs on whole seconds, so it fires up to
        1 s early / 0.5 s late (DESIGN.md; s5 h1 fired 3.0 s after `+3`, h1b 2.5 s after). A new one is
        added beside any earlier one (switch_scheduler_add_task), never replacing it."""
        when = int(time.time()) + seconds  # whole epoch seconds, like switch_epoch_time_now()
        speed = self.sim.config.media_speed

        async def fire_later() -> None:
            delay = (when - time.time()) / speed
            await asyncio.sleep(max(0.0, delay))
            self.hangup(cause, kind="external", by="switch")

        task = asyncio.get_running_loop().create_task(fire_later())
        self.sched_hangup_tasks.append(task)
        task.add_done_callback(lambda t: t in self.sched_hangup_tasks and self.sched_hangup_tasks.remove(t))

    def delete_scheduled(self) -> int:
        """`sched_del <uuid>`: every scheduled task of the channel is deleted; returns how many."""
        tasks, self.sched_hangup_tasks = self.sched_hangup_tasks, []
        pending = [t for t in tasks if not t.done()]
        for task in pending:
            task.cancel()
        return len(pending)

    # --- applications ------------------------------------------------------------------------------------------
    async def execute(self, app: str, arg: str, app_uuid: str | None) -> None:
        """switch_core_session_execute_application_get_flags + switch_core_session_exec."""
        from switchctl.sim.apps import APPLICATIONS, MEDIA_APPS  # apps import channel; import late

        if self.hungup:
            # A hung-up channel runs only SAF_ZOMBIE_EXEC apps; the others are skipped without any event.
            return
        impl = APPLICATIONS.get(app)
        if impl is None:
            # switch_core_session.c: "Invalid Application %s" + hangup DESTINATION_OUT_OF_ORDER; no EXECUTE events.
            self.sim.log("ERR", f"Invalid Application {app}", channel=self)
            self.hangup("DESTINATION_OUT_OF_ORDER", kind="session")
            return
        if app in MEDIA_APPS and not self.media_ready and self.data.direction == "inbound":
            self.pre_answer()  # "Application %s Requires media! pre_answering channel"
        application_uuid = app_uuid or str(uuidlib.uuid4())
        self.data.last_app, self.data.last_arg = app, arg
        self.set_var("current_application", app)
        self.set_var("current_application_data", arg)
        self.set_var("current_application_response", None)
        # An app run without an argument has no Application-Data header at all (captures s2_pagd
        # `answer`; checked on a real 1.11.1), not an empty one that plain events would show as _undef_.
        data = [("Application-Data", arg)] if arg else []
        self.fire("CHANNEL_EXECUTE", [("Application", app), *data, ("Application-UUID", application_uuid)])
        previous = self.running_app
        self.running_app = app
        try:
            await impl(self, arg)
        finally:
            self.running_app = previous
        response = self.vars.get("current_application_response") or "_none_"
        self.apps_run.append((app, arg, response))
        self.fire("CHANNEL_EXECUTE_COMPLETE", [("Application", app), *data,
                                                ("Application-Response", response),
                                                ("Application-UUID", application_uuid)])

    def queue_execute(self, request: ExecuteRequest) -> None:
        self.app_queue.append(request)
        self.wake()

    async def park(self, *, while_: Callable[[], bool], announce: bool = True) -> None:
        """switch_ivr_park: run queued sendmsg apps one after the other, dequeue DTMF, until `while_` fails,
        the channel hangs up or a transfer is pending. Fires CHANNEL_PARK (unless the caller already did,
        see OutboundConnection.open_park_gate) and CHANNEL_UNPARK."""
        if announce:
            self.fire("CHANNEL_PARK")
        while self.ready and self.transfer_to is None and while_():
            if self.app_queue:
                request = self.app_queue.popleft()
                for _ in range(max(1, request.loops)):
                    await self.execute(request.app, request.arg, request.event_uuid)
                    if self.hungup or self.transfer_to is not None:
                        break
                continue
            if self.dtmf_buffer:
                self.dequeue_dtmf()
                continue
            await self.wait(None, on_dtmf=True, on_queue=True, until=lambda: not while_() or
                            self.transfer_to is not None)
        self.fire("CHANNEL_UNPARK")

