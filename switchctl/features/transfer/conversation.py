"""One conversation: a caller's transferable dial, driven from the caller's own coroutine.

The caller (A) is a flow's `Call`; everyone else is a `Leg` the conversation owns: the party that
answered the dial (taken over with `Switch.take_leg`), transfer targets and recalls (placed with
`Switch.originate`). Key presses, API requests, hangups, originate results and the end of A's
current operation all arrive as events on one queue, which `run` (A's coroutine, the flow's `dial`
hook) handles one at a time: no two handlers ever race on the same call. A's long operations
(`dial`, `bridge`, `conference`) run as child tasks whose end is an event too; `hold` is awaited.

States (`state`):
  ringing          the flow's dial rings its targets (no transfer possible yet)
  talking          A is bridged with `party`, who may transfer (feature codes or API)
  blind            A hears ringback while a blind target rings; the transferor was released
  consult_ringing  A is on hold; the transferor (parked, hearing ringback) waits for the target
  consulting       A is on hold; transferor and target talk
  semi_attended    completed while the target rings: A hears ringback until it answers
  recall           the target failed: A hears ringback while the transferor is rung back
  three_way        A, transferor and target in conference room `room`
  ended            the dial hook returned (or is returning)
Recovery: a consultation's target that fails reconnects A with the transferor; a blind or
semi-attended target that fails recalls the transferor, and if that fails too the dial ends with the
target's failure outcome (the flow's fallback branches take A). Every owned leg that is still up
when the hook ends is hung up, also when A's coroutine is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from switchctl.features.transfer.calldata import leg_variables
from switchctl.features.transfer.codes import CodeAction, FeatureCodeReader
from switchctl.features.transfer.errors import TransferError
from switchctl.features.transfer.options import TransferOptions
from switchctl.features.transfer.routes import TransferDestination
from switchctl.flows.hooks import DialContext, TransferredDial
from switchctl.switch.call import (
    Call,
    CallError,
    CallGone,
    DialAnswer,
    DialFailed,
    DialOutcome,
    DialResult,
    DialSpec,
    DialTarget,
    Leg,
    OriginateSpec,
    Switch,
)

log = logging.getLogger(__name__)

CONSULT_STATES = frozenset({"consult_ringing", "consulting", "three_way"})
# How long A's dial/bridge may take to return once the feature moved its party away. A backend
# that never returns would otherwise hold the conversation (and its legs) forever.
MOVE_TIMEOUT = 10.0

Publish = Callable[[str, Mapping[str, Any]], None]
Resolve = Callable[[str, str | None], TransferDestination | None]


@dataclass(slots=True)
class _Command:
    action: str
    dest: TransferDestination | None
    source: Leg | None  # the leg whose keys asked for it; None: the API
    at: float  # monotonic time of the request
    future: asyncio.Future[dict[str, Any]]


@dataclass(slots=True)
class _OpDone:  # A's dial/bridge/conference task ended
    task: asyncio.Task[Any]


@dataclass(slots=True)
class _Originated:  # an originate ended (answered, failed or cancelled)
    task: asyncio.Task[Leg]


@dataclass(slots=True)
class _LegGone:
    leg: Leg


class _CallerGone:
    pass


_Event = _Command | _OpDone | _Originated | _LegGone | _CallerGone


class Conversation:
    def __init__(self, call: Call, switch: Switch, options: TransferOptions, context: DialContext, *,
                 publish: Publish, resolve: Resolve) -> None:
        self.call = call
        self.switch = switch
        self.options = options
        self.context = context
        self._publish = publish
        self._resolve = resolve  # (action, digits) -> destination; raises TransferError
        self.uuid = call.uuid
        self.data: dict[str, str] = {"caller_number": call.info.caller_number,
                                     "caller_name": call.info.caller_name, **context.variables}
        self.path = list(context.path)
        self.state = "ringing"
        self.mode: str | None = None  # blind | attended | semi_attended | three_way, while one runs
        self.transfers = 0
        self.party: Leg | None = None  # whom A talks with (talking)
        self.transferor: Leg | None = None  # who started the running transfer (consult states)
        self.target: Leg | None = None  # the answered consultation target
        self.target_to: str | None = None  # what the running transfer dialled
        self.room: str | None = None
        self._recall: DialTarget | None = None  # the transferor's own address, to ring it back
        self._targets: dict[str, DialTarget] = {}  # what each owned leg was reached by
        self._owned: dict[str, Leg] = {}
        self._members: set[str] = set()  # three-way room members (uuids)
        self._events: asyncio.Queue[_Event] = asyncio.Queue()
        self._a_task: asyncio.Task[Any] | None = None
        self._orig_task: asyncio.Task[Leg] | None = None
        self._orig_target: DialTarget | None = None
        self._orig_purpose = "target"  # or "recall"
        self._tasks: set[asyncio.Task[Any]] = set()  # watchers
        self._readers: dict[str, FeatureCodeReader] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._caller_gone = False
        self._caller_leaving = False  # the caller is being taken out of the three-way room
        self._rejoin: Leg | None = None  # ... to be bridged with this last party of the three-way
        self._failure: DialFailed | None = None  # the blind/semi-attended target's failure
        self._failed_target: DialTarget | None = None
        self._last: DialResult | None = None
        self._requested_at: float | None = None
        self._outcome: TransferredDial | None = None
        self._user_on_answer: Callable[[DialAnswer], Any] | None = None
        self.started_at = time.time()
        self.without_caller: asyncio.Task[None] | None = None  # see run(): a consultation the caller left

    # -- what the service asks -------------------------------------------------------------------

    def view(self) -> dict[str, Any]:
        target = self.target
        return {
            "conversation": self.uuid,
            "call": self.uuid,
            "switch": self.call.info.switch,
            "flow": self.context.flow,
            "node": self.context.node,
            "state": self.state,
            "mode": self.mode,
            "caller": {"number": self.call.info.caller_number, "name": self.call.info.caller_name},
            "party": self.party.uuid if self.party else None,
            "transferor": self.transferor.uuid if self.transferor else None,
            "target": {"to": self.target_to, "uuid": target.uuid if target else None},
            "room": self.room,
            "data": dict(self.data),
            "ivr_path": list(self.path),
            "transfers": self.transfers,
            "started_at": self.started_at,
        }

    def check(self, action: str, source: Leg | None = None) -> None:
        """Raise TransferError if `action` cannot be done now (by `source`, None: the API)."""
        if self._outcome is not None or self.state == "ended":
            raise TransferError("the call's transferable dial has ended")
        if action in ("blind", "attended"):
            if self.state != "talking" or self.party is None:
                raise TransferError(f"cannot start a {action} transfer: the call is {self.state}")
            if self._caller_gone:
                raise TransferError("the caller has hung up")
            if source is not None and source is not self.party:
                raise TransferError("only the party talking with the caller can transfer it")
        elif action in ("cancel", "complete", "three_way"):
            if self.state not in CONSULT_STATES:
                raise TransferError(f"no consultation to {action.replace('_', '-')}: the call is {self.state}")
            if source is not None and source is not self.transferor:
                raise TransferError("only the transferring party can end its consultation")
            if action == "three_way":
                if self.state != "consulting":
                    raise TransferError("three-way needs an answered consultation"
                                        if self.state == "consult_ringing" else "already in three-way")
                if self._caller_gone:
                    raise TransferError("the caller has hung up")
        else:
            raise TransferError(f"unknown transfer action '{action}': expected blind, attended, "
                                "complete, cancel or three_way")

    def submit(self, action: str, dest: TransferDestination | None,
               source: Leg | None = None) -> asyncio.Future[dict[str, Any]]:
        """Queue a checked request for A's coroutine; the future gets the view after it ran (or the
        TransferError that stopped it: then nothing changed)."""
        self.check(action, source)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        self._events.put_nowait(_Command(action, dest, source, time.monotonic(), future))
        return future

    def set_data(self, values: Mapping[str, str]) -> dict[str, Any]:
        if self._outcome is not None or self.state == "ended":
            raise TransferError("the call's transferable dial has ended")
        self.data.update(values)
        return self.view()

    # -- the caller's coroutine ------------------------------------------------------------------

    async def run(self, spec: DialSpec) -> TransferredDial:
        self._user_on_answer = spec.on_answer
        dial_spec = replace(spec, variables={**spec.variables, **leg_variables(self.uuid, self.data)},
                            feature_keys=self.options.enabled and self.context.feature_codes,
                            on_answer=self._on_answer)
        self._spawn(self._watch_caller())
        self._publish_state()
        handed_off = False
        try:
            self._a_start(self.call.dial(dial_spec))
            while self._outcome is None:
                await self._handle(await self._events.get())
                if self._outcome is None and self._caller_gone and self.state in CONSULT_STATES:
                    # The caller hung up during a consultation: transferor and target go on without
                    # them. That no longer concerns the caller's flow, and a switch keeps a hung-up
                    # channel (FreeSWITCH: and writes its CDR) only until the flow lets it go: the
                    # rest runs in a task of its own (`without_caller`, owned by the service).
                    self.without_caller = asyncio.create_task(self._run_without_caller(),
                                                              name=f"transfer-{self.uuid}-without-caller")
                    handed_off = True
                    return TransferredDial(result=self._result(caller_hung_up=True), transfers=self.transfers,
                                           data=dict(self.data))
            return self._outcome
        finally:
            if not handed_off:
                await self._cleanup_unskippable()

    async def _run_without_caller(self) -> None:
        """The end of a consultation whose caller left: when one of the two leaves, the other is hung up."""
        try:
            while self._outcome is None:
                await self._handle(await self._events.get())
        except Exception:
            log.exception("call %s: the consultation after the caller left failed", self.uuid)
        finally:
            await self._cleanup_unskippable()

    async def _cleanup_unskippable(self) -> None:
        # A task of its own, awaited shielded: a second cancellation cannot skip the hangups.
        cleanup = asyncio.get_running_loop().create_task(self._cleanup())
        try:
            await asyncio.shield(cleanup)
        except asyncio.CancelledError:
            await asyncio.wait({cleanup})
            raise

    async def _handle(self, event: _Event) -> None:
        if isinstance(event, _Command):
            await self._on_command(event)
        elif isinstance(event, _OpDone):
            if event.task is self._a_task:
                self._a_task = None
                await self._on_op_done(event.task)
        elif isinstance(event, _Originated):
            if event.task is self._orig_task:
                self._orig_task = None
                await self._on_originated(event.task)
        elif isinstance(event, _LegGone):
            await self._on_leg_gone(event.leg)
        else:
            await self._on_caller_gone()

    # -- events ------------------------------------------------------------------------------------

    async def _on_answer(self, answer: DialAnswer) -> None:
        """The flow's dial was answered (runs inside A's dial): take the party over as a Leg."""
        if self._user_on_answer is not None:
            await self._user_on_answer(answer)
        try:
            leg = await self.switch.take_leg(answer.peer_uuid)
        except CallError as exc:
            log.warning("call %s: cannot take over leg %s, no transfer on this call: %s",
                        self.uuid, answer.peer_uuid, exc)
            return
        self._own(leg, answer.target)
        self.party = leg
        self._set_state("talking")
        self._screen_pop(leg, answer.target, self.transfers)

    async def _on_command(self, cmd: _Command) -> None:
        try:
            self.check(cmd.action, cmd.source)  # again: the state may have moved since submit
            await getattr(self, f"_do_{cmd.action}")(cmd)
        except TransferError as exc:
            if not cmd.future.done():
                cmd.future.set_exception(exc)
        except BaseException as exc:
            if not cmd.future.done():
                cmd.future.set_exception(TransferError(f"{cmd.action} failed: {exc}"))
            raise
        else:
            if not cmd.future.done():
                cmd.future.set_result(self.view())

    async def _on_op_done(self, task: asyncio.Task[Any]) -> None:
        exc = None if task.cancelled() else task.exception()
        if self.state == "three_way":
            if isinstance(exc, CallGone):
                self._caller_gone = True
                self._members.discard(self.uuid)
                await self._check_room()
            else:
                if exc is not None:
                    log.error("call %s: conference failed: %s", self.uuid, exc)
                rejoin, self._rejoin = self._rejoin, None
                if exc is None and rejoin is not None and rejoin.hangup_cause is None:
                    completed = rejoin is self.target  # the transferor left: the transfer is done
                    self.room, self._members, self._caller_leaving = None, set(), False
                    await self._connect(rejoin, completed=completed)
                    return
                self._finish(self._result(caller_hung_up=False))
            return
        if isinstance(exc, CallGone):
            if self.state == "ringing":
                raise exc  # the caller hung up before anyone answered: like Call.dial
            self._caller_gone = True
            self._finish(self._result(caller_hung_up=True))
            return
        if exc is not None:
            if self.state == "ringing" or not isinstance(exc, CallError):
                raise exc  # the flow's own dial failed on the switch: as Call.dial would
            # A bridge after a transfer failed on the switch: the flow's failure branch takes A.
            log.error("call %s: bridge to the transfer party failed: %s", self.uuid, exc)
            self._finish(DialResult(outcome=DialOutcome.FAILED, cause="NORMAL_TEMPORARY_FAILURE",
                                         peer_uuid=self.party.uuid if self.party else None))
            return
        result: DialResult = task.result()
        self._last = result
        if result.caller_hung_up:
            self._caller_gone = True
        self._finish(result)

    async def _on_originated(self, task: asyncio.Task[Leg]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            await self._target_answered(task.result())
            return
        if isinstance(exc, DialFailed):
            failure = exc
        elif isinstance(exc, CallError):
            failure = DialFailed(DialOutcome.FAILED, "NORMAL_TEMPORARY_FAILURE", str(exc))
        else:
            raise exc
        await self._target_failed(failure)

    async def _on_leg_gone(self, leg: Leg) -> None:
        if self.state == "consult_ringing" and leg is self.transferor:
            # The transferor hung up while the target rings: semi-attended, A hears ringback.
            self.transferor = None
            await self._semi_attended()
        elif self.state == "consulting" and leg in (self.transferor, self.target):
            transferor_left = leg is self.transferor
            other = self.target if transferor_left else self.transferor
            self.transferor = self.target = None
            if other is None:
                return
            if self._caller_gone:
                await self._hangup(other)  # caller gone, one of the two left: the other goes too
                self._finish(self._result(caller_hung_up=True))
            else:
                await self._connect(other, completed=transferor_left)
        elif self.state == "three_way" and leg.uuid in self._members:
            self._members.discard(leg.uuid)
            await self._check_room()

    async def _on_caller_gone(self) -> None:
        self._caller_gone = True
        if self.state in ("blind", "semi_attended", "recall"):
            await self._cancel_originate()
            self._finish(self._result(caller_hung_up=True))
        elif self.state in ("consult_ringing", "consulting"):
            self._publish_state(caller="gone")  # transferor and target go on without A
        # ringing/talking/three_way: A's running operation reports it

    # -- actions (A's coroutine) -------------------------------------------------------------------

    def _begin(self, cmd: _Command, mode: str) -> Leg:
        transferor = self.party
        assert transferor is not None and cmd.dest is not None
        self.mode = mode
        self.target_to = cmd.dest.to
        self._requested_at = cmd.at
        self._recall = self._targets.get(transferor.uuid) or transferor.target
        return transferor

    async def _do_blind(self, cmd: _Command) -> None:
        dest = cmd.dest
        assert dest is not None
        transferor = self._begin(cmd, "blind")
        if dest.target is not None:
            self._originate(dest.target, self.options.ring_timeout, "target")
        self.party = None
        await self._hangup(transferor)  # released: A's dial/bridge ends
        result = await self._a_wait()
        if dest.flow is not None:
            self.transfers += 1
            self._set_state("ended", event_state="completed", elapsed_ms=self._elapsed())
            base = result or self._result(caller_hung_up=True)
            self._outcome = TransferredDial(result=base, transfers=self.transfers,
                                            flow=None if base.caller_hung_up else dest.flow, data=dict(self.data))
            return
        await self._hold(self.options.ringback)  # a caller gone meanwhile arrives as an event
        self._set_state("blind")

    async def _do_attended(self, cmd: _Command) -> None:
        dest = cmd.dest
        assert dest is not None and dest.target is not None
        transferor = self.party
        assert transferor is not None
        if not await self._leg_ok(transferor.park(self.options.ringback)):
            raise TransferError("the transferring party has hung up")
        self._begin(cmd, "attended")
        self.party = None
        self.transferor = transferor
        await self._a_wait()
        await self._hold(self.options.music)
        self._originate(dest.target, self.options.ring_timeout, "target")
        self._set_state("consult_ringing")

    async def _do_cancel(self, cmd: _Command) -> None:
        if self.state == "three_way":
            if self.target is not None:
                await self._hangup(self.target)  # the room rule does the rest
            return
        if self.state == "consult_ringing":
            await self._cancel_originate()
        else:
            target, self.target = self.target, None
            if target is not None:
                await self._hangup(target)
        transferor, self.transferor = self.transferor, None
        self._publish_state(event_state="cancelled")
        if transferor is None:
            return
        if self._caller_gone:
            await self._hangup(transferor)
            self._finish(self._result(caller_hung_up=True))
        else:
            await self._connect(transferor, completed=False)

    async def _do_complete(self, cmd: _Command) -> None:
        self._requested_at = cmd.at  # elapsed_ms counts from the completion request
        transferor, self.transferor = self.transferor, None
        if self.state == "three_way":
            if transferor is not None:
                await self._hangup(transferor)
            return
        if transferor is not None:
            await self._hangup(transferor)
        if self.state == "consult_ringing":
            await self._semi_attended()
            return
        target, self.target = self.target, None
        assert target is not None
        if self._caller_gone:
            await self._hangup(target)
            self._finish(self._result(caller_hung_up=True))
        else:
            await self._connect(target, completed=True)

    async def _do_three_way(self, cmd: _Command) -> None:
        transferor, target = self.transferor, self.target
        assert transferor is not None and target is not None
        room = f"switchctl-{self.uuid}"
        for leg in (transferor, target):
            if not await self._leg_ok(leg.join_conference(room)):
                # One of them hung up; its _LegGone (consulting) reconnects A with the other.
                raise TransferError("a party hung up before the three-way started")
        self.room = room
        self._members = {self.uuid, transferor.uuid, target.uuid}
        self.mode = "three_way"
        self._a_start(self.call.conference(room))
        self._set_state("three_way")

    # -- outcomes of the target's ringing ------------------------------------------------------------

    async def _target_answered(self, leg: Leg) -> None:
        purpose, dialled = self._orig_purpose, self._orig_target
        self._own(leg, dialled)
        self._screen_pop(leg, dialled, self.transfers + (purpose == "target"))
        if self.state in ("blind", "semi_attended", "recall"):
            await self._connect(leg, completed=purpose == "target")
        elif self.state == "consult_ringing":
            self.target = leg
            transferor = self.transferor
            assert transferor is not None
            await self._leg_ok(transferor.bridge(leg))  # a failure comes back as a _LegGone
            self._set_state("consulting")
        else:  # nothing waits for it any more
            await self._hangup(leg)

    async def _target_failed(self, failure: DialFailed) -> None:
        self._publish_state(event_state="failed", outcome=failure.outcome.value, cause=failure.cause)
        if self.state in ("blind", "semi_attended"):
            self._failure, self._failed_target = failure, self._orig_target
            if self.options.recall_transferor and self._recall is not None and not self._caller_gone:
                self._originate(self._recall, self.options.recall_timeout, "recall")
                self._set_state("recall")
            else:
                self._finish_failed()
        elif self.state == "recall":
            self._finish_failed()
        elif self.state == "consult_ringing":
            transferor, self.transferor = self.transferor, None
            assert transferor is not None
            if self._caller_gone:
                await self._hangup(transferor)
                self._finish(self._result(caller_hung_up=True))
            else:
                await self._connect(transferor, completed=False)

    def _finish_failed(self) -> None:
        failure = self._failure
        assert failure is not None
        result = DialResult(outcome=failure.outcome, cause=failure.cause, target=self._failed_target)
        self._last = result
        self._finish(result)

    # -- the three-way room -------------------------------------------------------------------------

    async def _check_room(self) -> None:
        """Fewer than two left in the room: the last leg is hung up, or the caller taken out."""
        legs = [leg for leg in (self.transferor, self.target)
                if leg is not None and leg.uuid in self._members and leg.hangup_cause is None]
        caller_in = not self._caller_gone and self.uuid in self._members
        if caller_in and len(legs) == 1 and not self._caller_leaving:
            # Down to the caller and one party: back to a plain call between them, so that party
            # may transfer again (A's conference() returns "left", then _on_op_done bridges them).
            self._rejoin = legs[0]
        elif len(legs) + caller_in >= 2:
            return
        if caller_in:
            if self._caller_leaving:
                # Both legs left at once: the first's check already asked for it; A's conference()
                # returning ends the dial (a second kick would find the room gone).
                return
            self._caller_leaving = True
            assert self.room is not None
            try:
                await self.switch.conference_remove(self.room, self.uuid)  # A's conference() -> "left"
            except CallError as exc:
                log.error("call %s: cannot take the caller out of %s: %s", self.uuid, self.room, exc)
                self._finish(self._result(caller_hung_up=False))
            return
        for leg in legs:
            await self._hangup(leg)
        self._finish(self._result(caller_hung_up=True))

    # -- helpers ------------------------------------------------------------------------------------

    async def _semi_attended(self) -> None:
        """The transferor left while the target rings: A hears ringback until it answers (or, A gone
        too, nothing waits for the target any more)."""
        if self._caller_gone:
            await self._cancel_originate()
            self._finish(self._result(caller_hung_up=True))
            return
        self.mode = "semi_attended"
        await self._hold(self.options.ringback)
        self._set_state("semi_attended")

    async def _connect(self, leg: Leg, *, completed: bool) -> None:
        """Bridge A with `leg`, who becomes the party (and may transfer again)."""
        self.party, self.target, self.transferor = leg, None, None
        self._a_start(self.call.bridge(leg))
        if completed:
            self.transfers += 1
            self._set_state("talking", event_state="completed", elapsed_ms=self._elapsed())
        else:
            self._set_state("talking")
        self.mode = None
        self.target_to = None

    def _a_start(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._a_task = task
        task.add_done_callback(lambda t: self._events.put_nowait(_OpDone(t)))

    async def _a_wait(self) -> DialResult | None:
        """Wait for A's running dial/bridge to end after its party was moved; None if A is gone."""
        task, self._a_task = self._a_task, None
        if task is None:
            return None
        done, _ = await asyncio.wait({task}, timeout=MOVE_TIMEOUT)
        if not done:
            log.error("call %s: the bridge did not end %.0f s after its party left", self.uuid, MOVE_TIMEOUT)
            task.cancel()
            await asyncio.wait({task})
            return None
        if task.cancelled():
            return None
        exc = task.exception()
        if exc is not None:
            if not isinstance(exc, CallGone):
                log.error("call %s: bridge ended with an error: %s", self.uuid, exc)
            return None
        result = task.result()
        if isinstance(result, DialResult):
            self._last = result
            return result
        return None

    async def _hold(self, music: str | None) -> None:
        try:
            await self.call.hold(music)
        except CallError as exc:  # CallGone: the caller watcher's event handles it
            log.info("call %s: hold failed: %s", self.uuid, exc)

    async def _leg_ok(self, aw: Any) -> bool:
        try:
            await aw
        except CallError as exc:
            log.info("call %s: leg operation failed: %s", self.uuid, exc)
            return False
        return True

    async def _hangup(self, leg: Leg) -> None:
        if leg.hangup_cause is not None:
            return
        try:
            await leg.hangup()
        except CallError as exc:
            log.warning("call %s: hanging up leg %s failed: %s", self.uuid, leg.uuid, exc)

    def _originate(self, target: DialTarget, timeout: float, purpose: str) -> None:
        info = self.call.info
        spec = OriginateSpec(target=target, timeout=timeout, caller_id_number=info.caller_number or None,
                             caller_id_name=info.caller_name or None,
                             variables=leg_variables(self.uuid, self.data))
        task = asyncio.get_running_loop().create_task(self.switch.originate(spec))
        self._orig_task, self._orig_target, self._orig_purpose = task, target, purpose
        task.add_done_callback(lambda t: self._events.put_nowait(_Originated(t)))

    async def _cancel_originate(self) -> None:
        task, self._orig_task = self._orig_task, None
        if task is None:
            return
        task.cancel()
        await asyncio.wait({task})
        if not task.cancelled() and task.exception() is None:  # answered just before the cancel
            await self._hangup(task.result())

    def _own(self, leg: Leg, target: DialTarget | None) -> None:
        if leg.uuid in self._owned:
            return
        self._owned[leg.uuid] = leg
        if target is not None:
            self._targets[leg.uuid] = target
        self._spawn(self._watch_leg(leg))
        self._watch_keys(leg)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch_leg(self, leg: Leg) -> None:
        with contextlib.suppress(CallError):
            await leg.wait_hangup()
        self._events.put_nowait(_LegGone(leg))

    async def _watch_caller(self) -> None:
        with contextlib.suppress(CallError):
            await self.call.wait_hangup()
        self._events.put_nowait(_CallerGone())

    # -- feature codes ---------------------------------------------------------------------------------

    def _watch_keys(self, leg: Leg) -> None:
        if not (self.options.enabled and self.context.feature_codes):
            return
        try:
            self._readers[leg.uuid] = FeatureCodeReader(self.options.codes, self.options.digit_timeout)
        except ValueError as exc:
            log.error("transfer feature codes unusable: %s", exc)
            return
        leg.on_dtmf(lambda key: self._on_key(leg, key))

    def _key_allowed(self, leg: Leg) -> bool:
        if self.state == "talking":
            return leg is self.party
        return self.state in CONSULT_STATES and leg is self.transferor

    def _on_key(self, leg: Leg, key: str) -> None:
        reader = self._readers.get(leg.uuid)
        if reader is None or self._outcome is not None:
            return
        if not self._key_allowed(leg):
            reader.reset()
            return
        reader.consulting = self.state in CONSULT_STATES
        loop = asyncio.get_running_loop()
        for action in reader.feed(key, loop.time()):
            self._key_action(leg, action)
        self._arm_timer(leg, reader)

    def _arm_timer(self, leg: Leg, reader: FeatureCodeReader) -> None:
        old = self._timers.pop(leg.uuid, None)
        if old is not None:
            old.cancel()
        deadline = reader.deadline
        if deadline is not None:
            self._timers[leg.uuid] = asyncio.get_running_loop().call_at(deadline, self._on_key_pause, leg)

    def _on_key_pause(self, leg: Leg) -> None:
        self._timers.pop(leg.uuid, None)
        reader = self._readers.get(leg.uuid)
        if reader is None or self._outcome is not None:
            return
        action = reader.poll(asyncio.get_running_loop().time())
        if action is not None:
            self._key_action(leg, action)

    def _key_action(self, leg: Leg, action: CodeAction) -> None:
        try:
            if not self._key_allowed(leg):
                raise TransferError("keys from a party that cannot transfer now")
            dest = self._resolve(action.action, action.number or None)
            self.submit(action.action, dest, source=leg)
        except TransferError as exc:
            log.info("call %s: feature code %s from %s refused: %s", self.uuid, action.action, leg.uuid, exc)

    # -- results and events --------------------------------------------------------------------------

    def _result(self, *, caller_hung_up: bool) -> DialResult:
        last = self._last
        cause = (self.call.hangup_cause or "NORMAL_CLEARING") if caller_hung_up else "NORMAL_CLEARING"
        if last is not None and last.outcome is DialOutcome.ANSWERED:
            return replace(last, cause=cause if caller_hung_up else last.cause, caller_hung_up=caller_hung_up)
        party = self.party or self.target or self.transferor
        return DialResult(outcome=DialOutcome.ANSWERED, cause=cause, caller_hung_up=caller_hung_up,
                          peer_uuid=party.uuid if party else None,
                          answered_at_us=party.answered_at_us if party else 0)

    def _finish(self, result: DialResult) -> None:
        if self._outcome is None:
            self._outcome = TransferredDial(result=result, transfers=self.transfers, data=dict(self.data))

    def _elapsed(self) -> float | None:
        if self._requested_at is None:
            return None
        return round((time.monotonic() - self._requested_at) * 1000.0, 3)

    def _set_state(self, state: str, *, event_state: str | None = None, **extra: Any) -> None:
        self.state = state
        self._publish_state(event_state=event_state, **extra)

    def _publish_state(self, *, event_state: str | None = None, **extra: Any) -> None:
        self._publish("transfer", {"conversation": self.uuid, "state": event_state or self.state,
                                   "mode": self.mode, "target": self.target_to, **extra})

    def _screen_pop(self, leg: Leg, dialled: DialTarget | None, transfers: int) -> None:
        self._publish("screen_pop", {
            "conversation": self.uuid, "call": self.uuid, "leg": leg.uuid,
            "to": dialled.address if dialled else None, "data": dict(self.data),
            "ivr_path": list(self.path), "transfers": transfers,
        })

    async def _cleanup(self) -> None:
        self.state = "ended"
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        pending: list[asyncio.Task[Any]] = [*self._tasks]
        for task in (self._a_task, self._orig_task):
            if task is not None:
                pending.append(task)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        orig = self._orig_task
        if orig is not None and not orig.cancelled() and orig.exception() is None:
            self._owned.setdefault(orig.result().uuid, orig.result())
        while not self._events.empty():  # requests nobody will run
            event = self._events.get_nowait()
            if isinstance(event, _Command) and not event.future.done():
                event.future.set_exception(TransferError("the call's transferable dial has ended"))
            elif isinstance(event, _Originated) and not event.task.cancelled() and event.task.exception() is None:
                self._owned.setdefault(event.task.result().uuid, event.task.result())
        for leg in self._owned.values():
            with contextlib.suppress(Exception):
                leg.on_dtmf(None)
        await asyncio.gather(*(self._hangup(leg) for leg in self._owned.values()), return_exceptions=True)
        self._publish_state()


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Key-press requests have no one awaiting them: mark their errors as seen."""
    if not future.cancelled():
        future.exception()
