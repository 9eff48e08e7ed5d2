"""The FreeSWITCH backend: a `Call` driven over one outbound event-socket session.

Each operation is one dialplan application sent with `sendmsg execute` and awaited through its
CHANNEL_EXECUTE_COMPLETE (matched by Application-UUID in the ESL layer). What the completion says
is read the way FreeSWITCH 1.11.1 really reports it (captures freeswitch-scenarios/s2, s3, s5):
- play_and_get_digits puts the digits only in `variable_<var>`; `read_result` is `success` even when
  every try failed the regex (then `<var>` is absent and `<var>_invalid` holds the last input),
  `failure` (not `timeout`) when nothing was pressed with min_digits >= 1, and `timeout` when the
  accepted digits were ended by the inter-digit timeout.
- After a hangup the running application still completes, with `Answer-State: hangup`: that is how
  an operation learns the caller is gone while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import uuid as uuidlib
from collections.abc import Mapping, Sequence

from ..esl.codec import CommandReply, Event
from ..esl.errors import (
    ChannelHungUp,
    CommandError,
    ConnectionLost,
    ESLError,
    ReplyTimeout,
)
from ..esl.inbound import InboundClient
from ..esl.outbound import OutboundSession
from .call import (
    HOLD_TONE,
    AdoptedCall,
    Call,
    CallError,
    CallGone,
    CallInfo,
    CollectOutcome,
    CollectResult,
    CollectSpec,
    DialAnswer,
    DialOutcome,
    DialResult,
    DialSpec,
    DialTarget,
    Leg,
    LiveChannel,
    OriginateSpec,
    Recording,
    RecordResult,
    RecordSpec,
    SayKind,
    Switch,
    dial_outcome_for_cause,
)
from .freeswitch_adopt import FreeSwitchAdopter, sched_hangup_time
from .freeswitch_dialstring import target_dial, variables_block
from .freeswitch_legs import (
    LEGS,
    FreeSwitchLeg,
    LegTracker,
    check_prompt,
    check_room,
    conference_transfer_command,
    member_id_for,
)

log = logging.getLogger("switchctl.freeswitch")

# The events a call needs. Every channel event carries all channel variables (2-9 KB each), so
# each one subscribed costs. The flows need only application completions: digits arrive in
# play_and_get_digits' completion, and the hangup shows as an application completing with
# `Answer-State: hangup` + `Hangup-Cause`, at the latest the `socket` app's own completion (captures
# s1 v12: 40.5 KB per IVR call, against 46.9 KB with DTMF + CHANNEL_HANGUP and 95.6 KB for
# `myevents`). `filter Unique-ID` keeps other channels' events off this socket (s1 v11).
# Features that need more (DTMF feature codes, CDR fields) subscribe to it on their calls.
CALL_EVENTS: tuple[str, ...] = ("CHANNEL_EXECUTE_COMPLETE",)

# play_and_get_digits splits its argument on spaces, so no field may contain one.
_NO_SPACE = re.compile(r"\s")
_SILENCE = "silence_stream://250"
DIGITS_VAR = "switchctl_digits"


# -- dialing -----------------------------------------------------------------------------------
# dial = one `bridge` (captures s3): groups joined with `|` (failover), a group's targets with `,`
# (rung at once, first answer wins, the others get LOSE_RACE), `[leg_timeout=N]` per target
# (ALLOTTED_TIMEOUT, s3 b3). `{ignore_early_media=true}`: originate returns only on the 200, so the
# bridge starts at the answer and CHANNEL_BRIDGE's Other-Leg-Channel-Answered-Time is the answer;
# without it a 183 bridges at early media with that field 0 (s3 b1/b6) and billing would start
# before anyone answered. The caller hears the A leg's `ringback` meanwhile.
# `[origination_uuid=...]` names each leg, so the answering leg maps back to its target.
# Checked on a real 1.11.1 (tests/data/fsreal_dial): with ignore_early_media CHANNEL_BRIDGE's
# Other-Leg-Channel-Answered-Time is the B leg's own answer stamp; the bridge completes on the A
# leg's next 20 ms frame after B hung up, so talk_us is B's billusec or one tick (20 ms) more; a
# failed `,` group reports its first leg's cause (dial order), see failed_leg_uuid.
DEFAULT_SOFIA_PROFILE = "internal"
BRIDGE_EVENT = "CHANNEL_BRIDGE"
def dial_string(spec: DialSpec, *, domain: str | None, profile: str,
                leg_uuids: Sequence[Sequence[str]]) -> str:
    """The bridge argument for `spec`; `leg_uuids` mirrors spec.groups (one uuid per target)."""
    if not spec.groups or any(not group for group in spec.groups):
        raise CallError("dial: no targets")
    head = variables_block({"ignore_early_media": "true"}, caller_id_number=spec.caller_id_number,
                           caller_id_name=spec.caller_id_name, variables=spec.variables, what="dial")
    groups = []
    for group, uuids in zip(spec.groups, leg_uuids, strict=True):
        legs = []
        for target, uuid in zip(group, uuids, strict=True):
            seconds = max(1, math.ceil(target.timeout if target.timeout is not None else spec.timeout))
            endpoint = target_dial(target, domain=domain, profile=profile)
            legs.append(f"[leg_timeout={seconds},origination_uuid={uuid}]{endpoint}")
        groups.append(",".join(legs))
    return head + "|".join(groups)


def _us(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def bridge_answer_time_us(bridge: Event) -> int:
    """The answering leg's answer time from CHANNEL_BRIDGE (switch clock, µs); after an early-media
    bridge that field is 0 (s3 b1) and the bridge time is the closest the event has."""
    return (_us(bridge.get("Other-Leg-Channel-Answered-Time"))
            or _us(bridge.get("Caller-Channel-Bridged-Time"))
            or _us(bridge.get("Event-Date-Timestamp")))


def _array_items(value: str | None) -> list[str]:
    """A channel variable that may hold several values (`ARRAY::a|:b`)."""
    if not value:
        return []
    if value.startswith("ARRAY::"):
        return value[len("ARRAY::"):].split("|:")
    return [value]


def failed_leg_uuid(done: Event, cause: str, leg_groups: Sequence[Sequence[str]] = ()) -> str | None:
    """Which B leg the failure `cause` of an unanswered bridge belongs to.

    `originate_causes` lists `uuid;cause` for every B leg that got a channel, in dial order (a
    USER_NOT_REGISTERED target gets none). A real 1.11.1 reports the cause of the first leg in dial
    order that got a channel in the last group tried, not of the leg that failed first or last
    (tests/data/fsreal_dial: `[ring 3 s, busy]` -> ALLOTTED_TIMEOUT although busy failed 3 s
    earlier; `[unregistered, busy]` -> USER_BUSY; `[busy] | [unregistered]` ->
    USER_NOT_REGISTERED). With `leg_groups` (our origination uuids per group; every group was tried
    when nothing answered) the leg is found in the last group; without, the last leg whose cause
    matches."""
    causes: dict[str, str] = {}
    for item in _array_items(done.get("variable_originate_causes")):
        uuid, _, leg_cause = item.partition(";")
        causes[uuid] = leg_cause
    if leg_groups:
        group = leg_groups[-1]
        return (next((uuid for uuid in group if causes.get(uuid) == cause), None)
                or next((uuid for uuid in group if uuid not in causes), None)
                or (group[0] if group else None))
    matching = [uuid for uuid, leg_cause in causes.items() if leg_cause == cause]
    return (matching or list(causes) or [None])[-1]


def dial_result_from_bridge(done: Event, *, bridge: Event | None = None,
                            targets: Mapping[str, DialTarget] | None = None,
                            last_target: DialTarget | None = None,
                            leg_groups: Sequence[Sequence[str]] = ()) -> DialResult:
    """DialResult from the bridge's CHANNEL_EXECUTE_COMPLETE (pure; captures s3 b1-b7 and the real
    runs in tests/data/fsreal_dial).

    `originate_disposition` is SUCCESS when a leg answered and was bridged, else the failure cause
    (USER_NOT_REGISTERED has no B leg and no last_bridge_hangup_cause, s3 b4). `Answer-State:
    hangup` means the A leg is gone: the caller hung up (or we hung it up), or FreeSWITCH hung it
    up after a failed bridge without continue_on_fail (s3 b2). After an A-side hangup during the
    bridge the completion has no last_bridge_hangup_cause, only bridge_hangup_cause and
    Hangup-Cause (fsreal_dial caller_hangup_bridge, our_hangup_bridge)."""
    targets = targets or {}
    a_gone = done.get("Answer-State") == "hangup"
    disposition = done.get("variable_originate_disposition") or ""
    peer = done.get("variable_last_bridge_to") or done.get("variable_bridge_uuid") or ""
    ended_at = _us(done.get("Event-Date-Timestamp"))
    if disposition == "SUCCESS" and peer:
        if a_gone:
            cause = done.get("Hangup-Cause") or "NORMAL_CLEARING"
        else:
            cause = (done.get("variable_last_bridge_hangup_cause") or done.get("variable_bridge_hangup_cause")
                     or "NORMAL_CLEARING")
        answered_at = bridge_answer_time_us(bridge) if bridge is not None else 0
        return DialResult(DialOutcome.ANSWERED, cause, targets.get(peer, last_target), peer,
                          answered_at_us=answered_at, ended_at_us=ended_at, caller_hung_up=a_gone)
    cause = (done.get("variable_originate_failed_cause")
             or (disposition if disposition not in ("", "failure", "SUCCESS") else "")
             or done.get("variable_last_bridge_hangup_cause")
             or (done.get("Hangup-Cause") if a_gone else None)
             or "NORMAL_TEMPORARY_FAILURE")
    failed = failed_leg_uuid(done, cause, leg_groups)
    target = targets.get(failed, last_target) if failed else last_target
    return DialResult(dial_outcome_for_cause(cause), cause, target, None,
                      ended_at_us=ended_at, caller_hung_up=a_gone)


# -- recording -----------------------------------------------------------------------------------
# `record` (mod_dptools record_function -> switch_ivr_record_file_event) reports nothing about how it
# ended except through variables its completion carries: playback_terminator_used (set by the on_dtmf
# callback for a digit in `playback_terminators`), silence_hits_exhausted ("false" once the file is
# open, "true" on the silence end), record_ms (samples written / 8 at 8 kHz). Its limit counts whole
# epoch seconds (`now - start > limit`), so a recording with limit N lasts more than N and at most
# N + 1 s: we pass ceil(max_seconds) - 1 (at least 1) to never record longer than ceil(max_seconds).
# Silence: energy threshold 200 (mod_voicemail's default) for `hits` whole seconds.
BEEP = "tone_stream://%(500,0,1000)"
SILENCE_THRESHOLD = 200


def record_arg(spec: RecordSpec) -> str:
    """The `record` application's argument for `spec`."""
    if not spec.path or _NO_SPACE.search(spec.path):
        raise CallError(f"record: bad path '{spec.path}' (no spaces: the argument is split on them)")
    if spec.max_seconds <= 0:
        raise CallError(f"record: max_seconds must be > 0, got {spec.max_seconds}")
    limit = max(1, math.ceil(spec.max_seconds) - 1)
    if spec.silence_seconds > 0:
        return f"{spec.path} {limit} {SILENCE_THRESHOLD} {max(1, math.ceil(spec.silence_seconds))}"
    return f"{spec.path} {limit}"


def record_result(done: Event, path: str) -> RecordResult:
    """RecordResult from the `record` app's CHANNEL_EXECUTE_COMPLETE (pure)."""
    try:
        duration_us = int(done.get("variable_record_ms") or 0) * 1000
    except ValueError:
        duration_us = 0
    terminator = done.get("variable_playback_terminator_used") or None
    if done.get("Answer-State") == "hangup":
        return RecordResult(path, "hangup", duration_us)
    if terminator:
        return RecordResult(path, "terminator", duration_us, terminator)
    if done.get("variable_silence_hits_exhausted") == "true":
        return RecordResult(path, "silence", duration_us)
    return RecordResult(path, "max_time", duration_us)


class FreeSwitchRecording(Recording):
    """A `uuid_record` media bug: both directions mixed, it goes on across bridges. pause/resume use
    mask/unmask (silence is written meanwhile, the file keeps the call's timeline)."""

    def __init__(self, call: FreeSwitchCall, path: str) -> None:
        self.call = call
        self.path = path
        self.stopped = False

    async def _verb(self, verb: str) -> str:
        call = self.call
        if call._cause is not None or call.session.hungup:
            raise call._gone()
        return await call._api_reply(f"uuid_record {call.uuid} {verb} {self.path}")

    async def pause(self) -> None:
        reply = await self._verb("mask")
        if not reply.startswith("+OK"):
            raise CallError(f"uuid_record mask: {reply.strip()}")

    async def resume(self) -> None:
        reply = await self._verb("unmask")
        if not reply.startswith("+OK"):
            raise CallError(f"uuid_record unmask: {reply.strip()}")

    async def stop(self) -> None:
        # Idempotent: a second stop answers `-ERR Cannot stop record session!` (s7), a call that
        # ended closed the file itself (RECORD_STOP at CS_HANGUP, s7) and is `Cannot locate session`.
        if self.stopped or self.call._cause is not None or self.call.session.hungup:
            self.stopped = True
            return
        try:
            reply = await self.call._api_reply(f"uuid_record {self.call.uuid} stop {self.path}")
        except CallGone:
            reply = "+OK"
        self.stopped = True
        if not reply.startswith("+OK") and "Cannot stop record session" not in reply \
                and "Cannot locate session" not in reply:
            raise CallError(f"uuid_record stop: {reply.strip()}")


def call_info_from_channel_data(data: Event, switch_name: str) -> CallInfo:
    """CallInfo from the `connect` reply (a serialized CHANNEL_DATA event)."""
    variables = {
        key[9:]: value for key, value in data.headers.items() if key.startswith("variable_")
    }
    return CallInfo(
        uuid=data.get("Unique-ID") or data.get("Channel-Call-UUID") or "",
        switch=switch_name,
        caller_number=data.get("Caller-Caller-ID-Number") or "",
        caller_name=data.get("Caller-Caller-ID-Name") or "",
        destination=data.get("Caller-Destination-Number") or "",
        channel_name=data.get("Channel-Name") or "",
        answered=(data.get("Answer-State") == "answered"),
        variables=variables,
    )


def _prompt_arg(prompts: Sequence[str]) -> str:
    """One playback argument for several prompts (FreeSWITCH's file_string:// joins with '!')."""
    if not prompts:
        return _SILENCE
    if len(prompts) == 1:
        return prompts[0]
    return "file_string://" + "!".join(prompts)


class FreeSwitchCall(Call):
    """A call owned by one outbound socket session."""

    def __init__(self, session: OutboundSession, info: CallInfo) -> None:
        self.session = session
        self.info = info
        self._cause: str | None = None
        self._fresh: Event | None = None
        self._bridge_waiter: asyncio.Future[Event] | None = None
        self._hold: asyncio.Future[None] | None = None  # the looping music of `hold`
        self._hold_stopping = False
        session.add_event_handler(self._on_event)

    # -- state ---------------------------------------------------------------------------------

    @property
    def hangup_cause(self) -> str | None:
        return self._cause

    @property
    def variables(self) -> Mapping[str, str]:
        # Every channel event carries all channel variables; fold in only the newest, on demand.
        if self._fresh is not None:
            for key, value in self._fresh.headers.items():
                if key.startswith("variable_"):
                    self.info.variables[key[9:]] = value
            self._fresh = None
        return self.info.variables

    def _on_event(self, event: Event) -> None:
        self._fresh = event
        if event.name == BRIDGE_EVENT and self._bridge_waiter is not None and not self._bridge_waiter.done():
            self._bridge_waiter.set_result(event)
        if self._cause is None and (event.name == "CHANNEL_HANGUP" or event.get("Answer-State") == "hangup"):
            self._cause = event.get("Hangup-Cause") or "NORMAL_CLEARING"
        elif event.name == "CHANNEL_ANSWER" or event.get("Answer-State") == "answered":
            self.info.answered = True

    def _gone(self) -> CallGone:
        return CallGone(self._cause or self.session.hangup_cause or "NORMAL_CLEARING")

    async def _execute(self, app: str, arg: str = "") -> Event:
        done = await self._execute_anyway(app, arg)
        if done.get("Answer-State") == "hangup":
            self._cause = self._cause or done.get("Hangup-Cause") or "NORMAL_CLEARING"
            raise self._gone()
        return done

    # -- operations ----------------------------------------------------------------------------

    async def answer(self) -> None:
        await self._execute("answer")
        self.info.answered = True

    async def play(self, prompts: Sequence[str]) -> None:
        if not prompts:
            return
        # Several prompts play as one file_string:// playback: one application, one completion
        # event (~5 KB of channel variables each) instead of one per prompt.
        done = await self._execute("playback", _prompt_arg(prompts))
        if (done.get("Application-Response") or "") == "FILE NOT FOUND":
            raise CallError(f"prompt not found on the switch: {' '.join(prompts)}")

    async def say(self, value: str, kind: SayKind, language: str = "en") -> None:
        method = "pronounced" if kind is SayKind.NUMBER else "iterated"
        if not value.isdigit():
            raise CallError(f"say {kind.value}: '{value}' is not a string of digits")
        await self._execute("say", f"{language} number {method} {value}")

    async def collect(self, spec: CollectSpec) -> CollectResult:
        # One name for every collect: switch_ivr_read clears <var> and play_and_get_digits clears
        # <var>_invalid before each run (switch_ivr_play_say.c), and fresh names per collect would
        # pile up variables that every later event of the call carries.
        var = DIGITS_VAR
        pattern = f"^(?:{spec.pattern})$" if spec.pattern else r"^\d+$"
        prompt = _prompt_arg(spec.prompts)
        invalid = spec.invalid_prompt or _SILENCE
        fields = (prompt, invalid, pattern, spec.terminators or "none")
        for field in fields:
            if _NO_SPACE.search(field):
                raise CallError(f"play_and_get_digits cannot take spaces: '{field}'")
        arg = " ".join(
            str(x)
            for x in (
                spec.min_digits,
                spec.max_digits,
                1,  # one try: retries, greetings and counting belong to the flow
                int(spec.timeout * 1000),
                spec.terminators or "none",
                prompt,
                invalid,
                var,
                pattern,
                int(spec.inter_digit_timeout * 1000),
            )
        )
        done = await self._execute("play_and_get_digits", arg)
        digits = done.get(f"variable_{var}")
        bad = done.get(f"variable_{var}_invalid")
        result = done.get("variable_read_result")
        terminator = done.get("variable_read_terminator_used")
        if terminator in (None, "_undef_", ""):
            terminator = None
        # Digits ended by the inter-digit timeout leave read_result "timeout" although
        # play_and_get_digits accepted them (switch_ivr_read / play_and_get_digits in
        # switch_ivr_play_say.c); too few digits leave "failure" with the digits still set (s2 c6).
        if digits not in (None, "_undef_") and result in ("success", "timeout"):
            return CollectResult(CollectOutcome.OK, digits, terminator)
        if bad not in (None, "_undef_"):
            return CollectResult(CollectOutcome.INVALID, bad, terminator)
        if digits not in (None, "_undef_", ""):  # too few digits: read_result failure, digits kept
            return CollectResult(CollectOutcome.INVALID, digits, terminator)
        if spec.min_digits == 0 and result == "timeout":
            return CollectResult(CollectOutcome.OK, "", terminator)
        return CollectResult(CollectOutcome.TIMEOUT, "", terminator)

    async def dial(self, spec: DialSpec) -> DialResult:
        """One `bridge` execution (see module notes on dialing); the answer is reported from
        CHANNEL_BRIDGE, subscribed for the time of the dial only."""
        if self._cause is not None or self.session.hungup:
            raise self._gone()
        variables = self.variables
        domain = variables.get("domain_name") or variables.get("sip_to_host") or None
        profile = variables.get("sofia_profile_name") or DEFAULT_SOFIA_PROFILE
        leg_uuids = [[str(uuidlib.uuid4()) for _ in group] for group in spec.groups]
        dial = dial_string(spec, domain=domain, profile=profile, leg_uuids=leg_uuids)
        targets = {
            uuid: target
            for group, uuids in zip(spec.groups, leg_uuids)
            for target, uuid in zip(group, uuids)
        }
        last_target = spec.groups[-1][-1]
        # The A leg's own settings: `continue_on_fail` and `hangup_after_bridge` are read from the A
        # channel by the bridge app, `ringback` by switch_ivr_originate (transfer_ringback would win
        # on an answered call: we never set it). One api each, a ~50-byte reply, no event.
        a_vars = "continue_on_fail=true;hangup_after_bridge=false"
        await self._api(f"uuid_setvar_multi {self.uuid} {a_vars}")
        if spec.ringback:
            await self._api(f"uuid_setvar {self.uuid} ringback {spec.ringback}")
        loop = asyncio.get_running_loop()
        bridged: asyncio.Future[Event] = loop.create_future()
        self._bridge_waiter = bridged
        await self._command(f"event plain {BRIDGE_EVENT}")
        moves_before: tuple[str, int] | None = None
        try:
            run = asyncio.ensure_future(self._execute_anyway("bridge", dial))
            try:
                await asyncio.wait({run, bridged}, return_when=asyncio.FIRST_COMPLETED)
                answer_event: Event | None = bridged.result() if bridged.done() else None
                if answer_event is not None and spec.on_answer is not None:
                    moves_before = self._peer_moves(answer_event)
                    peer = answer_event.get("Bridge-B-Unique-ID") or answer_event.get("Other-Leg-Unique-ID") or ""
                    target = targets.get(peer, last_target)
                    try:
                        await spec.on_answer(DialAnswer(peer, target, bridge_answer_time_us(answer_event)))
                    except BaseException:
                        # No leg left behind: the caller decides what happens to the A leg.
                        await self._kill(peer)
                        raise
                    if LEGS.get(peer) is not None and moves_before is None:
                        moves_before = (peer, 0)  # taken in on_answer: every move of it counts
                done = await run
            finally:
                if not run.done():
                    run.cancel()
        finally:
            self._bridge_waiter = None
            if not self.session.hungup:
                try:
                    await self._command(f"nixevent {BRIDGE_EVENT}")
                except (CallError, CallGone):
                    pass
        if not bridged.done():
            bridged.cancel()
            answer_event = None
        else:
            answer_event = bridged.result()
        result = dial_result_from_bridge(done, bridge=answer_event, targets=targets, last_target=last_target,
                                         leg_groups=leg_uuids)
        if result.outcome is DialOutcome.ANSWERED and not result.caller_hung_up:
            result = self._transferred(result, moves_before)
        if result.caller_hung_up:
            self._cause = self._cause or done.get("Hangup-Cause") or "NORMAL_CLEARING"
            if result.outcome is not DialOutcome.ANSWERED:
                raise self._gone()
        return result

    @staticmethod
    def _peer_moves(answer_event: Event) -> tuple[str, int] | None:
        peer = answer_event.get("Bridge-B-Unique-ID") or answer_event.get("Other-Leg-Unique-ID") or ""
        taken = LEGS.get(peer)
        return (peer, taken.moves) if taken is not None else None

    @staticmethod
    def _transferred(result: DialResult, moves_before: tuple[str, int] | None) -> DialResult:
        """A feature moved the dial's peer (taken with take_leg) away: the bridge ended with both up.
        A's `bridge` app returns when its peer is uuid_transferred: the peer has CF_TRANSFER, and
        with hangup_after_bridge=false the caller is neither parked nor hung up (switch_ivr_bridge.c,
        the end of switch_ivr_multi_threaded_bridge)."""
        if moves_before is None or result.peer_uuid != moves_before[0]:
            return result
        taken = LEGS.get(moves_before[0])
        if taken is None or taken.moves <= moves_before[1]:
            return result
        return DialResult(result.outcome, "TRANSFERRED", result.target, result.peer_uuid,
                          answered_at_us=result.answered_at_us, ended_at_us=result.ended_at_us,
                          caller_hung_up=False)

    async def _api(self, command: str) -> str:
        try:
            return await self.session.api(command)
        except CommandError as exc:
            if self._cause is not None or self.session.hungup:
                raise self._gone() from None
            raise CallError(f"{command.split(' ', 1)[0]}: {exc}") from None
        except (ConnectionLost, ReplyTimeout):
            self._cause = self._cause or "SWITCH_CONNECTION_LOST"
            raise self._gone() from None

    async def _command(self, line: str) -> None:
        try:
            reply = await self.session.conn.send(line)
        except (ConnectionLost, ReplyTimeout):
            self._cause = self._cause or "SWITCH_CONNECTION_LOST"
            raise self._gone() from None
        if not isinstance(reply, CommandReply) or not reply.ok:
            raise CallError(f"{line}: {getattr(reply, 'reply_text', reply)!r}")

    async def _kill(self, uuid: str) -> None:
        if not uuid:
            return
        try:
            await self.session.api(f"uuid_kill {uuid}", check=False)
        except ESLError:
            pass

    async def announce(self, prompt: str) -> None:
        # uuid_broadcast queues `playback` as a private event on this leg; a bridge runs it inside its
        # loop with the other leg suspended and goes on (switch_ivr_broadcast, audio_bridge_thread in
        # switch_ivr_bridge.c). `aleg` alone: the other leg is not put on hold.
        if _NO_SPACE.search(prompt) or not prompt:
            raise CallError(f"announce: bad prompt '{prompt}'")
        if self._cause is not None or self.session.hungup:
            raise self._gone()
        reply = await self._api(f"uuid_broadcast {self.uuid} {prompt} aleg")
        if not reply.startswith("+OK"):
            raise CallError(f"uuid_broadcast: {reply.strip()}")

    async def record(self, spec: RecordSpec) -> RecordResult:
        """Beep, then `record` with the limits (see module notes on recording). A hangup during the
        recording returns reason "hangup" with what was written; only one before it raises CallGone."""
        arg = record_arg(spec)
        terminators = spec.terminators or "none"
        if _NO_SPACE.search(terminators) or ";" in terminators:
            raise CallError(f"record: bad terminators '{spec.terminators}'")
        if spec.beep:
            await self._execute("playback", BEEP)
        # Set after the beep (a terminator during the beep would only cut the beep). Clearing
        # silence_hits_exhausted tells a file FreeSWITCH could not open (it then hangs up with
        # DESTINATION_OUT_OF_ORDER before setting it) from a hangup during the recording.
        previous = self.variables.get("playback_terminators")
        await self._api(f"uuid_setvar_multi {self.uuid} playback_terminators={terminators};silence_hits_exhausted=")
        try:
            done = await self._execute_anyway("record", arg)
        finally:
            if self._cause is None and not self.session.hungup:
                restore = f"uuid_setvar {self.uuid} playback_terminators" + (f" {previous}" if previous else "")
                try:
                    await self._api(restore)
                except CallError:
                    pass
        if done.get("Answer-State") == "hangup":
            self._cause = self._cause or done.get("Hangup-Cause") or "NORMAL_CLEARING"
            if not done.get("variable_silence_hits_exhausted"):
                raise CallGone(self._cause, f"record: FreeSWITCH could not write '{spec.path}' ({self._cause})")
        return record_result(done, spec.path)

    async def _execute_anyway(self, app: str, arg: str) -> Event:
        """An application's completion whatever the channel's state (a hangup is read from it)."""
        await self._stop_hold()
        if self._cause is not None or self.session.hungup:
            raise self._gone()
        try:
            return await self.session.execute(app, arg)
        except ChannelHungUp as exc:
            self._cause = self._cause or exc.cause
            raise self._gone() from None
        except (ConnectionLost, ReplyTimeout) as exc:
            self._cause = self._cause or "SWITCH_CONNECTION_LOST"
            raise CallGone(self._cause, f"lost the switch during '{app}': {exc}") from None
        except CommandError as exc:
            raise CallError(f"{app} {arg}: {exc}") from None

    async def _api_reply(self, command: str) -> str:
        """An api's reply text, -ERR included (the caller judges it)."""
        try:
            return await self.session.api(command, check=False)
        except CommandError as exc:
            raise CallError(f"{command.split(' ', 1)[0]}: {exc}") from None
        except (ConnectionLost, ReplyTimeout):
            self._cause = self._cause or "SWITCH_CONNECTION_LOST"
            raise self._gone() from None

    async def start_recording(self, path: str) -> Recording:
        """`uuid_record <uuid> start <path>`: a media bug on this leg, both directions, across bridges."""
        if not path or _NO_SPACE.search(path):
            raise CallError(f"start_recording: bad path '{path}'")
        if self._cause is not None or self.session.hungup:
            raise self._gone()
        reply = await self._api_reply(f"uuid_record {self.uuid} start {path}")
        if not reply.startswith("+OK"):
            if "Cannot locate session" in reply:
                self._cause = self._cause or self.session.hangup_cause or "NORMAL_CLEARING"
                raise self._gone()
            raise CallError(f"uuid_record start: {reply.strip()}")
        return FreeSwitchRecording(self, path)

    # -- transfer primitives -------------------------------------------------------------------------
    # hold: `playback <music>` repeated by us until the next operation, which sends `uuid_break <uuid>`
    # (switch_ivr_play_file returns BREAK). Not endless_playback / loop_playback: both loop on a BREAK
    # while the channel is ready (mod_dptools), so only a hangup or transfer would stop them.
    # A tone_stream with loops=-1 or local_stream:// is one endless playback anyway.
    # bridge: the caller joins a two-member conference room `bridge-<A uuid>` (profile
    # switchctl_bridge, no sounds) and the leg is uuid_transferred into it. The caller stays inside
    # one application under this socket: `intercept` / `uuid_bridge` would take it out of the socket
    # app's park (CF_REDIRECT ends switch_ivr_park, the socket app completes), and the bridge's end
    # would come with no completion of ours. When the leg hangs up or a feature moves it, the caller
    # is kicked (`conference <room> kick <id>`: mod_conference lets a kicked member's channel go on,
    # captures s4 x4 L2: the app completed with Answer-State answered).
    HOLD_MUSIC_FALLBACK = HOLD_TONE
    HOLD_MUSIC_STREAM = "local_stream://moh"
    BRIDGE_PROFILE = "switchctl_bridge"
    HOLD_BREAK_RETRY = 1.0

    async def _default_music(self) -> str:
        try:
            reply = await self.session.api("module_exists mod_local_stream", check=False)
        except ESLError:
            reply = "false"
        return self.HOLD_MUSIC_STREAM if reply.strip() == "true" else self.HOLD_MUSIC_FALLBACK

    async def hold(self, music: str | None = None) -> None:
        if music is not None:
            check_prompt(music, "hold")
        await self._stop_hold()
        if self._cause is not None or self.session.hungup:
            raise self._gone()
        music = music or await self._default_music()
        self._hold_stopping = False
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def loop() -> None:
            try:
                while not self._hold_stopping and not self.session.hungup:
                    run = asyncio.ensure_future(self.session.execute("playback", music))
                    if not started.done():
                        started.set_result(None)
                    done = await run
                    if done.get("Answer-State") == "hangup":
                        self._cause = self._cause or done.get("Hangup-Cause") or "NORMAL_CLEARING"
                        return
                    if (done.get("Application-Response") or "") == "FILE NOT FOUND":
                        return
            except ESLError:
                return
            finally:
                if not started.done():
                    started.set_result(None)

        self._hold = asyncio.ensure_future(loop())
        await started
        if self._cause is not None or self.session.hungup:
            raise self._gone()

    async def _stop_hold(self) -> None:
        hold, self._hold = self._hold, None
        if hold is None:
            return
        self._hold_stopping = True
        while not hold.done():
            if self.session.hungup:
                break
            try:
                await self.session.api(f"uuid_break {self.uuid}", check=False)
            except ESLError:
                break
            # a break that fell between two playbacks is lost: break again until the loop ends
            await asyncio.wait({hold}, timeout=self.HOLD_BREAK_RETRY)
        if not hold.done():
            hold.cancel()
        with contextlib.suppress(BaseException):
            await hold

    async def _kick_self(self, room: str) -> None:
        """Take this call out of `room` (it stays up)."""
        try:
            member = member_id_for(await self.session.api(f"conference {room} json_list", check=False), self.uuid)
            if member is not None:
                await self.session.api(f"conference {room} kick {member}", check=False)
        except ESLError:
            pass

    async def bridge(self, leg: Leg) -> DialResult:
        if not isinstance(leg, FreeSwitchLeg):
            raise CallError("bridge: the leg is not on this FreeSWITCH")
        await self._stop_hold()
        if self._cause is not None or self.session.hungup:
            raise self._gone()
        if leg.hangup_cause is not None:
            return DialResult(DialOutcome.FAILED, leg.hangup_cause, leg.target, leg.uuid)
        room = f"bridge-{self.uuid}"
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[str] = loop.create_future()
        moves = leg.moves

        def leg_gone(cause: str) -> None:
            if not ended.done():
                ended.set_result(cause)

        run = asyncio.ensure_future(self._execute_anyway("conference", f"{room}@{self.BRIDGE_PROFILE}"))
        watcher: asyncio.Future[None] | None = None
        try:
            try:
                await leg._run(conference_transfer_command(leg.uuid, room, self.BRIDGE_PROFILE))
            except CallGone as exc:
                leg_gone(exc.cause)
            leg.on_gone = leg_gone
            leg.on_moved = lambda: leg_gone("TRANSFERRED")
            if leg.hangup_cause is not None:
                leg_gone(leg.hangup_cause)

            async def watch() -> None:
                await asyncio.wait({ended, run}, return_when=asyncio.FIRST_COMPLETED)
                if ended.done() and not run.done():
                    await self._kick_self(room)

            watcher = asyncio.ensure_future(watch())
            done = await run
        finally:
            leg.on_gone = None
            leg.on_moved = None
            if watcher is not None and not watcher.done():
                watcher.cancel()
            if not run.done():
                run.cancel()
        ended_at = _us(done.get("Event-Date-Timestamp"))
        if done.get("Answer-State") == "hangup":
            self._cause = self._cause or done.get("Hangup-Cause") or "NORMAL_CLEARING"
            if leg.hangup_cause is None and leg.moves == moves:
                # the Leg rule: left parked, its owner decides
                with contextlib.suppress(CallError):
                    await leg._run(f"uuid_transfer {leg.uuid} park inline")
            return DialResult(DialOutcome.ANSWERED, self._cause, leg.target, leg.uuid,
                              answered_at_us=leg.answered_at_us, ended_at_us=ended_at, caller_hung_up=True)
        if leg.moves != moves:
            cause = "TRANSFERRED"
        else:
            cause = ended.result() if ended.done() else (leg.hangup_cause or "NORMAL_CLEARING")
        return DialResult(DialOutcome.ANSWERED, cause, leg.target, leg.uuid,
                          answered_at_us=leg.answered_at_us, ended_at_us=ended_at, caller_hung_up=False)

    async def conference(self, room: str) -> str:
        """The `conference <room>@default` application; it completes without a hangup when the member
        was kicked (Switch.conference_remove)."""
        check_room(room)
        await self._execute("conference", f"{room}@default")
        return "left"

    async def transfer(self, extension: str, context: str | None = None) -> None:
        if _NO_SPACE.search(extension):
            raise CallError(f"transfer: bad extension '{extension}'")
        await self._execute("transfer", f"{extension} XML {context or 'default'}")

    async def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        if self._cause is not None or self.session.hungup:
            return
        try:
            await self.session.hangup(cause)
            self._cause = await self.session.wait_hangup()
        except ESLError:
            self._cause = self._cause or cause

    async def schedule_hangup(self, seconds: float, cause: str = "ALLOTTED_TIMEOUT", *,
                              at_us: int | None = None) -> None:
        # Through the API, not the sched_hangup application: an application would wait behind a
        # running bridge. sched_hangup ADDS a scheduler task (switch_ivr_schedule_hangup; the
        # earliest fires first), so `sched_del <uuid>` first makes this replace the armed one, as
        # the Call contract says (it also drops the channel's sched_transfer/sched_broadcast tasks,
        # which switchctl does not use). `+N` counts whole seconds from floor(now): never earlier
        # than asked.
        if self._cause is not None or self.session.hungup:
            raise self._gone()
        if _NO_SPACE.search(cause):
            raise CallError(f"schedule_hangup: bad cause '{cause}'")
        try:
            await self.session.api(f"sched_del {self.uuid}")
            reply = await self.session.api(f"sched_hangup {sched_hangup_time(seconds, at_us)} {self.uuid} {cause}",
                                           check=False)
        except (ConnectionLost, ReplyTimeout):
            self._cause = self._cause or "SWITCH_CONNECTION_LOST"
            raise self._gone() from None
        except CommandError as exc:
            raise CallError(f"sched_hangup: {exc}") from None
        if not reply.startswith("+OK"):
            if "No such channel" in reply:
                self._cause = self._cause or self.session.hangup_cause or "NORMAL_CLEARING"
                raise self._gone()
            raise CallError(f"sched_hangup: {reply.strip()}")

    async def set_variable(self, name: str, value: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
            raise CallError(f"bad channel variable name '{name}'")
        await self._execute("set", f"{name}={value}")
        self.info.variables[name] = value

    async def get_variable(self, name: str) -> str | None:
        if self._cause is not None:
            return self.info.variables.get(name)
        try:
            value = await self.session.api(f"uuid_getvar {self.uuid} {name}")
        except CommandError:
            return None
        except (ConnectionLost, ReplyTimeout):
            raise self._gone() from None
        return None if value == "_undef_" else value

    async def wait_hangup(self) -> str:
        if self._cause is None:
            self._cause = await self.session.wait_hangup()
        return self._cause


class FreeSwitchSwitch(Switch):
    """Channel-independent operations over the inbound event socket."""

    kind = "freeswitch"

    def __init__(self, name: str, client: InboundClient) -> None:
        self.name = name
        self.client = client
        self.adopter = FreeSwitchAdopter(name, client)  # live calls after a restart (freeswitch_adopt.py)
        self.legs = LegTracker(self.adopter)  # originate / take_leg (freeswitch_legs.py)
        # where `phone` targets of originate live (a dial takes it from the caller's channel)
        self.domain: str | None = None
        self.sofia_profile = DEFAULT_SOFIA_PROFILE

    async def api(self, command: str) -> str:
        return await self.client.api(command)

    async def live_calls(self) -> list[LiveChannel]:
        return await self.adopter.live_calls()

    async def adopt(self, uuid: str) -> AdoptedCall:
        return await self.adopter.adopt(uuid)

    async def originate(self, spec: OriginateSpec) -> Leg:
        """`bgapi originate {...}<endpoint> &park()` (freeswitch_legs.py)."""
        endpoint = target_dial(spec.target, domain=self.domain, profile=self.sofia_profile)
        return await self.legs.originate(spec, endpoint)

    async def take_leg(self, uuid: str) -> Leg:
        return await self.legs.take(uuid)

    async def conference_remove(self, room: str, uuid: str) -> None:
        """`conference <room> json_list` finds the member id, `conference <room> kick <id>` takes it
        out; a kicked member's channel goes on (mod_conference conference_api_sub_kick, s4 x4)."""
        check_room(room)
        try:
            member = member_id_for(await self.client.api(f"conference {room} json_list", check=False), uuid)
            if member is None:
                raise CallError(f"conference {room}: {uuid} is not a member")
            reply = await self.client.api(f"conference {room} kick {member}", check=False)
        except ESLError as exc:
            raise CallError(f"conference {room} kick: {exc}") from None
        if not reply.startswith("+OK"):
            raise CallError(f"conference {room} kick {member}: {reply.strip()}")

    async def reload_config(self) -> str:
        reply = await self.client.api("reloadxml", check=False)
        # A malformed file still answers "+OK [[error near line N]: ...]" (captures s6).
        if "[Success]" not in reply:
            raise CallError(f"FreeSWITCH rejected the configuration: {reply.strip()}")
        return reply
