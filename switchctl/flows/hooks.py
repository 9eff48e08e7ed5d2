"""What the flow runtime asks of the features above it, without importing them.

Flows sit below features (features import flows, never the reverse), so a node whose work belongs
to a feature — `prepaid` authorizes against the billing feature, a `dial` after it hands the answer
to the cutoff handler — calls it through the protocol here. The controller passes the feature's
object to `FlowRunner(billing=...)`; without one a `prepaid` node fails the call as a setup error.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from switchctl.switch.call import Call, DialAnswer, DialResult, DialSpec, RecordResult, RecordSpec


class AuthorizeOutcome(str, enum.Enum):
    """The `prepaid` node's outcomes (each a branch name of the node)."""

    OK = "next"  # may call: the node continues at `next`
    INSUFFICIENT_FUNDS = "insufficient_funds"  # cannot pay the connect fee and first block
    NO_RATE = "no_rate"  # the destination has no rate for this account (not sold / blocked)
    NO_ACCOUNT = "no_account"  # no such account, or it is closed
    BAD_PIN = "bad_pin"  # card/PIN authentication failed (one more failure counted)
    LOCKED = "locked"  # too many PIN failures: the account refuses for a while


@dataclass(frozen=True, slots=True)
class PrepaidRequest:
    """A `prepaid` node's question: may `account` call `destination` now?"""

    account: str  # the account's number (a booth's, a calling card's, a customer's)
    destination: str  # the dialled number as the rate table sees it (after number analysis)
    pin: str | None = None  # for calling cards: the PIN the caller typed


@dataclass(frozen=True, slots=True)
class Authorization:
    """The answer. When OK, `max_seconds` is the talk time the available money pays for now
    (it is recomputed while the call runs); `ref` identifies the authorization to the feature;
    `dial_variables` must be set on every leg a following dial creates (DialSpec.variables), so
    the legs' CDRs lead back to the account (billing/callkeys.py)."""

    outcome: AuthorizeOutcome
    ref: str = ""
    max_seconds: int = 0
    detail: str = ""  # for logs and traces: why it was refused
    dial_variables: Mapping[str, str] = field(default_factory=dict)


class CallBilling(Protocol):
    """Implemented by the prepaid feature."""

    async def authorize(self, call: Call, request: PrepaidRequest) -> Authorization:
        """Check (and reserve the connect fee + first block for) one call attempt."""
        ...

    async def on_answer(self, call: Call, auth: Authorization, answer: DialAnswer) -> None:
        """A dial after an OK authorization was answered: start rating and arm the cutoff."""
        ...

    async def on_dial_end(self, call: Call, auth: Authorization, result: DialResult | None) -> None:
        """The dial ended (result None: it raised, e.g. the caller hung up while it rang):
        stop the cutoff, release or settle the reservation. Called exactly once per dial."""
        ...

    async def release(self, call: Call, auth: Authorization) -> None:
        """The flow ended without dialling after this authorization: give the reservation back."""
        ...


# -- voicemail ------------------------------------------------------------------------------------


class PinCheck(str, enum.Enum):
    """A mailbox PIN check (the `voicemail_check` node's outcomes for LOCKED)."""

    OK = "ok"
    INVALID = "invalid"  # wrong PIN or no such mailbox: the caller must not learn which
    LOCKED = "locked"  # too many failures: refused for a while, even the right PIN


@dataclass(frozen=True, slots=True)
class VoicemailBox:
    """A mailbox as a `voicemail` node needs it: `greeting` is a prompt the switch plays (the
    owner's recorded greeting), None for the default announcement."""

    number: str
    greeting: str | None = None


@dataclass(frozen=True, slots=True)
class VoicemailMessage:
    id: int
    path: str  # the recording as the switch plays it
    caller: str
    received_at_us: int
    duration_us: int
    state: str  # "new" or "saved"


class VoicemailService(Protocol):
    """Implemented by the voicemail feature (features/voicemail). The flow runtime drives the call
    (greeting, record, PIN and message menus); the service owns mailboxes, messages and e-mail."""

    async def mailbox(self, number: str) -> VoicemailBox | None:
        """The mailbox `number`, or None when there is none."""
        ...

    def recording_path(self, box: VoicemailBox, call: Call) -> str:
        """Where the switch should write this call's message for `box` (a .wav on the switch)."""
        ...

    async def store_message(self, call: Call, box: VoicemailBox, spec: RecordSpec,
                            result: RecordResult) -> VoicemailMessage | None:
        """Keep what `call.record(spec)` recorded (also after a hangup) and queue its e-mail; None
        when it was too short to be a message (dropped)."""
        ...

    async def check_pin(self, number: str, pin: str) -> PinCheck:
        """Check a mailbox PIN, counting failures towards the lockout."""
        ...

    async def messages(self, number: str) -> list[VoicemailMessage]:
        """The mailbox's messages to play: new ones first (oldest first), then saved ones."""
        ...

    async def set_state(self, number: str, message_id: int, state: str) -> None:
        """Mark a message "saved" or "deleted"."""
        ...


# -- transfer ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DialContext:
    """What the flow knows about the call a `dial` node connects: the call's data, which follows it
    through every transfer and is published ("screen pop") to whoever takes the call."""

    flow: str  # the running flow's name
    node: str  # the dial node's id
    path: tuple[str, ...] = ()  # the IVR path: node ids run so far, in order
    variables: Mapping[str, str] = field(default_factory=dict)  # the flow's variables (customer id...)
    feature_codes: bool = True  # the node lets the answering party transfer with DTMF feature codes


@dataclass(frozen=True, slots=True)
class TransferredDial:
    """How a transferable dial ended for the caller.

    `result` is what the dial node's outcome comes from: ANSWERED when the call's last bridge ended
    (`caller_hung_up` says who ended it); a failure outcome (busy, no_answer, rejected, failed) when
    no one took the call and no transferor could be recalled: the node's failure branches are the
    flow's fallback, so the caller is never dropped while the flow has one. `flow` is set when a
    blind transfer sent the caller to another flow: the runner continues there. `data` is the call
    data at the end (including what consoles set through the API)."""

    result: DialResult
    transfers: int = 0
    flow: str | None = None
    data: Mapping[str, str] = field(default_factory=dict)


class CallTransfers(Protocol):
    """The transfer feature as the flow runtime sees it (`FlowRunner(transfers=...)`). Without one a
    dial is a plain `Call.dial` and feature codes do nothing."""

    async def dial(self, call: Call, spec: DialSpec, context: DialContext) -> TransferredDial:
        """Run `spec` like `Call.dial`, with transfers (feature codes, API) possible until the call's
        last bridge ends. Raises CallGone like `Call.dial` when the caller hangs up before anyone
        answered."""
        ...


# -- call recording ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordingStarted:
    """What a `record_call` start did: `path` is the recording's file as the switch writes it;
    `new` is False when one was already running (its path, nothing started)."""

    path: str
    new: bool = True


class CallRecordings(Protocol):
    """The recording feature as the flow runtime sees it (`FlowRunner(recordings=...)`): one
    whole-call recording per call at a time (Call.start_recording), kept with the call's CDR.
    Without one a `record_call` node is a flow error."""

    async def start(self, call: Call, name: str) -> RecordingStarted:
        """Start recording `call` into a file called `name` (the feature chooses the folder and the
        extension) and set the channel variable `switchctl_recording` to its path. Raises CallError
        when the switch refused, CallGone when the call is gone."""
        ...

    async def pause(self, call: Call) -> bool:
        """Pause the call's running recording; False when none is running (nothing done)."""
        ...

    async def resume(self, call: Call) -> bool:
        """Resume the call's paused recording; False when none is paused (nothing done)."""
        ...

    async def stop(self, call: Call) -> bool:
        """Finish the call's recording; False when none is running (nothing done)."""
        ...
