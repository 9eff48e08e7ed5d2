"""The one interface flows and features see: a `Call` on some `Switch`.

Each backend (FreeSWITCH over ESL, Asterisk over ARI) maps these operations onto its switch. A
flow or feature written against this module runs on both; it never imports a backend.

Conventions shared by every backend:
- Every operation is a coroutine that returns when the switch reports the operation finished
  (FreeSWITCH: CHANNEL_EXECUTE_COMPLETE with our Application-UUID), not when the command was
  accepted.
- When the caller hangs up, the running operation and every later one raise `CallGone`, carrying
  the switch's hangup cause. A flow therefore never has to poll for a hangup.
- Hangup causes are Q.850 names as FreeSWITCH spells them (`NORMAL_CLEARING`, `USER_BUSY`,
  `NO_ANSWER`, `CALL_REJECTED`, `ALLOTTED_TIMEOUT`, ...); the Asterisk backend maps its numeric
  causes onto the same names.
- Prompts are strings the switch understands: a sound file path, `tone_stream://...`,
  `silence_stream://N`. Backends translate what they must.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field


class CallError(Exception):
    """An operation on a call failed on the switch (rejected command, unknown application...)."""


class CallGone(CallError):
    """The call hung up (or was lost) before or during the operation."""

    def __init__(self, cause: str = "NORMAL_CLEARING", message: str | None = None) -> None:
        super().__init__(message or f"call is gone ({cause})")
        self.cause = cause


class CollectOutcome(str, enum.Enum):
    OK = "ok"  # digits satisfied min/max and the pattern
    TIMEOUT = "timeout"  # nothing was pressed
    INVALID = "invalid"  # something was pressed but it failed min_digits or the pattern


@dataclass(frozen=True, slots=True)
class CollectResult:
    outcome: CollectOutcome
    digits: str = ""  # the accepted digits (OK) or what was pressed (INVALID); never the terminator
    terminator: str | None = None


@dataclass(frozen=True, slots=True)
class CollectSpec:
    """One try of digit collection: play the prompts, then wait for digits.

    `timeout` is how long to wait for the first digit after the prompts end, `inter_digit_timeout`
    between digits. Collection stops at `max_digits`, at a terminator, or at a timeout.
    `pattern` is a regular expression the whole input must match (fullmatch semantics).
    `invalid_prompt`, when set, is played by the switch after a failed try (FreeSWITCH's
    play_and_get_digits does this for timeouts too; see captures s2).
    """

    prompts: Sequence[str] = ()
    min_digits: int = 1
    max_digits: int = 1
    timeout: float = 5.0
    inter_digit_timeout: float = 3.0
    terminators: str = "#"
    pattern: str | None = None
    invalid_prompt: str | None = None


class SayKind(str, enum.Enum):
    NUMBER = "number"  # 1234 -> "one thousand two hundred thirty four"
    DIGITS = "digits"  # 1234 -> "one two three four"


class DialOutcome(str, enum.Enum):
    ANSWERED = "answered"  # a target answered and was bridged; dial returned when the bridge ended
    BUSY = "busy"  # USER_BUSY (486)
    NO_ANSWER = "no_answer"  # rang out: NO_ANSWER, ALLOTTED_TIMEOUT (leg_timeout), NO_USER_RESPONSE
    REJECTED = "rejected"  # CALL_REJECTED (603 Decline) and other explicit refusals by the far end
    FAILED = "failed"  # unreachable, unregistered, no route, bad target, congestion...


# Q.850 names (as FreeSWITCH spells them) that mean something else than FAILED. The backends map
# their own signalling onto these names first; captures freeswitch-scenarios/s3 and
# asterisk-scenarios/02_dial show which cause each real outcome carries.
_DIAL_OUTCOME_BY_CAUSE: dict[str, DialOutcome] = {
    "USER_BUSY": DialOutcome.BUSY,
    "NO_ANSWER": DialOutcome.NO_ANSWER,
    "ALLOTTED_TIMEOUT": DialOutcome.NO_ANSWER,
    "NO_USER_RESPONSE": DialOutcome.NO_ANSWER,
    "ORIGINATOR_CANCEL": DialOutcome.NO_ANSWER,
    "CALL_REJECTED": DialOutcome.REJECTED,
}


def dial_outcome_for_cause(cause: str) -> DialOutcome:
    """The dial outcome a failed leg's hangup cause means (anything unlisted is FAILED)."""
    return _DIAL_OUTCOME_BY_CAUSE.get(cause, DialOutcome.FAILED)


@dataclass(frozen=True, slots=True)
class DialTarget:
    """One party to ring.

    kind "phone": `address` is a phone/booth extension of the site (registered to the switch);
    kind "gateway": `address` is the number to send to trunk `gateway`;
    kind "uri": `address` is a SIP URI (`sip:user@host:port`), sent from the switch's SIP listener.
    `timeout` (seconds) overrides the group's ring timeout for this target.
    """

    kind: str
    address: str
    gateway: str | None = None
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class DialAnswer:
    """A target answered: handed to `DialSpec.on_answer` while the bridge is being set up."""

    peer_uuid: str  # the answering leg's uuid / channel id on the switch
    target: DialTarget
    answered_at_us: int  # the switch's own answer timestamp of that leg, µs since the epoch


@dataclass(frozen=True, slots=True)
class DialSpec:
    """What to ring and how.

    `groups` are tried in order (sequential ringing); the targets of one group ring at once
    (simultaneous ringing), the first to answer wins and the others are cancelled. `timeout` is each
    group's ring time unless a target sets its own. While targets ring the caller hears `ringback`
    (a tone_stream:// or file; None = the switch passes the far end's early media / its own ringing).
    `caller_id_number` / `caller_id_name` replace the caller's identity towards the targets.
    `variables` are set on every outgoing leg. `on_answer` runs (awaited) once a target answered,
    with the switch's answer time: prepaid cutoffs arm there. `feature_keys`: the answering party's
    keys must reach the controller during the bridge (in-call feature codes): the switch keeps the
    media in its core (Asterisk: no native RTP bridge, which would carry RFC 2833 past it); off, a
    plain call may be bridged natively, cheaper for the switch.
    """

    groups: Sequence[Sequence[DialTarget]]
    timeout: float = 30.0
    ringback: str | None = "tone_stream://%(2000,4000,440,480);loops=-1"
    caller_id_number: str | None = None
    caller_id_name: str | None = None
    variables: Mapping[str, str] = field(default_factory=dict)
    on_answer: Callable[[DialAnswer], Awaitable[None]] | None = None
    feature_keys: bool = False


@dataclass(frozen=True, slots=True)
class DialResult:
    """How a dial ended.

    ANSWERED: the bridge ran; `cause` is the hangup cause that ended it and `caller_hung_up` says
    which side ended it (the caller may be gone now: the next operation raises CallGone).
    Otherwise `cause` is the last tried target's failure cause and the caller is still here.
    Times are the switch's clock in µs since the epoch (0 when the switch did not report one);
    `talk_us` = bridge end - answer, from those fields, never from our own clock.
    """

    outcome: DialOutcome
    cause: str
    target: DialTarget | None = None
    peer_uuid: str | None = None
    answered_at_us: int = 0
    ended_at_us: int = 0
    caller_hung_up: bool = False

    @property
    def talk_us(self) -> int:
        if not self.answered_at_us or not self.ended_at_us:
            return 0
        return max(0, self.ended_at_us - self.answered_at_us)


@dataclass(frozen=True, slots=True)
class RecordSpec:
    """A recording the caller makes (voicemail, a name): `Call.record` plays a beep and records
    until a terminator key, `silence_seconds` of silence (0: never), `max_seconds` or the hangup.
    `path` is where the SWITCH writes the file (its own filesystem: a .wav path the switch can
    write; the backend says where that is for the controller, RecordResult.path)."""

    path: str
    max_seconds: float = 120.0
    silence_seconds: float = 5.0
    terminators: str = "#"
    beep: bool = True


@dataclass(frozen=True, slots=True)
class RecordResult:
    """How a `Call.record` ended. `reason`: "terminator", "silence", "max_time" or "hangup" (a
    caller who hangs up after speaking leaves a message: it is kept, never lost). `duration_us`
    is the recorded length as the switch reports it (0 when it reports none)."""

    path: str
    reason: str
    duration_us: int = 0
    terminator: str | None = None


class Recording(abc.ABC):
    """A call recording running in the background (`Call.start_recording`): both directions, across
    bridges, until stopped or the call ends. The file is the switch's; `path` as given."""

    path: str

    @abc.abstractmethod
    async def pause(self) -> None:
        """Stop writing audio (e.g. while a card number is read out) until `resume`."""

    @abc.abstractmethod
    async def resume(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None:
        """Finish the file. Idempotent; a recording of a call that ended is already finished."""


# What a held caller hears when no music is given and the switch has none to offer (neither the
# rendered FreeSWITCH, without mod_local_stream, nor the rendered Asterisk, without MOH files, has
# music): a soft double beep every 3 s, so the caller knows the line is alive. Silence is what
# callers take for a dropped call.
HOLD_TONE = "tone_stream://%(400,200,400,450);%(400,2000,400,450);loops=-1"


class DialFailed(CallError):
    """`Switch.originate` ended without an answer: `outcome` (never ANSWERED) and the switch's cause."""

    def __init__(self, outcome: DialOutcome, cause: str, message: str | None = None) -> None:
        super().__init__(message or f"no answer: {outcome.value} ({cause})")
        self.outcome = outcome
        self.cause = cause


@dataclass(frozen=True, slots=True)
class OriginateSpec:
    """One new outgoing call a feature places (`Switch.originate`): a transfer's target, a recall of
    the transferor. `timeout` is the ring time; the caller-ID fields are shown to the target;
    `variables` are set on the new leg (the call's data following it: see features/transfer)."""

    target: DialTarget
    timeout: float = 30.0
    caller_id_number: str | None = None
    caller_id_name: str | None = None
    variables: Mapping[str, str] = field(default_factory=dict)


class Leg(abc.ABC):
    """A channel a feature drives without a flow: the answered party of a dial taken over with
    `Switch.take_leg` (the transferor), or a call placed by `Switch.originate` (the transfer target).

    A Leg never hangs up because the other side of a bridge the feature made (`Leg.bridge`,
    `Call.bridge`) hung up: it is left parked (silence) and the feature that owns it decides (bridge
    it elsewhere, or hang it up). So the owner must hang up every Leg it no longer needs: no leg is
    ever left behind. A dial's peer taken with `take_leg` keeps the dial's rule while it is still in
    that dial's bridge (it hangs up with the caller, so a controller that dies leaves nothing up);
    once moved it follows the Leg rule."""

    uuid: str  # the channel's uuid / channel id on the switch
    target: DialTarget | None  # what was dialled to reach it (None: unknown)
    answered_at_us: int  # the switch's own answer timestamp, µs since the epoch (0: unknown)

    @property
    @abc.abstractmethod
    def hangup_cause(self) -> str | None:
        """The cause once the leg has hung up, else None."""

    @abc.abstractmethod
    def on_dtmf(self, handler: Callable[[str], None] | None) -> None:
        """Call `handler(digit)` for every key the leg's user presses (RFC 2833 / INFO; one of
        0-9*#A-D), from now on, in order; None stops. In-call feature codes are read from this."""

    @abc.abstractmethod
    async def park(self, music: str | None = None) -> None:
        """Take the leg out of its bridge or conference (if any) and keep it up, hearing `music`
        looped (a prompt or tone_stream://; None: silence) until it is moved again. Returns once it
        is out of the bridge (the party it was bridged with is left as this contract says for it:
        a flow's Call returns from dial/bridge, a Leg is parked). Raises CallGone if it hung up."""

    @abc.abstractmethod
    async def bridge(self, other: Leg) -> None:
        """Connect this leg with `other` (both leave wherever they were, music stops). Returns once
        they are bridged. Raises CallGone (with the cause) if either has hung up."""

    @abc.abstractmethod
    async def join_conference(self, room: str) -> None:
        """Move the leg into conference `room` (see Call.conference). Returns once it is in."""

    @abc.abstractmethod
    async def announce(self, prompt: str) -> None:
        """Play `prompt` to this leg only, over whatever it does; returns once accepted."""

    @abc.abstractmethod
    async def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        """Hang up; returns once the switch confirmed it. Idempotent."""

    @abc.abstractmethod
    async def wait_hangup(self) -> str:
        """Wait until the leg has hung up; returns the cause."""


@dataclass
class CallInfo:
    """What the switch told us about the call when it reached us."""

    uuid: str
    switch: str  # the site's name for the switch
    caller_number: str = ""
    caller_name: str = ""
    destination: str = ""
    channel_name: str = ""
    answered: bool = False
    variables: dict[str, str] = field(default_factory=dict)


class Call(abc.ABC):
    """A live call under our control."""

    info: CallInfo

    @property
    def uuid(self) -> str:
        return self.info.uuid

    @property
    def variables(self) -> Mapping[str, str]:
        """Channel variables as last reported by the switch (read-only view)."""
        return self.info.variables

    @property
    @abc.abstractmethod
    def hangup_cause(self) -> str | None:
        """The cause once the call has hung up, else None."""

    @abc.abstractmethod
    async def answer(self) -> None: ...

    @abc.abstractmethod
    async def play(self, prompts: Sequence[str]) -> None:
        """Play prompts in order; returns when the last one finished."""

    @abc.abstractmethod
    async def say(self, value: str, kind: SayKind, language: str = "en") -> None: ...

    @abc.abstractmethod
    async def collect(self, spec: CollectSpec) -> CollectResult:
        """One try of `spec`; the flow decides about retries."""

    @abc.abstractmethod
    async def dial(self, spec: DialSpec) -> DialResult:
        """Ring `spec`'s targets and bridge the first that answers; returns when the bridge ended
        (ANSWERED) or every target failed. Raises CallGone if the caller hangs up before an answer.
        No leg is left behind: unanswered targets are cancelled when this returns or raises."""

    @abc.abstractmethod
    async def announce(self, prompt: str) -> None:
        """Play `prompt` to this leg only, over whatever it is doing (e.g. a warning tone during a
        bridge, which goes on); returns once the switch accepted it, not when it finished."""

    @abc.abstractmethod
    async def record(self, spec: RecordSpec) -> RecordResult:
        """Record what the caller says (see RecordSpec). A hangup during it returns reason
        "hangup" with what was recorded; only a hangup before it started raises CallGone."""

    @abc.abstractmethod
    async def start_recording(self, path: str) -> Recording:
        """Start recording the whole call (both directions) into `path` on the switch."""

    @abc.abstractmethod
    async def hold(self, music: str | None = None) -> None:
        """Keep the caller waiting: `music` looped (a prompt or tone_stream://, e.g. a ringback tone
        during a semi-attended transfer; None: the switch's music on hold) until the next operation
        on this call, which stops it first. Returns once the music started. Raises CallGone."""

    @abc.abstractmethod
    async def bridge(self, leg: Leg) -> DialResult:
        """Connect this call with `leg` (answered, e.g. a transfer target) and return when that bridge
        ends, like an ANSWERED dial: `caller_hung_up` says which side ended it, `peer_uuid` is the
        leg, `answered_at_us` the leg's answer time, `ended_at_us` the switch's time of the end.
        The bridge also ends, with both still up, when a feature moves the leg away (`leg.park()`,
        `leg.bridge(...)`, `leg.join_conference(...)`): then `caller_hung_up` is False and
        `cause` is "TRANSFERRED". A leg already gone gives outcome FAILED with its cause.
        Raises CallGone if this call hung up before the bridge started.
        The same holds for the peer of a running `dial` taken over with `Switch.take_leg`: moving
        it away ends the dial's bridge with cause "TRANSFERRED" and the peer is not hung up."""

    @abc.abstractmethod
    async def conference(self, room: str) -> str:
        """Join conference `room` on this call's switch (created by its first member, gone with its
        last) and stay until this call leaves it. Returns "left" when a feature took the call out
        of the room (it is still up: Switch.conference_remove); raises CallGone when it hung up."""

    @abc.abstractmethod
    async def transfer(self, extension: str, context: str | None = None) -> None:
        """Hand the call back to the switch's dialplan at `extension` (leaves our control)."""

    @abc.abstractmethod
    async def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        """Hang up; returns once the switch confirmed the hangup. Idempotent."""

    @abc.abstractmethod
    async def schedule_hangup(self, seconds: float, cause: str = "ALLOTTED_TIMEOUT", *,
                              at_us: int | None = None) -> None:
        """Arm a switch-side hangup `seconds` from now (a safety net that works without us).

        A new schedule replaces the armed one. `at_us`, when given, is the instant to fire at
        (epoch µs on the switch's clock): a switch that can take an instant uses it instead of
        `seconds`, so when the command arrives does not matter. FreeSWITCH fires on whole seconds of
        its clock (the first at or after `at_us`; `+N` counts from floor(arrival)), never earlier
        than asked; Asterisk takes fractions of a second from when it is set."""

    @abc.abstractmethod
    async def set_variable(self, name: str, value: str) -> None: ...

    @abc.abstractmethod
    async def get_variable(self, name: str) -> str | None:
        """Read a channel variable from the switch (None when unset)."""

    @abc.abstractmethod
    async def wait_hangup(self) -> str:
        """Wait until the call has hung up; returns the cause."""


@dataclass(frozen=True, slots=True)
class LiveChannel:
    """One channel up on a switch, as `Switch.live_calls` finds it (e.g. after a controller restart).

    `answered_at_us`: the switch's own answer timestamp (µs since the epoch; 0 = not answered).
    `bridged_to`: the uuid / channel id of the leg it is bridged with (None: not bridged).
    `variables`: its channel variables (FreeSWITCH: without the `variable_` prefix; Asterisk: the
    ones the backend can read)."""

    uuid: str
    switch: str
    answered_at_us: int = 0
    bridged_to: str | None = None
    variables: Mapping[str, str] = field(default_factory=dict)


class AdoptedCall(Call):
    """A call found live on the switch that no flow of ours drives (`Switch.adopt`): what was
    running it died (a controller restart). Only hangup, schedule_hangup, announce, wait_hangup and
    get_variable work; every other operation raises CallError("adopted call: not supported").

    Once it has hung up, `answered_at_us` / `ended_at_us` are the switch's own answer and hangup
    timestamps of this leg (µs since the epoch; 0 when the switch did not report them: then the
    hangup was noticed without its record, e.g. while the connection to the switch was down)."""

    answered_at_us: int = 0
    ended_at_us: int = 0
    UNSUPPORTED = "adopted call: not supported"

    async def release(self) -> None:
        """Stop following this call (the switch keeps it; nothing is sent to the channel)."""

    # -- what no adopted call does: its flow died with the controller that ran it ---------------
    async def answer(self) -> None:
        raise CallError(self.UNSUPPORTED)

    async def play(self, prompts: Sequence[str]) -> None:
        raise CallError(self.UNSUPPORTED)

    async def say(self, value: str, kind: SayKind, language: str = "en") -> None:
        raise CallError(self.UNSUPPORTED)

    async def collect(self, spec: CollectSpec) -> CollectResult:
        raise CallError(self.UNSUPPORTED)

    async def dial(self, spec: DialSpec) -> DialResult:
        raise CallError(self.UNSUPPORTED)

    async def record(self, spec: RecordSpec) -> RecordResult:
        raise CallError(self.UNSUPPORTED)

    async def start_recording(self, path: str) -> Recording:
        raise CallError(self.UNSUPPORTED)

    async def hold(self, music: str | None = None) -> None:
        raise CallError(self.UNSUPPORTED)

    async def bridge(self, leg: Leg) -> DialResult:
        raise CallError(self.UNSUPPORTED)

    async def conference(self, room: str) -> str:
        raise CallError(self.UNSUPPORTED)

    async def transfer(self, extension: str, context: str | None = None) -> None:
        raise CallError(self.UNSUPPORTED)

    async def set_variable(self, name: str, value: str) -> None:
        raise CallError(self.UNSUPPORTED)


class Switch(abc.ABC):
    """A switch the controller drives: the channel-independent operations."""

    name: str
    kind: str  # "freeswitch" or "asterisk"

    async def live_calls(self) -> list[LiveChannel]:
        """Every channel live on the switch now, with its variables and answer time."""
        raise CallError(f"switch {getattr(self, 'name', '?')}: listing live calls is not supported")

    async def adopt(self, uuid: str) -> AdoptedCall:
        """Take over channel `uuid` (see AdoptedCall). Raises CallGone if it is not up any more."""
        raise CallError(f"switch {getattr(self, 'name', '?')}: adopting live calls is not supported")

    async def originate(self, spec: OriginateSpec) -> Leg:
        """Ring `spec.target` and return the answered leg, parked (silence; see Leg). Raises
        DialFailed when it did not answer (busy, no answer, rejected, failed; same causes and
        outcomes as `Call.dial`). Cancelling the await hangs up the ringing leg: none is left."""
        raise CallError(f"switch {getattr(self, 'name', '?')}: originate is not supported")

    async def take_leg(self, uuid: str) -> Leg:
        """Operate channel `uuid` as a Leg: the answered peer of a `Call.dial` that is running (from
        `DialSpec.on_answer` on). Its bridge with the caller goes on until the Leg is moved (see
        Call.bridge). Raises CallGone if it is not up any more."""
        raise CallError(f"switch {getattr(self, 'name', '?')}: taking over legs is not supported")

    async def conference_remove(self, room: str, uuid: str) -> None:
        """Take member `uuid` (a Call in `Call.conference`) out of `room`, keeping it up: its
        `conference()` returns "left". Legs leave a room with `park`/`bridge`/`hangup` instead."""
        raise CallError(f"switch {getattr(self, 'name', '?')}: conferences are not supported")

    @abc.abstractmethod
    async def api(self, command: str) -> str:
        """Run a switch management command and return its text output."""

    @abc.abstractmethod
    async def reload_config(self) -> str:
        """Make the switch re-read its configuration; raise CallError if it rejected it."""
